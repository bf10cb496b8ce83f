//! Host names a function answers to behind a shared address (`--host`):
//! exact DNS names and one-level wildcards (`*.example.com`), kept in the
//! one spelling routing compares (lower case, no trailing dot).

use serde::{Deserialize, Serialize};

/// A name of `--host`: `api.example.com` or `*.example.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

impl HostName {
    /// Checks and normalises a name as an operator writes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let bad = |why: &str| {
            format!("invalid host name {text:?}: {why} (a DNS name such as api.example.com, or *.example.com)")
        };
        let base = lower.strip_prefix("*.").unwrap_or(&lower);
        if base.contains('*') {
            return Err(bad("a wildcard is only the whole first label"));
        }
        if lower.starts_with("*.") && !base.contains('.') {
            return Err(bad("a wildcard needs a domain of two labels at least"));
        }
        if !is_dns_name(base) {
            return Err(bad(
                "labels of 1-63 letters, digits and inner hyphens, 253 characters in all",
            ));
        }
        Ok(Self(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For `*.example.com`, `example.com`: the part a one-level match
    /// strips its first label down to.
    pub fn wildcard_base(&self) -> Option<&str> {
        self.0.strip_prefix("*.")
    }
}

/// What `lookup` compares: `name` as a client sent it (Host header or
/// SNI), lower case without port or trailing dot; `None` if it is not a
/// name at all (an address literal routes by default only).
pub fn normalise(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.');
    let lower = name.to_ascii_lowercase();
    is_dns_name(&lower).then_some(lower)
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

impl std::fmt::Display for HostName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for HostName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<HostName> for String {
    fn from(h: HostName) -> String {
        h.0
    }
}

/// `a.example.com,*.example.com` into names, each once.
pub fn parse_list(text: &str) -> Result<Vec<HostName>, String> {
    let mut out: Vec<HostName> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let host = HostName::parse(part)?;
        if !out.contains(&host) {
            out.push(host);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_wildcards() {
        assert_eq!(
            HostName::parse("API.Example.com.").expect("ok").as_str(),
            "api.example.com"
        );
        let w = HostName::parse("*.example.com").expect("wildcard");
        assert_eq!(w.wildcard_base(), Some("example.com"));
        for bad in [
            "", "*", "*.com", "a.*.com", "-a.com", "a-.com", "a..b", "a b.com", "ä.com", "a.com:80",
        ] {
            assert!(HostName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(HostName::parse(&format!("{}.com", "a".repeat(64))).is_err());
        assert_eq!(parse_list("a.test, b.test,a.test").expect("list").len(), 2);
        assert_eq!(
            normalise("WWW.Example.COM."),
            Some("www.example.com".into())
        );
        assert_eq!(normalise("[::1]"), None);
    }
}
