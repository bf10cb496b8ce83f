//! The function address pool: a CIDR from `--ip-pool`, handed out lowest
//! free first, never the network or broadcast address.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::NetError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    net: Ipv4Net,
}

impl AddressPool {
    pub fn parse(cidr: &str) -> Result<Self, NetError> {
        let net: Ipv4Net = cidr
            .parse()
            .map_err(|e: ipnet::AddrParseError| NetError::BadPool(cidr.into(), e.to_string()))?;
        if net.prefix_len() > 30 {
            return Err(NetError::BadPool(
                cidr.into(),
                "needs at least 2 usable addresses (/30 or wider)".into(),
            ));
        }
        if !net.network().is_loopback() {
            return Err(NetError::BadPool(
                cidr.into(),
                "function addresses must be inside 127.0.0.0/8".into(),
            ));
        }
        Ok(Self { net: net.trunc() })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.net.contains(&ip) && ip != self.net.network() && ip != self.net.broadcast()
    }

    /// The lowest usable address not in `taken`.
    pub fn allocate(&self, taken: &HashSet<Ipv4Addr>) -> Result<Ipv4Addr, NetError> {
        self.net
            .hosts()
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| NetError::Exhausted(self.net.to_string()))
    }
}

impl std::fmt::Display for AddressPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.net.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_skipping_network_and_broadcast() {
        let pool = AddressPool::parse("127.10.0.0/30").expect("pool");
        let mut taken = HashSet::new();
        let a = pool.allocate(&taken).expect("first");
        assert_eq!(a, Ipv4Addr::new(127, 10, 0, 1));
        taken.insert(a);
        let b = pool.allocate(&taken).expect("second");
        assert_eq!(b, Ipv4Addr::new(127, 10, 0, 2));
        taken.insert(b);
        assert!(matches!(pool.allocate(&taken), Err(NetError::Exhausted(_))));
        assert!(!pool.contains(Ipv4Addr::new(127, 10, 0, 0)));
        assert!(!pool.contains(Ipv4Addr::new(127, 10, 0, 3)));
    }

    #[test]
    fn refuses_bad_pools() {
        assert!(AddressPool::parse("10.0.0.0/16").is_err());
        assert!(AddressPool::parse("127.0.0.1/32").is_err());
        assert!(AddressPool::parse("nonsense").is_err());
        assert_eq!(
            AddressPool::parse("127.10.1.7/16")
                .map(|p| p.to_string())
                .ok(),
            Some("127.10.0.0/16".into())
        );
    }
}
