//! What a connection's first bytes say about where it goes, read without
//! consuming them: the `Host` of a plaintext HTTP request (`http`) or the
//! `server_name` of a TLS ClientHello (`tls`). Pure functions over the
//! bytes peeked so far; the shared listener (`shared`) calls them again
//! as more arrive.

mod http;
mod tls;

/// The most bytes peeked for a decision: a request head or ClientHello
/// longer than this is refused (431 / an alert).
pub const PEEK_MAX: usize = 16 * 1024;

/// How the connection speaks, decided by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Tls,
}

/// What the bytes so far decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// Routed by this name (lower case, no port, no trailing dot).
    Name(String),
    /// Complete, but naming no host: HTTP/1.0 without `Host`, an address
    /// literal, a ClientHello without `server_name`.
    Nameless,
    /// A ClientHello with Encrypted Client Hello: the name it is for is
    /// encrypted; this is the outer, public name (the client-facing
    /// server's), if any. Routed by it if a function holds it, else to
    /// the default host.
    Encrypted(Option<String>),
    /// Not decided yet: more bytes are needed.
    More,
    /// Neither a request nor a ClientHello we can route: why.
    Malformed(&'static str),
}

/// Reads `bytes`, the connection's first bytes so far.
pub fn sniff(bytes: &[u8]) -> (Protocol, Sniffed) {
    match bytes.first() {
        None => (Protocol::Http, Sniffed::More),
        Some(&tls::HANDSHAKE) => (Protocol::Tls, tls::server_name(bytes)),
        Some(_) => (Protocol::Http, http::host(bytes)),
    }
}

/// A name as a client wrote it, checked: a host name routes, an address
/// literal does not (`Nameless`), anything else is malformed.
fn named(raw: &[u8]) -> Sniffed {
    let Ok(text) = std::str::from_utf8(raw) else {
        return Sniffed::Malformed("the host name is not text");
    };
    if text.is_empty() || text.starts_with('[') || text.parse::<std::net::IpAddr>().is_ok() {
        return Sniffed::Nameless;
    }
    match crate::api::host::normalise(text) {
        Some(name) => Sniffed::Name(name),
        None => Sniffed::Malformed("the host is not a DNS name"),
    }
}
