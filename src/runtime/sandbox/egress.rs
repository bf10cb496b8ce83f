//! Egress for the functions that ask for it (`--egress`). Every other
//! container keeps a network namespace with nothing but `lo`.
//!
//! Each container of such a function gets a veth to the host, named
//! `faase<slot>x<n>` on the host's side (`slot`: the function's id range, so
//! one interface pattern matches all its containers) and `eth0` inside, on
//! a /30 of `RANGE`, with the host's end as its default route; what leaves
//! is masqueraded. The link carries no IPv6: neither end gets a link-local
//! address, and the host's end drops every IPv6 packet (`disable_ipv6`),
//! so the IPv4 rules below are the only way out. Chains of our own decide what may leave: each function
//! its allow-list (or anything), nothing to this host itself, nothing in
//! from outside but answers. The links are made with `ip -batch` (two
//! processes per container, off the request path: pool containers are made
//! ahead), the rules with `iptables -w` at deploy, `rm` and start.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use crate::api::EgressRule;
use crate::runtime::reaper::Reaper;

/// Container links are /30s of this range (RFC 6598 shared space, which
/// no destination a function is allowed to reach should use).
pub const RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(100, 127, 0, 0), 16);
/// /30s in `RANGE`: containers with egress at once.
const LINKS: u32 = 1 << (32 - 16 - 2);
/// Host-side interface names start so: a name no one else gives, since
/// our rules claim every interface that starts with it (a host's own
/// `fe…` veth lost its forwarded traffic to a prefix of `fe`).
const PREFIX: &str = "faase";
/// Link names count up to this and wrap (15 bytes in all: `faase`, the
/// slot's 4 hex digits, `x`, 5 more; live links number far fewer).
const NAMES: u32 = 1 << 20;

const FORWARD: &str = "FAASD-FWD";
const EGRESS: &str = "FAASD-EGRESS";
const INPUT: &str = "FAASD-IN";
const NAT: &str = "FAASD-NAT";

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress needs IPv4 forwarding on this host: sysctl -w net.ipv4.ip_forward=1 (and keep it in /etc/sysctl.d)")]
    NoForwarding,
    #[error("egress: every link of {RANGE:?} is in use")]
    Exhausted,
    #[error("egress: {what}: {why}")]
    Command { what: String, why: String },
}

/// One container's link.
#[derive(Debug)]
pub struct Link {
    index: u32,
    host: String,
}

/// The links in use, and whether our chains are in place.
pub struct Egress {
    reaper: Reaper,
    used: Mutex<BTreeSet<u32>>,
    names: AtomicU32,
    chains: Mutex<bool>,
}

/// The host (`.1`) and container (`.2`) addresses of link `index`.
fn addresses(index: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(RANGE.0) + index * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// The interface pattern of every container of function `slot`.
fn pattern(slot: u32) -> String {
    format!("{PREFIX}{slot:x}x+")
}

fn chain(slot: u32) -> String {
    format!("FAASD-F{slot:x}")
}

/// Turns IPv6 off on the host's end of a link (before it is up): what
/// arrives there over IPv6 is dropped, nothing is routed on. A kernel
/// without IPv6 has nothing to turn off.
fn no_ipv6(host: &str) -> Result<String, EgressError> {
    let knob = format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6");
    match std::fs::write(&knob, "1") {
        Ok(()) => Ok(String::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(EgressError::Command {
            what: format!("writing 1 to {knob}"),
            why: e.to_string(),
        }),
    }
}

fn forwarding() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1")
}

impl Egress {
    pub fn new(reaper: Reaper) -> Self {
        Self {
            reaper,
            used: Mutex::default(),
            names: AtomicU32::new(0),
            chains: Mutex::new(false),
        }
    }

    /// Runs `program args` with `input` on its stdin; returns its stdout.
    /// Blocking. Its exit comes from the reaper (faasd reaps every child).
    fn run(
        &self,
        program: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, EgressError> {
        let what = format!("{program} {}", args.join(" "));
        let fail = |why: String| EgressError::Command {
            what: what.clone(),
            why,
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (_, exit, mut child) = self
            .reaper
            .spawn_with_io(&mut cmd)
            .map_err(|e| fail(e.to_string()))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| fail(e.to_string()))?;
        }
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        match exit.blocking_recv() {
            Ok(e) if e.success() => Ok(out),
            Ok(e) => Err(fail(format!("{e}: {}", err.trim()))),
            Err(_) => Err(fail("its exit was lost".into())),
        }
    }

    fn iptables(&self, args: &[&str]) -> Result<String, EgressError> {
        let mut all = vec!["-w"];
        all.extend_from_slice(args);
        self.run("iptables", &all, None)
    }

    /// Whether this host can give functions egress (checked at deploy).
    pub fn check(&self) -> Result<(), EgressError> {
        if forwarding() {
            Ok(())
        } else {
            Err(EgressError::NoForwarding)
        }
    }

    /// Gives the created container whose first process is `pid` its link.
    /// Blocking.
    pub fn attach(&self, pid: i32, slot: u32) -> Result<Link, EgressError> {
        let index = {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            let free = (0..LINKS)
                .find(|i| !used.contains(i))
                .ok_or(EgressError::Exhausted)?;
            used.insert(free);
            free
        };
        let n = self.names.fetch_add(1, Ordering::Relaxed) % NAMES;
        let link = Link {
            index,
            host: format!("{PREFIX}{slot:x}x{n:x}"),
        };
        let (host_ip, container_ip) = addresses(index);
        let made = self
            .run(
                "ip",
                &["-batch", "-"],
                Some(&format!(
                    "link add {h} type veth peer name eth0 netns {pid}\nlink set {h} addrgenmode none\naddr add {host_ip}/30 dev {h}\n",
                    h = link.host
                )),
            )
            .and_then(|_| no_ipv6(&link.host))
            .and_then(|_| self.run("ip", &["link", "set", &link.host, "up"], None))
            .and_then(|_| {
                self.run(
                    "nsenter",
                    &["-t", &pid.to_string(), "-n", "ip", "-batch", "-"],
                    Some(&format!(
                        "link set eth0 addrgenmode none\naddr add {container_ip}/30 dev eth0\nlink set eth0 up\nroute add default via {host_ip}\n"
                    )),
                )
            });
        match made {
            Ok(_) => Ok(link),
            Err(e) => {
                self.release(link);
                Err(e)
            }
        }
    }

    /// Removes a container's link (gone already if its namespace is) and
    /// frees its addresses. Blocking.
    pub fn release(&self, link: Link) {
        let _ = self.run("ip", &["link", "del", &link.host], None);
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&link.index);
    }

    /// Lets function `slot`'s containers reach `allow` (everything if
    /// empty) and nothing else. Blocking.
    pub fn allow(&self, slot: u32, allow: &[EgressRule]) -> Result<(), EgressError> {
        self.check()?;
        self.chains()?;
        let chain = chain(slot);
        if self.iptables(&["-N", &chain]).is_err() {
            self.iptables(&["-F", &chain])?;
        }
        for rule in allow {
            let net = rule.net.to_string();
            match rule.port {
                Some(port) => {
                    let port = port.to_string();
                    let proto = rule.proto.as_str();
                    self.iptables(&[
                        "-A", &chain, "-d", &net, "-p", proto, "--dport", &port, "-j", "ACCEPT",
                    ])?;
                }
                None => {
                    self.iptables(&["-A", &chain, "-d", &net, "-j", "ACCEPT"])?;
                }
            }
        }
        if allow.is_empty() {
            self.iptables(&["-A", &chain, "-j", "ACCEPT"])?;
        }
        let jump = ["-i", &pattern(slot), "-j", &chain];
        let mut check = vec!["-C", EGRESS];
        check.extend_from_slice(&jump);
        if self.iptables(&check).is_err() {
            let mut insert = vec!["-I", EGRESS, "1"];
            insert.extend_from_slice(&jump);
            self.iptables(&insert)?;
        }
        Ok(())
    }

    /// Function `slot` has no egress any more.
    pub fn forget(&self, slot: u32) {
        let chain = chain(slot);
        let _ = self.iptables(&["-D", EGRESS, "-i", &pattern(slot), "-j", &chain]);
        let _ = self.iptables(&["-F", &chain]);
        let _ = self.iptables(&["-X", &chain]);
    }

    /// Our chains, made once: answers in, nothing else in; out only
    /// through a function's chain; nothing to this host; masquerade.
    fn chains(&self) -> Result<(), EgressError> {
        let mut made = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        if *made {
            return Ok(());
        }
        self.clear();
        let range = format!("{}/{}", RANGE.0, RANGE.1);
        let fe = format!("{PREFIX}+");
        for (table, chain) in [
            ("filter", FORWARD),
            ("filter", EGRESS),
            ("filter", INPUT),
            ("nat", NAT),
        ] {
            self.iptables(&["-t", table, "-N", chain])?;
        }
        let established = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED"];
        let mut answers = vec!["-A", FORWARD, "-o", &fe];
        answers.extend_from_slice(&established);
        answers.extend_from_slice(&["-j", "ACCEPT"]);
        self.iptables(&answers)?;
        self.iptables(&["-A", FORWARD, "-o", &fe, "-j", "DROP"])?;
        self.iptables(&["-A", FORWARD, "-i", &fe, "-j", EGRESS])?;
        self.iptables(&["-A", EGRESS, "-j", "DROP"])?;
        self.iptables(&["-A", INPUT, "-i", &fe, "-j", "DROP"])?;
        self.iptables(&[
            "-t",
            "nat",
            "-A",
            NAT,
            "-s",
            &range,
            "!",
            "-d",
            &range,
            "-j",
            "MASQUERADE",
        ])?;
        self.iptables(&["-I", "FORWARD", "1", "-j", FORWARD])?;
        self.iptables(&["-I", "INPUT", "1", "-j", INPUT])?;
        self.iptables(&["-t", "nat", "-I", "POSTROUTING", "1", "-j", NAT])?;
        *made = true;
        Ok(())
    }

    /// Removes every chain and rule of ours (at shutdown).
    pub fn close(&self) {
        let mut made = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        if *made {
            self.clear();
            *made = false;
        }
    }

    /// Removes what a faasd (this one, or a crashed earlier run) put in
    /// iptables: the jumps, then our chains. Errors mean "not there".
    pub fn clear(&self) {
        let ours = |table: &str| -> Vec<String> {
            self.iptables(&["-t", table, "-S"])
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.strip_prefix("-N "))
                .filter(|c| c.starts_with("FAASD-"))
                .map(str::to_string)
                .collect()
        };
        let (filter, nat) = (ours("filter"), ours("nat"));
        if !filter.is_empty() {
            let _ = self.iptables(&["-D", "FORWARD", "-j", FORWARD]);
            let _ = self.iptables(&["-D", "INPUT", "-j", INPUT]);
        }
        if !nat.is_empty() {
            let _ = self.iptables(&["-t", "nat", "-D", "POSTROUTING", "-j", NAT]);
        }
        // Flushed first: a chain still jumped to cannot be deleted.
        for (table, chains) in [("filter", &filter), ("nat", &nat)] {
            for chain in chains {
                let _ = self.iptables(&["-t", table, "-F", chain]);
            }
            for chain in chains {
                let _ = self.iptables(&["-t", table, "-X", chain]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_names() {
        assert_eq!(
            addresses(0),
            (Ipv4Addr::new(100, 127, 0, 1), Ipv4Addr::new(100, 127, 0, 2))
        );
        assert_eq!(addresses(LINKS - 1).1, Ipv4Addr::new(100, 127, 255, 254));
        // One pattern per function; none matches another's links.
        assert_eq!(pattern(1), "faase1x+");
        assert_eq!(pattern(0x12), "faase12x+");
        assert!(format!("{PREFIX}{:x}x{:x}", 0xffffu32, NAMES - 1).len() <= 15);
    }
}
