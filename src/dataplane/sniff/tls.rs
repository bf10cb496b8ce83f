//! The `server_name` of a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3),
//! reassembled from however many records and TCP segments it came in.

use super::{named, Sniffed};

/// The record content type of handshake messages.
pub(super) const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME: u16 = 0;
/// `encrypted_client_hello` (RFC 9849).
const ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
const HOST_NAME: u8 = 0;
/// A record's plaintext is 2^14 bytes at most.
const MAX_RECORD: usize = 1 << 14;

/// Routes by the ClientHello in `bytes`.
pub(super) fn server_name(bytes: &[u8]) -> Sniffed {
    let mut hello = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = bytes.get(at..at + 5) else {
            return Sniffed::More;
        };
        if header[0] != HANDSHAKE {
            return Sniffed::Malformed("a TLS record before the ClientHello is complete");
        }
        if header[1] != 3 {
            return Sniffed::Malformed("not a TLS record");
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Sniffed::Malformed("a TLS record of an impossible length");
        }
        let Some(fragment) = bytes.get(at + 5..at + 5 + len) else {
            // What this record brought so far may already hold the name.
            hello.extend_from_slice(&bytes[(at + 5).min(bytes.len())..]);
            return match parse(&hello) {
                Sniffed::Malformed(_) => Sniffed::More,
                decided => decided,
            };
        };
        hello.extend_from_slice(fragment);
        at += 5 + len;
        match parse(&hello) {
            Sniffed::More => continue,
            decided => return decided,
        }
    }
}

/// Reads a handshake message stream that starts with a ClientHello.
fn parse(hello: &[u8]) -> Sniffed {
    let mut r = Reader(hello);
    let Some(kind) = r.u8() else {
        return Sniffed::More;
    };
    if kind != CLIENT_HELLO {
        return Sniffed::Malformed("the first handshake message is not a ClientHello");
    }
    let Some(body_len) = r.u24() else {
        return Sniffed::More;
    };
    // The message is walked as far as it has arrived: a name in its first
    // part decides before the rest is there.
    let mut body = Reader(&r.0[..r.0.len().min(body_len)]);
    let complete = r.0.len() >= body_len;
    let walked = (|| {
        body.take(2 + 32)?;
        let session = body.u8()?;
        body.take(usize::from(session))?;
        let suites = body.u16()?;
        body.take(usize::from(suites))?;
        let compression = body.u8()?;
        body.take(usize::from(compression))?;
        if body.0.is_empty() && complete {
            return Some(Sniffed::Nameless);
        }
        let extensions = usize::from(body.u16()?);
        let mut ext = Reader(&body.0[..body.0.len().min(extensions)]);
        // Every extension is read: one offering ECH may follow the name.
        let mut name = None;
        let mut encrypted = false;
        while !ext.0.is_empty() {
            let kind = ext.u16()?;
            let len = usize::from(ext.u16()?);
            let data = ext.take(len)?;
            match kind {
                SERVER_NAME => name = Some(host_name(data)),
                ENCRYPTED_CLIENT_HELLO => encrypted = true,
                _ => {}
            }
        }
        if !complete {
            return None;
        }
        Some(match (name, encrypted) {
            (Some(Sniffed::Name(outer)), true) => Sniffed::Encrypted(Some(outer)),
            (Some(Sniffed::Nameless) | None, true) => Sniffed::Encrypted(None),
            (Some(decided), _) => decided,
            (None, false) => Sniffed::Nameless,
        })
    })();
    match walked {
        Some(decided) => decided,
        None if complete => Sniffed::Malformed("a truncated ClientHello"),
        None => Sniffed::More,
    }
}

/// The `host_name` entry of a server_name extension's list.
fn host_name(data: &[u8]) -> Sniffed {
    let mut r = Reader(data);
    let Some(list) = r.u16() else {
        return Sniffed::Malformed("an empty server_name extension");
    };
    let mut list = Reader(&r.0[..r.0.len().min(usize::from(list))]);
    while let (Some(kind), Some(len)) = (list.u8(), list.u16()) {
        let Some(name) = list.take(usize::from(len)) else {
            break;
        };
        if kind == HOST_NAME {
            return named(name);
        }
    }
    Sniffed::Malformed("a server_name extension without a host name")
}

/// Big-endian fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A ClientHello as one record, with `sni` if given and a padding
    /// extension of `pad` bytes before it.
    pub fn client_hello(sni: Option<&str>, pad: usize) -> Vec<u8> {
        let mut ext = Vec::new();
        ext.extend_from_slice(&21u16.to_be_bytes());
        ext.extend_from_slice(&(pad as u16).to_be_bytes());
        ext.extend(std::iter::repeat_n(0, pad));
        if let Some(name) = sni {
            let n = name.len() as u16;
            ext.extend_from_slice(&0u16.to_be_bytes());
            ext.extend_from_slice(&(n + 5).to_be_bytes());
            ext.extend_from_slice(&(n + 3).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&n.to_be_bytes());
            ext.extend_from_slice(name.as_bytes());
        }
        let mut body = vec![3, 3];
        body.extend([7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut hs = vec![CLIENT_HELLO];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        records(&hs, MAX_RECORD)
    }

    /// `hs` cut into handshake records of `size` bytes each.
    pub fn records(hs: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in hs.chunks(size) {
            out.extend_from_slice(&[HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn finds_the_name_in_any_split() {
        let hello = client_hello(Some("API.example.com"), 600);
        assert_eq!(server_name(&hello), Sniffed::Name("api.example.com".into()));
        for cut in 0..hello.len() {
            let got = server_name(&hello[..cut]);
            assert!(
                matches!(got, Sniffed::More | Sniffed::Name(_)),
                "cut {cut}: {got:?}"
            );
        }
        let hs = &hello[5..];
        for size in [1, 7, 100] {
            let split = records(hs, size);
            assert_eq!(
                server_name(&split),
                Sniffed::Name("api.example.com".into()),
                "records of {size}"
            );
        }
    }

    #[test]
    fn encrypted_hellos_say_so() {
        let mut hello = client_hello(Some("public.example"), 0);
        // Append an ECH extension after the name, fixing up the lengths.
        let ech = [0xfe, 0x0d, 0, 4, 0, 1, 2, 3];
        hello.extend_from_slice(&ech);
        let grow = |at: usize, width: usize, by: usize, h: &mut Vec<u8>| {
            let mut v = 0usize;
            for i in 0..width {
                v = v << 8 | usize::from(h[at + i]);
            }
            v += by;
            for i in 0..width {
                h[at + i] = (v >> (8 * (width - 1 - i))) as u8;
            }
        };
        grow(3, 2, ech.len(), &mut hello);
        grow(6, 3, ech.len(), &mut hello);
        let ext_len_at = 5 + 4 + 2 + 32 + 1 + 4 + 2;
        grow(ext_len_at, 2, ech.len(), &mut hello);
        assert_eq!(
            server_name(&hello),
            Sniffed::Encrypted(Some("public.example".into()))
        );
        let cut = &hello[..hello.len() - 3];
        assert_eq!(server_name(cut), Sniffed::More, "decided only once whole");
    }

    #[test]
    fn nameless_and_malformed() {
        assert_eq!(server_name(&client_hello(None, 10)), Sniffed::Nameless);
        let mut not_hello = client_hello(Some("a.test"), 0);
        not_hello[5] = 2;
        assert!(matches!(server_name(&not_hello), Sniffed::Malformed(_)));
        assert!(matches!(
            server_name(&[22, 3, 1, 0, 0]),
            Sniffed::Malformed(_)
        ));
        assert!(matches!(
            server_name(&[22, 9, 9, 0, 5, 1]),
            Sniffed::Malformed(_)
        ));
        assert!(matches!(
            server_name(&client_hello(Some("a b"), 0)),
            Sniffed::Malformed(_)
        ));
        assert_eq!(
            server_name(&client_hello(Some("192.0.2.1"), 0)),
            Sniffed::Nameless
        );
    }
}
