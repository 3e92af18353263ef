//! Training data from teacher traces (`autoqat kd collect`): each collected prompt becomes one
//! sequence, the student's encoding of the prompt followed by the teacher's sampled tokens
//! (projected to student ids), and each generated position carries the teacher's Top-K+Other
//! distribution as its target.

use std::collections::BTreeMap;
use std::path::Path;

use autoqat_model::TextTokenizer;
use autoqat_traces::{TraceIndex, TraceRow};
use tch::{Device, Kind, Tensor};

use super::data::Rng;
use crate::error::{QatError, Result};
use autoqat_toolkit::loss::TraceTargets;

/// One position's target.
#[derive(Debug, Clone)]
struct Target {
    ids: Vec<i64>,
    logprobs: Vec<f32>,
    other: f32,
    sample: i64,
    valid: bool,
    is_struct: bool,
}

/// One prompt's sequence: `ids[..prompt_len + targets.len() - 1]` is the model input, and
/// target `j` is predicted at input position `prompt_len - 1 + j`.
#[derive(Debug, Clone)]
struct Sequence {
    ids: Vec<i64>,
    prompt_len: usize,
    targets: Vec<Target>,
}

/// A batch: model input, the flat positions that have targets, and the targets.
pub struct TraceBatch {
    /// `[B, L]` i64 input ids (padding after each sequence's end).
    pub input: Tensor,
    /// `[N]` i64 indices into the `[B * L]` flattened positions.
    pub positions: Tensor,
    /// The targets at those positions.
    pub targets: TraceTargets,
    /// Valid target positions (the tokens this batch counts as seen).
    pub seen: u64,
}

/// Every usable sequence of a trace directory.
#[derive(Debug)]
pub struct TraceData {
    seqs: Vec<Sequence>,
    k: usize,
    /// Rows dropped: after a sampled token the student cannot encode (the context would be
    /// wrong from there on), or beyond `data.seq_len`.
    pub dropped_rows: usize,
}

/// `log(1 - sum exp(lp))` of the kept alternatives when the rest joins Other, or NaN when
/// nothing remains.
fn other_after_truncation(row: &TraceRow, k: usize) -> f32 {
    if row.topk_ids.len() <= k {
        return row.other_logprob;
    }
    let kept: f64 = row.topk_logprobs[..k].iter().map(|&lp| f64::from(lp).exp()).sum();
    let rest = 1.0 - kept;
    if rest > 0.0 && rest < 1.0 {
        rest.ln() as f32
    } else {
        f32::NAN
    }
}

impl TraceData {
    /// Loads the traces in `dir` for a student with tokenizer `tok` (the file at `tok_file`,
    /// whose hash must match the traces'), keeping the first `k` alternatives and sequences of
    /// at most `seq_len + 1` tokens.
    pub fn load(dir: &Path, tok: &TextTokenizer, tok_file: &Path, k: usize, seq_len: usize) -> Result<Self> {
        let bad = |msg: String| QatError::Config(format!("traces.dir {}: {msg}", dir.display()));
        let index = TraceIndex::load(dir)
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad("no index.json; run `autoqat kd collect --out <dir>` first".into()))?;
        let hash = autoqat_traces::tokenizer_hash(tok_file).map_err(|e| bad(e.to_string()))?;
        if hash != index.tokenizer_hash {
            return Err(bad(format!(
                "the traces hold ids of tokenizer {} but the student's tokenizer ({}) is {hash}; collect again with --student-tokenizer set to the student",
                index.tokenizer_hash,
                tok_file.display()
            )));
        }
        let mut by_prompt: BTreeMap<i64, Vec<TraceRow>> = BTreeMap::new();
        for row in index.read_rows(dir).map_err(|e| bad(e.to_string()))? {
            by_prompt.entry(row.prompt_idx).or_default().push(row);
        }
        let mut seqs = Vec::new();
        let mut dropped_rows = 0;
        for p in &index.prompts {
            let mut rows = by_prompt.remove(&p.idx).unwrap_or_default();
            rows.sort_by_key(|r| r.step_idx);
            let mut ids = tok.encode(&index.template.replace("{prompt}", &p.text))?;
            let prompt_len = ids.len();
            if prompt_len == 0 || prompt_len > seq_len {
                dropped_rows += rows.len();
                continue;
            }
            let room = seq_len + 1 - prompt_len;
            let mut targets = Vec::new();
            for row in &rows {
                // The teacher's own token is the next input; without a student id for it the
                // rest of the answer would be read in a wrong context.
                if row.teacher_sample_id < 0 || targets.len() == room {
                    break;
                }
                let n = row.topk_ids.len().min(k);
                let other = other_after_truncation(row, k);
                let valid = row.is_valid() && other.is_finite() && other < 0.0;
                targets.push(Target {
                    ids: row.topk_ids[..n].iter().map(|&i| i64::from(i)).collect(),
                    logprobs: row.topk_logprobs[..n].to_vec(),
                    other,
                    sample: i64::from(row.teacher_sample_id),
                    valid,
                    is_struct: row.is_struct_token,
                });
                ids.push(i64::from(row.teacher_sample_id));
            }
            dropped_rows += rows.len() - targets.len();
            if !targets.is_empty() {
                ids.truncate(prompt_len + targets.len() - 1);
                seqs.push(Sequence { ids, prompt_len, targets });
            }
        }
        if seqs.is_empty() {
            return Err(bad(
                "no usable sequence (every prompt is empty, longer than data.seq_len, or has no valid row)".into(),
            ));
        }
        Ok(TraceData { seqs, k, dropped_rows })
    }

    /// Sequences.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// Always false (loading requires a sequence).
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Mean valid target positions per sequence: what one sequence adds to the seen tokens.
    pub fn mean_valid_per_seq(&self) -> f64 {
        let valid: usize = self.seqs.iter().map(|s| s.targets.iter().filter(|t| t.valid).count()).sum();
        valid as f64 / self.seqs.len() as f64
    }

    /// `batch` sequences drawn with `rng`, padded to the longest.
    pub fn batch(&self, batch: usize, rng: &mut Rng, device: Device) -> TraceBatch {
        let picked: Vec<usize> = (0..batch).map(|_| rng.below(self.seqs.len() as u64) as usize).collect();
        self.batch_of(&picked, device)
    }

    /// The sequences at `indices` (each below [`TraceData::len`]), padded to the longest: for
    /// scoring a student on held-out traces in order.
    pub fn batch_of(&self, indices: &[usize], device: Device) -> TraceBatch {
        let batch = indices.len();
        let picked: Vec<&Sequence> = indices.iter().map(|&i| &self.seqs[i]).collect();
        let len = picked.iter().map(|s| s.ids.len()).max().unwrap_or(1);
        let k = self.k;
        let mut input = vec![0i64; batch * len];
        let (mut positions, mut ids, mut lps, mut mask) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut other, mut sample, mut valid, mut is_struct) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (b, s) in picked.iter().enumerate() {
            input[b * len..b * len + s.ids.len()].copy_from_slice(&s.ids);
            for (j, t) in s.targets.iter().enumerate() {
                positions.push((b * len + s.prompt_len - 1 + j) as i64);
                for i in 0..k {
                    let real = i < t.ids.len() && t.valid;
                    ids.push(if real { t.ids[i] } else { 0 });
                    lps.push(if real { t.logprobs[i] } else { 0.0 });
                    mask.push(real);
                }
                // Dummies on invalid rows keep every tensor finite; their weight is zero.
                other.push(if t.valid { t.other } else { -1.0 });
                sample.push(t.sample);
                valid.push(if t.valid { 1.0f32 } else { 0.0 });
                is_struct.push(if t.valid && t.is_struct { 1.0f32 } else { 0.0 });
            }
        }
        let n = positions.len() as i64;
        let seen = valid.iter().filter(|&&v| v > 0.0).count() as u64;
        let to = |t: Tensor| t.to_device(device);
        TraceBatch {
            input: to(Tensor::from_slice(&input).reshape([batch as i64, len as i64])),
            positions: to(Tensor::from_slice(&positions)),
            targets: TraceTargets {
                topk_ids: to(Tensor::from_slice(&ids).reshape([n, k as i64])),
                topk_logprobs: to(Tensor::from_slice(&lps).reshape([n, k as i64])),
                topk_mask: to(Tensor::from_slice(&mask).reshape([n, k as i64]).to_kind(Kind::Bool)),
                other_logprob: to(Tensor::from_slice(&other)),
                sample: to(Tensor::from_slice(&sample)),
                valid: to(Tensor::from_slice(&valid)),
                is_struct: to(Tensor::from_slice(&is_struct)),
            },
            seen,
        }
    }
}
