//! The `builtin` proposer: no LLM. A pattern search over the schema's free keys, guided by a
//! model that learns from every finished experiment, that never repeats a recipe already tried:
//! - two near misses (discards that beat the current best by more than σ, but not by the keep
//!   margin) that change different keys are first combined into one proposal on the best, once;
//! - a step that was kept, or that beat the best by more than 2σ, is followed one step further
//!   the same way (past the end of a key's ladder by a step of the same size);
//! - otherwise breadth first: a change's tier is how often that side of its key was tried,
//!   plus one when the other side was tried without clearly hurting; going back to where a
//!   keep came from comes last, and a change that switches off keys never tried waits a tier;
//! - within a tier the smaller step first: half a rung toward a neighbouring declared value,
//!   then the declared values;
//! - steps of one size are ranked, once a few experiments have a PPL, by a tree-structured
//!   Parzen estimator ([`tpe`](super::tpe)), which also scores changes sampled from what went
//!   well (numbers anywhere in a key's range; two or three keys at once within the focus
//!   limit, when each was changed before and each is expected to help).

use std::collections::{BTreeMap, HashMap};

use autoqat_recipe::{FieldSpec, Schema};
use serde_json::{json, Value};

use super::tpe::{same, Axis, Model, Rng};
use super::{Context, Observation, Proposer, ProposerError, Reply, Request};
pub use crate::edit::line_edit;
use crate::focus;
use crate::results::Status;

/// The builtin search.
pub struct Builtin {
    seed: u64,
}

impl Builtin {
    /// `seed` rotates ties between equally good candidates.
    pub fn new(seed: u64) -> Builtin {
        Builtin { seed }
    }
}

/// One candidate change.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Dotted key.
    pub key: String,
    /// New value.
    pub value: Value,
    /// Exact search text.
    pub search: String,
    /// Replacement text.
    pub replace: String,
    /// Ranking, lower first: (tier, step distance in half-rungs, tie-break).
    pub rank: (i64, i64, u64),
}

impl Candidate {
    /// This change as a proposal, for the reason `why`.
    fn choice(&self, why: String) -> Choice {
        Choice {
            sets: vec![(self.key.clone(), self.value.clone())],
            edits: vec![(self.search.clone(), self.replace.clone())],
            why,
        }
    }
}

impl Proposer for Builtin {
    fn propose(&mut self, req: &Request) -> Result<Reply, ProposerError> {
        let schema = req.ctx.schema.ok_or_else(|| {
            ProposerError::Config("the builtin proposer needs a schema: set validator.kind = \"autoqat\" or declare [[validator.fields]] with kind = \"toml\" or \"python\"".into())
        })?;
        let Some(c) = choose(schema, &req.ctx, self.seed) else {
            return Err(ProposerError::Exhausted(
                "the builtin search has tried every declared value of every unlocked key".into(),
            ));
        };
        let sets: Vec<String> = c.sets.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let edits: Vec<Value> =
            c.edits.iter().map(|(s, r)| json!({"path": req.ctx.recipe_path, "search": s, "replace": r})).collect();
        let answer = json!({"description": format!("set {}", sets.join("; ")), "rationale": c.why, "edits": edits});
        Ok(Reply { text: answer.to_string(), ..Reply::default() })
    }
}

/// Experiments with a PPL before the model ranks values (the ladder's order until then).
const STARTUP: usize = 4;
/// Changes sampled from the good density per proposal.
const SAMPLES: usize = 96;
/// What each key beyond the first must add to a change's score (a doubling of l/g): several
/// keys at once only when each is expected to help.
const EXTRA_KEY_COST: f64 = std::f64::consts::LN_2;

/// Turns `(key, value)` settings and a reason into a proposal, `None` when already tried.
type Build<'a> = dyn Fn(&[(String, Value)], String) -> Option<Choice> + 'a;

/// One proposal of the builtin search.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The keys it sets and their new values.
    pub sets: Vec<(String, Value)>,
    /// The `(search, replace)` edits that set them, applied in order.
    pub edits: Vec<(String, String)>,
    /// Why the search chose it.
    pub why: String,
}

/// The next proposal.
///
/// Breadth comes first, as a researcher works with a small budget: a change's tier is how
/// often that side of its key was tried (`Tiers::tier`; a step after a kept or clearly
/// better one goes first). Within a tier the smaller step comes first, and the model ranks
/// steps of one size: every candidate value and every change sampled from the good density
/// (any number in a key's range, up to three keys within the focus limit) is scored by its
/// log l/g gain. Before the tiers, two near misses that both beat the current best by more
/// than σ, on different keys, are tried together once.
pub fn choose(schema: &Schema, ctx: &Context, seed: u64) -> Option<Choice> {
    let current = ctx.format.values(schema, ctx.recipe)?;
    let max_keys = ctx.max_changed_lines.clamp(1, 3);
    let active = |key: &str| schema.field(key).is_some_and(|f| !f.locked && active_under(f, &current));
    let build = |sets: &[(String, Value)], why: String| -> Option<Choice> {
        untried_edits(schema, ctx, sets).map(|edits| Choice { sets: sets.to_vec(), edits, why })
    };
    let tiers = Tiers::new(schema, ctx, &current);
    if let Some(c) = near_misses_combined(&tiers, max_keys, &active, &build) {
        return Some(c);
    }
    let ladder = ranked_candidates(ctx, seed, &tiers);
    const FURTHER: &str = "builtin search: one step further the way a kept or clearly better step went";
    let why_ladder = |c: &Candidate| {
        let why =
            if c.rank.0 < 0 { FURTHER } else { "builtin search (ladder): one key at a time, the smaller step first" };
        why.to_string()
    };
    let Some(model) = Model::fit(ctx.observations, STARTUP) else {
        return ladder.first().map(|c| c.choice(why_ladder(c)));
    };
    let axes: Vec<(String, Axis)> = schema
        .fields
        .iter()
        .filter(|f| active(&f.key))
        .filter_map(|f| Axis::of(f).map(|a| (f.key.clone(), a)))
        .collect();
    let gains = |sets: &[(String, Value)]| -> Option<Vec<f64>> {
        sets.iter()
            .map(|(k, v)| {
                let (_, axis) = axes.iter().find(|(a, _)| a == k)?;
                Some(model.gain(k, axis, current.get(k)?, v))
            })
            .collect()
    };
    // (tier, distance, -score in hundredths, order): lowest first. Within a tier the smaller
    // step comes first (the model, fitted on a handful of noisy runs, would otherwise rate
    // values far from every bad one highest); the model ranks steps of the same size.
    let mut best: Option<((i64, i64, i64, usize), Choice)> = None;
    let mut offer = |(tier, dist): (i64, i64), score: f64, order: usize, choice: Option<Choice>| {
        let rank = (tier, dist, -(score * 100.0).round() as i64, order);
        if let (true, Some(c)) = (score.is_finite() && best.as_ref().is_none_or(|(r, _)| rank < *r), choice) {
            best = Some((rank, c));
        }
    };
    for (i, c) in ladder.iter().enumerate() {
        let sets = vec![(c.key.clone(), c.value.clone())];
        let Some(g) = gains(&sets) else { continue };
        let why = if c.rank.0 < 0 {
            FURTHER.to_string()
        } else {
            format!("builtin search (TPE): the model's best value of a least-tried key, log l/g gain {:+.2}", g[0])
        };
        // `candidates` left out what was tried: the ladder's edit stands as it is.
        offer((c.rank.0, c.rank.1), g[0], i, Some(c.choice(why)));
    }
    let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9).wrapping_add(ctx.records.len() as u64));
    for s in 0..SAMPLES {
        if axes.is_empty() {
            break;
        }
        let want = match rng.below(10) {
            0..=5 => 1,
            6..=8 => 2,
            _ => 3,
        }
        .min(max_keys)
        .min(axes.len());
        let mut sets: Vec<(String, Value)> = Vec::new();
        for _ in 0..4 * want {
            let (k, axis) = &axes[rng.below(axes.len())];
            if sets.len() == want || sets.iter().any(|(s, _)| s == k) {
                continue;
            }
            let v = model.sample(k, axis, &mut rng);
            if current.get(k).is_some_and(|c| !same(c, &v)) {
                sets.push((k.clone(), v));
            }
        }
        if sets.len() < want {
            continue;
        }
        let Some(g) = gains(&sets) else { continue };
        // Several keys at once only to exploit: keys tried before, each expected to help. An
        // untried key is explored alone, so that a bad partner cannot hide a good change.
        if sets.len() > 1 && (g.iter().any(|x| *x <= 0.0) || sets.iter().any(|(k, _)| !tiers.tries.contains_key(k))) {
            continue;
        }
        let score = g.iter().sum::<f64>() - EXTRA_KEY_COST * (sets.len() - 1) as f64;
        let (mut tier, mut dist) = (0, 0);
        for (k, v) in &sets {
            let (Some(f), Some(c)) = (schema.field(k), current.get(k)) else { continue };
            let axis = axes.iter().find(|(a, _)| a == k).map(|(_, a)| a);
            tier = tier.max(tiers.tier(k, axis, c, v));
            dist = dist.max(step_distance(f, axis, c, v));
        }
        let why = format!(
            "builtin search (TPE): sampled from the best quarter of {} experiments, log l/g gain {:+.2}",
            ctx.observations.len(),
            g.iter().sum::<f64>()
        );
        offer((tier, dist), score, ladder.len() + s, build(&sets, why));
    }
    best.map(|(_, c)| c)
}

/// Two near misses on the current best that each beat it by more than the measured σ (but
/// not by the keep margin), on different keys, applied together; the newest pair not tried yet.
fn near_misses_combined(
    tiers: &Tiers,
    max_keys: usize,
    active: &dyn Fn(&str) -> bool,
    build: &Build,
) -> Option<Choice> {
    let best_ppl = tiers.best?;
    // A near miss that beats the best by less than σ is noise: two of them add up to nothing.
    let near: Vec<&Observation> = tiers
        .observations
        .iter()
        .rev()
        .filter(|o| {
            o.near_miss && o.ppl.is_some_and(|p| best_ppl - p > tiers.sigma.unwrap_or(0.0)) && on_best(o, tiers.values)
        })
        .collect();
    for (i, a) in near.iter().enumerate() {
        for b in &near[i + 1..] {
            let keys_a: Vec<&String> = a.changed.iter().map(|(k, _)| k).collect();
            if b.changed.iter().any(|(k, _)| keys_a.contains(&k)) {
                continue;
            }
            let sets: Vec<(String, Value)> = a.changed.iter().chain(&b.changed).cloned().collect();
            if sets.len() > max_keys || !sets.iter().all(|(k, _)| active(k)) {
                continue;
            }
            let why = format!("builtin search: near misses exp {} and exp {} combined on the best", b.exp, a.exp);
            if let Some(c) = build(&sets, why) {
                return Some(c);
            }
        }
    }
    None
}

/// Whether `o` was tried on the recipe `current`: every key it did not change has that value.
fn on_best(o: &Observation, current: &BTreeMap<String, Value>) -> bool {
    o.values.iter().all(|(k, v)| o.changed.iter().any(|(c, _)| c == k) || current.get(k).is_some_and(|b| same(b, v)))
}

/// Whether `f` has an effect under the recipe `values` (its `active_when` holds, or it has none).
fn active_under(f: &FieldSpec, values: &BTreeMap<String, Value>) -> bool {
    f.active_when.as_ref().is_none_or(|c| values.get(&c.key).is_some_and(|v| c.holds(v)))
}

/// The edits that set `sets` on the current recipe, in order; `None` when a key has no line to
/// edit or the resulting recipe was tried already (by meaning, as the edit rules judge it).
fn untried_edits(schema: &Schema, ctx: &Context, sets: &[(String, Value)]) -> Option<Vec<(String, String)>> {
    let mut text = ctx.recipe.to_string();
    let mut edits = Vec::new();
    for (k, v) in sets {
        let (s, r) = ctx.format.set_edit(&text, k, v)?;
        text = text.replacen(&s, &r, 1);
        edits.push((s, r));
    }
    let key = focus::diff_key(&focus::compact_diff(ctx.recipe_path, ctx.recipe, &text));
    let tried = ctx.tried.contains(&ctx.format.tried_key(Some(schema), Some(&text), &key));
    (!tried && !edits.is_empty()).then_some(edits)
}

/// How often each key was changed, from the observations (every key of a several-key change
/// counts), else from the builtin's own `set key = value` descriptions.
fn key_tries(ctx: &Context) -> HashMap<String, i64> {
    let mut tries: HashMap<String, i64> = HashMap::new();
    if ctx.observations.is_empty() {
        for r in ctx.records {
            for (key, _) in described_sets(&r.description) {
                *tries.entry(key.to_string()).or_default() += 1;
            }
        }
    }
    for o in ctx.observations {
        for (k, _) in &o.changed {
            *tries.entry(k.clone()).or_default() += 1;
        }
    }
    tries
}

/// The run-to-run σ of the PPL that the baseline's repeats measured, if they did.
fn measured_sigma(ctx: &Context) -> Option<f64> {
    ctx.records
        .iter()
        .find(|r| r.status() == Status::Baseline)
        .and_then(|r| r.sigma)
        .filter(|s| s.is_finite() && *s > 0.0)
}

/// The `(key, value)` pairs of a builtin description, `set a = 1; b = "x"`.
fn described_sets(description: &str) -> Vec<(&str, &str)> {
    description
        .strip_prefix("set ")
        .map(|d| d.split("; ").filter_map(|p| p.split_once(" = ")).collect())
        .unwrap_or_default()
}

/// The tier of going back to where a kept change came from: known to be worse, so last.
const BACK: i64 = i64::MAX / 2;

/// What the finished experiments say about where each key was moved: the search's tiers.
struct Tiers<'a> {
    schema: &'a Schema,
    /// The current best recipe.
    values: &'a BTreeMap<String, Value>,
    /// Its PPL: that of the latest kept experiment (or the baseline).
    best: Option<f64>,
    /// The run-to-run σ of the PPL that the baseline's repeats measured, if they did.
    sigma: Option<f64>,
    observations: &'a [Observation],
    /// The experiments that clearly hurt: failed, or worse than the best of their time by
    /// more than twice the near-miss band (4σ with σ measured).
    hurt: Vec<u32>,
    /// How often each key was changed.
    tries: HashMap<String, i64>,
    /// Per key, the `(old, new)` values of its latest change, when that change was kept.
    last_keep: HashMap<String, (Value, Value)>,
    /// Per key, the value of the latest change of that key alone, tried on the current best,
    /// that beat the best by more than 2σ and was not kept (under the keep margin).
    improved: HashMap<String, Value>,
}

impl<'a> Tiers<'a> {
    fn new(schema: &'a Schema, ctx: &'a Context, current: &'a BTreeMap<String, Value>) -> Tiers<'a> {
        let mut last_keep: HashMap<String, (Value, Value)> = HashMap::new();
        for r in ctx.records {
            for (key, val) in described_sets(&r.description) {
                let new: Value = serde_json::from_str(val).unwrap_or(Value::String(val.to_string()));
                let leaf = key.rsplit('.').next().unwrap_or(key);
                match (r.status() == Status::Keep, old_value(&r.diff, leaf)) {
                    (true, Some(old)) => {
                        last_keep.insert(key.to_string(), (old, new));
                    }
                    _ => {
                        last_keep.remove(key);
                    }
                }
            }
        }
        let sigma = measured_sigma(ctx);
        let mut best = f64::INFINITY;
        let mut hurt = Vec::new();
        for o in ctx.observations {
            let worse = match (o.ppl.filter(|p| p.is_finite()), sigma) {
                (None, _) => true,
                (Some(p), Some(s)) => p - best > 4.0 * s,
                (Some(_), None) => !o.status.is_kept() && !o.near_miss,
            };
            if worse && !o.status.is_kept() {
                hurt.push(o.exp);
            }
            if o.status.is_kept() {
                best = o.ppl.unwrap_or(best);
            }
        }
        let mut improved = HashMap::new();
        for o in ctx.observations {
            if let ([(k, v)], Some(p), false) = (o.changed.as_slice(), o.ppl, o.status.is_kept()) {
                // Under 2σ a gain is as likely noise: following it would chase the noise.
                if best - p > 2.0 * sigma.unwrap_or(0.0) && on_best(o, current) {
                    improved.insert(k.clone(), v.clone());
                }
            }
        }
        Tiers {
            schema,
            values: current,
            best: best.is_finite().then_some(best),
            sigma,
            observations: ctx.observations,
            hurt,
            tries: key_tries(ctx),
            last_keep,
            improved,
        }
    }

    /// The value `key` had before its latest change, when that change was kept and led to
    /// `current`.
    fn kept_from(&self, key: &str, current: &Value) -> Option<&Value> {
        self.last_keep.get(key).filter(|(_, new)| same(new, current)).map(|(old, _)| old)
    }

    /// The tier of setting `key`, now `current` on `axis`, to `v`: lower is tried sooner.
    ///
    /// Going back to where a keep came from is known to be worse: last. A change that switches
    /// off keys not tried yet (a constant schedule ends the search of its floor) waits a tier:
    /// it closes options the breadth-first search has not weighed.
    fn tier(&self, key: &str, axis: Option<&Axis>, current: &Value, v: &Value) -> i64 {
        if self.kept_from(key, current).is_some_and(|old| same(old, v)) {
            return BACK;
        }
        self.side_tier(key, axis, current, v) + i64::from(self.switches_off_untried(key, v))
    }

    /// Whether setting `key` to `value` makes a key inactive that is active now and was never
    /// changed.
    fn switches_off_untried(&self, key: &str, value: &Value) -> bool {
        let mut after = self.values.clone();
        after.insert(key.to_string(), value.clone());
        self.schema.fields.iter().any(|f| {
            !f.locked
                && !f.choices.is_empty()
                && !self.tries.contains_key(&f.key)
                && active_under(f, self.values)
                && !active_under(f, &after)
        })
    }

    /// [`Tiers::tier`] before its two rules: how often `key` was moved, and on a number axis
    /// the tries on `v`'s side of `current`, plus one when the other side was tried and not
    /// every try there clearly hurt. A step that changed nothing says the key matters little;
    /// a step that hurt says the other way may help, and a pattern search polls it next.
    fn side_tier(&self, key: &str, axis: Option<&Axis>, current: &Value, v: &Value) -> i64 {
        let n = *self.tries.get(key).unwrap_or(&0);
        let (Some(axis), false) = (axis, self.observations.is_empty()) else { return n };
        let Some(s) = side(axis, current, v) else { return n };
        if self.kept_from(key, current).and_then(|old| side(axis, current, old)) == Some(s) {
            // Going back where a keep came from is known to be worse.
            return BACK;
        }
        let (mut tries, mut all_worse) = ([0i64; 2], [true; 2]);
        for o in self.observations {
            let Some((_, x)) = o.changed.iter().find(|(k, _)| k == key) else { continue };
            let Some(t) = side(axis, current, x) else { continue };
            let i = usize::from(t > 0);
            tries[i] += 1;
            all_worse[i] &= self.hurt.contains(&o.exp);
        }
        let (this, other) = if s > 0 { (1, 0) } else { (0, 1) };
        tries[this] + i64::from(tries[other] > 0 && !all_worse[other])
    }
}

/// Which side of `current` the number `v` lies on along `axis`: -1, +1, or `None` for the
/// same value or not a number axis.
fn side(axis: &Axis, current: &Value, v: &Value) -> Option<i8> {
    let (c, x) = (axis.unit(current)?, axis.unit(v)?);
    if same(current, v) || x == c {
        None
    } else {
        Some(if x > c { 1 } else { -1 })
    }
}

/// Where `v` stands in `f`'s declared values.
fn ladder_index(f: &FieldSpec, v: &Value) -> Option<usize> {
    f.choices.iter().position(|c| same(c, v))
}

/// The declared value of `f` nearest to `from` on side `dir` of it along `axis`, with its
/// position in axis units.
fn nearest_on_side<'f>(f: &'f FieldSpec, axis: &Axis, from: &Value, dir: i8) -> Option<(f64, &'f Value)> {
    let u0 = axis.unit(from)?;
    f.choices
        .iter()
        .filter(|c| side(axis, from, c) == Some(dir))
        .filter_map(|c| axis.unit(c).map(|u| (u, c)))
        .min_by(|a, b| (a.0 - u0).abs().total_cmp(&(b.0 - u0).abs()))
}

/// How far `v` lies from `current` in half-rungs of the key's ladder, rounded up: half a rung
/// toward a neighbouring declared value is 1, that value 2; on a choice axis the nearest
/// values are 1 and each further rung adds 2. Every key's nearest values are 1 away, so the
/// distance orders the steps of one key, not the keys.
fn step_distance(f: &FieldSpec, axis: Option<&Axis>, current: &Value, v: &Value) -> i64 {
    let (Some(axis @ Axis::Number { .. }), Some(dir)) = (axis, axis.and_then(|a| side(a, current, v))) else {
        return match (ladder_index(f, current), ladder_index(f, v)) {
            (Some(c), Some(i)) => 2 * (c as i64 - i as i64).abs() - 1,
            _ => 1,
        };
    };
    let (Some(uc), Some(uv)) = (axis.unit(current), axis.unit(v)) else { return 1 };
    // The rung on v's side: to the nearest declared value there, else the ladder's last rung.
    let rung = nearest_on_side(f, axis, current, dir).map(|(u, _)| (u - uc).abs()).unwrap_or_else(|| {
        let mut ladder: Vec<f64> = f.choices.iter().filter_map(|c| axis.unit(c)).collect();
        ladder.sort_by(f64::total_cmp);
        let end = if dir > 0 { ladder.windows(2).last() } else { ladder.windows(2).next() };
        end.map_or(1.0, |w| w[1] - w[0])
    });
    ((uv - uc).abs() / (rung / 2.0) - 1e-6).ceil().max(1.0) as i64
}

/// A key's candidate values: on a number axis, half a rung toward each neighbouring declared
/// value (a tuned default is more often improved by a small step than a large one: one rung
/// of the lr ladder is x3), then the declared values; on a choice axis, the declared values.
fn ladder_values(f: &FieldSpec, axis: Option<&Axis>, current: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = f.choices.iter().filter(|c| !same(c, current)).cloned().collect();
    let (Some(axis @ Axis::Number { .. }), Some(uc)) = (axis, axis.and_then(|a| a.unit(current))) else { return out };
    for dir in [-1i8, 1] {
        if let Some((un, _)) = nearest_on_side(f, axis, current, dir) {
            let half = axis.value_at((uc + un) / 2.0);
            if side(axis, current, &half) == Some(dir) && !f.choices.iter().any(|c| same(c, &half)) {
                out.push(half);
            }
        }
    }
    out
}

/// One step past `reached` on the way from `origin`: the next declared value beyond it, else
/// (past the ladder's end) a step as long as the one from `origin`.
fn further(f: &FieldSpec, axis: Option<&Axis>, origin: &Value, reached: &Value) -> Option<Value> {
    let Some(axis @ Axis::Number { .. }) = axis else {
        let (o, r) = (ladder_index(f, origin)?, ladder_index(f, reached)?);
        let next = r.checked_add_signed((r as isize - o as isize).signum())?;
        return (o != r).then(|| f.choices.get(next).cloned()).flatten();
    };
    let dir = side(axis, origin, reached)?;
    let (uo, ur) = (axis.unit(origin)?, axis.unit(reached)?);
    let v = nearest_on_side(f, axis, reached, dir).map_or_else(|| axis.value_at(ur + (ur - uo)), |(_, c)| c.clone());
    (side(axis, reached, &v) == Some(dir)).then_some(v)
}

/// Every untried single-key change, best first.
pub fn candidates(schema: &Schema, ctx: &Context, seed: u64) -> Vec<Candidate> {
    let Some(values) = ctx.format.values(schema, ctx.recipe) else { return Vec::new() };
    ranked_candidates(ctx, seed, &Tiers::new(schema, ctx, &values))
}

/// [`candidates`] on the recipe the tiers were read for.
fn ranked_candidates(ctx: &Context, seed: u64, tiers: &Tiers) -> Vec<Candidate> {
    let (schema, values) = (tiers.schema, tiers.values);
    let mut out = Vec::new();
    for (fi, f) in schema.fields.iter().enumerate() {
        if f.locked || f.choices.is_empty() {
            continue;
        }
        // A knob with no effect under the current recipe (deadzone_t with absmean, say) would
        // waste a whole trial on a no-op.
        if !active_under(f, values) {
            continue;
        }
        let current = values.get(&f.key).cloned().unwrap_or_else(|| f.default.clone());
        let axis = Axis::of(f);
        // The key's place among keys that nothing ranks apart: its prior's rank first (keys
        // without one after every ranked key), then the schema's order for seed 0, else a hash
        // of (seed, field) (a product XOR a constant would give every seed nearly one order:
        // seeds 1 and 5 searched alike).
        let order =
            if seed == 0 { fi as u64 } else { Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ fi as u64).word() };
        let rank = f.prior.as_ref().map_or(u64::from(u32::MAX), |p| u64::from(p.rank));
        let tie = (rank << 32) | (order >> 32 ^ order) & 0xffff_ffff;
        let from = tiers.kept_from(&f.key, &current);
        // Pattern search: a step that was kept, or that beat the best by more than 2σ without
        // being kept, is followed one step further the same way before anything else.
        let next: Vec<Value> = from
            .and_then(|old| further(f, axis.as_ref(), old, &current))
            .into_iter()
            .chain(tiers.improved.get(&f.key).and_then(|p| further(f, axis.as_ref(), &current, p)))
            .collect();
        let mut options = ladder_values(f, axis.as_ref(), &current);
        options.extend(next.iter().filter(|n| !options.iter().any(|v| same(v, n))).cloned().collect::<Vec<_>>());
        for value in options {
            let dist = step_distance(f, axis.as_ref(), &current, &value);
            let Some(mut edits) = untried_edits(schema, ctx, &[(f.key.clone(), value.clone())]) else { continue };
            let (search, replace) = edits.remove(0);
            let tier = if next.iter().any(|n| same(n, &value)) {
                -1
            } else {
                tiers.tier(&f.key, axis.as_ref(), &current, &value)
            };
            out.push(Candidate { key: f.key.clone(), value, search, replace, rank: (tier, dist, tie) });
        }
    }
    out.sort_by_key(|c| c.rank);
    out
}

/// The old value of `leaf` in a compact diff (`path: -leaf = value`).
fn old_value(diff: &str, leaf: &str) -> Option<Value> {
    diff.lines().find_map(|l| {
        let rest = l.split_once(": -")?.1.trim();
        let v = rest.strip_prefix(leaf)?.trim_start().strip_prefix('=')?;
        let t: toml::Table = format!("v = {}", v.trim()).parse().ok()?;
        t.get("v").map(crate::validate::toml_to_json)
    })
}
