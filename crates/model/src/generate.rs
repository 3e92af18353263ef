//! Greedy decoding with a key/value cache: the local teacher's answers and every decode
//! tokens/s figure (student and local teacher) come from here, so they are measured the same way.

use std::path::Path;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::llama::{CausalLM, KvCache};

/// One generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeStep {
    /// The chosen (argmax) token.
    pub id: i64,
    /// Its log-probability.
    pub logprob: f64,
    /// The `top_k` most likely tokens and their log-probabilities, most likely first.
    pub top: Vec<(i64, f64)>,
}

/// A greedy answer and how long it took.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Generated tokens (a stop token ends the answer and is not included).
    pub steps: Vec<DecodeStep>,
    /// Seconds of the whole call, prompt included, as an API client would measure it.
    pub total_s: f64,
    /// Seconds until the first token: the prompt's forward pass (prefill); the rest of
    /// `total_s` is the token-by-token decode.
    pub prefill_s: f64,
}

/// Greedily continues `prompt` by up to `max_new` tokens, stopping before any id in `stop`,
/// with the `top_k` alternatives of each step.
pub fn greedy_decode(
    model: &CausalLM,
    prompt: &[i64],
    max_new: usize,
    stop: &[i64],
    top_k: usize,
    device: Device,
) -> Result<Decoded> {
    let start = Instant::now();
    tch::no_grad(|| {
        let mut cache = KvCache::new();
        let mut steps = Vec::with_capacity(max_new);
        let mut prefill_s = None;
        let mut input = Tensor::from_slice(prompt).unsqueeze(0).to_device(device);
        while steps.len() < max_new {
            let logits = model.forward_cached(&input, &mut cache);
            let last = logits.get(0).get(-1).to_kind(Kind::Float);
            let logp = last.log_softmax(-1, Kind::Float);
            let id = logp.argmax(-1, false).int64_value(&[]);
            prefill_s.get_or_insert_with(|| start.elapsed().as_secs_f64());
            if stop.contains(&id) {
                break;
            }
            let top = if top_k == 0 {
                Vec::new()
            } else {
                let (vals, idx) = logp.topk(top_k.min(logp.size()[0] as usize) as i64, -1, true, true);
                let vals = Vec::<f32>::try_from(vals.to_device(Device::Cpu))?;
                let idx = Vec::<i64>::try_from(idx.to_device(Device::Cpu))?;
                idx.into_iter().zip(vals).map(|(i, v)| (i, f64::from(v))).collect()
            };
            steps.push(DecodeStep { id, logprob: logp.double_value(&[id]), top });
            input = Tensor::from_slice(&[id]).unsqueeze(0).to_device(device);
        }
        let total_s = start.elapsed().as_secs_f64();
        Ok(Decoded { steps, total_s, prefill_s: prefill_s.unwrap_or(total_s) })
    })
}

/// The end-of-text ids a model directory's `config.json` (and `generation_config.json`) name.
pub fn stop_ids(dir: &Path) -> Vec<i64> {
    let mut ids = Vec::new();
    for file in ["config.json", "generation_config.json"] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        match &v["eos_token_id"] {
            serde_json::Value::Number(n) => ids.extend(n.as_i64()),
            serde_json::Value::Array(a) => ids.extend(a.iter().filter_map(|x| x.as_i64())),
            _ => {}
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}
