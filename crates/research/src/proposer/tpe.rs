//! The model behind the builtin search: a tree-structured Parzen estimator (Bergstra et al.,
//! NeurIPS 2011; the sampler Optuna uses by default) over the schema's free keys.
//!
//! Finished experiments are split into the best quarter by eval PPL (`l`) and the rest (`g`;
//! failed and pruned trials always land there). Per key each side is a Parzen density with a
//! uniform prior: Gaussian kernels on numbers (on a log axis when the key's ladder spans a
//! decade or more, over the ladder's range widened by a quarter on each side), smoothed counts
//! on choices. A change is worth `log l(x)/g(x)` of its new values minus that of the values it
//! replaces, summed over the keys it changes: every experiment teaches the model, kept or not.

use std::collections::{HashMap, HashSet};

use autoqat_recipe::{FieldSpec, FieldType};
use serde_json::Value;

use super::Observation;

/// Fraction of the scored experiments that form the good density.
const GAMMA: f64 = 0.25;

/// How one key is searched.
#[derive(Debug, Clone, PartialEq)]
pub enum Axis {
    /// One of the declared values (enums, bools, numbers without a range).
    Choice(Vec<Value>),
    /// A number on `[lo, hi]` of a linear or log axis (`lo`, `hi` in axis units).
    Number {
        /// Lower end, in axis units.
        lo: f64,
        /// Upper end, in axis units.
        hi: f64,
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
                let pad = (to(b) - to(a)) * 0.25;
                let (lo, hi) = (to(a) - pad, to(b) + pad);
                let (lo, hi) = if log {
                    (if min > 0.0 { lo.max(min.ln()) } else { lo }, hi.min(max.ln()))
                } else {
                    (lo.max(min), hi.min(max))
                };
                Some(Axis::Number { lo, hi, log, int, limits: (min, max) })
            }
            _ => Some(Axis::Choice(f.choices.clone())),
        }
    }

    /// `v` in axis units (numbers only).
    pub fn unit(&self, v: &Value) -> Option<f64> {
        let x = v.as_f64()?;
        match self {
            Axis::Number { log: true, .. } if x > 0.0 => Some(x.ln()),
            Axis::Number { log: true, .. } => None,
            Axis::Number { .. } => Some(x),
            Axis::Choice(_) => None,
        }
    }

    /// Kernel width for `n` points: a fifth of the axis for one point (on the lr ladder about
    /// one rung), narrowing as points accumulate (Scott's rule's n^-1/5).
    fn bandwidth(&self, n: usize) -> f64 {
        match self {
            Axis::Number { lo, hi, .. } => ((hi - lo) * 0.2 * ((n + 1) as f64).powf(-0.2)).max((hi - lo) * 0.05),
            Axis::Choice(_) => 0.0,
        }
    }

    /// The density at `v` (per axis unit; per choice) of a Parzen estimator over `points` with
    /// a uniform prior of weight 1.
    pub fn density(&self, points: &[&Value], v: &Value) -> f64 {
        let n = points.len() as f64;
        match self {
            Axis::Choice(choices) => {
                let k = choices.len().max(1) as f64;
                let count = points.iter().filter(|p| same(p, v)).count() as f64;
                (count + 1.0 / k) / (n + 1.0)
            }
            Axis::Number { lo, hi, .. } => {
                let Some(x) = self.unit(v) else { return f64::MIN_POSITIVE };
                let bw = self.bandwidth(points.len());
                let prior = if (*lo..=*hi).contains(&x) { 1.0 / (hi - lo).max(1e-12) } else { 0.0 };
                let kernels: f64 = points
                    .iter()
                    .filter_map(|p| self.unit(p))
                    .map(|m| (-0.5 * ((x - m) / bw).powi(2)).exp() / (bw * (2.0 * std::f64::consts::PI).sqrt()))
                    .sum();
                ((prior + kernels) / (n + 1.0)).max(f64::MIN_POSITIVE)
            }
        }
    }

    /// A draw from the good density over `points` (the prior with weight 1).
    fn sample(&self, points: &[&Value], rng: &mut Rng) -> Value {
        let pick = rng.below(points.len() + 1);
        match self {
            Axis::Choice(choices) => match points.get(pick) {
                Some(p) => (*p).clone(),
                None => choices[rng.below(choices.len())].clone(),
            },
            Axis::Number { lo, hi, .. } => {
                let x = match points.get(pick).and_then(|p| self.unit(p)) {
                    Some(m) => m + self.bandwidth(points.len()) * rng.normal(),
                    None => lo + (hi - lo) * rng.unit(),
                };
                self.value_at(x.clamp(*lo, *hi))
            }
        }
    }

    /// The value at `u` axis units, inside the key's limits, as a reviewer would write it
    /// (numbers only; a choice axis gives `Null`).
    pub fn value_at(&self, u: f64) -> Value {
        let Axis::Number { log, int, limits, .. } = self else { return Value::Null };
        let x = if *log { u.exp() } else { u };
        let x = x.clamp(limits.0, limits.1);
        if *int {
            Value::from(x.round() as i64)
        } else {
            // Two significant digits where the limits allow (a reviewer reads `lr = 0.0021`,
            // not 0.00208713; 0.99999 must not round to 1.0).
            let inside = (1..=6)
                .map(|p| format!("{x:.p$e}").parse::<f64>().unwrap_or(x))
                .find(|r| (limits.0..=limits.1).contains(r));
            Value::from(inside.unwrap_or(x))
        }
    }
}

/// The fitted densities: which experiments are good and which are not.
pub struct Model<'a> {
    good: Vec<&'a Observation>,
    bad: Vec<&'a Observation>,
    /// The keys whose value differs between some two experiments.
    varied: HashSet<&'a str>,
}

impl<'a> Model<'a> {
    /// Splits the observations; `None` while fewer than `min_scored` have a PPL.
    pub fn fit(observations: &'a [Observation], min_scored: usize) -> Option<Model<'a>> {
        let mut scored: Vec<&Observation> =
            observations.iter().filter(|o| o.ppl.is_some() && o.status != crate::results::Status::Pruned).collect();
        if scored.len() < min_scored {
            return None;
        }
        scored.sort_by(|a, b| a.ppl.partial_cmp(&b.ppl).unwrap_or(std::cmp::Ordering::Equal).then(a.exp.cmp(&b.exp)));
        let n_good = ((scored.len() as f64 * GAMMA).ceil() as usize).max(1);
        let good: Vec<&Observation> = scored[..n_good].to_vec();
        let bad = observations.iter().filter(|o| !good.iter().any(|g| g.exp == o.exp)).collect();
        let mut first: HashMap<&str, &Value> = HashMap::new();
        let mut varied = HashSet::new();
        for (k, v) in observations.iter().flat_map(|o| &o.values) {
            if !same(first.entry(k).or_insert(v), v) {
                varied.insert(k.as_str());
            }
        }
        Some(Model { good, bad, varied })
    }

    fn values(side: &[&'a Observation], key: &str) -> Vec<&'a Value> {
        side.iter().filter_map(|o| o.values.get(key)).collect()
    }

    /// `log l(v) - log g(v)` of one key.
    pub fn log_ratio(&self, key: &str, axis: &Axis, v: &Value) -> f64 {
        axis.density(&Self::values(&self.good, key), v).ln() - axis.density(&Self::values(&self.bad, key), v).ln()
    }

    /// What setting `key` from `old` to `new` is worth; 0 for a key that never varied.
    pub fn gain(&self, key: &str, axis: &Axis, old: &Value, new: &Value) -> f64 {
        // When every experiment holds the same value, l/g compares two bumps on one point of
        // different widths (the sides differ in size), which rates far values highest: no
        // information, so no preference, and the search's own order decides.
        if !self.varied.contains(key) {
            return 0.0;
        }
        self.log_ratio(key, axis, new) - self.log_ratio(key, axis, old)
    }

    /// A draw of a new value of `key` from the good density.
    pub fn sample(&self, key: &str, axis: &Axis, rng: &mut Rng) -> Value {
        axis.sample(&Self::values(&self.good, key), rng)
    }
}

/// Equal values; numbers by value, so `1` and `1.0` are one choice.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
        _ => a == b,
    }
}

/// A small deterministic generator (splitmix64): the same results give the same proposal.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x2545_f491_4f6c_dd1d)
    }

    /// The next 64 random bits.
    pub fn word(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform on [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.word() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform on 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.word() % n as u64) as usize
        }
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
    }
}
