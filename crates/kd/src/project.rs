//! Projection of a teacher position onto the student's vocabulary (docs/contracts.md#the-distillation-traces-track): each teacher
//! token maps to the FIRST sub-token of its student encoding, tokens that land on the same
//! student id are merged with log-sum-exp, and what cannot be projected joins the Other mass.
//!
//! What a real API sends is cleaned first, since every defect here would otherwise reach the
//! traces as plausible numbers:
//! - the same token listed twice among the alternatives is one alternative (kept once, counted);
//! - alternatives beyond the K asked for are dropped, the least likely first (counted);
//! - a near-certain position whose Top-K mass reaches 1 by rounding keeps a remaining mass of
//!   [`OTHER_FLOOR`], the Top-K rescaled to `1 - OTHER_FLOOR` (counted as clamped);
//! - a token is mapped through its exact bytes: a piece of a multi-byte character goes through a
//!   byte-level student's byte alphabet, and a token whose bytes are unknown (a server that
//!   sends `"��"` without `bytes`) is unmappable, never a wrong id;
//! - a teacher that shares the student's tokenizer (same hash, and it reports token ids) maps by
//!   id, with no projection at all.

use std::collections::HashMap;

use autoqat_model::TextTokenizer;
use autoqat_traces::TraceRow;
use tokenizers::Model;

use crate::teacher::byte_level_char;

/// The smallest remaining ("Other") probability kept for a position whose Top-K mass reaches 1.
pub const OTHER_FLOOR: f64 = 1e-6;

/// Top-K mass beyond 1 that is still rounding; more than this and the position is invalid.
const ROUNDING: f64 = 1e-3;

/// One generated position as the teacher reported it (token bytes, temperature-1 logprobs).
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherPosition {
    /// The sampled token's exact bytes.
    pub sample: Vec<u8>,
    /// Its log-probability.
    pub sample_logprob: f64,
    /// The Top-K alternatives (bytes, log-probability), most likely first.
    pub top: Vec<(Vec<u8>, f64)>,
    /// The teacher's own token ids of `sample` and of each of `top`, when it reports them.
    pub ids: Option<(i64, Vec<i64>)>,
}

/// Maps teacher token bytes to student ids, caching each distinct token.
pub struct Projector<'a> {
    tok: &'a TextTokenizer,
    cache: HashMap<Vec<u8>, Option<i32>>,
    /// The byte alphabet, when the student is a byte-level BPE (every byte has a token).
    byte_level: Option<[char; 256]>,
    /// The teacher's ids are the student's (same tokenizer).
    by_id: bool,
}

impl<'a> Projector<'a> {
    /// A projector onto `tok`'s vocabulary; `by_id` when the teacher uses the same tokenizer.
    pub fn new(tok: &'a TextTokenizer, by_id: bool) -> Self {
        let chars: [char; 256] = std::array::from_fn(|b| byte_level_char(b as u8));
        let inner = tok.inner();
        let byte_level = chars.iter().all(|c| inner.token_to_id(&c.to_string()).is_some()).then_some(chars);
        Self { tok, cache: HashMap::new(), byte_level, by_id }
    }

    /// The first student sub-token of `bytes`, or None when they cannot be mapped faithfully:
    /// empty, a replacement character standing for unknown bytes, or a piece of a multi-byte
    /// character that the student has no byte tokens for.
    pub fn first_id(&mut self, bytes: &[u8]) -> Option<i32> {
        if let Some(hit) = self.cache.get(bytes) {
            return *hit;
        }
        let id = match std::str::from_utf8(bytes) {
            Ok(s) if s.is_empty() || s.contains('\u{fffd}') => None,
            // Without special tokens: a BOS would otherwise be every token's first sub-token.
            Ok(s) => {
                self.tok.inner().encode_fast(s, false).ok().and_then(|enc| enc.get_ids().first().map(|&i| i as i32))
            }
            Err(_) => self.byte_level.and_then(|chars| {
                // What the BPE model does with these bytes as one pre-token.
                let piece: String = bytes.iter().map(|&b| chars[b as usize]).collect();
                self.tok.inner().get_model().tokenize(&piece).ok()?.first().map(|t| t.id as i32)
            }),
        };
        self.cache.insert(bytes.to_vec(), id);
        id
    }

    /// The student id of a teacher alternative: by id when the tokenizers are the same, else by
    /// its bytes.
    fn map(&mut self, bytes: &[u8], teacher_id: Option<i64>) -> Option<i32> {
        match teacher_id {
            Some(id) if self.by_id => {
                i32::try_from(id).ok().filter(|&i| i >= 0 && (i as usize) < self.tok.vocab_size())
            }
            _ => self.first_id(bytes),
        }
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
    /// The Top-K mass reached 1 by rounding and the remaining mass was set to [`OTHER_FLOOR`].
    pub clamped: bool,
    /// Alternatives listed more than once (dropped after the first).
    pub duplicates: usize,
    /// Alternatives beyond the K asked for (dropped).
    pub truncated: usize,
}

/// Log of `exp(a) + exp(b)`, stable.
fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// One alternative: its bytes, the teacher's id when known, its log-probability.
type Alternative<'a> = (&'a [u8], Option<i64>, f64);

/// The alternatives of `pos` once per token, at most `top_k`, most likely first (ties in the
/// server's order), each with the teacher's id when known; and how many were dropped as
/// duplicates and as extras.
fn clean_alternatives(pos: &TeacherPosition, top_k: usize) -> (Vec<Alternative<'_>>, usize, usize) {
    let ids = pos.ids.as_ref().map(|(_, top)| top);
    let mut alts: Vec<Alternative<'_>> = pos
        .top
        .iter()
        .enumerate()
        .map(|(i, (b, lp))| (b.as_slice(), ids.and_then(|t| t.get(i).copied()), *lp))
        .collect();
    alts.sort_by(|a, b| b.2.total_cmp(&a.2));
    let before = alts.len();
    let mut seen = std::collections::HashSet::new();
    alts.retain(|(b, id, _)| seen.insert((b.to_vec(), *id)));
    let duplicates = before - alts.len();
    let truncated = alts.len().saturating_sub(top_k);
    alts.truncate(top_k);
    (alts, duplicates, truncated)
}

/// Projects one position, keeping at most `top_k` alternatives; `prompt_idx`, `step_idx` and
/// the hashes label the row.
pub fn project(
    pos: &TeacherPosition,
    proj: &mut Projector<'_>,
    top_k: usize,
    prompt_idx: i64,
    step_idx: i32,
    template_hash: &str,
    tokenizer_hash: &str,
) -> Projected {
    let (alts, duplicates, truncated) = clean_alternatives(pos, top_k);
    let mut merged: Vec<(i32, f64)> = Vec::with_capacity(alts.len());
    let mut teacher_mass = 0.0;
    for (bytes, teacher_id, lp) in alts {
        teacher_mass += lp.exp();
        let Some(id) = proj.map(bytes, teacher_id) else { continue };
        match merged.iter_mut().find(|(i, _)| *i == id) {
            Some(entry) => entry.1 = log_add(entry.1, lp),
            None => merged.push((id, lp)),
        }
    }
    // Most likely first; equal log-probabilities by id, so a row is the same on every run.
    merged.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let kept: f64 = merged.iter().map(|(_, lp)| lp.exp()).sum();
    let mut other_mass = 1.0 - kept;
    let mut clamped = false;
    if other_mass < OTHER_FLOOR && kept <= 1.0 + ROUNDING && !merged.is_empty() {
        // A near-certain token (logprob 0 beside alternatives at -17): the Top-K sums to 1 by
        // rounding. Rescale it to leave the floor for Other, so the row stays a distribution.
        let shift = (kept / (1.0 - OTHER_FLOOR)).ln();
        for entry in &mut merged {
            entry.1 -= shift;
        }
        other_mass = OTHER_FLOOR;
        clamped = true;
    }
    let other_logprob = if other_mass > 0.0 && other_mass < 1.0 { other_mass.ln() as f32 } else { f32::NAN };
    let text = String::from_utf8_lossy(&pos.sample).into_owned();
    let sample_id = proj.map(&pos.sample, pos.ids.as_ref().map(|(s, _)| *s));
    let row = TraceRow {
        prompt_idx,
        step_idx,
        teacher_sample_id: sample_id.unwrap_or(-1),
        is_struct_token: autoqat_traces::is_struct_token(&text),
        teacher_sample_text: text,
        topk_ids: merged.iter().map(|(i, _)| *i).collect(),
        topk_logprobs: merged.iter().map(|(_, lp)| *lp as f32).collect(),
        other_logprob,
        template_hash: template_hash.to_string(),
        tokenizer_hash: tokenizer_hash.to_string(),
    };
    let coverage = if teacher_mass > 0.0 { (kept / teacher_mass).min(1.0) } else { 0.0 };
    Projected { row, other_mass, coverage, clamped, duplicates, truncated }
}
