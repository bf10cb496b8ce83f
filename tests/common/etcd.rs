//! The tests' etcd: Debian's etcd-server in a network namespace of the
//! test, serving TLS and requiring client certificates, from a PKI made
//! here with `openssl` (a CA, etcd's certificate, the nodes' client
//! certificate, and a stranger's from another CA). Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::Netns;
use super::which;

/// Certificates and keys, PEM, in a directory of the test.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA; etcd's certificate for `etcd_ip`; a client certificate for
    /// the nodes (CN faasd); a stranger's client certificate signed by a
    /// CA of its own.
    pub fn new(etcd_ip: &str) -> Self {
        Self::for_etcd(&[etcd_ip])
    }

    /// As `new`, etcd's certificate good for each of `etcd_ips` (the
    /// members of a cluster).
    pub fn for_etcd(etcd_ips: &[&str]) -> Self {
        assert!(
            which("openssl").is_some(),
            "openssl not found: apt-get install -y openssl"
        );
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        pki.ca("ca");
        pki.ca("stranger-ca");
        pki.cert(
            "etcd",
            "ca",
            &format!(
                "subjectAltName={},IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth",
                etcd_ips
                    .iter()
                    .map(|ip| format!("IP:{ip}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        );
        pki.cert("faasd", "ca", "extendedKeyUsage=clientAuth");
        pki.cert("stranger", "stranger-ca", "extendedKeyUsage=clientAuth");
        pki
    }

    /// A CA and, for each of `names`, a server certificate for that DNS
    /// name (`NAME.pem`, `NAME.key`): what a function terminating TLS
    /// itself is given.
    pub fn web(names: &[&str]) -> Self {
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        pki.ca("ca");
        for name in names {
            pki.cert(
                name,
                "ca",
                &format!("subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth"),
            );
        }
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }

    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=faasd-test-{name}"),
        ]);
    }

    fn cert(&self, name: &str, ca: &str, extensions: &str) {
        let ext = format!("{name}.ext");
        std::fs::write(self.path(&ext), format!("{extensions}\n")).expect("extensions");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }

    /// faasd's flags for an etcd at `url` with this PKI.
    pub fn faasd_args(&self, url: &str) -> Vec<String> {
        let p = |n: &str| self.path(n).to_string_lossy().into_owned();
        vec![
            "--etcd".into(),
            url.into(),
            "--etcd-cafile".into(),
            p("ca.pem"),
            "--etcd-certfile".into(),
            p("faasd.pem"),
            "--etcd-keyfile".into(),
            p("faasd.key"),
        ]
    }
}

/// One etcd member at `https://IP:2379` in a namespace; killed on drop.
pub struct Etcd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    ns: String,
    ip: String,
    /// Its member name, its peer URL, and every member's (`--initial-cluster`).
    name: String,
    peer: String,
    members: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Etcd {
    pub fn start(ns: &Netns, ip: &str, pki: &Pki) -> Self {
        let peer = "http://127.0.0.1:2380".to_string();
        let mut e = Self::member(ns, ip, pki, "e1", &peer, &format!("e1={peer}"));
        e.spawn();
        e
    }

    /// A cluster of one member per address of `ips` (all in `ns`, peers
    /// on port 2380 of each), up and healthy.
    pub fn cluster(ns: &Netns, ips: &[&str], pki: &Pki) -> Vec<Etcd> {
        let peer = |ip: &str| format!("http://{ip}:2380");
        let members = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| format!("e{}={}", i + 1, peer(ip)))
            .collect::<Vec<_>>()
            .join(",");
        let mut all: Vec<Etcd> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| Self::member(ns, ip, pki, &format!("e{}", i + 1), &peer(ip), &members))
            .collect();
        // A member is healthy only once a quorum is up: start all first.
        for e in &mut all {
            e.launch();
        }
        for e in &all {
            e.wait_healthy();
        }
        all
    }

    fn member(ns: &Netns, ip: &str, pki: &Pki, name: &str, peer: &str, members: &str) -> Self {
        Etcd {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            ns: ns.0.clone(),
            ip: ip.to_string(),
            name: name.to_string(),
            peer: peer.to_string(),
            members: members.to_string(),
            ca: pki.path("ca.pem"),
            cert: pki.path("etcd.pem"),
            key: pki.path("etcd.key"),
            client_cert: pki.path("faasd.pem"),
            client_key: pki.path("faasd.key"),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}:2379", self.ip)
    }

    /// (Re)starts this member and waits until it is healthy.
    pub fn spawn(&mut self) {
        self.launch();
        self.wait_healthy();
    }

    fn launch(&mut self) {
        let etcd =
            which("etcd").expect("etcd not found: scripts/install-deps.sh installs etcd-server");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("log");
        let client = self.url();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg(etcd)
            .args(["--name", &self.name, "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &self.members])
            .arg("--cert-file")
            .arg(&self.cert)
            .arg("--key-file")
            .arg(&self.key)
            .arg("--trusted-ca-file")
            .arg(&self.ca)
            .arg("--client-cert-auth")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("etcd");
        self.child = Some(child);
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.curl(&["/health"]).is_ok_and(|b| b.contains("true")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not come up: {}", self.log());
    }

    /// curl against this etcd from its namespace, as a node (with the
    /// nodes' client certificate): the body, or curl's failure.
    pub fn curl(&self, args: &[&str]) -> Result<String, String> {
        let (path, rest) = args.split_first().expect("a path");
        let mut all: Vec<String> = vec![
            "--cacert".into(),
            self.ca.to_string_lossy().into_owned(),
            "--cert".into(),
            self.client_cert.to_string_lossy().into_owned(),
            "--key".into(),
            self.client_key.to_string_lossy().into_owned(),
        ];
        all.extend(rest.iter().map(|s| s.to_string()));
        all.push(format!("{}{path}", self.url()));
        curl_in(&self.ns, &all)
    }

    /// Puts `value` at `key` as a node could (v3 JSON gateway).
    pub fn put(&self, key: &str, value: &[u8]) {
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            base64(key.as_bytes()),
            base64(value)
        );
        let out = self.curl(&["/v3/kv/put", "-X", "POST", "-d", &body]);
        assert!(
            out.as_ref().is_ok_and(|b| b.contains("revision")),
            "put {key}: {out:?}"
        );
    }

    /// The value at `key`, as a node reads it.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let body = format!("{{\"key\":\"{}\"}}", base64(key.as_bytes()));
        let out = self
            .curl(&["/v3/kv/range", "-X", "POST", "-d", &body])
            .expect("range");
        let value = out.split("\"value\":\"").nth(1)?.split('"').next()?;
        Some(unbase64(value))
    }

    /// Whether this member leads its cluster now.
    pub fn leads(&self) -> bool {
        let Ok(status) = self.curl(&["/v3/maintenance/status", "-X", "POST", "-d", "{}"]) else {
            return false;
        };
        let field = |name: &str| {
            status
                .split(&format!("\"{name}\":\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(str::to_string)
        };
        field("member_id").is_some_and(|me| field("leader") == Some(me))
    }

    /// Compacts etcd's history up to its current revision; answers it.
    pub fn compact(&self) -> i64 {
        let out = self
            .curl(&["/v3/kv/range", "-X", "POST", "-d", "{\"key\":\"AA==\"}"])
            .expect("range");
        let revision: i64 = out
            .split("\"revision\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no revision in {out}"));
        let body = format!("{{\"revision\":\"{revision}\",\"physical\":true}}");
        let done = self.curl(&["/v3/kv/compaction", "-X", "POST", "-d", &body]);
        assert!(done.is_ok(), "compaction: {done:?}");
        revision
    }

    /// The process id (to kill -9 it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `curl -sS --max-time 5 ARGS` in namespace `ns`: the body, or what
/// curl said when it failed.
pub fn curl_in(ns: &str, args: &[String]) -> Result<String, String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["curl", "-sS", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "curl {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn file(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unbase64(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}
