//! The docs name files that exist: every path in backticks in README.md
//! and docs/*.md that is one of ours (under a directory of this
//! repository, or a Rust source named from `src/` or `init/src/`).

use std::path::Path;

/// Top directories of this repository: a path starting with one is ours.
const OURS: &[&str] = &[
    "src/",
    "init/",
    "handler/",
    "protocol/",
    "tests/",
    "benches/",
    "scripts/",
    "loadtest/",
    "examples/",
    "dist/",
    "docs/",
    ".ci/",
    "fuzz/",
];
/// Generated, not in a checkout (`.gitignore`).
const GENERATED: &[&str] = &["loadtest/out/"];
/// Where a source file named without its crate's directory may be.
const SOURCE_ROOTS: &[&str] = &["", "src/", "init/src/"];

/// Backticked tokens of `text` that look like a path of ours.
fn paths(text: &str) -> Vec<&str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| {
            !t.is_empty()
                && t.contains('/')
                && !t.starts_with('/')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
        })
        .filter(|t| OURS.iter().any(|o| t.starts_with(o)) || t.ends_with(".rs"))
        .filter(|t| !GENERATED.iter().any(|g| t.starts_with(g)))
        .collect()
}

#[test]
fn every_path_the_docs_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md")];
    let dir = std::fs::read_dir(root.join("docs")).expect("docs/");
    docs.extend(
        dir.flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    let mut missing = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("read doc");
        for path in paths(&text) {
            if !SOURCE_ROOTS
                .iter()
                .any(|r| root.join(r).join(path).exists())
            {
                missing.push(format!("{}: {path}", doc.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths named in the docs that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_check_sees_paths() {
    let found = paths("see `src/daemon.rs`, `runtime/gone.rs`, `/proc/x`, `<state>/x/`, `a b/c`");
    assert_eq!(found, ["src/daemon.rs", "runtime/gone.rs"]);
}
