//! Renders the prompt from the templates in `prompts/` (system.md, propose.md, repair.md):
//! `{{name}}` placeholders are replaced by program.md, the schema with allowed values, the
//! current recipe, the best and recent results, and the changes already tried and discarded.

use std::path::Path;

use autoqat_recipe::{FieldType, Schema};

use crate::proposer::Observation;
use crate::results::{Record, Status};

/// Built-in copies of the templates, used when the workspace has no `prompts/` files.
pub const DEFAULT_SYSTEM: &str = include_str!("../templates/system.md");
/// See [`DEFAULT_SYSTEM`].
pub const DEFAULT_PROPOSE: &str = include_str!("../templates/propose.md");
/// See [`DEFAULT_SYSTEM`].
pub const DEFAULT_REPAIR: &str = include_str!("../templates/repair.md");

/// The three templates.
#[derive(Debug, Clone)]
pub struct Templates {
    /// System prompt.
    pub system: String,
    /// The proposal request.
    pub propose: String,
    /// The repair request.
    pub repair: String,
}

impl Templates {
    /// Reads `<dir>/{system,propose,repair}.md`, falling back to the built-in copies.
    pub fn load(dir: &Path) -> Templates {
        let read =
            |name: &str, default: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_else(|_| default.to_string());
        Templates {
            system: read("system.md", DEFAULT_SYSTEM),
            propose: read("propose.md", DEFAULT_PROPOSE),
            repair: read("repair.md", DEFAULT_REPAIR),
        }
    }
}

/// Replaces every `{{key}}` in `template`.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

/// The schema as one line per key: `key (type; allowed) = doc`, locked keys marked; `compact`
/// leaves the locked keys out (for a model with a short context).
pub fn schema_text(schema: Option<&Schema>, compact: bool) -> String {
    let Some(schema) = schema else {
        return "(no schema: the file is checked only by running it)".into();
    };
    let mut out = String::new();
    for f in schema.fields.iter().filter(|f| !(compact && f.locked)) {
        let ty = match &f.ty {
            FieldType::Enum { values } => format!("one of {}", values.join(" | ")),
            FieldType::Int { min, max } => format!("int in [{min}, {max}]"),
            FieldType::Float { min, max } => format!("float in [{min}, {max}]"),
            FieldType::Bool => "bool".into(),
            FieldType::String => "string".into(),
            FieldType::Expr { names } => format!("expression; {names}"),
            FieldType::List { values } => format!("non-empty list of {}", values.join(" | ")),
        };
        let lock = if f.locked { " LOCKED" } else { "" };
        let prior = f.prior.as_ref().map(|p| format!("; prior rank {} ({})", p.rank, p.source)).unwrap_or_default();
        out.push_str(&format!("- {} ({ty}; default {}{prior}){lock}: {}\n", f.key, f.default, f.doc));
    }
    if schema.fields.iter().any(|f| matches!(f.ty, FieldType::Expr { .. }) && !f.locked) {
        out.push_str(&expression_help());
    }
    out
}

/// The grammar of expression keys and two examples: how to try an idea that is not a knob.
fn expression_help() -> String {
    format!(
        "\nExpressions (keys typed `expression`): {}\n\
         Example, a deadzone wider than rounding's, as one diff:\n\
         quant.method = \"expr\"\n\
         quant.expr = \"s = max(mean(abs(w)), 1e-5); scale = s; code = sign(w) * (abs(w) > 0.7 * s)\"\n\
         Example, a quadratic lambda ramp and a late pull onto the grid:\n\
         ste.lambda_schedule = \"expr\"\n\
         ste.lambda_expr = \"p * p\"\n\
         loss.extra = \"0.01 * progress * qerr\"\n",
        autoqat_expr::grammar("see each key")
    )
}

/// A record as one human-readable line.
pub fn record_line(r: &Record) -> String {
    let ppl = r.eval_ppl.map(|p| format!("{p:.4}")).unwrap_or_else(|| "-".into());
    let delta = r.delta.map(|d| format!(" ({:+.2}%)", d * 100.0)).unwrap_or_default();
    let err = r
        .error
        .as_deref()
        .map(|e| format!(" [{}]", crate::results::one_line(e).chars().take(120).collect::<String>()))
        .unwrap_or_default();
    format!(
        "exp {} {} eval_ppl {ppl}{delta}: {}{err}",
        r.exp,
        r.status().as_str(),
        crate::results::one_line(&r.description)
    )
}

/// The variables of the propose template.
pub struct PromptInputs<'a> {
    /// program.md text.
    pub program: &'a str,
    /// Schema, if any.
    pub schema: Option<&'a Schema>,
    /// Recipe path.
    pub recipe_path: &'a str,
    /// Recipe text.
    pub recipe: &'a str,
    /// Finished experiments.
    pub records: &'a [Record],
    /// Mutable paths.
    pub mutable_paths: &'a [String],
    /// Focus limit.
    pub max_changed_lines: usize,
    /// How many recent rows; fewer rows also mean fewer discarded diffs and effects, and none
    /// a compact schema (the retry for a model whose context is too short).
    pub recent_rows: usize,
    /// Every finished experiment read through the schema.
    pub observations: &'a [Observation],
    /// The experiments whose trials are running now (parallel loop), one entry each.
    pub in_flight: &'a [String],
}

/// Per key, what changing it did: each value tried, the change in eval_ppl against the best it
/// was tried on, and the outcome (newest `per_key` per key).
pub fn effects(records: &[Record], observations: &[Observation], per_key: usize) -> String {
    let mut by_key: std::collections::BTreeMap<&str, Vec<String>> = std::collections::BTreeMap::new();
    for o in observations.iter().filter(|o| !o.changed.is_empty()) {
        let Some(r) = records.iter().find(|r| r.exp == o.exp) else { continue };
        let delta = r.delta.map(|d| format!("{:+.2}%", d * 100.0)).unwrap_or_else(|| "no PPL".into());
        for (k, v) in &o.changed {
            let with: Vec<&str> = o.changed.iter().map(|(x, _)| x.as_str()).filter(|x| x != k).collect();
            let with = if with.is_empty() { String::new() } else { format!(" with {}", with.join(", ")) };
            let near = if r.near_miss { ", near miss" } else { "" };
            by_key.entry(k).or_default().push(format!("{v} {delta} ({}{near}{with}, exp {})", r.status(), r.exp));
        }
    }
    if by_key.is_empty() {
        return "(nothing changed yet)".into();
    }
    by_key
        .into_iter()
        .map(|(k, tries)| {
            let n = tries.len();
            let shown = &tries[n.saturating_sub(per_key)..];
            format!("- {k} ({n} tried): {}", shown.join("; "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The run-to-run noise as the driver measured it.
fn noise_text(records: &[Record]) -> String {
    match records.iter().find(|r| r.status() == Status::Baseline) {
        Some(Record { sigma: Some(s), baseline_ppls, .. }) => {
            let mean = crate::results::mean(baseline_ppls);
            format!(
                "σ = {s:.4} over {} baseline seeds ({:.2}% of the mean); a change within 2σ is noise",
                baseline_ppls.len(),
                s / mean * 100.0
            )
        }
        _ => "unknown (the baseline ran once); small changes may be noise".into(),
    }
}

/// The -1/0/+1 mix of the baseline and each keep, oldest first (the trend of the zero share).
fn weight_mix(records: &[Record]) -> String {
    let lines: Vec<String> = records
        .iter()
        .filter(|r| r.status().is_kept())
        .filter_map(|r| {
            let (n, z, p) = (r.q_neg1?, r.q_zero?, r.q_pos1?);
            Some(format!("exp {}: {:.1}% / {:.1}% / {:.1}%", r.exp, n * 100.0, z * 100.0, p * 100.0))
        })
        .collect();
    if lines.is_empty() {
        "(not reported by this trial)".into()
    } else {
        lines[lines.len().saturating_sub(6)..].join("\n")
    }
}

/// The newest rejected answers and the reason each was refused.
fn rejections(records: &[Record]) -> String {
    let lines: Vec<String> = records
        .iter()
        .rev()
        .filter(|r| r.status() == Status::Invalid)
        .take(5)
        .map(|r| {
            let why = crate::results::one_line(r.error.as_deref().unwrap_or("")).chars().take(200).collect::<String>();
            format!("exp {}: {} -> {why}", r.exp, crate::results::one_line(&r.description))
        })
        .collect();
    if lines.is_empty() {
        "(none)".into()
    } else {
        lines.join("\n")
    }
}

/// Renders (system, user) for a proposal request.
pub fn build(t: &Templates, i: &PromptInputs) -> (String, String) {
    let best = crate::results::best(i.records).map(record_line).unwrap_or_else(|| "(none yet)".into());
    let start = i.records.len().saturating_sub(i.recent_rows);
    let recent: Vec<String> = i.records[start..].iter().map(record_line).collect();
    // The discarded diffs: newest 40, so that a long history does not swamp the prompt.
    let discarded: Vec<String> = i
        .records
        .iter()
        .rev()
        .filter(|r| !r.status().is_kept() && r.status() != Status::Invalid && !r.diff.is_empty())
        .take(40.min(2 * i.recent_rows))
        .map(|r| {
            format!(
                "exp {} {}: {}\n{}",
                r.exp,
                r.status().as_str(),
                crate::results::one_line(&r.description),
                r.diff.trim_end()
            )
        })
        .collect();
    let mutable = i.mutable_paths.join(", ");
    let schema = schema_text(i.schema, i.recent_rows == 0);
    let effects = effects(i.records, i.observations, if i.recent_rows == 0 { 2 } else { 6 });
    let noise = noise_text(i.records);
    let mix = weight_mix(i.records);
    let rejected = rejections(i.records);
    let max = i.max_changed_lines.to_string();
    let recent = if recent.is_empty() { "(none yet)".into() } else { recent.join("\n") };
    let discarded = if discarded.is_empty() { "(none yet)".into() } else { discarded.join("\n\n") };
    let in_flight = if i.in_flight.is_empty() { "(none)".into() } else { i.in_flight.join("\n\n") };
    let vars = [
        ("program", i.program),
        ("schema", schema.as_str()),
        ("recipe_path", i.recipe_path),
        ("recipe", i.recipe),
        ("best", best.as_str()),
        ("recent", recent.as_str()),
        ("discarded", discarded.as_str()),
        ("mutable_paths", mutable.as_str()),
        ("max_changed_lines", max.as_str()),
        ("effects", effects.as_str()),
        ("noise", noise.as_str()),
        ("weight_mix", mix.as_str()),
        ("in_flight", in_flight.as_str()),
        ("rejections", rejected.as_str()),
    ];
    let user = render(&t.propose, &vars);
    // A Python recipe (the python-qat template's train.py) is shown as the code it is.
    let user = if i.recipe_path.ends_with(".py") { user.replace("```toml\n", "```python\n") } else { user };
    (render(&t.system, &vars), user)
}

/// Renders the repair request quoting the rejection.
pub fn repair(t: &Templates, base_user: &str, answer: &str, error: &str, recipe_path: &str) -> String {
    let r = render(&t.repair, &[("error", error), ("answer", answer), ("recipe_path", recipe_path)]);
    format!("{base_user}\n\n{r}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(exp: u32, status: Status, delta: Option<f64>, desc: &str) -> Record {
        Record { exp, status: Some(status), delta, description: desc.into(), ..Record::default() }
    }

    #[test]
    fn the_prompt_shows_effects_noise_weight_mix_and_rejections() {
        let mut base = rec(0, Status::Baseline, None, "baseline");
        base.sigma = Some(0.002);
        base.baseline_ppls = vec![1.967, 1.969, 1.971];
        (base.q_neg1, base.q_zero, base.q_pos1) = (Some(0.34), Some(0.32), Some(0.34));
        let mut keep = rec(1, Status::Keep, Some(-0.034), "set quant.granularity = \"per_row\"");
        (keep.q_neg1, keep.q_zero, keep.q_pos1) = (Some(0.33), Some(0.30), Some(0.37));
        let mut near = rec(2, Status::Discard, Some(0.001), "set optim.beta1 = 0.8");
        near.near_miss = true;
        let mut bad = rec(3, Status::Invalid, None, "raise lr");
        bad.error = Some("edit 1: search text not found in `experiments/train.toml`".into());
        let records = [base, keep, near, bad];
        let o = |exp: u32, k: &str, v: serde_json::Value| Observation {
            exp,
            status: Status::Discard,
            ppl: Some(2.0),
            values: Default::default(),
            changed: vec![(k.to_string(), v)],
            near_miss: false,
        };
        let obs =
            [o(1, "quant.granularity", serde_json::json!("per_row")), o(2, "optim.beta1", serde_json::json!(0.8))];
        let schema = autoqat_recipe::schema();
        let t = Templates { system: String::new(), propose: DEFAULT_PROPOSE.to_string(), repair: String::new() };
        let inputs = |rows| PromptInputs {
            program: "p",
            schema: Some(&schema),
            recipe_path: "experiments/train.toml",
            recipe: "",
            records: &records,
            mutable_paths: &[],
            max_changed_lines: 8,
            recent_rows: rows,
            observations: &obs,
            in_flight: &[],
        };
        let (_, user) = build(&t, &inputs(15));
        assert!(user.contains("- quant.granularity (1 tried): \"per_row\" -3.40% (keep, exp 1)"), "{user}");
        assert!(user.contains("- optim.beta1 (1 tried): 0.8 +0.10% (discard, near miss, exp 2)"), "{user}");
        assert!(user.contains("σ = 0.0020 over 3 baseline seeds (0.10% of the mean)"), "{user}");
        assert!(user.contains("exp 0: 34.0% / 32.0% / 34.0%\nexp 1: 33.0% / 30.0% / 37.0%"), "{user}");
        assert!(user.contains("exp 3: raise lr -> edit 1: search text not found"), "{user}");
        assert!(!user.contains("{{"), "every placeholder is filled: {user}");
        // The last retry for a short context: no locked keys in the schema.
        let (_, short) = build(&t, &inputs(0));
        assert!(user.contains("data.eval_text") && !short.contains("data.eval_text"));
        assert!(short.len() < user.len());
    }
}

#[cfg(test)]
mod expression_tests {
    use super::*;

    #[test]
    fn the_schema_shows_the_expression_grammar_and_two_examples_that_check() {
        let schema = autoqat_recipe::schema();
        let text = schema_text(Some(&schema), true);
        assert!(text.contains("- quant.expr (expression; inputs: w (the weight"), "{text}");
        assert!(text.contains("round_ste(x): round(x) forward, gradient 1 backward"), "{text}");
        assert!(text.contains("mean sum amax amin (x[, axis])"), "{text}");
        // The examples are real: the dotted lines the prompt shows form a recipe that parses.
        let mut recipe = String::new();
        for line in text.lines().filter(|l| l.starts_with("quant.") || l.starts_with("ste.") || l.starts_with("loss."))
        {
            // Dotted keys are TOML as they stand.
            recipe.push_str(line);
            recipe.push('\n');
        }
        assert_eq!(recipe.lines().count(), 5, "two examples, five lines: {recipe}");
        let parsed = autoqat_recipe::parse(&recipe).expect("the prompt's examples form a valid recipe");
        assert!(parsed.quant_program().unwrap().is_some() && parsed.extra_loss().unwrap().is_some());
        assert!(!schema_text(None, false).contains("Expressions"));
    }
}
