//! Which TCP sockets listen on a port in this network namespace, asked of
//! the kernel through sock_diag (NETLINK_SOCK_DIAG, what `ss -ltn` uses;
//! its messages written and read by `netlink-packet-sock-diag`, the
//! rtnetlink family's crate).
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

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use nix::errno::Errno;
use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// Every LISTEN socket on TCP `port`: where to reach it (a wildcard
/// address becomes loopback) and its inode (how /proc/PID/fd names it).
/// None when the kernel would not answer.
pub fn listeners(port: u16) -> Option<Vec<(SocketAddr, u64)>> {
    let mut found = Vec::new();
    for family in [AF_INET, AF_INET6] {
        for (addr, inode) in dump(family).ok()? {
            if addr.port() == port {
                found.push((reachable(addr), inode));
            }
        }
    }
    Some(found)
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
            Parsed::Error(errno) => return Err(errno),
        }
    }
}

/// A dump request for TCP sockets in LISTEN, any address.
fn request(family: u8) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = if family == AF_INET6 {
        SocketId::new_v6()
    } else {
        SocketId::new_v4()
    };
    let mut message = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id,
        })
        .into(),
    );
    message.finalize();
    let mut buf = vec![0u8; message.buffer_len()];
    message.serialize(&mut buf);
    buf
}

enum Parsed {
    More,
    Done,
    Error(Errno),
}

/// The messages of one datagram of the dump's answer.
fn parse(mut data: &[u8], found: &mut Vec<(SocketAddr, u64)>) -> Parsed {
    while !data.is_empty() {
        let Ok(message) = NetlinkMessage::<SockDiagMessage>::deserialize(data) else {
            return Parsed::Error(Errno::EBADMSG);
        };
        match message.payload {
            NetlinkPayload::Done(_) => return Parsed::Done,
            NetlinkPayload::Error(e) => {
                return Parsed::Error(e.code.map_or(Errno::EBADMSG, |c| Errno::from_raw(-c.get())))
            }
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                let id = &r.header.socket_id;
                let addr = SocketAddr::new(id.source_address, id.source_port);
                found.push((addr, u64::from(r.header.inode)));
            }
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        let len = message.header.length as usize;
        if len == 0 {
            return Parsed::Error(Errno::EBADMSG);
        }
        data = &data[((len + 3) & !3).min(data.len())..];
    }
    Parsed::More
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
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&(-nix::libc::EPERM).to_ne_bytes());
        m.extend_from_slice(&[0; 16]); // the request's header
        assert!(matches!(
            parse(&m, &mut Vec::new()),
            Parsed::Error(Errno::EPERM)
        ));
        let truncated = &m[..10];
        assert!(matches!(
            parse(truncated, &mut Vec::new()),
            Parsed::Error(_)
        ));
        let mut lying = m.clone();
        lying[0] = 200;
        assert!(matches!(parse(&lying, &mut Vec::new()), Parsed::Error(_)));
    }
}
