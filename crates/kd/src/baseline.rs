//! `autoqat kd baseline`: the teacher's deterministic answers to fixed prompts, with the decode
//! speed, latency distribution and token usage the efficiency report compares against.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::teacher::Teacher;

/// One answered prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineAnswer {
    /// Prompt index.
    pub idx: usize,
    /// The prompt (the report decodes it again with the student).
    pub prompt: String,
    /// The answer.
    pub text: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// Seconds.
    pub latency_s: f64,
}

/// `teacher_baseline.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeacherBaseline {
    /// Who answered.
    pub teacher: String,
    /// Longest answer asked for.
    pub max_tokens: usize,
    /// Generated tokens over the summed request time.
    pub decode_tokens_per_s: f64,
    /// Latency percentiles in seconds.
    pub latency_p50_s: f64,
    /// 90th percentile.
    pub latency_p90_s: f64,
    /// 99th percentile.
    pub latency_p99_s: f64,
    /// Prompt tokens, summed.
    pub prompt_tokens: u64,
    /// Generated tokens, summed.
    pub completion_tokens: u64,
    /// Bytes of the teacher's weights when known (a local checkpoint's safetensors files).
    pub weight_bytes: Option<u64>,
    /// Every answer.
    pub answers: Vec<BaselineAnswer>,
}

/// The `q` quantile (nearest rank) of `sorted`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Asks every prompt once and measures.
pub fn run_baseline(
    teacher: &mut dyn Teacher,
    prompts: &[String],
    max_tokens: usize,
    weight_bytes: Option<u64>,
    on_answer: &mut dyn FnMut(&BaselineAnswer),
) -> Result<TeacherBaseline> {
    let mut answers = Vec::with_capacity(prompts.len());
    for (idx, p) in prompts.iter().enumerate() {
        let a = teacher.answer(p, max_tokens, 0)?;
        let b = BaselineAnswer {
            idx,
            prompt: p.clone(),
            text: a.text,
            prompt_tokens: a.prompt_tokens,
            completion_tokens: a.completion_tokens,
            latency_s: a.latency_s,
        };
        on_answer(&b);
        answers.push(b);
    }
    let mut lat: Vec<f64> = answers.iter().map(|a| a.latency_s).collect();
    lat.sort_by(f64::total_cmp);
    let completion: u64 = answers.iter().map(|a| a.completion_tokens).sum();
    let total_s: f64 = lat.iter().sum();
    Ok(TeacherBaseline {
        teacher: teacher.describe(),
        max_tokens,
        decode_tokens_per_s: completion as f64 / total_s.max(1e-9),
        latency_p50_s: quantile(&lat, 0.5),
        latency_p90_s: quantile(&lat, 0.9),
        latency_p99_s: quantile(&lat, 0.99),
        prompt_tokens: answers.iter().map(|a| a.prompt_tokens).sum(),
        completion_tokens: completion,
        weight_bytes,
        answers,
    })
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 5.0);
        assert_eq!(quantile(&v, 0.9), 9.0);
        assert_eq!(quantile(&v, 0.99), 10.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
