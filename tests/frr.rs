//! FRR as the router in front of two faasd nodes (each with BIRD 2, as
//! `docs/network.md` sets them up), with the config `dist/frr/router.conf`
//! documents: both nodes serve the same function at the same address (the
//! lowest of the same pool), FRR installs it with a next hop per node and
//! spreads connections over both; `rm` on one node leaves the other's
//! path, and a planned stop of that one withdraws the last. All inside
//! namespaces the test makes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::bird::{node_config, paths, router_route, stop_withdrawing_first, wait_until, Bird};
use common::frr::{router_config, Frr};
use common::netns::{link, Netns};
use common::*;

#[test]
fn an_frr_router_spreads_two_nodes_and_follows_their_withdrawals() {
    assert!(
        Frr::installed(),
        "FRR not found (/usr/lib/frr): scripts/install-deps.sh installs frr"
    );
    assert!(
        which("bird").is_some(),
        "bird not found: scripts/install-deps.sh installs bird2"
    );
    let router = Netns::new("frouter");
    let out = Command::new("ip")
        .args(["netns", "exec", &router.0])
        .args(["sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"])
        .output()
        .expect("sysctl");
    assert!(out.status.success(), "{out:?}");
    let mut nodes = Vec::new();
    let mut peers = Vec::new();
    for i in 0..2 {
        let ns = Netns::new("fnode");
        let (addr, side) = (
            format!("198.18.1.{}", 4 * i + 1),
            format!("198.18.1.{}", 4 * i + 2),
        );
        link(&router, &format!("{side}/30"), &ns, &format!("{addr}/30"));
        // Back to the router's addresses on the other node links too: a
        // connection's source address may be another link's.
        ns.ip(&["route", "add", "198.18.0.0/23", "via", &side]);
        let bird = Bird::start(&ns, &node_config(&addr, &side));
        let faasd = Daemon::start_in(
            &ns.0,
            &[
                "--ip-pool",
                "198.18.100.0/24",
                "--route-table",
                "100",
                "--drain",
                "2",
            ],
        );
        peers.push(addr);
        // Dropped in this order: faasd and BIRD before their namespace.
        nodes.push((faasd, bird, ns));
    }
    let peer_refs: Vec<&str> = peers.iter().map(String::as_str).collect();
    let frr = Frr::start(&router, &router_config("198.18.0.254", &peer_refs));
    let context = || format!("{}\n{}", frr.summary(), frr.log());

    let opts = faasd::api::DeployOptions {
        warm: 1,
        ..Default::default()
    };
    let f = nodes[0].0.deploy("f", &hello_image(), &opts).ip;
    let again = nodes[1].0.deploy("f", &hello_image(), &opts).ip;
    assert_eq!(f, again, "the same pool hands out the same first address");
    wait_until(
        "FRR's route to f through both nodes",
        Duration::from_secs(30),
        || paths(&router, f) == 2,
        context,
    );
    for _ in 0..40 {
        let (status, body) = router
            .run(move || call(f))
            .unwrap_or_else(|e| panic!("GET {f} from the router: {e}"));
        assert_eq!((status, body.as_str()), (200, "Hello from FaaS handler!\n"));
    }
    let served: Vec<u64> = nodes
        .iter()
        .map(|(d, _, _)| d.client().inspect("f").expect("inspect").stats.requests)
        .collect();
    println!("MEASURE frr_requests_per_node {served:?}");
    assert!(
        served.iter().all(|&n| n > 0),
        "FRR spreads connections over both nodes: {served:?}"
    );

    // rm on node 1: its path goes, node 2 still serves.
    let out = nodes[0].0.faas(&["rm", "f"], None);
    assert!(out.status.success(), "{out:?}");
    wait_until(
        "FRR to drop node 1's path",
        Duration::from_secs(10),
        || paths(&router, f) == 1,
        context,
    );
    assert!(
        router_route(&router, f).contains(&format!("via {}", peers[1])),
        "the path left is node 2's: {}",
        router_route(&router, f)
    );
    for _ in 0..10 {
        assert_eq!(router.run(move || call(f)).expect("GET f").0, 200);
    }

    // A planned stop of node 2: FRR forgets f before faasd has stopped.
    let forgotten = stop_withdrawing_first(&mut nodes[1].0, &router, f, context);
    println!(
        "MEASURE frr_planned_stop forgotten_ms {}",
        forgotten.as_millis()
    );
}
