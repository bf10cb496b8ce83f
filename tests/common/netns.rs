//! Network namespaces of one test, and `ip` run on them: made with `ip
//! netns add`, deleted (with their veths, addresses and routes) on drop.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test process) uses, at most 15 characters
/// (an interface name's limit).
pub fn unique(prefix: &str) -> String {
    let name = format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    name.chars().take(15).collect()
}

/// A network namespace of this test, deleted (with its veths and
/// addresses) on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(role: &str) -> Self {
        let name = format!(
            "faasd-{role}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = PathBuf::from(format!("/run/netns/{}", self.0));
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("netns file");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in netns")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A veth pair between `a` and `b`, both ends up, `a_addr` on a's end and
/// `b_addr` on b's (with prefix length; IPv6 without duplicate address
/// detection, so usable at once). Returns the ends' names (a's, b's).
pub fn link(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> (String, String) {
    let (va, vb) = (unique("va"), unique("vb"));
    ip(&[
        "link", "add", &va, "netns", &a.0, "type", "veth", "peer", "name", &vb, "netns", &b.0,
    ]);
    for (ns, dev, addr) in [(a, &va, a_addr), (b, &vb, b_addr)] {
        let mut add = vec!["addr", "add", addr, "dev", dev.as_str()];
        if addr.contains(':') {
            add.push("nodad");
        }
        ns.ip(&add);
        ns.ip(&["link", "set", dev, "up"]);
    }
    (va, vb)
}

pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
