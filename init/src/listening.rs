//! Which TCP sockets listen on a port in this network namespace, asked of
//! the kernel through sock_diag (NETLINK_SOCK_DIAG, what `ss -ltn` uses).
//!
//! Not /proc/net/tcp: reading that walks the whole established-connection
//! hash, which network namespaces share unless `tcp_child_ehash_entries`
//! says otherwise: 262,144 buckets on this 24 GiB host, about 3 ms of
//! kernel CPU per read, per family, even in a namespace with no
//! connection. Every pool container looks a few times while its server
//! starts, so a refill cost tens of milliseconds of CPU that requests
//! waited behind (measured: `--container-port` single-use hits 1.2–1.5 ms
//! instead of ~0.6 ms, 50 ms apart). A dump asking for LISTEN sockets only
//! walks the listening hash. /proc stays the fallback where sock_diag is
//! refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const TCP_LISTEN: u32 = 10;
const HEADER: usize = 16;
/// `struct inet_diag_msg`: family, state, timer, retrans, the 48-byte
/// socket id, then expires, rqueue, wqueue, uid, inode.
const DIAG_MSG: usize = 72;

/// Every LISTEN socket on TCP `port`: where to reach it (a wildcard
/// address becomes loopback) and its inode (how /proc/PID/fd names it).
/// None when the kernel would not answer.
pub fn listeners(port: u16) -> Option<Vec<(SocketAddr, u64)>> {
    let mut found = Vec::new();
    for family in [
        libc_family(AddressFamily::Inet),
        libc_family(AddressFamily::Inet6),
    ] {
        for (addr, inode) in dump(family).ok()? {
            if addr.port() == port {
                found.push((reachable(addr), inode));
            }
        }
    }
    Some(found)
}

fn libc_family(family: AddressFamily) -> u8 {
    family as i32 as u8
}

/// One dump of the LISTEN sockets of one address family.
fn dump(family: u8) -> nix::Result<Vec<(SocketAddr, u64)>> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    sendto(
        fd.as_raw_fd(),
        &request(family),
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut found = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        if n == 0 {
            return Ok(found);
        }
        match parse(&buf[..n], &mut found) {
            Parsed::More => {}
            Parsed::Done => return Ok(found),
            Parsed::Error(errno) => return Err(nix::errno::Errno::from_raw(errno)),
        }
    }
}

/// `nlmsghdr` + `inet_diag_req_v2`: TCP, LISTEN only, any address.
fn request(family: u8) -> Vec<u8> {
    let len = HEADER + 56;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    m.push(family);
    m.push(nix::libc::IPPROTO_TCP as u8);
    m.push(0); // no extensions
    m.push(0);
    m.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    m.resize(len, 0); // the socket id: zero matches any
    m
}

enum Parsed {
    More,
    Done,
    Error(i32),
}

/// The messages of one datagram of the dump's answer.
fn parse(mut data: &[u8], found: &mut Vec<(SocketAddr, u64)>) -> Parsed {
    while data.len() >= HEADER {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < HEADER || len > data.len() {
            return Parsed::Error(nix::libc::EBADMSG);
        }
        let body = &data[HEADER..len];
        match kind {
            NLMSG_DONE => return Parsed::Done,
            NLMSG_ERROR => {
                let errno = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(-nix::libc::EBADMSG);
                return Parsed::Error(-errno);
            }
            SOCK_DIAG_BY_FAMILY => found.extend(listener(body)),
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        data = &data[((len + 3) & !3).min(data.len())..];
    }
    Parsed::More
}

/// The local address and inode of one `inet_diag_msg`.
fn listener(msg: &[u8]) -> Option<(SocketAddr, u64)> {
    if msg.len() < DIAG_MSG {
        return None;
    }
    let port = u16::from_be_bytes([msg[4], msg[5]]);
    let ip = match msg[0] as i32 {
        nix::libc::AF_INET => IpAddr::V4(Ipv4Addr::new(msg[8], msg[9], msg[10], msg[11])),
        nix::libc::AF_INET6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&msg[8..24]);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    let inode = u32::from_ne_bytes([msg[68], msg[69], msg[70], msg[71]]);
    Some((SocketAddr::new(ip, port), u64::from(inode)))
}

/// Where faas-init connects to reach a listener: a wildcard is reached
/// on loopback.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn finds_a_listener_with_its_inode() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd()))
            .expect("stat")
            .ino();
        let found = listeners(port).expect("sock_diag answers");
        assert_eq!(found, vec![(l.local_addr().expect("addr"), inode)]);
        drop(l);
        assert_eq!(listeners(port), Some(vec![]));
    }

    #[test]
    fn a_wildcard_v6_listener_is_reached_on_loopback() {
        let Ok(l) = TcpListener::bind("[::]:0") else {
            eprintln!("skipped: no IPv6 here");
            return;
        };
        let port = l.local_addr().expect("addr").port();
        let found = listeners(port).expect("sock_diag answers");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].0,
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)
        );
    }

    #[test]
    fn a_connected_socket_is_not_a_listener() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        let (_server, _) = l.accept().expect("accept");
        let found = listeners(addr.port()).expect("sock_diag answers");
        assert_eq!(found.len(), 1, "only the listener: {found:?}");
    }

    #[test]
    fn an_error_message_is_an_error() {
        let mut m = Vec::new();
        m.extend_from_slice(&20u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&(-nix::libc::EPERM).to_ne_bytes());
        assert!(matches!(parse(&m, &mut Vec::new()), Parsed::Error(e) if e == nix::libc::EPERM));
        let truncated = &m[..10];
        assert!(matches!(parse(truncated, &mut Vec::new()), Parsed::More));
        let mut lying = m.clone();
        lying[0] = 200;
        assert!(matches!(parse(&lying, &mut Vec::new()), Parsed::Error(_)));
    }
}
