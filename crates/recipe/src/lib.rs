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

use serde::Serialize;

/// Errors from reading a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The text is not valid TOML, or a key has the wrong type or an unknown name.
    #[error("invalid recipe: {0}")]
    Invalid(String),
    /// A value is outside its allowed range or set.
    #[error("invalid recipe: `{key}` = {value} is not allowed; expected {allowed}")]
    OutOfRange {
        /// Dotted key, e.g. `quant.granularity`.
        key: String,
        /// The offending value, as written.
        value: String,
        /// What is allowed, human-readable.
        allowed: String,
    },
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
    /// Value used when the key is absent.
    pub default: serde_json::Value,
    /// Values the built-in proposer may try (all enum values; a ladder for numbers).
    pub choices: Vec<serde_json::Value>,
    /// The proposer may not change this key (model, data, budget, eval protocol).
    pub locked: bool,
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
}

/// A validated recipe. (Fields filled in by the QAT-runner work.)
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {}

/// Parses and validates a recipe.
pub fn parse(text: &str) -> Result<Recipe, RecipeError> {
    toml::from_str(text).map_err(|e| RecipeError::Invalid(e.to_string()))
}

/// The schema of every recipe key.
pub fn schema() -> Schema {
    Schema { fields: Vec::new() }
}
