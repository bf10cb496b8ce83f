//! The host of a plaintext HTTP/1.x request, as RFC 9112 (§3.2) has a
//! server find it: the authority of an absolute-form target (its `Host`
//! header then ignored), else the one `Host` header; none in HTTP/1.0
//! names nothing, none in HTTP/1.1 is a bad request.

use super::{named, Sniffed};

/// Routes by the request head in `bytes`.
pub(super) fn host(bytes: &[u8]) -> Sniffed {
    // A server ignores empty lines before the request line (§2.2).
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let Some(line_end) = find_line(bytes, 0) else {
        return more_if(looks_like_method(bytes));
    };
    let line = trim_cr(&bytes[..line_end]);
    let Some((target, version)) = request_line(line) else {
        return Sniffed::Malformed("not an HTTP/1.x request line");
    };
    if let Some(authority) = absolute_authority(target) {
        return named(strip_port(authority));
    }
    if let Some(authority) = connect_authority(line, target) {
        return named(strip_port(authority));
    }
    let mut host: Option<&[u8]> = None;
    let mut at = line_end + 1;
    loop {
        let Some(end) = find_line(bytes, at) else {
            return Sniffed::More;
        };
        let field = trim_cr(&bytes[at..end]);
        at = end + 1;
        if field.is_empty() {
            break;
        }
        let Some(colon) = field.iter().position(|b| *b == b':') else {
            return Sniffed::Malformed("a header line without a colon");
        };
        let (name, value) = (&field[..colon], &field[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Sniffed::Malformed("a header name with spaces or controls");
        }
        if name.eq_ignore_ascii_case(b"host") {
            if host.is_some() {
                return Sniffed::Malformed("more than one Host header");
            }
            host = Some(value.trim_ascii());
        }
    }
    match host {
        Some(value) => named(strip_port(value)),
        None if version == b"HTTP/1.0" => Sniffed::Nameless,
        None => Sniffed::Malformed("an HTTP/1.1 request without a Host header"),
    }
}

/// `METHOD SP target SP HTTP/d.d` into the target and the version.
fn request_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut parts = line.split(|b| *b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || method.is_empty() || !method.iter().all(|b| is_tchar(*b)) {
        return None;
    }
    let ok_version =
        version.len() == 8 && version.starts_with(b"HTTP/1.") && version[7].is_ascii_digit();
    (!target.is_empty() && ok_version).then_some((target, version))
}

/// The authority of `http://authority/path` (or https), without userinfo.
fn absolute_authority(target: &[u8]) -> Option<&[u8]> {
    let scheme_end = target.windows(3).position(|w| w == b"://")?;
    let scheme = &target[..scheme_end];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_start = authority
        .iter()
        .rposition(|b| *b == b'@')
        .map_or(0, |at| at + 1);
    Some(&authority[host_start..])
}

/// `CONNECT host:port HTTP/1.1`: the authority-form target.
fn connect_authority<'a>(line: &[u8], target: &'a [u8]) -> Option<&'a [u8]> {
    line.starts_with(b"CONNECT ").then_some(target)
}

/// `name:port` to `name`; an IPv6 literal `[..]:port` stays bracketed.
fn strip_port(authority: &[u8]) -> &[u8] {
    if authority.starts_with(b"[") {
        return authority;
    }
    match authority.iter().rposition(|b| *b == b':') {
        Some(colon) if authority[colon + 1..].iter().all(u8::is_ascii_digit) => &authority[..colon],
        _ => authority,
    }
}

fn find_line(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .iter()
        .position(|b| *b == b'\n')
        .map(|i| from + i)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether an unfinished first line can still become a request line.
fn looks_like_method(bytes: &[u8]) -> bool {
    let method_end = bytes.iter().position(|b| *b == b' ').unwrap_or(bytes.len());
    bytes[..method_end].iter().all(|b| is_tchar(*b))
}

fn more_if(plausible: bool) -> Sniffed {
    if plausible {
        Sniffed::More
    } else {
        Sniffed::Malformed("not an HTTP/1.x request line")
    }
}

/// RFC 9110's token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Sniffed {
        Sniffed::Name(s.into())
    }

    #[test]
    fn host_headers() {
        assert_eq!(
            host(b"GET / HTTP/1.1\r\nHost: API.Example.com:8080\r\n\r\n"),
            name("api.example.com")
        );
        assert_eq!(
            host(b"\r\nGET / HTTP/1.1\r\nAccept: */*\r\nhost:a.test\r\n\r\n"),
            name("a.test")
        );
        assert_eq!(host(b"GET / HTTP/1.1\nHost: a.test.\n\n"), name("a.test"));
        assert_eq!(host(b"GET / HTTP/1.0\r\n\r\n"), Sniffed::Nameless);
        assert_eq!(
            host(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
            Sniffed::Nameless
        );
        assert_eq!(
            host(b"GET / HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n"),
            Sniffed::Nameless
        );
    }

    #[test]
    fn absolute_and_authority_forms_win_over_host() {
        let abs = b"GET http://user@b.test:81/x?y HTTP/1.1\r\nHost: a.test\r\n\r\n";
        assert_eq!(host(abs), name("b.test"));
        assert_eq!(host(b"GET HTTPS://B.test HTTP/1.1\r\n"), name("b.test"));
        assert_eq!(host(b"CONNECT c.test:443 HTTP/1.1\r\n"), name("c.test"));
        assert_eq!(
            host(b"OPTIONS * HTTP/1.1\r\nHost: d.test\r\n\r\n"),
            name("d.test")
        );
    }

    #[test]
    fn waits_for_the_whole_head() {
        for partial in [
            &b""[..],
            b"GE",
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1\r\nHost: a.test\r\n",
            b"GET / HTTP/1.1\r\nHo",
        ] {
            assert_eq!(
                host(partial),
                Sniffed::More,
                "{:?}",
                String::from_utf8_lossy(partial)
            );
        }
    }

    #[test]
    fn refuses_what_a_server_must() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /  HTTP/1.1\r\n",
            b"GET / HTTP/2.0\r\n",
            b"\x00\x01\x02",
            b"GET / HTTP/1.1\r\nHost: a_b c\r\n\r\n",
        ] {
            assert!(
                matches!(host(bad), Sniffed::Malformed(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
