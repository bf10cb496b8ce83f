//! Stock images as users have them (`tests/common/stock.rs`: Debian's
//! packages, configuration untouched), deployed the way the README says,
//! on every kind they fit, and called with real clients (curl, Python's
//! http.client).

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use faasd::api::DeployOptions;

/// `curl -s -i http://IP/PATH`: status and body.
fn curl(ip: IpAddr, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .arg(format!("http://{ip}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn deployed(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn stock_nginx_serves_on_port_80_single_use_and_reused() {
    let d = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("nginx.tar");
    std::fs::write(&image, image_bytes(&common::stock::nginx())).expect("image");
    let image = image.to_string_lossy().into_owned();
    // The README's line: docker save nginx | faas deploy web --container-port 80
    deployed(&d.faas(
        &[
            "deploy",
            "web",
            "--container-port",
            "80",
            "--archive",
            &image,
        ],
        None,
    ));
    let ip = d.client().inspect("web").expect("inspect").ip;
    for _ in 0..3 {
        let (status, text) = curl(ip, "/");
        let logs = || String::from_utf8_lossy(&d.faas(&["logs", "web"], None).stdout).into_owned();
        assert_eq!(status, 200, "{text}\n{}\n{}", d.log_text(), logs());
        assert!(text.contains("Welcome to nginx"), "{text}");
        assert!(text.contains("Server: nginx"), "{text}");
    }
    let logs = String::from_utf8_lossy(&d.faas(&["logs", "web"], None).stdout).into_owned();
    assert!(!logs.contains("emerg"), "{logs}");
    // Reused, from a warm pool.
    deployed(&d.faas(&["update", "web", "--reuse", "--warm", "2"], None));
    for _ in 0..20 {
        let (status, text) = curl(ip, "/");
        assert_eq!(status, 200, "{text}");
    }
    // No kind named: the image's EXPOSE 80 decides, and says so.
    let text = deployed(&d.faas(&["deploy", "site", "--archive", &image], None));
    assert!(
        text.contains("serving port 80, from the image's EXPOSE"),
        "{text}"
    );
    let site = d.client().inspect("site").expect("inspect");
    assert_eq!(
        site.options.kind,
        faasd::api::HandlerKind::ContainerPort(80)
    );
    let (status, _) = curl(site.ip, "/");
    assert_eq!(status, 200);
}

const WSGI: &str = "def app(environ, start_response):\n    body = b'hello from gunicorn\\n'\n    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n    return [body]\n";

const ASGI: &str = "async def app(scope, receive, send):\n    if scope['type'] != 'http':\n        return\n    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})\n    await send({'type': 'http.response.body', 'body': b'hello from uvicorn\\n'})\n";

fn python_image(cmd: &[&str], user: &str, exposed: &[&str]) -> faasd::image::build::ImageSpec {
    common::stock::python(
        &[
            ("/app/app.py", WSGI),
            ("/app/asgi.py", ASGI),
            ("/srv/index.html", "hello from http.server\n"),
        ],
        faasd::image::build::RunConfig {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            working_dir: "/srv".into(),
            user: user.into(),
            exposed: exposed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        "python-stock:test",
    )
}

/// Python's own client, as a user's script would call the function.
fn http_client(ip: IpAddr) -> String {
    let script = format!(
        "import http.client\nc = http.client.HTTPConnection('{ip}', 80, timeout=10)\nc.request('GET', '/')\nr = c.getresponse()\nprint(r.status, r.read().decode().strip())"
    );
    let out = Command::new("/usr/bin/python3.11")
        .args(["-c", &script])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn python_servers_run_as_their_readmes_say() {
    let d = Daemon::start();
    // python3 -m http.server, EXPOSE 8000, USER nobody, no flag at all.
    let image = python_image(
        &["/usr/bin/python3", "-m", "http.server", "8000"],
        "nobody",
        &["8000/tcp"],
    );
    let patch = faasd::api::OptionsPatch {
        warm: Some(1),
        ..Default::default()
    };
    let info = d
        .client()
        .deploy("static", &patch, image_bytes(&image).as_slice())
        .expect("deploy static");
    assert_eq!(
        info.notes,
        vec!["serving port 8000, from the image's EXPOSE; --control-socket for faasd's protocol"]
    );
    assert_eq!(
        info.options.kind,
        faasd::api::HandlerKind::ContainerPort(8000)
    );
    let logs =
        |name: &str| String::from_utf8_lossy(&d.faas(&["logs", name], None).stdout).into_owned();
    assert_eq!(
        http_client(info.ip),
        "200 hello from http.server",
        "{}\n{}",
        logs("static"),
        d.log_text()
    );
    // gunicorn as its documentation says for socket activation: with the
    // descriptor named (fd://3), and with none (LISTEN_FDS).
    for (name, cmd) in [
        (
            "gunicorn-fd",
            &[
                "/usr/bin/python3",
                "-m",
                "gunicorn",
                "--bind",
                "fd://3",
                "--chdir",
                "/app",
                "app:app",
            ][..],
        ),
        (
            "gunicorn",
            &[
                "/usr/bin/python3",
                "-m",
                "gunicorn",
                "--chdir",
                "/app",
                "app:app",
            ][..],
        ),
        (
            "uvicorn",
            &[
                "/usr/bin/python3",
                "-m",
                "uvicorn",
                "--fd",
                "3",
                "--app-dir",
                "/app",
                "asgi:app",
            ][..],
        ),
    ] {
        let image = python_image(cmd, "nobody", &[]);
        let options = DeployOptions {
            warm: 1,
            kind: faasd::api::HandlerKind::SocketActivation,
            ..DeployOptions::default()
        };
        let ip = d.deploy(name, &image, &options).ip;
        let want = if name == "uvicorn" {
            "200 hello from uvicorn"
        } else {
            "200 hello from gunicorn"
        };
        for _ in 0..3 {
            let got = http_client(ip);
            let logs = String::from_utf8_lossy(&d.faas(&["logs", name], None).stdout).into_owned();
            assert_eq!(got, want, "{name}\n{logs}");
        }
    }
    let _ = Duration::ZERO;
}

/// A socket-activated server that serves one request and ends; from
/// `$FROM` (seconds since the epoch) on, one that ends at once.
const ONE_SHOT_SERVER: &str = "import os, socket, sys, time\nif time.time() >= float(os.environ['FROM']):\n    sys.exit('failing from now on')\nl = socket.socket(fileno=3)\nc, _ = l.accept()\nhead = b''\nwhile b'\\r\\n\\r\\n' not in head:\n    head += c.recv(4096)\nc.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nserved\\n')\nc.close()\n";

/// A socket-activated server that loads for 2.5 s (on the CPU) and fails.
const SLOW_TO_FAIL: &str = "import sys, time\nend = time.time() + 2.5\nwhile time.time() < end:\n    pass\nsys.exit('no app after all')\n";

#[test]
fn crash_loops_are_bounded_and_visible() {
    let d = Daemon::start();
    // A server that cannot come up fails its deploy, with the reason and
    // its own words in faas logs.
    let image = python_image(
        &[
            "/usr/bin/python3",
            "-m",
            "gunicorn",
            "--chdir",
            "/app",
            "nosuch:app",
        ],
        "nobody",
        &[],
    );
    let options = DeployOptions {
        warm: 1,
        kind: faasd::api::HandlerKind::SocketActivation,
        ..DeployOptions::default()
    };
    let refused = d
        .client()
        .deploy("broken", &options, image_bytes(&image).as_slice())
        .expect_err("gunicorn without its app");
    assert!(refused.to_string().contains("is not up"), "{refused}");
    let logs = String::from_utf8_lossy(&d.faas(&["logs", "broken"], None).stdout).into_owned();
    assert!(logs.contains("No module named 'nosuch'"), "{logs}");
    assert!(logs.contains(" faasd | "), "{logs}");

    // One still loading (busy on the CPU, as an import is on a loaded
    // host) a second after it got the listener, that fails after that:
    // not up either (faasd once took a second's life for up).
    let slow = python_image(&["/usr/bin/python3", "-c", SLOW_TO_FAIL], "nobody", &[]);
    let refused = d
        .client()
        .deploy("slow", &options, image_bytes(&slow).as_slice())
        .expect_err("a server failing after 2.5 s of loading");
    assert!(refused.to_string().contains("is not up"), "{refused}");

    // Pool containers that start failing after the deploy: crash-looping,
    // the restarts counted, clients told so at once (503).
    let (late, from) = probe_later("crash", Duration::from_secs(4));
    let ip = d.deploy("later", &late, &DeployOptions::default()).ip;
    sleep_until(from);
    for _ in 0..2 {
        assert_eq!(call(ip).expect("the warm ones").0, 200);
    }
    let info = d.wait_for("later", Duration::from_secs(20), "crash-looping", |i| {
        i.state == "crash-looping"
    });
    assert!(info.restarts >= 3, "{info:?}");
    assert!(
        info.last_error
            .as_deref()
            .is_some_and(|e| e.contains("exited (exit code 3)")),
        "{:?}",
        info.last_error
    );
    let t0 = std::time::Instant::now();
    let (status, body) = call(ip).expect("answered");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("keep failing; faas logs later"), "{body}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());

    // A socket-activated server that starts failing: clients hear 503
    // from faasd instead of waiting in the backlog.
    let mut image = python_image(&["/usr/bin/python3", "/app/server.py"], "nobody", &[]);
    image.layers[0]
        .entries
        .push(faasd::image::build::Entry::file(
            "app/server.py",
            ONE_SHOT_SERVER,
        ));
    let bytes = image_bytes(&image);
    // Time enough for the deploy's first server to come up first.
    let from = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 10)
        .unwrap_or_default()
        .to_string();
    let mut options = options.clone();
    options.env.insert("FROM".into(), from.clone());
    let ip = d
        .client()
        .deploy("served-once", &options, bytes.as_slice())
        .expect("served-once")
        .ip;
    let from: u64 = from.parse().expect("from");
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        < from
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _) = call(ip).expect("the first server serves once");
    assert_eq!(status, 200);
    d.wait_for(
        "served-once",
        Duration::from_secs(20),
        "crash-looping",
        |i| i.state == "crash-looping",
    );
    std::thread::sleep(Duration::from_millis(500));
    let t0 = std::time::Instant::now();
    let (status, body) =
        http_get_timeout(&ip.to_string(), "/", Duration::from_secs(10)).expect("answered");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("servers are not up"), "{body}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}
