//! Deploy and serve, end to end, through the CLI and the API: the basic
//! round trip, the CLI verbs and the original tool's API, concurrency, and
//! no leaks after many requests.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn deploy_through_the_cli_and_serve() {
    let d = Daemon::start();
    let image = image_bytes(&hello_image());
    let out = d.faas(&["deploy", "hello", "--warm", "0"], Some(&image));
    assert!(
        out.status.success(),
        "faas deploy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.faas(&["ip", "hello"], None);
    assert!(out.status.success());
    let ip: std::net::IpAddr = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("faas ip prints a bare IP");
    assert_eq!(
        call(ip).expect("request"),
        (200, "Hello from FaaS handler!\n".to_string())
    );
    // The address is on lo with our label.
    let addrs = d.lo_addresses();
    assert!(
        addrs
            .iter()
            .any(|l| l.contains(&format!("inet {ip}/32")) && l.contains("lo:faas")),
        "{addrs:?}"
    );

    // list, inspect, the `new` alias (redeploy keeps the IP) and rm.
    let list = d.faas(&["list"], None);
    assert!(String::from_utf8_lossy(&list.stdout).contains("hello"));
    let json = d.faas(&["list", "-o", "json"], None);
    let parsed: Vec<faasd::api::FunctionInfo> =
        serde_json::from_slice(&json.stdout).expect("list json");
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].stats.handed_over, 1);
    let out = d.faas(&["new", "hello", "--warm", "0"], Some(&image));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: faasd::api::FunctionInfo =
        serde_json::from_slice(&d.faas(&["inspect", "hello"], None).stdout).expect("inspect json");
    assert_eq!(info.ip, ip, "redeploy keeps the IP");
    assert_eq!(info.version, 2);
    assert_eq!(call(ip).expect("request after redeploy").0, 200);

    let out = d.faas(&["rm", "hello"], None);
    assert!(out.status.success());
    assert!(d.lo_addresses().is_empty(), "rm removes the address");
    assert!(call(ip).is_err(), "nothing listens after rm");
    let out = d.faas(&["ip", "hello"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one-line reason: {err}");
    assert!(err.contains("no function named hello"), "{err}");
}

/// One request as the original project's token-less client sends it:
/// plain HTTP on TCP, the whole body with a Content-Length.
fn send(
    d: &Daemon,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let endpoint = faasd::client::http::Endpoint::Tcp(d.url.trim_start_matches("http://").into());
    let r = faasd::client::http::request(
        &endpoint,
        method,
        path,
        headers,
        faasd::client::http::Body::Bytes(body),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = r.status;
    (status, r.text().expect("body"))
}

#[test]
fn original_api_and_errors() {
    // The original tool sends no token: --insecure-no-token is how faasd
    // serves it.
    let d = Daemon::start_with(&["--max-upload", "1M", "--insecure-no-token"]);
    let host = d.url.trim_start_matches("http://").to_string();
    let image = image_bytes(&probe_image("hello", &[]));
    // X-Image-Name upload: over the 1M limit → 413 with a JSON reason.
    let (status, body) = send(&d, "POST", "/api/new", &[("X-Image-Name", "probe")], &image);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("limit"), "{body}");
    // Bad names are 400 with a reason.
    let (status, body) = send(&d, "PUT", "/v1/functions/Bad_Name", &[], b"x");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("lower-case"), "{body}");
    let out = d.faas(&["deploy", "../etc"], Some(b"x"));
    assert!(!out.status.success());
    // Empty upload.
    let (status, body) = send(&d, "PUT", "/v1/functions/empty", &[], b"");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("empty"), "{body}");
    assert_eq!(http_get(&host, "/api/ip/nothing").expect("api ip").0, 404);
    assert_eq!(http_get(&host, "/nope").expect("unknown route").0, 404);
    let (status, body) = http_get(&host, "/api/list").expect("api list");
    assert_eq!((status, body.trim()), (200, "{}"));
}

#[test]
fn original_api_deploys_and_reports() {
    let d = Daemon::start_with(&["--insecure-no-token"]);
    let image = image_bytes(&hello_image());
    let (status, body) = send(
        &d,
        "POST",
        "/api/new?warm=0",
        &[("X-Image-Name", "legacy")],
        &image,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let ip: std::net::IpAddr = v["ip"].as_str().expect("ip").parse().expect("ip parses");
    let host = d.url.trim_start_matches("http://").to_string();
    let (_, body) = http_get(&host, "/api/ip/legacy").expect("api ip");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["ip"].as_str(), Some(ip.to_string().as_str()));
    let (_, body) = http_get(&host, "/api/list").expect("api list");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["legacy"]["ip"].as_str(), Some(ip.to_string().as_str()));
    assert_eq!(call(ip).expect("request").0, 200);
}

#[test]
fn twenty_concurrent_requests_are_all_answered() {
    let d = Daemon::start();
    let ip = d.deploy("hello", &hello_image(), &opts()).ip;
    let threads: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || call(ip)))
        .collect();
    let mut ok = 0;
    for t in threads {
        let (status, body) = t.join().expect("thread").expect("request");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, "Hello from FaaS handler!\n");
        ok += 1;
    }
    assert_eq!(ok, 20);
    assert!(
        d.wait_quiet(Duration::from_secs(10)),
        "containers or bundles left: {:?} {:?}",
        d.runc_containers(),
        d.bundles()
    );
}

#[test]
fn no_leaks_after_two_hundred_requests() {
    let d = Daemon::start();
    let ip = d.deploy("hello", &hello_image(), &opts()).ip;
    // Warm up once so lazily created runtime state is in the baseline.
    assert_eq!(call(ip).expect("first").0, 200);
    assert!(d.wait_quiet(Duration::from_secs(10)));
    let fds = d.fd_count();
    let children = d.children();
    assert!(children.is_empty(), "children at baseline: {children:?}");
    let started = Instant::now();
    for i in 0..200 {
        let (status, _) = call(ip).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(status, 200, "request {i}");
    }
    eprintln!("200 sequential requests took {:?}", started.elapsed());
    assert!(
        d.wait_quiet(Duration::from_secs(15)),
        "left: {:?} {:?}",
        d.runc_containers(),
        d.bundles()
    );
    eventually(
        Duration::from_secs(5),
        "fds and children back to baseline",
        || {
            let (now, children) = (d.fd_count(), d.children());
            if now <= fds && children.is_empty() {
                Ok(())
            } else {
                Err((now, children))
            }
        },
    );
    assert_eq!(d.fd_count(), fds, "open fds back to baseline");
    let info = d.client().inspect("hello").expect("inspect");
    assert_eq!(info.stats.handed_over, 201);
    assert_eq!(info.stats.failed, 0);
    assert_eq!(info.stats.inflight, 0);
}
