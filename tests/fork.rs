//! `--fork`: every connection served in a fresh child of a zygote held in
//! a pool container, with its own user, mount, pid, ipc, uts and network
//! namespaces and its own writable paths. A hostile program plants what
//! it can on one connection; neither a connection served meanwhile nor a
//! later one finds any of it, and nothing of it outlives its connection.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use faasd::api::{DeployOptions, HandlerKind};
use faasd::image::build::{Entry, ImageSpec, Layer, Layout, RunConfig};

/// Marks the background process the hostile program leaves running.
const LINGER: &str = "31337.5";

/// busybox with the applets the scripts use (this busybox runs them only
/// by name), a page at /www/index.html, and `script` as /bin/handler.
fn busybox_image(entrypoint: &[&str], script: &str) -> ImageSpec {
    let busybox =
        std::fs::read("/bin/busybox").expect("busybox-static (apt-get install busybox-static)");
    let mut entries = vec![Entry::dir("bin"), Entry::exe("bin/busybox", busybox)];
    for applet in [
        "sh", "httpd", "readlink", "id", "ls", "cat", "sleep", "nc", "cut", "wc", "hostname",
        "echo", "tr",
    ] {
        entries.push(Entry::Symlink {
            path: format!("bin/{applet}"),
            target: "busybox".into(),
        });
    }
    entries.extend([
        Entry::exe("bin/handler", script.to_string()),
        Entry::exe("bin/shm", shm_binary()),
        Entry::dir("www"),
        Entry::file("www/index.html", "a static page\n"),
        Entry::dir("www/cgi-bin"),
        Entry::exe(
            "www/cgi-bin/ns",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho pidns=$(readlink /proc/self/ns/pid) start=$(cut -d' ' -f22 /proc/1/stat)\n",
        ),
    ]);
    ImageSpec {
        layers: vec![Layer {
            entries,
            gzip: false,
        }],
        config: RunConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
        layout: Layout::Both,
        tag: "busybox:fork".into(),
    }
}

/// tests/fixtures/shm.c, compiled here.
fn shm_binary() -> Vec<u8> {
    compile_static("tests/fixtures/shm.c")
}

/// `/plant` leaves a file in /tmp and in /, a process in the background,
/// a loopback listener, an abstract Unix socket listener, SysV shared
/// memory and a host name, then holds its connection a while; `/look`
/// reports what it finds of all that, and who it is.
const HOSTILE: &str = r#"#!/bin/sh
read -r method path rest
while read -r l; do [ ${#l} -le 1 ] && break; done
printf 'HTTP/1.0 200 OK\r\n\r\n'
case "$path" in
/plant)
    echo planted > /tmp/planted
    echo planted > /planted
    sleep LINGER &
    nc -l -p 7777 -e /bin/cat 2>/dev/null &
    nc -l -s 127.0.0.1 -p 7778 2>/dev/null &
    /bin/shm make >/dev/null
    hostname planted 2>/dev/null
    echo planted=yes
    sleep 0.2
    if echo hi | nc -w 1 127.0.0.1 7777 >/dev/null 2>&1; then echo loopback=reached; else echo loopback=unreachable; fi
    echo shm=$(/bin/shm)
    [ -e /planted ] && echo root=planted || echo root=clean
    sleep 1.3
    ;;
*)
    echo tmp=$(ls /tmp | tr '\n' ' ')
    [ -e /planted ] && echo root=planted || echo root=clean
    if echo hi | nc -w 1 127.0.0.1 7777 >/dev/null 2>&1; then echo loopback=reached; else echo loopback=unreachable; fi
    echo shm=$(/bin/shm)
    echo host=$(hostname)
    echo procs=$(ls -d /proc/[0-9]* | wc -l)
    echo pidns=$(readlink /proc/self/ns/pid)
    echo start=$(cut -d' ' -f22 /proc/1/stat)
    [ -S /control.sock ] && echo control=socket || echo control=none
    echo cgroup=$(ls /.faas-cgroup 2>/dev/null | wc -l)
    ;;
esac
"#;

fn get(ip: IpAddr, path: &str) -> String {
    let mut s = TcpStream::connect((ip, 80)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_else(|| panic!("no response: {text:?}"))
}

fn forked(kind: HandlerKind) -> DeployOptions {
    DeployOptions {
        kind,
        fork: true,
        ..Default::default()
    }
}

/// A `--fork --stdio` function of busybox running `script`.
fn deploy_script(d: &Daemon, name: &str, script: &str, options: DeployOptions) -> IpAddr {
    d.deploy(name, &busybox_image(&["/bin/handler"], script), &options)
        .ip
}

/// Waits up to `within` for `done`, failing with `what` after that.
fn wait_for(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Host processes whose command line holds `word` (ours: the marker is
/// this test's own).
fn processes_with(word: &str) -> usize {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(word))
        })
        .count()
}

#[test]
fn a_hostile_connection_leaves_nothing_for_the_next_or_a_concurrent_one() {
    require_host();
    let d = Daemon::start();
    // Each child's own writable root (the default), and the image's root
    // read-only with only the writable paths its own.
    for read_only in [false, true] {
        hostile_on(&d, read_only);
    }
}

fn hostile_on(d: &Daemon, read_only: bool) {
    let script = HOSTILE.replace("LINGER", LINGER);
    let options = DeployOptions {
        read_only,
        ..forked(HandlerKind::Stdio)
    };
    let ip = deploy_script(d, "hostile", &script, options);
    let clean = kv(&get(ip, "/look"));
    assert_eq!(clean["tmp"].trim(), "", "{clean:?}");
    assert_eq!(clean["root"], "clean");
    assert_eq!(clean["host"], "hostile");

    let planting = std::thread::spawn(move || get(ip, "/plant"));
    // While the planter holds its connection, with all it left running.
    wait_for(Duration::from_secs(10), "the planter never ran", || {
        processes_with(LINGER) > 0
    });
    let during = kv(&get(ip, "/look"));
    let planted = planting.join().expect("planter");
    // What the others must not see, the planter itself does.
    let planted = kv(&planted);
    assert_eq!(planted["planted"], "yes", "{planted:?}");
    assert_eq!(planted["loopback"], "reached", "{planted:?}");
    assert_eq!(planted["shm"], "1", "{planted:?}");
    let root = if read_only { "clean" } else { "planted" };
    assert_eq!(planted["root"], root, "{planted:?}");
    let after = kv(&get(ip, "/look"));
    for seen in [&during, &after] {
        assert_eq!(seen["tmp"].trim(), "", "{seen:?}");
        assert_eq!(seen["root"], "clean", "{seen:?}");
        assert_eq!(seen["loopback"], "unreachable", "{seen:?}");
        assert_eq!(seen["shm"], "0", "{seen:?}");
        assert_eq!(seen["host"], "hostile", "{seen:?}");
        // Neither faasd's control socket for the zygote nor its cgroup.
        assert_eq!(seen["control"], "none", "{seen:?}");
        assert_eq!(seen["cgroup"], "0", "{seen:?}");
        // Its init (the child), the shell, and what the shell runs for
        // this line: none of the planter's (its shell, sleep, two nc).
        assert!(
            seen["procs"].parse::<u32>().expect("procs") <= 5,
            "{seen:?}"
        );
    }
    // Each connection a fresh child: its own pid namespace, its own init.
    // (The kernel gives a freed namespace's number out again: a sandbox
    // is its namespace and when its first process started.)
    let sandbox =
        |m: &std::collections::HashMap<String, String>| (m["pidns"].clone(), m["start"].clone());
    assert_ne!(sandbox(&during), sandbox(&after));
    assert_ne!(sandbox(&clean), sandbox(&during));
    assert_ne!(sandbox(&clean), sandbox(&after));
    // Nothing of the planter outlives its connection.
    wait_for(
        Duration::from_secs(5),
        "the planter's background process outlived its connection",
        || processes_with(LINGER) == 0,
    );
    d.faas(&["rm", "hostile"], None);
}

/// Forks until the pids limit stops it (the forking shell then gives
/// up; what it started stays), and holds its connection.
const BOMB: &str = r#"#!/bin/sh
read -r method path rest
while read -r l; do [ ${#l} -le 1 ] && break; done
printf 'HTTP/1.0 200 OK\r\n\r\n'
case "$path" in
/bomb)
    ( while :; do sleep 4242.5 & done ) 2>/dev/null &
    read -r forever
    ;;
*)
    echo served=yes
    ;;
esac
"#;

#[test]
fn a_fork_bomb_in_one_child_is_stopped_and_the_others_are_served() {
    require_host();
    let d = Daemon::start();
    let options = DeployOptions {
        timeout_secs: 4,
        ..forked(HandlerKind::Stdio)
    };
    let ip = deploy_script(&d, "bomb", BOMB, options);
    let bomber = std::thread::spawn(move || {
        let mut s = TcpStream::connect((ip, 80)).expect("connect");
        s.write_all(b"GET /bomb HTTP/1.0\r\n\r\n").expect("request");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    });
    wait_for(Duration::from_secs(10), "the bomb never went off", || {
        processes_with("4242.5") >= 50
    });
    // Its own pids limit (64 with its shell and faas-init) stops it...
    std::thread::sleep(Duration::from_millis(300));
    let held = processes_with("4242.5");
    assert!((50..64).contains(&held), "the bomb holds {held} processes");
    // ...and the container has room for the others meanwhile.
    for _ in 0..5 {
        assert_eq!(kv(&get(ip, "/"))["served"], "yes");
    }
    // At its timeout the bomb's child is killed, and all it started.
    let answer = bomber.join().expect("bomber");
    assert!(answer.starts_with("HTTP/1.0 200 OK"), "{answer}");
    wait_for(
        Duration::from_secs(5),
        "the bomb outlived its timeout",
        || processes_with("4242.5") == 0,
    );
}

#[test]
fn a_faasd_killed_while_children_serve_leaves_nothing_and_serves_again() {
    require_host();
    let mut d = Daemon::start();
    let script = HOSTILE.replace("LINGER", LINGER);
    let ip = deploy_script(&d, "crashing", &script, forked(HandlerKind::Stdio));
    let planting = std::thread::spawn(move || {
        let mut s = TcpStream::connect((ip, 80)).expect("connect");
        s.write_all(b"GET /plant HTTP/1.0\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
    });
    wait_for(Duration::from_secs(10), "the planter never ran", || {
        processes_with(LINGER) > 0
    });
    d.crash();
    d.spawn();
    let _ = planting.join();
    wait_for(
        Duration::from_secs(10),
        "a child outlived the faasd that served it",
        || processes_with(LINGER) == 0,
    );
    let seen = kv(&get(ip, "/look"));
    assert_eq!(seen["tmp"].trim(), "", "{seen:?}");
    assert_eq!(seen["root"], "clean", "{seen:?}");
}

#[test]
fn a_childs_program_holds_what_a_containers_would_and_no_more() {
    require_host();
    let d = Daemon::start();
    let ip = d
        .deploy(
            "fork-probe",
            &probe_image("inspect", &[]),
            &forked(HandlerKind::ControlSocket),
        )
        .ip;
    let ask = || {
        let (status, body) = call(ip).expect("probe");
        assert_eq!(status, 200, "{body}");
        kv(&body)
    };
    let first = ask();
    let v = ask();
    // Docker's default set, as in a fresh container (tests/contract.rs).
    assert_eq!(v["CapEff"], "00000000a00405fb");
    assert_eq!(v["NoNewPrivs"], "1");
    assert_eq!(v["Seccomp"], "2");
    assert_eq!(v["raw_socket"], "denied(1)", "no NET_RAW");
    assert_eq!(v["bind80"], "ok");
    assert_eq!(v["chown_other"], "ok");
    assert_eq!(v["setuid_unmapped"], "denied(22)");
    // The zygote's powers are not the child's.
    assert_eq!(v["mount"], "denied(1)", "the child's seal");
    assert_eq!(v["unshare_user"], "denied(1)");
    // Its own pid namespace: the child (faas-init) and the program.
    assert_eq!(v["procs"], "2", "{v:?}");
    assert_eq!(first["rootfs_write"], "ok");
    assert_eq!(v["rootfs_seen"], "false", "the first child's root is gone");
    assert_ne!(
        (&first["pidns"], &first["init_start"]),
        (&v["pidns"], &v["init_start"])
    );
    assert!(!v["init_start"].is_empty());
}

#[test]
fn every_kind_but_activation_forks_and_reuse_and_activation_are_refused() {
    require_host();
    let d = Daemon::start();
    let page = "a static page\n";
    let httpd = d
        .deploy(
            "fork-port",
            &busybox_image(
                &["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
                "",
            ),
            &forked(HandlerKind::ContainerPort(8080)),
        )
        .ip;
    for _ in 0..3 {
        assert_eq!(get(httpd, "/index.html"), page);
    }
    let (a, b) = (get(httpd, "/cgi-bin/ns"), get(httpd, "/cgi-bin/ns"));
    assert!(a.starts_with("pidns=pid:["), "{a}");
    assert_ne!(a, b, "each connection its own child");
    let hello = d
        .deploy(
            "fork-hello",
            &hello_image(),
            &forked(HandlerKind::ControlSocket),
        )
        .ip;
    for _ in 0..3 {
        let (status, body) = call(hello).expect("hello");
        assert_eq!(status, 200, "{body}");
    }
    let image = image_bytes(&hello_image());
    for (flags, says) in [
        (&["--fork", "--reuse"][..], "exclude each other"),
        (&["--fork", "--socket-activation"][..], "exclude each other"),
    ] {
        let mut args = vec!["deploy", "refused"];
        args.extend(flags);
        let out = d.faas(&args, Some(&image));
        assert!(!out.status.success(), "{flags:?} deployed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flags:?}: {err}");
    }
    let inspect = d.faas(&["inspect", "fork-hello"], None);
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
    assert_eq!(info["options"]["fork"], true);
    // The zygotes' counters reach inspect and /metrics (read every 250 ms).
    let deadline = Instant::now() + Duration::from_secs(5);
    let served = loop {
        let out = d.faas(&["inspect", "fork-hello"], None);
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
        let served = info["stats"]["fork_children_served"].as_u64().unwrap_or(0);
        if served >= 3 || Instant::now() > deadline {
            assert_eq!(info["stats"]["fork_children_alive"], 0, "{info}");
            break served;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(served >= 3, "children served: {served}");
    let (status, metrics) = d.tcp_client().raw("GET", "/metrics", b"").expect("scrape");
    assert_eq!(status, 200);
    let starts: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("faas_fork_starts_total{function=\"fork-hello\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no fork starts for fork-hello: {metrics}"));
    assert!(starts >= 3.0, "{starts}");
    let timed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("faas_fork_seconds_count{function=\"fork-hello\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(timed >= 3.0, "fork start latencies recorded: {timed}");
}

/// Serves `n` connections one after another, 15 ms apart (so that two
/// sandboxes never start in one 10 ms clock tick: their namespaces'
/// numbers are given out again); their answers and p50.
fn sequential(ip: IpAddr, n: usize) -> (Vec<std::collections::HashMap<String, String>>, Duration) {
    let mut took = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(15));
        let t0 = Instant::now();
        let (status, body) = call(ip).expect("request");
        took.push(t0.elapsed());
        assert_eq!(status, 200, "{body}");
        answers.push(kv(&body));
    }
    took.sort();
    (answers, took[n / 2])
}

/// What both SDKs must show: one server started once, every connection
/// in a fresh child of it (its own pid namespace and init), quickly.
fn pre_initialized(answers: &[std::collections::HashMap<String, String>], p50: Duration) {
    let servers: std::collections::HashSet<&String> =
        answers.iter().map(|a| &a["server"]).collect();
    // A pool of two zygotes: at most two servers, each started once.
    assert!(servers.len() <= 2, "{servers:?}");
    let sandboxes: std::collections::HashSet<(&String, &String)> = answers
        .iter()
        .map(|a| (&a["pidns"], &a["init_start"]))
        .collect();
    assert_eq!(sandboxes.len(), answers.len(), "a fresh sandbox each");
    for a in answers {
        assert!(!a["init_start"].is_empty());
        // The holder (its init) and the handler's child: nothing else.
        assert!(a["procs"].parse::<u32>().expect("procs") <= 3, "{a:?}");
    }
    assert!(
        p50 < Duration::from_millis(100),
        "p50 {p50:?}: the 300 ms start is paid once, not per connection"
    );
}

#[test]
fn a_python_handler_starts_once_and_forks_per_connection() {
    require_host();
    let d = Daemon::start();
    let sdk = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/faas_fork.py"),
    )
    .expect("faas_fork.py");
    let slow = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/slow_start.py"),
    )
    .expect("slow_start.py");
    let image = common::stock::python(
        &[("/app/faas_fork.py", &sdk), ("/app/slow_start.py", &slow)],
        RunConfig {
            cmd: vec!["python3".into(), "/app/slow_start.py".into()],
            working_dir: "/app".into(),
            env: vec!["PATH=/usr/bin:/bin".into()],
            ..Default::default()
        },
        "python-fork:test",
    );
    let ip = d
        .deploy("py-fork", &image, &forked(HandlerKind::ControlSocket))
        .ip;
    let (answers, p50) = sequential(ip, 20);
    pre_initialized(&answers, p50);
    let randoms: std::collections::HashSet<&String> =
        answers.iter().map(|a| &a["random"]).collect();
    assert_eq!(
        randoms.len(),
        answers.len(),
        "random is reseeded in each child"
    );
    println!("MEASURE python_fork_p50_ms={:.2}", p50.as_secs_f64() * 1e3);
}

#[test]
fn a_rust_handler_starts_once_and_forks_per_connection() {
    require_host();
    let d = Daemon::start();
    let ip = d
        .deploy(
            "rs-fork",
            &probe_image("forkserve", &["PROBE_SLEEP_MS=300", "PROBE_INSPECT=1"]),
            &forked(HandlerKind::ControlSocket),
        )
        .ip;
    let (answers, p50) = sequential(ip, 20);
    pre_initialized(&answers, p50);
    let v = &answers[answers.len() - 1];
    // Sealed as a level-1 child is: a container's capabilities, no more.
    assert_eq!(v["CapEff"], "00000000a00405fb");
    assert_eq!(v["mount"], "denied(1)");
    assert_eq!(v["unshare_user"], "denied(1)");
    assert_eq!(v["Seccomp"], "2");
    assert_eq!(v["rootfs_seen"], "false", "the first child's root is gone");
    println!("MEASURE rust_fork_p50_ms={:.2}", p50.as_secs_f64() * 1e3);
}
