//! Training losses: next-token cross entropy, and distillation from a frozen teacher
//! (Hinton et al.: KL(teacher || student) of temperature-softened distributions, times tau^2).

use tch::{Kind, Reduction, Tensor};

/// Mean next-token cross entropy of `logits [B, T, V]` against `targets [B, T]`, in f32.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    let v = logits.size()[2];
    logits
        .to_kind(Kind::Float)
        .reshape([-1, v])
        .cross_entropy_loss::<Tensor>(&targets.reshape([-1]), None, Reduction::Mean, -100, 0.0)
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
