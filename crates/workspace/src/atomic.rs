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

/// Replaces `path` with `bytes` atomically (temporary file, fsync, rename).
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let done = f.write_all(bytes).and_then(|()| f.sync_data());
    if let Err(e) = done {
        // A full disk must not leave a torn temporary beside the intact old file.
        let _ = std::fs::remove_file(&tmp);
        return Err(WorkspaceError::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
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
