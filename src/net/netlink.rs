//! Loopback addresses through rtnetlink: add (IPv4 with our label, both
//! families tagged with our address protocol number), remove, list; and
//! the routes that announce them (`routes`). Runs on the control side's
//! ordinary tokio runtime.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressProtocol, AddressScope,
};

use super::{NetError, LABEL, PROTOCOL};

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
    pub ip: IpAddr,
    pub label: Option<String>,
    /// The address protocol (IFA_PROTO) it was added with.
    pub protocol: Option<u8>,
}

impl LoAddress {
    /// Added by a faasd: our label (IPv4) or our protocol number.
    pub fn is_ours(&self) -> bool {
        self.label.as_deref() == Some(LABEL) || self.protocol == Some(PROTOCOL)
    }
}

#[derive(Clone)]
pub struct Netlink {
    pub(super) handle: rtnetlink::Handle,
    pub(super) lo: u32,
}

pub(super) fn message(e: rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    }
}

pub(super) fn errno(e: &rtnetlink::Error) -> Option<i32> {
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

    /// Every address on `lo` with its label and protocol.
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

    /// Adds `ip/32` (or `/128`) to `lo`, tagged as ours. A loopback
    /// address gets host scope; any other global scope, so traffic routed
    /// to this node reaches it. IPv6 goes without duplicate address
    /// detection: even on `lo` the kernel keeps a new address tentative
    /// (unbindable) until its DAD work has run, and an anycast address
    /// announced by several nodes is duplicated on purpose.
    pub async fn add(&self, ip: IpAddr) -> Result<Added, NetError> {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        let mut req = self.handle.address().add(self.lo, ip, len);
        let msg = req.message_mut();
        msg.header.scope = if ip.is_loopback() {
            AddressScope::Host
        } else {
            AddressScope::Universe
        };
        if ip.is_ipv4() {
            msg.attributes.push(AddressAttribute::Label(LABEL.into()));
        } else {
            msg.header.flags |= AddressHeaderFlags::Nodad;
        }
        msg.attributes
            .push(AddressAttribute::Protocol(AddressProtocol::Other(PROTOCOL)));
        match req.execute().await {
            Ok(()) => Ok(Added::New),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                let present = self.list().await?.into_iter().find(|a| a.ip == ip);
                match present {
                    Some(a) if a.is_ours() => Ok(Added::OursAlready),
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
    pub async fn remove(&self, ip: IpAddr) -> Result<(), NetError> {
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
            .set_address_filter(ip)
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
    let mut protocol = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => ip = Some(*a),
            AddressAttribute::Address(a) if ip.is_none() => ip = Some(*a),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            AddressAttribute::Protocol(p) => protocol = Some(u8::from(*p)),
            _ => {}
        }
    }
    ip.map(|ip| LoAddress {
        ip,
        label,
        protocol,
    })
}
