//! `heldout.tsv`: the held-out scores of the best recipe (and of each keep, when asked), one row
//! per scored experiment. The loop writes it after keep/discard decisions are made and never
//! reads it back into a decision or a prompt: selection runs on the eval text, the report puts
//! the two figures side by side.

use std::path::Path;

use crate::error::{Result, WorkspaceError};

/// The header of heldout.tsv.
pub const HEADER: &str = "exp\tcommit\tsearch_ppl\theldout_ppl\ttime_s";

/// One held-out score.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    /// Experiment number.
    pub exp: u32,
    /// Its commit (12 hex digits).
    pub commit: String,
    /// The eval PPL the loop selected on.
    pub search_ppl: Option<f64>,
    /// The PPL on the held-out text.
    pub heldout_ppl: f64,
    /// Seconds the scoring took.
    pub time_s: f64,
}

/// Reads heldout.tsv; a missing file has no rows, a line that does not read is left out (the
/// file is a report, rebuilt by scoring again).
pub fn read(path: &Path) -> Result<Vec<Row>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(WorkspaceError::io(path, e)),
    };
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let c: Vec<&str> = line.split('\t').collect();
            Some(Row {
                exp: c.first()?.parse().ok()?,
                commit: c.get(1)?.to_string(),
                search_ppl: c.get(2)?.parse().ok(),
                heldout_ppl: c.get(3)?.parse().ok()?,
                time_s: c.get(4)?.parse().unwrap_or(0.0),
            })
        })
        .collect())
}

fn line(row: &Row) -> String {
    let search = row.search_ppl.map(|p| format!("{p:.4}")).unwrap_or_default();
    let commit: String = row.commit.chars().take(12).collect();
    format!("{}\t{commit}\t{search}\t{:.4}\t{:.1}", row.exp, row.heldout_ppl, row.time_s)
}

/// Appends one row (with the header when the file is new), synced to disk.
pub fn append(path: &Path, row: &Row) -> Result<()> {
    crate::atomic::append_row(path, HEADER, &line(row))
}

/// Writes every row at once (the rebuild from git), atomically.
pub fn write_all(path: &Path, rows: &[Row]) -> Result<()> {
    let mut text = format!("{HEADER}\n");
    for r in rows {
        text.push_str(&line(r));
        text.push('\n');
    }
    crate::atomic::write(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("heldout.tsv");
        assert!(read(&p).unwrap().is_empty());
        let a =
            Row { exp: 3, commit: "0123456789abcdef".into(), search_ppl: Some(1.85), heldout_ppl: 1.9012, time_s: 4.2 };
        let b = Row { exp: 7, commit: "fedcba987654".into(), search_ppl: None, heldout_ppl: 2.5, time_s: 1.0 };
        append(&p, &a).unwrap();
        append(&p, &b).unwrap();
        let rows = read(&p).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].commit, "0123456789ab");
        assert_eq!((rows[0].exp, rows[0].search_ppl, rows[0].heldout_ppl), (3, Some(1.85), 1.9012));
        assert_eq!((rows[1].search_ppl, rows[1].heldout_ppl), (None, 2.5));
        assert!(std::fs::read_to_string(&p).unwrap().starts_with(HEADER));
    }
}
