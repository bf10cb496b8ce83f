//! Benchmarks of the request path's pieces.
//!
//! Cases:
//! - `spec/render_and_write`: render a container's config.json and write
//!   it into a bundle directory (what a cold start does per request, and
//!   what the warm pool does ahead of requests)
//! - `handoff/scm_rights_round_trip`: one `sendmsg` with SCM_RIGHTS and the
//!   handler's `recvmsg` over a Unix socket pair
//! - `warm/accept_to_handoff`: TCP connect on loopback, accept, take a slot
//!   from a pool, hand the socket over, handler receives it (std sockets;
//!   the uring accept is what `loadtest/` measures end to end)

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use faasd::api::DeployOptions;
use faasd::image::ImageConfig;
use faasd::runtime::fdpass::{recv_fd, send_fd};
use faasd::runtime::sandbox::spec::{render, SpecInput};
use faasd::runtime::{Slot, WarmPool};
use faasd::sys::closer::Foreign;

fn receive(conn: &UnixStream) -> std::os::fd::OwnedFd {
    recv_fd(conn.as_fd()).expect("recvmsg").expect("an fd")
}

fn spec(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = ImageConfig {
        env: vec!["PATH=/bin".into(), "A=1".into()],
        entrypoint: vec!["/handler".into()],
        working_dir: "/".into(),
        ..Default::default()
    };
    let options = DeployOptions::default();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).expect("bundle");
    c.bench_function("spec/render_and_write", |b| {
        b.iter(|| {
            let spec = render(&SpecInput {
                function: "bench",
                rootfs: Path::new("/var/lib/faasd/rootfs/bench-v1"),
                image_root: Path::new("/var/lib/faasd/rootfs/bench-v1"),
                fork_cgroup: None,
                fork_stats: None,
                control_sock: &bundle.join("control.sock"),
                image: &image,
                options: &options,
                cgroup: "/faasd/bench-1",
                id_base: 1 << 30,
                seccomp_bpf: None,
                init: None,
                connect_timeout_ms: 5000,
                secrets: None,
            });
            let bytes = serde_json::to_vec(&spec).expect("json");
            std::fs::write(bundle.join("config.json"), bytes).expect("write");
        })
    });
}

fn handoff(c: &mut Criterion) {
    let (ours, theirs) = UnixStream::pair().expect("pair");
    let (_a, b) = UnixStream::pair().expect("payload");
    c.bench_function("handoff/scm_rights_round_trip", |bench| {
        bench.iter(|| {
            send_fd(ours.as_fd(), b.as_fd()).expect("send");
            drop(receive(&theirs));
        })
    });
}

fn warm(c: &mut Criterion) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let pool = WarmPool::new(1, 1, false);
    c.bench_function("warm/accept_to_handoff", |bench| {
        bench.iter(|| {
            // A "container" waiting on its control socket.
            let (control, handler) = UnixStream::pair().expect("pair");
            let (slot, _watch) = Slot::new(Foreign::new(control));
            pool.push(slot);
            let client = TcpStream::connect(addr).expect("connect");
            let (accepted, _) = listener.accept().expect("accept");
            let slot = pool.take().expect("slot");
            let handed = slot
                .hand_over(accepted.as_fd(), Box::new(()))
                .map_err(|(_, e)| e)
                .expect("hand over");
            // One-shot: nothing follows the hand-over.
            drop(handed);
            drop(accepted);
            drop(receive(&handler));
            drop(client);
        })
    });
}

criterion_group!(benches, spec, handoff, warm);
criterion_main!(benches);
