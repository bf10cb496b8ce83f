//! Many functions behind one address (`faasd --shared-listen`, `faas
//! deploy --host`): routed by the HTTP Host or the TLS server name, the
//! very socket handed over with every byte unread, driven by real
//! clients (curl, openssl s_client, Python's http.client and ssl, wrk).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use faasd::api::host::HostName;
use faasd::api::{DeployOptions, HandlerKind, SecretRef};
use faasd::image::build::RunConfig;

fn hosts(names: &[&str]) -> Vec<HostName> {
    names
        .iter()
        .map(|n| HostName::parse(n).expect("host name"))
        .collect()
}

/// An `echo` probe that says it is `who`, answering to `names`.
fn echo(d: &Daemon, who: &str, names: &[&str], warm: u32) -> faasd::api::FunctionInfo {
    let options = DeployOptions {
        warm,
        hosts: hosts(names),
        env: [("PROBE_NAME".to_string(), who.to_string())].into(),
        ..Default::default()
    };
    d.deploy(who, &probe_image("echo", &[]), &options)
}

/// The shared daemon of a test: faasd with one shared listener on a
/// free loopback port, and that address.
fn shared_daemon(extra: &[&str]) -> (Daemon, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = addr.to_string();
    let mut args = vec!["--shared-listen", listen.as_str()];
    args.extend_from_slice(extra);
    (Daemon::start_with(&args), addr)
}

/// curl's status and body (`-w` appends the status after the body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// curl to `name` on the shared address, resolved there.
fn curl_host(addr: SocketAddr, name: &str, path: &str) -> (u16, String) {
    let resolve = format!("{name}:{}:{}", addr.port(), addr.ip());
    let url = format!("http://{name}:{}{path}", addr.port());
    curl(&["--resolve", &resolve, &url])
}

/// Sends `bytes` as they are and reads the answer to its end.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(bytes).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metric(d: &Daemon, reason: &str) -> f64 {
    let (status, body) = d.tcp_client().raw("GET", "/metrics", b"").expect("scrape");
    assert_eq!(status, 200, "{body}");
    let want = format!("faas_shared_unrouted_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn hosts_route_plain_http_to_their_functions_and_strangers_hear_why() {
    let (d, addr) = shared_daemon(&["--default-host", "www"]);
    let api = echo(&d, "api", &["api.test"], 1);
    echo(&d, "www", &["*.example.test", "example.test"], 1);
    let port = addr.port();

    // curl, as a browser would name the host.
    let (status, body) = curl_host(addr, "api.test", "/x?y=1");
    assert_eq!(status, 200, "{body}");
    let got = kv(&body);
    assert_eq!(got["who"], "api", "{body}");
    assert_eq!(
        got["request"], "GET /x?y=1 HTTP/1.1",
        "the request reached it whole"
    );
    assert_eq!(got["host"], format!("api.test:{port}"));
    for (name, who) in [
        ("www.example.test", "www"),
        ("example.test", "www"),
        ("API.TEST", "api"),
    ] {
        let (status, body) = curl_host(addr, name, "/");
        assert_eq!(
            (status, kv(&body)["who"].as_str()),
            (200, who),
            "{name}: {body}"
        );
    }
    // Python's http.client with a Host of its own.
    let py = python(
        "import http.client,sys\n\
         c=http.client.HTTPConnection(sys.argv[1],int(sys.argv[2]),timeout=20)\n\
         c.request('GET','/py',headers={'Host':'api.test'})\n\
         r=c.getresponse();print(r.status);print(r.read().decode())",
        &[&addr.ip().to_string(), &port.to_string()],
    );
    assert!(py.starts_with("200\n") && py.contains("who=api"), "{py}");
    // The function still has its own address.
    let (status, body) = call(api.ip).expect("own address");
    assert_eq!((status, kv(&body)["who"].as_str()), (200, "api"));

    // RFC 9112: an absolute-form target names the host, not Host; HTTP/1.0
    // without Host names none (the default host takes it).
    let abs = raw(
        addr,
        b"GET http://api.test/abs HTTP/1.1\r\nHost: nope.test\r\nConnection: close\r\n\r\n",
    );
    assert!(
        abs.contains("who=api") && abs.contains("request=GET http://api.test/abs"),
        "{abs}"
    );
    let old = raw(addr, b"GET / HTTP/1.0\r\n\r\n");
    assert!(
        old.starts_with("HTTP/1.1 200") && old.contains("who=www"),
        "{old}"
    );

    // Strangers hear why, and nothing else changes.
    let before = metric(&d, "unknown_host");
    let (status, body) = curl_host(addr, "nobody.test", "/");
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("no function answers to host nobody.test"),
        "{body}"
    );
    let (status, _) = curl_host(addr, "a.b.example.test", "/");
    assert_eq!(status, 404, "a wildcard is one level deep");
    assert_eq!(metric(&d, "unknown_host"), before + 2.0);
    let nohost = raw(addr, b"GET / HTTP/1.1\r\n\r\n");
    assert!(
        nohost.starts_with("HTTP/1.1 400") && nohost.contains("without a Host"),
        "{nohost}"
    );
    let twice = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: api.test\r\nHost: www.example.test\r\n\r\n",
    );
    assert!(twice.starts_with("HTTP/1.1 400"), "{twice}");
    let mut huge = b"GET / HTTP/1.1\r\nHost: api.test\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 20_000));
    let big = raw(addr, &huge);
    assert!(big.starts_with("HTTP/1.1 431"), "{big}");
    assert!(metric(&d, "malformed") >= 2.0 && metric(&d, "too_large") >= 1.0);

    // wrk with a Host header: every request answered by api.
    if which("wrk").is_some() {
        let url = format!("http://{addr}/");
        let out = Command::new("wrk")
            .args(["-t2", "-c8", "-d2s", "-H", "Host: api.test", &url])
            .output()
            .expect("wrk");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && !text.contains("Non-2xx"), "{text}");
        let done: u64 = text
            .split_whitespace()
            .zip(text.split_whitespace().skip(1))
            .find(|(_, w)| *w == "requests")
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or(0);
        assert!(done > 50, "wrk: {text}");
    } else {
        eprintln!("skipping the wrk part: wrk not installed (apt-get install -y wrk)");
    }
    let info = d.client().inspect("api").expect("inspect");
    assert_eq!(info.options.hosts, hosts(&["api.test"]));
}

#[test]
fn a_name_is_held_by_one_function_and_every_kind_is_routed_or_refused() {
    let (d, addr) = shared_daemon(&[]);
    echo(&d, "holder", &["held.test", "*.wild.test"], 0);
    for names in ["held.test", "other.test,*.wild.test"] {
        let out = d.faas(
            &["deploy", "taker", "--host", names, "--warm", "0"],
            Some(&image_bytes(&probe_image("echo", &[]))),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{names}: {err}");
        assert!(err.contains("held by function holder"), "{err}");
    }
    assert!(d.client().inspect("taker").is_err(), "nothing deployed");
    let (status, body) = curl_host(addr, "held.test", "/");
    assert_eq!((status, kv(&body)["who"].as_str()), (200, "holder"));
    // Let go by an update, the name is free for another.
    let out = d.faas(&["update", "holder", "--host", "*.wild.test"], None);
    assert!(out.status.success(), "{out:?}");
    echo(&d, "taker", &["held.test"], 0);
    let (status, body) = curl_host(addr, "held.test", "/");
    assert_eq!(
        (status, kv(&body)["who"].as_str()),
        (200, "taker"),
        "{body}"
    );
    let (status, body) = curl_host(addr, "x.wild.test", "/");
    assert_eq!(
        (status, kv(&body)["who"].as_str()),
        (200, "holder"),
        "{body}"
    );
    // Gone with its function.
    d.client().remove("taker").expect("rm");
    assert_eq!(curl_host(addr, "held.test", "/").0, 404);

    // A socket-activated server accepts on its own listener: refused.
    let out = d.faas(
        &[
            "deploy",
            "act",
            "--socket-activation",
            "--warm",
            "1",
            "--host",
            "act.test",
        ],
        Some(&image_bytes(&hello_image())),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--socket-activation"),
        "{err}"
    );
    // The other kinds are served behind the shared address.
    let stdio = DeployOptions {
        warm: 1,
        kind: HandlerKind::Stdio,
        hosts: hosts(&["stdio.test"]),
        ..Default::default()
    };
    d.deploy("stdio", &probe_image("stdio", &[]), &stdio);
    let (status, body) = curl_host(addr, "stdio.test", "/");
    assert_eq!((status, body.as_str()), (200, "probe ok\n"));
    // Debian's nginx, stock config, reused: relayed its routed
    // connections instead of being handed the listener.
    let nginx = DeployOptions {
        warm: 1,
        reuse: true,
        kind: HandlerKind::ContainerPort(80),
        hosts: hosts(&["nginx.test"]),
        ..Default::default()
    };
    d.deploy("nginx", &common::stock::nginx(), &nginx);
    for _ in 0..3 {
        let (status, body) = curl_host(addr, "nginx.test", "/");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("Welcome to nginx"), "{body}");
    }
}

#[test]
fn concurrency_and_the_queue_deadline_hold_behind_a_shared_listener() {
    let (d, addr) = shared_daemon(&["--queue-timeout", "1"]);
    let options = DeployOptions {
        warm: 2,
        concurrency: 1,
        hosts: hosts(&["slow.test"]),
        env: [("PROBE_SLEEP_MS".to_string(), "2000".to_string())].into(),
        ..Default::default()
    };
    d.deploy("slow", &probe_image("slow", &[]), &options);
    // One takes the only slot for 2 s; the others wait for it, and are
    // told 503 once they have waited the queue's second.
    let started = Instant::now();
    let clients: Vec<_> = (0..3)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 100 }));
            std::thread::spawn(move || (curl_host(addr, "slow.test", "/"), started.elapsed()))
        })
        .collect();
    let mut answers: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    answers.sort_by_key(|((status, _), _)| *status);
    let statuses: Vec<u16> = answers.iter().map(|((s, _), _)| *s).collect();
    assert_eq!(statuses, [200, 503, 503], "{answers:?}");
    for ((_, body), took) in &answers[1..] {
        assert!(body.contains("concurrency limit"), "{body}");
        assert!(
            *took < Duration::from_millis(1900),
            "refused after {took:?}, before the slot freed"
        );
    }
    assert!(answers[0].1 >= Duration::from_secs(2), "{answers:?}");
}

/// Python's http.server on `port` terminating TLS with the certificate
/// and key it is given (TLS_CERT in the environment, TLS_KEY a secret),
/// answering who it is and the Host it was asked for, kept alive.
const TLS_SERVER: &str = r#"
import http.server, os, ssl, tempfile
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("who=%s\nhost=%s\n" % (os.environ["WHO"], self.headers.get("Host", ""))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
d = tempfile.mkdtemp()
open(d + "/c.pem", "w").write(os.environ["TLS_CERT"])
open(d + "/k.pem", "w").write(os.environ["TLS_KEY"])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(d + "/c.pem", d + "/k.pem")
srv = http.server.HTTPServer(("0.0.0.0", 8443), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

/// A ClientHello written a byte at a time (each its own segment), then
/// the handshake and a request finished over the same socket.
const SPLIT_HELLO: &str = r#"
import socket, ssl, sys, time
host, port, name, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname=name)
s = socket.create_connection((host, port), timeout=20)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()
for i in range(len(hello)):
    s.send(hello[i:i + 1])
    if i % 64 == 0:
        time.sleep(0.002)
def pump():
    data = out.read()
    if data:
        s.sendall(data)
while True:
    try:
        tls.do_handshake()
        pump()
        break
    except ssl.SSLWantReadError:
        pump()
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("closed during the handshake")
        inc.write(chunk)
tls.write(("GET /split HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % name).encode())
pump()
answer = b""
while True:
    try:
        answer += tls.read(65536)
    except ssl.SSLWantReadError:
        chunk = s.recv(65536)
        if not chunk:
            break
        inc.write(chunk)
    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
        break
    if b"\r\n\r\n" in answer and answer.endswith(b"\n") and b"host=" in answer:
        break
print(len(hello))
print(answer.decode())
"#;

/// Keeps one TLS connection to `name` and asks twice, the second time
/// with another Host: the connection stays with the function it was
/// routed to first.
const KEEP_ALIVE: &str = r#"
import http.client, ssl, sys
host, port, name, other, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
c = http.client.HTTPSConnection(name, port, context=ctx, timeout=20)
c.sock = ctx.wrap_socket(__import__("socket").create_connection((host, port)), server_hostname=name)
for h in (name, other):
    c.request("GET", "/", headers={"Host": h})
    r = c.getresponse()
    print(r.status, r.read().decode().replace("\n", " "))
"#;

/// A real ClientHello for an outer name no function holds, sent as it is
/// or with an `encrypted_client_hello` extension added (the lengths
/// fixed up); prints the first byte of what comes back: 22 a handshake
/// record (a function answered), 21 an alert (faasd refused).
const ECH_HELLO: &str = r#"
import socket, ssl, struct, sys
host, port, name, ech = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "ech"
ctx = ssl.create_default_context()
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname=name)
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
rec = bytearray(out.read())
if ech:
    extra = bytes([0xfe, 0x0d, 0, 4, 0, 1, 2, 3])
    body = rec[9:]
    at = 2 + 32
    at += 1 + body[at]
    at += 2 + struct.unpack(">H", body[at:at + 2])[0]
    at += 1 + body[at]
    ext_len = struct.unpack(">H", body[at:at + 2])[0]
    body[at:at + 2] = struct.pack(">H", ext_len + len(extra))
    body += extra
    hs = bytes([1]) + struct.pack(">I", len(body))[1:] + bytes(body)
    rec = bytes(rec[:3]) + struct.pack(">H", len(hs)) + hs
s = socket.create_connection((host, port), timeout=20)
s.sendall(rec)
print(s.recv(1)[0])
"#;

#[test]
fn tls_reaches_the_function_untouched_by_its_server_name() {
    if which("openssl").is_none() || which("curl").is_none() {
        eprintln!("skipping: openssl and curl are needed (apt-get install -y openssl curl)");
        return;
    }
    let names = ["a.tls.test", "b.tls.test"];
    let pki = common::etcd::Pki::web(&names);
    let ca = pki.path("ca.pem").to_string_lossy().into_owned();
    let (d, addr) = shared_daemon(&["--default-host", "a"]);
    let image = common::stock::python(
        &[("/app/tls.py", TLS_SERVER)],
        RunConfig {
            entrypoint: vec!["/usr/bin/python3".into(), "/app/tls.py".into()],
            ..Default::default()
        },
        "tls-echo:1",
    );
    for (who, name) in [("a", names[0]), ("b", names[1])] {
        let key = std::fs::read(pki.path(&format!("{name}.key"))).expect("key");
        let cert = std::fs::read_to_string(pki.path(&format!("{name}.pem"))).expect("cert");
        let secret = format!("key-{who}");
        d.client()
            .secret_create(&secret, &key, false)
            .expect("secret");
        let options = DeployOptions {
            warm: 2,
            kind: HandlerKind::ContainerPort(8443),
            hosts: hosts(&[name]),
            secrets: vec![SecretRef::parse(&format!("{secret}=TLS_KEY")).expect("secret ref")],
            env: [
                ("WHO".to_string(), who.to_string()),
                ("TLS_CERT".to_string(), cert),
            ]
            .into(),
            ..Default::default()
        };
        d.deploy(who, &image, &options);
    }
    let port = addr.port().to_string();
    let ip = addr.ip().to_string();

    // curl verifies the function's certificate for the name it asked.
    for (who, name) in [("a", names[0]), ("b", names[1])] {
        let resolve = format!("{name}:{port}:{ip}");
        let url = format!("https://{name}:{port}/");
        let (status, body) = curl(&["--cacert", &ca, "--resolve", &resolve, &url]);
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(kv(&body)["who"], who, "{body}");
    }
    // openssl s_client, its hello's server name only.
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            names[1],
        ])
        .args(["-CAfile", &ca, "-verify_return_error", "-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                names[1]
            )
            .as_bytes(),
        )
        .expect("request");
    let out = child.wait_with_output().expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("who=b"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A hello cut into 1-byte writes is routed all the same.
    let split = python(SPLIT_HELLO, &[&ip, &port, names[1], &ca]);
    assert!(
        split.contains("who=b") && split.contains("host=b.tls.test"),
        "{split}"
    );
    // Routed once: a kept-alive connection stays with its first function.
    let kept = python(KEEP_ALIVE, &[&ip, &port, names[0], names[1], &ca]);
    let lines: Vec<&str> = kept.lines().collect();
    assert_eq!(lines.len(), 2, "{kept}");
    assert!(lines[0].starts_with("200 who=a host=a.tls.test"), "{kept}");
    assert!(lines[1].starts_with("200 who=a host=b.tls.test"), "{kept}");

    // No server name: the default host's function answers (its
    // certificate is a's); an unknown one hears unrecognized_name.
    let nameless = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-noservername",
            "-CAfile",
            &ca,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&nameless.stdout);
    assert!(
        text.contains("CN = a.tls.test") || text.contains("CN=a.tls.test"),
        "{text}"
    );
    let before = metric(&d, "unknown_host");
    let unknown = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "c.tls.test",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    let err = String::from_utf8_lossy(&unknown.stderr).to_lowercase();
    assert!(
        !unknown.status.success() && err.contains("unrecognized name"),
        "{err}"
    );
    assert_eq!(metric(&d, "unknown_host"), before + 1.0);
    // A hello offering ECH, whose outer name nobody holds, goes to the
    // default host (a handshake record comes back); without ECH the same
    // hello is refused with an alert.
    let plain = python(ECH_HELLO, &[&ip, &port, "public.tls.test", "plain"]);
    assert_eq!(plain.trim(), "21", "an alert");
    let ech = python(ECH_HELLO, &[&ip, &port, "public.tls.test", "ech"]);
    assert_eq!(ech.trim(), "22", "the default function's ServerHello");
}

#[test]
fn slow_and_silent_clients_are_closed_after_the_header_timeout_and_stall_no_one() {
    let (d, addr) = shared_daemon(&["--header-timeout", "3"]);
    echo(&d, "fast", &["fast.test"], 2);
    let started = Instant::now();
    // Slowloris: a request line, then a header byte every 300 ms; and
    // clients that send nothing at all.
    let mut slow: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\nX-A: ").expect("start");
            s
        })
        .collect();
    let silent: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(2500) {
        for s in &mut slow {
            let _ = s.write_all(b"a");
        }
        let t = Instant::now();
        let (status, body) = curl_host(addr, "fast.test", "/");
        assert_eq!((status, kv(&body)["who"].as_str()), (200, "fast"), "{body}");
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        worst < Duration::from_secs(1),
        "served in {worst:?} at worst beside slowloris"
    );
    // Each is closed by the deadline (3 s, with the kernel's second of
    // deferral for the silent ones), whatever it still trickles.
    let all = slow
        .into_iter()
        .map(|s| ("slow", s))
        .chain(silent.into_iter().map(|s| ("silent", s)));
    for (what, mut s) in all {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf);
        let closed = match &n {
            Ok(0) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        };
        assert!(closed, "{what}: {n:?}");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "closed after {took:?}");
    assert!(metric(&d, "timeout") >= 150.0, "every one counted");
}

#[test]
fn a_thousand_names_on_one_listener() {
    let (d, addr) = shared_daemon(&[]);
    let per = 250;
    for f in 0..4 {
        let names: Vec<String> = (0..per).map(|i| format!("h{}.f{f}.test", i)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        echo(&d, &format!("f{f}"), &refs, 1);
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..24 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let (f, i) = (seed % 4, (seed >> 8) % per);
        let name = format!("h{i}.f{f}.test");
        let (status, body) = curl_host(addr, &name, "/");
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(kv(&body)["who"], format!("f{f}"), "{name}");
        assert_eq!(kv(&body)["host"], format!("{name}:{}", addr.port()));
    }
    assert_eq!(curl_host(addr, &format!("h{per}.f0.test"), "/").0, 404);
}

#[test]
fn a_wildcard_shared_address_shares_the_functions_port() {
    // Functions on their own addresses at port P, the shared listener on
    // 0.0.0.0:P: each address's connections still reach its function.
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let port_flag = port.to_string();
    let d = Daemon::start_with(&["--shared-listen", &listen, "--port", &port_flag]);
    let own = echo(&d, "own", &["own.test"], 1);
    let (status, body) = http_get(&format!("{}:{port}", own.ip), "/").expect("own address");
    assert_eq!((status, kv(&body)["who"].as_str()), (200, "own"));
    let shared = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, body) = curl_host(shared, "own.test", "/");
    assert_eq!((status, kv(&body)["who"].as_str()), (200, "own"), "{body}");
    let (status, _) = curl_host(shared, "nobody.test", "/");
    assert_eq!(status, 404);
}
