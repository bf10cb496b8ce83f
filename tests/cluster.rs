//! Many nodes, one registry in etcd (`common::cluster`: a router running
//! BIRD with ECMP, node namespaces each with faasd and BIRD). A deploy through one node serves from all three;
//! changes through any node reach all; etcd's outage and a node's loss or
//! planned stop cost no served request beyond what the issue allows.

mod common;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bird::{paths, router_route, wait_until};
use common::cluster::*;
use common::registry::{require_tools, Registry};
use common::*;
use faasd::api::DeployOptions;
use nix::sys::signal::Signal;

const HELLO: &str = "Hello from FaaS handler!\n";

#[test]
fn three_nodes_one_registry_behind_an_ecmp_router() {
    let mut sim = Sim::start(3);
    let ctx = |sim: &Sim| sim.context();
    sim.wait_members();
    let listed = sim.nodes[1].faasd.faas(&["nodes"], None);
    let text = String::from_utf8_lossy(&listed.stdout);
    for n in ["n1", "n2", "n3"] {
        assert!(text.contains(n), "faas nodes: {text}");
    }

    // Deploy once through node 1: all three serve it, the router spreads.
    let image = padded_hello(10);
    let t0 = Instant::now();
    let f = sim.nodes[0].faasd.deploy("f", &image, &warm1()).ip;
    let mut everywhere = None;
    wait_until(
        "f served by every node",
        Duration::from_secs(30),
        || {
            let all = sim
                .nodes
                .iter()
                .all(|n| n.call(f).is_ok_and(|(s, b)| s == 200 && b == HELLO));
            if all && everywhere.is_none() {
                everywhere = Some(t0.elapsed());
            }
            all
        },
        || ctx(&sim),
    );
    let everywhere = everywhere.expect("measured");
    println!(
        "MEASURE deploy_10mb_to_200_on_3_nodes_ms {}",
        everywhere.as_millis()
    );
    // The target (2 s) holds for the release build (docs/network.md); the
    // suite runs unoptimized, where hashing and unpacking are ~5x slower.
    let limit = if cfg!(debug_assertions) { 10 } else { 2 };
    assert!(
        everywhere < Duration::from_secs(limit),
        "10 MB to every node in {everywhere:?}"
    );
    wait_until(
        "three paths at the router",
        Duration::from_secs(30),
        || sim.paths(f) == 3,
        || format!("{}\n{}", router_route(&sim.router, f), ctx(&sim)),
    );
    for _ in 0..90 {
        let (status, body) = sim.get(f).expect("GET f from the router");
        assert_eq!((status, body.as_str()), (200, HELLO));
    }
    let per_node: Vec<u64> = sim
        .nodes
        .iter()
        .map(|n| n.inspect("f").stats.requests)
        .collect();
    println!("MEASURE requests_per_node {per_node:?}");
    assert!(
        per_node.iter().all(|&r| r > 0),
        "connections spread over every node: {per_node:?}"
    );
    wait_until(
        "every node ready in inspect",
        Duration::from_secs(15),
        || {
            let info = sim.nodes[1].inspect("f");
            info.nodes.len() == 3
                && info
                    .nodes
                    .iter()
                    .all(|s| s.ready && s.image_id == info.image_id)
        },
        || format!("{:?}\n{}", sim.nodes[1].inspect("f").nodes, ctx(&sim)),
    );

    // Concurrent deploys through different nodes: distinct addresses,
    // every node serves all.
    let small = hello_image();
    let ips: Vec<IpAddr> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let node = &sim.nodes[i % 3];
                let small = &small;
                s.spawn(move || {
                    node.faasd
                        .deploy(&format!("g{i}"), small, &DeployOptions::default())
                        .ip
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("deploy"))
            .collect()
    });
    let distinct: HashSet<IpAddr> = ips.iter().copied().chain([f]).collect();
    assert_eq!(distinct.len(), 21, "one address each: {ips:?}");
    for node in &sim.nodes {
        wait_until(
            "every node to serve all 20",
            Duration::from_secs(60),
            || node.faasd.client().list().is_ok_and(|l| l.len() == 21),
            || ctx(&sim),
        );
        for ip in &ips {
            let (status, _) = node.call(*ip).expect("call g");
            assert_eq!(status, 200);
        }
    }
    // Redeploy and update through other nodes, rm through a third.
    sim.nodes[1]
        .faasd
        .deploy("g0", &probe_image("hello", &[]), &DeployOptions::default());
    let out = sim.nodes[2]
        .faasd
        .faas(&["update", "g1", "--env", "FROM=n3"], None);
    assert!(out.status.success(), "{out:?}");
    for node in &sim.nodes {
        wait_until(
            "the redeploy and the update everywhere",
            Duration::from_secs(30),
            || {
                node.call(ips[0]).is_ok_and(|(_, b)| b == "probe ok\n")
                    && node
                        .inspect("g1")
                        .options
                        .env
                        .get("FROM")
                        .map(String::as_str)
                        == Some("n3")
            },
            || ctx(&sim),
        );
    }
    for i in 0..20 {
        let out = sim.nodes[2].faasd.faas(&["rm", &format!("g{i}")], None);
        assert!(out.status.success(), "{out:?}");
    }
    for node in &sim.nodes {
        wait_until(
            "the removals everywhere",
            Duration::from_secs(30),
            || node.faasd.client().list().is_ok_and(|l| l.len() == 1),
            || ctx(&sim),
        );
    }

    // etcd down: serving goes on, a deploy gets 503; back: converges.
    sim.etcd[0].stop();
    for _ in 0..20 {
        assert_eq!(sim.get(f).expect("GET f while etcd is down").0, 200);
    }
    let refused = sim.nodes[0]
        .faasd
        .client()
        .deploy("h", &warm1(), &image_bytes(&small)[..]);
    match refused {
        Err(faasd::client::ClientError::Api { status, message }) => {
            assert_eq!(status, 503, "{message}");
            assert!(message.contains("etcd"), "{message}");
        }
        other => panic!("a deploy during the outage: {other:?}"),
    }
    sim.etcd[0].spawn();
    let h = sim.nodes[0]
        .faasd
        .deploy("h", &small, &DeployOptions::default())
        .ip;
    for node in &sim.nodes {
        wait_until(
            "h everywhere after the outage",
            Duration::from_secs(30),
            || node.call(h).is_ok_and(|(s, _)| s == 200),
            || ctx(&sim),
        );
    }

    // Unplanned loss of node 3: after the hold time, every request succeeds.
    let fetched_before = sim.nodes[2]
        .faasd
        .log_text()
        .matches("fetched an image archive")
        .count();
    sim.nodes[2].faasd.crash();
    sim.nodes[2].bird = None;
    let (last_failure, failures, requests) =
        until_recovered(&sim, || matches!(sim.get(f), Ok((200, _))));
    println!(
        "MEASURE unplanned_loss last_failure_ms={} failed={failures} of {requests}",
        last_failure.as_millis()
    );
    assert!(
        last_failure <= Duration::from_secs(4),
        "every request succeeds within the hold time (3 s) + 1 s: the last failed at {last_failure:?}"
    );

    // Deployed while it is away.
    let late = sim.nodes[0]
        .faasd
        .deploy("late", &padded_hello(1), &warm1())
        .ip;

    // It comes back: serves what it has at once, catches up with what it
    // missed, and fetches only that.
    sim.nodes[2].faasd.spawn();
    assert_eq!(sim.nodes[2].call(f).expect("f on node 3").0, 200);
    sim.nodes[2].bird();
    wait_until(
        "node 3 back at the router, serving what it missed",
        Duration::from_secs(30),
        || sim.paths(f) == 3 && sim.nodes[2].call(late).is_ok_and(|(s, _)| s == 200),
        || ctx(&sim),
    );
    let fetched_after = sim.nodes[2]
        .faasd
        .log_text()
        .matches("fetched an image archive")
        .count();
    assert_eq!(
        fetched_after,
        fetched_before + 1,
        "after a restart only the missed archive is fetched"
    );

    // Planned stop of node 2 under steady load: nothing fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Three clients at once, so connections are in flight at the instant
    // the router drops node 2's path.
    let load: Vec<_> = (0..3)
        .map(|_| {
            let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            let path = format!("/run/netns/{}", sim.router.0);
            std::thread::spawn(move || {
                let ns = std::fs::File::open(&path).expect("netns");
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                while !stop.load(Ordering::Relaxed) {
                    match call(f) {
                        Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("planned stop: a request failed: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // And connections made before the stop whose request goes out only
    // after the router dropped node 2's path, 12 from the router itself
    // and 12 from a client behind it: of each dozen some are on node 2
    // (all but certainly: (2/3)^12 < 1 %), and plain ECMP would send
    // every one of those to a node that resets it.
    let connect = move || {
        (0..12)
            .map(|_| std::net::TcpStream::connect((f, 80)).expect("connect before the stop"))
            .collect::<Vec<_>>()
    };
    let mut held = sim.router.run(connect);
    held.extend(sim.client.run(connect));
    let stopped = Instant::now();
    let (router, node2) = (&sim.router, &mut sim.nodes[1]);
    let (status, took) = std::thread::scope(|s| {
        let stopping = s.spawn(|| node2.faasd.stop());
        while paths(router, f) == 3 && stopped.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        println!(
            "MEASURE planned_stop router_forgot_after_ms {}",
            stopped.elapsed().as_millis()
        );
        let answers: Vec<_> = held
            .into_iter()
            .map(|c| http_get_on(c, "/", Duration::from_secs(10)).map(|(s, _)| s))
            .collect();
        assert!(
            answers.iter().all(|a| matches!(a, Ok(200))),
            "connections made before the stop, used after the route change: {answers:?}"
        );
        stopping.join().expect("stop")
    });
    assert!(status.success());
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for client in load {
        client.join().expect("load");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "MEASURE planned_stop ok={ok} failed={failed} stop_took_ms={}",
        took.as_millis()
    );
    assert!(ok > 50, "load ran: {ok}");
    // The drain serves everything that reaches the node after its route
    // went, and the router keeps a connection that was in flight at the
    // route change on node 2 (dist/router/pin-flows.sh): plain ECMP would
    // rehash it to a node that resets it (docs/network.md).
    assert_eq!(
        failed,
        0,
        "a planned stop loses no connection: {failed} failed\n{}",
        ctx(&sim)
    );
    wait_until(
        "node 2 gone from the members",
        Duration::from_secs(10),
        || {
            sim.nodes[0]
                .faasd
                .client()
                .nodes()
                .is_ok_and(|n| n.len() == 2)
        },
        || ctx(&sim),
    );

    // A node that hangs (power loss, a frozen host): no FIN ends its BGP
    // session, so the router drops it when the hold time (3 s) passes.
    // Requests hashed to it meanwhile time out.
    let frozen = [
        sim.nodes[0].faasd.pid(),
        sim.nodes[0]
            .bird
            .as_ref()
            .map(|b| b.child.id() as i32)
            .expect("bird"),
    ];
    for pid in frozen {
        signal(pid, Signal::SIGSTOP);
    }
    let (last_failure, failures, requests) = until_recovered(&sim, || {
        let answered = sim
            .router
            .run(move || http_get_timeout(&f.to_string(), "/", Duration::from_millis(300)));
        matches!(answered, Ok((200, _)))
    });
    for pid in frozen {
        signal(pid, Signal::SIGCONT);
    }
    println!(
        "MEASURE hung_node last_failure_ms={} failed={failures} of {requests}",
        last_failure.as_millis()
    );
    assert!(
        last_failure <= Duration::from_millis(4300),
        "every request succeeds within the hold time (3 s) + 1 s (+ one 300 ms timeout): the last failed at {last_failure:?}"
    );
    // Thawed, it finds its lease gone, joins again and is announced again.
    wait_until(
        "node 1 back",
        Duration::from_secs(30),
        || {
            sim.paths(f) == 2
                && sim.nodes[2]
                    .faasd
                    .client()
                    .nodes()
                    .is_ok_and(|n| n.iter().any(|m| m.name == "n1"))
        },
        || ctx(&sim),
    );

    // A new, empty etcd at the same address (a lost or wrong one):
    // converging on it would remove every function, so the nodes refuse,
    // say why, and keep serving everything they have.
    let had = sim.nodes[0].faasd.client().list().expect("list").len();
    sim.etcd[0].stop();
    std::fs::remove_dir_all(sim.etcd[0].dir.path().join("data")).expect("wipe etcd");
    sim.etcd[0].spawn();
    for i in [0, 2] {
        wait_until(
            "the nodes to refuse an empty etcd",
            Duration::from_secs(20),
            || {
                sim.nodes[i]
                    .faasd
                    .log_text()
                    .contains("etcd is not the cluster this node joined")
            },
            || ctx(&sim),
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sim.nodes[0].faasd.client().list().expect("list").len(), had);
    for i in [0, 2] {
        assert_eq!(sim.nodes[i].call(f).expect("f").0, 200);
    }
}

/// Sends requests (`served` says whether one was) until 2 s pass without a
/// failure; returns when the last one failed, and the counts.
fn until_recovered(sim: &Sim, mut served: impl FnMut() -> bool) -> (Duration, u32, u32) {
    let lost = Instant::now();
    let mut last_failure = Duration::ZERO;
    let (mut failures, mut requests) = (0, 0);
    while lost.elapsed() < last_failure + Duration::from_secs(2) {
        assert!(
            lost.elapsed() < Duration::from_secs(15),
            "no recovery: {}",
            sim.context()
        );
        requests += 1;
        if !served() {
            failures += 1;
            last_failure = lost.elapsed();
        }
    }
    (last_failure, failures, requests)
}

fn signal(pid: i32, sig: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("kill");
}

/// A registry in the router's namespace, with a login: a deploy by
/// reference through one node serves one digest on every node (each
/// pulled it itself, with the login given through another node, which
/// etcd holds encrypted); the tag moves and every node keeps serving the
/// digest it was deployed by, until `faas update --pull` through a third.
#[test]
fn a_deploy_by_reference_serves_one_digest_on_every_node() {
    require_tools();
    const REGISTRY: &str = "198.18.0.1:5000";
    let sim = Sim::start_with(3, &["--insecure-registry", REGISTRY]);
    let ctx = |sim: &Sim| sim.context();
    sim.wait_members();
    let tmp = tempfile::tempdir().expect("tempdir");
    let password = "cluster-pull-pw";
    let reg = Registry::start_at(
        &tmp.path().join("reg"),
        Some(&sim.router.0),
        REGISTRY.into(),
        None,
        Some(("ci", password)),
    );
    let v1 = reg.push(&which_image("v1"), "app:latest", &[]);

    let out = sim.nodes[1].faasd.faas(
        &[
            "registry",
            "login",
            REGISTRY,
            "-u",
            "ci",
            "--password-stdin",
        ],
        Some(format!("{password}\n").as_bytes()),
    );
    assert!(out.status.success(), "login: {out:?}");
    let stored = sim.etcd[0]
        .get(&format!("/faasd/registries/{REGISTRY}"))
        .expect("the login is in etcd");
    assert!(
        !String::from_utf8_lossy(&stored).contains(password),
        "etcd holds the password in the clear"
    );
    let listed = sim.nodes[2].faasd.faas(&["registry", "ls"], None);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("ci"),
        "{listed:?}"
    );

    let app = format!("{REGISTRY}/app");
    let out = sim.nodes[0]
        .faasd
        .faas(&["deploy", "f", "--image", &app, "--warm", "1"], None);
    assert!(out.status.success(), "deploy: {out:?}\n{}", ctx(&sim));
    let digest_everywhere = |want: &str| {
        sim.nodes.iter().all(|n| {
            n.faasd
                .client()
                .inspect("f")
                .ok()
                .and_then(|i| i.image)
                .is_some_and(|i| i.digest == want)
        })
    };
    wait_until(
        "every node serving v1's digest",
        Duration::from_secs(30),
        || digest_everywhere(&v1),
        || ctx(&sim),
    );
    let ip: IpAddr = sim.nodes[0].inspect("f").ip;
    for node in &sim.nodes {
        let (status, body) = node.call(ip).expect("call");
        assert_eq!(
            (status, kv(&body).get("env.WHICH").cloned()),
            (200, Some("v1".into()))
        );
    }

    // The tag moves: nothing changes until someone asks.
    let v2 = reg.push(&which_image("v2"), "app:latest", &[]);
    assert_ne!(v1, v2);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        digest_everywhere(&v1),
        "a moved tag changed a node by itself"
    );

    let out = sim.nodes[2].faasd.faas(&["update", "f", "--pull"], None);
    assert!(
        out.status.success(),
        "update --pull: {out:?}\n{}",
        ctx(&sim)
    );
    wait_until(
        "every node serving v2's digest",
        Duration::from_secs(30),
        || digest_everywhere(&v2),
        || ctx(&sim),
    );
    for node in &sim.nodes {
        let (_, body) = node.call(ip).expect("call");
        assert_eq!(kv(&body).get("env.WHICH").map(String::as_str), Some("v2"));
    }
}

/// GET / with `Host: host` on `addr:80`, from the calling namespace.
fn get_host(addr: IpAddr, host: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&(addr, 80).into(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn a_host_deployed_through_one_node_routes_on_every_node() {
    const SHARED: &str = "198.18.100.250";
    let shared_listen = format!("{SHARED}:80");
    let sim = Sim::start_with(3, &["--shared-listen", &shared_listen]);
    sim.wait_members();
    let shared: IpAddr = SHARED.parse().expect("ip");
    let options = DeployOptions {
        warm: 1,
        hosts: vec![faasd::api::host::HostName::parse("web.test").expect("host")],
        env: [("PROBE_NAME".to_string(), "web".to_string())].into(),
        ..Default::default()
    };
    let web = sim.nodes[0]
        .faasd
        .deploy("web", &probe_image("echo", &[]), &options);
    assert_ne!(web.ip, shared, "the shared address is no function's");
    // Every node routes the name on its shared address, in its namespace.
    for (i, n) in sim.nodes.iter().enumerate() {
        wait_until(
            &format!("n{} routing web.test", i + 1),
            Duration::from_secs(30),
            || {
                n.ns.run(move || get_host(shared, "web.test"))
                    .is_ok_and(|a| a.contains("who=web"))
            },
            || sim.context(),
        );
    }
    assert_eq!(
        sim.etcd[0].get("/faasd/hosts/web.test").as_deref(),
        Some(&b"web"[..]),
        "the name is held in etcd"
    );
    // The shared address is announced by every node: a client behind the
    // router reaches it.
    wait_until(
        "three paths to the shared address",
        Duration::from_secs(20),
        || sim.paths(shared) == 3,
        || sim.context(),
    );
    let through = sim.client.run(move || get_host(shared, "web.test"));
    assert!(
        through.as_ref().is_ok_and(|a| a.contains("who=web")),
        "{through:?}"
    );
    // The name is the cluster's: taking it through another node is refused.
    let out = sim.nodes[1].faasd.faas(
        &["deploy", "other", "--host", "web.test", "--warm", "0"],
        Some(&image_bytes(&hello_image())),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("held by function web"),
        "{err}"
    );
    // Removed through a third node, it routes nowhere, and the name is free.
    sim.nodes[2].faasd.client().remove("web").expect("rm");
    for (i, n) in sim.nodes.iter().enumerate() {
        wait_until(
            &format!("n{} answering 404 for web.test", i + 1),
            Duration::from_secs(30),
            || {
                n.ns.run(move || get_host(shared, "web.test"))
                    .is_ok_and(|a| a.starts_with("HTTP/1.1 404"))
            },
            || sim.context(),
        );
    }
    assert_eq!(sim.etcd[0].get("/faasd/hosts/web.test"), None);
}
