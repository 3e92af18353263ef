//! Helpers shared by the integration tests: finding the reference Python and the test data.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root (these helpers are also used by the root crate's tests).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if here.join("crates").is_dir() {
        here
    } else {
        here.join("../..")
    }
}

/// This crate's directory, wherever the test that includes this module lives.
fn qat_dir() -> PathBuf {
    repo_root().join("crates/qat")
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

/// A file of `$AUTOQAT_DATA` (scripts/env.sh sets it), or `None` with a printed reason.
pub fn shared_data(name: &str) -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("AUTOQAT_DATA") else {
        eprintln!("skip: AUTOQAT_DATA is not set (the directory of the real test text)");
        return None;
    };
    let p = PathBuf::from(dir).join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skip: test data {} is absent", p.display());
        None
    }
}

/// Runs the reference script `name` (under tests/reference) with `args`; panics with its
/// stderr on failure.
pub fn run_reference(py: &std::path::Path, name: &str, args: &[&std::ffi::OsStr]) {
    let script = qat_dir().join("tests/reference").join(name);
    let out = std::process::Command::new(py).arg(&script).args(args).output().expect("spawn python");
    assert!(out.status.success(), "{} failed:\n{}", name, String::from_utf8_lossy(&out.stderr));
}

/// A tiny random Llama HF directory (config, weights, tokenizer, train.txt) made once per
/// test process by tests/reference/make_tiny_teacher.py; `None` when Python is missing.
pub fn tiny_model() -> Option<PathBuf> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let py = python()?;
        let script = qat_dir().join("tests/reference/make_tiny_teacher.py");
        let read = |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let text = read(script.clone());
        let shared = read(repo_root().join("python/autoqat_ref/tiny.py"));
        // A content hash keys the cache, so an edited script (or its shared module) regenerates.
        let h = autoqat_workspace::hash::fnv1a64(&text.iter().chain(&shared).copied().collect::<Vec<u8>>());
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!("qat-tiny-{h:016x}"));
        if dir.join("model.safetensors").is_file() {
            return Some(dir);
        }
        let tmp = base.join(format!("qat-tiny-{h:016x}.tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let mut cmd = std::process::Command::new(&py);
        cmd.arg(&script).arg(&tmp);
        if let Some(t) = shared_data("tinystories-valid-sample.txt") {
            cmd.arg(t);
        }
        let out = cmd.output().expect("spawn python");
        assert!(out.status.success(), "make_tiny_teacher.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Some(dir)
    })
    .clone()
}

/// A recipe for the tiny model: `extra` is TOML merged over the defaults (whole sections).
pub fn tiny_recipe(model: &std::path::Path, extra: &str) -> autoqat_recipe::Recipe {
    let base = format!(
        "[model]\nsource = \"{m}\"\n[data]\ntrain_text = \"{m}/train.txt\"\neval_text = \"{m}/train.txt\"\nseq_len = 32\neval_ctx = 64\neval_stride = 64\neval_max_tokens = 1024\n[runtime]\ndevice = \"cpu\"\n",
        m = model.display()
    );
    let mut table: toml::Table = base.parse().unwrap();
    let over: toml::Table = extra.parse().unwrap();
    for (k, v) in over {
        match (table.get_mut(&k), v) {
            (Some(toml::Value::Table(t)), toml::Value::Table(o)) => t.extend(o),
            (_, v) => {
                table.insert(k, v);
            }
        }
    }
    autoqat_recipe::parse(&toml::to_string(&table).unwrap()).unwrap_or_else(|e| panic!("{e}"))
}
