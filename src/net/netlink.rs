//! Loopback addresses through rtnetlink: add with our label, remove, list.
//! Runs on the control side's ordinary tokio runtime.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};

use super::{NetError, LABEL};

/// Whether `add` created the address or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New,
    /// Present already with our label: a leftover of an earlier run, ours.
    OursAlready,
    /// Present already without our label: the operator's, not to be removed.
    Foreign,
}

/// One address on `lo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoAddress {
    pub ip: Ipv4Addr,
    pub label: Option<String>,
}

#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    lo: u32,
}

fn message(e: rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

impl Netlink {
    /// Opens the netlink socket; its connection task runs on the current runtime.
    pub fn connect() -> Result<Self, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Connect)?;
        tokio::spawn(conn);
        let lo = nix::net::if_::if_nametoindex("lo").map_err(NetError::NoLoopback)?;
        Ok(Self { handle, lo })
    }

    /// Every IPv4 address on `lo` with its label.
    pub async fn list(&self) -> Result<Vec<LoAddress>, NetError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.lo)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::List(message(e)))?;
        Ok(msgs.iter().filter_map(lo_address).collect())
    }

    /// Adds `ip/32` to `lo` with our label.
    pub async fn add(&self, ip: Ipv4Addr) -> Result<Added, NetError> {
        let mut req = self.handle.address().add(self.lo, IpAddr::V4(ip), 32);
        let msg = req.message_mut();
        msg.header.scope = AddressScope::Host;
        msg.attributes.push(AddressAttribute::Label(LABEL.into()));
        match req.execute().await {
            Ok(()) => Ok(Added::New),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                let present = self.list().await?.into_iter().find(|a| a.ip == ip);
                match present.and_then(|a| a.label) {
                    Some(l) if l == LABEL => Ok(Added::OursAlready),
                    _ => Ok(Added::Foreign),
                }
            }
            Err(e) => Err(NetError::Address {
                op: "adding",
                ip,
                message: message(e),
            }),
        }
    }

    /// Removes `ip` from `lo`; an address already gone is not an error.
    pub async fn remove(&self, ip: Ipv4Addr) -> Result<(), NetError> {
        let err = |e| NetError::Address {
            op: "removing",
            ip,
            message: message(e),
        };
        let found: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.lo)
            .set_address_filter(IpAddr::V4(ip))
            .execute()
            .try_collect()
            .await
            .map_err(err)?;
        for msg in found {
            match self.handle.address().del(msg).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }
}

fn lo_address(msg: &AddressMessage) -> Option<LoAddress> {
    let mut ip = None;
    let mut label = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(a)) => ip = Some(*a),
            AddressAttribute::Address(IpAddr::V4(a)) if ip.is_none() => ip = Some(*a),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            _ => {}
        }
    }
    ip.map(|ip| LoAddress { ip, label })
}
