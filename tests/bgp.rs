//! faasd behind a router, as `docs/network.md` sets it up: BIRD 2 on the
//! node learns faasd's routes (`--route-table 100`) and announces them over
//! BGP to BIRD on a router, which installs them; a client in the router's
//! namespace reaches the function. `rm` and a planned stop withdraw the
//! route at the router. All inside namespaces the test makes.

mod common;

use std::time::Duration;

use common::bird::{
    node_config, router_config, router_route, stop_withdrawing_first, wait_until, Bird,
};
use common::netns::{link, Netns};
use common::*;

#[test]
fn a_router_learns_the_function_over_bgp_and_forgets_it_at_rm_and_stop() {
    if which("bird").is_none() {
        panic!("bird not found: scripts/install-deps.sh installs bird2");
    }
    let router = Netns::new("router");
    let node = Netns::new("bnode");
    link(&router, "198.18.1.2/30", &node, "198.18.1.1/30");
    let router_bird = Bird::start(&router, &router_config("198.18.1.2", &["198.18.1.1"]));
    let node_bird = Bird::start(&node, &node_config("198.18.1.1", "198.18.1.2"));
    let mut d = Daemon::start_in(
        &node.0,
        &[
            "--ip-pool",
            "198.18.100.0/24",
            "--route-table",
            "100",
            "--drain",
            "2",
        ],
    );
    let context = || {
        format!(
            "router: {}\n{}\nnode: {}\n{}",
            router_bird.protocols(),
            router_bird.log(),
            node_bird.protocols(),
            node_bird.log()
        )
    };
    let opts = faasd::api::DeployOptions {
        warm: 1,
        ..Default::default()
    };
    let f = d.deploy("f", &hello_image(), &opts).ip;
    let g = d.deploy("g", &hello_image(), &opts).ip;
    for addr in [f, g] {
        wait_until(
            &format!("the router's route to {addr}"),
            Duration::from_secs(30),
            || router_route(&router, addr).contains("via 198.18.1.1"),
            context,
        );
        let (status, body) = router
            .run(move || http_get(&addr.to_string(), "/"))
            .unwrap_or_else(|e| panic!("GET {addr} from the router: {e}"));
        assert_eq!((status, body.as_str()), (200, "Hello from FaaS handler!\n"));
    }
    let out = d.faas(&["rm", "f"], None);
    assert!(out.status.success());
    wait_until(
        "the router to forget f",
        Duration::from_secs(10),
        || router_route(&router, f).is_empty(),
        context,
    );
    assert!(!router_route(&router, g).is_empty(), "g stays");

    // A planned stop: the router forgets g while the node still serves
    // (the drain), then the node goes.
    stop_withdrawing_first(&mut d, &router, g, context);
}
