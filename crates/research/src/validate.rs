//! Which checks a changed recipe must pass, and the schema the proposers see: the autoqat
//! recipe schema, a schema declared in autoqat.toml (`toml`, or `python` for the top-level
//! constants of a Python file such as the python-qat template's train.py), or none for
//! foreign trials.

use std::collections::BTreeMap;

use autoqat_recipe::{FieldSpec, FieldType, Schema};

use crate::settings::{FieldSetting, Settings};

/// The validator of the recipe file.
#[derive(Debug, Clone)]
pub enum Validator {
    /// `autoqat_recipe::parse`, plus: locked keys may not change.
    Autoqat(Schema),
    /// Parses as TOML; declared keys take declared values; undeclared keys may not change.
    Toml(Schema),
    /// Python code (`train.py`): it must tokenize, it must run something new (not only
    /// comments, layout, docstrings or number notation changed), declared top-level constants
    /// stay constants and take declared values; the rest of the code is free.
    Python(Schema),
    /// No check (foreign trials).
    None,
}

/// How the recipe file is read and edited: TOML keys, or the constants of a Python file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `experiments/train.toml` and other TOML recipes: dotted keys.
    Toml,
    /// A Python file: top-level UPPER_CASE constants.
    Python,
}

impl Format {
    /// The value at `key` in `text` as written (no defaults).
    pub fn read(self, text: &str, key: &str) -> Option<serde_json::Value> {
        match self {
            Format::Toml => lookup(&parse_toml(text).ok()?, key).map(toml_to_json),
            Format::Python => crate::python::constants(text)?.remove(key),
        }
    }

    /// The exact `(search, replace)` that sets `key` to `value` in `text`.
    pub fn set_edit(self, text: &str, key: &str, value: &serde_json::Value) -> Option<(String, String)> {
        match self {
            Format::Toml => crate::edit::line_edit(text, key, value),
            Format::Python => crate::python::line_edit(text, key, value),
        }
    }

    /// What a recipe means under `schema` ([`recipe_values`]; for Python its constants, the
    /// declared ones' first choices filling any that are absent).
    pub fn values(self, schema: &Schema, text: &str) -> Option<BTreeMap<String, serde_json::Value>> {
        match self {
            Format::Toml => recipe_values(schema, text),
            Format::Python => {
                let mut values = crate::python::constants(text)?;
                for f in schema.fields.iter().filter(|f| !f.default.is_null()) {
                    values.entry(f.key.clone()).or_insert_with(|| f.default.clone());
                }
                Some(values)
            }
        }
    }

    /// What a change is remembered by in the tried set (see [`tried_key`]): for Python, what
    /// the code runs ([`crate::python::code_key`]), so two edits of the code that differ only
    /// in layout are one, and the same constants with different code are two.
    pub fn tried_key(self, schema: Option<&Schema>, recipe: Option<&str>, diff_key: &str) -> String {
        match self {
            Format::Toml => tried_key(schema, recipe, diff_key),
            Format::Python => recipe.and_then(crate::python::code_key).unwrap_or_else(|| diff_key.to_string()),
        }
    }

    /// The tried-set key of a whole recipe text, when it has a meaning to compare by.
    pub fn meaning_key(self, schema: Option<&Schema>, text: &str) -> Option<String> {
        match self {
            Format::Toml => recipe_key(schema?, text),
            Format::Python => crate::python::code_key(text),
        }
    }
}

impl Validator {
    /// The validator named in the settings, its schema carrying `[[validator.priors]]`
    /// (which `Settings::parse` has checked; priors it would refuse are left out).
    pub fn from_settings(s: &Settings) -> Validator {
        Validator::with_priors(s).unwrap_or_else(|_| Validator::declared(s))
    }

    /// [`Validator::from_settings`], or why its priors are refused (an unknown or locked key,
    /// rank 0, no source, a key named twice, or no schema to rank).
    pub fn with_priors(s: &Settings) -> Result<Validator, String> {
        let mut v = Validator::declared(s);
        if s.validator.priors.is_empty() {
            return Ok(v);
        }
        let priors: Vec<(String, autoqat_recipe::Prior)> = s
            .validator
            .priors
            .iter()
            .map(|p| (p.key.clone(), autoqat_recipe::Prior { rank: p.rank, source: p.source.clone() }))
            .collect();
        match &mut v {
            Validator::Autoqat(schema) | Validator::Toml(schema) | Validator::Python(schema) => {
                schema.set_priors(&priors)?
            }
            Validator::None => {
                return Err(
                    "validator.kind = \"none\" declares no schema to rank; remove the priors or declare a schema"
                        .into(),
                )
            }
        }
        Ok(v)
    }

    /// The validator and schema the settings declare, with the schema's own priors.
    fn declared(s: &Settings) -> Validator {
        match s.validator.kind.as_str() {
            "autoqat" => Validator::Autoqat(autoqat_recipe::schema()),
            "toml" => Validator::Toml(schema_from_settings(&s.validator.fields)),
            "python" => Validator::Python(schema_from_settings(&s.validator.fields)),
            _ => Validator::None,
        }
    }

    /// How the recipe file is read and edited.
    pub fn format(&self) -> Format {
        match self {
            Validator::Python(_) => Format::Python,
            _ => Format::Toml,
        }
    }

    /// What a change that produces `recipe` is remembered by ([`Format::tried_key`]).
    pub fn tried_key(&self, recipe: Option<&str>, diff_key: &str) -> String {
        self.format().tried_key(self.schema(), recipe, diff_key)
    }

    /// The tried-set key of a whole recipe text ([`Format::meaning_key`]).
    pub fn meaning_key(&self, text: &str) -> Option<String> {
        self.format().meaning_key(self.schema(), text)
    }

    /// The schema shown to proposers and searched by the builtin one.
    pub fn schema(&self) -> Option<&Schema> {
        match self {
            Validator::Autoqat(s) | Validator::Toml(s) | Validator::Python(s) => Some(s),
            Validator::None => None,
        }
    }

    /// Checks the new recipe text against the old one; the error names the key.
    pub fn check(&self, old: &str, new: &str) -> Result<(), String> {
        match self {
            Validator::None => Ok(()),
            Validator::Autoqat(schema) => {
                let parsed_new = autoqat_recipe::parse(new).map_err(|e| e.to_string())?;
                let (o, n) = (parse_toml(old)?, parse_toml(new)?);
                for f in schema.fields.iter().filter(|f| f.locked) {
                    if lookup(&o, &f.key) != lookup(&n, &f.key) {
                        return Err(format!(
                            "`{}` is locked (model, data, budget or eval protocol); leave it as it is",
                            f.key
                        ));
                    }
                }
                // An enum value the schema keeps out of `choices` (e.g. `quant.method = "none"`,
                // which would win by not quantizing at all) is for humans, not proposers.
                for f in schema.fields.iter().filter(|f| matches!(f.ty, FieldType::Enum { .. })) {
                    let Some(v) = lookup(&n, &f.key) else { continue };
                    if lookup(&o, &f.key) == Some(v) {
                        continue;
                    }
                    let json = toml_to_json(v);
                    if !f.open_to_proposers(&json) {
                        let allowed: Vec<String> = f.choices.iter().map(|c| c.to_string()).collect();
                        return Err(format!(
                            "`{}` = {} is not open to the proposer; expected one of {}",
                            f.key,
                            json,
                            allowed.join(", ")
                        ));
                    }
                }
                // Changes the trial cannot see would cost a whole trial for nothing.
                if let Ok(parsed_old) = autoqat_recipe::parse(old) {
                    if parsed_old == parsed_new {
                        return Err(NO_EFFECT.into());
                    }
                    inactive_change(schema, &parsed_old, &parsed_new)?;
                }
                Ok(())
            }
            Validator::Toml(schema) => {
                let (o, n) = (parse_toml(old)?, parse_toml(new)?);
                if o == n {
                    return Err(NO_EFFECT.into());
                }
                for f in &schema.fields {
                    if let Some(v) = lookup(&n, &f.key) {
                        let json = toml_to_json(v);
                        if !f.choices.contains(&json) {
                            let allowed: Vec<String> = f.choices.iter().map(|c| c.to_string()).collect();
                            return Err(format!(
                                "`{}` = {} is not allowed; expected one of {}",
                                f.key,
                                json,
                                allowed.join(", ")
                            ));
                        }
                    }
                }
                let (mut ol, mut nl) = (Vec::new(), Vec::new());
                leaves(&o, "", &mut ol);
                leaves(&n, "", &mut nl);
                let declared = |k: &str| schema.fields.iter().any(|f| f.key == k);
                for (k, v) in &nl {
                    if !declared(k) && ol.iter().find(|(ok, _)| ok == k).map(|(_, ov)| ov) != Some(v) {
                        return Err(format!("`{k}` may not be changed (only declared keys may)"));
                    }
                }
                for (k, _) in &ol {
                    if !declared(k) && !nl.iter().any(|(nk, _)| nk == k) {
                        return Err(format!("`{k}` may not be removed"));
                    }
                }
                Ok(())
            }
            Validator::Python(schema) => check_python(schema, old, new),
        }
    }
}

/// The python validator (see [`Validator::Python`]).
fn check_python(schema: &Schema, old: &str, new: &str) -> Result<(), String> {
    crate::python::lines(new).map_err(|e| format!("not valid Python: {e}"))?;
    if crate::python::same_code(old, new) {
        return Err(NO_EFFECT_CODE.into());
    }
    let (o, n) = (crate::python::constants(old).unwrap_or_default(), crate::python::constants(new).unwrap_or_default());
    for f in &schema.fields {
        let (ov, nv) = (o.get(&f.key), n.get(&f.key));
        let Some(v) = nv else {
            if ov.is_some() {
                return Err(format!(
                    "`{}` must stay a top-level constant `{} = <literal>` (autoqat.toml declares it for the search)",
                    f.key, f.key
                ));
            }
            continue;
        };
        if ov.is_some_and(|x| crate::proposer::tpe::same(x, v)) {
            continue;
        }
        if !f.choices.iter().any(|c| crate::proposer::tpe::same(c, v)) {
            let allowed: Vec<String> = f.choices.iter().map(|c| c.to_string()).collect();
            return Err(format!("`{}` = {} is not allowed; expected one of {}", f.key, v, allowed.join(", ")));
        }
        if let Some(cond) = &f.active_when {
            if !n.get(&cond.key).is_some_and(|x| cond.holds(x)) {
                let allowed: Vec<String> = cond.values.iter().map(|v| v.to_string()).collect();
                return Err(format!(
                    "`{}` has no effect unless `{}` is {}; change that constant in the same proposal, or another one",
                    f.key,
                    cond.key,
                    allowed.join(" or ")
                ));
            }
        }
    }
    Ok(())
}

/// Why a code change that runs the same program is refused.
const NO_EFFECT_CODE: &str = "the code runs the same as before (only comments, blank lines, indentation width, docstrings, quote style or the notation of a number changed): the trial would run nothing new; propose a change to the code or a constant";

/// Why a change whose parsed recipe equals the old one is refused.
const NO_EFFECT: &str = "the recipe means the same after parsing (a value in another notation, or only comments or layout changed): the trial would read nothing new; propose a different value";

/// Refuses a change to a key that has no effect under the new recipe (`deadzone_t` while the
/// method is not the deadzone one, say); both recipes are compared after their defaults.
fn inactive_change(schema: &Schema, old: &autoqat_recipe::Recipe, new: &autoqat_recipe::Recipe) -> Result<(), String> {
    let (o, n) = (serde_json::to_value(old).unwrap_or_default(), serde_json::to_value(new).unwrap_or_default());
    let at = |v: &'_ serde_json::Value, key: &str| v.pointer(&format!("/{}", key.replace('.', "/"))).cloned();
    for f in &schema.fields {
        let Some(cond) = &f.active_when else { continue };
        if at(&o, &f.key) == at(&n, &f.key) {
            continue;
        }
        if !at(&n, &cond.key).is_some_and(|v| cond.holds(&v)) {
            let allowed: Vec<String> = cond.values.iter().map(|v| v.to_string()).collect();
            return Err(format!(
                "`{}` has no effect unless `{}` is {}; change that key in the same proposal, or another key",
                f.key,
                cond.key,
                allowed.join(" or ")
            ));
        }
    }
    Ok(())
}

fn parse_toml(text: &str) -> Result<toml::Table, String> {
    text.parse::<toml::Table>().map_err(|e| format!("not valid TOML: {e}"))
}

/// The value at a dotted key.
pub fn lookup<'a>(t: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let mut cur = t.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_table()?.get(p)?;
    }
    Some(cur)
}

fn leaves(t: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in t {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(sub) => leaves(sub, &key, out),
            _ => out.push((key, v.clone())),
        }
    }
}

/// What a recipe means under `schema`: every leaf key with the schema's defaults filled in,
/// values as parsed (so `1e-3` and `0.001`, comments, layout and key order do not matter).
pub fn recipe_values(schema: &Schema, text: &str) -> Option<BTreeMap<String, serde_json::Value>> {
    let table = parse_toml(text).ok()?;
    let mut flat = Vec::new();
    leaves(&table, "", &mut flat);
    let mut meaning: BTreeMap<String, serde_json::Value> =
        flat.into_iter().map(|(k, v)| (k, toml_to_json(&v))).collect();
    for f in schema.fields.iter().filter(|f| !f.default.is_null()) {
        meaning.entry(f.key.clone()).or_insert_with(|| f.default.clone());
    }
    Some(meaning)
}

/// A fingerprint of [`recipe_values`]: two recipes with the same key run the same trial,
/// whichever parent they came from.
pub fn recipe_key(schema: &Schema, text: &str) -> Option<String> {
    recipe_values(schema, text).map(|v| values_key(&v))
}

/// The fingerprint of values already read ([`recipe_key`] of the recipe they came from).
pub fn values_key(values: &BTreeMap<String, serde_json::Value>) -> String {
    let lines: String = values.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    format!("recipe:{}", crate::focus::diff_key(&lines))
}

/// What a change is remembered by in the tried set: the meaning of the recipe it produces
/// ([`recipe_key`]) when a schema reads it, else the text of the change (its diff key). The
/// edit rules and the builtin search both judge "already tried" by this.
pub fn tried_key(schema: Option<&Schema>, recipe: Option<&str>, diff_key: &str) -> String {
    schema.zip(recipe).and_then(|(s, r)| recipe_key(s, r)).unwrap_or_else(|| diff_key.to_string())
}

/// A TOML scalar as JSON (for comparing with schema choices).
pub fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        other => serde_json::Value::String(other.to_string()),
    }
}

fn schema_from_settings(fields: &[FieldSetting]) -> Schema {
    let fields = fields
        .iter()
        .map(|f| {
            let choices: Vec<serde_json::Value> = f.choices.iter().map(toml_to_json).collect();
            // The toml validator takes declared values only, numbers included: the schema says
            // "one of", so neither a proposer nor the search offers a number in between.
            let ty = if choices.iter().all(|c| c.is_boolean()) {
                FieldType::Bool
            } else {
                FieldType::Enum {
                    values: choices
                        .iter()
                        .map(|c| c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string()))
                        .collect(),
                }
            };
            FieldSpec {
                key: f.key.clone(),
                doc: f.doc.clone(),
                ty,
                default: choices.first().cloned().unwrap_or(serde_json::Value::Null),
                choices,
                locked: false,
                active_when: f.active_when.as_ref().map(|a| autoqat_recipe::Condition {
                    key: a.key.clone(),
                    values: a.values.iter().map(toml_to_json).collect(),
                }),
                prior: None,
            }
        })
        .collect();
    Schema { fields }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_the_trial_cannot_see_are_refused_with_the_reason() {
        let v = Validator::Autoqat(autoqat_recipe::schema());
        let old = "[optim]\nlr = 0.001\n[quant]\nmethod = \"ternary_absmean\"\n";
        let same = |new: &str| v.check(old, new).unwrap_err();
        assert!(same("[optim]\nlr = 1e-3\n[quant]\nmethod = \"ternary_absmean\"\n").contains("means the same"));
        assert!(
            same("[optim]\nlr = 0.001 # faster\n[quant]\nmethod = \"ternary_absmean\"\n").contains("means the same")
        );
        // Writing out a default is no change either.
        assert!(same("[optim]\nlr = 0.001\nbeta1 = 0.9\n[quant]\nmethod = \"ternary_absmean\"\n")
            .contains("means the same"));
        let e = same("[optim]\nlr = 0.001\n[quant]\nmethod = \"ternary_absmean\"\ndeadzone_t = 0.6\n");
        assert!(e.contains("`quant.deadzone_t` has no effect unless `quant.method` is \"ternary_deadzone\""), "{e}");
        // With its condition met in the same proposal it is a real change.
        assert!(v
            .check(old, "[optim]\nlr = 0.001\n[quant]\nmethod = \"ternary_deadzone\"\ndeadzone_t = 0.6\n")
            .is_ok());
        assert!(v.check(old, "[optim]\nlr = 0.003\n[quant]\nmethod = \"ternary_absmean\"\n").is_ok());
    }
}
