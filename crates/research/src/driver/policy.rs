//! The keep decision under noise: a finished trial is kept only if it beats the best by the
//! configured relative margin, and only if a second seed beats it too when `noise.confirm_seed`
//! is on or when its gain is under `noise.confirm_sigmas` times the measured σ. Pure functions
//! of the numbers, so the rule reads (and is tested) in one place: [`beats`] is the only place
//! either loop (one trial at a time, or several in worktrees) decides a keep.

use crate::noise;
use crate::results::Status;
use crate::settings::NoiseSettings;

/// What the first trial's PPL says about a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not better by the margin.
    Discard,
    /// Better by the margin: keep.
    Keep,
    /// Better by the margin, but keep only if a second seed agrees.
    Confirm,
}

/// The verdict on `ppl` against the best's `best_ppl`, with `sigma` the baseline's measured
/// run-to-run σ (None when the baseline ran once).
pub(super) fn verdict(ppl: f64, best_ppl: f64, n: &NoiseSettings, sigma: Option<f64>) -> Verdict {
    let within_noise = sigma.is_some_and(|s| best_ppl - ppl < n.confirm_sigmas * s);
    if !noise::beats(ppl, best_ppl, n.min_rel_improvement) {
        Verdict::Discard
    } else if n.confirm_seed || within_noise {
        Verdict::Confirm
    } else {
        Verdict::Keep
    }
}

/// The status after the second seed scored `confirm_ppl` (missing: it did not finish).
pub(super) fn confirmed(confirm_ppl: Option<f64>, best_ppl: f64, n: &NoiseSettings) -> Status {
    if noise::beats(confirm_ppl.unwrap_or(f64::INFINITY), best_ppl, n.min_rel_improvement) {
        Status::Keep
    } else {
        Status::Discard
    }
}

/// What the second-seed run of a [`Verdict::Confirm`] gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Second {
    /// It was not run: the trial has no seed key to shift, so the first result stands.
    NotRun,
    /// It failed (crash, timeout, pruned).
    Failed,
    /// It finished with this PPL (None: no metric).
    Scored(Option<f64>),
}

/// The keep decision: whether `ppl` beats `against` under the noise policy, with the second
/// seed's result when the verdict asked for one.
pub(super) fn beats(ppl: f64, against: f64, n: &NoiseSettings, sigma: Option<f64>, second: Second) -> bool {
    match verdict(ppl, against, n, sigma) {
        Verdict::Discard => false,
        Verdict::Keep => true,
        Verdict::Confirm => match second {
            Second::NotRun => true,
            Second::Failed => false,
            Second::Scored(p) => confirmed(p, against, n) == Status::Keep,
        },
    }
}

/// Whether a discarded `ppl` came within `near_miss_sigmas` σ of `best_ppl` (while σ is
/// unknown: within that many `min_rel_improvement` margins).
pub(super) fn near_miss(ppl: f64, best_ppl: f64, n: &NoiseSettings, sigma: Option<f64>) -> bool {
    let noise = sigma.unwrap_or(best_ppl * n.min_rel_improvement);
    ppl.is_finite() && ppl - best_ppl < n.near_miss_sigmas * noise
}

/// Relative change of `ppl` against `best_ppl` (the results column `delta`).
pub(super) fn delta(ppl: f64, best_ppl: f64) -> f64 {
    (ppl - best_ppl) / best_ppl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_needs_the_margin_and_a_confirming_second_seed() {
        let mut n = NoiseSettings { min_rel_improvement: 0.01, confirm_seed: false, ..NoiseSettings::default() };
        assert_eq!(verdict(99.5, 100.0, &n, None), Verdict::Discard, "0.5% is inside the 1% margin");
        assert_eq!(verdict(98.0, 100.0, &n, None), Verdict::Keep);
        assert_eq!(verdict(f64::NAN, 100.0, &n, None), Verdict::Discard);
        // With σ = 1.5 measured, a gain of 2 is under 2σ = 3: confirmed first; a gain of 4 is not.
        assert_eq!(verdict(98.0, 100.0, &n, Some(1.5)), Verdict::Confirm);
        assert_eq!(verdict(96.0, 100.0, &n, Some(1.5)), Verdict::Keep);
        n.confirm_sigmas = 0.0;
        assert_eq!(verdict(98.0, 100.0, &n, Some(1.5)), Verdict::Keep, "0 turns the σ rule off");
        n.confirm_seed = true;
        assert_eq!(verdict(98.0, 100.0, &n, None), Verdict::Confirm);
        assert_eq!(confirmed(Some(98.5), 100.0, &n), Status::Keep);
        assert_eq!(confirmed(Some(99.9), 100.0, &n), Status::Discard);
        assert_eq!(confirmed(None, 100.0, &n), Status::Discard);
        assert!((delta(98.0, 100.0) + 0.02).abs() < 1e-12);
        n.near_miss_sigmas = 2.0;
        assert!(near_miss(102.0, 100.0, &n, Some(1.5)), "2 above the best is inside 2σ = 3");
        assert!(!near_miss(104.0, 100.0, &n, Some(1.5)));
        assert!(near_miss(101.5, 100.0, &n, None), "without σ: 2 margins of 1% = 2");
        assert!(!near_miss(f64::NAN, 100.0, &n, Some(1.5)));
    }

    #[test]
    fn beats_follows_the_verdict_and_the_second_seed() {
        let mut n = NoiseSettings { min_rel_improvement: 0.01, confirm_seed: false, ..NoiseSettings::default() };
        assert!(!beats(99.5, 100.0, &n, None, Second::Scored(Some(90.0))), "a discard stays one");
        assert!(beats(98.0, 100.0, &n, None, Second::Failed), "a clear keep needs no second seed");
        n.confirm_seed = true;
        assert!(beats(98.0, 100.0, &n, None, Second::Scored(Some(98.5))));
        assert!(!beats(98.0, 100.0, &n, None, Second::Scored(Some(99.9))));
        assert!(!beats(98.0, 100.0, &n, None, Second::Scored(None)));
        assert!(!beats(98.0, 100.0, &n, None, Second::Failed));
        assert!(beats(98.0, 100.0, &n, None, Second::NotRun), "no seed key: the first result stands");
    }
}
