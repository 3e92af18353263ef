//! The run directory of one trial: `steps.tsv` (one row per eval, flushed at once so a reader
//! can follow a live trial) and `summary.json` (the result the loop records). The QAT trial
//! writes both through this module; the loop, its pruner, `autoqat status` and the report read
//! them through it. A foreign trial (any command that writes these files) is read the same way.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{io_err, Result, WorkspaceError};

/// `steps.tsv` in a run directory.
pub const STEPS_FILE: &str = "steps.tsv";
/// `summary.json` in a run directory.
pub const SUMMARY_FILE: &str = "summary.json";
/// `trial.log` in a run directory.
pub const LOG_FILE: &str = "trial.log";
/// A compression run's per-layer mix and its summary (`autoqat compress`).
pub const MANIFEST_FILE: &str = "manifest.json";
/// A compression run's deterministic zip, the artifact handed in.
pub const ARTIFACT_ZIP: &str = "artifact.zip";
/// The same artifact unzipped: a Hugging Face directory transformers loads.
pub const ARTIFACT_DIR: &str = "artifact";
/// A trace collection's index (prompts done, shards, tokenizer hashes; `autoqat kd collect`).
pub const TRACE_INDEX_FILE: &str = "index.json";
/// What an interrupted compression left for `--resume` (removed when the run finishes).
pub const RESUME_DIR: &str = "resume";

/// Columns of `steps.tsv`, in order (docs/contracts.md#the-trial).
pub const STEPS_COLUMNS: [&str; 12] = [
    "step",
    "lambda",
    "train_loss",
    "train_ppl",
    "eval_ppl",
    "eval_bpb",
    "lr",
    "time_s",
    "best_ppl",
    "q_neg1",
    "q_zero",
    "q_pos1",
];

/// One row of `steps.tsv`. A column a foreign trial does not write reads as NaN.
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
    /// The row as one tab-separated line (no newline), columns in [`STEPS_COLUMNS`] order.
    pub fn to_line(&self) -> String {
        format!(
            "{}\t{:.6}\t{:.6}\t{:.4}\t{:.4}\t{:.6}\t{:.6e}\t{:.2}\t{:.4}\t{:.6}\t{:.6}\t{:.6}",
            self.step,
            self.lambda,
            self.train_loss,
            self.train_ppl,
            self.eval_ppl,
            self.eval_bpb,
            self.lr,
            self.time_s,
            self.best_ppl,
            self.q_neg1,
            self.q_zero,
            self.q_pos1
        )
    }

    /// The value of column `name` ([`STEPS_COLUMNS`]); `None` for an unknown name.
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "step" => self.step as f64,
            "lambda" => self.lambda,
            "train_loss" => self.train_loss,
            "train_ppl" => self.train_ppl,
            "eval_ppl" => self.eval_ppl,
            "eval_bpb" => self.eval_bpb,
            "lr" => self.lr,
            "time_s" => self.time_s,
            "best_ppl" => self.best_ppl,
            "q_neg1" => self.q_neg1,
            "q_zero" => self.q_zero,
            "q_pos1" => self.q_pos1,
            _ => return None,
        })
    }
}

/// Appends rows to a run directory's `steps.tsv`, one flushed line per eval.
#[derive(Debug)]
pub struct StepsWriter {
    path: PathBuf,
}

impl StepsWriter {
    /// Starts `dir/steps.tsv` over (the directory is created). A resumed trial passes
    /// `keep_until`: its rows up to that step stay, later ones are redone.
    pub fn open(dir: &Path, keep_until: Option<u64>) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(STEPS_FILE);
        let mut text = STEPS_COLUMNS.join("\t") + "\n";
        if let Some(until) = keep_until {
            for row in read_steps(&path)?.iter().filter(|r| r.step <= until) {
                text.push_str(&row.to_line());
                text.push('\n');
            }
        }
        std::fs::write(&path, text).map_err(io_err(&path))?;
        Ok(Self { path })
    }

    /// Appends one row and flushes it, so that a live reader sees whole lines only.
    pub fn append(&mut self, row: &StepRow) -> Result<()> {
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.path).map_err(io_err(&self.path))?;
        writeln!(f, "{}", row.to_line()).map_err(io_err(&self.path))?;
        f.flush().map_err(io_err(&self.path))
    }
}

/// Reads the rows of a `steps.tsv` (the file, not its directory), cells found by column name.
/// A missing file is no rows. A line with fewer cells than the header (a live trial's torn
/// last line) or an unreadable `step` is left out; other unreadable cells read as NaN.
pub fn read_steps(path: &Path) -> Result<Vec<StepRow>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(WorkspaceError::io(path, e)),
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else { return Ok(Vec::new()) };
    let header: Vec<&str> = header.split('\t').map(str::trim).collect();
    let Some(step_col) = header.iter().position(|h| *h == "step") else {
        return Err(WorkspaceError::Format {
            path: path.to_path_buf(),
            msg: "no `step` column in the header (a trial must write the columns of docs/contracts.md#the-trial)"
                .into(),
        });
    };
    let cols: Vec<Option<usize>> = STEPS_COLUMNS.iter().map(|c| header.iter().position(|h| h == c)).collect();
    let mut rows = Vec::new();
    for line in lines {
        let cells: Vec<&str> = line.split('\t').map(str::trim).collect();
        if cells.len() < header.len() {
            continue;
        }
        let Ok(step) = cells[step_col].parse::<f64>().map(|s| s as u64) else { continue };
        let v = |i: usize| cols[i].and_then(|c| cells[c].parse::<f64>().ok()).unwrap_or(f64::NAN);
        rows.push(StepRow {
            step,
            lambda: v(1),
            train_loss: v(2),
            train_ppl: v(3),
            eval_ppl: v(4),
            eval_bpb: v(5),
            lr: v(6),
            time_s: v(7),
            best_ppl: v(8),
            q_neg1: v(9),
            q_zero: v(10),
            q_pos1: v(11),
        });
    }
    Ok(rows)
}

/// `summary.json` (docs/contracts.md#the-trial): what a trial reports and the loop records. A foreign
/// trial may write only `status` and `eval_ppl`; every other field then has its default
/// (numbers NaN or 0, text empty), and a track may add fields of its own, which are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// A missing field takes its value from `Default` (NaN for `time_s` and `peak_mem_mb`).
#[serde(default)]
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
    /// Training tokens consumed (0: not reported).
    pub tokens: u64,
    /// Wall-clock seconds (NaN: not reported).
    #[serde(deserialize_with = "nullable")]
    pub time_s: f64,
    /// Peak resident memory of the process in MB (NaN: not reported).
    #[serde(deserialize_with = "nullable")]
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
    /// Bytes of the artifact handed in (the compression track's zip).
    pub artifact_size_bytes: Option<i64>,
    /// Its size in bits per parameter, as the track's gate computes it.
    pub bits_per_param: Option<f64>,
}

/// An `f64` that may be `null` (how NaN is written, and what the NaN rule reads it as).
fn nullable<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Default for Summary {
    /// What an empty `{}` reads as: nothing reported.
    fn default() -> Self {
        Summary {
            status: String::new(),
            eval_ppl: None,
            eval_bpb: None,
            eval_loss: None,
            train_loss: None,
            steps: 0,
            tokens: 0,
            time_s: f64::NAN,
            peak_mem_mb: f64::NAN,
            device: String::new(),
            q_neg1: None,
            q_zero: None,
            q_pos1: None,
            fp_ppl: None,
            error: None,
            artifact_size_bytes: None,
            bits_per_param: None,
        }
    }
}

impl Summary {
    /// A summary that carries only a metric (a foreign trial's log, read by a regex).
    pub fn from_metric(eval_ppl: f64) -> Self {
        Summary { status: "ok".into(), eval_ppl: Some(eval_ppl), ..Summary::default() }
    }

    /// Whether the trial said it crashed.
    pub fn is_crash(&self) -> bool {
        self.status == "crash"
    }
}

/// Writes `dir/summary.json` atomically (a reader never sees half of it).
pub fn write_summary(dir: &Path, s: &Summary) -> Result<()> {
    crate::atomic::write_json(&dir.join(SUMMARY_FILE), s)
}

/// Reads `dir/summary.json`; `Ok(None)` when there is none. NaN and infinities are not JSON
/// but some trials write them: they read as missing values, so such a trial has no metric.
pub fn read_summary(dir: &Path) -> Result<Option<Summary>> {
    read_summary_as(dir)
}

/// Reads `dir/summary.json` as `T` (a track's summary that embeds [`Summary`]), with the same
/// rule for NaN and infinities as [`read_summary`].
pub fn read_summary_as<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Option<T>> {
    let path = dir.join(SUMMARY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(WorkspaceError::io(&path, e)),
    };
    let fixed = text.replace("NaN", "null").replace("-Infinity", "null").replace("Infinity", "null");
    serde_json::from_str(&fixed)
        .map(Some)
        .map_err(|e| WorkspaceError::Format { path, msg: format!("not a summary (docs/contracts.md#the-trial): {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64, ppl: f64) -> StepRow {
        StepRow {
            step,
            lambda: 1.0,
            train_loss: 2.0,
            train_ppl: 7.389,
            eval_ppl: ppl,
            eval_bpb: 1.5,
            lr: 1e-3,
            time_s: 3.0,
            best_ppl: ppl,
            q_neg1: 0.3,
            q_zero: 0.4,
            q_pos1: 0.3,
        }
    }

    #[test]
    fn steps_round_trip_and_resume_keeps_earlier_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = StepsWriter::open(dir.path(), None).unwrap();
        for s in [10, 20, 30] {
            w.append(&row(s, 100.0 / s as f64)).unwrap();
        }
        let rows = read_steps(&dir.path().join(STEPS_FILE)).unwrap();
        assert_eq!(rows.iter().map(|r| r.step).collect::<Vec<_>>(), [10, 20, 30]);
        assert!((rows[1].eval_ppl - 5.0).abs() < 1e-9);
        StepsWriter::open(dir.path(), Some(20)).unwrap();
        assert_eq!(read_steps(&dir.path().join(STEPS_FILE)).unwrap().len(), 2);
    }

    #[test]
    fn foreign_steps_read_by_name_and_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(STEPS_FILE);
        std::fs::write(&p, "eval_ppl\tstep\n9.5\t10\nnan\t20\n8.0").unwrap();
        let rows = read_steps(&p).unwrap();
        assert_eq!(rows.len(), 2, "the torn last line has one cell");
        assert_eq!((rows[0].step, rows[0].eval_ppl), (10, 9.5));
        assert!(rows[1].eval_ppl.is_nan() && rows[0].lambda.is_nan());
        std::fs::write(&p, "ppl\n1\n").unwrap();
        assert!(read_steps(&p).unwrap_err().to_string().contains("no `step` column"));
    }

    #[test]
    fn summary_nan_reads_as_missing_and_minimal_summary_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SUMMARY_FILE), r#"{"status":"ok","eval_ppl":NaN,"time_s":Infinity}"#).unwrap();
        let s = read_summary(dir.path()).unwrap().unwrap();
        assert_eq!((s.status.as_str(), s.eval_ppl, s.tokens), ("ok", None, 0));
        assert!(s.time_s.is_nan());
        let full =
            Summary { time_s: 2.5, peak_mem_mb: 10.0, steps: 4, device: "cpu".into(), ..Summary::from_metric(3.0) };
        write_summary(dir.path(), &full).unwrap();
        assert_eq!(read_summary(dir.path()).unwrap().unwrap(), full);
        std::fs::write(dir.path().join(SUMMARY_FILE), "[1]").unwrap();
        assert!(read_summary(dir.path()).is_err());
        assert!(read_summary(&dir.path().join("none")).unwrap().is_none());
    }
}
