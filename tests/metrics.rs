//! /metrics and logs as operators use them: exact counter deltas as
//! requests, cold and warm starts, timeouts and rejections happen; the
//! output passes `promtool check metrics`; a real Prometheus server scrapes
//! it and answers a query, and every query of the shipped Grafana
//! dashboard; the shipped alert rules pass their promtool unit tests;
//! `faas logs` shows and follows handler output.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use faasd::api::DeployOptions;

/// Scrapes /metrics (on the TCP address, with the token, as Prometheus
/// does) and returns the text.
fn scrape(d: &Daemon) -> String {
    let (status, body) = d.tcp_client().raw("GET", "/metrics", b"").expect("scrape");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample with exactly these labels (0 when absent).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(key, _)| {
            let (n, rest) = key.split_once('{').unwrap_or((key, "}"));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                && rest.matches('=').count() == labels.len()
        })
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn counters_move_exactly_with_what_happens() {
    let d = Daemon::start_with(&["--queue-timeout", "1"]);
    let cold = DeployOptions {
        warm: 0,
        ..Default::default()
    };
    let quick = DeployOptions {
        warm: 0,
        timeout_secs: 2,
        ..Default::default()
    };
    let c = d.deploy("c", &hello_image(), &cold).ip;
    let w = d
        .deploy(
            "w",
            &hello_image(),
            &DeployOptions {
                warm: 1,
                ..Default::default()
            },
        )
        .ip;
    // Up at their deploy, failing for every container started later.
    let (late_crash, _) = probe_later("crash", Duration::from_secs(4));
    let (late_stuck, from) = probe_later("noconnect", Duration::from_secs(4));
    let crash = d.deploy("crash", &late_crash, &quick).ip;
    let stuck = d.deploy("stuck", &late_stuck, &quick).ip;
    let one = DeployOptions {
        warm: 0,
        concurrency: 1,
        ..Default::default()
    };
    let busy = d
        .deploy("busy", &probe_image("slow", &["PROBE_SLEEP_MS=2500"]), &one)
        .ip;
    d.wait_for("w", Duration::from_secs(20), "pool of 1", |i| {
        i.stats.warm_ready == 1
    });
    sleep_until(from);
    let before = scrape(&d);

    for _ in 0..2 {
        assert_eq!(call(c).expect("cold").0, 200);
    }
    assert_eq!(call(w).expect("warm").0, 200);
    assert_eq!(call(crash).expect("crash").0, 502);
    assert_eq!(call(stuck).expect("stuck").0, 504);
    let first = std::thread::spawn(move || call(busy));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(call(busy).expect("second waits, then 503").0, 503);
    assert_eq!(first.join().expect("thread").expect("first").0, 200);
    // Containers end (and report their cgroup) after answering.
    assert!(d.wait_quiet_but_pool(Duration::from_secs(10), 1));
    std::thread::sleep(Duration::from_millis(300));
    let after = scrape(&d);

    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(
        delta(
            "faas_requests_total",
            &[("function", "c"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "faas_container_starts_total",
            &[("function", "c"), ("kind", "cold")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "faas_container_starts_total",
            &[("function", "c"), ("kind", "warm")]
        ),
        0.0
    );
    assert_eq!(
        delta("faas_request_duration_seconds_count", &[("function", "c")]),
        2.0
    );
    assert_eq!(
        delta(
            "faas_container_starts_total",
            &[("function", "w"), ("kind", "warm")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "faas_requests_total",
            &[("function", "crash"), ("outcome", "handler_error")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "faas_requests_total",
            &[("function", "stuck"), ("outcome", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "faas_requests_total",
            &[("function", "busy"), ("outcome", "rejected")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "faas_requests_total",
            &[("function", "busy"), ("outcome", "ok")]
        ),
        1.0
    );
    for phase in [
        "bundle",
        "start_slot",
        "runtime_create",
        "runtime_start",
        "handler_connect",
    ] {
        let n = delta(
            "faas_cold_start_phase_seconds_count",
            &[("function", "c"), ("phase", phase)],
        );
        assert_eq!(n, 2.0, "{phase}");
    }
    assert_eq!(
        delta("faas_container_cpu_seconds_count", &[("function", "c")]),
        2.0
    );
    assert_eq!(
        delta(
            "faas_container_memory_peak_bytes_count",
            &[("function", "c")]
        ),
        2.0
    );
    assert!(
        sample(
            &after,
            "faas_container_memory_peak_bytes_sum",
            &[("function", "c")]
        ) > 0.0
    );
    assert_eq!(
        sample(&after, "faas_warm_pool_ready", &[("function", "w")]),
        1.0
    );
    let accepts: f64 = after
        .lines()
        .filter(|l| l.starts_with("faas_accepts_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    assert_eq!(
        accepts, 7.0,
        "every connection counted by the core that accepted it"
    );

    // promtool agrees it is well-formed Prometheus text.
    let promtool = which("promtool").expect("promtool not found: apt-get install -y prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), after.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus server of our own, scraping faasd every second.
struct Prometheus {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    addr: String,
}

impl Prometheus {
    /// Scrapes `target` with the bearer token in `token_file`, as an
    /// operator's Prometheus would.
    fn start(target: &str, token_file: &std::path::Path) -> Self {
        let bin = which("prometheus").expect("prometheus not found: apt-get install -y prometheus");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: faasd\n    \
                 authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: ['{target}']\n",
                token_file.display()
            ),
        )
        .expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        Self {
            child,
            _dir: dir,
            addr,
        }
    }

    /// Prometheus's whole answer to `q` (its JSON), or why there is none.
    fn answer(&self, q: &str) -> Result<serde_json::Value, String> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", q)
            .finish();
        let endpoint = faasd::client::http::Endpoint::Tcp(self.addr.clone());
        let answer = faasd::client::http::request(
            &endpoint,
            "GET",
            &format!("/api/v1/query?{query}"),
            &[],
            faasd::client::http::Body::Empty,
        )
        .map_err(|e| format!("{e:?}"))?;
        let body = answer.text().map_err(|e| e.to_string())?;
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
    }

    /// How many series `q` answers with, or Prometheus's error.
    fn query_all(&self, q: &str) -> Result<usize, String> {
        let v = self.answer(q)?;
        match v["status"].as_str() {
            Some("success") => Ok(v["data"]["result"].as_array().map_or(0, Vec::len)),
            _ => Err(v.to_string()),
        }
    }

    /// The first series' value.
    fn query(&self, q: &str) -> Option<f64> {
        let v = self.answer(q).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_and_answers() {
    let d = Daemon::start();
    let ip = d
        .deploy(
            "scraped",
            &hello_image(),
            &DeployOptions {
                warm: 0,
                ..Default::default()
            },
        )
        .ip;
    for _ in 0..3 {
        assert_eq!(call(ip).expect("request").0, 200);
    }
    let prom = Prometheus::start(
        d.url.trim_start_matches("http://"),
        &faasd::client::token_path(&d.state),
    );
    let q = r#"faas_requests_total{function="scraped",outcome="ok"}"#;
    eventually_every(
        Duration::from_millis(500),
        Duration::from_secs(60),
        "prometheus to see 3 requests",
        || match prom.query(q) {
            Some(3.0) => Ok(()),
            other => Err(other),
        },
    );
}

#[test]
fn faas_logs_shows_and_follows_handler_output() {
    let d = Daemon::start();
    let ip = d
        .deploy(
            "printer",
            &probe_image("print", &[]),
            &DeployOptions {
                warm: 0,
                ..Default::default()
            },
        )
        .ip;
    assert_eq!(call(ip).expect("request").0, 200);
    let text = eventually(
        Duration::from_secs(5),
        "the handler's output in faas logs",
        || {
            let out = d.faas(&["logs", "printer"], None);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains("probe stdout line") && text.contains("probe stderr line") {
                Ok(text)
            } else {
                Err(text)
            }
        },
    );
    // Tagged with the time and the container that served the connection.
    let line = text
        .lines()
        .find(|l| l.contains("probe stdout line"))
        .expect("line");
    assert!(line.contains(" printer-") && line.contains(" | "), "{line}");

    let mut follower = Command::new(env!("CARGO_BIN_EXE_faas"))
        .args(["logs", "printer", "-f", "--tail", "0"])
        .env("FAAS_URL", d.unix_url())
        .stdout(Stdio::piped())
        .spawn()
        .expect("faas logs -f");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(call(ip).expect("second request").0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("probe stdout line"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "follow printed nothing new: {seen:?}");
        if let Ok(l) = rx.recv_timeout(left) {
            seen.push(l);
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
}

/// `dist/prometheus/alerts.yml`: well-formed, and its unit tests (each
/// alert firing on the series that should fire it, and not before) pass.
#[test]
fn the_shipped_alert_rules_pass_promtool() {
    let promtool = which("promtool").expect("promtool not found: apt-get install -y prometheus");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/prometheus");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts.test.yml"][..],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every query of `dist/grafana/faasd.json`, its variables set to all,
/// is accepted by a real Prometheus scraping a real faasd, and those over
/// a single node's metrics answer with data (the cluster's are checked
/// in tests/cluster_faults.rs).
#[test]
fn every_dashboard_query_is_answered_by_a_real_prometheus() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/grafana/faasd.json");
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("dashboard")).expect("dashboard JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");

    let d = Daemon::start();
    let warm = d
        .deploy(
            "warm",
            &hello_image(),
            &DeployOptions {
                warm: 1,
                ..Default::default()
            },
        )
        .ip;
    let cold = d
        .deploy("cold", &hello_image(), &DeployOptions::default())
        .ip;
    let prom = Prometheus::start(
        d.url.trim_start_matches("http://"),
        &faasd::client::token_path(&d.state),
    );
    // Requests across a few scrapes, so that rates have two samples.
    for _ in 0..6 {
        for ip in [warm, cold] {
            assert_eq!(call(ip).expect("request").0, 200);
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    for expr in &exprs {
        let q = expr.replace("$function", ".*").replace("$instance", ".*");
        let wants_data = !q.contains("faas_cluster_");
        eventually_every(
            Duration::from_millis(500),
            Duration::from_secs(30),
            &format!("prometheus to answer {q}"),
            || match prom.query_all(&q) {
                Ok(n) if n > 0 || !wants_data => Ok(()),
                other => Err(other),
            },
        );
    }
}
