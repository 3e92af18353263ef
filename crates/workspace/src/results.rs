//! results.tsv and the per-experiment record stored as a git note. The note is the source of
//! truth; a results row is a pure function of it, so `autoqat results --rebuild` reproduces
//! the live file byte for byte. Reading the file back: [`read`], [`Row`].

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;

mod rows;

pub use rows::{best_row, noise, read, running_best, Noise, Row};

/// The header of results.tsv: the columns of docs/contracts.md#the-research-loops-results, then the compression track's
/// artifact size (empty for QAT trials) and the PPL of a keep's second-seed confirmation. New columns go last, so that rows appended by this
/// version under an older header keep every older column in place.
pub const HEADER: &str = "exp\tcommit\tparent\tstatus\teval_ppl\teval_bpb\ttrain_loss\tdelta\ttime_s\ttokens\tpeak_mem_mb\tq_neg1\tq_zero\tq_pos1\tcost_usd\tdescription\tartifact_size_bytes\tbits_per_param\tconfirm_ppl\tnear_miss";

/// The outcome of one experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The unmodified recipe, run first.
    Baseline,
    /// Better than the best by the required margin: the branch advanced.
    Keep,
    /// Finished but not better: the branch was reset.
    Discard,
    /// The trial failed (non-zero exit, NaN, no metric).
    Crash,
    /// The trial ran past its wall-clock limit.
    Timeout,
    /// Stopped early because it was clearly worse than the best run at the same step.
    Pruned,
    /// The proposer's answer was rejected even after the repair round.
    Invalid,
    /// Parallel loop: it beat the best it was tried against, but another keep landed first;
    /// its change was re-applied on top of the new best and queued as a new experiment.
    Superseded,
}

impl Status {
    /// Every status, in the order reports list them.
    pub const ALL: [Status; 8] = [
        Status::Baseline,
        Status::Keep,
        Status::Discard,
        Status::Crash,
        Status::Timeout,
        Status::Pruned,
        Status::Invalid,
        Status::Superseded,
    ];

    /// The status named `name` (as [`Status::as_str`] spells it).
    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The lowercase name used in results.tsv and trailers.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Baseline => "baseline",
            Status::Keep => "keep",
            Status::Discard => "discard",
            Status::Crash => "crash",
            Status::Timeout => "timeout",
            Status::Pruned => "pruned",
            Status::Invalid => "invalid",
            Status::Superseded => "superseded",
        }
    }

    /// Whether the branch advanced to this experiment.
    pub fn is_kept(self) -> bool {
        matches!(self, Status::Baseline | Status::Keep)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything recorded about one finished experiment (the JSON of its git note).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Run tag.
    pub tag: String,
    /// Experiment number (baseline = 0).
    pub exp: u32,
    /// The experiment commit (the note is attached to it).
    pub commit: String,
    /// The best commit it was tried against.
    pub parent: String,
    /// Outcome.
    pub status: Option<Status>,
    /// Eval perplexity (or the configured metric; lower is better).
    pub eval_ppl: Option<f64>,
    /// Eval bits per byte.
    pub eval_bpb: Option<f64>,
    /// Last train loss.
    pub train_loss: Option<f64>,
    /// Relative change of eval_ppl against the best before it.
    pub delta: Option<f64>,
    /// Trial wall-clock seconds.
    pub time_s: Option<f64>,
    /// Training tokens seen.
    pub tokens: Option<u64>,
    /// Peak memory in MB.
    pub peak_mem_mb: Option<f64>,
    /// Fraction of weights at -1.
    pub q_neg1: Option<f64>,
    /// Fraction of weights at 0.
    pub q_zero: Option<f64>,
    /// Fraction of weights at +1.
    pub q_pos1: Option<f64>,
    /// Proposer cost of this experiment in US dollars.
    pub cost_usd: f64,
    /// Proposer input tokens.
    pub input_tokens: u64,
    /// Proposer output tokens.
    pub output_tokens: u64,
    /// One line: what was changed.
    pub description: String,
    /// Why the proposer expected it to help.
    pub rationale: String,
    /// The changed lines (`-old` / `+new`), per file.
    pub diff: String,
    /// Fingerprint of the changed lines, to refuse repeating an edit.
    pub diff_key: String,
    /// Why the trial crashed or the answer was rejected.
    pub error: Option<String>,
    /// Bytes of the artifact (compression trials).
    pub artifact_size_bytes: Option<i64>,
    /// The artifact's bits per parameter (compression trials).
    pub bits_per_param: Option<f64>,
    /// Eval perplexity of the second-seed confirmation, when run.
    pub confirm_ppl: Option<f64>,
    /// A discard within `noise.near_miss_sigmas` σ of the best: not kept, but worth combining.
    #[serde(default)]
    pub near_miss: bool,
    /// For the baseline: each repeat's eval_ppl.
    pub baseline_ppls: Vec<f64>,
    /// For the baseline: sample standard deviation of the repeats.
    pub sigma: Option<f64>,
}

impl Record {
    /// The status, `crash` when missing (cannot happen for written notes).
    pub fn status(&self) -> Status {
        self.status.unwrap_or(Status::Crash)
    }

    /// The results.tsv row of this record (no trailing newline).
    pub fn to_row(&self) -> String {
        let f = |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_default();
        let mut s = String::new();
        let short = |c: &str| c.chars().take(12).collect::<String>();
        let _ = write!(
            s,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.6}\t{}\t{}\t{}\t{}\t{}",
            self.exp,
            short(&self.commit),
            short(&self.parent),
            self.status().as_str(),
            f(self.eval_ppl, 4),
            f(self.eval_bpb, 4),
            f(self.train_loss, 4),
            self.delta.map(|d| format!("{d:+.4}")).unwrap_or_default(),
            f(self.time_s, 1),
            self.tokens.map(|t| t.to_string()).unwrap_or_default(),
            f(self.peak_mem_mb, 0),
            f(self.q_neg1, 4),
            f(self.q_zero, 4),
            f(self.q_pos1, 4),
            self.cost_usd,
            one_line(&self.description),
            self.artifact_size_bytes.map(|b| b.to_string()).unwrap_or_default(),
            f(self.bits_per_param, 4),
            f(self.confirm_ppl, 4),
            if self.near_miss { "yes" } else { "" },
        );
        s
    }
}

/// Collapses tabs and newlines so that a description cannot break a row.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The whole results.tsv text for these records (sorted by exp).
pub fn render(records: &[Record]) -> String {
    let mut out = String::with_capacity(64 + records.len() * 160);
    out.push_str(HEADER);
    out.push('\n');
    for r in records {
        out.push_str(&r.to_row());
        out.push('\n');
    }
    out
}

/// Atomically replaces results.tsv with the rows of these records.
pub fn write_all(path: &Path, records: &[Record]) -> Result<()> {
    crate::atomic::write(path, render(records).as_bytes())
}

/// Appends one row (writing the header first if the file is new or empty).
pub fn append(path: &Path, record: &Record) -> Result<()> {
    crate::atomic::append_row(path, HEADER, &record.to_row())
}

/// The best kept record: the latest keep or baseline (the branch head).
pub fn best(records: &[Record]) -> Option<&Record> {
    records.iter().rev().find(|r| r.status().is_kept())
}

/// Mean of the values.
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Sample standard deviation (n - 1); `None` with fewer than two values.
pub fn sigma(v: &[f64]) -> Option<f64> {
    if v.len() < 2 {
        return None;
    }
    let m = mean(v);
    Some((v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt())
}

impl Record {
    /// Fills the measured columns from a trial's summary; `wall_s` (the driver's clock) stands
    /// in for a summary that reports no time. A non-finite metric is recorded as missing.
    pub fn set_measurements(&mut self, s: &crate::run::Summary, wall_s: f64) {
        let finite = |v: f64| Some(v).filter(|v| v.is_finite());
        self.eval_ppl = s.eval_ppl.filter(|v| v.is_finite());
        self.eval_bpb = s.eval_bpb;
        self.train_loss = s.train_loss;
        self.time_s = Some(finite(s.time_s).unwrap_or(wall_s));
        self.tokens = (s.tokens > 0).then_some(s.tokens);
        self.peak_mem_mb = finite(s.peak_mem_mb);
        self.q_neg1 = s.q_neg1;
        self.q_zero = s.q_zero;
        self.q_pos1 = s.q_pos1;
        self.artifact_size_bytes = s.artifact_size_bytes;
        self.bits_per_param = s.bits_per_param.filter(|v| v.is_finite());
    }
}
