//! The files of a run directory: `steps.tsv` (one row per eval, flushed at once so a reader
//! can follow a live trial), `trial.log`, and `summary.json`.

use std::io::Write;
use std::path::Path;

use autoqat_workspace::run::{self, StepsWriter};
pub use autoqat_workspace::run::{StepRow, Summary, STEPS_COLUMNS};

use crate::error::{io_err, Result};

/// Writes `steps.tsv` (through the workspace contract) and `trial.log` of one run directory.
#[derive(Debug)]
pub struct RunFiles {
    dir: std::path::PathBuf,
    steps: StepsWriter,
    log: std::fs::File,
}

impl RunFiles {
    /// Opens the run directory (created); a fresh trial starts `steps.tsv` over, a resumed one
    /// keeps the rows up to `keep_until` (later rows are redone).
    pub fn open(dir: &Path, keep_until: Option<u64>) -> Result<Self> {
        let steps = StepsWriter::open(dir, keep_until)?;
        let log_path = dir.join(run::LOG_FILE);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(keep_until.is_some())
            .write(true)
            .truncate(keep_until.is_none())
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        Ok(Self { dir: dir.to_path_buf(), steps, log })
    }

    /// Appends one row to `steps.tsv` and flushes it.
    pub fn row(&mut self, row: &StepRow) -> Result<()> {
        Ok(self.steps.append(row)?)
    }

    /// Appends a line to `trial.log` (best effort: logging never ends a trial).
    pub fn log(&mut self, line: &str) {
        let _ = writeln!(self.log, "{line}");
        let _ = self.log.flush();
    }

    /// Writes `summary.json`.
    pub fn summary(&self, s: &Summary) -> Result<()> {
        write_summary(&self.dir, s)
    }
}

/// Writes `summary.json` into `dir` (atomically, so a reader never sees half of it).
pub fn write_summary(dir: &Path, s: &Summary) -> Result<()> {
    Ok(run::write_summary(dir, s)?)
}

/// Writes pretty JSON to `dir/name` atomically: the run directory's files (summary, health,
/// gates) are read by other processes while the trial runs.
pub fn write_json<T: serde::Serialize>(dir: &Path, name: &str, value: &T) -> Result<()> {
    Ok(autoqat_workspace::atomic::write_json(&dir.join(name), value)?)
}

/// Reads the `steps.tsv` rows of run directory `dir` (for tests and resume checks).
pub fn read_steps(dir: &Path) -> Result<Vec<StepRow>> {
    Ok(run::read_steps(&dir.join(run::STEPS_FILE))?)
}
