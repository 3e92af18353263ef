//! The learning-rate schedule: a pure function of the step, so a resumed run recomputes it
//! exactly. The formulas follow Hugging Face `transformers.optimization` (checked against it in
//! `autoqat-qat`'s `quant_numerics` test). The QAT trial's STE lambda schedules, and the
//! `Schedules` that resolves a recipe's, stay in `autoqat_qat::quant::schedule`.

use autoqat_recipe::LrSchedule;
use std::f64::consts::PI;

/// Multiplier of the peak lr at 0-based `step` out of `total` (as `LambdaLR` would apply it).
pub fn lr_factor(kind: LrSchedule, step: u64, total: u64, warmup: u64, min_frac: f64, decay: u64) -> f64 {
    let s = step as f64;
    match kind {
        LrSchedule::Constant => {
            if step < warmup {
                s / (warmup.max(1) as f64)
            } else {
                1.0
            }
        }
        LrSchedule::Cosine => {
            if step < warmup {
                return s / (warmup.max(1) as f64);
            }
            let progress = (step - warmup) as f64 / (total.saturating_sub(warmup).max(1) as f64);
            let f = 0.5 * (1.0 + (PI * progress).cos());
            (f * (1.0 - min_frac) + min_frac).max(0.0)
        }
        LrSchedule::Wsd => {
            let stable = total.saturating_sub(warmup).saturating_sub(decay);
            if step < warmup {
                let f = s / (warmup.max(1) as f64);
                return (f * (1.0 - min_frac) + min_frac).max(0.0);
            }
            if step < warmup + stable {
                return 1.0;
            }
            if step < warmup + stable + decay {
                let progress = (step - warmup - stable) as f64 / (decay.max(1) as f64);
                let f = 1.0 - progress;
                return (f * (1.0 - min_frac) + min_frac).max(0.0);
            }
            min_frac
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_each_shape_ends_where_it_should() {
        for kind in [LrSchedule::Constant, LrSchedule::Cosine, LrSchedule::Wsd] {
            assert!(lr_factor(kind, 5, 100, 10, 0.1, 20) < 1.0, "{kind:?} warms up");
            assert_eq!(lr_factor(kind, 10, 100, 10, 0.1, 20), 1.0, "{kind:?} peaks after warmup");
        }
        assert_eq!(lr_factor(LrSchedule::Constant, 99, 100, 10, 0.1, 20), 1.0);
        assert!((lr_factor(LrSchedule::Cosine, 100, 100, 10, 0.1, 0) - 0.1).abs() < 1e-12);
        assert_eq!(lr_factor(LrSchedule::Wsd, 70, 100, 10, 0.1, 20), 1.0, "stable until the decay");
        assert_eq!(lr_factor(LrSchedule::Wsd, 100, 100, 10, 0.1, 20), 0.1);
    }
}
