//! The QAT recipe (`experiments/train.toml`): strictly typed, validated, and described by a
//! schema that the research loop shows to proposers and searches over.
//!
//! CONTRACT (shared by autoqat-qat, autoqat-research and the CLI; do not change signatures
//! without updating every user):
//! - `parse(text) -> Result<Recipe, RecipeError>`: unknown keys, wrong types and out-of-range
//!   values are errors that name the dotted key and list what is allowed.
//! - `schema() -> Schema`: one `FieldSpec` per leaf key, in file order.
//! - `Schema::to_json()`: what `autoqat trial --schema` prints.
//! - `FieldSpec::locked`: keys the proposer may not change (model, data, budget, eval
//!   protocol): the goalposts cannot move.
//! - `FieldSpec::choices`: the values the built-in proposer may try for that key.
//!
//! Validation is driven by the schema table in `spec.rs`; the typed `Recipe` is then read from
//! the validated, default-filled table with `deny_unknown_fields`, and a unit test checks that
//! the table and the structs name exactly the same keys, so the two cannot drift apart.

mod markdown;
mod spec;
mod types;
mod validate;

use serde::Serialize;
use std::path::{Path, PathBuf};

pub use autoqat_expr::{LossExpr, QuantProgram, ScaleForm, ScheduleExpr};
pub use spec::{
    bool_field, enum_field, enum_field_for_humans, expr_field, field, float_field, int_field, list_field,
    required_enum_field, required_string_field, string_field,
};
pub use types::*;

/// Errors from reading a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The text is not valid TOML, or a key has the wrong type or an unknown name.
    Invalid(String),
    /// A value is outside its allowed range or set.
    OutOfRange {
        /// Dotted key, e.g. `quant.granularity`.
        key: String,
        /// The offending value, as written.
        value: String,
        /// What is allowed, human-readable.
        allowed: String,
    },
}

impl std::fmt::Display for RecipeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid recipe: {}", self.detail())
    }
}

impl RecipeError {
    /// What is wrong, without the "invalid recipe" lead: for callers whose own error already
    /// names the file (the compress recipe's).
    pub fn detail(&self) -> String {
        match self {
            Self::Invalid(msg) => msg.clone(),
            Self::OutOfRange { key, value, allowed } => format!("`{key}` = {value} is not allowed; expected {allowed}"),
        }
    }
}

/// The type and allowed values of one recipe key.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FieldType {
    /// One of a fixed set of strings.
    Enum {
        /// The allowed values.
        values: Vec<String>,
    },
    /// An integer in `[min, max]`.
    Int {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// A float in `[min, max]`.
    Float {
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// `true` or `false`.
    Bool,
    /// Free text: a path or hub id.
    String,
    /// An expression of the recipe's expression language (`autoqat-expr`); empty = unused.
    Expr {
        /// The names it may read (and, for programs, assign).
        names: String,
    },
    /// A non-empty list of distinct values from a fixed set.
    List {
        /// The allowed values.
        values: Vec<String>,
    },
}

/// One leaf key of the recipe.
#[derive(Debug, Clone, Serialize)]
pub struct FieldSpec {
    /// Dotted key, e.g. `quant.method`.
    pub key: String,
    /// One line on what the key does.
    pub doc: String,
    /// Type and allowed values.
    #[serde(flatten)]
    pub ty: FieldType,
    /// Value used when the key is absent; null when the file must set the key.
    pub default: serde_json::Value,
    /// Values the built-in proposer may try (all enum values; a ladder for numbers).
    pub choices: Vec<serde_json::Value>,
    /// The proposer may not change this key (model, data, budget, eval protocol).
    pub locked: bool,
    /// The key only has an effect when another key has one of some values (e.g.
    /// `quant.deadzone_t` only with `quant.method = "ternary_deadzone"`); a search skips it otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_when: Option<Condition>,
    /// What the literature or the program's brief expects of the key before any experiment:
    /// a search polls keys with a prior first, by rank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior: Option<Prior>,
}

/// A domain prior on one key: where it stands in the poll order, and who says so.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prior {
    /// Poll order among keys of one step size: 1 first; keys of equal rank tie, and keys
    /// with no prior come after every ranked one.
    pub rank: u32,
    /// Where the expectation comes from: a paper, a brief, a measurement on another model.
    pub source: String,
}

/// `key` has one of `values`.
#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    /// Dotted key.
    pub key: String,
    /// The values under which the dependent key has an effect.
    pub values: Vec<serde_json::Value>,
}

impl Condition {
    /// Whether `value` (the current value of `key`) satisfies the condition. Strings and numbers
    /// compare by their text, so `bits = 8` and `bits = "8"` are the same.
    pub fn holds(&self, value: &serde_json::Value) -> bool {
        let text = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
        self.values.iter().any(|v| text(v) == text(value))
    }
}

impl FieldSpec {
    /// Whether a proposer may set this key to `value`: one of `choices`, or an enum's `expr`,
    /// which switches to an expression key. A search cannot invent a program, so `expr` is
    /// kept out of `choices`; a proposer that writes the program in the same diff may use it.
    pub fn open_to_proposers(&self, value: &serde_json::Value) -> bool {
        self.choices.contains(value)
            || matches!(&self.ty, FieldType::Enum { values } if values.iter().any(|v| v == "expr") && value == "expr")
    }

    /// The same field, active only when `key` has one of `values`.
    pub fn active_when(mut self, key: &str, values: &[serde_json::Value]) -> FieldSpec {
        self.active_when = Some(Condition { key: key.to_string(), values: values.to_vec() });
        self
    }
}

/// Every key of the recipe.
#[derive(Debug, Clone, Serialize)]
pub struct Schema {
    /// One entry per leaf key, in file order.
    pub fields: Vec<FieldSpec>,
}

impl Schema {
    /// The schema as JSON, as printed by `autoqat trial --schema`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The spec of one dotted key.
    pub fn field(&self, key: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.key == key)
    }

    /// The keys a search may change: not locked, with values to try.
    pub fn searchable(&self) -> impl Iterator<Item = &FieldSpec> {
        self.fields.iter().filter(|f| !f.locked && !f.choices.is_empty())
    }

    /// Sets the priors `(key, prior)`, replacing any the schema declares on those keys. A prior
    /// must name a key a search may change, rank from 1, say where it comes from, and name
    /// each key once; the error says which rule failed and how to fix it.
    pub fn set_priors(&mut self, priors: &[(String, Prior)]) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for (key, prior) in priors {
            if !seen.insert(key.as_str()) {
                return Err(format!("a prior names `{key}` twice; keep one"));
            }
            if prior.rank == 0 {
                return Err(format!("the prior on `{key}` has rank 0; ranks start at 1 (polled first)"));
            }
            if prior.source.trim().is_empty() {
                return Err(format!(
                    "the prior on `{key}` has no source; say where the expectation comes from (a paper, the brief)"
                ));
            }
            let Some(f) = self.fields.iter_mut().find(|f| &f.key == key) else {
                let keys: Vec<&str> = self.searchable().map(|f| f.key.as_str()).collect();
                return Err(format!(
                    "a prior names `{key}`, which is not a key of the schema; expected one of {}",
                    keys.join(", ")
                ));
            };
            if f.locked || f.choices.is_empty() {
                return Err(format!(
                    "a prior names `{key}`, which no search may change (locked or without values to try); remove it"
                ));
            }
            f.prior = Some(prior.clone());
        }
        Ok(())
    }
}

/// A TOML error of `text` as one line (`line L, column C: message`): toml's own rendering
/// spans several lines with a source excerpt, and every autoqat error is one line. Shared by
/// every TOML file autoqat reads (recipes, `autoqat.toml`, compression recipes).
pub fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax error: {message}"),
    }
}

fn expr_error(key: &str, message: &str) -> RecipeError {
    RecipeError::Invalid(format!("`{key}`: {message}"))
}

/// Steps covered by a fraction `frac` of `total` steps (every warm-up rounds this way).
pub fn frac_steps(frac: f64, total: u64) -> u64 {
    (frac * total as f64).round() as u64
}

/// Parses and validates a recipe.
pub fn parse(text: &str) -> Result<Recipe, RecipeError> {
    let recipe: Recipe = parse_with(text, &schema())?;
    recipe.check_consistency()?;
    Ok(recipe)
}

/// Reads `text` as a TOML file described by `schema`: checks every key against it, fills in
/// the defaults and deserializes the result. Every typed recipe goes through here, so an
/// unknown key, a wrong type or an out-of-range value reads the same whichever file it is in.
pub fn parse_with<T: serde::de::DeserializeOwned>(text: &str, schema: &Schema) -> Result<T, RecipeError> {
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| RecipeError::Invalid(toml_error_line(text, &e)))?;
    let filled = validate::validate_and_fill(&table, schema)?;
    toml::Value::Table(filled)
        .try_into()
        .map_err(|e: toml::de::Error| RecipeError::Invalid(e.to_string().trim().to_string()))
}

/// Reads, parses and validates a recipe file; relative data paths are resolved against the
/// file's directory.
pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RecipeError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    let mut recipe = parse(&text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    recipe.resolve_paths(base);
    Ok(recipe)
}

/// The schema of every recipe key.
pub fn schema() -> Schema {
    Schema { fields: spec::fields() }
}

impl Recipe {
    /// Makes data paths (and a model or teacher given as an existing relative directory)
    /// absolute against `base`, the directory of the recipe file.
    pub fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &str| -> String {
            let pb = PathBuf::from(p);
            if pb.is_absolute() {
                p.to_string()
            } else {
                base.join(pb).to_string_lossy().into_owned()
            }
        };
        self.data.train_text = join(&self.data.train_text);
        self.data.eval_text = join(&self.data.eval_text);
        if !self.traces.dir.is_empty() {
            self.traces.dir = join(&self.traces.dir);
        }
        // A hub id like `org/name` also looks like a relative path: only resolve when the
        // directory exists next to the recipe.
        for src in [&mut self.model.source, &mut self.model.teacher] {
            if !src.is_empty() && !Path::new(src.as_str()).is_absolute() && base.join(&*src).is_dir() {
                *src = join(src);
            }
        }
    }

    /// The teacher checkpoint: `model.teacher`, or the starting model when empty.
    pub fn teacher_source(&self) -> &str {
        if self.model.teacher.is_empty() {
            &self.model.source
        } else {
            &self.model.teacher
        }
    }

    /// Tokens consumed by one optimizer step.
    pub fn tokens_per_step(&self) -> u64 {
        self.optim.batch_size as u64 * self.optim.grad_accum as u64 * self.data.seq_len as u64
    }

    /// Optimizer steps of the trial: `budget.steps`, or `budget.tokens` divided by the tokens
    /// per step (rounded up) when a token budget is set.
    pub fn total_steps(&self) -> u64 {
        if self.budget.tokens > 0 {
            self.budget.tokens.div_ceil(self.tokens_per_step()).max(1)
        } else {
            self.budget.steps
        }
    }

    /// The recipe as TOML text (all keys, defaults written out).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# the recipe cannot be written as TOML: {e}"))
    }

    /// The checked quantizer program: `Some` when `quant.method = "expr"`.
    pub fn quant_program(&self) -> Result<Option<QuantProgram>, RecipeError> {
        if self.quant.method != QuantMethod::Expr {
            return Ok(None);
        }
        if self.quant.expr.trim().is_empty() {
            return Err(expr_error("quant.expr", "empty, but quant.method = \"expr\" needs a program (e.g. \"scale = max(mean(abs(w)), 1e-5); code = clamp(round(w / scale), -1, 1)\")"));
        }
        self.compile_quant().map(Some)
    }

    fn compile_quant(&self) -> Result<QuantProgram, RecipeError> {
        let rows = self.quant.granularity != Granularity::PerTensor;
        QuantProgram::compile(&self.quant.expr, rows).map_err(|e| expr_error("quant.expr", &e.message))
    }

    fn compile_lambda(&self) -> Result<ScheduleExpr, RecipeError> {
        ScheduleExpr::compile(&self.ste.lambda_expr).map_err(|e| expr_error("ste.lambda_expr", &e.message))
    }

    /// The checked lambda schedule: `Some` when `ste.lambda_schedule = "expr"`.
    pub fn lambda_program(&self) -> Result<Option<ScheduleExpr>, RecipeError> {
        if self.ste.lambda_schedule != LambdaSchedule::Expr {
            return Ok(None);
        }
        if self.ste.lambda_expr.trim().is_empty() {
            return Err(expr_error(
                "ste.lambda_expr",
                "empty, but ste.lambda_schedule = \"expr\" needs a function of the step (e.g. \"p * p\")",
            ));
        }
        self.compile_lambda().map(Some)
    }

    /// The checked extra loss term, if `loss.extra` is not empty.
    pub fn extra_loss(&self) -> Result<Option<LossExpr>, RecipeError> {
        if self.loss.extra.trim().is_empty() {
            return Ok(None);
        }
        LossExpr::compile(&self.loss.extra).map(Some).map_err(|e| expr_error("loss.extra", &e.message))
    }

    /// Rules that involve more than one key.
    fn check_consistency(&self) -> Result<(), RecipeError> {
        self.quant_program()?;
        self.extra_loss()?;
        // A program under another method or schedule is still checked, so that a broken one
        // cannot wait in the file for the day its switch is flipped.
        if self.quant.method != QuantMethod::Expr && !self.quant.expr.trim().is_empty() {
            self.compile_quant()?;
        }
        if self.ste.lambda_schedule != LambdaSchedule::Expr && !self.ste.lambda_expr.trim().is_empty() {
            self.compile_lambda()?;
        }
        if let Some(lambda) = self.lambda_program()? {
            let total = self.total_steps();
            if let Some((step, v)) = lambda.first_bad_step(total, frac_steps(self.ste.lambda_warmup_frac, total)) {
                return Err(expr_error("ste.lambda_expr", &format!("it gives {v} at step {step} of {total}; lambda must be a number in [0, 1] at every step (hint: wrap it in clamp(..., 0, 1))")));
            }
        }
        if self.data.eval_stride > self.data.eval_ctx {
            return Err(RecipeError::OutOfRange {
                key: "data.eval_stride".into(),
                value: self.data.eval_stride.to_string(),
                allowed: format!("at most data.eval_ctx = {}", self.data.eval_ctx),
            });
        }
        if self.budget.steps == 0 && self.budget.tokens == 0 {
            return Err(RecipeError::OutOfRange {
                key: "budget.steps".into(),
                value: "0".into(),
                allowed: "a positive step count, or a positive budget.tokens".into(),
            });
        }
        if self.traces.enabled && self.traces.dir.is_empty() {
            return Err(RecipeError::OutOfRange {
                key: "traces.dir".into(),
                value: "\"\"".into(),
                allowed: "the trace directory of `autoqat kd collect --out` when traces.enabled = true".into(),
            });
        }
        if self.traces.enabled && self.distill.enabled {
            return Err(RecipeError::OutOfRange {
                key: "distill.enabled".into(),
                value: "true".into(),
                allowed: "false when traces.enabled = true (the traces are the teacher)".into(),
            });
        }
        if self.distill.enabled && self.distill.ce_weight == 0.0 && self.distill.kl_weight == 0.0 {
            return Err(RecipeError::OutOfRange {
                key: "distill.kl_weight".into(),
                value: "0".into(),
                allowed: "a positive weight when distill.ce_weight is 0".into(),
            });
        }
        Ok(())
    }
}

impl Default for Recipe {
    fn default() -> Self {
        // The empty recipe is valid: every key has a default in the schema table.
        parse("").unwrap_or_else(|e| panic!("schema defaults must form a valid recipe: {e}"))
    }
}

#[cfg(test)]
mod tests;
