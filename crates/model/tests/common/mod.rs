//! Shared test fixture: tiny random checkpoints and reference outputs made by
//! `tests/reference/make_tiny.py` with Python transformers, generated once per script version
//! under the cargo target's temp dir (offline, self-contained). Used by this crate's tests and
//! by the root crate's `tests/eval_cli.rs`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Works from both the model crate (crates/model) and the root crate.
    if here.join("crates").is_dir() {
        here.to_path_buf()
    } else {
        here.join("../..")
    }
}

/// `$AUTOQAT_PYTHON`, else `<repo>/.venv/bin/python`, else None.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AUTOQAT_PYTHON") {
        let p = PathBuf::from(p);
        if p.exists() {
            return Some(p);
        }
    }
    let venv = repo_root().join(".venv/bin/python");
    venv.exists().then_some(venv)
}

/// `$AUTOQAT_DATA/wikitext-2-raw-test.txt` when present (scripts/env.sh sets `AUTOQAT_DATA`).
pub fn wikitext() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("AUTOQAT_DATA")?).join("wikitext-2-raw-test.txt");
    p.is_file().then_some(p)
}

fn script() -> PathBuf {
    repo_root().join("crates/model/tests/reference/make_tiny.py")
}

/// The fixture directory, or None (with the reason printed) when it cannot be made here.
pub fn fixtures() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(make_fixtures).as_deref()
}

fn make_fixtures() -> Option<PathBuf> {
    script_fixture("model-ref", &script(), &[], "reference.json")
}

/// The output directory of a reference script, run once as `python SCRIPT ARGS... OUT
/// [--wikitext PATH]` and cached under the cargo target's temp dir, keyed by the content of the
/// script and of the shared `python/autoqat_ref/tiny.py` (an edit regenerates it). `marker` is
/// a file the script writes last. None (with the reason printed) when it cannot run here.
pub fn script_fixture(tag: &str, script: &Path, args: &[&str], marker: &str) -> Option<PathBuf> {
    let Some(py) = python() else {
        eprintln!("skipping: no Python with transformers (set AUTOQAT_PYTHON or create .venv)");
        return None;
    };
    let script_text = std::fs::read(script).ok()?;
    let shared = std::fs::read(repo_root().join("python/autoqat_ref/tiny.py")).ok()?;
    // A content hash keys the cache, so an edited script (or its shared module) regenerates.
    let h = autoqat_workspace::hash::fnv1a64(
        &script_text
            .iter()
            .chain(&shared)
            .chain(wikitext().is_some().to_string().as_bytes())
            .copied()
            .collect::<Vec<u8>>(),
    );
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!("{tag}-{h:016x}"));
    if dir.join(marker).is_file() {
        return Some(dir);
    }
    let tmp = base.join(format!("{tag}-{h:016x}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut cmd = Command::new(&py);
    cmd.arg(script).args(args).arg(&tmp);
    if let Some(w) = wikitext() {
        cmd.arg("--wikitext").arg(w);
    } else {
        eprintln!("note: wikitext-2 absent; the reference script uses a generated text");
    }
    let out = cmd.output().expect("running the reference script");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No module named") {
            eprintln!("skipping: reference Python lacks a module: {err}");
            return None;
        }
        panic!("{} failed:\n{err}", script.display());
    }
    // Another test process may have won the race; either copy is complete.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Some(dir)
}

/// Reference perplexities: model -> "ctx/stride" -> (eval_loss, eval_ppl, tokens).
pub fn reference_ppl(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json parses")
}

/// True when the references were computed on WikiText-2 (not the generated fallback).
pub fn on_wikitext(reference: &serde_json::Value) -> bool {
    reference["source"] == "wikitext"
}

/// Relative error `|a - b| / |b|`.
pub fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// The distillation-traces fixture made by `tests/reference/kd_ref.py`: a teacher pre-trained
/// on real text with its tokenizer, a second tokenizer, prompts, held-out prompts, train and
/// eval text. None (with the reason printed) when Python cannot run here.
pub fn kd_fixture() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| script_fixture("kd-ref", &repo_root().join("tests/reference/kd_ref.py"), &["make"], "done.json"))
        .as_deref()
}

/// `tests/reference/kd_server.py`: an OpenAI-compatible server on loopback whose answers come
/// from a real model. Killed and reaped when dropped, so no test leaves it behind.
pub struct Server {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>/v1`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Serves `model` with the server's extra flags (`--fail-first 2`, `--require-key K`...).
    pub fn start(model: &Path, extra: &[&str]) -> Option<Server> {
        let py = python()?;
        let dir = tempfile::tempdir().ok()?;
        let port_file = dir.path().join("port");
        let child = Command::new(py)
            .arg(repo_root().join("tests/reference/kd_server.py"))
            .arg(model)
            .arg("--port-file")
            .arg(&port_file)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let mut server = Server { child, url: String::new(), _dir: dir };
        // Importing torch and transformers takes a few seconds.
        for _ in 0..600 {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                server.url = format!("http://127.0.0.1:{}/v1", p.trim());
                return Some(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("kd_server.py exited with {status} before listening");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("kd_server.py did not listen within 60 s");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
