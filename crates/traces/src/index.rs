//! `index.json`: what a trace directory holds. It is rewritten (temp file, rename) only after a
//! shard is safely on disk, so a prompt listed here is always fully readable, and a shard that no
//! prompt names (a kill between the two renames) is simply written again on resume.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{io_err, read_shard, Result, TraceError, TraceRow};

/// File name of the index inside a trace directory.
pub const INDEX_FILE: &str = autoqat_workspace::run::TRACE_INDEX_FILE;

/// A collected prompt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PromptEntry {
    /// Index in the prompts file.
    pub idx: i64,
    /// The prompt text (the trial needs it to rebuild the student's input).
    pub text: String,
    /// The shard holding its rows.
    pub shard: String,
    /// Generated positions.
    pub positions: usize,
    /// Positions that are invalid (no student encoding of the sample, or a remaining mass
    /// outside (0, 1)).
    pub invalid: usize,
}

/// A shard on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardEntry {
    /// File name inside the trace directory.
    pub file: String,
    /// Rows it holds.
    pub rows: usize,
    /// Its share of the collection's quality figures, so that the totals can be rebuilt when
    /// a shard is collected again.
    #[serde(default)]
    pub stats: TraceStats,
}

/// Collection quality figures, kept as running sums so that a resumed collection adds to them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TraceStats {
    /// Positions collected.
    pub positions: usize,
    /// Invalid positions.
    pub invalid: usize,
    /// `invalid / positions` (target below 0.02).
    pub invalid_rate: f64,
    /// Mean remaining ("Other") probability mass over valid positions.
    pub mean_other_mass: f64,
    /// Mean share of the teacher's Top-K mass that survived the projection to student ids.
    pub topk_coverage: f64,
    /// Sum of the Other mass over valid positions.
    pub sum_other_mass: f64,
    /// Sum of the coverage over valid positions.
    pub sum_coverage: f64,
    /// Positions whose Top-K mass reached 1 by rounding, given the floor as their Other mass.
    #[serde(default)]
    pub clamped: usize,
    /// Alternatives the teacher listed twice in one position (kept once).
    #[serde(default)]
    pub duplicates: usize,
    /// Alternatives beyond the Top-K asked for (dropped).
    #[serde(default)]
    pub truncated: usize,
}

impl TraceStats {
    /// Adds the sums of `other` (a shard's figures) and recomputes the means.
    pub fn absorb(&mut self, other: &TraceStats) {
        self.positions += other.positions;
        self.invalid += other.invalid;
        self.sum_other_mass += other.sum_other_mass;
        self.sum_coverage += other.sum_coverage;
        self.clamped += other.clamped;
        self.duplicates += other.duplicates;
        self.truncated += other.truncated;
        self.refresh();
    }

    fn refresh(&mut self) {
        let valid_n = (self.positions - self.invalid).max(1) as f64;
        self.invalid_rate = if self.positions == 0 { 0.0 } else { self.invalid as f64 / self.positions as f64 };
        self.mean_other_mass = self.sum_other_mass / valid_n;
        self.topk_coverage = self.sum_coverage / valid_n;
    }

    /// Adds one position: its validity, remaining mass and Top-K coverage.
    pub fn add(&mut self, valid: bool, other_mass: f64, coverage: f64) {
        self.positions += 1;
        if valid {
            self.sum_other_mass += other_mass;
            self.sum_coverage += coverage;
        } else {
            self.invalid += 1;
        }
        self.refresh();
    }
}

/// The index of a trace directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TraceIndex {
    /// Format version.
    pub format: u32,
    /// Who answered (`openai:<model> @ <url>` or `local:<dir>`; never a key).
    pub teacher: String,
    /// Top-K asked of the teacher.
    pub top_k: usize,
    /// Longest answer in tokens.
    pub max_tokens: usize,
    /// The prompt template (`{prompt}` is replaced by the prompt).
    pub template: String,
    /// Hash of `template`.
    pub template_hash: String,
    /// Hash of the student tokenizer's `tokenizer.json`.
    pub tokenizer_hash: String,
    /// Prompts collected, in collection order.
    pub prompts: Vec<PromptEntry>,
    /// Shards written.
    pub shards: Vec<ShardEntry>,
    /// Quality figures.
    pub stats: TraceStats,
}

impl TraceIndex {
    /// An empty index.
    pub fn new(teacher: String, top_k: usize, max_tokens: usize, template: String, tokenizer_hash: String) -> Self {
        let template_hash = crate::short_hash(template.as_bytes());
        TraceIndex {
            format: 1,
            teacher,
            top_k,
            max_tokens,
            template,
            template_hash,
            tokenizer_hash,
            prompts: Vec::new(),
            shards: Vec::new(),
            stats: TraceStats::default(),
        }
    }

    /// Reads `dir/index.json`; None when the directory has none yet.
    pub fn load(dir: &Path) -> Result<Option<TraceIndex>> {
        let path = dir.join(INDEX_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str(&text).map(Some).map_err(|e| TraceError::Format {
            path,
            msg: format!("{e}; this is not an autoqat trace index (collect into an empty directory)"),
        })
    }

    /// Writes `dir/index.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        autoqat_workspace::atomic::write_json(&dir.join(INDEX_FILE), self).map_err(|e| match e {
            autoqat_workspace::WorkspaceError::Io { path, cause } => TraceError::Io { path, cause },
            other => TraceError::Format { path: dir.join(INDEX_FILE), msg: other.to_string() },
        })
    }

    /// Prompt indices already collected.
    pub fn done(&self) -> BTreeSet<i64> {
        self.prompts.iter().map(|p| p.idx).collect()
    }

    /// File name for the next shard: after the highest listed, so that a shard collected again
    /// never takes the name of one that is still there.
    pub fn next_shard_name(&self) -> String {
        let number = |f: &str| f.strip_prefix("shard-")?.strip_suffix(".parquet")?.parse::<usize>().ok();
        let next = self.shards.iter().filter_map(|s| number(&s.file)).max().map_or(0, |n| n + 1);
        format!("shard-{next:05}.parquet")
    }

    /// Forgets the shards listed here that are not in `dir` any more (deleted by hand, to
    /// collect them again) with their prompts, so that a collection asks those prompts again;
    /// returns the missing files. The quality figures are rebuilt from the remaining shards'.
    pub fn drop_missing(&mut self, dir: &Path) -> Vec<String> {
        let (kept, gone): (Vec<ShardEntry>, Vec<ShardEntry>) =
            std::mem::take(&mut self.shards).into_iter().partition(|s| dir.join(&s.file).is_file());
        self.shards = kept;
        if gone.is_empty() {
            return Vec::new();
        }
        let names: BTreeSet<&str> = gone.iter().map(|s| s.file.as_str()).collect();
        self.prompts.retain(|p| !names.contains(p.shard.as_str()));
        let mut stats = TraceStats::default();
        for s in &self.shards {
            stats.absorb(&s.stats);
        }
        self.stats = stats;
        gone.into_iter().map(|s| s.file).collect()
    }

    /// Every row of every listed shard, in index order, each shard checked against the index's
    /// tokenizer hash.
    pub fn read_rows(&self, dir: &Path) -> Result<Vec<TraceRow>> {
        let mut rows = Vec::new();
        for s in &self.shards {
            let path: PathBuf = dir.join(&s.file);
            let shard = read_shard(&path)?;
            if let Some(r) = shard.iter().find(|r| r.tokenizer_hash != self.tokenizer_hash) {
                return Err(TraceError::Format {
                    path,
                    msg: format!(
                        "holds ids of tokenizer {} but the index says {}",
                        r.tokenizer_hash, self.tokenizer_hash
                    ),
                });
            }
            rows.extend(shard);
        }
        Ok(rows)
    }
}
