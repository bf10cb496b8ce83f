//! BIRD 2 in test namespaces, with the configs `dist/bird/` documents
//! (only addresses replaced), and waiting on what routers learn.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::Netns;
use super::which;

/// A BIRD daemon in a namespace, with its config and control socket in a
/// directory of its own; killed on drop.
pub struct Bird {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Bird {
    pub fn start(ns: &Netns, config: &str) -> Self {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bird.log")).unwrap_or_default()
    }

    /// `birdc show protocols` (for failure messages).
    pub fn protocols(&self) -> String {
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

pub fn dist(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dist/bird")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documented node config with this test's router id and neighbor.
pub fn node_config(router_id: &str, neighbor: &str) -> String {
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
pub fn router_config(router_id: &str, nodes: &[&str]) -> String {
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
pub fn router_route(router: &Netns, addr: IpAddr) -> String {
    let out = Command::new("ip")
        .args(["-n", &router.0, "route", "show", &addr.to_string()])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// How many next hops `router` has for `addr`.
pub fn paths(router: &Netns, addr: IpAddr) -> usize {
    let route = router_route(router, addr);
    match route.matches("nexthop").count() {
        0 if route.contains(" via ") => 1,
        n => n,
    }
}

/// Stops `d` with SIGTERM and checks the planned stop's order: `router`
/// forgets `addr` while faasd still drains, then faasd exits cleanly.
/// Returns how long after the signal the router forgot it.
pub fn stop_withdrawing_first(
    d: &mut super::Daemon,
    router: &Netns,
    addr: IpAddr,
    context: impl Fn() -> String,
) -> Duration {
    let t0 = Instant::now();
    let (forgotten, (status, took)) = std::thread::scope(|s| {
        let stopping = s.spawn(|| d.stop());
        wait_until(
            &format!("the router to forget {addr}"),
            Duration::from_secs(10),
            || router_route(router, addr).is_empty(),
            context,
        );
        (t0.elapsed(), stopping.join().expect("stop"))
    });
    assert!(
        forgotten < took,
        "the route went ({forgotten:?}) before faasd stopped ({took:?})"
    );
    assert!(
        status.success(),
        "faasd stopped with {status:?} after {took:?}"
    );
    forgotten
}

pub fn wait_until(
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
