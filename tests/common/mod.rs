//! Helpers of the root (CLI) tests, in one place: running the built binary and git, and the
//! model fixtures the crates' own tests make (transformers checkpoints, tokenizers, texts).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The model crate's fixtures: tiny Llama/Qwen checkpoints, the real-text helpers, servers.
#[path = "../../crates/model/tests/common/mod.rs"]
pub mod model;

/// The QAT crate's fixtures: the tiny trained model with its texts, and recipes for it.
#[path = "../../crates/qat/tests/common/mod.rs"]
pub mod qat;

/// Runs the built `autoqat` with `args` in the current directory.
pub fn autoqat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autoqat")).args(args).output().expect("running autoqat")
}

/// Runs the built `autoqat` with `args` in `dir`.
pub fn autoqat_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autoqat")).args(args).current_dir(dir).output().expect("running autoqat")
}

/// A temp path as the `&str` a command line takes.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// `git args` in `dir`, which must succeed; its stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(dir).output().expect("running git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}
