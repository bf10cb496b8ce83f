//! Becoming the image's program: `execvpe` with faas-init's own
//! capabilities dropped first.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;

use crate::caps;

/// Becomes `program` (looked up in PATH), with `extra` added to the
/// environment. Returns only on failure.
pub fn exec(program: &[OsString], extra: &[(&str, String)]) -> Result<ExitCode, String> {
    let cstr = |s: OsString| {
        CString::new(s.into_vec()).map_err(|_| "an argument contains a NUL byte".to_string())
    };
    let argv = program
        .iter()
        .cloned()
        .map(cstr)
        .collect::<Result<Vec<_>, _>>()?;
    let mut env: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os() {
        if extra.iter().any(|(name, _)| k == *name) {
            continue;
        }
        let mut kv = k;
        kv.push("=");
        kv.push(v);
        env.push(cstr(kv)?);
    }
    for (k, v) in extra {
        env.push(cstr(OsString::from(format!("{k}={v}")))?);
    }
    caps::drop_for_program().map_err(|e| format!("dropping faas-init's own capabilities: {e}"))?;
    let err = nix::unistd::execvpe(&argv[0], &argv, &env).unwrap_err();
    Err(format!("executing {:?}: {err}", program[0]))
}
