//! Handlers that misbehave, and what a handler can and cannot do inside
//! its container.

mod common;

use std::time::{Duration, Instant};

use common::*;
use faasd::api::DeployOptions;

fn timed_call(ip: std::net::IpAddr) -> (std::io::Result<(u16, String)>, Duration) {
    let t0 = Instant::now();
    let r = http_get_timeout(&ip.to_string(), "/", Duration::from_secs(20));
    (r, t0.elapsed())
}

#[test]
fn misbehaving_handlers_are_answered_promptly_and_leave_nothing() {
    // --connect-timeout 3 (set by the test daemon), --timeout 2 per function.
    let d = Daemon::start();
    let quick = DeployOptions {
        warm: 0,
        timeout_secs: 2,
        ..Default::default()
    };
    // A handler that cannot come up fails its deploy, with the reason.
    for (mode, why) in [
        ("crash", "exited (exit code 3) before taking a connection"),
        (
            "noconnect",
            "did not connect to /control.sock within 3 s; a server? deploy with --container-port N",
        ),
    ] {
        let refused = d
            .client()
            .deploy(
                mode,
                &quick,
                image_bytes(&probe_image(mode, &[])).as_slice(),
            )
            .expect_err(mode);
        assert!(refused.to_string().contains(why), "{mode}: {refused}");
        assert!(d.client().inspect(mode).is_err(), "{mode} is not deployed");
        let logs = String::from_utf8_lossy(&d.faas(&["logs", mode], None).stdout).into_owned();
        assert!(
            logs.contains(" v1 faasd | "),
            "{mode}: faasd's line in its log: {logs}"
        );
    }
    // Ones that come up, then fail when they get connections.
    let (late_crash, _) = probe_later("crash", Duration::from_secs(4));
    let (late_noconnect, from) = probe_later("noconnect", Duration::from_secs(4));
    let crash = d.deploy("crash", &late_crash, &quick).ip;
    let noconnect = d.deploy("noconnect", &late_noconnect, &quick).ip;
    let hang = d.deploy("hang", &probe_image("hang", &[]), &quick).ip;
    let close = d.deploy("close", &probe_image("close", &[]), &quick).ip;
    sleep_until(from);
    // An entrypoint that is not in the image cannot start: the deploy is
    // refused with the runtime's reason, and nothing is registered.
    let mut spec = probe_image("hello", &[]);
    spec.config.entrypoint = vec!["/does-not-exist".into()];
    let refused = d
        .client()
        .deploy("missing", &quick, image_bytes(&spec).as_slice())
        .expect_err("a missing entrypoint is refused");
    assert!(
        refused.to_string().contains("does-not-exist") && refused.to_string().contains("422"),
        "{refused}"
    );
    assert!(d.client().inspect("missing").is_err());

    let (r, took) = timed_call(crash);
    let (status, body) = r.expect("crash is answered");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("exited"), "{body}");
    assert!(
        body.contains("faas logs crash"),
        "points to the log: {body}"
    );
    assert!(
        !body.contains("crash-"),
        "no container ids for clients: {body}"
    );
    assert!(took < Duration::from_secs(2), "crash answered in {took:?}");

    // Never connects: 504 at the function's 2 s timeout (below the 3 s connect timeout).
    let (r, took) = timed_call(noconnect);
    let (status, body) = r.expect("noconnect is answered");
    assert_eq!(status, 504, "{body}");
    assert!(
        took < Duration::from_secs(4),
        "noconnect answered in {took:?}"
    );

    // Takes the socket and hangs without a word: 504 when the timeout kills it.
    let (r, took) = timed_call(hang);
    assert_eq!(r.expect("hang is answered").0, 504);
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "hang ended in {took:?}"
    );

    // Closes without answering: the client sees the connection end at once.
    let (r, took) = timed_call(close);
    assert!(r.is_err(), "close: {r:?}");
    assert!(took < Duration::from_secs(2), "close ended in {took:?}");

    assert!(
        d.wait_quiet(Duration::from_secs(10)),
        "left: {:?} {:?}",
        d.runc_containers(),
        d.bundles()
    );
    assert_eq!(
        d.wait_no_children(Duration::from_secs(5)),
        Vec::<String>::new(),
        "no processes or zombies left"
    );
    let info = d.client().inspect("crash").expect("inspect");
    assert_eq!(info.stats.failed, 1);
}

#[test]
fn the_sandbox_holds() {
    let d = Daemon::start();
    // A listener on the host that the handler must not reach.
    let host_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let egress = host_listener.local_addr().expect("addr").to_string();
    let mut options = DeployOptions {
        warm: 0,
        ..Default::default()
    };
    options
        .env
        .insert("FROM_DEPLOY".into(), "deployed value".into());
    options.env.insert("OVERRIDDEN".into(), "by deploy".into());
    let mut spec = probe_image(
        "inspect",
        &[
            &format!("PROBE_EGRESS={egress}"),
            "PROBE_ENV=FROM_IMAGE,FROM_DEPLOY,OVERRIDDEN,FAAS_FUNCTION",
            "FROM_IMAGE=image value",
            "OVERRIDDEN=by image",
        ],
    );
    spec.config.working_dir = "/tmp".into();
    spec.config.user = "1234:5678".into();
    let ip = d.deploy("sandbox", &spec, &options).ip;
    let (status, body) = call(ip).expect("request");
    assert_eq!(status, 200, "{body}");
    let v = kv(&body);
    let get = |k: &str| v.get(k).map(String::as_str).unwrap_or("<absent>");
    assert_eq!(
        get("pid"),
        "1",
        "the handler is pid 1 of its own pid namespace"
    );
    // A writable layer, but "/" is the image's root's (EACCES, not EROFS).
    assert_eq!(
        get("rootfs_write"),
        "denied(13)",
        "a non-root user writes nothing in /"
    );
    assert_eq!(get("tmp_write"), "ok", "/tmp is a writable tmpfs");
    assert!(
        get("egress").starts_with("failed("),
        "no network but the handed socket: {}",
        get("egress")
    );
    assert_eq!(get("uid"), "1234");
    assert_eq!(get("gid"), "5678");
    assert_eq!(get("cwd"), "/tmp");
    assert_eq!(get("env.FROM_IMAGE"), "image value");
    assert_eq!(get("env.FROM_DEPLOY"), "deployed value");
    assert_eq!(get("env.OVERRIDDEN"), "by deploy");
    assert_eq!(get("env.FAAS_FUNCTION"), "sandbox");
    host_listener.set_nonblocking(true).expect("nonblocking");
    assert!(
        host_listener.accept().is_err(),
        "the handler reached a host listener"
    );
    // EPERM (1) for all of these: no capabilities, and seccomp on top.
    assert_eq!(get("mount"), "denied(1)", "mount");
    assert_eq!(get("module"), "denied(1)", "init_module");
    // Allowed to any user by the kernel; only the seccomp profile stops them.
    assert_eq!(get("keyctl"), "denied(1)", "keyctl (seccomp)");
    assert_eq!(get("unshare_user"), "denied(1)", "unshare (seccomp)");
    assert_eq!(get("Seccomp"), "2", "a seccomp filter is installed");
    assert_eq!(get("NoNewPrivs"), "1");
    // A non-root user has no capability in effect (as in Docker), and
    // still binds port 80 in its own network namespace.
    assert_eq!(get("CapEff"), "0000000000000000");
    assert_eq!(get("chown_other"), "denied(1)");
    assert_eq!(get("bind80"), "ok");
    assert_eq!(get("procs"), "1", "no host processes visible");
    // Container root is an unprivileged host id of the function's own range.
    let map: Vec<u64> = get("uid_map")
        .split(' ')
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(map.len(), 3, "uid_map {:?}", get("uid_map"));
    assert_eq!((map[0], map[2]), (0, 65536), "uid_map {:?}", get("uid_map"));
    assert!(map[1] >= 65536, "container root is host uid {}", map[1]);
    let rootfs = std::fs::read_dir(d.state.join("rootfs"))
        .expect("store")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("sandbox-v"))
        .expect("rootfs")
        .path();
    // As faasd's mount namespace has it (there, the rootfs is an overlay
    // of id-mapped layers; here, its mount point).
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(d.seen(&rootfs)).expect("stat"));
    assert_eq!(u64::from(owner), map[1], "the rootfs belongs to the range");
    // `faas inspect` shows what applies.
    let sandbox = d.client().inspect("sandbox").expect("inspect").sandbox;
    assert_eq!(
        sandbox.host_ids,
        format!("{}-{}", map[1], map[1] + 65535),
        "{sandbox:?}"
    );
    let docker: Vec<String> = faasd::api::caps::DEFAULT
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    let mut shown = sandbox.capabilities.clone();
    shown.sort();
    let mut want = docker;
    want.sort();
    assert_eq!(shown, want, "Docker's default set, less MKNOD and NET_RAW");
    assert!(sandbox.no_new_privileges);
    assert!(sandbox.seccomp.contains("allowlist"), "{sandbox:?}");
}

#[test]
fn functions_get_distinct_unprivileged_id_ranges() {
    let d = Daemon::start();
    let mut seen = Vec::new();
    for name in ["ids-a", "ids-b"] {
        let ip = d.deploy(name, &probe_image("inspect", &[]), &opts()).ip;
        let (status, body) = call(ip).expect("request");
        assert_eq!(status, 200, "{body}");
        let v = kv(&body);
        assert_eq!(v["uid"], "0", "the image's root user");
        seen.push(v["uid_map"].clone());
    }
    assert_ne!(seen[0], seen[1], "two functions share host ids: {seen:?}");
}

#[test]
fn hostile_handlers_are_contained() {
    let d = Daemon::start();
    let limited = DeployOptions {
        memory: 64 << 20,
        timeout_secs: 2,
        ..opts()
    };
    let bystander = d
        .deploy("bystander", &probe_image("hello", &[]), &opts())
        .ip;

    // A fork bomb stops at the pids limit; the node and others carry on.
    let ip = d
        .deploy("forkbomb", &probe_image("forkbomb", &[]), &limited)
        .ip;
    let (status, body) = call(ip).expect("fork bomb answers");
    assert_eq!(status, 200, "{body}");
    let v = kv(&body);
    let forked: u32 = v["forked"].parse().expect("forked");
    assert!(forked < 64, "forked {forked} processes");
    assert_eq!(v["error"], "11", "fork refused with EAGAIN");
    assert_eq!(call(bystander).expect("bystander").0, 200);

    // A memory hog is OOM-killed: before taking the connection, a 502.
    let (hog, from) = probe_later("memhog-early", Duration::from_secs(4));
    let ip = d.deploy("hog-early", &hog, &limited).ip;
    sleep_until(from);
    let (status, body) = call(ip).expect("memory hog answered");
    assert_eq!(status, 502, "{body}");
    // ... after taking it, the connection ends promptly (answered 502 when
    // the handler had sent nothing).
    let ip = d.deploy("hog", &probe_image("memhog", &[]), &limited).ip;
    let t0 = Instant::now();
    match http_get_timeout(&ip.to_string(), "/", Duration::from_secs(20)) {
        Ok((status, _)) => assert_eq!(status, 502),
        Err(e) => panic!("memory hog: {e}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // A CPU hog ends at the function's timeout.
    let ip = d.deploy("spin", &probe_image("spin", &[]), &limited).ip;
    let (result, took) = timed_call(ip);
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "spinning handler lasted {took:?} ({result:?})"
    );
    assert_eq!(call(bystander).expect("bystander").0, 200);
    assert!(d.wait_quiet(Duration::from_secs(10)), "containers left");
}

#[test]
fn a_client_reading_to_eof_gets_it_when_the_handler_is_done() {
    let d = Daemon::start();
    let one = DeployOptions {
        warm: 1,
        ..Default::default()
    };
    let exits = d
        .deploy("noshutdown", &probe_image("noshutdown", &[]), &one)
        .ip;
    let lingers = d
        .deploy(
            "linger",
            &probe_image("linger", &["PROBE_SLEEP_MS=3000"]),
            &one,
        )
        .ip;
    for name in ["noshutdown", "linger"] {
        d.wait_for(name, Duration::from_secs(10), "a warm container", |i| {
            i.stats.warm_ready == 1
        });
    }
    // Answers and exits without a shutdown: the FIN goes with its exit.
    let (r, took) = timed_call(exits);
    assert_eq!(r.expect("answer").0, 200);
    assert!(took < Duration::from_millis(500), "EOF after {took:?}");
    // Answers, closes without a shutdown and stays 3 s: faasd's copy of
    // the connection must not hold the FIN back until the process ends.
    let (r, took) = timed_call(lingers);
    assert_eq!(r.expect("answer").0, 200);
    assert!(took < Duration::from_secs(1), "EOF after {took:?}");
}
