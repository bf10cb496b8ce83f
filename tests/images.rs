//! Image archives through a real deploy: layering semantics checked from
//! inside the container, both archive layouts, hostile tarballs that try to
//! write outside the rootfs, and broken uploads that must leave the
//! serving version alone.

mod common;

use std::path::Path;

use common::*;
use faasd::image::build::{Entry, ImageSpec, Layer, Layout, RunConfig};

fn probe_layer() -> Layer {
    Layer {
        entries: vec![Entry::exe("probe", handler_bytes("probe"))],
        gzip: false,
    }
}

fn inspect_config(files: &[&str]) -> RunConfig {
    RunConfig {
        entrypoint: vec!["/probe".into()],
        cmd: vec!["inspect".into()],
        env: vec![format!("PROBE_FILES={}", files.join(","))],
        ..Default::default()
    }
}

#[test]
fn layers_overwrite_whiteout_and_opaque_as_docker_does() {
    let d = Daemon::start();
    let files = [
        "/data/keep.txt",
        "/data/overwrite.txt",
        "/data/gone.txt",
        "/data/gonedir/inner.txt",
        "/opaque/old.txt",
        "/opaque/new.txt",
        "/data/link",
        "/data/hard",
    ];
    let spec = ImageSpec {
        layers: vec![
            probe_layer(),
            Layer {
                entries: vec![
                    Entry::dir("data"),
                    Entry::file("data/keep.txt", "kept"),
                    Entry::file("data/overwrite.txt", "old"),
                    Entry::file("data/gone.txt", "should be deleted"),
                    Entry::dir("data/gonedir"),
                    Entry::file("data/gonedir/inner.txt", "should be deleted"),
                    Entry::dir("opaque"),
                    Entry::file("opaque/old.txt", "hidden by opaque"),
                ],
                gzip: true,
            },
            Layer {
                entries: vec![
                    Entry::file("data/overwrite.txt", "new"),
                    Entry::whiteout("data/gone.txt"),
                    Entry::whiteout("data/gonedir"),
                    // The new file comes before the marker: opaque must only hide lower layers.
                    Entry::file("opaque/new.txt", "fresh"),
                    Entry::file("opaque/.wh..wh..opq", ""),
                    Entry::Symlink {
                        path: "data/link".into(),
                        target: "keep.txt".into(),
                    },
                    Entry::Hardlink {
                        path: "data/hard".into(),
                        target: "data/keep.txt".into(),
                    },
                ],
                gzip: true,
            },
        ],
        config: inspect_config(&files),
        layout: Layout::Both,
        tag: "layers:latest".into(),
    };
    let ip = d.deploy("layers", &spec, &opts()).ip;
    let (status, body) = call(ip).expect("request");
    assert_eq!(status, 200, "{body}");
    let v = kv(&body);
    let file = |p: &str| v.get(&format!("file.{p}")).cloned().unwrap_or_default();
    assert_eq!(file("/data/keep.txt"), "kept");
    assert_eq!(
        file("/data/overwrite.txt"),
        "new",
        "a later layer overwrites"
    );
    assert_eq!(
        file("/data/gone.txt"),
        "<missing>",
        "whiteout deletes a file"
    );
    assert_eq!(
        file("/data/gonedir/inner.txt"),
        "<missing>",
        "whiteout deletes a directory"
    );
    assert_eq!(
        file("/opaque/old.txt"),
        "<missing>",
        "opaque hides the lower layer"
    );
    assert_eq!(
        file("/opaque/new.txt"),
        "fresh",
        "opaque keeps its own layer's files"
    );
    assert_eq!(file("/data/link"), "kept", "symlink");
    assert_eq!(file("/data/hard"), "kept", "hard link");
}

#[test]
fn classic_and_oci_layouts_both_deploy() {
    let d = Daemon::start();
    for (name, layout) in [
        ("classic", Layout::Classic),
        ("oci", Layout::Oci),
        ("both", Layout::Both),
    ] {
        let mut spec = probe_image("hello", &[]);
        spec.layout = layout;
        spec.layers[0].gzip = layout == Layout::Oci;
        let ip = d.deploy(name, &spec, &opts()).ip;
        assert_eq!(
            call(ip).expect("request"),
            (200, "probe ok\n".to_string()),
            "{name} layout"
        );
    }
}

fn hostile(entries: Vec<Entry>) -> ImageSpec {
    ImageSpec {
        layers: vec![
            probe_layer(),
            Layer {
                entries,
                gzip: false,
            },
        ],
        config: inspect_config(&[]),
        layout: Layout::Both,
        tag: "hostile:latest".into(),
    }
}

fn raw(path: &str, kind: tar::EntryType, link: Option<&str>) -> Entry {
    Entry::Raw {
        path: path.as_bytes().to_vec(),
        kind,
        data: b"pwned".to_vec(),
        link: link.map(str::to_string),
    }
}

#[test]
fn hostile_tarballs_cannot_write_outside_the_rootfs() {
    let d = Daemon::start();
    let good = d.deploy("victim", &probe_image("hello", &[]), &opts()).ip;
    let outside = tempfile::tempdir().expect("outside dir");
    let target = outside.path().to_string_lossy().into_owned();
    let passwd_links = std::fs::metadata("/etc/passwd")
        .map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
        .ok();
    let rootfs_dir = d.state.join("rootfs");

    let attacks: Vec<(&str, Vec<Entry>)> = vec![
        (
            "dotdot",
            vec![raw(
                "../../../../../../../../escape-dotdot",
                tar::EntryType::Regular,
                None,
            )],
        ),
        (
            "dotdot-store",
            vec![raw("../escape-store", tar::EntryType::Regular, None)],
        ),
        (
            "abs-symlink",
            vec![
                Entry::Symlink {
                    path: "evil".into(),
                    target: target.clone(),
                },
                Entry::file("evil/pwned-abs", "pwned"),
            ],
        ),
        (
            "rel-symlink",
            vec![
                Entry::Symlink {
                    path: "up".into(),
                    target: format!("../../../../../../../..{target}"),
                },
                Entry::file("up/pwned-rel", "pwned"),
            ],
        ),
        (
            "symlink-then-file",
            vec![
                Entry::Symlink {
                    path: "f".into(),
                    target: format!("{target}/pwned-final"),
                },
                Entry::file("f", "pwned"),
            ],
        ),
        (
            "hardlink-dotdot",
            vec![raw(
                "hl",
                tar::EntryType::Link,
                Some("../../../../../../etc/passwd"),
            )],
        ),
        (
            "hardlink-abs",
            vec![raw("hl", tar::EntryType::Link, Some("/etc/passwd"))],
        ),
        (
            "hardlink-via-symlink",
            vec![
                Entry::Symlink {
                    path: "etcdir".into(),
                    target: "/etc".into(),
                },
                raw("hl", tar::EntryType::Link, Some("etcdir/passwd")),
            ],
        ),
        (
            "whiteout-dotdot",
            vec![raw(".wh..", tar::EntryType::Regular, None)],
        ),
    ];
    for (name, entries) in attacks {
        let result = d
            .client()
            .deploy(name, &opts(), image_bytes(&hostile(entries)).as_slice());
        // Refused, or unpacked harmlessly inside the rootfs; either way nothing outside.
        eprintln!(
            "{name}: {:?}",
            result.as_ref().map(|i| i.ip).map_err(|e| e.to_string())
        );
        let written: Vec<_> = std::fs::read_dir(outside.path())
            .expect("read outside")
            .collect();
        assert!(
            written.is_empty(),
            "{name} wrote outside the rootfs: {written:?}"
        );
        for escaped in ["escape-dotdot", "escape-store"] {
            assert!(
                !Path::new("/").join(escaped).exists(),
                "{name} wrote /{escaped}"
            );
            assert!(
                !rootfs_dir.join(escaped).exists(),
                "{name} wrote into the store"
            );
            assert!(
                !d.state.join(escaped).exists(),
                "{name} wrote into the state dir"
            );
        }
        let links = std::fs::metadata("/etc/passwd")
            .map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
            .ok();
        assert_eq!(
            links, passwd_links,
            "{name} hard-linked the host's /etc/passwd"
        );
        assert_eq!(
            call(good).expect("victim still serves").0,
            200,
            "after {name}"
        );
    }
    // The `..` entries are refused outright, naming the problem.
    let err = d
        .client()
        .deploy(
            "dotdot2",
            &opts(),
            image_bytes(&hostile(vec![raw("../x", tar::EntryType::Regular, None)])).as_slice(),
        )
        .expect_err("`..` must be refused");
    assert!(
        err.to_string().contains("escapes the root filesystem"),
        "{err}"
    );
    assert!(err.to_string().contains("HTTP 400"), "{err}");
}

#[test]
fn broken_uploads_are_refused_and_the_previous_version_keeps_serving() {
    let d = Daemon::start();
    let v1 = d.deploy("fn", &probe_image("hello", &[]), &opts());
    let good = image_bytes(&probe_image("inspect", &[]));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage",
            b"this is not a tarball at all, just some bytes".repeat(100),
        ),
        ("truncated-half", good[..good.len() / 2].to_vec()),
        ("truncated-end", good[..good.len() - 2048].to_vec()),
        (
            "no-manifest",
            faasd::image::build::layer_tar(&[Entry::file("hello", "x")]).expect("tar"),
        ),
    ];
    for (name, bytes) in cases {
        let err = d
            .client()
            .deploy("fn", &opts(), bytes.as_slice())
            .expect_err(name);
        let msg = err.to_string();
        assert!(msg.contains("HTTP 400"), "{name}: {msg}");
        eprintln!("{name}: {msg}");
        let info = d.client().inspect("fn").expect("inspect");
        assert_eq!(
            info.version, v1.version,
            "{name} must not replace the function"
        );
        assert_eq!(
            call(v1.ip).expect("still serving"),
            (200, "probe ok\n".to_string()),
            "after {name}"
        );
    }
    // Only the serving version's directory is in the store: no partial ones.
    let dirs: Vec<String> = std::fs::read_dir(d.state.join("rootfs"))
        .expect("store")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, d.store_dirs("fn"), "only fn's");
    assert_eq!(dirs.len(), 1, "one directory: {dirs:?}");
    assert!(
        std::fs::read_dir(d.state.join("uploads"))
            .expect("uploads")
            .next()
            .is_none(),
        "uploads removed"
    );
}
