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

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port").local_addr().expect("its address").port()
}

/// Kills and reaps a child process when dropped, so a failing test leaves no server behind.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// llama.cpp's OpenAI-compatible server (the `llama-cpp-python` package, built from source)
/// serving the real SmolLM2-135M-Instruct GGUF that `$AUTOQAT_REAL_SMOLLM2` leaves
/// beside the Hugging Face directory; stopped when dropped.
pub struct LlamaServer {
    _child: Reaped,
    /// `http://127.0.0.1:PORT/v1`.
    pub url: String,
    /// The Hugging Face directory of the same weights.
    pub model_dir: std::path::PathBuf,
    /// The Python that runs it.
    pub py: std::path::PathBuf,
}

/// Starts [`LlamaServer`] with an `n_ctx`-token context and `api_key`; `None` without the
/// project's Python (the callers are slow tests, marked as such).
pub fn llama_server(n_ctx: u32, api_key: &str) -> Option<LlamaServer> {
    let py = model::python()?;
    let probe = Command::new(&py).args(["-c", "import llama_cpp.server"]).output().expect("python");
    assert!(probe.status.success(), "llama-cpp-python[server] is not installed in {}", py.display());
    let tool = std::env::var_os("AUTOQAT_REAL_SMOLLM2")
        .expect("AUTOQAT_REAL_SMOLLM2 is not set: the offline builder of the real SmolLM2 (scripts/env.sh sets it where it exists)");
    let model_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("real-smollm2");
    if !model_dir.join("model.safetensors").is_file() {
        let out = Command::new(&tool).arg(&model_dir).arg(&py).output().expect("real-smollm2");
        assert!(out.status.success(), "real-smollm2: {}", String::from_utf8_lossy(&out.stderr));
    }
    let gguf = std::fs::read_dir(&model_dir)
        .expect("the model directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "gguf"))
        .expect("the GGUF beside the model");
    let port = free_port();
    let child = Command::new(&py)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&gguf)
        .args(["--n_ctx", &n_ctx.to_string(), "--host", "127.0.0.1", "--port", &port.to_string(), "--api_key", api_key])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting llama_cpp.server");
    let child = Reaped(child);
    let up = (0..600).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(200));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "llama.cpp's server did not listen within 2 minutes");
    Some(LlamaServer { _child: child, url: format!("http://127.0.0.1:{port}/v1"), model_dir, py })
}
