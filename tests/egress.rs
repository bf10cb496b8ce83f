//! Egress, opt-in: faasd in a namespace of its own, a second namespace
//! standing for the outside world (servers on 198.18.6.1 and 198.18.7.1).
//! A function without `--egress` reaches nothing; with it, exactly its
//! allow-list (through NAT), never the host itself; the rules follow
//! updates and go at `rm` and at stop.

mod common;

use std::io::Write;
use std::net::{IpAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{link, Netns};
use common::*;
use faasd::api::{DeployOptions, EgressRule};

/// Serves `hello from ADDR to PEER` on each of `addrs`, inside `ns`.
fn servers(ns: &Netns, addrs: &[&str]) {
    for addr in addrs {
        let (path, addr) = (format!("/run/netns/{}", ns.0), addr.to_string());
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("netns");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let listener = TcpListener::bind(&addr).expect("bind");
            let _ = ready_tx.send(());
            for conn in listener.incoming().flatten() {
                let peer = conn.peer_addr().map(|p| p.ip().to_string());
                let mut conn = conn;
                let line = format!("hello from {addr} to {}\n", peer.unwrap_or_default());
                let _ = conn.write_all(line.as_bytes());
            }
        });
        ready.recv().expect("server up");
    }
}

/// A UDP socket on `[::]:port` in `ns` for 2 s: the datagram it got, if any.
fn udp_listener(ns: &Netns, port: u16) -> std::sync::mpsc::Receiver<Option<String>> {
    let path = format!("/run/netns/{}", ns.0);
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (heard_tx, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("netns");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let sock = std::net::UdpSocket::bind(("::", port)).expect("bind udp");
        sock.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let _ = ready_tx.send(());
        let mut buf = [0u8; 64];
        let got = sock
            .recv_from(&mut buf)
            .ok()
            .map(|(n, from)| format!("{:?} from {from}", &buf[..n]));
        let _ = heard_tx.send(got);
    });
    ready.recv().expect("udp listener up");
    heard
}

fn in_ns(ns: &Netns, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .args(args)
        .output()
        .expect("ip netns exec");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What function `ip` got trying `target` (IP:PORT) from its container.
fn reach(node: &Netns, ip: IpAddr, target: &str) -> String {
    let path = format!("/{target}");
    let host = ip.to_string();
    node.run(move || http_get_timeout(&host, &path, Duration::from_secs(10)))
        .map(|(_, body)| body.trim().to_string())
        .unwrap_or_else(|e| format!("call failed: {e}"))
}

fn egress(allow: &[&str]) -> DeployOptions {
    DeployOptions {
        warm: 1,
        egress: true,
        egress_allow: allow
            .iter()
            .map(|a| EgressRule::parse(a).expect("rule"))
            .collect(),
        ..Default::default()
    }
}

#[test]
fn egress_reaches_the_allow_list_and_nothing_else() {
    let node = Netns::new("enode");
    let outside = Netns::new("eout");
    link(&node, "198.18.5.1/30", &outside, "198.18.5.2/30");
    outside.ip(&["addr", "add", "198.18.6.1/32", "dev", "lo"]);
    outside.ip(&["addr", "add", "198.18.7.1/32", "dev", "lo"]);
    node.ip(&["route", "add", "198.18.6.0/23", "via", "198.18.5.2"]);
    servers(
        &outside,
        &["198.18.6.1:5432", "198.18.6.1:8000", "198.18.7.1:5432"],
    );
    let mut d = Daemon::start_in(&node.0, &[]);
    let image = probe_image("egress", &[]);

    // No forwarding on the host: a clear refusal, nothing deployed.
    in_ns(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let refused = d
        .client()
        .deploy("early", &egress(&[]), &image_bytes(&image)[..]);
    match refused {
        Err(faasd::client::ClientError::Api { status, message }) => {
            assert_eq!(status, 503, "{message}");
            assert!(message.contains("ip_forward"), "{message}");
        }
        other => panic!("egress without forwarding: {other:?}"),
    }
    assert!(d.client().list().expect("list").is_empty());
    in_ns(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);

    let closed = d
        .deploy(
            "closed",
            &image,
            &DeployOptions {
                warm: 1,
                ..Default::default()
            },
        )
        .ip;
    let narrow = d.deploy("narrow", &image, &egress(&["198.18.6.0/24:5432"]));
    let open = d.deploy("open", &image, &egress(&[])).ip;
    assert_eq!(
        narrow.sandbox.network,
        "egress to 198.18.6.0/24:5432 only (NAT)"
    );

    let got = reach(&node, closed, "198.18.6.1:5432");
    assert!(got.starts_with("failed"), "no egress by default: {got}");
    let got = reach(&node, narrow.ip, "198.18.6.1:5432");
    assert_eq!(
        got, "connected hello from 198.18.6.1:5432 to 198.18.5.1",
        "through NAT"
    );
    for target in ["198.18.6.1:8000", "198.18.7.1:5432"] {
        let got = reach(&node, narrow.ip, target);
        assert_eq!(got, "failed(timeout)", "{target} is not on the list");
    }
    let got = reach(&node, open, "198.18.7.1:5432");
    assert!(
        got.starts_with("connected hello from 198.18.7.1:5432"),
        "{got}"
    );
    // The host itself stays out of reach, open or not: dropped, not refused.
    let got = reach(&node, open, "198.18.5.1:22");
    assert_eq!(got, "failed(timeout)", "the host at 198.18.5.1:22");
    // 100.127.0.1 is the host end of whichever container link holds the
    // first /30: dropped while that link is up, unreachable (101) when no
    // container holds it at that moment; never refused, never reached.
    let got = reach(&node, open, "100.127.0.1:22");
    assert!(
        got == "failed(timeout)" || got == "failed(101)",
        "the host at 100.127.0.1:22: {got}"
    );

    // IPv6 is closed as IPv4 is: neither end of a container's link has an
    // IPv6 address (no link-local address to reach the host by), and a
    // datagram to every node on the link (ff02::1) reaches no one.
    let heard = udp_listener(&node, 9999);
    let got = reach(&node, open, "v6/9999");
    // No address to send from: EADDRNOTAVAIL.
    assert_eq!(got, "inet6=\nmulticast=failed(99)", "the container's side");
    let host_v6 = node.ip(&["-o", "-6", "addr", "show"]);
    let links: Vec<&str> = host_v6
        .lines()
        .filter(|l| !l.contains(": lo ") && !l.contains(": va"))
        .collect();
    assert!(links.is_empty(), "IPv6 on the host's ends: {links:?}");
    assert_eq!(
        heard.recv().expect("listener"),
        None,
        "a datagram reached the host"
    );
    // A port is TCP unless it says otherwise; `/udp` says so.
    let rule = EgressRule::parse("198.18.6.0/24:53/udp").expect("udp rule");
    assert_eq!(rule.to_string(), "198.18.6.0/24:53/udp");
    assert_eq!(
        EgressRule::parse("198.18.6.0/24:5432").expect("tcp rule"),
        EgressRule::parse("198.18.6.0/24:5432/tcp").expect("tcp rule")
    );

    // An update replaces the list.
    let out = d.faas(
        &["update", "narrow", "--egress-allow", "198.18.7.0/24:5432"],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let got = reach(&node, narrow.ip, "198.18.7.1:5432");
    assert!(got.starts_with("connected"), "{got}");
    let got = reach(&node, narrow.ip, "198.18.6.1:5432");
    assert_eq!(got, "failed(timeout)");

    // The cost on the cold path: --warm 0, one cold start per request.
    let cold = |name: &str, options: DeployOptions| -> Duration {
        let ip = d.deploy(name, &probe_image("hello", &[]), &options).ip;
        let mut took: Vec<Duration> = (0..7)
            .map(|_| {
                let t0 = Instant::now();
                let (status, _) = node.run(move || call(ip)).expect("cold call");
                assert_eq!(status, 200);
                t0.elapsed()
            })
            .collect();
        took.sort();
        took[took.len() / 2]
    };
    let without = cold(
        "cold-plain",
        DeployOptions {
            warm: 0,
            ..Default::default()
        },
    );
    let with = cold(
        "cold-egress",
        DeployOptions {
            warm: 0,
            ..egress(&[])
        },
    );
    println!(
        "MEASURE cold_p50_ms without_egress={:.1} with_egress={:.1}",
        without.as_secs_f64() * 1e3,
        with.as_secs_f64() * 1e3
    );
    assert!(
        with < without + Duration::from_millis(100),
        "egress costs a cold start {with:?} against {without:?}"
    );

    // rm takes the function's rules; stop takes ours and every link.
    let chains = || in_ns(&node, &["iptables", "-w", "-S"]);
    // The functions' chains (FAASD-F<slot>), not FAASD-FWD.
    let per_function = |rules: &str| {
        rules
            .lines()
            .filter(|l| l.starts_with("-N FAASD-F") && *l != "-N FAASD-FWD")
            .count()
    };
    // kill -9 and a restart: the rules come back once, and still hold.
    d.crash();
    d.spawn();
    let again = chains();
    assert_eq!(
        again.matches("-A FORWARD -j FAASD-FWD").count(),
        1,
        "{again}"
    );
    let got = reach(&node, open, "198.18.7.1:5432");
    assert!(got.starts_with("connected"), "after a restart: {got}");
    let got = reach(&node, narrow.ip, "198.18.6.1:5432");
    assert_eq!(got, "failed(timeout)", "after a restart");
    let before = chains();
    assert!(before.contains("FAASD-EGRESS"), "{before}");
    assert_eq!(per_function(&before), 3, "{before}");
    assert!(d.faas(&["rm", "narrow"], None).status.success());
    assert_eq!(per_function(&chains()), 2);
    d.stop();
    let after = chains();
    assert!(!after.contains("FAASD"), "rules left at stop: {after}");
    let nat = in_ns(&node, &["iptables", "-w", "-t", "nat", "-S"]);
    assert!(!nat.contains("FAASD"), "{nat}");
    let links = node.ip(&["-o", "link", "show"]);
    assert!(
        !links.lines().any(|l| l.contains(": fe")),
        "links left: {links}"
    );
}
