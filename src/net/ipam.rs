//! The function address pool: the prefixes of `--ip-pool` (IPv4 or IPv6,
//! any number), handed out lowest free first, in the order given. Never
//! an IPv4 prefix's network or broadcast address, nor an IPv6 prefix's
//! subnet-router anycast address (its first).

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::NetError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool {
    nets: Vec<IpNet>,
}

impl AddressPool {
    /// One prefix.
    pub fn parse(cidr: &str) -> Result<Self, NetError> {
        Self::parse_all(&[cidr])
    }

    /// Several prefixes; they may not overlap.
    pub fn parse_all<S: AsRef<str>>(cidrs: &[S]) -> Result<Self, NetError> {
        let mut nets: Vec<IpNet> = Vec::new();
        for cidr in cidrs {
            let cidr = cidr.as_ref();
            let net: IpNet = cidr.parse().map_err(|e: ipnet::AddrParseError| {
                NetError::BadPool(cidr.into(), e.to_string())
            })?;
            let net = net.trunc();
            if net.hosts().next().is_none() {
                return Err(NetError::BadPool(
                    cidr.into(),
                    "has no usable address".into(),
                ));
            }
            if net.network().is_unspecified() || net.network().is_multicast() {
                return Err(NetError::BadPool(
                    cidr.into(),
                    "function addresses must be unicast".into(),
                ));
            }
            if let Some(other) = nets.iter().find(|n| n.contains(&net) || net.contains(*n)) {
                return Err(NetError::BadPool(cidr.into(), format!("overlaps {other}")));
            }
            nets.push(net);
        }
        if nets.is_empty() {
            return Err(NetError::BadPool(String::new(), "no prefix given".into()));
        }
        Ok(Self { nets })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip) && usable(n, ip))
    }

    /// Whether every prefix is inside 127.0.0.0/8 or ::1 (loopback only).
    pub fn is_loopback(&self) -> bool {
        self.nets.iter().all(|n| n.network().is_loopback())
    }

    /// The lowest usable address not in `taken`, from the first prefix
    /// that has one.
    pub fn allocate(&self, taken: &HashSet<IpAddr>) -> Result<IpAddr, NetError> {
        self.nets
            .iter()
            .find_map(|n| n.hosts().find(|ip| usable(n, *ip) && !taken.contains(ip)))
            .ok_or_else(|| NetError::Exhausted(self.to_string()))
    }
}

/// IPv4: `hosts()` already leaves out network and broadcast. IPv6: the
/// first address of a prefix is its subnet-router anycast address.
fn usable(net: &IpNet, ip: IpAddr) -> bool {
    match net {
        IpNet::V4(n) => {
            n.prefix_len() >= 31
                || (ip != IpAddr::V4(n.network()) && ip != IpAddr::V4(n.broadcast()))
        }
        IpNet::V6(n) => n.prefix_len() == 128 || ip != IpAddr::V6(n.network()),
    }
}

impl std::fmt::Display for AddressPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self.nets.iter().map(IpNet::to_string).collect();
        f.write_str(&all.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn allocates_lowest_free_skipping_network_and_broadcast() {
        let pool = AddressPool::parse("127.10.0.0/30").expect("pool");
        let mut taken = HashSet::new();
        let a = pool.allocate(&taken).expect("first");
        assert_eq!(a, ip("127.10.0.1"));
        taken.insert(a);
        let b = pool.allocate(&taken).expect("second");
        assert_eq!(b, ip("127.10.0.2"));
        taken.insert(b);
        assert!(matches!(pool.allocate(&taken), Err(NetError::Exhausted(_))));
        assert!(!pool.contains(ip("127.10.0.0")));
        assert!(!pool.contains(ip("127.10.0.3")));
        assert!(pool.is_loopback());
    }

    #[test]
    fn any_prefix_v4_or_v6_and_several_in_order() {
        let pool = AddressPool::parse_all(&["198.51.100.0/31", "fd00:faa5:1::/64"]).expect("pools");
        assert!(!pool.is_loopback());
        let mut taken = HashSet::new();
        for want in [
            "198.51.100.0",
            "198.51.100.1",
            "fd00:faa5:1::1",
            "fd00:faa5:1::2",
        ] {
            let got = pool.allocate(&taken).expect("address");
            assert_eq!(got, ip(want));
            assert!(pool.contains(got));
            taken.insert(got);
        }
        assert!(!pool.contains(ip("fd00:faa5:1::")), "subnet-router anycast");
        assert!(!pool.contains(ip("198.51.101.1")));
        assert_eq!(pool.to_string(), "198.51.100.0/31,fd00:faa5:1::/64");
        let single = AddressPool::parse("192.0.2.7/32").expect("one address");
        assert_eq!(single.allocate(&HashSet::new()).ok(), Some(ip("192.0.2.7")));
    }

    #[test]
    fn refuses_bad_pools() {
        assert!(AddressPool::parse("nonsense").is_err());
        assert!(AddressPool::parse("224.0.0.0/24").is_err(), "multicast");
        assert!(
            AddressPool::parse_all(&["10.0.0.0/16", "10.0.1.0/24"]).is_err(),
            "overlap"
        );
        assert!(AddressPool::parse_all::<&str>(&[]).is_err());
        assert_eq!(
            AddressPool::parse("127.10.1.7/16")
                .map(|p| p.to_string())
                .ok(),
            Some("127.10.0.0/16".into())
        );
    }
}
