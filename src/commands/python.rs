//! `autoqat python ARGS...`: runs the Python that the python-qat template's trials use, so that
//! the loop and a human at the shell run `train.py` the same way. The interpreter is
//! `$AUTOQAT_PYTHON`, else the virtual environment whose PyTorch this binary was built against
//! (the project's `.venv`), else `python3` on PATH.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use crate::cli::PythonArgs;

/// The interpreter and where it came from (for messages).
pub fn interpreter() -> (PathBuf, &'static str) {
    if let Some(p) = std::env::var_os("AUTOQAT_PYTHON").filter(|p| !p.is_empty()) {
        return (PathBuf::from(p), "AUTOQAT_PYTHON");
    }
    // <venv>/lib/python3.X/site-packages/torch/lib -> <venv>/bin/python
    if let Some(lib) = option_env!("AUTOQAT_LIBTORCH_LIB") {
        if let Some(venv) = std::path::Path::new(lib).ancestors().nth(5) {
            let py = venv.join("bin/python");
            if py.is_file() {
                return (py, "the environment autoqat was built against");
            }
        }
    }
    (PathBuf::from("python3"), "PATH")
}

/// Runs `autoqat python`: replaces this process with the interpreter (same process group, so
/// the loop's timeout and signals reach it).
pub fn run(args: PythonArgs) -> anyhow::Result<()> {
    let (py, from) = interpreter();
    let argv: Vec<OsString> = args.args;
    let err = std::process::Command::new(&py).args(&argv).exec();
    anyhow::bail!(
        "cannot run {} (from {from}): {err} (hint: set AUTOQAT_PYTHON to a Python with torch and transformers, e.g. the project's .venv/bin/python)",
        py.display()
    )
}
