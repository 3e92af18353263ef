//! Training losses: next-token cross entropy, distillation from a frozen teacher
//! (Hinton et al.: KL(teacher || student) of temperature-softened distributions, times tau^2),
//! and the distillation-traces losses over a teacher's Top-K + Other buckets.

use tch::{Kind, Reduction, Tensor};

/// Mean next-token cross entropy of `logits [B, T, V]` against `targets [B, T]`, in f32.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    let v = logits.size()[2];
    logits.to_kind(Kind::Float).reshape([-1, v]).cross_entropy_loss::<Tensor>(
        &targets.reshape([-1]),
        None,
        Reduction::Mean,
        -100,
        0.0,
    )
}

/// `tau^2 * KL(softmax(t/tau) || softmax(s/tau))`, averaged over tokens, in f32.
pub fn distill_kl(student: &Tensor, teacher: &Tensor, tau: f64) -> Tensor {
    let v = student.size()[2];
    let s = (student.to_kind(Kind::Float) / tau).log_softmax(-1, Kind::Float).reshape([-1, v]);
    let t = (teacher.to_kind(Kind::Float) / tau).log_softmax(-1, Kind::Float).reshape([-1, v]);
    let n = s.size()[0] as f64;
    // kl_div(input = log q_student, target = log p_teacher, log_target) sums p (log p - log q)
    s.kl_div(&t, Reduction::Sum, true) / n * (tau * tau)
}

/// Teacher targets of `N` trace positions (docs/contracts.md#the-distillation-traces-track), padded to `K` alternatives. Every
/// tensor is finite: invalid rows and padding hold dummy values and zero weights, so nothing
/// multiplies `0 * -inf` into a NaN.
#[derive(Debug)]
pub struct TraceTargets {
    /// `[N, K]` i64 student ids of the teacher's alternatives (0 where padded).
    pub topk_ids: Tensor,
    /// `[N, K]` f32 teacher log-probabilities (0 where padded).
    pub topk_logprobs: Tensor,
    /// `[N, K]` bool: a real alternative, not padding.
    pub topk_mask: Tensor,
    /// `[N]` f32 log of the teacher's remaining mass.
    pub other_logprob: Tensor,
    /// `[N]` i64 the teacher's sampled token in student ids.
    pub sample: Tensor,
    /// `[N]` f32: 1 for a valid row, 0 for one that must contribute nothing.
    pub valid: Tensor,
    /// `[N]` f32: 1 where the sampled token is structural (JSON/code punctuation).
    pub is_struct: Tensor,
}

/// A log-probability that underflows to exactly zero probability in f32, yet stays finite.
const NEG_BIG: f64 = -1e4;

/// `tau^2 * KL(p_t || q_s)` over the K+1 buckets (Top-K and Other), averaged over valid rows.
/// The teacher's buckets are sharpened or softened as `softmax(log p / tau)`; the student's are
/// `softmax(z / tau)` gathered at the Top-K ids, with Other = 1 - their sum.
pub fn topk_other_kl(student_logits: &Tensor, t: &TraceTargets, tau: f64) -> Tensor {
    let s = (student_logits.to_kind(Kind::Float) / tau).log_softmax(-1, Kind::Float);
    let s_k = s.gather(1, &t.topk_ids, false);
    let s_k = s_k.where_self(&t.topk_mask, &Tensor::full_like(&s_k, NEG_BIG));
    // Clamped so that a student already holding all its mass on the Top-K gives a finite term.
    let topk_mass: Tensor = s_k.exp().sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let s_other = (topk_mass * -1.0 + 1.0).clamp_min(1e-12).log();
    let q = Tensor::cat(&[&s_k, &s_other], 1);
    let t_k = (&t.topk_logprobs / tau).where_self(&t.topk_mask, &Tensor::full_like(&t.topk_logprobs, NEG_BIG));
    let p_log = Tensor::cat(&[t_k, &t.other_logprob.unsqueeze(1) / tau], 1).log_softmax(-1, Kind::Float);
    let per_row = (p_log.exp() * (&p_log - q)).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let n = t.valid.sum(Kind::Float).clamp_min(1.0);
    (per_row * &t.valid).sum(Kind::Float) / n * (tau * tau)
}

/// Cross entropy of the student on the teacher's sampled tokens, weighted per row by `weight`
/// (`valid`, or `valid * is_struct` for the format loss), divided by the count of valid rows.
pub fn weighted_sample_ce(student_logits: &Tensor, t: &TraceTargets, weight: &Tensor) -> Tensor {
    let per_row =
        student_logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(&t.sample, None, Reduction::None, -100, 0.0);
    let n = t.valid.sum(Kind::Float).clamp_min(1.0);
    (per_row * weight).sum(Kind::Float) / n
}
