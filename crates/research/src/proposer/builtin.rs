//! The `builtin` proposer: no LLM. A search over the schema's free keys that learns from
//! every finished experiment and never repeats a recipe already tried:
//! - two near misses (discards that beat the current best, but not by the keep margin) that
//!   change different keys are first combined into one proposal on top of the best, once;
//! - breadth first: a change's tier is how often its keys were changed (a key whose last
//!   change was kept is pushed one step further the same way first, going back comes last);
//! - within a tier, until a few experiments have a PPL, the ladder's order (nearest values
//!   first); then a tree-structured Parzen estimator ([`tpe`](super::tpe)) scores the declared
//!   values and changes sampled from what went well (numbers anywhere in a key's range; two or
//!   three keys at once within the focus limit, when each was changed before and each is
//!   expected to help) and the best-scored one is proposed.

use std::collections::HashMap;

use autoqat_recipe::Schema;
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
    /// Ranking: lower first.
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
/// often its keys were tried (a key whose last change was kept goes first, one step further
/// the same way). Within a tier the model ranks: every declared value and every change sampled
/// from the good density (any number in a key's range, up to three keys within the focus
/// limit) is scored by its log l/g gain. Before the tiers, two near misses that both beat the
/// current best, on different keys, are tried together once.
pub fn choose(schema: &Schema, ctx: &Context, seed: u64) -> Option<Choice> {
    let current = ctx.format.values(schema, ctx.recipe)?;
    let max_keys = ctx.max_changed_lines.clamp(1, 3);
    let active = |key: &str| schema.field(key).is_some_and(|f| !f.locked && active_under(f, &current));
    let build = |sets: &[(String, Value)], why: String| -> Option<Choice> {
        untried_edits(schema, ctx, sets).map(|edits| Choice { sets: sets.to_vec(), edits, why })
    };
    if let Some(c) = near_misses_combined(ctx.observations, &current, max_keys, &active, &build) {
        return Some(c);
    }
    let ladder = candidates(schema, ctx, seed);
    let tries = key_tries(ctx);
    let why_ladder = "builtin search (ladder): one key at a time, following what was kept";
    let Some(model) = Model::fit(ctx.observations, STARTUP) else {
        return ladder.first().map(|c| c.choice(why_ladder.into()));
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
    // (tier, -score in hundredths, order): lowest first; the ladder's own order breaks ties.
    let mut best: Option<((i64, i64, usize), Choice)> = None;
    let mut offer = |tier: i64, score: f64, order: usize, choice: Option<Choice>| {
        let rank = (tier, -(score * 100.0).round() as i64, order);
        if let (true, Some(c)) = (score.is_finite() && best.as_ref().is_none_or(|(r, _)| rank < *r), choice) {
            best = Some((rank, c));
        }
    };
    for (i, c) in ladder.iter().enumerate() {
        let sets = vec![(c.key.clone(), c.value.clone())];
        let Some(g) = gains(&sets) else { continue };
        let why =
            format!("builtin search (TPE): the model's best value of a least-tried key, log l/g gain {:+.2}", g[0]);
        // `candidates` left out what was tried: the ladder's edit stands as it is.
        offer(c.rank.0, g[0], i, Some(c.choice(why)));
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
        if sets.len() > 1 && (g.iter().any(|x| *x <= 0.0) || sets.iter().any(|(k, _)| !tries.contains_key(k))) {
            continue;
        }
        let score = g.iter().sum::<f64>() - EXTRA_KEY_COST * (sets.len() - 1) as f64;
        let tier = sets.iter().map(|(k, _)| *tries.get(k).unwrap_or(&0)).max().unwrap_or(0);
        let why = format!(
            "builtin search (TPE): sampled from the best quarter of {} experiments, log l/g gain {:+.2}",
            ctx.observations.len(),
            g.iter().sum::<f64>()
        );
        offer(tier, score, ladder.len() + s, build(&sets, why));
    }
    best.map(|(_, c)| c)
}

/// Two near misses on the current best that each beat it (but not by the keep margin), on
/// different keys, applied together; the newest pair not tried yet.
fn near_misses_combined(
    observations: &[Observation],
    current: &std::collections::BTreeMap<String, Value>,
    max_keys: usize,
    active: &dyn Fn(&str) -> bool,
    build: &Build,
) -> Option<Choice> {
    let best_ppl = observations.iter().rev().find(|o| o.status.is_kept()).and_then(|o| o.ppl)?;
    // Tried on the current best: every key it did not change has the best's value.
    let on_best = |o: &Observation| {
        o.values
            .iter()
            .all(|(k, v)| o.changed.iter().any(|(c, _)| c == k) || current.get(k).is_some_and(|b| same(b, v)))
    };
    let near: Vec<&Observation> = observations
        .iter()
        .rev()
        .filter(|o| o.near_miss && o.ppl.is_some_and(|p| p < best_ppl) && on_best(o))
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

/// Whether `f` has an effect under the recipe `values` (its `active_when` holds, or it has none).
fn active_under(f: &autoqat_recipe::FieldSpec, values: &std::collections::BTreeMap<String, Value>) -> bool {
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
            if let Some((key, _)) = r.description.strip_prefix("set ").and_then(|d| d.split_once(" = ")) {
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

/// Every untried single-key change, best first.
pub fn candidates(schema: &Schema, ctx: &Context, seed: u64) -> Vec<Candidate> {
    let Some(values) = ctx.format.values(schema, ctx.recipe) else { return Vec::new() };
    // Per key: how often it was tried, and the (old, new) values of its latest change if
    // that change was kept (so the search can continue in the same direction).
    let tries = key_tries(ctx);
    let mut last_keep: HashMap<String, (Value, Value)> = HashMap::new();
    for r in ctx.records {
        if let Some((key, val)) = r.description.strip_prefix("set ").and_then(|d| d.split_once(" = ")) {
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
    let mut out = Vec::new();
    for (fi, f) in schema.fields.iter().enumerate() {
        if f.locked || f.choices.is_empty() {
            continue;
        }
        // A knob with no effect under the current recipe (deadzone_t with absmean, say) would
        // waste a whole trial on a no-op.
        if !active_under(f, &values) {
            continue;
        }
        let current = values.get(&f.key).cloned().unwrap_or_else(|| f.default.clone());
        let cur_idx = f.choices.iter().position(|c| same(c, &current));
        for (ci, choice) in f.choices.iter().enumerate() {
            if same(choice, &current) {
                continue;
            }
            let Some(mut edits) = untried_edits(schema, ctx, &[(f.key.clone(), choice.clone())]) else { continue };
            let (search, replace) = edits.remove(0);
            let dist = cur_idx.map(|c| (c as i64 - ci as i64).abs()).unwrap_or(1);
            let n = *tries.get(&f.key).unwrap_or(&0);
            let mut tier = n;
            if let (Some((old, new)), Some(cur)) = (last_keep.get(&f.key), cur_idx) {
                let old_idx = f.choices.iter().position(|c| same(c, old));
                if same(new, &current) {
                    if let Some(o) = old_idx {
                        let dir = (cur as i64 - o as i64).signum();
                        if ci as i64 == cur as i64 + dir {
                            // A kept change on a ladder: one more step the same way comes first.
                            tier = -1;
                        } else if ci == o {
                            // Going back is known to be worse.
                            tier = i64::MAX / 2;
                        }
                    }
                }
            }
            let tie = (fi as u64).wrapping_mul(0x9e3779b97f4a7c15) ^ seed.wrapping_mul(0xbf58476d1ce4e5b9);
            out.push(Candidate {
                key: f.key.clone(),
                value: choice.clone(),
                search,
                replace,
                rank: (tier, dist, if seed == 0 { fi as u64 } else { tie }),
            });
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
