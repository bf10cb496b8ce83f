//! Shared layers: every layer is unpacked once, whatever number of
//! functions and versions use it; each function sees it owned by its own
//! ids; removing the last user of a layer frees it; a restart (a
//! `kill -9` too) serves every kept version again; and a version's rootfs
//! is mounted only while its containers need it.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use common::*;
use faasd::image::build::{Entry, Layer};

const BIG: usize = 20 << 20;

/// Bytes on disk under `dir` (each inode once; other mounts not entered,
/// though from the test's mount namespace faasd's overlays are not seen).
fn disk_use(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    let dev = std::fs::symlink_metadata(dir).expect("stat").dev();
    while let Some(path) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev || !seen.insert(meta.ino()) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                todo.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        }
    }
    total
}

/// The layers in the store (faasd's own `top` and `empty`, and the refs, aside).
fn layers(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.state.join("layers"))
        .expect("layer store")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["top-2", "empty", "refs"].contains(&n.as_str()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_hundred_functions_from_one_image_take_about_one_copy() {
    require_host();
    let mut d = Daemon::start();
    // A 20 MB base layer, and the probe on top of it.
    let mut spec = probe_image("inspect", &["PROBE_FILES=/probe,/base/blob,/"]);
    spec.layers.insert(
        0,
        Layer {
            entries: vec![Entry::dir("base"), Entry::file("base/blob", noise(BIG, 7))],
            gzip: false,
        },
    );
    let image = image_bytes(&spec);
    let before = disk_use(&d.state);

    let t0 = Instant::now();
    let mut ips = Vec::new();
    for i in 0..100 {
        let name = format!("f{i}");
        let info = d
            .client()
            .deploy(&name, &opts(), image.as_slice())
            .unwrap_or_else(|e| panic!("deploying {name}: {e}\n{}", d.log_text()));
        ips.push(info.ip);
    }
    let took = t0.elapsed();
    assert_eq!(layers(&d).len(), 2, "each layer once: {:?}", layers(&d));
    let used = disk_use(&d.state) - before;
    let copy = disk_use(&d.state.join("layers"));
    let unpacked = (BIG + handler_bytes("probe").len()) as u64;
    eprintln!(
        "100 deploys of a {:.1} MB image: {:.1} s; the state directory grew by {:.1} MB, \
         its layers by {:.1} MB",
        unpacked as f64 / 1e6,
        took.as_secs_f64(),
        used as f64 / 1e6,
        copy as f64 / 1e6
    );
    assert!(
        copy < unpacked * 11 / 10,
        "the layers take {copy} bytes for {unpacked} of image"
    );
    // Beyond the one copy: per function a log, a record, a mount point.
    assert!(
        used < copy + 100 * (32 << 10),
        "100 functions use {used} bytes, one copy of the image is {copy}"
    );

    // Every function sees the image's files as the image has them: owned
    // by its root, not by `nobody` (the id map applies), and complete.
    for ip in [ips[0], ips[57], ips[99]] {
        let (status, body) = call(ip).expect("call");
        assert_eq!(status, 200, "{body}");
        let got = kv(&body);
        assert_eq!(got["meta./probe"], "0:0:755", "{body}");
        assert_eq!(got["meta./"], "0:0:755", "{body}");
        let blob = got
            .get("meta./base/blob")
            .unwrap_or_else(|| panic!("no blob: {body}"));
        assert_eq!(blob, "0:0:644");
    }

    // A new version that changes only the top layer unpacks only it.
    let mut next = spec.clone();
    next.config.env.push("VERSION=2".into());
    next.layers[1]
        .entries
        .push(Entry::file("etc/version", "2\n"));
    d.client()
        .deploy("f0", &opts(), image_bytes(&next).as_slice())
        .expect("redeploy");
    assert_eq!(layers(&d).len(), 3, "the base layer is shared by versions");
    assert_eq!(call(ips[0]).expect("call").0, 200);

    // Restarted after kill -9, every version is composed again.
    d.crash();
    let t0 = Instant::now();
    d.spawn();
    eprintln!(
        "restart with 100 functions (101 rootfs composed): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    for ip in [ips[0], ips[99]] {
        assert_eq!(call(ip).expect("after a restart").0, 200);
    }

    // The last user of a layer frees it; not before.
    for i in 1..100 {
        let out = d.faas(&["rm", &format!("f{i}")], None);
        assert!(out.status.success(), "{:?}", out);
    }
    assert_eq!(layers(&d).len(), 3, "f0's versions still use all three");
    let out = d.faas(&["rm", "f0"], None);
    assert!(out.status.success(), "{:?}", out);
    eventually(
        std::time::Duration::from_secs(10),
        "no user, no layer",
        || {
            let left = layers(&d);
            if left.is_empty() {
                Ok(())
            } else {
                Err(left)
            }
        },
    );
    assert!(
        disk_use(&d.state) < before + (2 << 20),
        "the state directory is back to its size"
    );
}

/// `--copy-layers`: new versions are copies of their own, owned by the
/// function's ids (its containers see the image's owners all the same);
/// versions made of shared layers before it are still composed, and
/// both come back after a restart.
#[test]
fn copied_versions_are_the_functions_own_and_shared_ones_stay_composed() {
    require_host();
    let mut d = Daemon::start();
    let spec = probe_image("inspect", &["PROBE_FILES=/probe,/"]);
    let image = image_bytes(&spec);
    let shared = d
        .client()
        .deploy("shared", &opts(), image.as_slice())
        .expect("deploy")
        .ip;
    assert_eq!(layers(&d).len(), 1);

    d.stop();
    d.extra.push("--copy-layers".into());
    d.spawn();
    let copied = d
        .client()
        .deploy("copied", &opts(), image.as_slice())
        .expect("deploy")
        .ip;
    assert_eq!(
        layers(&d).len(),
        1,
        "a copy takes no layer: {:?}",
        layers(&d)
    );
    let refs: Vec<String> = std::fs::read_dir(d.state.join("layers/refs"))
        .expect("refs")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        refs.iter().all(|r| r.starts_with("shared-")),
        "only the shared version uses layers: {refs:?}"
    );
    // The copy is a directory of the test's mount namespace, owned by
    // the function's id range (not an overlay seen through an id map).
    let rootfs = std::fs::read_dir(d.state.join("rootfs"))
        .expect("rootfs")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("copied-"))
        })
        .expect("the copied version's rootfs");
    let probe = std::fs::metadata(rootfs.join("probe")).expect("the copy holds the image");
    assert!(
        probe.uid() >= 1 << 30,
        "owned by the range: {}",
        probe.uid()
    );
    for _ in 0..2 {
        for ip in [shared, copied] {
            let (status, body) = call(ip).expect("call");
            assert_eq!(status, 200, "{body}");
            assert_eq!(kv(&body)["meta./probe"], "0:0:755", "{body}");
        }
        d.crash();
        d.spawn();
    }
    for name in ["shared", "copied"] {
        let out = d.faas(&["rm", name], None);
        assert!(out.status.success(), "{out:?}");
    }
    wait_until(
        std::time::Duration::from_secs(10),
        "the copy to go with its function",
        || !rootfs.exists(),
    );
    assert_eq!(layers(&d), Vec::<String>::new(), "no user, no layer");
}

/// faasd's mounts at the rootfs directories of function `name`'s versions.
fn composed(d: &Daemon, name: &str) -> usize {
    let dir = d.state.join("rootfs").canonicalize().expect("rootfs dir");
    let mounts =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", d.pid())).expect("mountinfo");
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(Path::new))
        .filter(|m| {
            m.parent() == Some(dir.as_path())
                && m.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}-")))
        })
        .count()
}

#[test]
fn a_rootfs_is_mounted_only_while_its_containers_need_it() {
    require_host();
    let mut d = Daemon::start_with(&["--rootfs-idle", "3"]);
    let image = hello_image();
    let idle = d.deploy("idle", &image, &opts()).ip;
    let pooled = faasd::api::DeployOptions { warm: 1, ..opts() };
    d.deploy("pooled", &image, &pooled);
    // Nothing holds the one without a pool: it goes after --rootfs-idle.
    wait_until(
        std::time::Duration::from_secs(15),
        "the idle function's rootfs to be unmounted",
        || composed(&d, "idle") == 0,
    );
    assert_eq!(composed(&d, "pooled"), 1, "its warm container holds it");
    // A connection composes it again, and it stays a while after.
    let (status, body) = call(idle).expect("call");
    assert_eq!(status, 200, "{body}");
    assert_eq!(composed(&d, "idle"), 1);
    wait_until(
        std::time::Duration::from_secs(15),
        "unmounted again",
        || composed(&d, "idle") == 0,
    );
    // A restart composes none of them ahead: only the pool's.
    d.stop();
    d.spawn();
    assert_eq!(composed(&d, "idle"), 0, "composed at start");
    let (status, body) = call(idle).expect("call after a restart");
    assert_eq!(status, 200, "{body}");
    wait_until(
        std::time::Duration::from_secs(15),
        "the pool's rootfs composed",
        || composed(&d, "pooled") == 1,
    );
}
