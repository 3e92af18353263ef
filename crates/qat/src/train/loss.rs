//! The recipe's `loss.extra` term, evaluated over the quantizers. The generic losses (cross
//! entropy, logit distillation, the trace losses) are `autoqat_toolkit::loss`.

use crate::quant::expr::{Env, Val};
use crate::quant::QuantHandle;
use autoqat_recipe::LossExpr;
use tch::{Kind, Tensor};

/// The `loss.extra` term at 0-based `step` of `total`: its terms (`autoqat_expr::LOSS_TERMS`)
/// are averaged over the quantized matrices, and only the ones it reads are computed.
pub fn extra_loss(e: &LossExpr, handles: &[QuantHandle], step: u64, total: u64) -> Tensor {
    let n = handles.len().max(1) as f64;
    let mean_over = |f: &dyn Fn(&QuantHandle) -> Tensor| -> Tensor {
        let terms: Vec<Tensor> = handles.iter().map(f).collect();
        match terms.is_empty() {
            true => Tensor::from(0.0f32),
            false => Tensor::stack(&terms, 0).sum(Kind::Float) / n,
        }
    };
    let mut terms = vec![
        ("step", Val::Num(step as f64)),
        ("steps", Val::Num(total as f64)),
        ("progress", Val::Num(step as f64 / total.max(1) as f64)),
        ("pi", Val::Num(std::f64::consts::PI)),
    ];
    if e.uses("qerr") {
        terms.push((
            "qerr",
            Val::T(mean_over(&|h| {
                let q = h.quant.fake_quant(&h.weight, h.alpha.as_ref()).detach();
                // Relative to the weight's own size, which is not pushed down by this term.
                let w2 = h.weight.square().mean(Kind::Float).detach().clamp_min(1e-20);
                (&h.weight - q).square().mean(Kind::Float) / w2
            })),
        ));
    }
    if e.uses("zero_frac") {
        terms.push((
            "zero_frac",
            Val::T(mean_over(&|h| {
                let c = h.quant.codes(&h.weight, h.alpha.as_ref());
                let hard = c.codes.eq(0.0).to_kind(Kind::Float).mean(Kind::Float);
                let g = h.quant.group(&h.weight);
                let soft = (g.abs() * 2.0 / c.scale.clamp_min(1e-12) * -1.0 + 1.0).relu().mean(Kind::Float);
                // The true fraction forward, the surrogate's gradient backward.
                hard + (&soft - soft.detach())
            })),
        ));
    }
    if e.uses("l2") {
        terms.push(("l2", Val::T(mean_over(&|h| h.weight.square().mean(Kind::Float)))));
    }
    match Env::scalars(terms).eval(&e.expr) {
        Val::T(t) => t,
        Val::Num(v) => Tensor::from(v as f32),
    }
}
