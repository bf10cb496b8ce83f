//! `dist/router/pin-flows.sh` on its own, for IPv4 and IPv6: a router
//! namespace with an ECMP route to one anycast address served by two node
//! namespaces (a small TCP server each that answers with its name). With
//! the script run on the router, connections opened before one node's
//! next hop is removed from the route still reach that node afterwards;
//! without it, they are rehashed to the other node, which resets them.
//! All inside namespaces the test makes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::netns::{link, Netns};

const PORT: u16 = 7000;

/// One address family's plan: the anycast address, and per node the
/// router's and the node's address on their link, with the prefix length.
struct Plan {
    family: &'static str,
    anycast: &'static str,
    links: [(&'static str, &'static str); 2],
    len: &'static str,
    host: &'static str,
}

const V4: Plan = Plan {
    family: "-4",
    anycast: "198.18.50.1",
    links: [
        ("198.18.51.2", "198.18.51.1"),
        ("198.18.51.6", "198.18.51.5"),
    ],
    len: "30",
    host: "32",
};

const V6: Plan = Plan {
    family: "-6",
    anycast: "fd00:faa5:50::1",
    links: [
        ("fd00:faa5:51::2", "fd00:faa5:51::1"),
        ("fd00:faa5:52::2", "fd00:faa5:52::1"),
    ],
    len: "64",
    host: "128",
};

/// A node's server: answers each connection's first line with `name`,
/// until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Netns, addr: IpAddr, name: &'static str) -> Self {
        let listener = ns.run(move || TcpListener::bind((addr, PORT)).expect("bind"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        std::thread::spawn(move || answer(conn, name));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

fn answer(conn: TcpStream, name: &str) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    if BufReader::new(&conn).read_line(&mut line).is_ok() {
        let _ = (&conn).write_all(format!("{name}\n").as_bytes());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What each of 12 connections, opened while both next hops were in the
/// route and used after node 2's was removed, got back: a node's name, or
/// the error.
fn across_a_removed_hop(plan: &Plan, pin: bool) -> Vec<Result<String, String>> {
    let router = Netns::new("prouter");
    let out = Command::new("ip")
        .args(["netns", "exec", &router.0, "sysctl", "-qw"])
        .arg(if plan.family == "-4" {
            "net.ipv4.fib_multipath_hash_policy=1"
        } else {
            "net.ipv6.fib_multipath_hash_policy=1"
        })
        .output()
        .expect("sysctl");
    assert!(out.status.success(), "{out:?}");
    let anycast: IpAddr = plan.anycast.parse().expect("anycast");
    let mut nodes = Vec::new();
    let mut pairs = Vec::new();
    let mut hops = Vec::new();
    for (i, (router_side, node_side)) in plan.links.iter().enumerate() {
        let ns = Netns::new("pnode");
        let (rv, _) = link(
            &router,
            &format!("{router_side}/{}", plan.len),
            &ns,
            &format!("{node_side}/{}", plan.len),
        );
        ns.ip(&[plan.family, "route", "add", "default", "via", router_side]);
        let host = format!("{}/{}", plan.anycast, plan.host);
        let mut add = vec!["addr", "add", &host, "dev", "lo"];
        if plan.family == "-6" {
            // IPv6 on lo too stays tentative (bind fails) until the
            // kernel's DAD work has run.
            add.push("nodad");
        }
        ns.ip(&add);
        let name = ["n1", "n2"][i];
        let server = Server::start(&ns, anycast, name);
        pairs.push(format!("{rv}={node_side}"));
        hops.push((rv, node_side.to_string()));
        nodes.push((server, ns));
    }
    let host = format!("{}/{}", plan.anycast, plan.host);
    let mut route = vec![plan.family, "route", "add", &host];
    for (dev, via) in &hops {
        route.extend(["nexthop", "via", via, "dev", dev]);
    }
    router.ip(&route);
    if pin {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/router/pin-flows.sh");
        let out = Command::new("ip")
            .args(["netns", "exec", &router.0])
            .arg(script)
            .args(&pairs)
            .output()
            .expect("pin-flows.sh");
        assert!(out.status.success(), "pin-flows.sh {pairs:?}: {out:?}");
    }
    let held: Vec<TcpStream> = router.run(move || {
        (0..12)
            .map(|_| TcpStream::connect((anycast, PORT)).expect("connect"))
            .collect()
    });
    // Node 2's next hop goes, as when BGP withdraws its route.
    router.ip(&[
        plan.family,
        "route",
        "replace",
        &host,
        "via",
        &hops[0].1,
        "dev",
        &hops[0].0,
    ]);
    let answers = held
        .into_iter()
        .map(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            c.write_all(b"hello\n").map_err(|e| e.to_string())?;
            let mut line = String::new();
            BufReader::new(&c)
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            match line.trim() {
                "" => Err("closed without an answer".to_string()),
                name => Ok(name.to_string()),
            }
        })
        .collect();
    drop(nodes);
    answers
}

fn pinned_flows_stay_on_their_node(plan: &Plan) {
    let answers = across_a_removed_hop(plan, true);
    assert!(
        answers.iter().all(Result::is_ok),
        "{}: every held connection is answered: {answers:?}",
        plan.family
    );
    assert!(
        answers.iter().any(|a| matches!(a, Ok(n) if n == "n2")),
        "{}: some held connections were on node 2 ((1/2)^12 that none is): {answers:?}",
        plan.family
    );
    // The control: without the script, node 2's connections are reset.
    let plain = across_a_removed_hop(plan, false);
    assert!(
        plain.iter().any(Result::is_err),
        "{}: without pinning some held connection breaks: {plain:?}",
        plan.family
    );
}

#[test]
fn ipv4_connections_stay_on_a_removed_next_hop() {
    pinned_flows_stay_on_their_node(&V4);
}

#[test]
fn ipv6_connections_stay_on_a_removed_next_hop() {
    pinned_flows_stay_on_their_node(&V6);
}
