//! Announcing functions: a host route per ready function (`ADDR/32` or
//! `/128`, `dev lo`) in the kernel routing table `--route-table N`, with
//! faasd's protocol number. A routing daemon (BIRD) exports table N
//! over BGP; faasd itself speaks only netlink.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::RouteMessageBuilder;

use super::netlink::{errno, message};
use super::{NetError, Netlink, PROTOCOL};

/// The routes of one faasd in one table.
#[derive(Clone)]
pub struct Routes {
    nl: Netlink,
    table: u32,
}

impl Routes {
    pub fn new(nl: Netlink, table: u32) -> Self {
        Self { nl, table }
    }

    pub fn table(&self) -> u32 {
        self.table
    }

    fn route(&self, ip: IpAddr) -> Result<RouteMessage, NetError> {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        let builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(ip, len)
            .map_err(|e| self.err("building", ip, e.to_string()))?;
        Ok(builder
            .output_interface(self.nl.lo)
            .table_id(self.table)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .scope(RouteScope::Link)
            .build())
    }

    fn err(&self, op: &'static str, ip: IpAddr, message: String) -> NetError {
        NetError::Route {
            op,
            ip,
            table: self.table,
            message,
        }
    }

    /// Installs (or keeps) the route to `ip`.
    pub async fn announce(&self, ip: IpAddr) -> Result<(), NetError> {
        let route = self.route(ip)?;
        self.nl
            .handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| self.err("adding", ip, message(e)))
    }

    /// Removes the route to `ip`; one already gone is not an error.
    pub async fn withdraw(&self, ip: IpAddr) -> Result<(), NetError> {
        let route = self.route(ip)?;
        match self.nl.handle.route().del(route).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(self.err("removing", ip, message(e))),
        }
    }

    /// The addresses faasd has routes to in the table (any faasd's: the
    /// protocol number is shared).
    pub async fn list(&self) -> Result<HashSet<IpAddr>, NetError> {
        let mut out = HashSet::new();
        let dumps = [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ];
        for dump in dumps {
            let routes: Vec<RouteMessage> = self
                .nl
                .handle
                .route()
                .get(dump)
                .execute()
                .try_collect()
                .await
                .map_err(|e| NetError::List(message(e)))?;
            out.extend(routes.iter().filter_map(|r| self.ours(r)));
        }
        Ok(out)
    }

    /// The destination of one of our host routes in our table.
    fn ours(&self, r: &RouteMessage) -> Option<IpAddr> {
        if r.header.protocol != RouteProtocol::Other(PROTOCOL) {
            return None;
        }
        let table = r
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(r.header.table));
        if table != self.table {
            return None;
        }
        r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip))
                if r.header.destination_prefix_length == 32 =>
            {
                Some(IpAddr::V4(*ip))
            }
            RouteAttribute::Destination(RouteAddress::Inet6(ip))
                if r.header.destination_prefix_length == 128 =>
            {
                Some(IpAddr::V6(*ip))
            }
            _ => None,
        })
    }
}
