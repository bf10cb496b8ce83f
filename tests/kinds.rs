//! Ordinary images as functions, unchanged: inetd-style programs
//! (`--stdio`), socket-activated servers (`--socket-activation`), plain
//! servers on a port (`--container-port`), the protocol spoken by handlers
//! in Python and C, and server-first protocols. Every image is built here
//! from this machine's own binaries (busybox-static, python3, gcc).

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use faasd::api::{DeployOptions, HandlerKind};
use faasd::image::build::{Entry, ImageSpec, Layer, Layout, RunConfig};

/// Names the container a script runs in by something no other container
/// can have: a random id kept in its own /tmp (kernel-assigned numbers,
/// a network namespace's inode say, are handed out again once freed).
const CONTAINER_ID: &str =
    "$([ -s /tmp/.container ] || cat /proc/sys/kernel/random/uuid > /tmp/.container; cat /tmp/.container)";

/// A busybox image: /bin/busybox, /bin/sh, a page at /www/index.html and
/// a CGI script at /www/cgi-bin/id naming the container (`CONTAINER_ID`),
/// the user it runs as and the client's port as the server saw it.
fn busybox_image(entrypoint: &[&str], user: &str) -> ImageSpec {
    let busybox =
        std::fs::read("/bin/busybox").expect("busybox-static (apt-get install busybox-static)");
    let cgi = format!(
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"container={CONTAINER_ID}\"\necho \"uid=$(id -u)\"\necho \"peer=$REMOTE_PORT\"\n"
    );
    let mut entries = vec![Entry::dir("bin"), Entry::exe("bin/busybox", busybox)];
    // This busybox runs its applets only by name.
    for applet in [
        "sh", "httpd", "readlink", "id", "grep", "tr", "sed", "sleep", "cat", "cut", "date",
    ] {
        entries.push(Entry::Symlink {
            path: format!("bin/{applet}"),
            target: "busybox".into(),
        });
    }
    entries.extend([
        Entry::dir("www"),
        Entry::file("www/index.html", "a static page\n"),
        Entry::dir("www/cgi-bin"),
        Entry::exe("www/cgi-bin/id", cgi),
        Entry::file(
            "etc/passwd",
            "root:x:0:0::/:/bin/sh\nweb:x:1000:1000::/www:/bin/sh\n",
        ),
        Entry::file("etc/group", "root:x:0:\nweb:x:1000:\n"),
    ]);
    ImageSpec {
        layers: vec![Layer {
            entries,
            gzip: false,
        }],
        config: RunConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            user: user.into(),
            ..Default::default()
        },
        layout: Layout::Both,
        tag: "busybox:test".into(),
    }
}

/// A static binary compiled here from a C file of the repository.
fn compiled(source: &str) -> Vec<u8> {
    // Compiled once a run (a static's TempDir would never be dropped,
    // and so never removed).
    static BUILT: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(binary) = built.get(source) {
        return binary.clone();
    }
    let binary = compile_static(source);
    built.insert(source.to_string(), binary.clone());
    binary
}

fn one_binary(name: &str, binary: Vec<u8>, user: &str) -> ImageSpec {
    ImageSpec {
        layers: vec![Layer {
            entries: vec![Entry::exe(name, binary)],
            gzip: false,
        }],
        config: RunConfig {
            entrypoint: vec![format!("/{name}")],
            user: user.into(),
            ..Default::default()
        },
        layout: Layout::Both,
        tag: format!("{name}:test"),
    }
}

fn kind(kind: HandlerKind, warm: u32) -> DeployOptions {
    DeployOptions {
        kind,
        warm,
        ..Default::default()
    }
}

fn get(ip: IpAddr, path: &str) -> (u16, String) {
    http_get(&ip.to_string(), path).unwrap_or_else(|e| panic!("GET {path} on {ip}: {e}"))
}

/// The body of a GET of `path` on port 80, and the client's own port.
fn get_from(ip: IpAddr, path: &str) -> (String, u16) {
    let mut s = TcpStream::connect((ip, 80)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let port = s.local_addr().expect("local address").port();
    // In one write (see `http_get_on`): the polling server below answers
    // what its first read got.
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (
        body.unwrap_or_else(|| panic!("no response: {text:?}")),
        port,
    )
}

#[test]
fn stdio_programs_serve_each_connection_from_a_fresh_container() {
    let d = Daemon::start();
    let httpd = d
        .deploy(
            "httpd",
            &busybox_image(&["/bin/busybox", "httpd", "-i", "-h", "/www"], ""),
            &kind(HandlerKind::Stdio, 2),
        )
        .ip;
    let (status, body) = get(httpd, "/index.html");
    assert_eq!((status, body.as_str()), (200, "a static page\n"));

    // Reads the request's head (its lines up to the blank one: leaving it
    // unread would make the close a reset), answers, ends.
    let script = format!(
        "while read -r l; do [ ${{#l}} -le 1 ] && break; done; \
         printf 'HTTP/1.0 200 OK\\r\\n\\r\\ncontainer=%s\\n' \"{CONTAINER_ID}\""
    );
    let sh = d
        .deploy(
            "script",
            &busybox_image(&["/bin/sh", "-c", &script], ""),
            &kind(HandlerKind::Stdio, 1),
        )
        .ip;
    let mut seen = HashSet::new();
    for _ in 0..2 {
        let (status, body) = get(sh, "/");
        let logs = String::from_utf8_lossy(&d.faas(&["logs", "script"], None).stdout).into_owned();
        assert_eq!(status, 200, "{body} {logs}");
        assert_eq!(kv(&body)["container"].len(), 36, "{body}");
        seen.insert(body);
    }
    assert_eq!(seen.len(), 2, "each connection its own container: {seen:?}");

    // The program starts before its connection: one that forks before it
    // touches stdin still has what it starts read the connection.
    let forks = "first=$(head -n 1 | tr -d '\\r'); \
                 printf 'HTTP/1.0 200 OK\\r\\n\\r\\nfirst=%s\\n' \"$first\"";
    let forked = d
        .deploy(
            "forks",
            &busybox_image(&["/bin/sh", "-c", forks], ""),
            &kind(HandlerKind::Stdio, 1),
        )
        .ip;
    let (status, body) = get(forked, "/forked");
    assert_eq!(
        (status, body.as_str()),
        (200, "first=GET /forked HTTP/1.1\n")
    );
    let probe = d
        .deploy(
            "probe",
            &probe_image("stdio", &[]),
            &kind(HandlerKind::Stdio, 1),
        )
        .ip;
    assert_eq!(call(probe).expect("probe").1, "probe ok\n");
    // A program that fails without a word is answered 502 by faasd; one
    // that ends before it even touches its connection, by faas-init.
    for (name, program, says) in [
        (
            "fails",
            &["/bin/sh", "-c", "sleep 0.3; exit 3"][..],
            "without answering its connection",
        ),
        (
            "quits",
            &["/bin/busybox", "sleep", "0.3"][..],
            "before taking its connection",
        ),
    ] {
        let ip = d
            .deploy(
                name,
                &busybox_image(program, ""),
                &kind(HandlerKind::Stdio, 0),
            )
            .ip;
        let (status, body) = http_get(&ip.to_string(), "/").unwrap_or_else(|e| {
            let logs = d.faas(&["logs", name], None).stdout;
            panic!("{name}: {e}: {}", String::from_utf8_lossy(&logs))
        });
        assert_eq!(status, 502, "{name}: {body}");
        assert!(body.contains(&format!("faas logs {name}")), "{body}");
        let logs = String::from_utf8_lossy(&d.faas(&["logs", name], None).stdout).into_owned();
        assert!(logs.contains(says), "{name}: {logs}");
    }
    for name in ["httpd", "script", "forks", "probe"] {
        let logs = String::from_utf8_lossy(&d.faas(&["logs", name], None).stdout).into_owned();
        assert!(
            !logs.contains("ahead of its connection"),
            "{name} was not started ahead: {logs}"
        );
    }
    assert!(
        d.wait_quiet_but_pool(Duration::from_secs(10), 5),
        "containers left"
    );
}

#[test]
fn socket_activated_servers_accept_many_connections_and_are_restarted() {
    let d = Daemon::start();
    let image = one_binary("activation", compiled("tests/fixtures/activation.c"), "");
    let ip = d
        .deploy("activated", &image, &kind(HandlerKind::SocketActivation, 2))
        .ip;
    let mut instances = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The first connections may wait in the backlog until a server runs.
    for i in 0..40 {
        let (status, body) = http_get_timeout(&ip.to_string(), "/", Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(status, 200, "{body}");
        let v = kv(&body);
        assert_eq!(v["name"], "activated", "LISTEN_FDNAMES");
        instances.insert(v["instance"].clone());
    }
    assert!(Instant::now() < deadline);
    assert!(
        (1..=2).contains(&instances.len()),
        "40 connections through the 2 long-lived servers: {instances:?}"
    );
    // Kill one server from outside: the other serves on, and the pool
    // starts a replacement.
    let victims = eventually(Duration::from_secs(10), "two servers", || {
        let running = d.runc_containers();
        if running.len() >= 2 {
            Ok(running)
        } else {
            Err(running)
        }
    });
    assert_eq!(victims.len(), 2, "{victims:?}");
    // A container the runtime is still creating has no pid file yet.
    let pid_file = d.bundles_dir().join(&victims[0]).join("pid");
    let pid: i32 = eventually(Duration::from_secs(10), "the server's pid file", || {
        std::fs::read_to_string(&pid_file)
            .map_err(|e| e.to_string())
            .and_then(|p| p.trim().parse().map_err(|e| format!("{p:?}: {e}")))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    // Dead, not dying: a server killed inside accept() takes the
    // connection it just accepted with it (as any server would).
    wait_until(
        Duration::from_secs(5),
        "the killed server to be gone",
        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
    );
    for i in 0..20 {
        let (status, _) = http_get_timeout(&ip.to_string(), "/", Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("request {i} after the kill: {e}"));
        assert_eq!(status, 200);
    }
    d.wait_replaced(&victims[0], 2, Duration::from_secs(10));
}

#[test]
fn plain_servers_on_a_port_serve_single_use_and_reused() {
    let d = Daemon::start();
    let httpd = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"];
    let once = d
        .deploy(
            "port-once",
            &busybox_image(&httpd, ""),
            &kind(HandlerKind::ContainerPort(8080), 1),
        )
        .ip;
    assert_eq!(get(once, "/index.html"), (200, "a static page\n".into()));
    let first = get(once, "/cgi-bin/id");
    let second = get(once, "/cgi-bin/id");
    assert_eq!(first.0, 200, "{}", first.1);
    assert_ne!(
        kv(&first.1)["container"],
        kv(&second.1)["container"],
        "a fresh container each"
    );
    // The server's own accept returned the client's connection.
    let (body, client_port) = get_from(once, "/cgi-bin/id");
    assert_eq!(kv(&body)["peer"], client_port.to_string(), "{body}");
    // A server that waits for its listener to be readable before it
    // accepts (selectors: poll) is woken, and its accept gets the client,
    // address included.
    let polls = d
        .deploy(
            "port-polls",
            &python_image_of(POLLING_SERVER.as_bytes().to_vec(), "selectors, socket"),
            &kind(HandlerKind::ContainerPort(8080), 1),
        )
        .ip;
    for _ in 0..2 {
        let (body, client_port) = get_from(polls, "/");
        assert_eq!(body, format!("peer={client_port}\n"));
    }
    for name in ["port-once", "port-polls"] {
        let log = String::from_utf8_lossy(&d.faas(&["logs", name], None).stdout).into_owned();
        assert!(!log.contains("relaying instead"), "{name}: {log}");
    }

    let reused = DeployOptions {
        reuse: true,
        ..kind(HandlerKind::ContainerPort(8080), 1)
    };
    let ip = d
        .deploy("port-reuse", &busybox_image(&httpd, ""), &reused)
        .ip;
    // Sequential connections with room between them (the relay has to
    // see the last one closed before its container is free again, which
    // can take tens of milliseconds on a loaded machine; sooner, faasd
    // rightly scales out).
    let nets: HashSet<String> = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(150));
            kv(&get(ip, "/cgi-bin/id").1)["container"].clone()
        })
        .collect();
    assert_eq!(nets.len(), 1, "one reused container: {nets:?}");
    // The server accepted the client's own connection: nothing relayed it.
    let (body, client_port) = get_from(ip, "/cgi-bin/id");
    assert_eq!(kv(&body)["peer"], client_port.to_string(), "{body}");

    // Many at once through a server that forks per connection: the relay
    // must stay within the container's pids limit, and a full backlog
    // (busybox asks for 9) must cost a retry, not a lost connection.
    let failures: Vec<String> = (0..48)
        .map(|_| {
            std::thread::spawn(move || {
                (0..10)
                    .filter_map(|_| match http_get(&ip.to_string(), "/index.html") {
                        Ok((200, _)) => None,
                        other => Some(format!("{other:?}")),
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of 480 failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let log = d.faas(&["logs", "port-reuse"], None);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        !log.contains("panicked") && !log.contains("relaying instead"),
        "faas-init broke under load or could not take the bind:\n{log}"
    );

    // Reused without a warm pool: containers start as connections come,
    // and faas-init relays each connection it is handed.
    let relayed = DeployOptions {
        reuse: true,
        ..kind(HandlerKind::ContainerPort(8080), 0)
    };
    let ip = d
        .deploy("port-relayed", &busybox_image(&httpd, ""), &relayed)
        .ip;
    for _ in 0..3 {
        let (body, client_port) = get_from(ip, "/cgi-bin/id");
        let seen = kv(&body);
        assert_eq!(seen["uid"], "0", "{body}");
        assert_ne!(seen["peer"], client_port.to_string(), "relayed: {body}");
    }
}

#[test]
fn a_server_slow_to_listen_is_waited_for_and_one_that_never_does_is_a_502() {
    let d = Daemon::start();
    let slow = d
        .deploy(
            "slow",
            &busybox_image(
                &[
                    "/bin/sh",
                    "-c",
                    "sleep 1; exec /bin/busybox httpd -f -p 8080 -h /www",
                ],
                "",
            ),
            &kind(HandlerKind::ContainerPort(8080), 0),
        )
        .ip;
    // One that never listens cannot be deployed: its first container
    // says why (the test daemon's --connect-timeout is 3 s).
    let refused = d
        .client()
        .deploy(
            "never",
            &kind(HandlerKind::ContainerPort(8080), 0),
            image_bytes(&busybox_image(&["/bin/sh", "-c", "sleep 3600"], "")).as_slice(),
        )
        .expect_err("a server that never listens");
    assert!(refused.to_string().contains("is not up"), "{refused}");
    let logs = String::from_utf8_lossy(&d.faas(&["logs", "never"], None).stdout).into_owned();
    assert!(logs.contains("nothing listened on port 8080"), "{logs}");

    // One that takes its connection and hangs is answered 504 at its
    // --timeout (faasd takes the connection back from it to say so).
    let hangs = d
        .deploy(
            "hangs",
            &busybox_image(
                &["/bin/sh", "-c", "sleep 3600 | /bin/busybox nc -l -p 8080"],
                "",
            ),
            &DeployOptions {
                timeout_secs: 2,
                ..kind(HandlerKind::ContainerPort(8080), 0)
            },
        )
        .ip;
    let t0 = Instant::now();
    let (status, body) = get(hangs, "/");
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("faas logs hangs"), "{body}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    // One that listens at its deploy and stops doing so for later
    // containers: each such connection is a 502 within the wait.
    let from = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 4)
        .unwrap_or_default();
    let script = format!(
        "if [ $(date +%s) -ge {from} ]; then sleep 3600; fi; exec /bin/busybox httpd -f -p 8080 -h /www"
    );
    let never = d
        .deploy(
            "never",
            &busybox_image(&["/bin/sh", "-c", &script], ""),
            &kind(HandlerKind::ContainerPort(8080), 0),
        )
        .ip;
    let other = d.deploy("other", &probe_image("hello", &[]), &opts()).ip;

    let t0 = Instant::now();
    let (status, body) = get(slow, "/index.html");
    assert_eq!((status, body.as_str()), (200, "a static page\n"));
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );

    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        < from
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let t0 = Instant::now();
    let (status, _) = get(never, "/");
    // The test daemon's --connect-timeout is 3 s.
    assert_eq!(status, 502);
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_eq!(call(other).expect("others unaffected").0, 200);
    let logs = String::from_utf8_lossy(&d.faas(&["logs", "never"], None).stdout).into_owned();
    assert!(logs.contains("nothing listened on port 8080"), "{logs}");

    // Reused with a warm pool, the server is handed the listener at its
    // bind: one that never binds ends its container with the reason.
    let never_reused = DeployOptions {
        reuse: true,
        ..kind(HandlerKind::ContainerPort(8080), 1)
    };
    d.deploy(
        "never-reused",
        &busybox_image(&["/bin/sh", "-c", "sleep 3600"], ""),
        &never_reused,
    );
    let t0 = Instant::now();
    let logs = loop {
        let logs = d.faas(&["logs", "never-reused"], None).stdout;
        let logs = String::from_utf8_lossy(&logs).into_owned();
        if logs.contains("nothing bound port 8080") || t0.elapsed() > Duration::from_secs(10) {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(logs.contains("nothing bound port 8080"), "{logs}");
    assert_eq!(call(other).expect("others unaffected").0, 200);
}

#[test]
fn every_kind_runs_sandboxed_as_the_image_user() {
    let d = Daemon::start();
    let check = "while read -r l; do [ ${#l} -le 1 ] && break; done; \
                 printf 'HTTP/1.0 200 OK\\r\\n\\r\\n'; echo uid=$(id -u); \
                 if echo x > /.faas-init 2>/dev/null; then echo init=writable; else echo init=read-only; fi; \
                 if (exec 3<>/proc/1/mem) 2>/dev/null; then echo init_mem=open; else echo init_mem=denied; fi; \
                 grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t' | sed 's/:/=/'";
    let stdio = d
        .deploy(
            "sb-stdio",
            &busybox_image(&["/bin/sh", "-c", check], "1000"),
            &kind(HandlerKind::Stdio, 0),
        )
        .ip;
    let v = kv(&get(stdio, "/").1);
    assert_eq!(v["uid"], "1000");
    assert_eq!(v["init"], "read-only");
    // faas-init (pid 1, the program's parent, same user) is not dumpable:
    // its memory is out of the program's reach.
    assert_eq!(v["init_mem"], "denied");
    assert_eq!(v["CapEff"], "0000000000000000");
    assert_eq!(v["NoNewPrivs"], "1");
    assert_eq!(v["Seccomp"], "2");

    let port = d
        .deploy(
            "sb-port",
            &busybox_image(
                &["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
                "1000",
            ),
            &kind(HandlerKind::ContainerPort(8080), 0),
        )
        .ip;
    assert_eq!(kv(&get(port, "/cgi-bin/id").1)["uid"], "1000");

    let image = one_binary(
        "activation",
        compiled("tests/fixtures/activation.c"),
        "1000",
    );
    let activated = d
        .deploy(
            "sb-activated",
            &image,
            &kind(HandlerKind::SocketActivation, 1),
        )
        .ip;
    let (status, body) =
        http_get_timeout(&activated.to_string(), "/", Duration::from_secs(10)).expect("activated");
    assert_eq!(status, 200);
    let v = kv(&body);
    assert_eq!(v["uid"], "1000");
    assert_ne!(v["init_writable"], "yes");
}

#[test]
fn server_first_protocols_reach_their_client_at_once() {
    let d = Daemon::start();
    let cold = d
        .deploy("banner-cold", &probe_image("banner", &[]), &opts())
        .ip;
    let warm = d
        .deploy(
            "banner-warm",
            &probe_image("banner", &[]),
            &DeployOptions {
                warm: 1,
                ..Default::default()
            },
        )
        .ip;
    // Reuse would hold connections back until the client speaks; the
    // deploy says the server speaks first.
    let reused = d
        .deploy(
            "banner-reuse",
            &probe_image("banner", &[]),
            &DeployOptions {
                warm: 1,
                reuse: true,
                server_first: true,
                ..Default::default()
            },
        )
        .ip;
    d.wait_for(
        "banner-warm",
        Duration::from_secs(10),
        "a warm container",
        |i| i.stats.warm_ready == 1,
    );
    d.wait_for(
        "banner-reuse",
        Duration::from_secs(10),
        "a warm container",
        |i| i.stats.warm_ready == 1,
    );
    for (ip, limit) in [
        (warm, Duration::from_millis(100)),
        (reused, Duration::from_millis(100)),
        (cold, Duration::from_secs(2)),
    ] {
        let t0 = Instant::now();
        let mut s = TcpStream::connect((ip, 80)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut banner = [0u8; 17];
        s.read_exact(&mut banner).expect("banner");
        let took = t0.elapsed();
        assert_eq!(&banner, b"220 probe ready\r\n");
        assert!(took < limit, "banner from {ip} after {took:?}");
        s.write_all(b"HELO x\r\n").expect("helo");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("reply");
        assert_eq!(reply, "250 ok\r\n");
    }
}

#[test]
fn handlers_in_python_and_c_speak_the_protocol() {
    let d = Daemon::start();
    let c = d
        .deploy(
            "in-c",
            &one_binary("handler", compiled("examples/c/handler.c"), ""),
            &opts(),
        )
        .ip;
    assert_eq!(get(c, "/"), (200, "Hello from C!\n".into()));
    let py = d.deploy("in-python", &python_image(), &opts()).ip;
    assert_eq!(get(py, "/"), (200, "Hello from Python!\n".into()));
}

#[test]
fn bad_kind_combinations_are_refused_before_anything_changes() {
    let d = Daemon::start();
    let image = image_bytes(&probe_image("hello", &[]));
    for args in [
        &["--stdio", "--reuse"][..],
        &["--container-port", "0"],
        &["--container-port", "8080", "--socket-activation"],
        &["--socket-activation", "--warm", "0"],
    ] {
        let mut all = vec!["deploy", "bad"];
        all.extend_from_slice(args);
        let out = d.faas(&all, Some(&image));
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // The API refuses the same, with a 400.
    let refused = d
        .client()
        .deploy(
            "bad",
            &DeployOptions {
                reuse: true,
                kind: HandlerKind::Stdio,
                ..Default::default()
            },
            image.as_slice(),
        )
        .expect_err("stdio and reuse");
    assert!(refused.to_string().contains("400"), "{refused}");
    assert!(d.client().inspect("bad").is_err(), "nothing deployed");
}

/// A FROM-scratch image of this machine's Python (Debian's python3.11:
/// the binary, the libraries it loads and the standard-library files the
/// handler imports) running examples/python/handler.py.
/// Waits for its listener to be readable, then accepts (non-blocking),
/// and answers with the client's port as accept reported it.
const POLLING_SERVER: &str = "\
import selectors, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 8080))
s.listen()
s.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(s, selectors.EVENT_READ)
while True:
    for _ in sel.select():
        try:
            c, addr = s.accept()
        except BlockingIOError:
            continue
        c.setblocking(True)
        if c.recv(4096):
            c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\npeer=%d\\n' % addr[1])
        c.close()
";

fn python_image() -> ImageSpec {
    let handler = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/handler.py");
    python_image_of(std::fs::read(handler).expect("handler.py"), "socket, sys")
}

/// An image of this machine's Python running `script` as /handler.py,
/// with the modules `imports` needs.
fn python_image_of(script: Vec<u8>, imports: &str) -> ImageSpec {
    let python = PathBuf::from("/usr/bin/python3.11");
    assert!(
        python.exists(),
        "install python3-minimal (Debian's python3.11)"
    );
    let mut files: Vec<PathBuf> = vec![python.clone()];
    let ldd = Command::new("ldd").arg(&python).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split("=>")
            .nth(1)
            .unwrap_or(line)
            .split_whitespace()
            .next()
            .unwrap_or_default();
        if path.starts_with('/') {
            files.push(PathBuf::from(path));
        }
    }
    let modules = Command::new(&python)
        .args([
            "-S",
            "-I",
            "-c",
            &format!("import {imports}, sys\nfor m in list(sys.modules.values()):\n    f = getattr(m, '__file__', None)\n    if f: print(f)"),
        ])
        .output()
        .expect("python");
    files.extend(
        String::from_utf8_lossy(&modules.stdout)
            .lines()
            .map(PathBuf::from),
    );
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    for file in files {
        let rel = file.to_string_lossy().trim_start_matches('/').to_string();
        if !seen.insert(rel.clone()) {
            continue;
        }
        // Parents first, as image layers have them.
        let mut parent = PathBuf::new();
        for part in Path::new(&rel)
            .parent()
            .into_iter()
            .flat_map(|p| p.components())
        {
            parent.push(part);
            let dir = parent.to_string_lossy().into_owned();
            if seen.insert(format!("{dir}/")) {
                entries.push(Entry::dir(&dir));
            }
        }
        // Through symlinks: the image gets the bytes at the path the loader asks for.
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        entries.push(Entry::exe(&rel, data));
    }
    entries.push(Entry::file("handler.py", script));
    ImageSpec {
        layers: vec![Layer {
            entries,
            gzip: false,
        }],
        config: RunConfig {
            entrypoint: vec!["/usr/bin/python3.11".into(), "-S".into(), "-I".into()],
            cmd: vec!["/handler.py".into()],
            ..Default::default()
        },
        layout: Layout::Both,
        tag: "python-handler:test".into(),
    }
}
