//! The cluster under faults (`common::cluster`'s harness): a write through
//! one node read at once through another, a node cut off from etcd while
//! the others go on, and an etcd of three members losing its leader while
//! changes keep coming.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bird::wait_until;
use common::cluster::*;
use common::*;
use faasd::api::{FunctionInfo, OptionsPatch};

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "faas failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `faas inspect NAME` through `node`, as the user keeping `state`.
fn inspect_as(node: &Node, state: &Path, name: &str) -> FunctionInfo {
    let out = node.faasd.faas_keeping(state, &["inspect", name], None);
    serde_json::from_str(&ok(&out)).expect("inspect's JSON")
}

/// An update setting the environment to `K=V` alone.
fn env_patch(pair: &str) -> OptionsPatch {
    let (k, v) = pair.split_once('=').expect("K=V");
    OptionsPatch {
        env: Some([(k.to_string(), v.to_string())].into()),
        ..Default::default()
    }
}

/// Whether `env` holds `K=V`.
fn holds(env: &std::collections::BTreeMap<String, String>, pair: &str) -> bool {
    let (k, v) = pair.split_once('=').expect("K=V");
    env.get(k).is_some_and(|have| have == v)
}

/// A control request over a node's socket with curl: status line and
/// headers, then the body.
fn curl(node: &Node, args: &[&str], path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "30", "--unix-socket"])
        .arg(&node.faasd.socket)
        .args(args)
        .arg(format!("http://faasd{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A change through one node, read at once through another by the same
/// user (`faas` keeping the revisions it saw): never the older state.
/// Each call with a state of its own instead reads through a node that
/// may lag: counted, to show what the revision buys.
#[test]
fn a_write_through_one_node_is_read_through_another_at_once() {
    let sim = Sim::start(3);
    sim.wait_members();
    let user = tempfile::tempdir().expect("tempdir");
    let image = image_bytes(&hello_image());
    ok(&sim.nodes[0].faasd.faas_keeping(
        user.path(),
        &["deploy", "f", "--warm", "0"],
        Some(&image),
    ));
    for node in &sim.nodes[1..] {
        let out = node.faasd.faas_keeping(user.path(), &["ip", "f"], None);
        assert!(ok(&out).starts_with("198.18.100."), "{out:?}");
    }
    let rounds = 15;
    // New functions of 10 MB: the reader has to fetch and unpack first.
    let big = image_bytes(&padded_hello(10));
    for i in 0..5 {
        let (writer, reader) = (&sim.nodes[i % 3], &sim.nodes[(i + 1) % 3]);
        let name = format!("new{i}");
        ok(&writer
            .faasd
            .faas_keeping(user.path(), &["deploy", &name, "--warm", "0"], Some(&big)));
        ok(&reader.faasd.faas_keeping(user.path(), &["ip", &name], None));
    }
    for i in 0..rounds {
        let (writer, reader) = (&sim.nodes[i % 3], &sim.nodes[(i + 1) % 3]);
        let pair = format!("I={i}");
        ok(&writer
            .faasd
            .faas_keeping(user.path(), &["update", "f", "--env", &pair], None));
        let info = inspect_as(reader, user.path(), "f");
        assert!(
            holds(&info.options.env, &pair),
            "round {i}: read {:?} after writing {pair}",
            info.options.env
        );
    }
    // The same through clients that carry no revision (the library's,
    // which is quicker than starting `faas`): a read may be older.
    let mut stale = 0;
    for i in 0..rounds {
        let (writer, reader) = (&sim.nodes[i % 3], &sim.nodes[(i + 1) % 3]);
        let pair = format!("J={i}");
        writer
            .faasd
            .client()
            .update("f", &env_patch(&pair))
            .expect("update");
        if !holds(&reader.inspect("f").options.env, &pair) {
            stale += 1;
        }
    }
    // --wait-all: a line per node as each serves it, then done.
    let out = sim.nodes[0].faasd.faas_keeping(
        user.path(),
        &["deploy", "everywhere", "--warm", "1", "--wait-all"],
        Some(&big),
    );
    let said = ok(&out);
    for n in ["n1", "n2", "n3"] {
        assert!(said.contains(&format!("{n}: serves version 1")), "{said}");
    }
    for node in &sim.nodes {
        let info = node.inspect("everywhere");
        assert!(info.stats.warm_ready >= 1, "{}: {info:?}", node.faasd.url);
    }
    let mut missing = 0;
    for i in 0..5 {
        let (writer, reader) = (&sim.nodes[i % 3], &sim.nodes[(i + 1) % 3]);
        let name = format!("bare{i}");
        writer
            .faasd
            .client()
            .deploy(&name, &faasd::api::DeployOptions::default(), big.as_slice())
            .expect("deploy");
        if reader.faasd.client().inspect(&name).is_err() {
            missing += 1;
        }
    }
    println!(
        "MEASURE without_the_revision stale_updates {stale} of {rounds}, new_function_missing {missing} of 5"
    );

    // A change answers its revision, in the JSON and the header, with the
    // cluster's name; a read asking for a revision this node has not
    // reached waits, then says why.
    let info = sim.nodes[1]
        .faasd
        .client()
        .update("f", &env_patch("K=1"))
        .expect("update");
    let revision = info.revision.expect("a change's revision");
    let asked = format!("x-faas-min-revision: {revision}");
    let head = curl(&sim.nodes[2], &["-H", &asked], "/v1/functions/f");
    assert!(head.contains("x-faas-cluster: "), "{head}");
    let seen: i64 = head
        .lines()
        .find_map(|l| l.strip_prefix("x-faas-revision: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no revision in {head}"));
    assert!(seen >= revision, "{seen} < {revision}: {head}");
    let t0 = Instant::now();
    let ahead = format!("x-faas-min-revision: {}", revision + 1_000_000);
    let head = curl(&sim.nodes[2], &["-H", &ahead], "/v1/functions/f");
    let waited = t0.elapsed();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("behind revision"), "{head}");
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(15)).contains(&waited),
        "answered after {waited:?}"
    );
    // Another cluster's revision is not this one's.
    let head = curl(
        &sim.nodes[2],
        &["-H", &ahead, "-H", "x-faas-cluster: another"],
        "/v1/functions/f",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = curl(
        &sim.nodes[2],
        &["-H", "x-faas-min-revision: soon"],
        "/v1/functions/f",
    );
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

/// A gauge without labels from `node`'s /metrics.
fn gauge(node: &Node, name: &str) -> Option<f64> {
    let (_, text) = node.faasd.client().raw("GET", "/metrics", b"").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Node 3 loses etcd (not its clients): it serves what it has, refuses
/// changes with the cause, the others go on changing things (and etcd
/// compacts the history meanwhile); healed, node 3 converges on its own.
#[test]
fn a_node_cut_off_from_etcd_serves_refuses_changes_and_converges_when_healed() {
    assert!(
        which("iptables").is_some(),
        "iptables not found: scripts/install-deps.sh installs it"
    );
    let sim = Sim::start(3);
    sim.wait_members();
    let f = sim.nodes[0]
        .faasd
        .deploy("f", &which_image("one"), &warm1())
        .ip;
    let says = |node: &Node, what: &str| {
        node.call(f)
            .is_ok_and(|(s, b)| s == 200 && b.contains(&format!("WHICH={what}")))
    };
    wait_until(
        "f served by every node",
        Duration::from_secs(30),
        || sim.nodes.iter().all(|n| says(n, "one")),
        || sim.context(),
    );
    let cut = &sim.nodes[2];
    cut.cut(Cut::Etcd, true);
    struct Heal<'a>(&'a Node);
    impl Drop for Heal<'_> {
        fn drop(&mut self) {
            self.0.cut(Cut::Etcd, false);
        }
    }
    let heal = Heal(cut);

    // A change through the cut-off node: 503, naming etcd, in bounded time.
    let t0 = Instant::now();
    let err = cut
        .faasd
        .client()
        .update("f", &env_patch("WHICH=never"))
        .expect_err("a change without etcd");
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(err.to_string().contains("etcd"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert!(says(cut, "one"), "still serving what it has");
    wait_until(
        "the cut-off node's metrics to say it lost etcd",
        Duration::from_secs(15),
        || gauge(cut, "faas_cluster_following") == Some(0.0),
        || sim.context(),
    );

    // The others go on: a new version through node 1.
    let two = sim.nodes[0]
        .faasd
        .client()
        .update("f", &env_patch("WHICH=two"))
        .expect("a change through a node that has etcd");
    wait_until(
        "nodes 1 and 2 serve the change",
        Duration::from_secs(15),
        || sim.nodes[..2].iter().all(|n| says(n, "two")),
        || sim.context(),
    );
    let got = cut.call(f);
    assert!(
        got.as_ref()
            .is_ok_and(|(s, b)| *s == 200 && b.contains("WHICH=one")),
        "the cut-off node keeps its version: {got:?}\n{}",
        sim.context()
    );
    // A read there carrying the change's revision cannot be answered.
    let ahead = format!("x-faas-min-revision: {}", two.revision.expect("revision"));
    let head = curl(cut, &["-H", &ahead], "/v1/functions/f");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("lost etcd"), "{head}");
    // Another change, then the history compacted: the cut-off node's
    // watch cannot resume from where it was.
    sim.nodes[1]
        .faasd
        .client()
        .update("f", &env_patch("WHICH=three"))
        .expect("update");
    let compacted = sim.etcd[0].compact();
    println!("compacted at revision {compacted}");

    let t0 = Instant::now();
    drop(heal);
    wait_until(
        "the healed node serves the newest version",
        Duration::from_secs(30),
        || says(cut, "three"),
        || sim.context(),
    );
    println!(
        "MEASURE healed_node_converged_ms {}",
        t0.elapsed().as_millis()
    );
    let info = cut.faasd.client().inspect("f").expect("inspect");
    assert!(holds(&info.options.env, "WHICH=three"));
    wait_until(
        "the healed node's metrics: following, 3 members, the newest revision",
        Duration::from_secs(15),
        || {
            gauge(cut, "faas_cluster_following") == Some(1.0)
                && gauge(cut, "faas_cluster_members") == Some(3.0)
                && gauge(cut, "faas_cluster_revision")
                    .is_some_and(|r| r >= two.revision.unwrap_or(i64::MAX) as f64)
        },
        || format!("{:?}", cut.faasd.client().raw("GET", "/metrics", b"")),
    );
    // Changes through it work again.
    cut.faasd
        .client()
        .update("f", &env_patch("WHICH=four"))
        .expect("a change through the healed node");
    wait_until(
        "every node serves the change made through the healed one",
        Duration::from_secs(15),
        || sim.nodes.iter().all(|n| says(n, "four")),
        || sim.context(),
    );
}

/// Changes through every node in turn while etcd's leader is killed
/// (-9) and started again: writes stop for at most an election and a
/// request's timeout, every acknowledged one has a higher revision than
/// the one before, and every node ends on the last acknowledged one (a
/// refused one is undone where it was made: none lingers on a node).
#[test]
fn an_etcd_of_three_loses_its_leader_and_nothing_acknowledged_is_lost() {
    let mut sim = Sim::start_full(3, 3, &[]);
    sim.wait_members();
    sim.nodes[0]
        .faasd
        .deploy("f", &hello_image(), &Default::default());
    // Changes through a node refuse until it serves the function (under
    // load that took seconds): the writes before the kill start from there.
    sim.wait_ready("f");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<faasd::client::Client> = sim.nodes.iter().map(|n| n.faasd.client()).collect();
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut acked: Vec<(usize, i64, Instant)> = Vec::new();
            let mut refused: Vec<(Instant, String)> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                match clients[i % 3].update("f", &env_patch(&format!("N={i}"))) {
                    Ok(info) => acked.push((i, info.revision.unwrap_or(0), Instant::now())),
                    Err(e) => refused.push((Instant::now(), e.to_string())),
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (acked, refused)
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let leader = sim
        .etcd
        .iter()
        .position(|e| e.leads())
        .unwrap_or_else(|| panic!("no leader: {}", sim.context()));
    let killed_at = Instant::now();
    sim.etcd[leader].stop();
    std::thread::sleep(Duration::from_secs(5));
    sim.etcd[leader].spawn();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let (acked, refused) = writer.join().expect("writer");
    let before = acked.iter().filter(|a| a.2 < killed_at).count();
    assert!(before > 10, "{before} changes before the kill");
    assert!(
        acked.len() > before + 10,
        "changes after the kill: {acked:?}\nrefused: {refused:?}\n{}",
        sim.context()
    );
    for w in acked.windows(2) {
        assert!(w[1].1 > w[0].1, "revisions go up: {w:?}");
    }
    let gap = acked
        .windows(2)
        .map(|w| w[1].2 - w[0].2)
        .max()
        .unwrap_or_default();
    println!(
        "MEASURE leader_kill_longest_write_gap_ms {} (acknowledged {}, refused {})",
        gap.as_millis(),
        acked.len(),
        refused.len()
    );
    for (at, why) in &refused {
        println!(
            "refused at +{:?}: {why}",
            at.saturating_duration_since(killed_at)
        );
    }
    // The election (~1 s), and a write in flight to the dead leader
    // waits out its request timeout (2 s) first.
    assert!(
        gap < Duration::from_secs(4),
        "writes stopped for {gap:?}; refused: {refused:?}\n{}",
        sim.context()
    );
    let last = format!("N={}", acked.last().expect("acked").0);
    wait_until(
        "every node on the last acknowledged change",
        Duration::from_secs(10),
        || {
            sim.nodes
                .iter()
                .all(|n| holds(&n.inspect("f").options.env, &last))
        },
        || {
            let envs: Vec<_> = sim
                .nodes
                .iter()
                .map(|n| n.inspect("f").options.env)
                .collect();
            format!("want {last}: {envs:?}\n{}", sim.context())
        },
    );
}

/// A node cut off from the peer a function was deployed through (not
/// from etcd, nor from the third node) fetches its archive from the third
/// once that one has it: the image reaches every node.
#[test]
fn a_node_cut_off_from_one_peer_fetches_from_another() {
    assert!(
        which("iptables").is_some(),
        "iptables not found: scripts/install-deps.sh installs it"
    );
    let sim = Sim::start(3);
    sim.wait_members();
    let (n1, n3) = (&sim.nodes[0], &sim.nodes[2]);
    n3.cut(Cut::Peer(n1.addr.parse().expect("address")), true);
    let ip = n1.faasd.deploy("far", &padded_hello(2), &warm1()).ip;
    wait_until(
        "n3 serves what was deployed through n1, which it cannot reach",
        Duration::from_secs(60),
        || n3.call(ip).is_ok_and(|(s, _)| s == 200),
        || sim.context(),
    );
    assert!(
        n3.faasd
            .log_text()
            .contains("fetched an image archive from a peer"),
        "{}",
        n3.faasd.log_text()
    );
    // n1 stays out of n3's reach the whole time.
    let control: std::net::SocketAddr = format!("{}:8080", n1.addr).parse().expect("addr");
    let reached = n3
        .ns
        .run(move || std::net::TcpStream::connect_timeout(&control, Duration::from_secs(1)));
    assert!(
        reached.is_err(),
        "n3 reaches n1's control port: {reached:?}"
    );
}
