//! Who may drive faasd: on TCP only with the token faasd creates in its
//! state directory (root only), on the Unix socket only root and the
//! `faasd` group; a real unprivileged user gets 401 or "permission denied"
//! and changes nothing. The control API also bounds what clients can hold:
//! half-sent requests are closed after the header timeout, and past the
//! connection cap new ones are told 503 at once.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use faasd::client::{Client, ClientError};

const NOBODY: u32 = 65534;

/// `faas` as root would run it, with `env` set.
fn faas(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faas"));
    cmd.args(args)
        .env_remove("FAAS_URL")
        .env_remove("FAAS_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("faas")
}

/// A copy of `faas` an unprivileged user can run, and that user's
/// `faas` with `groups` as its supplementary groups.
struct Unprivileged {
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Unprivileged {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let bin = dir.path().join("faas");
        std::fs::copy(env!("CARGO_BIN_EXE_faas"), &bin).expect("copy faas");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Self { bin, _dir: dir }
    }

    fn faas(&self, groups: &[u32], url: &str, args: &[&str]) -> std::process::Output {
        let groups = match groups {
            [] => "--clear-groups".to_string(),
            g => format!(
                "--groups={}",
                g.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            ),
        };
        Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                &groups,
            ])
            .arg(&self.bin)
            .args(args)
            .env_clear()
            .env("FAAS_URL", url)
            .output()
            .expect("faas as nobody (setpriv)")
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_tcp_api_needs_the_token_faasd_created() {
    let mut d = Daemon::start();
    let token_file = faasd::client::token_path(&d.state);
    let meta = std::fs::metadata(&token_file).expect("faasd created a token");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "root only");
    assert_eq!(meta.uid(), 0);
    let token = d.token();
    assert!(token.len() >= 32, "a long random token: {token}");
    let host = d.url.trim_start_matches("http://").to_string();

    assert_eq!(
        http_get(&host, "/healthz").expect("healthz").0,
        200,
        "health stays open"
    );
    for path in ["/v1/functions", "/metrics", "/api/list", "/v1/secrets"] {
        let (status, body) = http_get(&host, path).expect("request");
        assert_eq!(status, 401, "{path}: {body}");
        assert!(!body.contains(&token), "{body}");
    }
    let wrong = Client::new(&d.url).with_token(Some(format!("{token}x")));
    assert!(matches!(
        wrong.list(),
        Err(ClientError::Api { status: 401, .. })
    ));
    assert!(d
        .tcp_client()
        .list()
        .expect("list with the token")
        .is_empty());

    // faas finds it: FAAS_TOKEN, or --token-file.
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("hello.tar");
    std::fs::write(&image, image_bytes(&hello_image())).expect("image");
    let image = image.to_string_lossy().into_owned();
    let out = faas(
        &[("FAAS_URL", &d.url), ("FAAS_TOKEN", &token)],
        &["deploy", "hello", "--warm", "0", "--archive", &image],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ip = d.tcp_client().inspect("hello").expect("inspect").ip;
    assert_eq!(call(ip).expect("request").0, 200);
    let out = faas(
        &[("FAAS_URL", &d.url)],
        &["list", "--token-file", &token_file.to_string_lossy()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello"));
    // --token works, and says what it shows to every local user; the
    // help and the man page point to the ways that do not.
    let out = faas(&[("FAAS_URL", &d.url)], &["list", "--token", &token]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: --token shows the token to every local user"),
        "{}",
        stderr(&out)
    );
    let quiet = faas(&[("FAAS_URL", &d.url), ("FAAS_TOKEN", &token)], &["list"]);
    assert!(!stderr(&quiet).contains("warning"), "{}", stderr(&quiet));
    for args in [&["--help"][..], &["man"][..]] {
        let text = String::from_utf8_lossy(&faas(&[], args).stdout).into_owned();
        assert!(
            text.contains("prefer FAAS_TOKEN") || text.contains("prefer FAAS\\_TOKEN"),
            "{args:?}: {text}"
        );
    }
    let out = faas(&[("FAAS_URL", &d.url)], &["rm", "hello"]);
    assert!(!out.status.success(), "no token, no change");
    let err = stderr(&out);
    assert!(
        err.contains("unauthorized") && err.lines().count() == 1,
        "{err}"
    );
    assert!(d.client().inspect("hello").is_ok(), "still deployed");

    // The same token after a restart.
    d.stop();
    d.spawn();
    assert_eq!(d.token(), token);
}

#[test]
fn an_unprivileged_user_changes_nothing_on_tcp_or_the_socket() {
    let d = Daemon::start();
    let nobody = Unprivileged::new();
    // The token file is out of its reach, so its faas has no token.
    let read = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "cat",
        ])
        .arg(faasd::client::token_path(&d.state))
        .output()
        .expect("cat");
    assert!(!read.status.success(), "nobody read the token");

    let out = nobody.faas(&[], &d.url, &["deploy", "mine", "--archive", "/dev/null"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));
    let out = nobody.faas(&[], &d.url, &["list"]);
    assert!(stderr(&out).contains("(HTTP 401)"), "{}", stderr(&out));

    let meta = std::fs::metadata(&d.socket).expect("socket");
    let group = nix::unistd::Group::from_name("faasd").ok().flatten();
    match &group {
        Some(g) => {
            assert_eq!(meta.permissions().mode() & 0o777, 0o660);
            assert_eq!(meta.gid(), g.gid.as_raw());
        }
        None => assert_eq!(meta.permissions().mode() & 0o777, 0o600),
    }
    let out = nobody.faas(&[], &d.unix_url(), &["rm", "anything"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("permission denied") && err.lines().count() == 1,
        "{err}"
    );
    assert!(
        d.client().list().expect("list").is_empty(),
        "nothing changed"
    );

    match group {
        Some(g) => {
            // A member of the group drives it through the socket.
            let out = nobody.faas(&[g.gid.as_raw()], &d.unix_url(), &["list", "-o", "json"]);
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
        }
        None => panic!(
            "no group named faasd on this host: scripts/install-deps.sh creates it (the suite needs it)"
        ),
    }
}

#[test]
fn half_sent_requests_are_closed_and_capped_and_the_socket_stays_open() {
    let d = Daemon::start();
    let host = d.url.trim_start_matches("http://").to_string();
    let fds_before = d.fd_count();
    let started = Instant::now();
    let mut held: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(&host).expect("connect");
            s.write_all(b"GET /v1/functions HTTP/1.1\r\nHost: x\r\n")
                .expect("half a request");
            s
        })
        .collect();
    // Past the cap: told at once, not held.
    let mut late = TcpStream::connect(&host).expect("connect");
    late.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = late.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    // The operator still gets in through the socket.
    assert!(d.client().list().is_ok(), "socket works while TCP is full");
    // Every half-sent request is closed after the header timeout.
    for (i, s) in held.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        // Closed (an answer and EOF, EOF or a reset), not still open.
        let mut buf = [0u8; 512];
        if let Err(e) = s.read(&mut buf) {
            assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "half-sent request {i} still open after 20 s"
            );
        }
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(16),
        "held {waited:?}: the header timeout is 10 s"
    );
    drop(held);
    eventually(Duration::from_secs(5), "faasd's descriptors back", || {
        let now = d.fd_count();
        if now <= fds_before + 2 {
            Ok(())
        } else {
            Err(format!("{now} held, {fds_before} before"))
        }
    });
    assert_eq!(d.tcp_client().list().expect("TCP serves again").len(), 0);
}

#[test]
fn the_config_file_sets_flags_and_print_config_shows_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("faasd.toml");
    std::fs::write(
        &file,
        "state-dir = \"/srv/faasd\"\nkeep-versions = 5\ninsecure-no-token = true\ncores = 2\n",
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_faasd"))
        .arg("--config")
        .arg(&file)
        .args(["--cores", "1", "--print-config"])
        .output()
        .expect("faasd");
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    for line in [
        "state-dir = \"/srv/faasd\"",
        "keep-versions = 5",
        "insecure-no-token = true",
        "cores = 1",
        "socket = \"/run/faasd/faasd.sock\"",
    ] {
        assert!(printed.contains(line), "{line} missing from:\n{printed}");
    }
    assert!(
        !Path::new("/srv/faasd").exists(),
        "printing touches nothing"
    );
    std::fs::write(&file, "cors = 2\n").expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_faasd"))
        .arg("--config")
        .arg(&file)
        .output()
        .expect("faasd");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("unknown key \"cors\"") && err.lines().count() == 1,
        "{err}"
    );
}
