//! A real image registry for the tests: Debian's `docker-registry`
//! (distribution 2.8) on a loopback port, plain HTTP or TLS with a CA made
//! here and htpasswd basic auth; `registry_proxy.py` in front of it for
//! the bearer-token flow and for damaged blobs; images pushed to it with
//! `skopeo copy`, as CI pushes them. Everything is a child of the test,
//! killed by pid on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faasd::image::build::{write_image, ImageSpec};

use super::{free_port, which};

/// Fails with the fix when the tools are missing.
pub fn require_tools() {
    let missing: Vec<&str> = ["docker-registry", "skopeo", "openssl", "python3"]
        .into_iter()
        .filter(|t| which(t).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "the registry tests need {}: apt-get install -y docker-registry skopeo openssl python3",
        missing.join(", ")
    );
}

/// TLS material made for one test: a CA, and a server certificate for
/// 127.0.0.1 signed by it.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn make(dir: &Path) -> Self {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("running openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=faasd test registry CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// One `docker-registry serve` and its storage.
pub struct Registry {
    pub host: String,
    pub dir: PathBuf,
    child: Child,
    tls: Option<PathBuf>,
    login: Option<(String, String)>,
    /// The network namespace it listens in (`ip netns` name), if not ours.
    netns: Option<String>,
}

/// `program` run in `netns` (nsenter keeps the cgroup mounts `ip netns
/// exec` would hide), or here.
fn command(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl Registry {
    /// A registry at `127.0.0.1:PORT`; with `pki`, HTTPS only; with
    /// `login`, htpasswd basic auth for that user.
    pub fn start(dir: &Path, pki: Option<&Pki>, login: Option<(&str, &str)>) -> Self {
        let host = format!("127.0.0.1:{}", free_port());
        Self::start_at(dir, None, host, pki, login)
    }

    /// A registry at `host` (ADDR:PORT) in the network namespace `netns`
    /// (a cluster test's router), pushed to from there too.
    pub fn start_at(
        dir: &Path,
        netns: Option<&str>,
        host: String,
        pki: Option<&Pki>,
        login: Option<(&str, &str)>,
    ) -> Self {
        std::fs::create_dir_all(dir).expect("registry dir");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.join("data").display()
        );
        if let Some(pki) = pki {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                pki.cert.display(),
                pki.key.display()
            ));
        }
        if let Some((user, password)) = login {
            let hash = Command::new("python3")
                .args([
                    "-W",
                    "ignore",
                    "-c",
                    "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
                    password,
                ])
                .output()
                .expect("bcrypt");
            let hash = String::from_utf8_lossy(&hash.stdout).trim().to_string();
            assert!(
                hash.starts_with("$2"),
                "no bcrypt hash from python3: {hash:?}"
            );
            std::fs::write(dir.join("htpasswd"), format!("{user}:{hash}\n")).expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: faasd-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).expect("config");
        let log = std::fs::File::create(dir.join("registry.log")).expect("log");
        let child = command(netns, "docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let registry = Self {
            host,
            dir: dir.to_path_buf(),
            child,
            tls: pki.map(|p| p.ca.clone()),
            login: login.map(|(u, p)| (u.to_string(), p.to_string())),
            netns: netns.map(str::to_string),
        };
        registry.wait_up();
        registry
    }

    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let up = command(self.netns.as_deref(), "curl")
                .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("{}://{}/v2/", self.scheme(), self.host))
                .output()
                .is_ok_and(|o| matches!(&o.stdout[..], b"200" | b"401"));
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen on {}: {}",
            self.host,
            std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
        );
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Pushes `spec` (written as a `docker save` archive) to `repo_tag`
    /// here; `extra` goes to skopeo (`--dest-compress-format zstd`).
    /// Returns the pushed manifest's digest.
    pub fn push(&self, spec: &ImageSpec, repo_tag: &str, extra: &[&str]) -> String {
        let archive = self
            .dir
            .join(format!("{}.tar", repo_tag.replace([':', '/'], "_")));
        let file = std::fs::File::create(&archive).expect("archive");
        write_image(spec, std::io::BufWriter::new(file)).expect("writing image");
        self.copy(
            &format!("docker-archive:{}", archive.display()),
            repo_tag,
            extra,
        )
    }

    /// `skopeo copy SOURCE docker://HOST/repo_tag`; the pushed digest.
    pub fn copy(&self, source: &str, repo_tag: &str, extra: &[&str]) -> String {
        let digest_file = self.dir.join("pushed.digest");
        let mut cmd = command(self.netns.as_deref(), "skopeo");
        cmd.args(["copy", "--quiet", "--digestfile"])
            .arg(&digest_file)
            .args(extra);
        match &self.tls {
            Some(ca) => {
                let certs = self.dir.join("skopeo-certs");
                std::fs::create_dir_all(&certs).expect("certs dir");
                std::fs::copy(ca, certs.join("ca.crt")).expect("ca copy");
                cmd.arg("--dest-cert-dir").arg(certs);
            }
            None => {
                cmd.arg("--dest-tls-verify=false");
            }
        }
        if let Some((u, p)) = &self.login {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        let out = cmd
            .arg(source)
            .arg(format!("docker://{}/{repo_tag}", self.host))
            .stdin(Stdio::null())
            .output()
            .expect("running skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {source} {repo_tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(digest_file)
            .expect("digest file")
            .trim()
            .to_string()
    }

    /// The blob files of the registry's storage, by digest (hex).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `registry_proxy.py` in front of a plain registry.
pub struct Proxy {
    pub host: String,
    pub log: PathBuf,
    child: Child,
}

impl Proxy {
    pub fn start(upstream: &Registry, args: &[&str]) -> Self {
        let port = free_port();
        let log = upstream.dir.join(format!("proxy-{port}.log"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registry_proxy.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .arg("--upstream")
            .arg(format!("http://{}", upstream.host))
            .args(args)
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting registry_proxy.py");
        let host = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry_proxy.py did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { host, log, child }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
