//! The function address pool: the prefixes of `--ip-pool` (IPv4 or IPv6,
//! any number), in the order given: handed out lowest free first, or (a
//! cluster) in turn after the last one. Never an IPv4 prefix's network or
//! broadcast address, nor an IPv6 prefix's subnet-router anycast address
//! (its first).

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

    /// The first usable address not in `taken` after `after` in the
    /// pool's order, going round to the start: handed out in turn, an
    /// address let go comes back only after all the others had theirs
    /// (a node that missed its release may still serve the old function
    /// there).
    pub fn allocate_after(
        &self,
        taken: &HashSet<IpAddr>,
        after: Option<IpAddr>,
    ) -> Result<IpAddr, NetError> {
        let at = after.and_then(|ip| {
            let at = self.nets.iter().position(|n| n.contains(&ip))?;
            Some((at, ip))
        });
        let Some((at, after)) = at else {
            return self.allocate(taken);
        };
        let free = |n: &IpNet, ip: IpAddr| usable(n, ip) && !taken.contains(&ip);
        let net = &self.nets[at];
        hosts_after(net, after)
            .find(|ip| free(net, *ip))
            .or_else(|| {
                self.nets[at + 1..]
                    .iter()
                    .find_map(|n| n.hosts().find(|ip| free(n, *ip)))
            })
            .map_or_else(|| self.allocate(taken), Ok)
    }
}

/// The addresses of `net` after `ip`, in order (`usable` still to be
/// asked).
fn hosts_after(net: &IpNet, ip: IpAddr) -> Box<dyn Iterator<Item = IpAddr>> {
    match (net, ip) {
        (IpNet::V4(n), IpAddr::V4(a)) => match u32::from(a).checked_add(1) {
            Some(next) if next <= u32::from(n.broadcast()) => {
                Box::new(ipnet::Ipv4AddrRange::new(next.into(), n.broadcast()).map(IpAddr::V4))
            }
            _ => Box::new(std::iter::empty()),
        },
        (IpNet::V6(n), IpAddr::V6(a)) => match u128::from(a).checked_add(1) {
            Some(next) if next <= u128::from(n.broadcast()) => {
                Box::new(ipnet::Ipv6AddrRange::new(next.into(), n.broadcast()).map(IpAddr::V6))
            }
            _ => Box::new(std::iter::empty()),
        },
        _ => Box::new(std::iter::empty()),
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
    fn hands_out_in_turn_and_goes_round() {
        let pool =
            AddressPool::parse_all(&["198.51.100.0/30", "fd00:faa5:1::/126"]).expect("pools");
        let mut taken = HashSet::new();
        let mut last = None;
        let mut got = Vec::new();
        for _ in 0..5 {
            let ip = pool.allocate_after(&taken, last).expect("address");
            taken.insert(ip);
            got.push(ip.to_string());
            last = Some(ip);
        }
        assert_eq!(
            got,
            [
                "198.51.100.1",
                "198.51.100.2",
                "fd00:faa5:1::1",
                "fd00:faa5:1::2",
                "fd00:faa5:1::3"
            ]
        );
        // The first let go comes back only when the round does.
        taken.remove(&ip("198.51.100.1"));
        taken.remove(&ip("fd00:faa5:1::2"));
        assert_eq!(
            pool.allocate_after(&taken, last).ok(),
            Some(ip("198.51.100.1"))
        );
        let after_first = pool.allocate_after(&taken, Some(ip("198.51.100.1")));
        assert_eq!(after_first.ok(), Some(ip("fd00:faa5:1::2")));
        taken.insert(ip("198.51.100.1"));
        taken.insert(ip("fd00:faa5:1::2"));
        assert!(pool.allocate_after(&taken, last).is_err());
        // An address outside the pool (the pool changed): lowest free.
        taken.clear();
        let outside = pool.allocate_after(&taken, Some(ip("192.0.2.1")));
        assert_eq!(outside.ok(), Some(ip("198.51.100.1")));
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
