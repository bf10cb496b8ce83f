//! The README's promise with the real tools: `docker build` of a `FROM
//! scratch` image around the example handler, `docker save | faas deploy`,
//! and the same image turned into an OCI archive by skopeo. The Docker
//! engine is started by the test on a private socket and stopped after.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A dockerd of our own: private socket, data and exec roots, no bridge,
/// no iptables changes.
struct Engine {
    child: Child,
    dir: tempfile::TempDir,
}

impl Engine {
    fn start() -> Self {
        let dockerd = which("dockerd").expect("dockerd not found: apt-get install -y docker.io");
        let dir = tempfile::Builder::new()
            .prefix("faasd-dk-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("log");
        let child = Command::new(dockerd)
            .arg(format!(
                "--host=unix://{}",
                dir.path().join("d.sock").display()
            ))
            .arg(format!("--data-root={}", dir.path().join("data").display()))
            .arg(format!("--exec-root={}", dir.path().join("exec").display()))
            .arg(format!("--pidfile={}", dir.path().join("d.pid").display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting dockerd");
        let engine = Self { child, dir };
        eventually_every(
            Duration::from_millis(250),
            Duration::from_secs(60),
            "dockerd to start",
            || {
                if engine.docker(&["info"]).status.success() {
                    Ok(())
                } else {
                    Err(engine.log())
                }
            },
        );
        engine
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.path().join("d.sock").display()),
            )
            // No buildx plugin here; the classic builder needs nothing more for COPY-only images.
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("running docker")
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example_context() -> (tempfile::TempDir, PathBuf) {
    let ctx = tempfile::tempdir().expect("context");
    std::fs::copy(handlers_dir().join("hello"), ctx.path().join("hello")).expect("copy handler");
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello/Dockerfile");
    std::fs::copy(&dockerfile, ctx.path().join("Dockerfile")).expect("copy Dockerfile");
    let path = ctx.path().to_path_buf();
    (ctx, path)
}

#[test]
fn docker_build_and_save_deploys_and_serves() {
    require_host();
    let engine = Engine::start();
    let (_ctx, path) = example_context();
    let out = engine.docker(&["build", "-t", "faasd-hello:test", &path.to_string_lossy()]);
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tar = path.join("image.tar");
    let out = engine.docker(&["save", "faasd-hello:test", "-o", &tar.to_string_lossy()]);
    assert!(
        out.status.success(),
        "docker save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = std::fs::read(&tar).expect("saved image");

    let d = Daemon::start();
    // Exactly the README's pipe: docker save … | faas deploy NAME
    let out = d.faas(&["deploy", "hello", "--warm", "0"], Some(&image));
    assert!(
        out.status.success(),
        "faas deploy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ip = d.client().inspect("hello").expect("inspect").ip;
    assert_eq!(
        call(ip).expect("request"),
        (200, "Hello from FaaS handler!\n".to_string())
    );

    // skopeo turns the same image into an OCI-layout archive.
    let skopeo = which("skopeo").expect("skopeo not found: apt-get install -y skopeo");
    let oci = path.join("oci.tar");
    let out = Command::new(skopeo)
        .args([
            "copy",
            &format!("docker-archive:{}", tar.display()),
            &format!("oci-archive:{}", oci.display()),
        ])
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.faas(
        &[
            "deploy",
            "hello-oci",
            "--warm",
            "0",
            "--archive",
            &oci.to_string_lossy(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "faas deploy (OCI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ip = d.client().inspect("hello-oci").expect("inspect").ip;
    assert_eq!(
        call(ip).expect("request"),
        (200, "Hello from FaaS handler!\n".to_string())
    );
}
