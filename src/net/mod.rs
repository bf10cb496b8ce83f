//! Function IP addresses: `ipam` picks free addresses from the pool (pure),
//! `netlink` puts them on `lo` with the label `lo:faas` and takes them off.

pub mod ipam;
pub mod netlink;

pub use ipam::AddressPool;
pub use netlink::{Added, Netlink};

/// The label marking the addresses faasd added (`ip addr show label lo:faas`).
pub const LABEL: &str = "lo:faas";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("opening a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("finding the loopback interface: {0}")]
    NoLoopback(#[source] nix::Error),
    #[error("{op} address {ip}: {message}")]
    Address {
        op: &'static str,
        ip: std::net::Ipv4Addr,
        message: String,
    },
    #[error("listing addresses: {0}")]
    List(String),
    #[error("the address pool {0} is exhausted")]
    Exhausted(String),
    #[error("invalid address pool {0:?}: {1}")]
    BadPool(String, String),
}
