//! The cluster harness, as `docs/network.md` sets a cluster up: a router
//! namespace running BIRD with ECMP (and etcd, one member or three, on
//! addresses of their own), node namespaces each with faasd and BIRD
//! peering with the router, and a client namespace behind it.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use super::bird::{node_config, paths, router_config, wait_until, Bird};
use super::etcd::{Etcd, Pki};
use super::netns::{link, Netns};
use super::*;
use faasd::api::{DeployOptions, FunctionInfo};
use faasd::image::build::{Entry, ImageSpec, Layer};

pub const ETCD: &str = "198.18.0.1";
pub const POOL: &str = "198.18.100.0/24";

/// One node: its namespace, BIRD and faasd.
/// Fields drop in order: faasd and BIRD before their namespace.
pub struct Node {
    pub faasd: Daemon,
    pub bird: Option<Bird>,
    pub addr: String,
    pub router_side: String,
    pub ns: Netns,
}

impl Node {
    pub fn bird(&mut self) {
        self.bird = Some(Bird::start(
            &self.ns,
            &node_config(&self.addr, &self.router_side),
        ));
    }

    pub fn call(&self, ip: IpAddr) -> std::io::Result<(u16, String)> {
        self.ns.run(move || call(ip))
    }

    pub fn inspect(&self, name: &str) -> FunctionInfo {
        self.faasd.client().inspect(name).expect("inspect")
    }

    /// Drops (or stops dropping) everything between this node and etcd's
    /// members, or its peers' control APIs (where archives are fetched),
    /// both ways, as a partition would.
    pub fn cut(&self, from: Cut, on: bool) {
        let (net, port) = match from {
            Cut::Etcd => ("198.18.0.0/30".to_string(), "2379"),
            Cut::Peers => ("198.18.1.0/24".to_string(), "8080"),
            Cut::Peer(ip) => (format!("{ip}/32"), "8080"),
        };
        let net = net.as_str();
        let rules: [[&str; 7]; 2] = match from {
            Cut::Etcd => [
                ["OUTPUT", "-d", net, "-p", "tcp", "--dport", port],
                ["INPUT", "-s", net, "-p", "tcp", "--sport", port],
            ],
            // Both its fetches from peers and theirs from it.
            Cut::Peers | Cut::Peer(_) => [
                ["OUTPUT", "-d", net, "-p", "tcp", "--dport", port],
                ["INPUT", "-s", net, "-p", "tcp", "--dport", port],
            ],
        };
        for rule in rules {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.ns.0, "iptables"])
                .arg(if on { "-I" } else { "-D" })
                .args(rule)
                .args(["-j", "DROP"])
                .output()
                .expect("iptables");
            assert!(out.status.success(), "iptables: {out:?}");
        }
    }
}

/// What `Node::cut` separates a node from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Etcd,
    Peers,
    /// One peer's control API, by its address.
    Peer(std::net::Ipv4Addr),
}

pub struct Sim {
    pub nodes: Vec<Node>,
    pub router_bird: Option<Bird>,
    pub etcd: Vec<Etcd>,
    /// A client's namespace behind the router (its traffic is forwarded).
    pub client: Netns,
    pub router: Netns,
    pool: String,
    extra: Vec<String>,
    _token: tempfile::TempDir,
    _pki: Pki,
}

impl Sim {
    pub fn start(count: usize) -> Self {
        Self::start_with(count, &[])
    }

    /// `count` nodes, each faasd with `extra` flags too.
    pub fn start_with(count: usize, extra: &[&str]) -> Self {
        Self::start_full(count, 1, extra)
    }

    /// `count` nodes over an etcd of `members` (on 198.18.0.1 and up).
    pub fn start_full(count: usize, members: usize, extra: &[&str]) -> Self {
        Self::start_pool(count, members, POOL, extra)
    }

    /// The same with `pool` as every node's `--ip-pool`.
    pub fn start_pool(count: usize, members: usize, pool: &str, extra: &[&str]) -> Self {
        for tool in ["bird", "etcd"] {
            assert!(
                which(tool).is_some(),
                "{tool} not found: scripts/install-deps.sh installs bird2 and etcd-server"
            );
        }
        let router = Netns::new("crouter");
        for sysctl in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.fib_multipath_hash_policy=1",
        ] {
            router_sysctl(&router, sysctl);
        }
        let etcd_ips: Vec<String> = (1..=members).map(|i| format!("198.18.0.{i}")).collect();
        for ip in &etcd_ips {
            router.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
        }
        let etcd_ips: Vec<&str> = etcd_ips.iter().map(String::as_str).collect();
        let client = Netns::new("cclient");
        link(&router, "198.18.0.5/30", &client, "198.18.0.6/30");
        client.ip(&["route", "add", "default", "via", "198.18.0.5"]);
        let pki = Pki::for_etcd(&etcd_ips);
        let etcd = match members {
            1 => vec![Etcd::start(&router, ETCD, &pki)],
            _ => Etcd::cluster(&router, &etcd_ips, &pki),
        };
        let token = tempfile::tempdir().expect("tempdir");
        std::fs::write(token.path().join("token"), "cluster-test-token\n").expect("token");
        let mut sim = Sim {
            client,
            router,
            // The router's BIRD starts once the nodes it peers with exist.
            router_bird: None,
            etcd,
            nodes: Vec::new(),
            pool: pool.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _token: token,
            _pki: pki,
        };
        let mut links = Vec::new();
        for _ in 0..count {
            links.push(sim.add_node());
        }
        pin_flows(&sim.router, &links);
        let peers: Vec<&str> = sim.nodes.iter().map(|n| n.addr.as_str()).collect();
        sim.router_bird = Some(Bird::start(
            &sim.router,
            &router_config("198.18.0.1", &peers),
        ));
        sim
    }

    /// A node that joins late: its namespace, link, faasd and BIRD (the
    /// router does not peer with it; it serves in its own namespace).
    pub fn join(&mut self) -> &Node {
        self.add_node();
        &self.nodes[self.nodes.len() - 1]
    }

    /// The next node, started; answers its link as `pin_flows` names it.
    fn add_node(&mut self) -> String {
        let i = self.nodes.len();
        let ns = Netns::new("cnode");
        let router_side = format!("198.18.1.{}", 4 * i + 2);
        let addr = format!("198.18.1.{}", 4 * i + 1);
        let (rv, _) = link(
            &self.router,
            &format!("{router_side}/30"),
            &ns,
            &format!("{addr}/30"),
        );
        ns.ip(&["route", "add", "198.18.0.0/23", "via", &router_side]);
        let listen = format!("{addr}:8080");
        let urls = self
            .etcd
            .iter()
            .map(Etcd::url)
            .collect::<Vec<_>>()
            .join(",");
        let etcd_args = self._pki.faasd_args(&urls);
        let mut args: Vec<&str> = etcd_args.iter().map(String::as_str).collect();
        let node_name = format!("n{}", i + 1);
        let advertise = format!("http://{listen}");
        let token_path = self
            ._token
            .path()
            .join("token")
            .to_string_lossy()
            .into_owned();
        args.extend([
            "--ip-pool",
            &self.pool,
            "--route-table",
            "100",
            "--drain",
            "2",
            "--node-name",
            &node_name,
            "--listen",
            &listen,
            "--advertise-url",
            &advertise,
            "--token-file",
            &token_path,
        ]);
        args.extend(self.extra.iter().map(String::as_str));
        let faasd = Daemon::start_in(&ns.0, &args);
        let mut node = Node {
            ns,
            addr: addr.clone(),
            router_side,
            bird: None,
            faasd,
        };
        node.bird();
        self.nodes.push(node);
        format!("{rv}={addr}")
    }

    pub fn context(&self) -> String {
        let router = self.router_bird.as_ref().map(Bird::protocols);
        let mut out = format!("router: {}\n", router.unwrap_or_default());
        for e in &self.etcd {
            out += &format!("etcd {}:\n{}\n", e.name(), tail(&e.log(), 20));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            out += &format!("--- n{} faasd:\n{}\n", i + 1, tail(&n.faasd.log_text(), 40));
        }
        out
    }

    /// Until every node is a member, as node 1 sees it.
    pub fn wait_members(&self) {
        wait_until(
            "every node a member",
            Duration::from_secs(15),
            || {
                self.nodes[0]
                    .faasd
                    .client()
                    .nodes()
                    .is_ok_and(|n| n.len() == self.nodes.len())
            },
            || self.context(),
        );
    }

    /// Until every node reports `name` ready (asked through node 1,
    /// without calling the function: calls are counted).
    pub fn wait_ready(&self, name: &str) {
        wait_until(
            &format!("{name} ready on every node"),
            Duration::from_secs(30),
            || {
                let info = self.nodes[0].inspect(name);
                info.nodes.iter().filter(|s| s.ready).count() == self.nodes.len()
            },
            || self.context(),
        );
    }

    pub fn paths(&self, addr: IpAddr) -> usize {
        paths(&self.router, addr)
    }

    /// GET `addr` from the router (a client behind it).
    pub fn get(&self, addr: IpAddr) -> std::io::Result<(u16, String)> {
        self.router.run(move || call(addr))
    }
}

/// The documented router recipe that keeps a connection on the node it
/// started on when that node's path goes (`dist/router/pin-flows.sh`).
pub fn pin_flows(router: &Netns, links: &[String]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/router/pin-flows.sh");
    let out = Command::new("ip")
        .args(["netns", "exec", &router.0])
        .arg(script)
        .args(links)
        .output()
        .expect("pin-flows.sh");
    assert!(out.status.success(), "pin-flows.sh {links:?}: {out:?}");
}

pub fn router_sysctl(ns: &Netns, setting: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "sysctl", "-qw", setting])
        .output()
        .expect("sysctl");
    assert!(out.status.success(), "sysctl {setting}: {out:?}");
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// hello, padded with `mb` MB that do not compress.
pub fn padded_hello(mb: usize) -> ImageSpec {
    let mut spec = hello_image();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let pad: Vec<u8> = (0..mb << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    spec.layers.push(Layer {
        entries: vec![Entry::file("pad", pad)],
        gzip: false,
    });
    spec
}

pub fn warm1() -> DeployOptions {
    DeployOptions {
        warm: 1,
        ..Default::default()
    }
}

/// The probe answering with `WHICH=which`.
pub fn which_image(which: &str) -> ImageSpec {
    let mut spec = probe_image("inspect", &["PROBE_ENV=WHICH", &format!("WHICH={which}")]);
    spec.tag = format!("which-{which}:latest");
    spec
}
