//! Whole-file writes that a concurrent reader never sees half done: the bytes go to a
//! temporary sibling, which is synced and then renamed over the target. Every JSON file of a
//! run (summary, health, gates, manifests, indexes) and `results.tsv` are written this way.
//! The append-only tables (`results.tsv` while a run is live, `heldout.tsv`) grow by one synced
//! row at a time, which their readers expect to find half written at worst.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result, WorkspaceError};

/// The temporary sibling of `path` (`<name>.tmp`), left behind only by a crash mid-write.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces the file `path` with what `make` writes, atomically: `make` writes the temporary
/// sibling (its argument), which is then synced and renamed over `path`. On any failure the
/// temporary is removed, so a full disk leaves no torn file beside the intact old one. `io`
/// turns a sync or rename error into the caller's error type. Every file autoqat must not leave
/// half written goes through here, whatever writes its bytes (JSON, safetensors, Parquet).
pub fn replace_with<T, E>(
    path: &Path,
    make: impl FnOnce(&Path) -> std::result::Result<T, E>,
    io: impl Fn(&Path, std::io::Error) -> E,
) -> std::result::Result<T, E> {
    let tmp = tmp_path(path);
    let made = make(&tmp).and_then(|v| {
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io(&tmp, e))?;
        Ok(v)
    });
    match made {
        Ok(v) => {
            std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Replaces the directory `path` with what `make` writes into a fresh temporary sibling
/// directory (its argument). The old directory is renamed aside to `<name>.old`, the new one
/// renamed in, then the old removed: a kill at any point leaves a whole directory under `path`
/// or `<name>.old`, never a half-written one under `path`. On failure the temporary is removed.
pub fn replace_dir_with<T, E>(
    path: &Path,
    make: impl FnOnce(&Path) -> std::result::Result<T, E>,
    io: impl Fn(&Path, std::io::Error) -> E,
) -> std::result::Result<T, E> {
    let tmp = tmp_path(path);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let v = match make(&tmp) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".old");
    let old = path.with_file_name(name);
    let _ = std::fs::remove_dir_all(&old);
    if path.exists() {
        std::fs::rename(path, &old).map_err(|e| io(path, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(v)
}

/// Replaces `path` with `bytes` atomically (temporary file, fsync, rename).
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |p: &Path, e| WorkspaceError::io(p, e);
    replace_with(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| io(tmp, e)), io)
}

/// Replaces `path` with `value` as pretty JSON (one trailing newline), atomically.
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| WorkspaceError::Format { path: path.to_path_buf(), msg: format!("cannot serialize: {e}") })?;
    write(path, (text + "\n").as_bytes())
}

/// Appends `row` and a newline to the table at `path`, with `header` first when the file is
/// new or empty, and syncs it: a finished row survives a crash right after.
pub fn append_row(path: &Path, header: &str, row: &str) -> Result<()> {
    let fresh = std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true);
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io_err(path))?;
    let text = if fresh { format!("{header}\n{row}\n") } else { format!("{row}\n") };
    file.write_all(text.as_bytes()).map_err(io_err(path))?;
    file.sync_data().map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_writer_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("shard.parquet");
        std::fs::write(&p, "old").unwrap();
        let err = super::replace_with(
            &p,
            |tmp| {
                std::fs::write(tmp, "half").unwrap();
                Err::<(), String>("disk full".into())
            },
            |path, e| format!("{}: {e}", path.display()),
        )
        .unwrap_err();
        assert_eq!(err, "disk full");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        assert!(!super::tmp_path(&p).exists());
    }

    #[test]
    fn replaces_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("summary.json");
        std::fs::write(&p, "old").unwrap();
        super::write_json(&p, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\n  \"a\": 1\n}\n");
        assert!(!super::tmp_path(&p).exists());
        assert_eq!(super::tmp_path(&p).file_name().unwrap(), "summary.json.tmp");
    }
}
