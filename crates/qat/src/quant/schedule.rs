//! Step schedules: the STE blend factor lambda, and [`Schedules`], every schedule of one trial
//! resolved from its recipe. Pure functions of the step, so a resumed trial recomputes them
//! exactly. The learning-rate schedule itself is the toolkit's
//! [`autoqat_toolkit::schedule::lr_factor`] (shared with the other tracks).

pub use autoqat_recipe::frac_steps;
use autoqat_recipe::{LambdaSchedule, LrSchedule, Recipe, ScheduleExpr};
use autoqat_toolkit::schedule::lr_factor;
use std::f64::consts::PI;

/// lambda at 0-based `step`: ramps from 0 to 1 over `warmup` steps with the given shape, then 1.
/// `Expr` has no shape of its own: [`Schedules`] evaluates `ste.lambda_expr`, and the kind alone
/// gives NaN, which the trainer refuses as a non-finite value.
pub fn lambda_at(kind: LambdaSchedule, step: u64, warmup: u64) -> f64 {
    if kind == LambdaSchedule::Expr {
        return f64::NAN;
    }
    if warmup == 0 || kind == LambdaSchedule::Constant {
        return 1.0;
    }
    let p = (step as f64 / warmup as f64).min(1.0);
    match kind {
        LambdaSchedule::Constant | LambdaSchedule::Expr => 1.0,
        LambdaSchedule::Linear => p,
        LambdaSchedule::Cosine => 0.5 * (1.0 - (PI * p).cos()),
        LambdaSchedule::Exponential => (1.0 - (-5.0 * p).exp()) / (1.0 - (-5.0f64).exp()),
        // Four stairs; the last one (1.0) is reached when the warmup ends.
        LambdaSchedule::Step => (p * 4.0).floor() / 4.0,
        LambdaSchedule::Sigmoid => {
            let s = |x: f64| 1.0 / (1.0 + (-x).exp());
            let k = 10.0;
            (s(k * (p - 0.5)) - s(-k / 2.0)) / (s(k / 2.0) - s(-k / 2.0))
        }
    }
}

/// Every schedule of one trial, resolved to step counts.
#[derive(Debug, Clone)]
pub struct Schedules {
    /// Total optimizer steps.
    pub total: u64,
    lambda_kind: LambdaSchedule,
    lambda_expr: Option<ScheduleExpr>,
    lambda_warmup: u64,
    lr: f64,
    lr_kind: LrSchedule,
    lr_warmup: u64,
    min_frac: f64,
    decay: u64,
    /// First step at 4-bit activations (A8 -> A4 flip), if any.
    pub a4_from: Option<u64>,
}

impl Schedules {
    /// Resolves the schedules of `recipe`.
    pub fn new(recipe: &Recipe) -> Self {
        Self::with_total(recipe, recipe.total_steps())
    }

    /// The schedules of `recipe` over `total` steps (trace training counts its steps from the
    /// tokens its sequences really hold, not from `data.seq_len`).
    pub fn with_total(recipe: &Recipe, total: u64) -> Self {
        let a4_from = (recipe.activations.bits == autoqat_recipe::ActBits::A8 && recipe.activations.a4_flip_frac < 1.0)
            .then(|| frac_steps(recipe.activations.a4_flip_frac, total));
        Self {
            total,
            lambda_kind: recipe.ste.lambda_schedule,
            // The recipe checked the program when it was parsed.
            lambda_expr: recipe.lambda_program().ok().flatten(),
            lambda_warmup: frac_steps(recipe.ste.lambda_warmup_frac, total),
            lr: recipe.optim.lr,
            lr_kind: recipe.optim.lr_schedule,
            lr_warmup: frac_steps(recipe.optim.lr_warmup_frac, total),
            min_frac: recipe.optim.min_lr_frac,
            decay: frac_steps(recipe.optim.wsd_decay_frac, total),
            a4_from,
        }
    }

    /// lambda used by the forward passes of 0-based `step`.
    pub fn lambda(&self, step: u64) -> f64 {
        match &self.lambda_expr {
            Some(e) => e.at(step, self.total, self.lambda_warmup),
            None => lambda_at(self.lambda_kind, step, self.lambda_warmup),
        }
    }

    /// Learning rate of 0-based `step`.
    pub fn lr(&self, step: u64) -> f64 {
        self.lr * lr_factor(self.lr_kind, step, self.total, self.lr_warmup, self.min_frac, self.decay)
    }
}
