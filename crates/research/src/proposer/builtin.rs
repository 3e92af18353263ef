//! The `builtin` proposer: no LLM. A model-based search over the schema's free keys that
//! learns from every finished experiment and never repeats a recipe already tried:
//! - two near misses (discards that beat the current best, but not by the keep margin) that
//!   change different keys are first combined into one proposal on top of the best, once;
//! - otherwise a Gaussian process per key ([`gp`](super::gp)) predicts what each candidate
//!   change does to eval PPL, and the one with the largest expected improvement beyond the
//!   keep margin is proposed. Candidates are the ladder's values, any number in the range of a
//!   key already changed, and two or three helpful changes of keys already changed at once;
//!   ties go to the ladder's order ([`candidates`]): keys whose last change was kept pushed one
//!   step further the same way, then the least-tried keys, nearest values first.

use std::collections::HashMap;

use autoqat_recipe::Schema;
use serde_json::{json, Value};

use super::gp::{same, Axis, Effects};
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

impl Proposer for Builtin {
    fn propose(&mut self, req: &Request) -> Result<Reply, ProposerError> {
        let schema = req.ctx.schema.ok_or_else(|| {
            ProposerError::Config("the builtin proposer needs a schema: set validator.kind = \"autoqat\" or declare [[validator.fields]] with kind = \"toml\"".into())
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

/// Values per numeric key the model scores besides the ladder's.
const GRID: usize = 25;
/// Single changes predicted to help that are combined into several-key proposals.
const COMBINE_TOP: usize = 4;

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

/// The next proposal: two near misses combined once, else the change with the largest
/// expected improvement beyond the keep margin under the per-key Gaussian-process model
/// ([`gp`](super::gp)). Candidates: every declared value (a key never changed is first moved
/// one rung of its ladder, as a researcher would), any number within one rung of the values a
/// key was already tried at, and the best predicted single changes of keys already changed, two
/// or three at once within the focus limit. Ties go to the ladder's order (least-tried key, nearest value).
pub fn choose(schema: &Schema, ctx: &Context, seed: u64) -> Option<Choice> {
    let current = crate::validate::recipe_values(schema, ctx.recipe)?;
    let max_keys = ctx.max_changed_lines.clamp(1, 3);
    let active = |key: &str| {
        schema.field(key).is_some_and(|f| {
            !f.locked && f.active_when.as_ref().is_none_or(|c| current.get(&c.key).is_some_and(|v| c.holds(v)))
        })
    };
    let build = |sets: &[(String, Value)], why: String| -> Option<Choice> {
        let mut text = ctx.recipe.to_string();
        let mut edits = Vec::new();
        for (k, v) in sets {
            let (s, r) = line_edit(&text, k, v)?;
            text = text.replacen(&s, &r, 1);
            edits.push((s, r));
        }
        let key = focus::diff_key(&focus::compact_diff(ctx.recipe_path, ctx.recipe, &text));
        let tried = ctx.tried.contains(&crate::validate::tried_key(Some(schema), Some(&text), &key));
        (!tried && !edits.is_empty()).then(|| Choice { sets: sets.to_vec(), edits, why })
    };
    if let Some(c) = near_misses_combined(ctx.observations, &current, max_keys, &active, &build) {
        return Some(c);
    }
    let axes: Vec<(String, Axis)> = schema
        .fields
        .iter()
        .filter(|f| active(&f.key))
        .filter_map(|f| Axis::of(f).map(|a| (f.key.clone(), a)))
        .collect();
    let noise_rel = ctx.records.iter().find(|r| r.status() == Status::Baseline).and_then(|b| {
        let mean = crate::results::mean(&b.baseline_ppls);
        b.sigma.filter(|_| mean > 0.0).map(|s| s / mean)
    });
    let model = Effects::fit(&axes, ctx.observations, &current, noise_rel);
    // Aim at changes the loop can keep: a predicted gain inside the keep margin is worth little.
    let margin = -(1.0 - ctx.keep_margin.clamp(0.0, 0.99)).ln();
    // Breadth first: a candidate's tier is how often its keys were changed (the ladder's tier
    // for its own values: a kept direction pushed further comes first, going back last).
    let tries = key_tries(ctx);
    let tier_of = |sets: &[(String, Value)]| sets.iter().map(|(k, _)| *tries.get(k).unwrap_or(&0)).max().unwrap_or(0);
    let mut pool: Vec<(i64, Vec<(String, Value)>)> = Vec::new();
    for c in candidates(schema, ctx, seed) {
        // A key never changed moves one rung first; a choice may go anywhere.
        let numeric = matches!(axes.iter().find(|(k, _)| *k == c.key), Some((_, Axis::Number { .. })));
        if numeric && ((!model.tried(&c.key) && c.rank.1 > 1) || !model.near_data(&c.key, &c.value)) {
            continue;
        }
        pool.push((c.rank.0, vec![(c.key, c.value)]));
    }
    for (k, axis) in axes.iter().filter(|(k, a)| matches!(a, Axis::Number { .. }) && model.tried(k)) {
        for v in axis.grid(GRID) {
            if current.get(k).is_some_and(|c| !same(c, &v)) && model.near_data(k, &v) {
                let sets = vec![(k.clone(), v)];
                pool.push((tier_of(&sets), sets));
            }
        }
    }
    // Several keys at once only to exploit: keys changed before, each predicted to help.
    let mut helpful: Vec<(f64, (String, Value))> = pool
        .iter()
        .filter(|(_, s)| s.len() == 1 && model.tried(&s[0].0))
        .filter_map(|(_, s)| model.predict(s).filter(|p| p.mean < 0.0).map(|p| (p.mean, s[0].clone())))
        .collect();
    helpful.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut top: Vec<(String, Value)> = Vec::new();
    for (_, (k, v)) in helpful {
        if top.len() < COMBINE_TOP && !top.iter().any(|(t, _)| *t == k) {
            top.push((k, v));
        }
    }
    for i in 0..top.len() {
        for j in i + 1..top.len() {
            if max_keys >= 2 {
                let sets = vec![top[i].clone(), top[j].clone()];
                pool.push((tier_of(&sets), sets));
            }
            for l in j + 1..top.len() {
                if max_keys >= 3 {
                    let sets = vec![top[i].clone(), top[j].clone(), top[l].clone()];
                    pool.push((tier_of(&sets), sets));
                }
            }
        }
    }
    // Lowest tier first, then the largest expected improvement; ties keep the pool's order.
    let mut best: Option<((i64, f64), Choice)> = None;
    for (tier, sets) in pool {
        let Some(p) = model.predict(&sets) else { continue };
        let ei = p.expected_improvement(margin);
        if best.as_ref().is_some_and(|((t, b), _)| tier > *t || (tier == *t && ei <= b * (1.0 + 1e-9))) {
            continue;
        }
        let why = format!(
            "builtin search (GP): predicted {:+.2}% ± {:.2}% in eval PPL, expected improvement beyond the keep margin {:.2e}",
            (p.mean.exp() - 1.0) * 100.0,
            p.var.sqrt() * 100.0,
            ei
        );
        if let Some(c) = build(&sets, why) {
            best = Some(((tier, ei), c));
        }
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
    build: &dyn Fn(&[(String, Value)], String) -> Option<Choice>,
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
    let Ok(table) = ctx.recipe.parse::<toml::Table>() else { return Vec::new() };
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
        let value_of = |key: &str| {
            crate::validate::lookup(&table, key)
                .map(crate::validate::toml_to_json)
                .or_else(|| schema.field(key).map(|g| g.default.clone()))
        };
        // A knob with no effect under the current recipe (deadzone_t with absmean, say) would
        // waste a whole trial on a no-op.
        if let Some(cond) = &f.active_when {
            if !value_of(&cond.key).is_some_and(|v| cond.holds(&v)) {
                continue;
            }
        }
        let current = value_of(&f.key).unwrap_or_else(|| f.default.clone());
        let cur_idx = f.choices.iter().position(|c| same(c, &current));
        for (ci, choice) in f.choices.iter().enumerate() {
            if same(choice, &current) {
                continue;
            }
            let Some((search, replace)) = line_edit(ctx.recipe, &f.key, choice) else { continue };
            let new_text = ctx.recipe.replacen(&search, &replace, 1);
            let key = focus::diff_key(&focus::compact_diff(ctx.recipe_path, ctx.recipe, &new_text));
            if ctx.tried.contains(&crate::validate::tried_key(Some(schema), Some(&new_text), &key)) {
                continue;
            }
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
