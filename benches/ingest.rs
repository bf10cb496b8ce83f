//! Benchmark of image ingest.
//!
//! Cases:
//! - `layer/extract_64MiB`: apply one uncompressed 64 MiB layer (256 files
//!   of 256 KiB) onto an empty rootfs through the confined filesystem ops;
//!   reported as throughput (bytes per second)
//! - `image/unpack_gzip_16MiB`: a whole docker-save archive with one gzip
//!   layer (64 files of 256 KiB): index, config, decompress, digest, apply

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use faasd::image::build::{layer_tar, write_image, Entry, ImageSpec, Layer, Layout, RunConfig};
use faasd::image::fsops::Root;
use faasd::image::layer::{apply_layer, Totals};
use faasd::image::{unpack_image, Limits};

fn files(n: usize, size: usize) -> Vec<Entry> {
    let mut entries = vec![Entry::dir("data")];
    for i in 0..n {
        // Incompressible enough to keep gzip honest.
        let data: Vec<u8> = (0..size)
            .map(|j| ((i * 7919 + j * 31) % 251) as u8)
            .collect();
        entries.push(Entry::file(&format!("data/f{i}"), data));
    }
    entries
}

fn layer(c: &mut Criterion) {
    let tar = layer_tar(&files(256, 256 << 10)).expect("tar");
    let mut group = c.benchmark_group("layer");
    group.throughput(Throughput::Bytes(tar.len() as u64));
    group.sample_size(10);
    group.bench_function("extract_64MiB", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dir| {
                let root = Root::open(dir.path()).expect("root");
                let mut totals = Totals::default();
                apply_layer(tar.as_slice(), &root, &Limits::default(), &mut totals).expect("apply");
                dir
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn image(c: &mut Criterion) {
    let spec = ImageSpec {
        layers: vec![Layer {
            entries: files(64, 256 << 10),
            gzip: true,
        }],
        config: RunConfig {
            entrypoint: vec!["/h".into()],
            ..Default::default()
        },
        layout: Layout::Both,
        tag: "bench:latest".into(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("image.tar");
    write_image(&spec, std::fs::File::create(&archive).expect("create")).expect("write");
    let mut group = c.benchmark_group("image");
    group.throughput(Throughput::Bytes(16 << 20));
    group.sample_size(10);
    group.bench_function("unpack_gzip_16MiB", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dest| {
                unpack_image(&archive, dest.path(), &Limits::default()).expect("unpack");
                dest
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, layer, image);
criterion_main!(benches);
