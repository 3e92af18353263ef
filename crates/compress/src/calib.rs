//! Calibration: the statistics a sensitivity needs, gathered from forward passes of the
//! full-precision model over calibration tokens.
//!
//! [`Recorder`] is a [`LinearBuilder`]: it builds plain layers that, while recording, add the
//! Gram matrix `H = sum_t x_t x_tᵀ` of their inputs. Projections that read the same input
//! (q/k/v; gate/up) share one `H`, so it is computed once per input.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use autoqat_model::linear::{Linear, LinearBuilder, LinearRole, LinearSpec, PlainLinear};
use autoqat_model::ModelError;
use tch::nn;
use tch::{Device, Kind, Tensor};

use crate::error::{CompressError, Result};

/// The key of the input a projection reads: projections with the same key share one `H`.
/// A layer's token mixer, softmax attention or Gated DeltaNet, reads `attn_in` and its output
/// projection `o_in`.
pub fn input_key(role: LinearRole, layer: Option<usize>) -> String {
    let group = match role {
        LinearRole::Q | LinearRole::K | LinearRole::V => "attn_in",
        LinearRole::InProjQkv | LinearRole::InProjZ | LinearRole::InProjB | LinearRole::InProjA => "attn_in",
        LinearRole::O | LinearRole::OutProj => "o_in",
        LinearRole::Gate | LinearRole::Up => "mlp_in",
        LinearRole::Down => "down_in",
        LinearRole::LmHead => return "head_in".to_string(),
    };
    format!("{}.{group}", layer.unwrap_or(0))
}

#[derive(Debug, Default)]
struct Shared {
    grams: Mutex<HashMap<String, Tensor>>,
    on: AtomicBool,
}

/// Builds plain layers that record their input Gram matrices while recording is on.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    shared: Arc<Shared>,
}

impl Recorder {
    /// Starts or stops recording.
    pub fn set_recording(&self, on: bool) {
        self.shared.on.store(on, Ordering::SeqCst);
    }

    /// The recorded Gram matrices by [`input_key`], emptied from the recorder.
    pub fn take_grams(&self) -> HashMap<String, Tensor> {
        self.shared.grams.lock().map(|mut g| std::mem::take(&mut *g)).unwrap_or_default()
    }
}

/// A plain linear layer that records its input's Gram matrix.
#[derive(Debug)]
struct RecordingLinear {
    inner: PlainLinear,
    /// Only the first projection of a shared input records it.
    key: Option<String>,
    shared: Arc<Shared>,
}

impl Linear for RecordingLinear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        if let Some(key) = &self.key {
            if self.shared.on.load(Ordering::SeqCst) {
                let n = *xs.size().last().unwrap_or(&0);
                let x = xs.detach().reshape([-1, n]).to_kind(Kind::Float);
                let gram = x.tr().matmul(&x);
                if let Ok(mut grams) = self.shared.grams.lock() {
                    match grams.get_mut(key) {
                        Some(h) => {
                            let _ = h.g_add_(&gram);
                        }
                        None => {
                            grams.insert(key.clone(), gram);
                        }
                    }
                }
            }
        }
        self.inner.forward(xs)
    }
}

impl LinearBuilder for Recorder {
    fn linear(&self, p: &nn::Path, spec: LinearSpec) -> std::result::Result<Box<dyn Linear>, ModelError> {
        let first_reader = matches!(
            spec.role,
            LinearRole::Q
                | LinearRole::InProjQkv
                | LinearRole::O
                | LinearRole::OutProj
                | LinearRole::Gate
                | LinearRole::Down
                | LinearRole::LmHead
        );
        let key = first_reader.then(|| input_key(spec.role, spec.layer));
        Ok(Box::new(RecordingLinear { inner: PlainLinear::new(p, spec)?, key, shared: self.shared.clone() }))
    }
}

/// Calibration sequences: the first `tokens` ids of the text cut into `[n, seq_len]` rows.
pub fn sequences(ids: &[i64], tokens: usize, seq_len: usize) -> Result<Tensor> {
    if seq_len < 2 {
        return Err(CompressError::Calibration(format!("calibration.seq_len {seq_len} is too small (at least 2)")));
    }
    let want = tokens.max(seq_len);
    if ids.len() < want {
        return Err(CompressError::Calibration(format!(
            "the calibration text has {} tokens, {} fewer than calibration.tokens = {want} (hint: a longer text, or lower calibration.tokens)",
            ids.len(),
            want - ids.len()
        )));
    }
    let n = (want / seq_len) as i64;
    Ok(Tensor::from_slice(&ids[..(n as usize) * seq_len]).view([n, seq_len as i64]))
}

/// `(start, len)` of consecutive batches of at most `size` of `n` sequences, in order: one
/// pass over the calibration set.
pub fn batches(n: i64, size: i64) -> impl Iterator<Item = (i64, i64)> {
    let size = size.max(1);
    (0..n).step_by(size as usize).map(move |start| (start, size.min(n - start)))
}

/// `(start, len)` of the batch of training step `step` when steps cycle through `n`
/// sequences `batch` at a time (the last batch of a pass may be shorter).
pub fn cycled_batch(step: usize, batch: i64, n: i64) -> (i64, i64) {
    let start = (step as i64 * batch) % n;
    (start, batch.min(n - start))
}

/// How often each vocabulary id occurs in `seqs` (f32 `[vocab]`): the Gram matrix of the
/// embedding lookup, whose inputs are one-hot.
pub fn token_counts(seqs: &Tensor, vocab: i64) -> Tensor {
    seqs.flatten(0, -1).to_device(Device::Cpu).bincount(None::<Tensor>, vocab).to_kind(Kind::Float).narrow(0, 0, vocab)
}

/// Zeroes the gradients `vars` have accumulated (the calibration's Fisher passes and the
/// distillation leave them on variables that no optimizer owns).
pub fn zero_grads<'a>(vars: impl IntoIterator<Item = &'a Tensor>) {
    for v in vars {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_cover_every_sequence_once_and_cycling_wraps() {
        assert_eq!(super::batches(5, 2).collect::<Vec<_>>(), vec![(0, 2), (2, 2), (4, 1)]);
        assert_eq!(super::batches(0, 8).count(), 0);
        assert_eq!(super::cycled_batch(2, 2, 5), (4, 1));
        assert_eq!(super::cycled_batch(3, 2, 5), (1, 2));
    }
}
