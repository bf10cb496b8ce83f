//! Fuzzes image ingest: any bytes as an uploaded `docker save` archive,
//! unpacked with small limits into a scratch directory. Whatever the
//! input, `unpack_image` must return (Ok or a typed error) without
//! panicking, and write nothing outside the scratch directory.
#![no_main]

use faasd::image::{unpack_image, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let archive = dir.path().join("image.tar");
    if std::fs::write(&archive, data).is_err() {
        return;
    }
    let dest = dir.path().join("rootfs");
    if std::fs::create_dir(&dest).is_err() {
        return;
    }
    let limits = Limits {
        max_layers: 8,
        max_extracted_bytes: 8 << 20,
        max_files: 2_000,
        max_path_depth: 32,
    };
    let _ = unpack_image(&archive, &dest, &limits);
});
