//! Function addresses as real network addresses, all inside network
//! namespaces the test makes (test ranges 198.18.0.0/15 and
//! fd00:faa5::/32 only): a non-loopback IPv4 pool and an IPv6 pool serve a
//! client in another namespace through a veth; `--route-table` announces a
//! function only once its pool is filled, withdraws it at `rm`, and at
//! SIGTERM before the address goes; a restart after kill -9 leaves only
//! the routes it announces again.

mod common;

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{ip, unique, Netns};
use common::*;

const TABLE: &str = "100";

/// A node namespace and a client namespace joined by a veth, the client
/// routing the pools through the node.
struct Topology {
    node: Netns,
    client: Netns,
}

const POOL4: &str = "198.18.100.0/31";
const POOL6: &str = "fd00:faa5:100::/64";

fn topology() -> Topology {
    let node = Netns::new("node");
    let client = Netns::new("client");
    let (a, b) = (unique("fv"), unique("fv"));
    ip(&[
        "link", "add", &a, "netns", &node.0, "type", "veth", "peer", "name", &b, "netns", &client.0,
    ]);
    node.ip(&["addr", "add", "198.18.0.1/30", "dev", &a]);
    node.ip(&["addr", "add", "fd00:faa5::1/64", "dev", &a, "nodad"]);
    node.ip(&["link", "set", &a, "up"]);
    client.ip(&["addr", "add", "198.18.0.2/30", "dev", &b]);
    client.ip(&["addr", "add", "fd00:faa5::2/64", "dev", &b, "nodad"]);
    client.ip(&["link", "set", &b, "up"]);
    client.ip(&["route", "add", "198.18.100.0/24", "via", "198.18.0.1"]);
    client.ip(&[
        "-6",
        "route",
        "add",
        "fd00:faa5:100::/64",
        "via",
        "fd00:faa5::1",
    ]);
    Topology { node, client }
}

fn routes(ns: &Netns) -> Vec<String> {
    let mut v: Vec<String> = ["-4", "-6"]
        .iter()
        .flat_map(|fam| {
            // A table no route was ever put in "does not exist": empty.
            let out = Command::new("ip")
                .args(["-n", &ns.0, fam, "route", "show", "table", TABLE])
                .output()
                .expect("ip route");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v
}

fn has_route(ns: &Netns, addr: IpAddr) -> bool {
    routes(ns).iter().any(|l| {
        l.starts_with(&format!("{addr} ")) && l.contains("dev lo") && l.contains("proto 152")
    })
}

fn has_address(ns: &Netns, addr: IpAddr) -> bool {
    let fam = if addr.is_ipv4() { "-4" } else { "-6" };
    ns.ip(&[fam, "-o", "addr", "show", "dev", "lo"])
        .contains(&format!(" {addr}/"))
}

fn get_from(client: &Netns, addr: IpAddr) -> (u16, String) {
    client
        .run(move || http_get(&addr.to_string(), "/"))
        .unwrap_or_else(|e| panic!("GET http://{addr}/ from the client namespace: {e}"))
}

/// faasd in the topology's node namespace, with both pools and the route table.
fn routed_daemon(t: &Topology) -> Daemon {
    Daemon::start_in(
        &t.node.0,
        &[
            "--ip-pool",
            POOL4,
            "--ip-pool",
            POOL6,
            "--route-table",
            TABLE,
            "--drain",
            "1",
        ],
    )
}

#[test]
fn routable_v4_and_v6_pools_serve_another_namespace_and_rm_cleans_up() {
    let t = topology();
    let d = routed_daemon(&t);
    let opts = |warm| faasd::api::DeployOptions {
        warm,
        ..Default::default()
    };
    // The /31 holds two; the third function gets an IPv6 address.
    let a = d.deploy("a", &hello_image(), &opts(1)).ip;
    let b = d.deploy("b", &hello_image(), &opts(0)).ip;
    let c = d.deploy("c", &hello_image(), &opts(1)).ip;
    assert_eq!(
        [a, b, c].map(|i| i.to_string()),
        ["198.18.100.0", "198.18.100.1", "fd00:faa5:100::1"]
    );
    for addr in [a, b, c] {
        assert!(has_address(&t.node, addr), "{addr} on lo");
        wait_until(
            Duration::from_secs(20),
            &format!("the route to {addr}"),
            || has_route(&t.node, addr),
        );
        let (status, body) = get_from(&t.client, addr);
        assert_eq!(
            (status, body.as_str()),
            (200, "Hello from FaaS handler!\n"),
            "{addr}"
        );
    }
    // The IPv6 address skips DAD, which would keep it unbindable for a
    // moment after each deploy.
    let v6 = t.node.ip(&["-6", "-o", "addr", "show", "dev", "lo"]);
    let line = v6.lines().find(|l| l.contains(" fd00:faa5:100::1/"));
    assert!(
        line.is_some_and(|l| l.contains("nodad") && !l.contains("tentative")),
        "{v6}"
    );
    // Nothing of this on the host's own loopback.
    let host_lo = ip(&["-o", "addr", "show", "dev", "lo"]);
    assert!(
        !host_lo.contains("198.18.100.") && !host_lo.contains("fd00:faa5:100"),
        "{host_lo}"
    );

    let out = d.faas(&["rm", "c"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !has_route(&t.node, c) && !has_address(&t.node, c),
        "rm removes route and address"
    );
    assert!(has_route(&t.node, a), "the others stay announced");
}

/// The suite's runtime, except that only the first `create` succeeds.
fn runtime_that_creates_once(dir: &Path) -> PathBuf {
    let real = String::from_utf8_lossy(
        &Command::new("sh")
            .args(["-c", &format!("command -v {}", runtime())])
            .output()
            .expect("sh")
            .stdout,
    )
    .trim()
    .to_string();
    let count = dir.join("creates");
    let path = dir.join("runtime-once");
    std::fs::write(
        &path,
        format!(
            r#"#!/bin/sh
for a in "$@"; do
  if [ "$a" = create ]; then
    n=$(cat {count} 2>/dev/null || echo 0)
    echo $((n + 1)) > {count}
    [ "$n" -ge 1 ] && {{ echo 'no more containers' >&2; exit 1; }}
  fi
done
exec {real} "$@"
"#,
            count = count.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn only_ready_functions_are_announced() {
    let t = topology();
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime_that_creates_once(dir.path());
    let d = Daemon::start_in(
        &t.node.0,
        &[
            "--ip-pool",
            POOL4,
            "--route-table",
            TABLE,
            "--runtime",
            &runtime.to_string_lossy(),
        ],
    );
    // The first container starts (the deploy needs it); no other does, so
    // a pool of 3 never fills.
    let ip = d
        .deploy(
            "starved",
            &hello_image(),
            &faasd::api::DeployOptions {
                warm: 3,
                ..Default::default()
            },
        )
        .ip;
    assert!(has_address(&t.node, ip));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !has_route(&t.node, ip),
        "announced with a pool that cannot fill: {:?}",
        routes(&t.node)
    );
}

#[test]
fn sigterm_withdraws_routes_before_addresses_and_a_restart_after_kill_9_cleans_up() {
    let t = topology();
    let mut d = routed_daemon(&t);
    let ip = d.deploy("f", &hello_image(), &opts()).ip;
    wait_until(Duration::from_secs(20), "the route", || {
        has_route(&t.node, ip)
    });

    // kill -9: the route stays behind; add a stale one of "ours" too.
    d.crash();
    assert!(has_route(&t.node, ip));
    let stale = "fd00:faa5:100::99";
    t.node.ip(&[
        "-6",
        "route",
        "add",
        &format!("{stale}/128"),
        "dev",
        "lo",
        "table",
        TABLE,
        "proto",
        "152",
    ]);
    d.spawn();
    wait_until(Duration::from_secs(10), "the stale route withdrawn", || {
        !routes(&t.node).iter().any(|l| l.starts_with(stale))
    });
    wait_until(
        Duration::from_secs(20),
        "the restart's own announcement",
        || has_route(&t.node, ip),
    );
    assert_eq!(get_from(&t.client, ip).0, 200);

    // SIGTERM: routes go first, the address (and service) stays through
    // the drain.
    let node = t.node.0.clone();
    let (watching, started) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || {
        let ns = Netns(node);
        let mut seen = Vec::new();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(8) {
            let state = (has_route(&ns, ip), has_address(&ns, ip));
            if seen.last() != Some(&state) {
                seen.push(state);
            }
            let _ = watching.send(());
            if state == (false, false) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::mem::forget(ns); // the topology owns it
        seen
    });
    started.recv().expect("the watcher's first look");
    let (status, took) = d.stop();
    let seen = watcher.join().expect("watcher");
    assert!(status.success());
    assert_eq!(
        seen,
        vec![(true, true), (false, true), (false, false)],
        "route withdrawn, then (after the drain) the address"
    );
    assert!(
        took >= Duration::from_secs(1),
        "the drain was waited: {took:?}"
    );
    assert!(
        took < Duration::from_secs(11),
        "stopped within 10 s + drain: {took:?}"
    );
    assert!(routes(&t.node).is_empty(), "{:?}", routes(&t.node));
}
