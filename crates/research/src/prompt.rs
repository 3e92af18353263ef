//! Renders the prompt from the templates in `prompts/` (system.md, propose.md, repair.md):
//! `{{name}}` placeholders are replaced by program.md, the schema with allowed values, the
//! current recipe, the best and recent results, and the changes already tried and discarded.

use std::path::Path;

use autoqat_recipe::{FieldType, Schema};

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

/// The schema as one line per key: `key (type; allowed) = doc`, locked keys marked.
pub fn schema_text(schema: Option<&Schema>) -> String {
    let Some(schema) = schema else {
        return "(no schema: the file is checked only by running it)".into();
    };
    let mut out = String::new();
    for f in &schema.fields {
        let ty = match &f.ty {
            FieldType::Enum { values } => format!("one of {}", values.join(" | ")),
            FieldType::Int { min, max } => format!("int in [{min}, {max}]"),
            FieldType::Float { min, max } => format!("float in [{min}, {max}]"),
            FieldType::Bool => "bool".into(),
            FieldType::String => "string".into(),
        };
        let lock = if f.locked { " LOCKED" } else { "" };
        out.push_str(&format!("- {} ({ty}; default {}){lock}: {}\n", f.key, f.default, f.doc));
    }
    out
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
    /// How many recent rows.
    pub recent_rows: usize,
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
        .take(40)
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
    let schema = schema_text(i.schema);
    let max = i.max_changed_lines.to_string();
    let recent = if recent.is_empty() { "(none yet)".into() } else { recent.join("\n") };
    let discarded = if discarded.is_empty() { "(none yet)".into() } else { discarded.join("\n\n") };
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
    ];
    (render(&t.system, &vars), render(&t.propose, &vars))
}

/// Renders the repair request quoting the rejection.
pub fn repair(t: &Templates, base_user: &str, answer: &str, error: &str, recipe_path: &str) -> String {
    let r = render(&t.repair, &[("error", error), ("answer", answer), ("recipe_path", recipe_path)]);
    format!("{base_user}\n\n{r}")
}
