//! Reads `results.tsv` (DESIGN.md 5) by column name, so that a column added later or a row
//! written by an older version still reads.

use std::path::Path;

use anyhow::Context;

/// The statuses a row may carry.
pub const STATUSES: [&str; 7] = ["baseline", "keep", "discard", "crash", "timeout", "pruned", "invalid"];

/// One experiment, as recorded in `results.tsv`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Row {
    /// Experiment id, e.g. `0003`.
    pub exp: String,
    /// Commit of the experiment (full or abbreviated hash).
    pub commit: String,
    /// Commit the experiment started from.
    pub parent: String,
    /// One of [`STATUSES`].
    pub status: String,
    /// Eval perplexity; `None` when the trial produced none (crash, invalid).
    pub eval_ppl: Option<f64>,
    /// Eval bits per byte.
    pub eval_bpb: Option<f64>,
    /// Final train loss.
    pub train_loss: Option<f64>,
    /// Relative change of eval PPL against the best before this experiment.
    pub delta: Option<f64>,
    /// Trial wall time in seconds.
    pub time_s: Option<f64>,
    /// Training tokens seen.
    pub tokens: Option<f64>,
    /// Peak memory in MB.
    pub peak_mem_mb: Option<f64>,
    /// Fraction of quantized weights at -1.
    pub q_neg1: Option<f64>,
    /// Fraction at 0.
    pub q_zero: Option<f64>,
    /// Fraction at +1.
    pub q_pos1: Option<f64>,
    /// Proposer cost in US dollars.
    pub cost_usd: Option<f64>,
    /// What the experiment changed.
    pub description: String,
}

impl Row {
    /// True for rows whose recipe the branch kept (the baseline counts as kept).
    pub fn is_kept(&self) -> bool {
        self.status == "baseline" || self.status == "keep"
    }
}

/// Reads `results.tsv`; a missing file is an error that says how to produce one.
pub fn read(path: &Path) -> anyhow::Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("cannot read {} (hint: run `autoqat run` first, or `autoqat results --rebuild`)", path.display())
    })?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// Parses the text of a `results.tsv`.
pub fn parse(text: &str) -> anyhow::Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader.headers().context("no header line")?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let Some(exp_col) = col("exp") else {
        anyhow::bail!("the header has no `exp` column; expected the columns of DESIGN.md 5");
    };
    let status_col = col("status").context("the header has no `status` column")?;
    let cols: Vec<Option<usize>> = [
        "commit", "parent", "eval_ppl", "eval_bpb", "train_loss", "delta", "time_s", "tokens",
        "peak_mem_mb", "q_neg1", "q_zero", "q_pos1", "cost_usd", "description",
    ]
    .iter()
    .map(|n| col(n))
    .collect();
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.with_context(|| format!("line {}", i + 2))?;
        let get = |c: Option<usize>| c.and_then(|c| rec.get(c)).unwrap_or("").trim().to_string();
        let num = |c: Option<usize>| parse_num(&get(c));
        rows.push(Row {
            exp: get(Some(exp_col)),
            status: get(Some(status_col)),
            commit: get(cols[0]),
            parent: get(cols[1]),
            eval_ppl: num(cols[2]),
            eval_bpb: num(cols[3]),
            train_loss: num(cols[4]),
            delta: num(cols[5]),
            time_s: num(cols[6]),
            tokens: num(cols[7]),
            peak_mem_mb: num(cols[8]),
            q_neg1: num(cols[9]),
            q_zero: num(cols[10]),
            q_pos1: num(cols[11]),
            cost_usd: num(cols[12]),
            description: get(cols[13]),
        });
    }
    Ok(rows)
}

/// A number, or `None` for an empty cell, `-`, `nan` or an infinity (a NaN is a failure, not a
/// number).
fn parse_num(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Index of the best row: lowest eval PPL among the baseline and kept rows.
pub fn best(rows: &[Row]) -> Option<usize> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| r.is_kept())
        .filter_map(|(i, r)| r.eval_ppl.map(|p| (i, p)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The running best eval PPL after each row (the frontier the branch followed).
pub fn running_best(rows: &[Row]) -> Vec<Option<f64>> {
    let mut best: Option<f64> = None;
    rows.iter()
        .map(|r| {
            if let (true, Some(p)) = (r.is_kept(), r.eval_ppl) {
                best = Some(best.map_or(p, |b: f64| b.min(p)));
            }
            best
        })
        .collect()
}

/// Spread of the repeated baseline runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Noise {
    /// How many baseline rows had a PPL.
    pub n: usize,
    /// Their mean PPL.
    pub mean: f64,
    /// Sample standard deviation of their PPL.
    pub sigma: f64,
}

impl Noise {
    /// σ relative to the mean.
    pub fn relative(&self) -> f64 {
        if self.mean > 0.0 { self.sigma / self.mean } else { f64::NAN }
    }
}

/// Noise estimate from the baseline rows, when the baseline ran at least twice.
pub fn noise(rows: &[Row]) -> Option<Noise> {
    let ppl: Vec<f64> = rows.iter().filter(|r| r.status == "baseline").filter_map(|r| r.eval_ppl).collect();
    if ppl.len() < 2 {
        return None;
    }
    let n = ppl.len() as f64;
    let mean = ppl.iter().sum::<f64>() / n;
    let var = ppl.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some(Noise { n: ppl.len(), mean, sigma: var.sqrt() })
}
