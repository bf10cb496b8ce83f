//! Image ingest against mutated archives, on stable Rust: the bounded
//! companion of the cargo-fuzz target (`fuzz/`, `scripts/fuzz.sh`). Valid
//! images of every layout are corrupted by byte flips, truncations,
//! splices and duplications; each must unpack or fail with a typed error
//! — no panic, no hang — and write nothing beside its scratch directory.

use std::time::{Duration, Instant};

use faasd::image::build::{single_binary, write_image, Entry, ImageSpec, Layer, Layout};
use faasd::image::{unpack_image, Limits};

const ROUNDS: u32 = 4000;

/// xorshift64*: deterministic, so a failure reproduces from its round.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (layout, gzip) in [
        (Layout::Classic, false),
        (Layout::Oci, true),
        (Layout::Both, false),
    ] {
        let mut spec: ImageSpec = single_binary(b"#!/bin/sh\necho hi\n".to_vec(), "seed:latest");
        spec.layout = layout;
        spec.layers[0].gzip = gzip;
        spec.layers.push(Layer {
            entries: vec![
                Entry::dir("etc"),
                Entry::file("etc/passwd", "root:x:0:0::/:/bin/sh\n"),
                Entry::Symlink {
                    path: "bin".into(),
                    target: "usr/bin".into(),
                },
                Entry::whiteout("handler"),
                Entry::Hardlink {
                    path: "again".into(),
                    target: "etc/passwd".into(),
                },
            ],
            gzip: !gzip,
        });
        let mut bytes = Vec::new();
        write_image(&spec, &mut bytes).expect("seed image");
        seeds.push(bytes);
    }
    seeds
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 => {
                for _ in 0..=rng.below(16) {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
            }
            1 => b.truncate(rng.below(b.len())),
            2 => {
                // Overwrite a run with bytes from elsewhere (headers onto data).
                let (from, to) = (rng.below(b.len()), rng.below(b.len()));
                let n = rng.below(1024).min(b.len() - from).min(b.len() - to);
                let chunk = b[from..from + n].to_vec();
                b[to..to + n].copy_from_slice(&chunk);
            }
            3 => {
                // Duplicate a 512-byte block (a tar member repeated).
                let block = rng.below(b.len() / 512) * 512;
                let end = (block + 512).min(b.len());
                let chunk = b[block..end].to_vec();
                b.splice(block..block, chunk);
            }
            _ => {
                // Digits where numbers live: sizes, modes, ids.
                let i = rng.below(b.len());
                b[i] = b"0123456789777"[rng.below(13)];
            }
        }
        if b.is_empty() {
            break;
        }
    }
    b
}

#[test]
fn mutated_archives_fail_cleanly_and_stay_in_their_directory() {
    let seeds = seeds();
    let limits = Limits {
        max_layers: 8,
        max_extracted_bytes: 8 << 20,
        max_files: 2_000,
        max_path_depth: 32,
    };
    let mut rng = Rng(0x5EED_F00D_CAFE_D00D);
    let (mut ok, mut refused) = (0u32, 0u32);
    let t0 = Instant::now();
    for round in 0..ROUNDS {
        let seed = &seeds[round as usize % seeds.len()];
        let bytes = mutate(&mut rng, seed);
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = dir.path().join("image.tar");
        std::fs::write(&archive, &bytes).expect("write archive");
        let dest = dir.path().join("rootfs");
        std::fs::create_dir(&dest).expect("dest");
        let started = Instant::now();
        match unpack_image(&archive, &dest, &limits) {
            Ok(_) => ok += 1,
            Err(_) => refused += 1,
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "round {round} took {:?}",
            started.elapsed()
        );
        let mut beside: Vec<String> = std::fs::read_dir(dir.path())
            .expect("scratch")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        beside.sort();
        assert_eq!(
            beside,
            ["image.tar", "rootfs"],
            "round {round} wrote beside its rootfs"
        );
    }
    eprintln!(
        "{ROUNDS} mutated archives in {:?}: {ok} unpacked, {refused} refused",
        t0.elapsed()
    );
    assert!(
        refused > 0 && ok > 0,
        "mutations should both break and spare archives"
    );
}
