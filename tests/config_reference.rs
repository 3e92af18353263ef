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
