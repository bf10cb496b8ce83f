//! faasd behind a router, as `docs/network.md` sets it up: BIRD 2 on the
//! node learns faasd's routes (`--route-table 100`) and announces them over
//! BGP to BIRD on a router, which installs them; a client in the router's
//! namespace reaches the function. `rm` and a planned stop withdraw the
//! route at the router. All inside namespaces the test makes.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{ip, unique, Netns};
use common::*;

/// A BIRD daemon in a namespace, with its config and control socket in a
/// directory of its own; killed on drop.
struct Bird {
    child: Child,
    dir: tempfile::TempDir,
}

impl Bird {
    fn start(ns: &Netns, config: &str) -> Self {
        let bird = which("bird").expect("bird not found: apt-get install -y bird2");
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("bird.conf");
        std::fs::write(&conf, config).expect("bird.conf");
        let log = std::fs::File::create(dir.path().join("bird.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(bird)
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(dir.path().join("bird.ctl"))
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("bird");
        Self { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bird.log")).unwrap_or_default()
    }

    /// `birdc show protocols` (for failure messages).
    fn protocols(&self) -> String {
        let birdc = which("birdc").unwrap_or_else(|| PathBuf::from("birdc"));
        Command::new(birdc)
            .arg("-s")
            .arg(self.dir.path().join("bird.ctl"))
            .args(["show", "protocols"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dist(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dist/bird")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documented node config with this test's router id and neighbor.
fn node_config(router_id: &str, neighbor: &str) -> String {
    let text = dist("faasd-node.conf");
    assert!(
        text.contains("router id 192.0.2.1;") && text.contains("neighbor 192.0.2.254 as 65000;")
    );
    text.replace("router id 192.0.2.1;", &format!("router id {router_id};"))
        .replace(
            "neighbor 192.0.2.254 as 65000;",
            &format!("neighbor {neighbor} as 65000;"),
        )
}

/// The documented router config with one session per node address.
fn router_config(router_id: &str, nodes: &[&str]) -> String {
    let text = dist("router.conf");
    let one = "protocol bgp node1 from faasd_node {\n    neighbor 192.0.2.1 as 65001;\n}\n";
    assert!(text.contains(one), "router.conf changed shape");
    let sessions: String = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "protocol bgp node{} from faasd_node {{\n    neighbor {n} as 65001;\n}}\n",
                i + 1
            )
        })
        .collect();
    text.replace("router id 192.0.2.254;", &format!("router id {router_id};"))
        .replace(one, &sessions)
}

/// The router's route to `addr`, as `ip route` prints it (empty if none).
fn router_route(router: &Netns, addr: IpAddr) -> String {
    let out = Command::new("ip")
        .args(["-n", &router.0, "route", "show", &addr.to_string()])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_until(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_router_learns_the_function_over_bgp_and_forgets_it_at_rm_and_stop() {
    if which("bird").is_none() {
        panic!("bird not found: scripts/install-deps.sh installs bird2");
    }
    let router = Netns::new("router");
    let node = Netns::new("bnode");
    let (rv, nv) = (unique("br"), unique("bn"));
    ip(&[
        "link", "add", &rv, "netns", &router.0, "type", "veth", "peer", "name", &nv, "netns",
        &node.0,
    ]);
    router.ip(&["addr", "add", "198.18.1.2/30", "dev", &rv]);
    router.ip(&["link", "set", &rv, "up"]);
    node.ip(&["addr", "add", "198.18.1.1/30", "dev", &nv]);
    node.ip(&["link", "set", &nv, "up"]);
    let router_bird = Bird::start(&router, &router_config("198.18.1.2", &["198.18.1.1"]));
    let node_bird = Bird::start(&node, &node_config("198.18.1.1", "198.18.1.2"));
    let mut d = Daemon::start_in(
        &node.0,
        &[
            "--ip-pool",
            "198.18.100.0/24",
            "--route-table",
            "100",
            "--drain",
            "2",
        ],
    );
    let context = || {
        format!(
            "router: {}\n{}\nnode: {}\n{}",
            router_bird.protocols(),
            router_bird.log(),
            node_bird.protocols(),
            node_bird.log()
        )
    };
    let opts = faasd::api::DeployOptions {
        warm: 1,
        ..Default::default()
    };
    let f = d.deploy("f", &hello_image(), &opts).ip;
    let g = d.deploy("g", &hello_image(), &opts).ip;
    for addr in [f, g] {
        wait_until(
            &format!("the router's route to {addr}"),
            Duration::from_secs(30),
            || router_route(&router, addr).contains("via 198.18.1.1"),
            context,
        );
        let (status, body) = router
            .run(move || http_get(&addr.to_string(), "/"))
            .unwrap_or_else(|e| panic!("GET {addr} from the router: {e}"));
        assert_eq!((status, body.as_str()), (200, "Hello from FaaS handler!\n"));
    }
    let out = d.faas(&["rm", "f"], None);
    assert!(out.status.success());
    wait_until(
        "the router to forget f",
        Duration::from_secs(10),
        || router_route(&router, f).is_empty(),
        context,
    );
    assert!(!router_route(&router, g).is_empty(), "g stays");

    // A planned stop: the router forgets g while the node still serves
    // (the drain), then the node goes.
    let t0 = Instant::now();
    let stopping = std::thread::spawn(move || d.stop());
    wait_until(
        "the router to forget g",
        Duration::from_secs(10),
        || router_route(&router, g).is_empty(),
        context,
    );
    let forgotten = t0.elapsed();
    let (status, took) = stopping.join().expect("stop");
    assert!(status.success());
    assert!(
        forgotten < took,
        "the route went ({forgotten:?}) before faasd stopped ({took:?})"
    );
}
