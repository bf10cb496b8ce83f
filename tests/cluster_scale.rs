//! The cluster at size (#27), measured, not asserted: run by
//! `loadtest/cluster-scale.sh` (release build, one test at a time), which
//! turns the MEASURE lines into `docs/cluster-fanout.png` and the tables
//! in `docs/network.md`. Ignored in the suite: together they take many
//! minutes and a machine to themselves.
//!
//! - a 10 MB image deployed through node 1 until every node serves it, 20
//!   times, for each node count in `SCALE_NODES` (1,3,5,10);
//! - a node joining a cluster of `SCALE_JOIN` functions (2,000): how long
//!   until it serves them all, and its faasd's memory;
//! - `SCALE_MANY` functions (10,000) with `--warm 0` in three nodes:
//!   etcd's size, the watch traffic, each node's memory.

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bird::wait_until;
use common::cluster::*;
use common::*;
use faasd::api::DeployOptions;
use faasd::image::build::{Entry, Layer};

/// Big enough for `SCALE_MANY` functions, clear of the harness's links.
const BIG_POOL: &str = "198.18.64.0/18";

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

#[test]
#[ignore = "a measurement: loadtest/cluster-scale.sh"]
fn fan_out_of_a_deploy_by_node_count() {
    let counts: Vec<usize> = env_or("SCALE_NODES", "1,3,5,10")
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let deploys: usize = env_or("SCALE_DEPLOYS", "20").parse().unwrap_or(20);
    let padded = padded_hello(10);
    for n in counts {
        let sim = Sim::start_full(n, 3, &[]);
        sim.wait_members();
        let mut took = Vec::new();
        for i in 0..deploys {
            // A new image each time (a file of its own on top): every node
            // fetches and unpacks it.
            let mut spec = padded.clone();
            spec.tag = format!("fan-{i}:latest");
            spec.layers.push(Layer {
                entries: vec![Entry::file("n", i.to_string().into_bytes())],
                gzip: false,
            });
            let image = image_bytes(&spec);
            let name = format!("fan{i}");
            let t0 = Instant::now();
            let ip = sim.nodes[0]
                .faasd
                .client()
                .deploy(&name, &DeployOptions::default(), image.as_slice())
                .unwrap_or_else(|e| panic!("deploy: {e}\n{}", sim.context()))
                .ip;
            let acked = t0.elapsed();
            let served = serve_everywhere(&sim, ip, t0);
            println!(
                "MEASURE fanout nodes={n} deploy={i} ms={} acked_ms={}",
                served.as_millis(),
                acked.as_millis()
            );
            took.push(served);
            sim.nodes[0].faasd.client().remove(&name).expect("rm");
        }
        took.sort();
        println!(
            "MEASURE fanout_summary nodes={n} p50_ms={} max_ms={} deploys={deploys}",
            took[took.len() / 2].as_millis(),
            took[took.len() - 1].as_millis()
        );
    }
}

/// From `t0` until every node answers 200 at `ip` (asked from each node's
/// own namespace, where its copy serves).
fn serve_everywhere(sim: &Sim, ip: IpAddr, t0: Instant) -> Duration {
    let mut last = Duration::ZERO;
    for node in &sim.nodes {
        wait_until(
            "served by every node",
            Duration::from_secs(120),
            || node.call(ip).is_ok_and(|(s, _)| s == 200),
            || sim.context(),
        );
        last = last.max(t0.elapsed());
    }
    last
}

/// Deploys `count` functions of the hello image (`--warm 0`) through
/// every node at once, `per_node` clients each.
fn deploy_many(sim: &Sim, count: usize, per_node: usize) -> Duration {
    let image = Arc::new(image_bytes(&hello_image()));
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let workers: Vec<_> = sim
        .nodes
        .iter()
        .flat_map(|n| std::iter::repeat_n(n.faasd.unix_url(), per_node))
        .map(|url| {
            let (image, next) = (Arc::clone(&image), Arc::clone(&next));
            std::thread::spawn(move || {
                let client = faasd::client::Client::new(&url);
                let options = DeployOptions {
                    warm: 0,
                    ..Default::default()
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    let name = format!("m{i}");
                    let mut tries = 0;
                    while let Err(e) = client.deploy(&name, &options, image.as_slice()) {
                        tries += 1;
                        assert!(tries < 5, "deploying {name}: {e}");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("deployer");
    }
    t0.elapsed()
}

/// faasd's resident memory (kB).
fn rss_kb(node: &Node) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", node.faasd.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn function_count(node: &Node) -> usize {
    node.faasd.client().list().map(|l| l.len()).unwrap_or(0)
}

#[test]
#[ignore = "a measurement: loadtest/cluster-scale.sh"]
fn a_late_joiner_catches_up() {
    let count: usize = env_or("SCALE_JOIN", "2000").parse().unwrap_or(2000);
    let mut sim = Sim::start_pool(3, 3, BIG_POOL, &[]);
    sim.wait_members();
    let took = deploy_many(&sim, count, 2);
    println!(
        "MEASURE join_setup functions={count} deploy_s={:.1}",
        took.as_secs_f64()
    );
    let t0 = Instant::now();
    let joined = sim.join();
    wait_until(
        "the late node serves every function",
        Duration::from_secs(1800),
        || function_count(joined) == count,
        || format!("{} of {count}", function_count(joined)),
    );
    println!(
        "MEASURE join functions={count} caught_up_s={:.1} rss_new_kb={} rss_old_kb={}",
        t0.elapsed().as_secs_f64(),
        rss_kb(joined),
        rss_kb(&sim.nodes[0])
    );
}

#[test]
#[ignore = "a measurement: loadtest/cluster-scale.sh"]
fn many_functions_in_three_nodes() {
    let count: usize = env_or("SCALE_MANY", "10000").parse().unwrap_or(10000);
    room_for_descriptors(count);
    let sim = Sim::start_pool(3, 3, BIG_POOL, &[]);
    sim.wait_members();
    let before = etcd_sent(&sim);
    let rss0: Vec<u64> = sim.nodes.iter().map(rss_kb).collect();
    let took = deploy_many(&sim, count, 2);
    wait_until(
        "every node serves every function",
        Duration::from_secs(1800),
        || sim.nodes.iter().all(|n| function_count(n) == count),
        || {
            let have: Vec<usize> = sim.nodes.iter().map(function_count).collect();
            format!("{have:?} of {count}")
        },
    );
    let rss: Vec<u64> = sim.nodes.iter().map(rss_kb).collect();
    let sent = etcd_sent(&sim) - before;
    let db = sim.etcd[0]
        .curl(&["/v3/maintenance/status", "-X", "POST", "-d", "{}"])
        .ok()
        .and_then(|s| {
            s.split("\"dbSize\":\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    println!(
        "MEASURE many functions={count} deploy_s={:.1} etcd_db_bytes={db} etcd_sent_bytes={sent} rss_before_kb={rss0:?} rss_kb={rss:?} per_function_kb={:.1}",
        took.as_secs_f64(),
        (rss.iter().sum::<u64>() as f64 - rss0.iter().sum::<u64>() as f64)
            / (count as f64 * rss.len() as f64)
    );
}

/// The descriptor limit the nodes inherit, as `dist/faasd.service` sets
/// it (`LimitNOFILE`) where this process may (CAP_SYS_RESOURCE), else
/// the hard limit: a function holds three, so `count` functions must fit.
fn room_for_descriptors(count: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if setrlimit(Resource::RLIMIT_NOFILE, 1 << 20, 1 << 20).is_err() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raising RLIMIT_NOFILE");
    }
    let (limit, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let fits = limit.saturating_sub(4096) / 3;
    assert!(
        count as u64 <= fits,
        "{count} functions need {} descriptors a node; this host allows {limit} (no CAP_SYS_RESOURCE to raise it): about {fits} functions fit",
        count * 3 + 4096
    );
}

/// Bytes every etcd member has sent to gRPC clients (its own counter):
/// the watch traffic, with the replies to changes and reads.
fn etcd_sent(sim: &Sim) -> f64 {
    sim.etcd
        .iter()
        .filter_map(|e| e.curl(&["/metrics"]).ok())
        .flat_map(|text| {
            text.lines()
                .filter(|l| l.starts_with("etcd_network_client_grpc_sent_bytes_total"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}
