//! The surrogate behind the builtin search: what each key's value does to log eval PPL,
//! relative to the current best, as one Gaussian process per key (an additive model: the
//! effects of different keys add up, which is what one-change-at-a-time results can support).
//!
//! Data: every experiment that changed keys, in order. It was tried on the best of its time, so
//! `ln(ppl / best)` is the step from the key's old value to its new one; chaining the steps
//! from the baseline gives each value tried a level, and levels are read relative to the
//! current best's value. A failed or pruned trial is a step up of [`CAP`]; a change of several
//! keys shares its step among them. Numbers live on their axis (log where the key's ladder
//! spans a decade) with a squared-exponential kernel one ladder rung wide, so that a bad step
//! down predicts a good step up; two different choices correlate like two numbers one rung
//! apart. A candidate is worth its expected improvement beyond the keep margin.

use std::collections::BTreeMap;

use autoqat_recipe::{FieldSpec, FieldType};
use serde_json::Value;

use super::Observation;
use crate::results::Status;

/// The step of a failed trial, and the most any step counts (a crash is "much worse", not a
/// number that swamps every other point).
pub const CAP: f64 = 0.3;
/// The most one step counts towards the prior spread of a change's effect.
const SPREAD_CAP: f64 = 0.05;

/// How one key is searched.
#[derive(Debug, Clone, PartialEq)]
pub enum Axis {
    /// One of the declared values (enums, bools, numbers without an open range).
    Choice(Vec<Value>),
    /// A number on `[lo, hi]` of a linear or log axis (`lo`, `hi`, `rung` in axis units).
    Number {
        /// Lower end of the search, in axis units: the ladder widened by a quarter.
        lo: f64,
        /// Upper end, in axis units.
        hi: f64,
        /// Ladder spacing in axis units: the kernel's length scale.
        rung: f64,
        /// Natural log axis.
        log: bool,
        /// Integer key.
        int: bool,
        /// The key's type limits, in value units.
        limits: (f64, f64),
    },
}

impl Axis {
    /// The axis of a free key with declared values; `None` for locked keys and keys without.
    /// A number is searched over its range only when the type's range is wider than its ladder
    /// (a `toml` validator's keys take their declared values only).
    pub fn of(f: &FieldSpec) -> Option<Axis> {
        if f.locked || f.choices.is_empty() {
            return None;
        }
        let limits = match f.ty {
            FieldType::Int { min, max } => Some((min as f64, max as f64, true)),
            FieldType::Float { min, max } => Some((min, max, false)),
            _ => None,
        };
        let ladder: Option<Vec<f64>> = f.choices.iter().map(Value::as_f64).collect();
        match (limits, ladder) {
            (Some((min, max, int)), Some(ladder)) if ladder.len() >= 2 => {
                let a = ladder.iter().copied().fold(f64::INFINITY, f64::min);
                let b = ladder.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let log = a > 0.0 && b >= 10.0 * a;
                let to = |x: f64| if log { x.ln() } else { x };
                let span = to(b) - to(a);
                let (lo, hi) = (to(a) - span * 0.25, to(b) + span * 0.25);
                let (lo, hi) = if log {
                    (if min > 0.0 { lo.max(min.ln()) } else { lo }, hi.min(max.ln()))
                } else {
                    (lo.max(min), hi.min(max))
                };
                let rung = (span / (ladder.len() - 1) as f64).max(1e-12);
                Some(Axis::Number { lo, hi, rung, log, int, limits: (min, max) })
            }
            _ => Some(Axis::Choice(f.choices.clone())),
        }
    }

    /// `v` in axis units (numbers only).
    fn unit(&self, v: &Value) -> Option<f64> {
        let x = v.as_f64()?;
        match self {
            Axis::Number { log: true, .. } if x > 0.0 => Some(x.ln()),
            Axis::Number { log: true, .. } => None,
            Axis::Number { .. } => Some(x),
            Axis::Choice(_) => None,
        }
    }

    /// Prior correlation of the effects of two values: numbers by their distance in rungs;
    /// two different choices as two values one rung apart, so that a first change of a choice
    /// key and a first one-rung step of a number are equally uncertain.
    fn corr(&self, a: &Value, b: &Value) -> f64 {
        let one_rung = (-0.5f64).exp();
        match self {
            Axis::Choice(_) if same(a, b) => 1.0,
            Axis::Choice(_) => one_rung,
            Axis::Number { rung, .. } => match (self.unit(a), self.unit(b)) {
                (Some(x), Some(y)) => (-0.5 * ((x - y) / rung).powi(2)).exp(),
                _ if same(a, b) => 1.0,
                _ => one_rung,
            },
        }
    }

    /// `n` values spread over the axis (numbers: two significant digits, inside the limits).
    pub fn grid(&self, n: usize) -> Vec<Value> {
        match self {
            Axis::Choice(c) => c.clone(),
            Axis::Number { lo, hi, log, int, limits, .. } => (0..n)
                .map(|i| {
                    let u = lo + (hi - lo) * i as f64 / (n.max(2) - 1) as f64;
                    let x = if *log { u.exp() } else { u };
                    round_into(x, *int, *limits)
                })
                .collect(),
        }
    }
}

/// `x` as a value a reviewer reads (`0.0021`, not 0.00208713), still inside `limits`.
fn round_into(x: f64, int: bool, limits: (f64, f64)) -> Value {
    let x = x.clamp(limits.0, limits.1);
    if int {
        return Value::from(x.round() as i64);
    }
    let inside =
        (1..=6).map(|p| format!("{x:.p$e}").parse::<f64>().unwrap_or(x)).find(|r| (limits.0..=limits.1).contains(r));
    Value::from(inside.unwrap_or(x))
}

/// Equal values; numbers by value, so `1` and `1.0` are one choice.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
        _ => a == b,
    }
}

/// One key's GP: points `(value, effect relative to the current value)`.
#[derive(Debug, Clone)]
struct KeyGp {
    axis: Axis,
    points: Vec<(Value, f64)>,
    /// `(K + noise I)^-1 y`.
    alpha: Vec<f64>,
    /// Cholesky factor of `K + noise I` (lower, row-major).
    chol: Vec<f64>,
    /// `prior + noise`: the first diagonal entry.
    var0: f64,
}

/// The fitted surrogate.
pub struct Effects {
    keys: BTreeMap<String, KeyGp>,
    /// Prior variance of a change's effect.
    prior: f64,
    /// Observation noise variance.
    noise: f64,
}

/// A prediction: mean and variance of a change's effect on log eval PPL.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Mean (negative: better).
    pub mean: f64,
    /// Variance.
    pub var: f64,
}

impl Prediction {
    /// Expected improvement beyond `margin` (in log PPL): `E[max(0, -effect - margin)]`.
    pub fn expected_improvement(&self, margin: f64) -> f64 {
        let sd = self.var.max(1e-18).sqrt();
        let z = (-self.mean - margin) / sd;
        sd * (z * normal_cdf(z) + (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt())
    }
}

impl Effects {
    /// Fits one GP per key of `axes` to the observations; `current` is the best's recipe and
    /// `noise_rel` the measured run-to-run σ relative to the PPL.
    pub fn fit(
        axes: &[(String, Axis)],
        observations: &[Observation],
        current: &BTreeMap<String, Value>,
        noise_rel: Option<f64>,
    ) -> Effects {
        let mut levels: BTreeMap<&str, Vec<(Value, f64)>> = BTreeMap::new();
        let mut steps = Vec::new();
        for o in observations.iter().filter(|o| !o.changed.is_empty()) {
            let step = match (o.status, o.delta) {
                (Status::Crash | Status::Timeout | Status::Pruned, _) | (_, None) => CAP,
                (_, Some(d)) => (1.0 + d).max(1e-9).ln().clamp(-CAP, CAP),
            };
            steps.push(step);
            let share = step / o.changed.len() as f64;
            for ((k, v), old) in o.changed.iter().zip(&o.was) {
                if !axes.iter().any(|(a, _)| a == k) {
                    continue;
                }
                let lv = levels.entry(k.as_str()).or_default();
                // The old value's level: the baseline's value is 0, a value reached by an
                // earlier step has that step's level.
                let base = observations.first().and_then(|b| b.values.get(k));
                let from = lv
                    .iter()
                    .rev()
                    .find(|(x, _)| same(x, old))
                    .map(|p| p.1)
                    .or_else(|| base.filter(|b| same(b, old)).map(|_| 0.0));
                if let Some(from) = from {
                    if !lv.iter().any(|(x, _)| same(x, old)) {
                        lv.push((old.clone(), from));
                    }
                    lv.push((v.clone(), from + share));
                }
            }
        }
        // The spread of a change's effect: the RMS step, each counted at most 5% so that a
        // crash or two do not make every change look like a lottery ticket.
        let rms = (steps.iter().map(|s| s.clamp(-SPREAD_CAP, SPREAD_CAP).powi(2)).sum::<f64>()
            / steps.len().max(1) as f64)
            .sqrt();
        let prior = if steps.is_empty() { 0.02f64.powi(2) } else { rms.max(0.003).powi(2) };
        let noise = noise_rel.unwrap_or(0.003).powi(2) + 0.002f64.powi(2);
        let mut keys = BTreeMap::new();
        for (k, axis) in axes {
            let Some(cur) = current.get(k) else { continue };
            let raw = levels.remove(k.as_str()).unwrap_or_default();
            // Levels relative to the current value; the current value itself is a point at 0.
            let zero = raw.iter().rev().find(|(x, _)| same(x, cur)).map_or(0.0, |p| p.1);
            let mut points: Vec<(Value, f64)> = vec![(cur.clone(), 0.0)];
            for (x, l) in raw {
                if !same(&x, cur) {
                    points.push((x, l - zero));
                }
            }
            keys.insert(k.clone(), KeyGp::fit(axis.clone(), points, prior, noise));
        }
        Effects { keys, prior, noise }
    }

    /// Whether `key` has data beyond its current value.
    pub fn tried(&self, key: &str) -> bool {
        self.keys.get(key).is_some_and(|g| g.points.len() > 1)
    }

    /// Whether `value` of `key` is within one rung of a value tried (or the current one): the
    /// model extrapolates no trend, so beyond that it knows nothing and would call it promising.
    pub fn near_data(&self, key: &str, value: &Value) -> bool {
        let Some(g) = self.keys.get(key) else { return false };
        match &g.axis {
            Axis::Choice(_) => true,
            Axis::Number { rung, .. } => g.axis.unit(value).is_some_and(|u| {
                g.points.iter().filter_map(|(x, _)| g.axis.unit(x)).any(|p| (u - p).abs() <= rung * (1.0 + 1e-9))
            }),
        }
    }

    /// The predicted effect of setting every `(key, value)` (effects add up).
    pub fn predict(&self, sets: &[(String, Value)]) -> Option<Prediction> {
        let mut p = Prediction { mean: 0.0, var: 0.0 };
        for (k, v) in sets {
            let g = self.keys.get(k)?;
            let q = g.predict(v, self.prior);
            p.mean += q.mean;
            p.var += q.var;
        }
        p.var += self.noise;
        Some(p)
    }
}

impl KeyGp {
    fn fit(axis: Axis, points: Vec<(Value, f64)>, prior: f64, noise: f64) -> KeyGp {
        let n = points.len();
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                k[i * n + j] = prior * axis.corr(&points[i].0, &points[j].0) + if i == j { noise } else { 0.0 };
            }
        }
        let chol = cholesky(&k, n);
        let y: Vec<f64> = points.iter().map(|p| p.1).collect();
        let alpha = solve_chol(&chol, n, &y);
        KeyGp { axis, points, alpha, chol, var0: prior + noise }
    }

    fn predict(&self, v: &Value, prior: f64) -> Prediction {
        let n = self.points.len();
        if n == 1 {
            // A key never changed: any first change is one step into the unknown, however far
            // its ladder's spacing puts it (so first changes tie, and the ladder's order rules).
            let rho = (-0.5f64).exp();
            return Prediction { mean: 0.0, var: prior - (prior * rho).powi(2) / self.var0 };
        }
        let ks: Vec<f64> = self.points.iter().map(|(x, _)| prior * self.axis.corr(x, v)).collect();
        let mean: f64 = ks.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let w = forward(&self.chol, n, &ks);
        let var = (prior - w.iter().map(|x| x * x).sum::<f64>()).max(0.0);
        Prediction { mean, var }
    }
}

/// Lower Cholesky factor of a symmetric positive definite `n`×`n` matrix (row-major).
fn cholesky(a: &[f64], n: usize) -> Vec<f64> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                l[i * n + i] = (a[i * n + i] - s).max(1e-18).sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    l
}

/// `L^-1 b`.
fn forward(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * x[k]).sum();
        x[i] = (b[i] - s) / l[i * n + i];
    }
    x
}

/// `(L Lᵀ)^-1 b`.
fn solve_chol(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let y = forward(l, n, b);
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * n + i];
    }
    x
}

/// Φ(z), from the error function (Abramowitz–Stegun 7.1.26, |error| < 1.5e-7).
fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}
