//! Clients that are slow or silent: served or bounded by the function's
//! timeout, never stalling the acceptor for anyone else.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use faasd::api::DeployOptions;

fn connect(ip: IpAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&SocketAddr::from((ip, 80)), Duration::from_secs(5))
        .expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    s
}

/// Sends a request in pieces, `gap` apart, and returns the answer.
fn slow_request(ip: IpAddr, gap: Duration) -> String {
    let mut s = connect(ip);
    for piece in [
        "GET / HT",
        "TP/1.1\r\nHost: x\r\n",
        "Connection: close\r\n\r\n",
    ] {
        s.write_all(piece.as_bytes()).expect("write");
        std::thread::sleep(gap);
    }
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read answer");
    answer
}

#[test]
fn a_request_sent_slowly_is_served_cold_and_warm() {
    let d = Daemon::start();
    let cold = d.deploy("slowcold", &hello_image(), &opts()).ip;
    let warm_opts = DeployOptions {
        warm: 1,
        ..Default::default()
    };
    let warm = d.deploy("slowwarm", &hello_image(), &warm_opts).ip;
    d.wait_for("slowwarm", Duration::from_secs(20), "pool of 1", |i| {
        i.stats.warm_ready >= 1
    });
    for ip in [cold, warm] {
        let answer = slow_request(ip, Duration::from_millis(300));
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("Hello from FaaS handler!\n"),
            "{ip}: {answer:?}"
        );
    }
}

#[test]
fn a_silent_client_is_bounded_and_stalls_no_one() {
    let d = Daemon::start();
    let options = DeployOptions {
        timeout_secs: 2,
        ..opts()
    };
    let ip = d.deploy("silent", &hello_image(), &options).ip;
    let t0 = Instant::now();
    let mut silent: Vec<TcpStream> = (0..3).map(|_| connect(ip)).collect();
    // Everyone else is served meanwhile, at the usual pace.
    for i in 0..5 {
        let t = Instant::now();
        let (status, _) = call(ip).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(status, 200);
        assert!(t.elapsed() < Duration::from_secs(3), "request {i} stalled");
    }
    // The kernel holds a silent connection (TCP_DEFER_ACCEPT) and then a
    // container does, until the function's timeout: then it is closed.
    for s in &mut silent {
        let mut buf = [0u8; 64];
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("a silent client was not closed cleanly: {e}"));
        assert!(n == 0 || buf.starts_with(b"HTTP/1.1 50"), "{:?}", &buf[..n]);
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "silent clients held {took:?}"
    );
    assert!(d.wait_quiet(Duration::from_secs(10)), "containers left");
}
