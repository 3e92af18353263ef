//! The `builtin` proposer: no LLM. A search over the schema's declared values that changes
//! one key at a time, never repeats a change already tried, and follows the results: keys
//! whose last change was kept are pushed further along the same ladder first, untried keys
//! come next, then the least-tried keys, nearest values first.

use std::collections::HashMap;

use autoqat_recipe::Schema;
use serde_json::{json, Value};

use super::{Context, Proposer, ProposerError, Reply, Request};
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
        let cands = candidates(schema, &req.ctx, self.seed);
        let Some(c) = cands.into_iter().next() else {
            return Err(ProposerError::Exhausted(
                "the builtin search has tried every declared value of every unlocked key".into(),
            ));
        };
        let answer = json!({
            "description": format!("set {} = {}", c.key, c.value),
            "rationale": "builtin search: one key at a time, following what was kept",
            "edits": [{"path": req.ctx.recipe_path, "search": c.search, "replace": c.replace}],
        });
        Ok(Reply { text: answer.to_string(), ..Reply::default() })
    }
}

/// Every untried single-key change, best first.
pub fn candidates(schema: &Schema, ctx: &Context, seed: u64) -> Vec<Candidate> {
    let Ok(table) = ctx.recipe.parse::<toml::Table>() else { return Vec::new() };
    // Per key: how often it was tried, and the (old, new) values of its latest change if
    // that change was kept (so the search can continue in the same direction).
    let mut tries: HashMap<String, i64> = HashMap::new();
    let mut last_keep: HashMap<String, (Value, Value)> = HashMap::new();
    for r in ctx.records {
        if let Some((key, val)) = r.description.strip_prefix("set ").and_then(|d| d.split_once(" = ")) {
            *tries.entry(key.to_string()).or_default() += 1;
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

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
        _ => a == b,
    }
}
