//! The cluster trusts no one unauthenticated. Three nodes in namespaces of
//! their own and an etcd serving TLS that requires client certificates
//! (in a router namespace, 198.18.0.1). A stranger without the etcd
//! certificate reads and writes nothing. Someone with it (a stolen
//! certificate, an etcd operator) still cannot make a node run an image
//! or hand a function a secret: nodes apply only records a node signed
//! with the cluster token. And an archive address planted in etcd gets a
//! one-archive credential, never the token.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::time::Duration;

use common::bird::wait_until;
use common::cluster::router_sysctl;
use common::etcd::{curl_in, file, Etcd, Pki};
use common::netns::{link, Netns};
use common::*;
use faasd::api::DeployOptions;
use faasd::cluster::keys::Spec;
use faasd::cluster::seal::Seal;
use sha2::{Digest, Sha256};

const ETCD: &str = "198.18.0.1";
const POOL: &str = "198.18.100.0/24";
const TOKEN: &str = "trust-test-token-5f1c0a9e7d3b";

/// Fields drop in order: faasd before its namespace.
struct Node {
    faasd: Daemon,
    addr: String,
    ns: Netns,
}

struct Sim {
    nodes: Vec<Node>,
    etcd: Etcd,
    router: Netns,
    pki: Pki,
    _token: tempfile::TempDir,
}

impl Sim {
    fn start() -> Self {
        let router = Netns::new("trouter");
        // Nodes reach each other through it; a new namespace forwards
        // only if the host does.
        router_sysctl(&router, "net.ipv4.ip_forward=1");
        router.ip(&["addr", "add", &format!("{ETCD}/32"), "dev", "lo"]);
        let pki = Pki::new(ETCD);
        let etcd = Etcd::start(&router, ETCD, &pki);
        let token = tempfile::tempdir().expect("tempdir");
        let token_file = token.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
        let nodes = (0..3)
            .map(|i| {
                let ns = Netns::new("tnode");
                let router_side = format!("198.18.1.{}", 4 * i + 2);
                let addr = format!("198.18.1.{}", 4 * i + 1);
                link(
                    &router,
                    &format!("{router_side}/30"),
                    &ns,
                    &format!("{addr}/30"),
                );
                ns.ip(&["route", "add", "198.18.0.0/23", "via", &router_side]);
                let listen = format!("{addr}:8080");
                let mut args = pki.faasd_args(&etcd.url());
                args.extend(
                    [
                        "--ip-pool",
                        POOL,
                        "--node-name",
                        &format!("n{}", i + 1),
                        "--listen",
                        &listen,
                        "--advertise-url",
                        &format!("http://{listen}"),
                        "--token-file",
                        &file(&token_file),
                    ]
                    .map(str::to_string),
                );
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Node {
                    faasd: Daemon::start_in(&ns.0, &args),
                    addr,
                    ns,
                }
            })
            .collect();
        Sim {
            nodes,
            etcd,
            router,
            pki,
            _token: token,
        }
    }

    fn context(&self) -> String {
        let mut out = format!("etcd:\n{}\n", tail(&self.etcd.log(), 10));
        for (i, n) in self.nodes.iter().enumerate() {
            out += &format!("--- n{} faasd:\n{}\n", i + 1, tail(&n.faasd.log_text(), 30));
        }
        out
    }

    fn served_everywhere(&self, ip: IpAddr) {
        wait_until(
            &format!("{ip} served by every node"),
            Duration::from_secs(60),
            || {
                self.nodes
                    .iter()
                    .all(|n| n.ns.run(move || call(ip)).is_ok_and(|(s, _)| s == 200))
            },
            || self.context(),
        );
    }

    /// curl from the router's namespace (where a stranger near etcd is).
    fn curl(&self, args: &[&str]) -> Result<String, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        curl_in(&self.router.0, &args)
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A peer that answers every request 404, and hands over what the first
/// one said.
fn fake_peer(ns: &Netns, addr: &str) -> std::sync::mpsc::Receiver<String> {
    let (path, addr) = (format!("/run/netns/{}", ns.0), addr.to_string());
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (heard_tx, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("netns");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let listener = TcpListener::bind(&addr).expect("bind fake peer");
        let _ = ready_tx.send(());
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            let _ = heard_tx.send(String::from_utf8_lossy(&head).into_owned());
        }
    });
    ready.recv().expect("fake peer up");
    heard
}

#[test]
fn the_cluster_trusts_no_one_unauthenticated() {
    let sim = Sim::start();
    for n in &sim.nodes {
        n.faasd
            .client()
            .secret_create("dbpass", b"hunter2", false)
            .expect("secret on every node");
    }
    let web = sim.nodes[0]
        .faasd
        .deploy("web", &hello_image(), &DeployOptions::default());
    sim.served_everywhere(web.ip);

    // A stranger near etcd, without the nodes' client certificate: no
    // TLS session, so nothing read or written; a certificate from another
    // CA fares no better; plain HTTP gets no data.
    let ca = file(&sim.pki.path("ca.pem"));
    let everything = format!(
        "{{\"key\":\"{}\",\"range_end\":\"{}\"}}",
        common::etcd::base64(b"/faasd/"),
        common::etcd::base64(b"/faasd0")
    );
    let range = format!("https://{ETCD}:2379/v3/kv/range");
    let (stranger_cert, stranger_key) = (
        file(&sim.pki.path("stranger.pem")),
        file(&sim.pki.path("stranger.key")),
    );
    let stranger = [
        vec!["--cacert", &ca, &range, "-X", "POST", "-d", &everything],
        vec![
            "--cacert",
            &ca,
            "--cert",
            &stranger_cert,
            "--key",
            &stranger_key,
            &range,
            "-X",
            "POST",
            "-d",
            &everything,
        ],
    ];
    for args in &stranger {
        let got = sim.curl(args);
        assert!(got.is_err(), "a stranger read etcd: {got:?}");
    }
    let plain = format!("http://{ETCD}:2379/v3/kv/range");
    let got = sim.curl(&[&plain, "-X", "POST", "-d", &everything]);
    assert!(
        got.as_ref().map_or(true, |body| !body.contains("kvs")),
        "plain HTTP read etcd: {got:?}"
    );
    let intruder = format!(
        "{{\"key\":\"{}\",\"value\":\"eA==\"}}",
        common::etcd::base64(b"/faasd/functions/intruder")
    );
    let put = format!("https://{ETCD}:2379/v3/kv/put");
    assert!(sim
        .curl(&["--cacert", &ca, &put, "-X", "POST", "-d", &intruder])
        .is_err());
    assert_eq!(sim.etcd.get("/faasd/functions/intruder"), None);

    // Someone with the etcd certificate writes records no node signed: a
    // new function that takes the secret, and web's record changed. No
    // node acts on either; web serves on as it was.
    let stored = sim.etcd.get("/faasd/functions/web").expect("web's record");
    let real: Spec = Seal::new(TOKEN)
        .open_spec("/faasd/functions/web", &stored)
        .expect("nodes sign their records");
    let mut evil = real.clone();
    evil.name = faasd::api::name::FunctionName::parse("evil").expect("name");
    evil.ip = "198.18.100.250".parse().expect("ip");
    evil.options.secrets = vec![faasd::api::SecretRef::parse("dbpass").expect("secret")];
    sim.etcd.put(
        "/faasd/functions/evil",
        &faasd::cluster::keys::encode(&evil),
    );
    let mut changed = real.clone();
    changed.options.warm = 7;
    sim.etcd.put(
        "/faasd/functions/web",
        &Seal::new("a guessed token").seal_spec(&changed),
    );
    wait_until(
        "every node refusing both records",
        Duration::from_secs(10),
        || {
            sim.nodes.iter().all(|n| {
                n.faasd
                    .log_text()
                    .matches("refusing a cluster record")
                    .count()
                    >= 2
            })
        },
        || sim.context(),
    );
    for n in &sim.nodes {
        assert!(
            n.faasd.client().inspect("evil").is_err(),
            "{}",
            sim.context()
        );
        let served = n.faasd.client().inspect("web").expect("web");
        assert_eq!(served.options.warm, web.options.warm, "web as it was");
        let log = n.faasd.log_text();
        assert!(
            log.contains("not signed by a node of this cluster"),
            "{log}"
        );
        assert!(log.contains("its signature does not match"), "{log}");
    }
    // A node logs the refusal before its report reaches etcd and the
    // other nodes' view of it.
    wait_until(
        "the refusal reported in web's node statuses",
        Duration::from_secs(10),
        || {
            sim.nodes[1]
                .faasd
                .client()
                .inspect("web")
                .is_ok_and(|info| {
                    info.nodes
                        .iter()
                        .any(|s| s.error.as_deref().is_some_and(|e| e.contains("signature")))
                })
        },
        || sim.context(),
    );
    // No node writes over a record it cannot trust; an operator removes
    // such records through any node, and deploys again.
    let over = sim.nodes[0].faasd.client().deploy(
        "web",
        &DeployOptions::default(),
        image_bytes(&hello_image()).as_slice(),
    );
    assert!(
        matches!(&over, Err(faasd::client::ClientError::Api { message, .. }) if message.contains("faas rm it")),
        "{over:?}"
    );
    for name in ["evil", "web"] {
        let out = sim.nodes[2].faasd.faas(&["rm", name], None);
        let key = format!("/faasd/functions/{name}");
        assert_eq!(sim.etcd.get(&key), None, "{out:?}");
    }
    let web = sim.nodes[0]
        .faasd
        .deploy("web", &hello_image(), &DeployOptions::default());
    sim.served_everywhere(web.ip);

    // An archive address planted in etcd: the node fetching asks it first
    // (its key sorts first), with a credential for that archive only; the
    // token never leaves; the archive comes from a real peer.
    let image = probe_image("hello", &[]);
    let bytes = image_bytes(&image);
    let digest = sha256(&bytes);
    let heard = fake_peer(&sim.router, &format!("{ETCD}:8099"));
    sim.etcd.put(
        &format!("/faasd/archives/{digest}/aaa-fake"),
        format!("http://{ETCD}:8099").as_bytes(),
    );
    let web2 = sim.nodes[0]
        .faasd
        .client()
        .deploy("web2", &DeployOptions::default(), bytes.as_slice())
        .expect("deploy web2");
    sim.served_everywhere(web2.ip);
    let request = heard
        .recv_timeout(Duration::from_secs(10))
        .expect("the planted address was asked");
    let lower = request.to_ascii_lowercase();
    assert!(!request.contains(TOKEN), "the token leaked: {request}");
    assert!(!lower.contains("authorization"), "{request}");
    assert!(lower.contains("x-faas-peer: node=n"), "{request}");
    // What it got is good for that archive only, and for nothing else.
    let credential = request
        .lines()
        .find_map(|l| {
            l.strip_prefix("x-faas-peer: ")
                .or_else(|| l.strip_prefix("X-Faas-Peer: "))
        })
        .expect("credential")
        .trim()
        .to_string();
    let web_digest = real.archive.clone();
    let n1 = &sim.nodes[0].addr;
    let header = format!("x-faas-peer: {credential}");
    let other = format!("http://{n1}:8080/v1/archives/{web_digest}");
    let got = sim.curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &header,
        &other,
    ]);
    assert_eq!(got.as_deref(), Ok("401"), "another archive");
    let list = format!("http://{n1}:8080/v1/functions");
    let got = sim.curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &header,
        &list,
    ]);
    assert_eq!(got.as_deref(), Ok("401"), "the API");
}
