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

/// A trial's peak memory: on CUDA the device memory it added, elsewhere the process's peak RSS.
#[derive(Debug, Clone, Copy)]
pub struct MemMeter {
    /// CUDA device index and the bytes in use on it when the trial began.
    cuda: Option<(usize, u64)>,
}

impl MemMeter {
    /// Starts measuring on `device` (on CUDA this creates the context, so the baseline holds it).
    pub fn start(device: tch::Device) -> Self {
        let cuda = match device {
            tch::Device::Cuda(i) => autoqat_model::device::cuda_used_bytes(i).map(|b| (i, b)),
            _ => None,
        };
        MemMeter { cuda }
    }

    /// Peak memory in MB so far. On CUDA: bytes in use now less the baseline. PyTorch's
    /// caching allocator keeps what it reserved (autoqat never empties it), so the figure at
    /// the end of a trial is its high-water mark, comparable with `max_memory_reserved`.
    pub fn peak_mb(&self) -> f64 {
        match self.cuda.and_then(|(i, base)| autoqat_model::device::cuda_used_bytes(i).map(|now| (now, base))) {
            Some((now, base)) => now.saturating_sub(base) as f64 / (1024.0 * 1024.0),
            None => peak_rss_mb(),
        }
    }

    /// Where the figure comes from, for the log.
    pub fn source(&self) -> &'static str {
        if self.cuda.is_some() {
            "CUDA device memory in use (cudaMemGetInfo) above the trial's start"
        } else {
            "peak RSS of the process"
        }
    }
}

/// Peak resident memory of this process in MB (`VmHWM`), 0 where unknown.
pub fn peak_rss_mb() -> f64 {
    proc_status_mb("VmHWM:")
}

/// Resident memory of this process now in MB (`VmRSS`), 0 where unknown.
pub fn rss_mb() -> f64 {
    proc_status_mb("VmRSS:")
}

/// A kB field of `/proc/self/status`, in MB.
fn proc_status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
