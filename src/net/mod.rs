//! Function IP addresses: `ipam` picks free addresses from the pool (pure),
//! `netlink` puts them on `lo` (IPv4 with the label `lo:faas`) and takes
//! them off, `routes` announces them as host routes in `--route-table`.

pub mod ipam;
pub mod netlink;
pub mod routes;

pub use ipam::AddressPool;
pub use netlink::{Added, Netlink};
pub use routes::Routes;

/// The label marking the IPv4 addresses faasd added (`ip addr show label lo:faas`).
pub const LABEL: &str = "lo:faas";
/// The protocol number of faasd's addresses (IFA_PROTO, both families) and
/// routes (`ip route show table N proto 152`), so a routing daemon and a
/// restarted faasd tell them from everyone else's.
pub const PROTOCOL: u8 = 152;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("opening a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("finding the loopback interface: {0}")]
    NoLoopback(#[source] nix::Error),
    #[error("{op} address {ip}: {message}")]
    Address {
        op: &'static str,
        ip: std::net::IpAddr,
        message: String,
    },
    #[error("listing addresses: {0}")]
    List(String),
    #[error("{op} the route to {ip} in table {table}: {message}")]
    Route {
        op: &'static str,
        ip: std::net::IpAddr,
        table: u32,
        message: String,
    },
    #[error("the address pool {0} is exhausted")]
    Exhausted(String),
    #[error("invalid address pool {0:?}: {1}")]
    BadPool(String, String),
}
