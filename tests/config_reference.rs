//! The configuration reference in `docs/` is generated from the schemas the parsers check
//! against, so it cannot drift: this test fails when a checked-in table differs from what the
//! schema renders today. `AUTOQAT_BLESS=1 cargo test --test config_reference` rewrites them.

use std::path::Path;

/// Where each generated table lives, and which schema renders it.
fn tables() -> Vec<(&'static str, &'static str, autoqat_recipe::Schema)> {
    vec![
        ("docs/configuration.md", "autoqat trial --schema", autoqat_recipe::schema()),
        ("docs/compress.md", "autoqat compress --schema", autoqat_compress::recipe::schema()),
    ]
}

fn begin(source: &str) -> String {
    format!("<!-- generated from `{source}` by tests/config_reference.rs; edit the schema, not this table -->\n")
}
const END: &str = "<!-- end of generated table -->";

#[test]
fn the_configuration_reference_is_generated_from_the_schemas() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var_os("AUTOQAT_BLESS").is_some();
    let mut stale = Vec::new();
    for (file, source, schema) in tables() {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let begin = begin(source);
        let start = text.find(&begin).unwrap_or_else(|| panic!("{file} has no generated table marker {begin:?}"));
        let body_start = start + begin.len();
        let end = body_start + text[body_start..].find(END).unwrap_or_else(|| panic!("{file}: no {END:?}"));
        let fresh = schema.to_markdown();
        if text[body_start..end] != fresh {
            if bless {
                std::fs::write(&path, format!("{}{fresh}{}", &text[..body_start], &text[end..])).unwrap();
            } else {
                stale.push(file);
            }
        }
        for f in &schema.fields {
            assert!(fresh.contains(&format!("| `{}` |", f.key)), "{file}: {} missing", f.key);
        }
    }
    assert!(
        stale.is_empty(),
        "stale configuration reference in {stale:?}: run `AUTOQAT_BLESS=1 cargo test --test config_reference`"
    );
}

/// The `autoqat.toml` table of docs/configuration.md names every key the settings parser
/// accepts (it refuses unknown keys, so a key the table lacks would be one a user cannot learn).
#[test]
fn every_autoqat_toml_key_is_in_the_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let at = text.find("## `autoqat.toml`").expect("docs/configuration.md has an autoqat.toml section");
    let section = &text[at..at + text[at..].find("\n## ").unwrap_or(text.len() - at)];
    let defaults = serde_json::to_value(autoqat_research::settings::Settings::default()).unwrap();
    let mut missing = Vec::new();
    let mut check = |name: &str, keys: &serde_json::Map<String, serde_json::Value>| {
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| `[{name}]`")))
            .unwrap_or_else(|| panic!("no row for [{name}] in the autoqat.toml table"));
        for key in keys.keys() {
            let named = row.contains(&format!("`{key}`")) || row.contains(&format!("[[{name}.{key}]]"));
            if !named && !keys[key].is_object() {
                missing.push(format!("{name}.{key}"));
            }
        }
    };
    for (name, value) in defaults.as_object().unwrap() {
        let keys = value.as_object().unwrap_or_else(|| panic!("[{name}] is not a table"));
        check(name, keys);
        for (sub, inner) in keys.iter().filter(|(_, v)| v.is_object()) {
            check(&format!("{name}.{sub}"), inner.as_object().unwrap());
        }
    }
    assert!(missing.is_empty(), "docs/configuration.md's autoqat.toml table lacks {missing:?}");
}
