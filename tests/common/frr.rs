//! FRR (zebra and bgpd) in a test namespace, as the router in front of
//! faasd nodes, with the config `dist/frr/router.conf` documents (only
//! addresses replaced).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::netns::Netns;

const DAEMONS: &str = "/usr/lib/frr";

/// zebra and bgpd in a namespace, their config, sockets and logs in a
/// directory of their own; killed on drop.
pub struct Frr {
    children: Vec<Child>,
    pub dir: tempfile::TempDir,
}

impl Frr {
    /// Whether FRR's daemons are installed (scripts/install-deps.sh).
    pub fn installed() -> bool {
        Path::new(DAEMONS).join("bgpd").exists() && Path::new(DAEMONS).join("zebra").exists()
    }

    pub fn start(ns: &Netns, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("frr.conf"), config).expect("frr.conf");
        // The daemons drop to the frr user, which must reach its files.
        let out = Command::new("chown")
            .args(["-R", "frr:frr"])
            .arg(dir.path())
            .output()
            .expect("chown");
        assert!(out.status.success(), "chown frr: {out:?}");
        let mut frr = Frr {
            children: Vec::new(),
            dir,
        };
        for daemon in ["zebra", "bgpd"] {
            frr.spawn(ns, daemon);
            if daemon == "zebra" {
                // bgpd connects to zebra's socket once it is there.
                let api = frr.dir.path().join("zserv.api");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while !api.exists() && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                assert!(api.exists(), "zebra did not start: {}", frr.log());
            }
        }
        frr
    }

    fn spawn(&mut self, ns: &Netns, daemon: &str) {
        let dir = self.dir.path();
        let log = std::fs::File::create(dir.join(format!("{daemon}.log"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(PathBuf::from(DAEMONS).join(daemon))
            .arg("-f")
            .arg(dir.join("frr.conf"))
            .arg("-i")
            .arg(dir.join(format!("{daemon}.pid")))
            .arg("-z")
            .arg(dir.join("zserv.api"))
            .arg("--vty_socket")
            .arg(dir)
            .args(["-u", "frr", "-g", "frr"])
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{daemon}: {e}"));
        self.children.push(child);
    }

    /// The daemons' own output (for failure messages).
    pub fn log(&self) -> String {
        ["zebra", "bgpd"]
            .iter()
            .map(|d| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{d}.log")))
                    .unwrap_or_default();
                format!("--- {d}:\n{text}")
            })
            .collect()
    }

    /// `show bgp summary` (for failure messages).
    pub fn summary(&self) -> String {
        Command::new("vtysh")
            .arg("--vty_socket")
            .arg(self.dir.path())
            .args(["-c", "show bgp summary"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The documented router config with this test's router id and one
/// neighbor (AS 65001, as the node config says) per node address.
pub fn router_config(router_id: &str, nodes: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/frr/router.conf");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let one = " neighbor 192.0.2.1 remote-as 65001\n neighbor 192.0.2.1 timers connect 2\n";
    assert!(text.contains(one), "router.conf changed shape");
    let sessions: String = nodes
        .iter()
        .map(|n| format!(" neighbor {n} remote-as 65001\n neighbor {n} timers connect 2\n"))
        .collect();
    text.replace(
        "bgp router-id 192.0.2.254",
        &format!("bgp router-id {router_id}"),
    )
    .replace(one, &sessions)
}
