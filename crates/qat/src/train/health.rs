//! Training health (docs/contracts.md#the-distillation-traces-track): `health.json` beside each checkpoint (step, seen tokens, the
//! flip, activation bits, last loss and gradient norm, NaN count) and the exit gates checked at
//! the end of a trace trial, written to `gates.json` and the trial log.

use std::collections::VecDeque;
use std::path::Path;

use serde::Serialize;

use super::outputs::write_json;
use crate::error::Result;

/// Steps whose post-clip gradient norm the gate reads.
const GRAD_WINDOW: usize = 100;
/// Steps whose loss the stability gate reads.
const LOSS_WINDOW: usize = 200;

/// The recent history the health file and the gates read.
#[derive(Debug, Default)]
pub struct HealthLog {
    losses: VecDeque<f64>,
    norms: VecDeque<f64>,
    /// Non-finite losses seen.
    pub nan_count: u64,
}

impl HealthLog {
    /// Records one optimizer step's loss and post-clip gradient norm.
    pub fn push(&mut self, loss: f64, post_clip_norm: f64) {
        self.losses.push_back(loss);
        self.norms.push_back(post_clip_norm);
        if self.losses.len() > LOSS_WINDOW {
            self.losses.pop_front();
        }
        if self.norms.len() > GRAD_WINDOW {
            self.norms.pop_front();
        }
    }
}

/// `health.json`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// Optimizer steps done.
    pub step: u64,
    /// Training tokens seen.
    pub seen_tokens: u64,
    /// Whether the A8 -> A4 flip happened.
    pub flip_done: bool,
    /// Activation bits now (0: full precision).
    pub act_bits: u32,
    /// Loss of the last step.
    pub last_loss: Option<f64>,
    /// Post-clip gradient norm of the last step.
    pub grad_norm: Option<f64>,
    /// Non-finite losses so far.
    pub nan_count: u64,
}

impl Health {
    /// The health at `step`.
    pub fn now(step: u64, seen_tokens: u64, flip_done: bool, act_bits: u32, log: &HealthLog) -> Self {
        Health {
            step,
            seen_tokens,
            flip_done,
            act_bits,
            last_loss: log.losses.back().copied(),
            grad_norm: log.norms.back().copied(),
            nan_count: log.nan_count,
        }
    }

    /// Writes `<run>/health.json` (temp file, rename).
    pub fn write(&self, run: &Path) -> Result<()> {
        write_json(run, "health.json", self)
    }
}

/// One exit gate.
#[derive(Debug, Serialize)]
pub struct Gate {
    /// `no_nan`, `flip`, `grad_norm` or `loss_stable`.
    pub name: &'static str,
    /// `pass`, `fail` or `n/a`.
    pub status: &'static str,
    /// The measured figure and the bar.
    pub detail: String,
}

/// The exit gates of a trace trial.
#[derive(Debug, Serialize)]
pub struct Gates {
    /// Every gate, in the order docs/contracts.md lists them.
    pub gates: Vec<Gate>,
    /// True when no gate failed.
    pub passed: bool,
}

fn gate(name: &'static str, ok: bool, detail: String) -> Gate {
    Gate { name, status: if ok { "pass" } else { "fail" }, detail }
}

impl Gates {
    /// Checks the gates: no NaN; the flip at >= 90% of the token budget (or of the steps when
    /// it is triggered by steps); post-clip gradient norm <= 1 over the last 100 steps; the mean
    /// loss of the last 100 steps at most 5% above that of the 100 before.
    pub fn check(
        log: &HealthLog,
        flip: Option<(u64, u64)>,
        flip_at_tokens: Option<u64>,
        a4_from: Option<u64>,
        budget_tokens: u64,
        total: u64,
    ) -> Self {
        let mut gates = vec![gate("no_nan", log.nan_count == 0, format!("{} non-finite losses", log.nan_count))];
        gates.push(match (flip, flip_at_tokens, a4_from) {
            (_, None, None) => Gate {
                name: "flip",
                status: "n/a",
                detail: "no A8->A4 flip configured (activations.bits = \"8\", a4_flip_frac < 1)".into(),
            },
            (None, _, _) => gate("flip", false, "the A8->A4 flip never happened within the budget".into()),
            (Some((_, seen)), Some(_), _) => {
                let frac = seen as f64 / budget_tokens.max(1) as f64;
                gate(
                    "flip",
                    frac >= 0.9,
                    format!("flipped after {seen} of {budget_tokens} budget tokens ({:.1}%, bar >= 90%)", 100.0 * frac),
                )
            }
            (Some((step, _)), None, Some(_)) => {
                let frac = step as f64 / total.max(1) as f64;
                gate(
                    "flip",
                    frac >= 0.9,
                    format!("flipped at step {step} of {total} ({:.1}%, bar >= 90%)", 100.0 * frac),
                )
            }
        });
        let max_norm = log.norms.iter().copied().fold(0.0f64, f64::max);
        gates.push(gate(
            "grad_norm",
            max_norm <= 1.0,
            format!("max post-clip gradient norm {max_norm:.4} over the last {} steps (bar <= 1.0)", log.norms.len()),
        ));
        let n = log.losses.len();
        gates.push(if n < 20 {
            Gate { name: "loss_stable", status: "n/a", detail: format!("only {n} steps (needs 20)") }
        } else {
            let v: Vec<f64> = log.losses.iter().copied().collect();
            let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
            let (a, b) = (mean(&v[..n / 2]), mean(&v[n / 2..]));
            gate(
                "loss_stable",
                b <= a * 1.05 + 1e-9,
                format!(
                    "mean loss {b:.4} over the last {} steps vs {a:.4} over the {} before (bar <= +5%)",
                    n - n / 2,
                    n / 2
                ),
            )
        });
        let passed = gates.iter().all(|g| g.status != "fail");
        Gates { gates, passed }
    }

    /// One line per gate, for the log and the terminal.
    pub fn lines(&self) -> Vec<String> {
        self.gates.iter().map(|g| format!("gate {} {}: {}", g.name, g.status, g.detail)).collect()
    }

    /// Writes `<run>/gates.json`.
    pub fn write(&self, run: &Path) -> Result<()> {
        write_json(run, "gates.json", self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(losses: &[f64], norm: f64) -> HealthLog {
        let mut l = HealthLog::default();
        for &x in losses {
            l.push(x, norm);
        }
        l
    }

    #[test]
    fn gates_pass_on_a_healthy_run_and_name_each_failure() {
        let falling: Vec<f64> = (0..300).map(|i| 5.0 - i as f64 * 0.01).collect();
        let ok = Gates::check(&log(&falling, 0.8), Some((95, 950)), Some(900), None, 1000, 100);
        assert!(ok.passed, "{:?}", ok.lines());

        let rising: Vec<f64> = (0..300).map(|i| 1.0 + i as f64 * 0.01).collect();
        let bad = Gates::check(&log(&rising, 1.5), Some((10, 100)), Some(100), None, 1000, 100);
        let failed: Vec<&str> = bad.gates.iter().filter(|g| g.status == "fail").map(|g| g.name).collect();
        assert_eq!(failed, vec!["flip", "grad_norm", "loss_stable"]);
        assert!(!bad.passed);
    }

    #[test]
    fn a_flip_that_never_happened_fails_and_none_configured_is_not_applicable() {
        let l = log(&[1.0; 50], 0.5);
        assert_eq!(Gates::check(&l, None, Some(900), None, 1000, 10).gates[1].status, "fail");
        assert_eq!(Gates::check(&l, None, None, None, 0, 10).gates[1].status, "n/a");
    }
}
