//! The cluster seen through any one node (`common::cluster`'s harness):
//! `faas logs` gathers every node's lines, each prefixed with its node
//! (`--node` picks one; `-f` follows them all), and `faas inspect` counts
//! each node's requests.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bird::wait_until;
use common::cluster::*;
use common::*;

const LINE: &str = "probe stderr line";

#[test]
fn logs_and_counts_through_any_node_cover_every_node() {
    let sim = Sim::start(3);
    sim.wait_members();
    let f = sim.nodes[0]
        .faasd
        .deploy("talk", &probe_image("print", &[]), &warm1())
        .ip;
    // Ready everywhere, asked without calling it (calls are counted).
    sim.wait_ready("talk");
    // Node i serves i + 1 calls.
    for (i, node) in sim.nodes.iter().enumerate() {
        for _ in 0..=i {
            let got = node.call(f);
            assert!(got.as_ref().is_ok_and(|(s, _)| *s == 200), "{got:?}");
        }
    }

    // Through n2: every node's lines, each under its name.
    let out = sim.nodes[1].faasd.faas(&["logs", "talk"], None);
    assert!(out.status.success(), "{out:?}");
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
        let said = all
            .lines()
            .filter(|l| l.starts_with(&format!("{n} | ")) && l.contains(LINE))
            .count();
        assert_eq!(said, i + 1, "{n}'s lines in:\n{all}");
    }
    assert!(
        all.lines()
            .all(|l| ["n1 | ", "n2 | ", "n3 | "].iter().any(|p| l.starts_with(p))),
        "every line prefixed:\n{all}"
    );
    // One node's alone; a node that is not there is named.
    let out = sim.nodes[0]
        .faasd
        .faas(&["logs", "talk", "--node", "n3"], None);
    let only = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(only.lines().all(|l| l.starts_with("n3 | ")), "{only}");
    assert_eq!(
        only.lines().filter(|l| l.contains(LINE)).count(),
        3,
        "{only}"
    );
    let out = sim.nodes[0]
        .faasd
        .faas(&["logs", "talk", "--node", "n9"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no live node named n9"),
        "{out:?}"
    );

    for follow in [false, true] {
        let mut args = vec!["logs", "nosuch"];
        if follow {
            args.push("-f");
        }
        let out = sim.nodes[0].faasd.faas(&args, None);
        assert!(!out.status.success(), "{out:?}");
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            said.contains("no node has a function named nosuch"),
            "{said}"
        );
    }

    // Counts and readiness per node, through n1.
    let info = sim.nodes[0].inspect("talk");
    for (i, status) in info.nodes.iter().enumerate() {
        assert_eq!(status.node, format!("n{}", i + 1), "{info:?}");
        assert_eq!(status.requests, Some(i as u64 + 1), "{info:?}");
        assert!(status.ready, "{info:?}");
        assert!(status.warm_ready.is_some(), "{info:?}");
    }

    // Following through n1 shows a call served by n3 as it happens.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_faas"))
        .args(["logs", "talk", "-f", "--tail", "0"])
        .env("FAAS_URL", sim.nodes[0].faasd.unix_url())
        .env(
            "FAAS_STATE_DIR",
            sim.nodes[0].faasd.state.with_extension("faas"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("faas logs -f");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // n1 follows n3 over a connection to n3's control port.
    let from_n1 = |node: &Node| -> usize {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &node.ns.0,
                "ss",
                "-tnH",
                "state",
                "established",
            ])
            .output()
            .expect("ss");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&format!("{}:8080", node.addr)))
            .filter(|l| l.contains(&format!("{}:", sim.nodes[0].addr)))
            .count()
    };
    wait_until(
        "n1 following n3's log",
        Duration::from_secs(10),
        || from_n1(&sim.nodes[2]) >= 1,
        || sim.context(),
    );
    let got = sim.nodes[2].call(f);
    assert!(got.as_ref().is_ok_and(|(s, _)| *s == 200), "{got:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.starts_with("n3 | ") && line.contains(LINE) => break,
            Ok(line) => seen.push(line),
            Err(_) => {}
        }
    }
    assert!(
        Instant::now() < deadline,
        "n3's new line never came through n1: {seen:?}\n{}",
        sim.context()
    );
    // The follower goes: n1 lets go of n3 too.
    let _ = follower.kill();
    let _ = follower.wait();
    wait_until(
        "n1's connection to n3 closed once nobody follows",
        Duration::from_secs(10),
        || from_n1(&sim.nodes[2]) == 0,
        || sim.context(),
    );
}
