//! Helpers of the integration tests: finding the reference Python and running a reference script.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$AUTOQAT_PYTHON`, else `<repo>/.venv/bin/python`; `None` (and a printed reason) if neither.
pub fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("AUTOQAT_PYTHON") {
        let p = PathBuf::from(p);
        if p.exists() {
            return Some(p);
        }
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    eprintln!("skip: no AUTOQAT_PYTHON and no .venv/bin/python (run scripts/env.sh)");
    None
}

/// Runs the reference script `name` (under this crate's tests/reference) with `args`; panics
/// with its stderr on failure.
pub fn run_reference(py: &std::path::Path, name: &str, args: &[&std::ffi::OsStr]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference").join(name);
    let out = std::process::Command::new(py).arg(&script).args(args).output().expect("spawn python");
    assert!(out.status.success(), "{} failed:\n{}", name, String::from_utf8_lossy(&out.stderr));
}
