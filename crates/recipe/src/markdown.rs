//! The configuration reference in `docs/`, rendered from a schema so it cannot drift from what
//! the parser accepts (a test in the root crate fails when the checked-in table is stale).

use crate::{FieldSpec, FieldType, Schema};

impl Schema {
    /// The schema as a Markdown table: key, type and allowed values, default, what a proposer
    /// may do with it, and its doc.
    pub fn to_markdown(&self) -> String {
        let mut out =
            String::from("| key | type / allowed | default | proposer | what it does |\n|---|---|---|---|---|\n");
        for f in &self.fields {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                f.key,
                cell(&type_text(&f.ty)),
                default_text(f),
                cell(&proposer_text(f)),
                cell(&doc_text(f))
            ));
        }
        out
    }
}

fn type_text(ty: &FieldType) -> String {
    match ty {
        FieldType::Enum { values } => values.join(" | "),
        FieldType::Int { min, max } => format!("int {min}..{max}"),
        FieldType::Float { min, max } => format!("float {min:?}..{max:?}"),
        FieldType::Bool => "bool".into(),
        FieldType::String => "string".into(),
        FieldType::Expr { .. } => "expression".into(),
        FieldType::List { values } => format!("list of {}", values.join(", ")),
    }
}

fn default_text(f: &FieldSpec) -> String {
    if f.default.is_null() {
        "required".into()
    } else {
        format!("`{}`", value_text(&f.default, true))
    }
}

/// A value as a reader writes it: floats in Rust's shortest form (`1e-5`, not `0.00001`),
/// strings quoted only where TOML needs the quotes.
fn value_text(v: &serde_json::Value, quoted: bool) -> String {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => n.as_f64().map_or_else(|| n.to_string(), |x| format!("{x:?}")),
        serde_json::Value::String(s) if !quoted => s.clone(),
        other => other.to_string(),
    }
}

fn proposer_text(f: &FieldSpec) -> String {
    if f.locked {
        return "locked".into();
    }
    let all_values = match &f.ty {
        FieldType::Enum { values } => values.len() == f.choices.len(),
        FieldType::Bool | FieldType::Expr { .. } => true,
        _ => false,
    };
    if all_values || f.choices.is_empty() {
        "free".into()
    } else {
        let ladder: Vec<String> = f.choices.iter().map(|c| value_text(c, false)).collect();
        format!("free: {}", ladder.join(", "))
    }
}

fn doc_text(f: &FieldSpec) -> String {
    match &f.active_when {
        Some(c) => {
            let values: Vec<String> = c.values.iter().map(|v| v.to_string()).collect();
            format!("{} (only when `{}` = {})", f.doc, c.key, values.join(" or "))
        }
        None => f.doc.clone(),
    }
}

/// Escapes what would break a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use crate::schema;

    #[test]
    fn every_key_is_one_row_and_pipes_are_escaped() {
        let s = schema();
        let md = s.to_markdown();
        assert_eq!(md.lines().count(), s.fields.len() + 2);
        let deadzone = md.lines().find(|l| l.starts_with("| `quant.deadzone_t`")).unwrap();
        assert!(deadzone.contains("mean\\|w\\|"), "{deadzone}");
        assert!(deadzone.contains("only when `quant.method` = \"ternary_deadzone\""), "{deadzone}");
        let lr = md.lines().find(|l| l.starts_with("| `optim.lr`")).unwrap();
        assert!(lr.contains("| `0.0001` | free: 1e-5, 3e-5, 0.0001,"), "{lr}");
        let seq = md.lines().find(|l| l.starts_with("| `data.seq_len`")).unwrap();
        assert!(seq.contains("| int 8..8192 | `256` | locked |"), "{seq}");
    }
}
