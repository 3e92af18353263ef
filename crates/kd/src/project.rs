//! Projection of a teacher position onto the student's vocabulary (DESIGN.md 9): each teacher
//! token maps to the FIRST sub-token of its student encoding, tokens that land on the same
//! student id are merged with log-sum-exp, and what cannot be projected joins the Other mass.

use std::collections::HashMap;

use autoqat_model::TextTokenizer;
use autoqat_traces::TraceRow;

/// One generated position as the teacher reported it (token bytes, temperature-1 logprobs).
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherPosition {
    /// The sampled token's exact bytes.
    pub sample: Vec<u8>,
    /// Its log-probability.
    pub sample_logprob: f64,
    /// The Top-K alternatives (bytes, log-probability), most likely first.
    pub top: Vec<(Vec<u8>, f64)>,
}

/// Maps teacher token bytes to student ids, caching each distinct token.
pub struct Projector<'a> {
    tok: &'a TextTokenizer,
    cache: HashMap<Vec<u8>, Option<i32>>,
}

impl<'a> Projector<'a> {
    /// A projector onto `tok`'s vocabulary.
    pub fn new(tok: &'a TextTokenizer) -> Self {
        Self { tok, cache: HashMap::new() }
    }

    /// The first student sub-token of `bytes`, or None when they are not whole UTF-8 (a piece of
    /// a multi-byte character) or encode to nothing.
    pub fn first_id(&mut self, bytes: &[u8]) -> Option<i32> {
        if let Some(hit) = self.cache.get(bytes) {
            return *hit;
        }
        // Without special tokens: a BOS would otherwise be every token's first sub-token.
        let id = std::str::from_utf8(bytes)
            .ok()
            .filter(|s| !s.is_empty())
            .and_then(|s| self.tok.inner().encode_fast(s, false).ok())
            .and_then(|enc| enc.get_ids().first().map(|&i| i as i32));
        self.cache.insert(bytes.to_vec(), id);
        id
    }
}

/// A projected position with the figures the collection reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Projected {
    /// The trace row.
    pub row: TraceRow,
    /// Remaining probability mass `1 - sum exp(topk_logprobs)` (may be outside (0, 1)).
    pub other_mass: f64,
    /// Share of the teacher's Top-K mass that projected onto student ids.
    pub coverage: f64,
}

/// Log of `exp(a) + exp(b)`, stable.
fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// Projects one position; `prompt_idx`, `step_idx` and the hashes label the row.
pub fn project(
    pos: &TeacherPosition,
    proj: &mut Projector<'_>,
    prompt_idx: i64,
    step_idx: i32,
    template_hash: &str,
    tokenizer_hash: &str,
) -> Projected {
    let mut merged: Vec<(i32, f64)> = Vec::with_capacity(pos.top.len());
    let mut teacher_mass = 0.0;
    for (bytes, lp) in &pos.top {
        teacher_mass += lp.exp();
        let Some(id) = proj.first_id(bytes) else { continue };
        match merged.iter_mut().find(|(i, _)| *i == id) {
            Some(entry) => entry.1 = log_add(entry.1, *lp),
            None => merged.push((id, *lp)),
        }
    }
    // Most likely first; equal log-probabilities by id, so a row is the same on every run.
    merged.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let kept: f64 = merged.iter().map(|(_, lp)| lp.exp()).sum();
    let other_mass = 1.0 - kept;
    let other_logprob = if other_mass > 0.0 && other_mass < 1.0 { other_mass.ln() as f32 } else { f32::NAN };
    let text = String::from_utf8_lossy(&pos.sample).into_owned();
    let row = TraceRow {
        prompt_idx,
        step_idx,
        teacher_sample_id: proj.first_id(&pos.sample).unwrap_or(-1),
        is_struct_token: autoqat_traces::is_struct_token(&text),
        teacher_sample_text: text,
        topk_ids: merged.iter().map(|(i, _)| *i).collect(),
        topk_logprobs: merged.iter().map(|(_, lp)| *lp as f32).collect(),
        other_logprob,
        template_hash: template_hash.to_string(),
        tokenizer_hash: tokenizer_hash.to_string(),
    };
    Projected { row, other_mass, coverage: if teacher_mass > 0.0 { kept / teacher_mass } else { 0.0 } }
}
