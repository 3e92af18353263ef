//! Training data: the train text tokenized once, and seeded random windows over it. The
//! sampler's whole state is one `u64`, saved in checkpoints so a resumed trial draws the same
//! batches as an uninterrupted one.

use tch::{Device, Tensor};

/// The sampler's generator: SplitMix64, whose state is a single checkpointable integer.
pub type Rng = autoqat_workspace::hash::SplitMix64;

/// The sampler's generator for `seed` (the salt keeps it apart from other streams of one seed).
pub fn sampler_rng(seed: u64) -> Rng {
    Rng::from_state(seed ^ 0x5851_f42d_4c95_7f2d)
}

/// Token ids of the training text and the window length.
#[derive(Debug)]
pub struct TrainData {
    ids: Vec<i64>,
    seq_len: usize,
}

impl TrainData {
    /// Wraps `ids`; needs at least `seq_len + 1` tokens (checked, with the count in the error).
    pub fn new(ids: Vec<i64>, seq_len: usize) -> Result<Self, String> {
        if ids.len() < seq_len + 1 {
            return Err(format!(
                "the training text has {} tokens but data.seq_len = {} needs at least {}",
                ids.len(),
                seq_len,
                seq_len + 1
            ));
        }
        Ok(Self { ids, seq_len })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Always false (construction requires tokens).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// A `[batch, seq_len + 1]` batch of windows at random offsets drawn from `rng`.
    pub fn batch(&self, batch: usize, rng: &mut Rng, device: Device) -> Tensor {
        let span = (self.ids.len() - self.seq_len) as u64;
        let mut buf = Vec::with_capacity(batch * (self.seq_len + 1));
        for _ in 0..batch {
            let start = rng.below(span) as usize;
            buf.extend_from_slice(&self.ids[start..start + self.seq_len + 1]);
        }
        Tensor::from_slice(&buf).reshape([batch as i64, self.seq_len as i64 + 1]).to_device(device)
    }
}
