//! The files of a run directory: `steps.tsv` (one row per eval, flushed at once so a reader
//! can follow a live trial), `trial.log`, and `summary.json`.

use crate::error::{io_err, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Columns of `steps.tsv`, in order (a contract with the research loop).
pub const STEPS_COLUMNS: [&str; 12] =
    ["step", "lambda", "train_loss", "train_ppl", "eval_ppl", "eval_bpb", "lr", "time_s", "best_ppl", "q_neg1", "q_zero", "q_pos1"];

/// One row of `steps.tsv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRow {
    /// Optimizer steps done.
    pub step: u64,
    /// lambda of the last training step.
    pub lambda: f64,
    /// Mean cross entropy of the steps since the previous row.
    pub train_loss: f64,
    /// `exp(train_loss)`.
    pub train_ppl: f64,
    /// Eval perplexity of the fully quantized model (lambda = 1).
    pub eval_ppl: f64,
    /// Eval bits per byte.
    pub eval_bpb: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Seconds since the trial started (over resumes).
    pub time_s: f64,
    /// Lowest eval_ppl so far.
    pub best_ppl: f64,
    /// Fraction of quantized weights at -1.
    pub q_neg1: f64,
    /// Fraction at 0.
    pub q_zero: f64,
    /// Fraction at +1.
    pub q_pos1: f64,
}

impl StepRow {
    fn to_line(&self) -> String {
        format!(
            "{}\t{:.6}\t{:.6}\t{:.4}\t{:.4}\t{:.6}\t{:.6e}\t{:.2}\t{:.4}\t{:.6}\t{:.6}\t{:.6}",
            self.step, self.lambda, self.train_loss, self.train_ppl, self.eval_ppl, self.eval_bpb, self.lr, self.time_s,
            self.best_ppl, self.q_neg1, self.q_zero, self.q_pos1
        )
    }
}

/// `summary.json` (DESIGN.md section 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `ok` or `crash`.
    pub status: String,
    /// Final eval perplexity.
    pub eval_ppl: Option<f64>,
    /// Final eval bits per byte.
    pub eval_bpb: Option<f64>,
    /// Final eval loss (nats/token).
    pub eval_loss: Option<f64>,
    /// Mean train cross entropy of the last eval interval.
    pub train_loss: Option<f64>,
    /// Optimizer steps done.
    pub steps: u64,
    /// Training tokens consumed.
    pub tokens: u64,
    /// Wall-clock seconds.
    pub time_s: f64,
    /// Peak resident memory of the process (MB).
    pub peak_mem_mb: f64,
    /// `cpu`, `cuda`, `mps`.
    pub device: String,
    /// Final fraction of quantized weights at -1.
    pub q_neg1: Option<f64>,
    /// Final fraction at 0.
    pub q_zero: Option<f64>,
    /// Final fraction at +1.
    pub q_pos1: Option<f64>,
    /// Eval perplexity of the full-precision starting model, same protocol.
    pub fp_ppl: Option<f64>,
    /// Why the trial crashed.
    pub error: Option<String>,
}

/// Writes `steps.tsv` and `trial.log` of one run directory.
#[derive(Debug)]
pub struct RunFiles {
    dir: PathBuf,
    log: std::fs::File,
}

impl RunFiles {
    /// Opens the run directory (created); a fresh trial starts `steps.tsv` over, a resumed one
    /// keeps the rows up to `keep_until` (later rows are redone).
    pub fn open(dir: &Path, keep_until: Option<u64>) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let steps = dir.join("steps.tsv");
        let mut text = STEPS_COLUMNS.join("\t") + "\n";
        if let (Some(until), Ok(old)) = (keep_until, std::fs::read_to_string(&steps)) {
            for line in old.lines().skip(1) {
                let step: Option<u64> = line.split('\t').next().and_then(|s| s.parse().ok());
                if step.is_some_and(|s| s <= until) {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        std::fs::write(&steps, text).map_err(io_err(&steps))?;
        let log_path = dir.join("trial.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(keep_until.is_some())
            .write(true)
            .truncate(keep_until.is_none())
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        Ok(Self { dir: dir.to_path_buf(), log })
    }

    /// Appends one row to `steps.tsv` and flushes it.
    pub fn row(&mut self, row: &StepRow) -> Result<()> {
        let path = self.dir.join("steps.tsv");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
        writeln!(f, "{}", row.to_line()).map_err(io_err(&path))?;
        f.flush().map_err(io_err(&path))
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

/// Writes `summary.json` into `dir` (via a temporary file, so a reader never sees half of it).
pub fn write_summary(dir: &Path, s: &Summary) -> Result<()> {
    write_json(dir, "summary.json", s)
}

/// Writes pretty JSON to `dir/name` through `name.tmp` and a rename: the run directory's files
/// (summary, health, gates) are read by other processes while the trial runs.
pub fn write_json<T: serde::Serialize>(dir: &Path, name: &str, value: &T) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    std::fs::write(&tmp, text + "\n").map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))
}

/// Reads `steps.tsv` rows (for tests and resume checks).
pub fn read_steps(dir: &Path) -> Result<Vec<StepRow>> {
    let path = dir.join("steps.tsv");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let v: Vec<f64> = line.split('\t').filter_map(|x| x.parse().ok()).collect();
        if v.len() != STEPS_COLUMNS.len() {
            continue;
        }
        rows.push(StepRow {
            step: v[0] as u64,
            lambda: v[1],
            train_loss: v[2],
            train_ppl: v[3],
            eval_ppl: v[4],
            eval_bpb: v[5],
            lr: v[6],
            time_s: v[7],
            best_ppl: v[8],
            q_neg1: v[9],
            q_zero: v[10],
            q_pos1: v[11],
        });
    }
    Ok(rows)
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
