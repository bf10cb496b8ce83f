//! The shared listeners' table from host name to function: exact names,
//! one-level wildcards (`*.example.com` takes `a.example.com`, neither
//! `example.com` nor `a.b.example.com`), and a default for connections
//! that name no host. Built whole on every change and swapped in, so a
//! lookup is two hash probes at most, whatever the number of names.

use std::collections::HashMap;

use crate::api::host::HostName;

/// foldhash, not SipHash: the keys are the operator's names, so a client
/// cannot aim collisions at the table, and a lookup costs half as much
/// (`benches/routes.rs`).
type Map<T> = HashMap<String, T, foldhash::fast::RandomState>;

#[derive(Debug)]
pub struct Routes<T> {
    exact: Map<T>,
    /// By the wildcard's base (`example.com` for `*.example.com`).
    wildcard: Map<T>,
    default: Option<T>,
}

impl<T> Default for Routes<T> {
    fn default() -> Self {
        Self {
            exact: Map::default(),
            wildcard: Map::default(),
            default: None,
        }
    }
}

impl<T: Clone> Routes<T> {
    /// The table of `names` (names held twice: the first holder keeps it;
    /// the registry never lets that happen) and the default.
    pub fn build<'a>(
        names: impl IntoIterator<Item = (&'a HostName, T)>,
        default: Option<T>,
    ) -> Self {
        let mut routes = Self {
            default,
            ..Self::default()
        };
        for (host, to) in names {
            let (map, key) = match host.wildcard_base() {
                Some(base) => (&mut routes.wildcard, base),
                None => (&mut routes.exact, host.as_str()),
            };
            map.entry(key.to_string()).or_insert(to);
        }
        routes
    }
}

impl<T> Routes<T> {
    /// Where a connection for `name` (normalised) goes.
    pub fn lookup(&self, name: &str) -> Option<&T> {
        self.exact.get(name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        })
    }

    /// Where a connection that names no host goes.
    pub fn default_route(&self) -> Option<&T> {
        self.default.as_ref()
    }

    /// Names (exact and wildcard) in the table.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_before_wildcard_one_level_only() {
        let h = |s: &str| HostName::parse(s).expect("host");
        let names = [
            (h("api.example.com"), 1),
            (h("*.example.com"), 2),
            (h("*.b.example.com"), 3),
        ];
        let routes = Routes::build(names.iter().map(|(n, v)| (n, *v)), Some(9));
        assert_eq!(routes.lookup("api.example.com"), Some(&1));
        assert_eq!(routes.lookup("www.example.com"), Some(&2));
        assert_eq!(routes.lookup("x.b.example.com"), Some(&3));
        assert_eq!(routes.lookup("x.y.example.com"), None);
        assert_eq!(routes.lookup("example.com"), None);
        assert_eq!(routes.lookup("com"), None);
        assert_eq!(routes.default_route(), Some(&9));
        assert_eq!(routes.len(), 3);
    }
}
