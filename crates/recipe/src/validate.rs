//! Checks a parsed TOML table against the schema table and fills in defaults, so that every
//! error names the dotted key and what is allowed.

use crate::{FieldSpec, FieldType, RecipeError, Schema};
use std::collections::BTreeMap;
use toml::{Table, Value};

/// Validates `table` against `schema` and returns a copy with every absent key set to its
/// default.
pub(crate) fn validate_and_fill(table: &Table, schema: &Schema) -> Result<Table, RecipeError> {
    // section -> keys in file order
    let mut sections: BTreeMap<&str, Vec<&FieldSpec>> = BTreeMap::new();
    let mut section_order: Vec<&str> = Vec::new();
    for f in &schema.fields {
        let (sec, _) = split(&f.key);
        if !sections.contains_key(sec) {
            section_order.push(sec);
        }
        sections.entry(sec).or_default().push(f);
    }

    for (name, value) in table {
        let Some(specs) = sections.get(name.as_str()) else {
            return Err(RecipeError::Invalid(format!(
                "unknown section `[{name}]`; allowed sections: {}",
                section_order.join(", ")
            )));
        };
        let Value::Table(inner) = value else {
            return Err(RecipeError::Invalid(format!(
                "`{name}` must be a section `[{name}]` with keys {}",
                key_list(specs)
            )));
        };
        for key in inner.keys() {
            if !specs.iter().any(|f| split(&f.key).1 == key) {
                return Err(RecipeError::Invalid(format!(
                    "unknown key `{name}.{key}`; allowed in [{name}]: {}",
                    key_list(specs)
                )));
            }
        }
    }

    let mut out = Table::new();
    for sec in &section_order {
        let given = table.get(*sec).and_then(Value::as_table);
        let mut filled = Table::new();
        for spec in &sections[sec] {
            let (_, key) = split(&spec.key);
            let value = match given.and_then(|t| t.get(key)) {
                Some(v) => check_value(spec, v)?,
                None => default_value(spec)?,
            };
            filled.insert(key.to_string(), value);
        }
        out.insert(sec.to_string(), Value::Table(filled));
    }
    Ok(out)
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('.').unwrap_or(("", key))
}

fn key_list(specs: &[&FieldSpec]) -> String {
    specs.iter().map(|f| split(&f.key).1).collect::<Vec<_>>().join(", ")
}

/// A one-line description of what a key accepts.
pub(crate) fn allowed(ty: &FieldType) -> String {
    match ty {
        FieldType::Enum { values } => {
            format!("one of {}", values.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", "))
        }
        FieldType::Int { min, max } => format!("an integer in [{min}, {max}]"),
        FieldType::Float { min, max } => format!("a number in [{min}, {max}]"),
        FieldType::Bool => "true or false".into(),
        FieldType::String => "a string".into(),
        FieldType::Expr { .. } => "an expression (a string)".into(),
        FieldType::List { values } => {
            format!("a non-empty list of {}", values.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", "))
        }
    }
}

fn wrong_type(spec: &FieldSpec, v: &Value) -> RecipeError {
    RecipeError::Invalid(format!(
        "`{}` has the wrong type ({} {}); expected {}",
        spec.key,
        v.type_str(),
        v,
        allowed(&spec.ty)
    ))
}

fn out_of_range(spec: &FieldSpec, v: &Value) -> RecipeError {
    RecipeError::OutOfRange { key: spec.key.clone(), value: v.to_string(), allowed: allowed(&spec.ty) }
}

fn check_value(spec: &FieldSpec, v: &Value) -> Result<Value, RecipeError> {
    match &spec.ty {
        FieldType::Enum { values } => {
            // Numeric enums (activations.bits) may be written as numbers: bits = 8.
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Integer(i) if values.iter().any(|x| x.parse::<i64>().is_ok()) => i.to_string(),
                _ => return Err(wrong_type(spec, v)),
            };
            if values.contains(&text) {
                Ok(Value::String(text))
            } else {
                Err(out_of_range(spec, v))
            }
        }
        FieldType::Int { min, max } => {
            let Value::Integer(i) = v else { return Err(wrong_type(spec, v)) };
            if i < min || i > max {
                return Err(out_of_range(spec, v));
            }
            Ok(v.clone())
        }
        FieldType::Float { min, max } => {
            let x = match v {
                Value::Float(x) => *x,
                Value::Integer(i) => *i as f64,
                _ => return Err(wrong_type(spec, v)),
            };
            if !x.is_finite() || x < *min || x > *max {
                return Err(out_of_range(spec, v));
            }
            Ok(Value::Float(x))
        }
        FieldType::Bool => match v {
            Value::Boolean(_) => Ok(v.clone()),
            _ => Err(wrong_type(spec, v)),
        },
        FieldType::String | FieldType::Expr { .. } => match v {
            Value::String(_) => Ok(v.clone()),
            _ => Err(wrong_type(spec, v)),
        },
        FieldType::List { values } => {
            let Value::Array(items) = v else { return Err(wrong_type(spec, v)) };
            let mut seen: Vec<String> = Vec::new();
            for item in items {
                let Value::String(text) = item else { return Err(wrong_type(spec, v)) };
                if !values.contains(text) {
                    return Err(out_of_range(spec, v));
                }
                if !seen.contains(text) {
                    seen.push(text.clone());
                }
            }
            if seen.is_empty() {
                return Err(out_of_range(spec, v));
            }
            Ok(Value::Array(seen.into_iter().map(Value::String).collect()))
        }
    }
}

fn default_value(spec: &FieldSpec) -> Result<Value, RecipeError> {
    let d = &spec.default;
    if d.is_null() {
        return Err(RecipeError::Invalid(format!(
            "`{}` is missing: set it to {} ({})",
            spec.key,
            allowed(&spec.ty),
            spec.doc
        )));
    }
    let v = match (&spec.ty, d) {
        (FieldType::Float { .. }, serde_json::Value::Number(n)) => n.as_f64().map(Value::Float),
        (FieldType::Int { .. }, serde_json::Value::Number(n)) => n.as_i64().map(Value::Integer),
        (FieldType::Bool, serde_json::Value::Bool(b)) => Some(Value::Boolean(*b)),
        (FieldType::Enum { .. } | FieldType::String | FieldType::Expr { .. }, serde_json::Value::String(s)) => {
            Some(Value::String(s.clone()))
        }
        (FieldType::List { .. }, serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(|s| Value::String(s.to_string())))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        _ => None,
    };
    v.ok_or_else(|| RecipeError::Invalid(format!("internal: bad default for `{}`", spec.key)))
}
