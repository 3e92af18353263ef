//! Perplexity exactly as the Hugging Face guide "Perplexity of fixed-length models":
//!
//! ```text
//! for begin in range(0, seq_len, stride):
//!     end = min(begin + ctx, seq_len); trg_len = end - prev_end
//!     labels = ids[begin:end] with all but the last trg_len set to -100
//!     loss = model(ids[begin:end], labels).loss      # mean over the valid shifted labels
//!     nll_sum += loss * (trg_len - 1); n_tokens += trg_len - 1   # "num_valid - batch_size"
//!     prev_end = end; stop when end == seq_len
//! eval_loss = nll_sum / n_tokens
//! ```
//!
//! Every caller scores through [`EvalSet`] (windows as above, or the compression track's
//! document protocol); the functions below are what it runs.
//!
//! With `stride == ctx` (disjoint windows) this is the plain token-weighted mean of the
//! shifted next-token cross entropy. A window whose weight is zero is skipped (the guide would
//! add `0 * NaN`). Several windows of equal length go through one forward pass (`batch`);
//! the lm_head is applied only to positions that are scored; cross entropy is computed in f32
//! and accumulated in f64.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

use crate::error::{ModelError, Result};
use crate::llama::CausalLM;
use crate::tokenizer::TextTokenizer;

/// How the text is cut into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalOptions {
    /// Tokens per window.
    pub ctx: usize,
    /// Tokens between window starts (`ctx` = disjoint windows).
    pub stride: usize,
    /// Windows per forward pass.
    pub batch: usize,
}

/// The metrics of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Mean negative log-likelihood, nats per token.
    pub eval_loss: f64,
    /// `exp(eval_loss)`.
    pub eval_ppl: f64,
    /// `eval_loss * tokens / (bytes * ln 2)`.
    pub eval_bpb: f64,
    /// Tokens the loss is averaged over (the guide's count).
    pub tokens: usize,
    /// UTF-8 bytes of the text.
    pub bytes: usize,
    /// Tokens of the whole text.
    pub text_tokens: usize,
    /// Windows evaluated.
    pub windows: usize,
    /// Seconds spent in forward passes and loss.
    pub time_s: f64,
    /// `tokens / time_s`.
    pub tokens_per_s: f64,
}

/// One window of the guide's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    begin: usize,
    end: usize,
    trg_len: usize,
}

/// The windows of the guide's loop for `seq_len` tokens.
fn windows(seq_len: usize, ctx: usize, stride: usize) -> Vec<Window> {
    let mut out = Vec::new();
    let mut prev_end = 0;
    let mut begin = 0;
    while begin < seq_len {
        let end = (begin + ctx).min(seq_len);
        out.push(Window { begin, end, trg_len: end - prev_end });
        prev_end = end;
        if end == seq_len {
            break;
        }
        begin += stride;
    }
    out
}

/// Checks the options against the model and the text length.
fn validate(model: &CausalLM, n_ids: usize, opts: &EvalOptions) -> Result<()> {
    if n_ids < 2 {
        return Err(ModelError::Eval(format!(
            "the text has {n_ids} token(s); perplexity needs at least 2 (is the text file empty?)"
        )));
    }
    let max_pos = model.cfg.max_position_embeddings as usize;
    if opts.ctx > max_pos {
        return Err(ModelError::Eval(format!(
            "ctx {} is larger than the model's max_position_embeddings {max_pos} (hint: --ctx {max_pos} or less)",
            opts.ctx
        )));
    }
    if opts.ctx < 2 {
        return Err(ModelError::Eval(format!("ctx {} is too small (at least 2)", opts.ctx)));
    }
    if opts.stride == 0 || opts.stride > opts.ctx {
        return Err(ModelError::Eval(format!(
            "stride {} must be between 1 and ctx {} (a larger stride would skip tokens)",
            opts.stride, opts.ctx
        )));
    }
    if opts.batch == 0 {
        return Err(ModelError::Eval("batch must be at least 1".into()));
    }
    Ok(())
}

/// What both protocols add up, turned into a report.
struct Totals {
    nll_sum: f64,
    n_tokens: usize,
    n_bytes: usize,
    text_tokens: usize,
    windows: usize,
    time_s: f64,
}

impl Totals {
    /// The report, or an error when the loss is not finite.
    fn report(self) -> Result<EvalReport> {
        let Totals { nll_sum, n_tokens, n_bytes, text_tokens, windows, time_s } = self;
        let eval_loss = nll_sum / n_tokens as f64;
        if !eval_loss.is_finite() {
            return Err(ModelError::Eval(format!("eval loss is {eval_loss} (the model produced NaN/Inf logits)")));
        }
        Ok(EvalReport {
            eval_loss,
            eval_ppl: eval_loss.exp(),
            eval_bpb: if n_bytes == 0 {
                f64::NAN
            } else {
                eval_loss * n_tokens as f64 / (n_bytes as f64 * std::f64::consts::LN_2)
            },
            tokens: n_tokens,
            bytes: n_bytes,
            text_tokens,
            windows,
            time_s,
            tokens_per_s: n_tokens as f64 / time_s.max(1e-9),
        })
    }
}

/// What is scored and by which protocol: the one evaluation entry point. The QAT trial,
/// `autoqat eval` (plain checkpoints, packed exports and artifacts), the demo teacher and the
/// compression track all build one of these and call [`EvalSet::score`]; built once, it can
/// score many models (a trial evaluates its student every `eval_every` steps).
#[derive(Debug, Clone)]
pub struct EvalSet {
    scored: Scored,
    n_bytes: usize,
}

#[derive(Debug, Clone)]
enum Scored {
    /// One token stream, cut into sliding windows (the Hugging Face guide).
    Windows { ids: Vec<i64>, opts: EvalOptions },
    /// Separate documents, right-padded in batches (the compression track's validator).
    Docs { docs: Vec<Vec<i64>>, opts: DocEvalOptions },
}

impl EvalSet {
    /// Sliding windows over token ids already at hand (`n_bytes`: the UTF-8 size they encode).
    pub fn windows(ids: Vec<i64>, n_bytes: usize, opts: EvalOptions) -> Self {
        Self { scored: Scored::Windows { ids, opts }, n_bytes }
    }

    /// Sliding windows over `text`, cut to its first `max_tokens` tokens (0: all); bits per
    /// byte then count the bytes of the tokens kept.
    pub fn windows_of_text(
        tokenizer: &TextTokenizer,
        text: &str,
        opts: EvalOptions,
        max_tokens: usize,
    ) -> Result<Self> {
        if text.trim().is_empty() {
            return Err(ModelError::Eval("the eval text is empty".into()));
        }
        let (ids, n_bytes) = prefix_tokens(tokenizer, text, max_tokens)?;
        Ok(Self::windows(ids, n_bytes, opts))
    }

    /// The validator's protocol over the non-blank lines of `text` (see [`DocEvalOptions`]),
    /// keeping the first `max_docs` documents (0: all).
    pub fn documents(tokenizer: &TextTokenizer, text: &str, opts: DocEvalOptions, max_docs: usize) -> Result<Self> {
        let mut docs = line_documents(tokenizer, text, opts.max_tokens)?;
        if max_docs > 0 {
            docs.truncate(max_docs);
        }
        // Bits per byte count the bytes of the whole text, truncation aside (the validator's rule).
        Ok(Self { scored: Scored::Docs { docs, opts }, n_bytes: text.len() })
    }

    /// Tokens of the text (all documents) before windowing.
    pub fn text_tokens(&self) -> usize {
        match &self.scored {
            Scored::Windows { ids, .. } => ids.len(),
            Scored::Docs { docs, .. } => docs.iter().map(Vec::len).sum(),
        }
    }

    /// UTF-8 bytes bits-per-byte is measured against.
    pub fn n_bytes(&self) -> usize {
        self.n_bytes
    }

    /// Documents scored (0 for the windows protocol).
    pub fn documents_len(&self) -> usize {
        match &self.scored {
            Scored::Docs { docs, .. } => docs.len(),
            Scored::Windows { .. } => 0,
        }
    }

    /// Scores `model` on this set (no gradients).
    pub fn score(&self, model: &CausalLM, device: tch::Device) -> Result<EvalReport> {
        match &self.scored {
            Scored::Windows { ids, opts } => perplexity(model, ids, self.n_bytes, opts, device),
            Scored::Docs { docs, opts } => perplexity_docs(model, docs, self.n_bytes, opts, device),
        }
    }
}

/// The ids of `text`'s first `max_tokens` tokens (0: all) and the UTF-8 bytes they cover.
fn prefix_tokens(tokenizer: &TextTokenizer, text: &str, max_tokens: usize) -> Result<(Vec<i64>, usize)> {
    if max_tokens == 0 {
        return Ok((tokenizer.encode(text)?, text.len()));
    }
    // Tokenize only a generous prefix: offsets-tracking encoding of a whole corpus is slow.
    let mut cut = text.len().min(max_tokens * 16 + 1024);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    loop {
        let enc = tokenizer
            .inner()
            .encode(&text[..cut], true)
            .map_err(|e| ModelError::Tokenizer { path: tokenizer.path().to_path_buf(), msg: e.to_string() })?;
        let ids: Vec<i64> = enc.get_ids().iter().map(|&i| i64::from(i)).collect();
        // One token more than asked, so the last kept token is not cut by the prefix.
        if ids.len() > max_tokens || cut == text.len() {
            let n = max_tokens.min(ids.len());
            if n == ids.len() {
                return Ok((ids, cut));
            }
            // Bytes up to the end of the last kept token, so bits-per-byte counts the scored text.
            let bytes = enc.get_offsets().get(n.saturating_sub(1)).map(|o| o.1).unwrap_or(cut);
            return Ok((ids[..n].to_vec(), bytes));
        }
        cut = text.len().min(cut * 2);
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
    }
}

/// Perplexity of `model` on token ids `ids` of a text of `n_bytes` UTF-8 bytes.
pub fn perplexity(
    model: &CausalLM,
    ids: &[i64],
    n_bytes: usize,
    opts: &EvalOptions,
    device: tch::Device,
) -> Result<EvalReport> {
    validate(model, ids.len(), opts)?;
    let start = Instant::now();
    let wins = windows(ids.len(), opts.ctx, opts.stride);
    let (mut nll_sum, mut n_tokens) = (0.0f64, 0usize);
    // Consecutive windows of equal length share a forward pass.
    let mut i = 0;
    while i < wins.len() {
        let len = wins[i].end - wins[i].begin;
        let mut j = i + 1;
        while j < wins.len() && j - i < opts.batch && wins[j].end - wins[j].begin == len {
            j += 1;
        }
        let group = &wins[i..j];
        let losses = tch::no_grad(|| window_losses(model, ids, group, device))?;
        for (w, loss) in group.iter().zip(losses) {
            let weight = w.trg_len - 1;
            if weight == 0 {
                continue;
            }
            nll_sum += loss * weight as f64;
            n_tokens += weight;
        }
        i = j;
    }
    let time_s = start.elapsed().as_secs_f64();
    if n_tokens == 0 {
        return Err(ModelError::Eval("no token was scored (text too short for ctx/stride)".into()));
    }
    Totals { nll_sum, n_tokens, n_bytes, text_tokens: ids.len(), windows: wins.len(), time_s }.report()
}

/// The guide's per-window loss (mean over the valid shifted labels) for windows of equal length.
fn window_losses(model: &CausalLM, ids: &[i64], group: &[Window], device: tch::Device) -> Result<Vec<f64>> {
    let len = (group[0].end - group[0].begin) as i64;
    let flat: Vec<i64> = group.iter().flat_map(|w| ids[w.begin..w.end].iter().copied()).collect();
    let input = Tensor::from_slice(&flat).view([group.len() as i64, len]).to_device(device);
    // Label position p (1..len) is valid when p >= len - trg_len; its logits sit at p - 1.
    let first_label = |w: &Window| (len - w.trg_len as i64).max(1);
    let s = group.iter().map(first_label).min().unwrap_or(1);
    let hidden = model.hidden(&input).narrow(1, s - 1, len - s); // [B, len-s, C]
    let logits = model.head(&hidden).to_kind(Kind::Float); // [B, len-s, V]
    let targets = input.narrow(1, s, len - s);
    let v = logits.size()[2];
    let nll = logits
        .reshape([-1, v])
        .f_cross_entropy_loss::<Tensor>(&targets.reshape([-1]), None, Reduction::None, -100, 0.0)?
        .view([group.len() as i64, len - s])
        .to_kind(Kind::Double)
        .to_device(tch::Device::Cpu);
    let rows: Vec<Vec<f64>> = Vec::<Vec<f64>>::try_from(&nll)?;
    Ok(group
        .iter()
        .zip(rows)
        .map(|(w, row)| {
            let skip = (first_label(w) - s) as usize;
            let scored = &row[skip..];
            scored.iter().sum::<f64>() / scored.len().max(1) as f64
        })
        .collect())
}

/// How documents are scored by the compression track's validator (docs/contracts.md#the-compression-track): each document
/// truncated to `max_tokens` (no stride), `batch` documents per forward pass right-padded, the
/// shifted next-token cross entropy masked on padding, summed and divided by the tokens scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocEvalOptions {
    /// Tokens kept from the start of each document.
    pub max_tokens: usize,
    /// Documents per forward pass.
    pub batch: usize,
}

/// Token ids of each non-blank line of `text` (one document per line, as a dataset's text
/// column), with the tokenizer's special tokens, truncated to `max_tokens`; documents of fewer
/// than two tokens score nothing and are dropped.
pub fn line_documents(tokenizer: &TextTokenizer, text: &str, max_tokens: usize) -> Result<Vec<Vec<i64>>> {
    let mut docs = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut ids = tokenizer.encode(line)?;
        ids.truncate(max_tokens);
        if ids.len() >= 2 {
            docs.push(ids);
        }
    }
    Ok(docs)
}

/// Perplexity of `model` over `docs` by the validator's protocol (see [`DocEvalOptions`]);
/// `n_bytes` is the UTF-8 size of the text the documents came from (for bits per byte).
pub fn perplexity_docs(
    model: &CausalLM,
    docs: &[Vec<i64>],
    n_bytes: usize,
    opts: &DocEvalOptions,
    device: tch::Device,
) -> Result<EvalReport> {
    if opts.batch == 0 || opts.max_tokens < 2 {
        return Err(ModelError::Eval(format!(
            "doc protocol needs batch >= 1 and max_tokens >= 2 (got batch {}, max_tokens {})",
            opts.batch, opts.max_tokens
        )));
    }
    let max_pos = model.cfg.max_position_embeddings as usize;
    if opts.max_tokens > max_pos {
        return Err(ModelError::Eval(format!(
            "doc length {} is larger than the model's max_position_embeddings {max_pos} (hint: --doc-tokens {max_pos} or less)",
            opts.max_tokens
        )));
    }
    if docs.is_empty() {
        return Err(ModelError::Eval("no document of at least 2 tokens to score (is the text empty?)".into()));
    }
    let start = Instant::now();
    let (mut nll_sum, mut n_tokens) = (0.0f64, 0usize);
    // The loss is a sum over documents, and with causal attention a right-padded document's
    // logits do not depend on its padding, so batching documents of similar length gives the
    // validator's number with far less padding to compute.
    let mut order: Vec<&[i64]> = docs.iter().map(Vec::as_slice).collect();
    order.sort_by_key(|d| std::cmp::Reverse(d.len().min(opts.max_tokens)));
    for group in order.chunks(opts.batch) {
        let (sum, n) = tch::no_grad(|| padded_batch_nll(model, group, opts.max_tokens, device))?;
        nll_sum += sum;
        n_tokens += n;
    }
    let time_s = start.elapsed().as_secs_f64();
    let text_tokens = docs.iter().map(Vec::len).sum();
    Totals { nll_sum, n_tokens, n_bytes, text_tokens, windows: docs.len(), time_s }.report()
}

/// Summed NLL and count of scored tokens of one right-padded batch of documents.
fn padded_batch_nll(
    model: &CausalLM,
    group: &[&[i64]],
    max_tokens: usize,
    device: tch::Device,
) -> Result<(f64, usize)> {
    let len = group.iter().map(|d| d.len().min(max_tokens)).max().unwrap_or(0) as i64;
    let b = group.len() as i64;
    // Padding id 0 is never scored: the targets there are -100.
    let mut ids = vec![0i64; (b * len) as usize];
    let mut targets = vec![-100i64; (b * (len - 1)) as usize];
    for (i, doc) in group.iter().enumerate() {
        let doc = &doc[..doc.len().min(max_tokens)];
        let row = i * len as usize;
        ids[row..row + doc.len()].copy_from_slice(doc);
        let trow = i * (len as usize - 1);
        targets[trow..trow + doc.len() - 1].copy_from_slice(&doc[1..]);
    }
    let input = Tensor::from_slice(&ids).view([b, len]).to_device(device);
    let targets = Tensor::from_slice(&targets).to_device(device);
    let hidden = model.hidden(&input).narrow(1, 0, len - 1);
    let logits = model.head(&hidden).to_kind(Kind::Float);
    let v = logits.size()[2];
    let nll = logits
        .reshape([-1, v])
        .f_cross_entropy_loss::<Tensor>(&targets, None, Reduction::Sum, -100, 0.0)?
        .to_kind(Kind::Double)
        .double_value(&[]);
    let scored = group.iter().map(|d| d.len().min(max_tokens) - 1).sum();
    Ok((nll, scored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_guide_loop() {
        // Disjoint: every token after the first is a target once.
        let w = windows(10, 4, 4);
        assert_eq!(
            w.iter().map(|w| (w.begin, w.end, w.trg_len)).collect::<Vec<_>>(),
            vec![(0, 4, 4), (4, 8, 4), (8, 10, 2)]
        );
        // Overlapping: stops as soon as a window reaches the end.
        let w = windows(10, 6, 3);
        assert_eq!(
            w.iter().map(|w| (w.begin, w.end, w.trg_len)).collect::<Vec<_>>(),
            vec![(0, 6, 6), (3, 9, 3), (6, 10, 1)]
        );
    }
}
