//! Faults around faasd: killed mid-deploy, a full filesystem, a missing or
//! failing runc. Each must end in a clear error and leave what serves
//! serving.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use faasd::image::build::{Entry, ImageSpec, Layer};

/// A probe image with `extra` bytes of incompressible filler beside it.
fn padded_probe(extra: usize) -> ImageSpec {
    let mut spec = probe_image("hello", &[]);
    let mut filler = vec![0u8; extra];
    let mut x: u32 = 0x9E37_79B9;
    for b in filler.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    spec.layers.push(Layer {
        entries: vec![Entry::file("filler", filler)],
        gzip: false,
    });
    spec
}

/// Directories in the rootfs store other than `keep`.
fn store_extras(d: &Daemon, keep: &str) -> Vec<String> {
    std::fs::read_dir(d.state.join("rootfs"))
        .expect("store")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != keep)
        .collect()
}

fn uploads_left(d: &Daemon) -> usize {
    std::fs::read_dir(d.state.join("uploads"))
        .map(|r| r.count())
        .unwrap_or(0)
}

#[test]
fn killed_during_a_deploy_the_previous_version_serves_and_nothing_partial_stays() {
    let mut d = Daemon::start();
    let v1 = d.deploy("fn", &probe_image("hello", &[]), &opts());
    let v1_dir = d.store_dirs("fn").pop().expect("fn's directory");
    let big = image_bytes(&padded_probe(256 << 20));
    let url = d.unix_url();
    let uploader = std::thread::spawn(move || {
        let _ = faasd::client::Client::new(&url).deploy("fn", &opts(), big.as_slice());
    });
    // Kill it while it unpacks the new version into a staging directory.
    eventually_every(
        Duration::from_millis(5),
        Duration::from_secs(60),
        "the deploy to start unpacking",
        || {
            let extras = store_extras(&d, &v1_dir);
            if extras.is_empty() {
                Err("nothing unpacked yet")
            } else {
                Ok(extras)
            }
        },
    );
    d.crash();
    let _ = uploader.join();
    d.spawn();
    let info = d.client().inspect("fn").expect("inspect");
    assert_eq!(
        info.version, v1.version,
        "the old version is the one recorded"
    );
    assert_eq!(call(v1.ip).expect("serves").0, 200);
    assert_eq!(
        store_extras(&d, &v1_dir),
        Vec::<String>::new(),
        "partial rootfs left"
    );
    assert_eq!(uploads_left(&d), 0, "partial upload left");
}

/// A daemon whose state directory is a small tmpfs; unmounted after the
/// daemon has stopped, even if the test fails.
struct SmallFs {
    daemon: Option<Daemon>,
    mount: PathBuf,
}

impl SmallFs {
    fn start(size: &str) -> Self {
        let mut d = Daemon::start();
        d.crash();
        std::fs::remove_dir_all(&d.state).expect("clear state");
        std::fs::create_dir(&d.state).expect("state dir");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "faasd-test"])
            .arg(&d.state)
            .status()
            .expect("mount");
        assert!(st.success(), "mounting a tmpfs");
        let mount = d.state.clone();
        d.spawn();
        Self {
            daemon: Some(d),
            mount,
        }
    }

    fn d(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon")
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // The daemon's own clean-up cannot remove a mount point: its
        // temporary directory goes here, once the tmpfs is unmounted.
        drop(self.daemon.take());
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        if let Some(tmp) = self.mount.parent() {
            let _ = std::fs::remove_dir_all(tmp);
        }
    }
}

#[test]
fn a_full_filesystem_fails_the_deploy_clearly_and_serving_goes_on() {
    let fs = SmallFs::start("24m");
    let d = fs.d();
    let v1 = d.deploy("fn", &probe_image("hello", &[]), &opts());
    let v1_dir = d.store_dirs("fn").pop().expect("fn's directory");
    // Too big to upload, then small enough to upload but not to unpack too.
    for (label, extra) in [("upload", 30 << 20), ("unpack", 8 << 20)] {
        let err = d
            .client()
            .deploy("fn", &opts(), image_bytes(&padded_probe(extra)).as_slice())
            .expect_err(label);
        let msg = err.to_string();
        eprintln!("{label}: {msg}");
        assert!(msg.contains("HTTP 507"), "{label}: {msg}");
        assert!(msg.contains("No space left"), "{label}: {msg}");
        assert_eq!(call(v1.ip).expect("still serving").0, 200, "{label}");
        assert_eq!(
            d.client().inspect("fn").expect("inspect").version,
            v1.version
        );
        assert_eq!(
            store_extras(d, &v1_dir),
            Vec::<String>::new(),
            "{label}: partial rootfs left"
        );
        assert_eq!(uploads_left(d), 0, "{label}: partial upload left");
    }
}

#[test]
fn a_missing_runtime_is_a_clear_startup_error() {
    require_host();
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let out = Command::new(env!("CARGO_BIN_EXE_faasd"))
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .args(["--listen", "127.0.0.1:0", "--runtime", "/nonexistent/runc"])
        .stdin(Stdio::null())
        .output()
        .expect("faasd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/runc") && stderr.contains("not found"),
        "{stderr}"
    );
}

/// `ip netns exec` mounts a /sys of its own, without the cgroup
/// hierarchies the runtime needs: faasd says so at start instead of
/// failing every deploy with runc's "no cgroup mount found".
#[test]
fn started_where_no_cgroup_is_mounted_faasd_says_why_and_how() {
    require_host();
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let netns = format!("faasd-nocg-{}", std::process::id());
    let made = Command::new("ip").args(["netns", "add", &netns]).status();
    assert!(made.is_ok_and(|s| s.success()), "ip netns add {netns}");
    let out = Command::new("ip")
        .args(["netns", "exec", &netns])
        .arg(env!("CARGO_BIN_EXE_faasd"))
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .args(["--listen", "127.0.0.1:0", "--runtime", &runtime()])
        .stdin(Stdio::null())
        .output();
    let _ = Command::new("ip").args(["netns", "del", &netns]).status();
    let out = out.expect("ip netns exec faasd");
    assert!(!out.status.success(), "faasd started without cgroups");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no cgroup hierarchy") && stderr.contains("nsenter --net="),
        "{stderr}"
    );
}

/// The suite's runtime, except that `create` fails while `dir/fail`
/// exists: it says why on stderr (the container's output) and in its JSON
/// log, as runc and crun do.
fn failing_runtime(dir: &Path) -> PathBuf {
    let real = which(&common::runtime());
    let path = dir.join("runtime-fails");
    let fail = dir.join("fail");
    std::fs::write(
        &path,
        format!(
            r#"#!/bin/sh
log=
prev=
for a in "$@"; do
  [ "$prev" = --log ] && log=$a
  if [ "$a" = create ] && [ -e {fail} ]; then
    echo 'simulated runtime failure' >&2
    [ -n "$log" ] && echo '{{"level":"error","msg":"simulated runtime failure"}}' >> "$log"
    exit 1
  fi
  prev=$a
done
exec {real} "$@"
"#,
            fail = fail.display(),
            real = real.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn which(binary: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .output()
        .expect("sh");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn a_runtime_that_cannot_start_the_function_fails_its_deploy_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let runtime = failing_runtime(tmp.path());
    let runtime = runtime.to_string_lossy().into_owned();
    let d = Daemon::start_with(&["--runtime", &runtime]);
    std::fs::write(tmp.path().join("fail"), b"").expect("marker");
    for warm in [0, 2] {
        let out = d.faas(
            &["deploy", "refused", "--warm", &warm.to_string()],
            Some(&image_bytes(&probe_image("hello", &[]))),
        );
        assert!(!out.status.success(), "deploy --warm {warm} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("simulated runtime failure"), "{err}");
        assert!(err.contains("HTTP 422"), "{err}");
        assert!(d.client().inspect("refused").is_err(), "nothing registered");
    }
    assert!(
        d.lo_addresses().is_empty(),
        "no address kept: {:?}",
        d.lo_addresses()
    );
    assert!(d.wait_quiet(Duration::from_secs(10)), "containers left");
}

#[test]
fn a_runtime_failing_later_answers_502_promptly_and_says_why_in_the_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let runtime = failing_runtime(tmp.path());
    let runtime = runtime.to_string_lossy().into_owned();
    let d = Daemon::start_with(&["--runtime", &runtime]);
    let cold = d.deploy("cold", &probe_image("hello", &[]), &opts()).ip;
    let warm = faasd::api::DeployOptions {
        warm: 2,
        ..Default::default()
    };
    let pooled = d.deploy("pooled", &probe_image("hello", &[]), &warm).ip;
    d.wait_for("pooled", Duration::from_secs(10), "a full pool", |i| {
        i.stats.warm_ready == 2
    });
    // The runtime breaks after the deploys: the pool's two containers
    // serve, then every start fails.
    std::fs::write(tmp.path().join("fail"), b"").expect("marker");
    for _ in 0..2 {
        assert_eq!(call(pooled).expect("pooled").0, 200);
    }
    for ip in [cold, pooled, cold] {
        let t0 = Instant::now();
        let (status, body) = call(ip).expect("answered");
        assert_eq!(status, 502, "{body}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }
    // faasd's log names the failure and the runtime's reason; what the
    // runtime said on its output is in the function's log, beside its
    // handlers' output.
    assert!(
        d.log_text().contains("simulated runtime failure"),
        "{}",
        d.log_text()
    );
    let logs = d.faas(&["logs", "cold"], None);
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("simulated runtime failure"), "{logs}");
    assert!(d.wait_quiet(Duration::from_secs(10)), "containers left");
}

/// Whether the state view is mounted where `pid` (faasd, or the test
/// itself) sees mounts: faasd may run in a mount namespace of its own.
fn view_mounted(pid: &str, scope: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&format!("/run/faasd/{scope}")))
}

#[test]
fn a_state_directory_behind_a_closed_directory_still_serves() {
    let mut d = Daemon::start();
    d.crash();
    // As `mktemp -d` makes it: other users may not pass. Containers (an
    // unprivileged host uid) could not reach their rootfs through it.
    let closed = d.state.parent().expect("parent").to_path_buf();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    d.spawn();
    let scope = faasd::runtime::sandbox::cgroup::scope(&d.state);
    let faasd = d.pid().to_string();
    assert!(view_mounted(&faasd, &scope), "the state view is mounted");
    let info = d.deploy("behind", &probe_image("hello", &[]), &opts());
    assert_eq!(call(info.ip).expect("serves").0, 200);
    let mode = std::fs::metadata(&closed)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "the operator's directory is left as it was");
    drop(d);
    assert!(
        !view_mounted("self", &scope),
        "the state view is unmounted at shutdown"
    );
}
