//! A binary deleted or replaced while it runs (a rebuild, `cargo install --force` during an
//! overnight run): the run goes on with the binary it started with, for its own children too.

use std::process::Command;

#[test]
fn the_demo_finishes_after_its_binary_is_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let aq = tmp.path().join("autoqat");
    // A second name for the same file (a copy where a link cannot be made): deleting it is
    // what a rebuild does to the path a running binary was started from.
    if std::fs::hard_link(env!("CARGO_BIN_EXE_autoqat"), &aq).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_autoqat"), &aq).unwrap();
    }
    let ws = tmp.path().join("ws");
    let child = Command::new(&aq)
        .args(["demo", "--quick", "--experiments", "2", "--dir"])
        .arg(&ws)
        .env("AUTOQAT_CACHE_DIR", tmp.path().join("cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `spawn` returns once the exec happened: the demo runs from here on without its path.
    std::fs::remove_file(&aq).unwrap();
    let out = child.wait_with_output().unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    let rows = autoqat_workspace::results::read(&ws.join("results.tsv")).unwrap();
    assert_eq!(rows.len(), 3, "the baseline and two experiments: {all}");
    assert!(rows.iter().all(|r| r.status() != autoqat_workspace::results::Status::Crash), "{all}");
}
