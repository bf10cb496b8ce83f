//! Hostile image archives beyond path escapes (those are in images.rs):
//! symlink chains and loops, device nodes, fifos, setuid files, duplicate
//! entries, odd names, a gzip bomb, a sparse file claiming 4 GiB, a
//! manifest naming a missing layer, a layer that is not what its diff_id
//! says. Each is refused with the reason or unpacked harmlessly inside
//! the rootfs; none writes outside, and the serving function serves on.

mod common;

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;
use faasd::image::build::{Entry, ImageSpec, Layer, Layout, RunConfig};

fn probe_layer() -> Layer {
    Layer {
        entries: vec![Entry::exe("probe", handler_bytes("probe"))],
        gzip: false,
    }
}

fn image(entries: Vec<Entry>, gzip: bool) -> ImageSpec {
    ImageSpec {
        layers: vec![probe_layer(), Layer { entries, gzip }],
        config: RunConfig {
            entrypoint: vec!["/probe".into()],
            cmd: vec!["hello".into()],
            ..Default::default()
        },
        layout: Layout::Classic,
        tag: "hostile:latest".into(),
    }
}

fn raw(path: &[u8], kind: tar::EntryType, link: Option<&str>) -> Entry {
    Entry::Raw {
        path: path.to_vec(),
        kind,
        data: Vec::new(),
        link: link.map(str::to_string),
    }
}

/// Every entry under `root` (not following symlinks).
fn walk(root: &Path) -> Vec<(std::path::PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir)
            .expect("read_dir")
            .filter_map(Result::ok)
        {
            let meta = std::fs::symlink_metadata(e.path()).expect("stat");
            if meta.is_dir() {
                dirs.push(e.path());
            }
            out.push((e.path(), meta));
        }
    }
    out
}

fn store_entries(d: &Daemon) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d.state.join("rootfs"))
        .expect("store")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn odd_entries_unpack_harmlessly_inside_the_rootfs() {
    let d = Daemon::start();
    let victim = d.deploy("victim", &probe_image("hello", &[]), &opts()).ip;
    let outside = tempfile::tempdir().expect("outside");
    let target = outside.path().to_string_lossy().into_owned();
    // One component longer than any Linux filesystem allows (255).
    let long_name = format!("{}/f", "n".repeat(300));
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        (
            "symlink-chain",
            vec![
                Entry::Symlink {
                    path: "one".into(),
                    target: "two".into(),
                },
                Entry::Symlink {
                    path: "two".into(),
                    target: target.clone(),
                },
                Entry::file("one/pwned-chain", "pwned"),
            ],
        ),
        (
            "symlink-loop",
            vec![
                Entry::Symlink {
                    path: "a".into(),
                    target: "b".into(),
                },
                Entry::Symlink {
                    path: "b".into(),
                    target: "a".into(),
                },
                Entry::file("a/pwned-loop", "pwned"),
            ],
        ),
        (
            "devices-and-fifo",
            vec![
                raw(b"dev-null", tar::EntryType::Char, None),
                raw(b"disk", tar::EntryType::Block, None),
                raw(b"pipe", tar::EntryType::Fifo, None),
            ],
        ),
        (
            "setuid",
            vec![Entry::File {
                path: "suid-shell".into(),
                mode: 0o6755,
                data: b"#!/bin/sh\n".to_vec(),
            }],
        ),
        (
            "duplicates",
            vec![
                Entry::file("dup", "first"),
                Entry::file("dup", "second"),
                Entry::dir("dup"),
                Entry::file("dup/inner", "third"),
                Entry::Symlink {
                    path: "dup".into(),
                    target: target.clone(),
                },
                Entry::file("dup/pwned-dup", "pwned"),
            ],
        ),
        (
            "non-utf8",
            vec![raw(b"caf\xe9-\xff\xfe", tar::EntryType::Regular, None)],
        ),
        ("long-name", vec![Entry::file(&long_name, "x")]),
    ];
    for (name, entries) in cases {
        let result = d.client().deploy(
            name,
            &opts(),
            image_bytes(&image(entries, false)).as_slice(),
        );
        eprintln!(
            "{name}: {:?}",
            result.as_ref().map(|i| i.ip).map_err(|e| e.to_string())
        );
        if let Err(e) = &result {
            let msg = e.to_string();
            assert!(msg.contains("HTTP 4"), "{name} failed, not refused: {msg}");
        }
        let written: Vec<_> = std::fs::read_dir(outside.path())
            .expect("outside")
            .collect();
        assert!(written.is_empty(), "{name} wrote outside: {written:?}");
        assert_eq!(call(victim).expect("victim").0, 200, "after {name}");
        if let Ok(info) = result {
            let dirs = d.store_dirs(name);
            assert_eq!(dirs.len(), 1, "{name} (version {}): {dirs:?}", info.version);
            let rootfs = d.seen(&d.state.join("rootfs").join(&dirs[0]));
            let entries = walk(&rootfs);
            assert!(
                entries.iter().any(|(p, _)| p.ends_with("probe")),
                "{name}: the rootfs as faasd sees it holds the image"
            );
            for (path, meta) in entries {
                let ft = meta.file_type();
                assert!(
                    !ft.is_char_device() && !ft.is_block_device(),
                    "{name}: device node {path:?}"
                );
                assert_eq!(meta.mode() & 0o6000, 0, "{name}: setuid/setgid {path:?}");
            }
            assert_eq!(call(info.ip).expect("serves").0, 200, "{name} serves");
        }
    }
}

/// Rebuilds an outer image archive, letting `edit` replace or drop members.
fn rewrite(archive: &[u8], mut edit: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    let mut input = tar::Archive::new(archive);
    for entry in input.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read member");
        let Some(data) = edit(&path, data) else {
            continue;
        };
        let mut h = entry.header().clone();
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.append(&h, data.as_slice()).expect("append");
    }
    out.into_inner().expect("finish")
}

/// A one-file layer whose GNU sparse map claims `real` bytes.
fn sparse_layer(real: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path("sparse").expect("path");
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(512);
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{v:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    };
    let gnu = h.as_gnu_mut().expect("gnu header");
    octal(&mut gnu.sparse[0].offset, real - 512);
    octal(&mut gnu.sparse[0].numbytes, 512);
    octal(&mut gnu.realsize, real);
    h.set_cksum();
    let mut tar = tar::Builder::new(Vec::new());
    tar.append(&h, &[7u8; 512][..]).expect("sparse entry");
    tar.into_inner().expect("finish")
}

#[test]
fn bombs_and_lies_are_refused_with_the_reason() {
    let d = Daemon::start_with(&["--max-extracted", "32M"]);
    let victim = d.deploy("victim", &probe_image("hello", &[]), &opts());
    let keep = d.store_dirs("victim");
    assert_eq!(keep.len(), 1, "victim version {}", victim.version);
    let good = image_bytes(&image(vec![Entry::file("x", "x")], false));

    let bomb = image_bytes(&image(
        vec![Entry::file("zeros", vec![0u8; 64 << 20])],
        true,
    ));
    assert!(
        bomb.len() < good.len() + (1 << 20),
        "the bomb's layer is small: {} bytes",
        bomb.len() - good.len()
    );

    let mut layer_no = 0;
    let sparse = rewrite(&good, |path, data| {
        if !path.ends_with("layer.tar") {
            return Some(data);
        }
        layer_no += 1;
        // The second layer becomes the sparse file (its diff_id is then
        // wrong too, but the limit is met first).
        Some(if layer_no == 2 {
            sparse_layer(4 << 30)
        } else {
            data
        })
    });
    let missing = rewrite(&good, |path, data| {
        (!path.ends_with("layer.tar") || path.starts_with(&first_layer(&good))).then_some(data)
    });
    let lying = rewrite(&good, |path, data| {
        if path.ends_with("layer.tar") && !path.starts_with(&first_layer(&good)) {
            Some(faasd::image::build::layer_tar(&[Entry::file("x", "not x")]).expect("tar"))
        } else {
            Some(data)
        }
    });
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("gzip-bomb", bomb, "HTTP 413", "extracted bytes"),
        ("sparse-4g", sparse, "HTTP 413", "extracted bytes"),
        ("missing-layer", missing, "HTTP 400", "missing"),
        ("diff-id-lie", lying, "HTTP 400", "diff_id"),
        ("zero-bytes", Vec::new(), "HTTP 400", "empty"),
    ];
    for (name, bytes, status, reason) in cases {
        let t0 = std::time::Instant::now();
        let err = d
            .client()
            .deploy(name, &opts(), bytes.as_slice())
            .expect_err(name);
        let msg = err.to_string();
        eprintln!("{name}: {msg} ({:?})", t0.elapsed());
        assert!(msg.contains(status), "{name}: {msg}");
        assert!(msg.contains(reason), "{name}: {msg}");
        assert_eq!(store_entries(&d), keep, "{name} left a partial rootfs");
        assert_eq!(call(victim.ip).expect("victim").0, 200, "after {name}");
    }
}

/// The directory of the first layer in a classic archive (its members
/// are `<dir>/layer.tar`), from manifest.json.
fn first_layer(archive: &[u8]) -> String {
    let mut input = tar::Archive::new(archive);
    for entry in input.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_string_lossy() == "manifest.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text).expect("manifest");
            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
            let layer = v[0]["Layers"][0].as_str().expect("layer path");
            return layer.trim_end_matches("layer.tar").to_string();
        }
    }
    panic!("no manifest.json");
}

#[test]
fn every_image_limit_is_a_4xx_naming_it() {
    let d = Daemon::start_with(&[
        "--max-layers",
        "3",
        "--max-files",
        "20",
        "--max-path-depth",
        "6",
        "--max-extracted",
        "8M",
        "--max-upload",
        "16M",
    ]);
    let victim = d.deploy("victim", &probe_image("hello", &[]), &opts()).ip;
    let many_layers = ImageSpec {
        layers: (0..4)
            .map(|i| Layer {
                entries: vec![Entry::file(&format!("f{i}"), "x")],
                gzip: false,
            })
            .collect(),
        ..image(Vec::new(), false)
    };
    let many_files = image(
        (0..30)
            .map(|i| Entry::file(&format!("f{i}"), "x"))
            .collect(),
        false,
    );
    let deep = image(vec![Entry::file("a/b/c/d/e/f/g/h", "x")], false);
    let big = image(vec![Entry::file("big", vec![1u8; 9 << 20])], true);
    let huge_upload = image(vec![Entry::file("huge", vec![2u8; 17 << 20])], false);
    let cases: Vec<(&str, ImageSpec, &str, &str)> = vec![
        ("layers", many_layers, "HTTP 413", "layer count"),
        ("files", many_files, "HTTP 413", "file"),
        ("depth", deep, "HTTP 413", "path depth"),
        ("extracted", big, "HTTP 413", "extracted bytes"),
        ("upload", huge_upload, "HTTP 413", "limit"),
    ];
    for (name, spec, status, limit) in cases {
        let err = d
            .client()
            .deploy(name, &opts(), image_bytes(&spec).as_slice())
            .expect_err(name);
        let msg = err.to_string();
        eprintln!("{name}: {msg}");
        assert!(msg.contains(status) && msg.contains(limit), "{name}: {msg}");
        assert_eq!(call(victim).expect("victim").0, 200, "after {name}");
    }
}
