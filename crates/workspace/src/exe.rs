//! The running autoqat binary as a path a child process can execute.

use std::path::PathBuf;

/// The running binary: its installed path while that path still holds this binary, else (on
/// Linux) `/proc/<pid>/exe`, which keeps a replaced or deleted binary reachable while this
/// process lives. A rebuild or an upgrade during an overnight run then neither breaks the
/// trials the run starts nor swaps the version under them.
pub fn self_exe() -> std::io::Result<PathBuf> {
    let path = std::env::current_exe()?;
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let proc = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
        let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
        match (std::fs::metadata(&path), std::fs::metadata(&proc)) {
            (Ok(a), Ok(b)) if same(&a, &b) => return Ok(path),
            (_, Ok(_)) => return Ok(proc),
            _ => {}
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unchanged_binary_is_its_own_path() {
        assert_eq!(super::self_exe().unwrap(), std::env::current_exe().unwrap());
    }
}
