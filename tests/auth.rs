//! The control API's token: required on every route but /healthz when
//! faasd runs with --token-file, sent by `faas` from FAAS_TOKEN; and an API
//! reachable from other hosts is refused without one.

mod common;

use std::process::Command;

use common::*;
use faasd::client::Client;

#[test]
fn a_token_guards_the_control_api() {
    require_host();
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").expect("token");
    let d = Daemon::start_with(&["--token-file", &token_file.to_string_lossy()]);
    let host = d.url.trim_start_matches("http://").to_string();

    assert_eq!(
        http_get(&host, "/healthz").expect("healthz").0,
        200,
        "health stays open"
    );
    for path in ["/v1/functions", "/metrics", "/api/list"] {
        let (status, body) = http_get(&host, path).expect("request");
        assert_eq!(status, 401, "{path}: {body}");
        assert!(!body.contains("s3cret"), "{body}");
    }
    let wrong = Client::new(&d.url).with_token(Some("s3cret-tokeN".into()));
    assert!(matches!(
        wrong.list(),
        Err(faasd::client::ClientError::Api { status: 401, .. })
    ));

    let right = Client::new(&d.url).with_token(Some("s3cret-token".into()));
    assert!(right.list().expect("list with the token").is_empty());
    let image = image_bytes(&hello_image());
    let out = Command::new(env!("CARGO_BIN_EXE_faas"))
        .args(["deploy", "hello", "--warm", "0", "--image"])
        .arg({
            let p = dir.path().join("hello.tar");
            std::fs::write(&p, &image).expect("image");
            p
        })
        .env("FAAS_URL", &d.url)
        .env("FAAS_TOKEN", "s3cret-token")
        .output()
        .expect("faas");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ip = right.inspect("hello").expect("inspect").ip;
    assert_eq!(call(ip).expect("request").0, 200);
    let out = Command::new(env!("CARGO_BIN_EXE_faas"))
        .args(["list"])
        .env("FAAS_URL", &d.url)
        .output()
        .expect("faas");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
}

#[test]
fn an_open_api_on_a_public_address_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_faasd"))
        .args([
            "--listen",
            "0.0.0.0:18999",
            "--state-dir",
            "/nonexistent-faasd-test",
        ])
        .output()
        .expect("faasd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-file"), "{err}");
    assert!(
        !std::path::Path::new("/nonexistent-faasd-test").exists(),
        "refused before touching state"
    );
}
