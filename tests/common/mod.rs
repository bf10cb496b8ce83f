//! Shared helpers of the privileged integration tests: the host check, the
//! static handler binaries, a faasd per test (own state dir, port, address
//! range; torn down by `Drop` even when the test panics), images built with
//! faasd's own archive writer, and a tiny HTTP client.
#![allow(dead_code)]

pub mod bird;
pub mod cluster;
pub mod etcd;
pub mod frr;
pub mod netns;
pub mod registry;
pub mod stock;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use faasd::api::{DeployOptions, FunctionInfo};
use faasd::client::Client;
use faasd::image::build::{write_image, Entry, ImageSpec, Layer, Layout, RunConfig};

static CHECK: Once = Once::new();

/// Fails loudly, with the fix, when the host cannot run these tests.
pub fn require_host() {
    CHECK.call_once(|| {
        let mut missing = Vec::new();
        if !nix::unistd::geteuid().is_root() {
            missing.push("run as root (containers and loopback addresses need it)".to_string());
        }
        let runtime = runtime();
        if which(&runtime).is_none() {
            missing.push(format!("install {runtime}: apt-get install -y {runtime}"));
        }
        let v1 = Path::new("/sys/fs/cgroup/memory").is_dir();
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").is_file();
        if !v1 && !v2 {
            missing.push(
                "mount cgroups (neither v1 memory nor v2 found under /sys/fs/cgroup)".to_string(),
            );
        }
        let uring = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .unwrap_or_else(|_| "0".into());
        if uring.trim() != "0" {
            missing.push("enable io_uring: sysctl kernel.io_uring_disabled=0".to_string());
        }
        assert!(
            missing.is_empty(),
            "this host cannot run faasd's integration tests: {}",
            missing.join("; ")
        );
    });
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static HANDLERS: OnceLock<PathBuf> = OnceLock::new();

/// Builds the static `faas-init`, `hello` and `probe` (once per test
/// binary) in their own target directory, and returns that release
/// directory.
pub fn handlers_dir() -> &'static Path {
    HANDLERS.get_or_init(|| {
        let target = workspace().join("target/handlers");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "faas-init",
                "-p",
                "hello",
                "-p",
                "probe",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .env("CARGO_TARGET_DIR", &target)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .current_dir(workspace())
            .status()
            .expect("running cargo to build the test handlers");
        assert!(status.success(), "building the static test handlers failed");
        target.join("x86_64-unknown-linux-gnu/release")
    })
}

pub fn handler_bytes(name: &str) -> Vec<u8> {
    let path = handlers_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A one-layer image running `/probe MODE`.
pub fn probe_image(mode: &str, env: &[&str]) -> ImageSpec {
    ImageSpec {
        layers: vec![Layer {
            entries: vec![Entry::exe("probe", handler_bytes("probe"))],
            gzip: false,
        }],
        config: RunConfig {
            entrypoint: vec!["/probe".into()],
            cmd: vec![mode.into()],
            env: env.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        layout: Layout::Both,
        tag: format!("probe-{mode}:latest"),
    }
}

/// A probe whose containers come up as `hello` until `after` from now
/// (a deploy's first container must come up), and behave as `mode` in
/// every container started later; and that moment.
pub fn probe_later(mode: &str, after: Duration) -> (ImageSpec, Instant) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let from = format!("PROBE_FROM={}", now_ms + after.as_millis());
    let later = format!("PROBE_LATER={mode}");
    let mut spec = probe_image("hello", &[&from, &later]);
    spec.tag = format!("probe-later-{mode}:latest");
    (spec, Instant::now() + after)
}

/// Sleeps until `when`.
pub fn sleep_until(when: Instant) {
    std::thread::sleep(when.saturating_duration_since(Instant::now()));
}

/// Bytes that do not compress or deduplicate (xorshift).
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn hello_image() -> ImageSpec {
    faasd::image::build::single_binary(handler_bytes("hello"), "hello:latest")
}

pub fn image_bytes(spec: &ImageSpec) -> Vec<u8> {
    let mut out = Vec::new();
    write_image(spec, &mut out).expect("writing image");
    out
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique /24 inside 127.0.0.0/8 for one daemon of this test process.
fn unique_pool() -> (String, Ipv4Addr) {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let second = 100 + (std::process::id() % 100) as u8;
    let third = (n % 250) as u8 + 1;
    (
        format!("127.{second}.{third}.0/24"),
        Ipv4Addr::new(127, second, third, 0),
    )
}

/// The OCI runtime the suite runs with: FAASD_TEST_RUNTIME (runc or crun),
/// runc by default.
pub fn runtime() -> String {
    std::env::var("FAASD_TEST_RUNTIME")
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "runc".into())
}

/// `--runtime` for the suite's runtime, unless the test picks its own.
fn runtime_arg(extra: &[String]) -> Vec<String> {
    if extra.iter().any(|a| a == "--runtime") {
        return Vec::new();
    }
    vec!["--runtime".into(), runtime()]
}

/// The test's own loopback pool, unless the test picks its pools.
fn pool_arg(extra: &[String], pool: &str) -> Vec<String> {
    if extra.iter().any(|a| a == "--ip-pool") {
        return Vec::new();
    }
    vec!["--ip-pool".into(), pool.into()]
}

/// `--socket` in the test's directory, unless the test picks its own.
fn socket_arg(extra: &[String], socket: &Path) -> Vec<String> {
    if extra.iter().any(|a| a == "--socket") {
        return Vec::new();
    }
    vec!["--socket".into(), socket.to_string_lossy().into_owned()]
}

/// `--cores N` from FAASD_TEST_CORES, so the suite can run per core count
/// (unless the test picks its own).
fn cores_arg(extra: &[String]) -> Vec<String> {
    if extra.iter().any(|a| a == "--cores") {
        return Vec::new();
    }
    match std::env::var("FAASD_TEST_CORES") {
        Ok(n) if !n.is_empty() => vec!["--cores".into(), n],
        _ => Vec::new(),
    }
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// One faasd process with its own state.
pub struct Daemon {
    pub child: Option<Child>,
    pub state: PathBuf,
    /// Its control socket (`--socket`), which the harness drives it by.
    pub socket: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub url: String,
    pub pool: String,
    pub net: Ipv4Addr,
    pub extra: Vec<String>,
    /// Environment faasd starts with, beside the harness's own.
    pub env: Vec<(String, String)>,
    /// The network namespace (`ip netns` name) faasd runs in, if not ours.
    pub netns: Option<String>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_full(None, extra, env)
    }

    /// faasd in network namespace `netns` (made by the test): its pool
    /// and routes live there; the harness drives it by its socket.
    pub fn start_in(netns: &str, extra: &[&str]) -> Self {
        Self::start_full(Some(netns), extra, &[])
    }

    fn start_full(netns: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Self {
        require_host();
        let tmp = tempfile::Builder::new()
            .prefix("faasd-test-")
            .tempdir()
            .expect("tempdir");
        // Containers run as unprivileged host ids: with the ancestors
        // passable (o+x) they reach the state directory directly (a closed
        // one is covered in faults.rs).
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("chmod tempdir");
        let state = tmp.path().join("state");
        let (pool, net) = unique_pool();
        let port = free_port();
        let log = tmp.path().join("faasd.log");
        let socket = tmp.path().join("faasd.sock");
        let mut d = Daemon {
            child: None,
            state,
            socket,
            _tmp: Some(tmp),
            url: format!("http://127.0.0.1:{port}"),
            pool,
            net,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            netns: netns.map(str::to_string),
            log,
        };
        d.spawn();
        d
    }

    /// (Re)starts the process on the same state, port and pool.
    pub fn spawn(&mut self) {
        let listen = self.url.trim_start_matches("http://").to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        // nsenter switches the network namespace only and execs faasd (the
        // child is faasd itself); `ip netns exec` would also remount /sys,
        // hiding the cgroup hierarchies.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg(env!("CARGO_BIN_EXE_faasd"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_faasd")),
        };
        let child = cmd
            .arg("--state-dir")
            .arg(&self.state)
            .args(["--listen", &listen, "--connect-timeout", "3"])
            .args(pool_arg(&self.extra, &self.pool))
            .args(runtime_arg(&self.extra))
            .args(socket_arg(&self.extra, &self.socket))
            .args(cores_arg(&self.extra))
            .arg("--init")
            .arg(handlers_dir().join("faas-init"))
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawning faasd");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("faasd exited at start ({status}): {}", self.log_text());
                }
            }
            let healthy = match &self.netns {
                // Its loopback is not ours: the socket reaches it.
                Some(_) => matches!(self.client().raw("GET", "/healthz", b""), Ok((200, _))),
                None => matches!(
                    http_get(self.url.trim_start_matches("http://"), "/healthz"),
                    Ok((200, _))
                ),
            };
            if healthy {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("faasd did not become healthy: {}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `path` as faasd sees it: in its own mount namespace, where a
    /// version's rootfs is an overlay (from here, only its mount point).
    pub fn seen(&self, path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid()))
            .join(path.strip_prefix("/").unwrap_or(path))
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("faasd running")
    }

    /// A client on the control socket (no token needed).
    pub fn client(&self) -> Client {
        Client::new(&self.unix_url())
    }

    pub fn unix_url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The token faasd created in its state directory.
    pub fn token(&self) -> String {
        faasd::client::read_token(&faasd::client::token_path(&self.state))
            .expect("faasd's token in its state directory")
    }

    /// A client on the TCP address, with the token.
    pub fn tcp_client(&self) -> Client {
        Client::new(&self.url).with_token(Some(self.token()))
    }

    /// `GET path` on the control socket: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        match self.client().raw("GET", path, b"") {
            Ok(r) => r,
            Err(faasd::client::ClientError::Api { status, message }) => (status, message),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    pub fn deploy(&self, name: &str, spec: &ImageSpec, options: &DeployOptions) -> FunctionInfo {
        self.client()
            .deploy(name, options, image_bytes(spec).as_slice())
            .unwrap_or_else(|e| panic!("deploying {name}: {e}\n{}", self.log_text()))
    }

    /// Sends SIGTERM and waits; returns the exit status and how long it took.
    pub fn stop(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("faasd running");
        let t0 = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status, t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("faasd did not stop within 15 s: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn crash(&mut self) {
        let mut child = self.child.take().expect("faasd running");
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn faas(&self, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
        let state = self.state.with_extension("faas");
        self.faas_keeping(&state, args, stdin)
    }

    /// `faas` keeping the revisions it sees in `state` (calls to several
    /// nodes that pass one directory act as one user).
    pub fn faas_keeping(
        &self,
        state: &Path,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> std::process::Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faas"));
        cmd.args(args)
            .env("FAAS_URL", self.unix_url())
            .env("FAAS_STATE_DIR", state)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().expect("spawning faas");
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            });
        }
        child.wait_with_output().expect("faas output")
    }

    /// Addresses on `lo` inside this daemon's pool, with their labels.
    pub fn lo_addresses(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "-4", "addr", "show", "dev", "lo"])
            .output()
            .expect("ip addr");
        let prefix = format!(
            "{}.{}.{}.",
            self.net.octets()[0],
            self.net.octets()[1],
            self.net.octets()[2]
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&format!("inet {prefix}")))
            .map(|l| l.to_string())
            .collect()
    }

    /// Children of the daemon process (any state, zombies included).
    pub fn children(&self) -> Vec<String> {
        let out = Command::new("ps")
            .args(["--ppid", &self.pid().to_string(), "-o", "pid=,stat=,comm="])
            .output()
            .expect("ps");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits (up to `within`) until the daemon has no child processes.
    pub fn wait_no_children(&self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        while !self.children().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.children()
    }

    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The version store's directories of function `name` (`NAME-vID`).
    pub fn store_dirs(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}-v");
        let mut dirs: Vec<String> = std::fs::read_dir(self.state.join("rootfs"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| {
                        n.strip_prefix(&prefix)
                            .is_some_and(|id| id.bytes().all(|b| b.is_ascii_digit()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs
    }

    pub fn runc_containers(&self) -> Vec<String> {
        std::fs::read_dir(self.state.join("runc"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The bundles directory as faasd sees it: a tmpfs in faasd's own
    /// mount namespace, reached through `/proc/PID/root` while faasd runs;
    /// once it stopped, the directory on disk below (which nothing uses).
    pub fn bundles_dir(&self) -> PathBuf {
        let dir = self.state.join("bundles");
        match &self.child {
            Some(c) => PathBuf::from(format!("/proc/{}/root{}", c.id(), dir.display())),
            None => dir,
        }
    }

    pub fn bundles(&self) -> Vec<String> {
        std::fs::read_dir(self.bundles_dir())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls `inspect` until `pred` holds (or panics after `within`).
    pub fn wait_for(
        &self,
        name: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&FunctionInfo) -> bool,
    ) -> FunctionInfo {
        let deadline = Instant::now() + within;
        loop {
            let info = self.client().inspect(name).expect("inspect");
            if pred(&info) {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                info.stats
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until container `gone` has been replaced: it is gone and
    /// `running` containers run.
    pub fn wait_replaced(&self, gone: &str, running: usize, within: Duration) {
        eventually(within, &format!("{gone} replaced"), || {
            let now = self.runc_containers();
            if now.iter().any(|c| c == gone) || now.len() < running {
                Err(now)
            } else {
                Ok(())
            }
        });
    }

    /// Waits until only `pool` containers (the warm pool) are left.
    #[must_use]
    pub fn wait_quiet_but_pool(&self, within: Duration, pool: usize) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.runc_containers().len() <= pool && self.bundles().len() <= pool {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits until no container or bundle is left (they are cleaned up in
    /// the background after each request).
    #[must_use]
    pub fn wait_quiet(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.runc_containers().is_empty() && self.bundles().is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever a failed test left: containers in our runtime root, our
        // addresses.
        let root = self.state.join("runc");
        for id in self.runc_containers() {
            let _ = Command::new(runtime())
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", &id])
                .output();
        }
        for line in self.lo_addresses() {
            if let Some(addr) = line.split_whitespace().skip_while(|w| *w != "inet").nth(1) {
                let _ = Command::new("ip")
                    .args(["addr", "del", addr, "dev", "lo"])
                    .output();
            }
        }
    }
}

/// Sends `GET path` and returns status and body; errors are the I/O kind.
/// Polls `probe` every `every` until it yields `Ok`, and returns that; at
/// `within`, fails the test with `what` and the last thing `probe` saw.
pub fn eventually_every<T, E: std::fmt::Debug>(
    every: Duration,
    within: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {within:?} waiting for {what}; last seen: {seen:?}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// `eventually_every` 10 ms.
pub fn eventually<T, E: std::fmt::Debug>(
    within: Duration,
    what: &str,
    probe: impl FnMut() -> Result<T, E>,
) -> T {
    eventually_every(Duration::from_millis(10), within, what, probe)
}

/// Waits until `check` holds (`eventually` of a condition).
pub fn wait_until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    eventually(
        within,
        what,
        || if check() { Ok(()) } else { Err("not yet") },
    )
}

pub fn http_get(host: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_get_timeout(host, path, Duration::from_secs(10))
}

pub fn http_get_timeout(
    host: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    // "1.2.3.4", "fd00::1" (port 80), or "1.2.3.4:8080", "[fd00::1]:8080".
    let addr: SocketAddr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, 80),
        Err(_) => host
            .parse()
            .map_err(|_| std::io::Error::other(format!("bad address {host}")))?,
    };
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    http_get_on(s, path, timeout)
}

/// GET `path` on a connection already made; reads the answer to EOF.
pub fn http_get_on(
    mut s: TcpStream,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let addr = s.peer_addr()?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    // One write, as real clients send a request: `write!` on an
    // unbuffered stream writes each piece of the format on its own, and a
    // server that answers what its first read got and closes turns the
    // next piece into a reset (EPIPE here).
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("no HTTP status in {text:?}"),
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// GET / on a function address.
pub fn call(ip: impl Into<IpAddr>) -> std::io::Result<(u16, String)> {
    http_get(&ip.into().to_string(), "/")
}

/// Parses the `key=value` lines the probe's `inspect` mode answers.
pub fn kv(body: &str) -> std::collections::HashMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn opts() -> DeployOptions {
    DeployOptions {
        warm: 0,
        ..Default::default()
    }
}

/// `source` (a C file under the crate, e.g. tests/fixtures/shm.c)
/// compiled static with this machine's gcc, in a directory that goes at
/// once.
pub fn compile_static(source: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir
        .path()
        .join(std::path::Path::new(source).file_stem().expect("stem"));
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
    let status = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc");
    assert!(status.success(), "compiling {source}");
    std::fs::read(out).expect("compiled binary")
}
