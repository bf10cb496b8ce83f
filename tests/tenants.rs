//! One tenant's function cannot stall faasd for the others. Each test runs
//! faasd on one data-plane core (so the hostile function shares it with
//! its victim), measures a victim function's p99 and `/healthz` idle, then
//! again while a hostile function does its worst to make one of faasd's
//! own threads wait on a descriptor it shaped (probe modes `pass-fds`,
//! `linger-client`, `deaf`), and times `faas rm` of the hostile function
//! and faasd's stop.
//!
//! The victim is measured once the hostile function is quiet again (its
//! pool refilled, its connections taken): what it did to faasd's threads
//! lasts (the lingers are 40 s or forever), the CPU its containers'
//! starts cost does not, and is not what is tested here. The bound is 2×
//! the idle p99, with a 10 ms floor: on two shared vCPUs a sequential p99
//! of a few hundred µs moves by milliseconds with whatever else the
//! machine does; a stalled thread costs seconds. The tests run one at a
//! time, so no test's load is another's noise.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use faasd::api::DeployOptions;

const SAMPLES: usize = 200;
/// One test at a time (see the top).
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
const FLOOR: Duration = Duration::from_millis(10);

/// faasd on one core, a fast victim on it, and the victim's idle numbers.
struct Bench {
    _one: std::sync::MutexGuard<'static, ()>,
    d: Daemon,
    victim: IpAddr,
    idle: Latencies,
}

#[derive(Debug, Clone, Copy)]
struct Latencies {
    victim: Duration,
    healthz: Duration,
}

impl Bench {
    fn start(extra: &[&str]) -> Self {
        let one = ONE.lock().unwrap_or_else(|p| p.into_inner());
        let mut args = vec!["--cores", "1"];
        args.extend_from_slice(extra);
        let d = Daemon::start_with(&args);
        let victim = d
            .deploy(
                "victim",
                &probe_image("hello", &[]),
                &DeployOptions {
                    warm: 1,
                    reuse: true,
                    ..opts()
                },
            )
            .ip;
        d.wait_for("victim", Duration::from_secs(20), "victim's pool", |i| {
            i.stats.warm_ready >= 1
        });
        let mut b = Bench {
            _one: one,
            d,
            victim,
            idle: Latencies {
                victim: Duration::ZERO,
                healthz: Duration::ZERO,
            },
        };
        b.measure();
        b.idle = b.measure();
        b
    }

    fn measure(&self) -> Latencies {
        let healthz = self.d.url.trim_start_matches("http://").to_string();
        Latencies {
            victim: p99(|| call(self.victim)),
            healthz: p99(|| http_get_timeout(&healthz, "/healthz", Duration::from_secs(5))),
        }
    }

    /// Measures while `what` runs, and asserts both stay within bound.
    fn assert_unaffected(&self, what: &str) {
        let now = self.measure();
        let bound = |idle: Duration| (idle * 2).max(FLOOR);
        eprintln!("{what}: idle {:?}, now {now:?}", self.idle);
        assert!(
            now.victim <= bound(self.idle.victim) && now.healthz <= bound(self.idle.healthz),
            "{what}: p99 idle {:?}, while hostile {now:?}\n{}",
            self.idle,
            self.d.log_text()
        );
    }

    fn deploy_hostile(&self, mode: &str, env: &[&str], options: DeployOptions) -> IpAddr {
        let info = self.d.deploy("hostile", &probe_image(mode, env), &options);
        self.settle(info.options.warm);
        info.ip
    }

    /// Waits until the hostile function's pool is full and nothing of it
    /// is in flight or starting.
    fn settle(&self, warm: u32) {
        self.d
            .wait_for("hostile", Duration::from_secs(30), "hostile quiet", |i| {
                i.stats.warm_ready >= u64::from(warm) && i.stats.inflight == 0
            });
    }

    /// `faas rm hostile`, timed; then faasd's stop, timed.
    fn remove_and_stop(mut self) {
        let t0 = Instant::now();
        let out = self.d.faas(&["rm", "hostile"], None);
        let took = t0.elapsed();
        assert!(out.status.success(), "faas rm: {out:?}");
        assert!(took < Duration::from_secs(2), "faas rm took {took:?}");
        assert_eq!(call(self.victim).expect("victim after rm").0, 200);
        let (status, took) = self.d.stop();
        assert!(status.success(), "faasd exit {status}");
        assert!(took < Duration::from_secs(10), "faasd stopped in {took:?}");
    }

    /// A counter from /metrics (0 if absent).
    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.d.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// The 99th percentile of `SAMPLES` sequential calls (each must be a 200).
fn p99(mut call: impl FnMut() -> std::io::Result<(u16, String)>) -> Duration {
    let mut took: Vec<Duration> = (0..SAMPLES)
        .map(|i| {
            let t0 = Instant::now();
            let answer = call();
            assert!(
                matches!(answer, Ok((200, _))),
                "call {i}: {answer:?} after {:?}",
                t0.elapsed()
            );
            t0.elapsed()
        })
        .collect();
    took.sort();
    took[SAMPLES * 99 / 100]
}

/// A client that sends its request and never reads (a tiny receive
/// window): the handler's answer stays in the handler's send buffer.
fn silent_client(ip: IpAddr) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(2048).expect("rcvbuf");
    sock.connect_timeout(&SocketAddr::new(ip, 80).into(), Duration::from_secs(5))
        .expect("connect");
    let mut s: TcpStream = sock.into();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    s
}

/// What the hostile `pass-fds` handlers said of their sending, once the
/// pool is quiet again.
fn passed(b: &Bench, ip: IpAddr) -> Vec<String> {
    let answers = (0..3)
        .map(|_| {
            let (status, body) = call(ip).expect("hostile answers");
            assert_eq!(status, 200, "{body}");
            body.trim().trim_start_matches("passed=").to_string()
        })
        .collect();
    b.settle(2);
    answers
}

/// Sockets sent to faasd over `/control.sock` are refused (SO_PASSRIGHTS):
/// the one whose close would wait forever never reaches faasd. (A handler
/// started for its connection finds faasd's end already gone: EPIPE.)
#[test]
fn descriptors_sent_over_the_control_socket_are_refused() {
    let b = Bench::start(&[]);
    for pass in ["linger", "flood"] {
        let env = format!("PROBE_PASS={pass}");
        let ip = b.deploy_hostile("pass-fds", &[&env], DeployOptions { warm: 2, ..opts() });
        let answers = passed(&b, ip);
        assert!(
            answers
                .iter()
                .all(|a| a == "0,refused(1)" || a == "0,refused(32)")
                && answers.iter().any(|a| a == "0,refused(1)"),
            "{pass}: nothing may reach faasd: {answers:?}"
        );
        b.assert_unaffected(&format!("pass-fds {pass}"));
    }
    b.remove_and_stop();
}

/// Where control sockets take descriptors (kernels before 6.16, forced
/// here): they reach faasd, whose closer empties the control connection
/// before its close and releases each one on its own, the lingering one
/// with its linger cleared: no close waits (a close that waited held up
/// every other function's closes behind it: the victim's p99 rose to 11 ms
/// in CI before this). (Not the flood here: so many in flight slow the
/// kernel's collector of them for every process that passes descriptors,
/// runc among them: docs/reliability.md.)
#[test]
fn descriptors_a_kernel_lets_through_are_closed_by_the_closer() {
    let b = Bench::start(&["--accept-passed-descriptors"]);
    let pass = "linger";
    let cleared = b.metric("faas_closer_lingers_cleared_total");
    let interrupted = b.metric("faas_closer_interrupted_total");
    let env = format!("PROBE_PASS={pass}");
    let ip = b.deploy_hostile("pass-fds", &[&env], DeployOptions { warm: 2, ..opts() });
    let answers = passed(&b, ip);
    assert!(
        answers.iter().any(|a| a == "ok" || !a.starts_with('0')),
        "{pass}: the fallback takes them: {answers:?}"
    );
    eventually(
        Duration::from_secs(5),
        "the lingering sockets they sent released, their linger cleared",
        || {
            let now = b.metric("faas_closer_lingers_cleared_total");
            if now > cleared {
                Ok(())
            } else {
                Err(now)
            }
        },
    );
    b.assert_unaffected(&format!("pass-fds {pass} (fallback)"));
    assert_eq!(
        b.metric("faas_closer_interrupted_total"),
        interrupted,
        "a close waited until the watchdog interrupted it"
    );
    b.remove_and_stop();
}

/// A handler lingers on its own client connection toward clients that do
/// not read. One-shot: faasd lets go of its copy once the handler's first
/// byte is out, so the last close is the handler's (its own container
/// waits) or, when the handler closes first, faasd's (the closer clears
/// the linger); each attack lands one way or the other. Reuse mode:
/// connections come in batches and faasd's copies are closed right after
/// the hand-over (the handler's close is almost always the last: its
/// container waits, and its function scales out, up to its concurrency;
/// the starts are done before measuring).
#[test]
fn a_handler_lingering_on_its_client_stalls_no_one() {
    let b = Bench::start(&[]);
    for (label, options, clients) in [
        ("one-shot", DeployOptions { warm: 3, ..opts() }, 3),
        (
            "reuse",
            DeployOptions {
                warm: 1,
                reuse: true,
                ..opts()
            },
            16,
        ),
    ] {
        let before = b.metric("faas_closer_lingers_cleared_total");
        let ip = b.deploy_hostile(
            "linger-client",
            &[&format!("PROBE_LINGER_SECS={LINGER_SECS}")],
            options.clone(),
        );
        let served =
            b.d.client()
                .inspect("hostile")
                .map_or(0, |i| i.stats.handed_over);
        let held: Vec<TcpStream> = (0..clients).map(|_| silent_client(ip)).collect();
        b.d.wait_for(
            "hostile",
            Duration::from_secs(20),
            "clients handed over",
            |i| i.stats.handed_over >= served + clients as u64,
        );
        if label == "one-shot" {
            // Stuffing takes milliseconds; a handler still serving after
            // that waits in its own lingering close (for LINGER_SECS). The
            // closer, at low priority, may take a while on a busy host:
            // looked at until the handlers' lingers would end.
            std::thread::sleep(Duration::from_millis(1500));
            let landed = || {
                let ours = b.metric("faas_closer_lingers_cleared_total") - before;
                let theirs =
                    b.d.client()
                        .inspect("hostile")
                        .map_or(0, |i| i.stats.inflight);
                (ours, theirs)
            };
            let until = Instant::now() + Duration::from_millis(1500);
            let (mut ours, mut theirs) = landed();
            while ours + (theirs as f64) < clients as f64 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(100));
                (ours, theirs) = landed();
            }
            assert!(
                ours + theirs as f64 >= clients as f64,
                "{label}: {ours} lingering closes by faasd, {theirs} by handlers \
                 of {clients}: an attack did not land, so it was not tested"
            );
        } else {
            wait_starts_done(&b.d);
        }
        b.assert_unaffected(&format!("linger-client {label}"));
        if label == "one-shot" {
            b.settle(options.warm);
        }
        drop(held);
    }
    b.remove_and_stop();
}

/// How long a hostile handler's own close lingers (its container waits
/// that long; under the function's timeout).
const LINGER_SECS: u32 = 4;

/// Waits until no container of the hostile function is starting (its
/// cold-start count holds still for half a second).
fn wait_starts_done(d: &Daemon) {
    let mut last = u64::MAX;
    for _ in 0..40 {
        let cold = d
            .client()
            .inspect("hostile")
            .map_or(0, |i| i.stats.cold_starts);
        if cold == last {
            return;
        }
        last = cold;
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A reuse handler that never reads its control socket holds only its
/// own function's connections (its concurrency limit keeps the rest in
/// the kernel's queue, as it would for any slow function).
#[test]
fn a_handler_that_never_reads_its_control_socket_stalls_no_one() {
    let b = Bench::start(&[]);
    let ip = b.deploy_hostile(
        "deaf",
        &[],
        DeployOptions {
            warm: 2,
            reuse: true,
            concurrency: 2,
            timeout_secs: 30,
            ..opts()
        },
    );
    let held: Vec<TcpStream> = (0..20).map(|_| silent_client(ip)).collect();
    b.d.wait_for(
        "hostile",
        Duration::from_secs(10),
        "both handed over",
        |i| i.stats.handed_over >= 2,
    );
    b.assert_unaffected("deaf");
    drop(held);
    b.remove_and_stop();
}
