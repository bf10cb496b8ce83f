//! Running faasd for real, black-box through `faas`: a redeploy keeps the
//! options it does not name, `update` changes options without an image,
//! versions are kept and rolled back to (under load, dropping nothing),
//! secrets reach their function as a variable and a read-only file and
//! nowhere else, and the CLI's conventions (invoke, describe, -o yaml,
//! completion, man page, env files, one-line refusals before the upload).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use faasd::api::FunctionInfo;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "faas failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "faas succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "one-line reason: {err}");
    err
}

/// An image archive on disk, for `--archive`.
fn image_file(dir: &Path, name: &str, spec: &faasd::image::build::ImageSpec) -> String {
    let path = dir.join(name);
    std::fs::write(&path, image_bytes(spec)).expect("image");
    path.to_string_lossy().into_owned()
}

fn inspect(d: &Daemon, name: &str) -> FunctionInfo {
    d.client().inspect(name).expect("inspect")
}

fn rootfs_dirs(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.state.join("rootfs"))
        .expect("store")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn redeploys_keep_options_updates_need_no_image_and_versions_roll_back() {
    let d = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let img = image_file(
        dir.path(),
        "p.tar",
        &probe_image("inspect", &["PROBE_ENV=A,B"]),
    );
    ok(&d.faas(
        &[
            "deploy",
            "f",
            "--warm",
            "1",
            "--env",
            "A=1",
            "--memory",
            "64M",
            "--archive",
            &img,
        ],
        None,
    ));
    // A redeploy that names nothing keeps everything.
    ok(&d.faas(&["deploy", "f", "--archive", &img], None));
    let v2 = inspect(&d, "f");
    assert_eq!(v2.version, 2);
    assert_eq!((v2.options.warm, v2.options.memory), (1, 64 << 20));
    assert_eq!(v2.options.env.get("A").map(String::as_str), Some("1"));
    // update: no image, same rootfs, new options.
    ok(&d.faas(&["update", "f", "--warm", "2", "--env", "B=2"], None));
    let v3 = inspect(&d, "f");
    assert_eq!(v3.version, 3);
    assert_eq!(v3.image_id, v2.image_id);
    assert_eq!(v3.options.warm, 2);
    assert!(
        !v3.options.env.contains_key("A"),
        "given --env replaces the environment"
    );
    let body = call(v3.ip).expect("call").1;
    assert!(
        body.contains("env.B=2") && body.contains("env.A=<unset>"),
        "{body}"
    );
    assert_eq!(
        rootfs_dirs(&d),
        vec!["f-v1", "f-v2"],
        "update unpacked nothing"
    );
    wait_until(Duration::from_secs(20), "the pool of 2", || {
        inspect(&d, "f").stats.warm_ready == 2
    });
    let err = refused(&d.faas(&["update", "f"], None));
    assert!(err.contains("nothing to update"), "{err}");
    // Versions: 3 serves, 2 and 1 kept (--keep-versions 2 by default).
    let versions: Vec<(u64, bool)> = v3.versions.iter().map(|v| (v.version, v.current)).collect();
    assert_eq!(versions, vec![(3, true), (2, false), (1, false)]);
    // A fourth version pushes version 1 (and its rootfs) out. (Store
    // directories are numbered apart from versions: an update makes none.)
    ok(&d.faas(&["deploy", "f", "--archive", &img], None));
    wait_until(Duration::from_secs(10), "v1's rootfs removed", || {
        rootfs_dirs(&d) == vec!["f-v2", "f-v3"]
    });
    // Roll back: version 3 again (its options, v2's rootfs), atomically.
    let out = ok(&d.faas(&["rollback", "f"], None));
    assert!(out.contains("version 3"), "{out}");
    let back = inspect(&d, "f");
    assert_eq!((back.version, back.options.warm), (3, 2));
    assert!(call(back.ip).expect("call").1.contains("env.B=2"));
    let err = refused(&d.faas(&["rollback", "f", "--to", "99"], None));
    assert!(
        err.contains("no kept version 99") && err.contains("4"),
        "{err}"
    );
    let err = refused(&d.faas(&["update", "nothing", "--warm", "1"], None));
    assert!(err.contains("no function named nothing"), "{err}");
    // describe is inspect; YAML lists the versions.
    let yaml = ok(&d.faas(&["describe", "f", "-o", "yaml"], None));
    assert!(yaml.contains("versions:\n  - current: true"), "{yaml}");
    // The history survives a restart.
    let mut d = d;
    d.stop();
    d.spawn();
    let after = inspect(&d, "f");
    assert_eq!(after.version, 3);
    assert_eq!(after.versions.len(), 3);
    assert!(call(after.ip)
        .expect("call after restart")
        .1
        .contains("env.B=2"));
    // Versions count per function: another's first is 1.
    ok(&d.faas(&["deploy", "g", "--warm", "0", "--archive", &img], None));
    assert_eq!(inspect(&d, "g").version, 1);
}

#[test]
fn rollback_and_update_under_load_drop_no_connection() {
    let wrk = which("wrk").expect("wrk not found: apt-get install -y wrk");
    let d = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let img = image_file(dir.path(), "p.tar", &probe_image("hello", &[]));
    ok(&d.faas(
        &[
            "deploy",
            "busy",
            "--reuse",
            "--warm",
            "2",
            "--archive",
            &img,
        ],
        None,
    ));
    ok(&d.faas(&["update", "busy", "--env", "V=2"], None));
    let ip = inspect(&d, "busy").ip;
    let load = Command::new(wrk)
        .args(["-t2", "-c16", "-d8s", &format!("http://{ip}/")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wrk");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        ok(&d.faas(&["rollback", "busy"], None));
    }
    ok(&d.faas(&["update", "busy", "--warm", "3"], None));
    let out = load.wait_with_output().expect("wrk output");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        !report.contains("Socket errors"),
        "connections dropped:\n{report}"
    );
    assert!(!report.contains("Non-2xx"), "failed answers:\n{report}");
    let done: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in"))
        .and_then(|(n, _)| n.trim().parse().ok())
        .expect("request count");
    assert!(done > 1000, "only {done} requests:\n{report}");
    let info = inspect(&d, "busy");
    assert_eq!(info.stats.failed, 0, "{:?}", info.stats);
}

const SECRET: &str = "hunter2-very-secret-value";

#[test]
fn secrets_reach_their_function_and_nowhere_else() {
    let mut d = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    ok(&d.faas(&["secret", "create", "db-pass"], Some(SECRET.as_bytes())));
    let err = refused(&d.faas(&["secret", "create", "db-pass"], Some(b"other")));
    assert!(err.contains("exists"), "{err}");
    ok(&d.faas(
        &["secret", "create", "db-pass", "--replace"],
        Some(SECRET.as_bytes()),
    ));
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "key-material").expect("key");
    ok(&d.faas(
        &[
            "secret",
            "create",
            "api-key",
            "--from-file",
            &key_file.to_string_lossy(),
        ],
        None,
    ));
    let err = refused(&d.faas(&["secret", "create", "../etc"], Some(b"x")));
    assert!(err.contains("invalid secret name"), "{err}");

    let mut spec = probe_image(
        "inspect",
        &[
            "PROBE_ENV=DB_PASS,MY_KEY",
            "PROBE_FILES=/run/secrets/db-pass,/run/secrets/api-key",
        ],
    );
    spec.config.user = "1000:1000".into();
    let img = image_file(dir.path(), "p.tar", &spec);
    let err = refused(&d.faas(
        &["deploy", "f", "--secret", "missing", "--archive", &img],
        None,
    ));
    assert!(err.contains("no secret named missing"), "{err}");
    ok(&d.faas(
        &[
            "deploy",
            "f",
            "--warm",
            "1",
            "--secret",
            "db-pass",
            "--secret",
            "api-key=MY_KEY",
            "--archive",
            &img,
        ],
        None,
    ));
    let info = inspect(&d, "f");
    let body = call(info.ip).expect("call").1;
    let got = kv(&body);
    assert_eq!(got["env.DB_PASS"], SECRET);
    assert_eq!(got["env.MY_KEY"], "key-material");
    assert_eq!(got["file./run/secrets/db-pass"], SECRET);
    assert_eq!(
        got["meta./run/secrets/db-pass"], "1000:1000:400",
        "owned by the function's user"
    );
    assert_eq!(got["writable./run/secrets/db-pass"], "false");
    // The tmpfs holds them on the host, in faasd's mount namespace (its own
    // on a hybrid cgroup host, where it hides the v2 controllers from crun).
    let mounts =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", d.pid())).expect("mountinfo");
    let run = d.state.join("secrets-run");
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(&format!(" {} ", run.display())) && l.contains(" - tmpfs ")),
        "secrets on a tmpfs at {}",
        run.display()
    );

    // Names only, everywhere but the function.
    let mut seen = vec![
        ok(&d.faas(&["inspect", "f"], None)),
        ok(&d.faas(&["inspect", "f", "-o", "yaml"], None)),
        ok(&d.faas(&["list", "-o", "json"], None)),
        ok(&d.faas(&["secret", "ls", "-o", "json"], None)),
        ok(&d.faas(&["secret", "ls"], None)),
        ok(&d.faas(&["logs", "f"], None)),
        d.get("/metrics").1,
        d.get("/api/list").1,
        d.log_text(),
        std::fs::read_to_string(d.state.join("registry.json")).expect("registry"),
        std::fs::read_to_string(d.state.join("functions/f.json")).expect("f's record"),
    ];
    seen.push(serde_json::to_string(&info).expect("json"));
    for text in &seen {
        assert!(!text.contains(SECRET), "the value leaked into: {text}");
        assert!(
            !text.contains("key-material"),
            "the value leaked into: {text}"
        );
    }
    assert!(
        seen[0].contains("db-pass") && seen[0].contains("MY_KEY"),
        "{}",
        seen[0]
    );
    let ls = ok(&d.faas(&["secret", "ls"], None));
    assert!(
        ls.contains("db-pass") && ls.contains(&SECRET.len().to_string()) && ls.contains(" f"),
        "{ls}"
    );
    // The bundles that hold the values are the runtime's alone.
    for entry in std::fs::read_dir(d.bundles_dir())
        .expect("bundles")
        .flatten()
    {
        let config = entry.path().join("config.json");
        if let Ok(meta) = std::fs::metadata(&config) {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o600,
                "{}",
                config.display()
            );
        }
    }

    // In use: not removable. Once no serving version uses it, it is.
    let err = refused(&d.faas(&["secret", "rm", "db-pass"], None));
    assert!(err.contains("used by f"), "{err}");
    ok(&d.faas(&["update", "f", "--secret", "api-key=MY_KEY"], None));
    let body = call(info.ip).expect("call").1;
    assert_eq!(kv(&body)["env.DB_PASS"], "<unset>");
    ok(&d.faas(&["secret", "rm", "db-pass"], None));
    // Rolling back to a version that used it says why it cannot.
    let err = refused(&d.faas(&["rollback", "f"], None));
    assert!(err.contains("no secret named db-pass"), "{err}");
    assert_eq!(call(info.ip).expect("still serving").0, 200);

    // At shutdown the values leave memory: the tmpfs goes.
    d.stop();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&format!(" {} ", run.display())),
        "tmpfs left mounted"
    );
}

#[test]
fn cli_conventions() {
    let d = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // A deploy faasd refuses says why before the image goes: a 64 MB
    // upload to a bad name is refused at once, with the real reason.
    let big = dir.path().join("big.tar");
    std::fs::write(&big, vec![0u8; 64 << 20]).expect("big");
    let t0 = Instant::now();
    let err = refused(&d.faas(
        &["deploy", "a b", "--archive", &big.to_string_lossy()],
        None,
    ));
    assert!(
        err.contains("function name \"a b\" may only contain"),
        "{err}"
    );
    assert!(
        !err.contains("Broken pipe") && !err.contains("cannot reach"),
        "{err}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the upload was sent: {:?}",
        t0.elapsed()
    );
    let err = refused(&d.faas(
        &[
            "deploy",
            "ok",
            "--warm",
            "1000",
            "--archive",
            &big.to_string_lossy(),
        ],
        None,
    ));
    assert!(err.contains("warm count 1000"), "{err}");
    // Transport errors in one short line.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let out = Command::new(env!("CARGO_BIN_EXE_faas"))
        .args(["list"])
        .env("FAAS_URL", format!("http://{closed}"))
        .output()
        .expect("faas");
    assert_eq!(
        refused(&out).trim(),
        format!("faas: cannot reach faasd at http://{closed}: connection refused")
    );

    // env files, then invoke.
    let env_file = dir.path().join("env");
    std::fs::write(&env_file, "# settings\nA=1\nexport B=\"two words\"\n").expect("env");
    let img = image_file(
        dir.path(),
        "p.tar",
        &probe_image("inspect", &["PROBE_ENV=A,B,C"]),
    );
    ok(&d.faas(
        &[
            "deploy",
            "f",
            "--env-file",
            &env_file.to_string_lossy(),
            "--env",
            "C=3",
            "--archive",
            &img,
        ],
        None,
    ));
    let body = ok(&d.faas(&["invoke", "f", "--path", "/x", "-H", "X-Test: 1"], None));
    let got = kv(&body);
    assert_eq!(
        (
            got["env.A"].as_str(),
            got["env.B"].as_str(),
            got["env.C"].as_str()
        ),
        ("1", "two words", "3")
    );
    let crash = image_file(dir.path(), "c.tar", &probe_image("close", &[]));
    ok(&d.faas(
        &["deploy", "broken", "--warm", "1", "--archive", &crash],
        None,
    ));
    let err = refused(&d.faas(&["invoke", "broken", "--data", "x"], None));
    assert!(err.contains("broken"), "{err}");

    // -o yaml and json on list; describe.
    let yaml = ok(&d.faas(&["list", "-o", "yaml"], None));
    assert!(yaml.starts_with("- "), "{yaml}");
    assert!(yaml.contains("name: \"f\""), "{yaml}");
    let json: Vec<FunctionInfo> =
        serde_json::from_str(&ok(&d.faas(&["ls", "-o", "json"], None))).expect("json");
    assert_eq!(json.len(), 2);
    ok(&d.faas(&["describe", "f"], None));

    // Completions and the man page come from the CLI definition.
    for (shell, marker) in [
        ("bash", "_faas()"),
        ("zsh", "#compdef faas"),
        ("fish", "complete -c faas"),
    ] {
        let out = ok(&d.faas(&["completion", shell], None));
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(out.contains("rollback"), "{shell} completes subcommands");
    }
    let man = ok(&d.faas(&["man"], None));
    assert!(
        man.contains(".TH faas") && man.contains("rollback"),
        "{man}"
    );
}

#[test]
fn sd_notify_readiness_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify");
    let listener = std::os::unix::net::UnixDatagram::bind(&path).expect("notify socket");
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut d = Daemon::start_with_env(
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_string_lossy().as_ref()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let t0 = Instant::now();
    while !(got.iter().any(|m: &String| m.contains("READY=1"))
        && got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "{got:?}");
        let n = listener.recv(&mut buf).expect("a notification");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let ready = got
        .iter()
        .position(|m| m.contains("READY=1"))
        .expect("ready");
    assert!(got[ready].contains("STATUS="), "{got:?}");
    // Ready means serving: the API answers.
    assert!(d.client().list().is_ok());
    let stopper = std::thread::spawn(move || d.stop());
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < Duration::from_secs(10), "no STOPPING=1");
        let n = listener.recv(&mut buf).expect("a notification");
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
    let (status, _) = stopper.join().expect("stop");
    assert!(status.success());
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dist/faasd.service");
    let text = std::fs::read_to_string(&unit).expect("dist/faasd.service");
    assert!(text.contains("Type=notify"), "{text}");
    let analyze = which("systemd-analyze")
        .expect("systemd-analyze (scripts/install-deps.sh installs Debian's systemd)");
    // Verified as installed: the binary where the unit says it is, and
    // the man page it names (as scripts/install.sh installs it).
    let dir = tempfile::tempdir().expect("tempdir");
    let faasd = env!("CARGO_BIN_EXE_faasd");
    let local = dir.path().join("faasd.service");
    std::fs::write(&local, text.replace("/usr/local/bin/faasd", faasd)).expect("unit");
    let man1 = dir.path().join("man/man1");
    std::fs::create_dir_all(&man1).expect("man dir");
    let man = Command::new(env!("CARGO_BIN_EXE_faas"))
        .arg("man")
        .output()
        .expect("faas man");
    std::fs::write(man1.join("faas.1"), &man.stdout).expect("man page");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&local)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .env("MANPATH", dir.path().join("man"))
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    let relevant: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("faasd.service"))
        .collect();
    assert!(out.status.success() && relevant.is_empty(), "{err}");
}
