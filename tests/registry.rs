//! Deploying by registry reference (`faas deploy NAME --image REF`)
//! against a real registry (Debian's docker-registry, distribution 2.8)
//! with images pushed by skopeo: plain HTTP for a named insecure host,
//! TLS with the test's own CA and htpasswd basic auth, the bearer-token
//! challenge, an image index picked per platform, zstd layers, layers
//! shared with the layer store; and the failures a registry can cause
//! (refused login, missing tag, bytes that do not match their digest, a
//! stall mid-blob), each a clear error with the serving version untouched
//! and nothing left behind; a registry's 503 is tried again.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::registry::{require_tools, Pki, Proxy, Registry};
use common::*;
use faasd::image::build::{Entry, ImageSpec, Layer};

/// The probe answering with `WHICH=which`, over a second layer of
/// `app_bytes` bytes of noise from `seed`: images that share the probe's
/// layer and differ in their own.
fn app_image(which: &str, app_bytes: usize, seed: u64) -> ImageSpec {
    let mut spec = probe_image("inspect", &["PROBE_ENV=WHICH", &format!("WHICH={which}")]);
    spec.layers.push(Layer {
        entries: vec![Entry::file("app/data", noise(app_bytes, seed))],
        gzip: false,
    });
    spec.tag = format!("app-{which}:latest");
    spec
}

/// A seed no earlier run pushed (skopeo remembers blobs it pushed before
/// and would reuse their compressed form).
fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7)
        | 1
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn deploy(d: &Daemon, name: &str, reference: &str, extra: &[&str]) -> Output {
    let mut args = vec!["deploy", name, "--image", reference];
    args.extend_from_slice(extra);
    d.faas(&args, None)
}

fn deployed(d: &Daemon, name: &str, reference: &str, extra: &[&str]) -> String {
    let out = deploy(d, name, reference, extra);
    assert!(
        out.status.success(),
        "deploy {name} {reference}: {}",
        text(&out)
    );
    text(&out)
}

/// `WHICH` as the function's container sees it.
fn which_serves(d: &Daemon, name: &str) -> String {
    let ip = d.client().inspect(name).expect("inspect").ip;
    let (status, body) = eventually(Duration::from_secs(10), "an answer", || call(ip));
    assert_eq!(status, 200, "{body}");
    kv(&body).get("env.WHICH").cloned().unwrap_or_default()
}

/// `fetched=` of faasd's log line for the `nth` pull of `reference`.
fn fetched(d: &Daemon, reference: &str, nth: usize) -> usize {
    let log = d.log_text();
    let line = log
        .lines()
        .filter(|l| l.contains("image pulled") && l.contains(&format!("reference={reference} ")))
        .nth(nth)
        .unwrap_or_else(|| panic!("no pull {nth} of {reference} in faasd's log:\n{log}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("fetched="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no fetched= in {line}"))
}

/// The layer store's layers and what pulls left in flight.
fn leftovers(d: &Daemon) -> (Vec<String>, usize) {
    let mut layers: Vec<String> = std::fs::read_dir(d.state.join("layers"))
        .expect("layers")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    layers.sort();
    let pulls = std::fs::read_dir(d.state.join("pulls"))
        .map(|r| r.count())
        .unwrap_or(0);
    (layers, pulls)
}

#[test]
fn pulls_from_a_plain_registry_named_insecure_sharing_layers_with_the_store() {
    require_host();
    require_tools();
    let tmp = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(&tmp.path().join("reg"), None, None);
    let seed = fresh_seed();
    let one = reg.push(&app_image("one", 1 << 20, seed), "app:1", &[]);
    reg.push(&app_image("two", 1 << 20, seed + 2), "app:2", &[]);
    let d = Daemon::start_with(&["--insecure-registry", &reg.host]);
    let r1 = format!("{}/app:1", reg.host);

    let said = deployed(&d, "fa", &r1, &[]);
    assert!(said.contains(&format!("from {r1}@{one}")), "{said}");
    assert!(
        said.contains("over plain HTTP (faasd --insecure-registry)"),
        "{said}"
    );
    assert_eq!(which_serves(&d, "fa"), "one");
    let info = d.client().inspect("fa").expect("inspect");
    let image = info.image.expect("a pulled version says where from");
    assert_eq!(
        (image.reference.as_str(), image.digest.as_str()),
        (r1.as_str(), one.as_str())
    );
    assert_eq!(info.versions[0].image.as_ref(), Some(&image));
    assert_eq!(fetched(&d, &r1, 0), 2, "a first pull fetches both layers");

    // The second image shares the probe's layer: only its own comes.
    let r2 = format!("{}/app:2", reg.host);
    deployed(&d, "fb", &r2, &[]);
    assert_eq!(which_serves(&d, "fb"), "two");
    assert_eq!(
        fetched(&d, &r2, 0),
        1,
        "the shared layer is not fetched again"
    );

    // The same digest again: the manifest only.
    let started = Instant::now();
    deployed(&d, "fa", &r1, &[]);
    let again = started.elapsed();
    assert_eq!(fetched(&d, &r1, 1), 0, "a redeploy fetches no layer");
    println!("redeploy of the same digest: {} ms", again.as_millis());

    // An image reference and an archive at once is refused.
    let (status, body) = d
        .client()
        .raw(
            "PUT",
            &format!("/v1/functions/fc?image={r1}"),
            b"not an archive",
        )
        .map(|r| (r.0, r.1))
        .unwrap_or_else(|e| (e.status().unwrap_or(0), e.to_string()));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not both"), "{body}");

    // A host not named --insecure-registry is HTTPS only: a plain one
    // fails, with the reason, and nothing is deployed.
    let proxy = Proxy::start(&reg, &[]);
    let out = deploy(&d, "fc", &format!("{}/app:1", proxy.host), &[]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains(&proxy.host) && said.contains("HTTP 502"),
        "{said}"
    );
    assert!(d.client().inspect("fc").is_err(), "nothing deployed");
    assert_eq!(leftovers(&d).1, 0, "no pull left in flight");
}

#[test]
fn pulls_over_tls_with_the_registry_ca_and_a_basic_auth_login() {
    require_host();
    require_tools();
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::make(tmp.path());
    let password = "pa55-not-in-any-log";
    let reg = Registry::start(&tmp.path().join("reg"), Some(&pki), Some(("ci", password)));
    let digest = reg.push(&app_image("tls", 4096, fresh_seed()), "team/app:v2", &[]);
    let reference = format!("{}/team/app:v2", reg.host);

    // Without the CA the certificate is refused.
    let plain = Daemon::start();
    let out = deploy(&plain, "f", &reference, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).to_lowercase().contains("certificate"),
        "{}",
        text(&out)
    );
    drop(plain);

    let ca = pki.ca.display().to_string();
    let d = Daemon::start_with(&["--registry-ca", &ca]);
    let out = deploy(&d, "f", &reference, &[]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("(401)") && said.contains(&format!("faas registry login {}", reg.host)),
        "{said}"
    );

    let login = |pw: &str| {
        let out = d.faas(
            &[
                "registry",
                "login",
                &reg.host,
                "-u",
                "ci",
                "--password-stdin",
            ],
            Some(format!("{pw}\n").as_bytes()),
        );
        assert!(out.status.success(), "{}", text(&out));
    };
    login("wrong");
    let out = deploy(&d, "f", &reference, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("stored credentials were refused"),
        "{}",
        text(&out)
    );

    login(password);
    let said = deployed(&d, "f", &reference, &[]);
    assert!(said.contains(&digest), "{said}");
    assert_eq!(which_serves(&d, "f"), "tls");

    let listed = d.faas(&["registry", "ls", "-o", "json"], None);
    let listed = text(&listed);
    assert!(
        listed.contains(&reg.host) && listed.contains("\"ci\""),
        "{listed}"
    );
    let stored = d.state.join("registries").join(&reg.host);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&stored)
            .expect("stored login")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    for shown in [listed, d.log_text(), d.get("/v1/registries").1] {
        assert!(!shown.contains(password), "the password was shown: {shown}");
    }
    let out = d.faas(&["registry", "logout", &reg.host], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!stored.exists());
    let out = d.faas(&["registry", "logout", &reg.host], None);
    assert!(text(&out).contains("not logged in"), "{}", text(&out));
}

#[test]
fn answers_the_bearer_token_challenge_with_a_token_for_the_repository() {
    require_host();
    require_tools();
    let tmp = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(&tmp.path().join("reg"), None, None);
    reg.push(&app_image("bearer", 4096, fresh_seed()), "org/app:1", &[]);
    let proxy = Proxy::start(
        &reg,
        &["--bearer", "--user", "robot", "--password", "t0ken-pw"],
    );
    let d = Daemon::start_with(&["--insecure-registry", &proxy.host]);
    let reference = format!("{}/org/app:1", proxy.host);

    let out = deploy(&d, "f", &reference, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("(401)"), "{}", text(&out));
    assert!(
        proxy.log_text().contains("token refused"),
        "{}",
        proxy.log_text()
    );

    let out = d.faas(
        &[
            "registry",
            "login",
            &proxy.host,
            "-u",
            "robot",
            "--password-stdin",
        ],
        Some(b"t0ken-pw\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    deployed(&d, "f", &reference, &[]);
    assert_eq!(which_serves(&d, "f"), "bearer");
    let log = proxy.log_text();
    for step in [
        "challenged GET /v2/",
        "token issued scope=repository:org/app:pull",
        "authorized GET /v2/org/app/manifests/1",
        "authorized GET /v2/org/app/blobs/sha256:",
    ] {
        assert!(log.contains(step), "no {step:?} in the exchange:\n{log}");
    }
}

/// The manifest `digest` of `repo` as the registry holds it, and its size.
fn manifest(reg: &Registry, repo: &str, digest: &str) -> (serde_json::Value, usize) {
    let out = std::process::Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ])
        .arg(format!("http://{}/v2/{repo}/manifests/{digest}", reg.host))
        .output()
        .expect("curl");
    assert!(out.status.success(), "GET manifest {digest}");
    (
        serde_json::from_slice(&out.stdout).expect("manifest json"),
        out.stdout.len(),
    )
}

#[test]
fn picks_the_platform_from_an_index_and_unpacks_zstd_layers() {
    require_host();
    require_tools();
    let tmp = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(&tmp.path().join("reg"), None, None);
    let seed = fresh_seed();
    let oci = ["--format", "oci"];
    let amd = reg.push(&app_image("amd64", 4096, seed), "multi:amd64", &oci);
    let arm = reg.push(&app_image("arm64", 4096, seed + 2), "multi:arm64", &oci);
    let entry = |digest: &str, arch: &str, variant: Option<&str>| {
        let (_, size) = manifest(&reg, "multi", digest);
        let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size, "platform": platform,
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&arm, "arm64", Some("v8")), entry(&amd, "amd64", None)],
    });
    let put = std::process::Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.index.v1+json",
        ])
        .arg("--data-binary")
        .arg(index.to_string())
        .arg(format!("http://{}/v2/multi/manifests/latest", reg.host))
        .output()
        .expect("curl");
    assert!(
        put.status.success(),
        "PUT index: {}",
        String::from_utf8_lossy(&put.stderr)
    );

    let d = Daemon::start_with(&["--insecure-registry", &reg.host]);
    let multi = format!("{}/multi", reg.host);
    deployed(&d, "native", &multi, &[]);
    assert_eq!(which_serves(&d, "native"), "amd64");
    let image = d
        .client()
        .inspect("native")
        .expect("inspect")
        .image
        .expect("image");
    assert_eq!(
        (image.digest.as_str(), image.platform.as_str()),
        (amd.as_str(), "linux/amd64")
    );
    assert_eq!(
        image.reference,
        format!("{multi}:latest"),
        "a bare name is :latest"
    );

    deployed(&d, "arm", &multi, &["--platform", "linux/arm64"]);
    assert_eq!(
        d.client()
            .inspect("arm")
            .expect("inspect")
            .image
            .expect("image")
            .digest,
        arm
    );

    let out = deploy(&d, "riscv", &multi, &["--platform", "linux/riscv64"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("has no image for linux/riscv64 (it has linux/arm64/v8, linux/amd64)"),
        "{}",
        text(&out)
    );

    // zstd: skopeo compresses this image's own layer with zstd (the
    // probe's, pushed before, it reuses as gzip: both kinds in one image).
    let zstd = reg.push(
        &app_image("zstd", 1 << 20, seed + 4),
        "packed:1",
        &["--format", "oci", "--dest-compress-format", "zstd"],
    );
    let (m, _) = manifest(&reg, "packed", &zstd);
    let types: Vec<&str> = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["mediaType"].as_str())
        .collect();
    assert!(
        types.last().is_some_and(|t| t.ends_with("+zstd")),
        "{types:?}"
    );
    deployed(&d, "packed", &format!("{}/packed:1", reg.host), &[]);
    assert_eq!(which_serves(&d, "packed"), "zstd");
}

#[test]
fn a_failed_pull_is_a_clear_error_and_changes_nothing() {
    require_host();
    require_tools();
    let tmp = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(&tmp.path().join("reg"), None, None);
    let seed = fresh_seed();
    reg.push(&app_image("good", 4096, seed), "app:1", &[]);
    let bad = reg.push(&app_image("bad", 2 << 20, seed + 2), "app:2", &[]);
    let (m, _) = manifest(&reg, "app", &bad);
    let own_layer = m["layers"][1]["digest"]
        .as_str()
        .expect("layer digest")
        .to_string();
    let tamper = Proxy::start(&reg, &["--tamper", &own_layer]);
    let stall = Proxy::start(&reg, &["--stall", &own_layer]);
    let hosts = [tamper.host.as_str(), stall.host.as_str()];
    let d = Daemon::start_with(&[
        "--insecure-registry",
        hosts[0],
        "--insecure-registry",
        hosts[1],
        "--pull-timeout",
        "4",
    ]);
    deployed(&d, "f", &format!("{}/app:1", tamper.host), &[]);
    let before = leftovers(&d);
    let serving = || {
        let info = d.client().inspect("f").expect("inspect");
        assert_eq!(info.version, 1);
        assert_eq!(which_serves(&d, "f"), "good");
        assert_eq!(leftovers(&d), before, "no partial layer, no pull left");
    };

    let out = deploy(&d, "f", &format!("{}/app:2", tamper.host), &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("do not match the digest"),
        "{}",
        text(&out)
    );
    assert!(tamper.log_text().contains("tampered"), "the proxy tampered");
    serving();

    let started = Instant::now();
    let out = deploy(&d, "f", &format!("{}/app:2", stall.host), &[]);
    let took = started.elapsed();
    assert!(!out.status.success());
    assert!(text(&out).contains("took longer than 4s"), "{}", text(&out));
    // Meanwhile the client showed the layers: the probe's already here,
    // the stalled one stopped.
    let own = &own_layer.trim_start_matches("sha256:")[..12];
    assert!(
        text(&out).contains(": already here") && text(&out).contains(&format!("{own}: stopped")),
        "{}",
        text(&out)
    );
    assert!(
        took < Duration::from_secs(20),
        "a stalled pull took {took:?}"
    );
    serving();

    let out = deploy(&d, "f", &format!("{}/app:nope", tamper.host), &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("app:nope: manifest not found"),
        "{}",
        text(&out)
    );
    serving();

    // A registry that answers 503 at first is tried again, backing off
    // (the layer's unpacker, already waiting for it, follows the retry).
    let flaky = Proxy::start(&reg, &["--fail-first", "2", "--fail-digest", &own_layer]);
    let d2 = Daemon::start_with(&["--insecure-registry", &flaky.host]);
    deployed(&d2, "f", &format!("{}/app:2", flaky.host), &[]);
    assert_eq!(which_serves(&d2, "f"), "bad");
    assert_eq!(flaky.log_text().matches("503 on purpose").count(), 2);
}

#[test]
fn update_pull_deploys_only_a_moved_tag_and_rollback_returns_to_the_digest() {
    require_host();
    require_tools();
    let tmp = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(&tmp.path().join("reg"), None, None);
    let seed = fresh_seed();
    let v1 = reg.push(&app_image("v1", 4096, seed), "app:latest", &[]);
    let d = Daemon::start_with(&["--insecure-registry", &reg.host]);
    let app = format!("{}/app", reg.host);
    deployed(&d, "f", &app, &[]);

    let out = d.faas(&["update", "f", "--pull"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing pulled"), "{}", text(&out));
    assert_eq!(d.client().inspect("f").expect("inspect").version, 1);

    let v2 = reg.push(&app_image("v2", 4096, seed + 2), "app:latest", &[]);
    let out = d.faas(&["update", "f", "--pull"], None);
    assert!(out.status.success(), "{}", text(&out));
    let info = d.client().inspect("f").expect("inspect");
    assert_eq!(
        (info.version, info.image.expect("image").digest),
        (2, v2.clone())
    );
    assert_eq!(which_serves(&d, "f"), "v2");

    let out = d.faas(&["rollback", "f"], None);
    assert!(out.status.success(), "{}", text(&out));
    let info = d.client().inspect("f").expect("inspect");
    assert_eq!(info.image.expect("image").digest, v1);
    assert_eq!(which_serves(&d, "f"), "v1");

    // An archive deployed as before, `--image FILE`: said to be --archive now.
    let archive = tmp.path().join("v3.tar");
    std::fs::write(&archive, image_bytes(&app_image("v3", 4096, seed + 4))).expect("archive");
    let out = d.faas(
        &["deploy", "g", "--image", &archive.display().to_string()],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("now --archive"), "{}", text(&out));
    assert_eq!(which_serves(&d, "g"), "v3");
    let out = d.faas(&["update", "g", "--pull"], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("not pulled"), "{}", text(&out));
}
