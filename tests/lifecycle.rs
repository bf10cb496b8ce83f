//! faasd's own life: shutdown releases everything, a restart serves every
//! function again on the same address, a crash leaves nothing a restart
//! does not clean, the operator's own addresses are never touched, and
//! faasd takes the descriptors its limit allows.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use faasd::api::DeployOptions;

#[test]
fn faasd_raises_its_open_files_limit_to_the_hard_one() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // Started the way a login shell starts it: soft 1,024, hard higher.
    // (Lowered in this process while the daemon starts, which the other
    // tests here do not mind: they hold few descriptors.)
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let low = 1024.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, low, hard).expect("setrlimit");
    let d = Daemon::start();
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).expect("setrlimit back");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields[3..5],
        [hard.to_string(), hard.to_string()],
        "soft raised to hard: {line}"
    );
    assert!(
        d.log_text().contains("open files"),
        "the limit is logged:\n{}",
        d.log_text()
    );
}

#[test]
fn shutdown_removes_addresses_and_restart_restores_them() {
    let mut d = Daemon::start();
    let a = d.deploy("alpha", &hello_image(), &opts());
    let b = d.deploy("beta", &probe_image("hello", &[]), &opts());
    assert_eq!(d.lo_addresses().len(), 2);
    assert_eq!(call(a.ip).expect("alpha").0, 200);

    let (status, took) = d.stop();
    assert!(
        status.success(),
        "faasd exits 0 on SIGTERM: {status}\n{}",
        d.log_text()
    );
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert!(
        d.lo_addresses().is_empty(),
        "addresses left after shutdown: {:?}",
        d.lo_addresses()
    );
    assert!(call(a.ip).is_err());

    d.spawn();
    let list = d.client().list().expect("list after restart");
    let names: Vec<_> = list.iter().map(|f| (f.name.as_str(), f.ip)).collect();
    assert_eq!(
        names,
        vec![("alpha", a.ip), ("beta", b.ip)],
        "registry survives restart"
    );
    assert_eq!(d.lo_addresses().len(), 2, "addresses restored");
    assert_eq!(
        call(a.ip).expect("alpha after restart"),
        (200, "Hello from FaaS handler!\n".to_string())
    );
    assert_eq!(
        call(b.ip).expect("beta after restart"),
        (200, "probe ok\n".to_string())
    );
}

/// Deploys a handler that takes its connection and never answers, sends
/// it a request, and returns once the handler has the connection.
fn hang_a_request(d: &Daemon) -> std::thread::JoinHandle<std::io::Result<(u16, String)>> {
    let slow = DeployOptions {
        warm: 0,
        timeout_secs: 60,
        ..Default::default()
    };
    let ip = d.deploy("hang", &probe_image("hang", &[]), &slow).ip;
    let client =
        std::thread::spawn(move || http_get_timeout(&ip.to_string(), "/", Duration::from_secs(30)));
    // Not just started: a container whose handler has not connected yet
    // ends by itself if faasd dies (its control socket goes with faasd).
    d.wait_for("hang", Duration::from_secs(10), "the hand-over", |i| {
        i.stats.handed_over == 1
    });
    // The deploy's trial container may still be being deleted.
    let t0 = std::time::Instant::now();
    while d.runc_containers().len() != 1 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = d.runc_containers();
    assert_eq!(left.len(), 1, "only the hung request's container: {left:?}");
    client
}

#[test]
fn shutdown_ends_in_flight_containers() {
    let mut d = Daemon::start();
    let client = hang_a_request(&d);
    std::thread::sleep(Duration::from_millis(300));
    let (status, took) = d.stop();
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_secs(10),
        "shutdown with a hanging handler took {took:?}"
    );
    let r = client.join().expect("client thread");
    assert!(
        r.is_err() || r.as_ref().is_ok_and(|(s, _)| *s != 200),
        "the hung request ends: {r:?}"
    );
    assert!(
        d.runc_containers().is_empty(),
        "containers left: {:?}",
        d.runc_containers()
    );
    assert!(d.bundles().is_empty(), "bundles left: {:?}", d.bundles());
}

#[test]
fn a_crash_leaves_nothing_a_restart_does_not_clean() {
    let mut d = Daemon::start();
    let client = hang_a_request(&d);
    // A stray address with our label, as a crashed run that had more functions would leave.
    let stray = format!(
        "{}.{}.{}.250",
        d.net.octets()[0],
        d.net.octets()[1],
        d.net.octets()[2]
    );
    let st = Command::new("ip")
        .args([
            "addr",
            "add",
            &format!("{stray}/32"),
            "dev",
            "lo",
            "label",
            "lo:faas",
        ])
        .status();
    assert!(st.expect("ip").success());
    d.crash();
    assert!(
        !d.runc_containers().is_empty(),
        "the crash should leave the container behind"
    );
    // A bundle on the disk below the tmpfs, as faasd before the tmpfs left them.
    let on_disk = d.state.join("bundles").join("hang-old-1");
    std::fs::create_dir_all(&on_disk).expect("old bundle");
    std::fs::write(on_disk.join("config.json"), "{}").expect("old config");

    d.spawn();
    assert!(
        d.runc_containers().is_empty(),
        "leftover containers: {:?}",
        d.runc_containers()
    );
    assert!(
        d.bundles().is_empty(),
        "leftover bundles: {:?}",
        d.bundles()
    );
    let addrs = d.lo_addresses();
    assert!(
        !addrs.iter().any(|l| l.contains(&stray)),
        "stray address kept: {addrs:?}"
    );
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    let r = client.join().expect("client thread");
    assert!(
        r.is_err() || r.as_ref().is_ok_and(|(s, _)| *s != 200),
        "{r:?}"
    );
    // Still serving after recovery (and the crashed container's cgroup is gone).
    let quick = DeployOptions {
        warm: 0,
        timeout_secs: 1,
        ..Default::default()
    };
    let ip = d.deploy("hang", &probe_image("hello", &[]), &quick).ip;
    assert_eq!(call(ip).expect("after recovery").0, 200);
    d.stop();
    assert!(!on_disk.exists(), "the old bundle on disk is removed");
}

#[test]
fn another_faasds_addresses_survive_our_restart() {
    let other = Daemon::start();
    let theirs = other.deploy("theirs", &hello_image(), &opts()).ip;
    let mut d = Daemon::start();
    d.deploy("ours", &hello_image(), &opts());
    d.crash();
    d.spawn();
    assert_eq!(
        other.lo_addresses().len(),
        1,
        "the other faasd's address was removed"
    );
    assert_eq!(call(theirs).expect("the other faasd still serves").0, 200);
}

#[test]
fn the_operators_addresses_are_left_alone() {
    let mut d = Daemon::start();
    // The operator put the pool's first address on lo by hand, without our label.
    let theirs = format!(
        "{}.{}.{}.1",
        d.net.octets()[0],
        d.net.octets()[1],
        d.net.octets()[2]
    );
    let st = Command::new("ip")
        .args(["addr", "add", &format!("{theirs}/32"), "dev", "lo"])
        .status();
    assert!(st.expect("ip").success());
    let ip = d.deploy("fn", &hello_image(), &opts()).ip;
    assert_ne!(
        ip.to_string(),
        theirs,
        "an address in use on lo is not handed out"
    );
    assert_eq!(call(ip).expect("request").0, 200);
    d.client().remove("fn").expect("rm");
    let (status, _) = d.stop();
    assert!(status.success());
    let left = d.lo_addresses();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains(&format!("inet {theirs}/32")), "{left:?}");
    // Drop removes it (it is in the test's range).
}

/// Directories under /sys/fs/cgroup named like one of `ids`.
fn cgroups_named(ids: &[String]) -> Vec<String> {
    let out = Command::new("find")
        .args(["/sys/fs/cgroup", "-type", "d"])
        .output()
        .expect("find");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            ids.iter()
                .any(|id| l.ends_with(&format!("/{id}")) || l.contains(&format!("/{id}/")))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn killed_under_load_a_restart_leaves_no_orphans_and_serves_everything() {
    let mut d = Daemon::start();
    let pooled = DeployOptions {
        warm: 2,
        ..Default::default()
    };
    let reused = DeployOptions {
        warm: 2,
        reuse: true,
        ..Default::default()
    };
    let ips = [
        d.deploy("pooled", &hello_image(), &pooled).ip,
        d.deploy("reused", &hello_image(), &reused).ip,
        d.deploy("cold", &probe_image("slow", &[]), &opts()).ip,
    ];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let ip = ips[i % ips.len()];
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = http_get_timeout(&ip.to_string(), "/", Duration::from_secs(5));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let before = d.runc_containers();
    assert!(!before.is_empty(), "load should have containers running");
    d.crash();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }

    d.spawn();
    let survivors: Vec<String> = d
        .runc_containers()
        .into_iter()
        .filter(|id| before.contains(id))
        .collect();
    assert!(
        survivors.is_empty(),
        "containers of the crashed run: {survivors:?}"
    );
    let bundles: Vec<String> = d
        .bundles()
        .into_iter()
        .filter(|b| before.contains(b))
        .collect();
    assert!(
        bundles.is_empty(),
        "bundles of the crashed run: {bundles:?}"
    );
    assert_eq!(
        cgroups_named(&before),
        Vec::<String>::new(),
        "cgroups of the crashed run"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let state = d.state.to_string_lossy().into_owned();
    assert!(
        !mounts.lines().any(|l| l.contains(&state)),
        "mounts under the state directory"
    );
    assert_eq!(d.lo_addresses().len(), 3, "{:?}", d.lo_addresses());
    for ip in ips {
        assert_eq!(call(ip).expect("serves after the restart").0, 200);
    }
}
