//! The builtin proposer against the shipped recipe (`experiments/train.toml`) and the real
//! recipe schema: every change it proposes must pass the autoqat validator.

mod common;

use std::collections::HashSet;

use autoqat_research::answer;
use autoqat_research::edit::{self, EditRules};
use autoqat_research::proposer::builtin;
use autoqat_research::validate::Validator;

#[test]
fn builtin_changes_to_the_shipped_recipe_pass_the_schema() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Ok(recipe) = std::fs::read_to_string(root.join("experiments/train.toml")) else {
        println!("skipped: experiments/train.toml is absent");
        return;
    };
    let validator = Validator::Autoqat(autoqat_recipe::schema());
    let schema = validator.schema().unwrap().clone();
    if schema.fields.is_empty() {
        println!("skipped: the recipe schema is empty");
        return;
    }
    autoqat_recipe::parse(&recipe).expect("the shipped recipe must parse");
    let tried = HashSet::new();
    let ctx = common::context(Some(&schema), &recipe, &[], &tried, &[]);
    let cands = builtin::candidates(&schema, &ctx, 0);
    assert!(cands.len() >= 5, "the builtin search finds almost nothing to try: {}", cands.len());
    assert!(cands.iter().all(|c| !schema.field(&c.key).unwrap().locked));
    let paths = vec!["experiments/train.toml".to_string()];
    let rules =
        EditRules { root: &root, mutable_paths: &paths, validator: &validator, max_changed_lines: 8, tried: &tried };
    let mut failures = Vec::new();
    for c in &cands {
        let text = serde_json::json!({"description": "d", "edits": [{"path": "experiments/train.toml", "search": c.search, "replace": c.replace}]}).to_string();
        if let Err(e) = answer::parse(&text).and_then(|p| edit::apply(&p, &rules)) {
            failures.push(format!("{} = {}: {e}", c.key, c.value));
        }
    }
    // Some ladder values may be invalid only in combination with others; most must pass.
    assert!(
        failures.len() * 5 <= cands.len(),
        "{} of {} builtin changes fail:\n{}",
        failures.len(),
        cands.len(),
        failures.join("\n")
    );
}

/// Regression (demo run): the builtin search kept `quant.attention = false` and then
/// `quant.mlp = false`, "winning" by not quantizing. Neither that nor `quant.method = "none"`
/// may pass the autoqat validator; a real quantizer change still does.
#[test]
fn switching_quantization_off_is_rejected() {
    let validator = Validator::Autoqat(autoqat_recipe::schema());
    let old = "[quant]\nmethod = \"ternary_absmean\"\nattention = true\nmlp = true\n";
    for new in [
        "[quant]\nmethod = \"ternary_absmean\"\nattention = false\nmlp = true\n",
        "[quant]\nmethod = \"ternary_absmean\"\nattention = true\nmlp = false\n",
        "[quant]\nmethod = \"none\"\nattention = true\nmlp = true\n",
    ] {
        let err = validator.check(old, new).expect_err(new);
        assert!(err.contains("quant."), "names the key: {err}");
    }
    validator
        .check(old, "[quant]\nmethod = \"ternary_absmax\"\nattention = true\nmlp = true\n")
        .expect("a quantizer change stays open to the proposer");
}

/// Regression (fresh-clone demo): the builtin search spent a trial on `quant.deadzone_t`
/// while the method was `ternary_absmean`, where that key has no effect.
#[test]
fn builtin_skips_knobs_that_do_nothing_under_the_current_recipe() {
    let schema = autoqat_recipe::schema();
    let keys_for = |recipe: &str| -> Vec<String> {
        let tried = HashSet::new();
        let ctx = common::context(Some(&schema), recipe, &[], &tried, &[]);
        builtin::candidates(&schema, &ctx, 0).into_iter().map(|c| c.key).collect()
    };
    let absmean = keys_for(
        "[quant]\nmethod = \"ternary_absmean\"\ndeadzone_t = 0.5\n[distill]\nenabled = false\ntemperature = 2.0\n",
    );
    assert!(absmean.iter().any(|k| k == "quant.method"), "{absmean:?}");
    assert!(!absmean.iter().any(|k| k == "quant.deadzone_t" || k == "distill.temperature"), "{absmean:?}");
    let deadzone = keys_for(
        "[quant]\nmethod = \"ternary_deadzone\"\ndeadzone_t = 0.5\n[distill]\nenabled = true\ntemperature = 2.0\n",
    );
    assert!(deadzone.iter().any(|k| k == "quant.deadzone_t"), "{deadzone:?}");
    assert!(deadzone.iter().any(|k| k == "distill.temperature"), "{deadzone:?}");
}

/// An idea that is not a knob: a proposer writes a quantizer program into the shipped recipe
/// in a two-line diff. The validator accepts it, refuses a program that does not check (naming
/// the key), and refuses a program the trial would not read (its switch is off).
#[test]
fn a_quantizer_program_is_open_to_proposers_and_checked_before_it_runs() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Ok(old) = std::fs::read_to_string(root.join("experiments/train.toml")) else {
        println!("skipped: experiments/train.toml is absent");
        return;
    };
    let validator = Validator::Autoqat(autoqat_recipe::schema());
    let with = |method: &str, program: &str| {
        old.replacen("method = \"ternary_absmean\"", &format!("method = \"{method}\"\nexpr = \"{program}\""), 1)
    };
    let good = "s = max(mean(abs(w)), 1e-5); scale = s; code = sign(w) * (abs(w) > 0.7 * s)";
    assert_ne!(with("expr", good), old, "the shipped recipe names its method");
    validator.check(&old, &with("expr", good)).expect("a program is open to the proposer");

    let err = validator.check(&old, &with("expr", "scale = abs(w); code = sign(w)")).unwrap_err();
    assert!(err.contains("`quant.expr`") && err.contains("one value per weight"), "{err}");
    let err = validator.check(&old, &with("ternary_absmean", good)).unwrap_err();
    assert!(err.contains("quant.expr"), "an inactive program is refused: {err}");
    // The builtin search cannot write a program, so it never switches to one.
    let schema = validator.schema().unwrap().clone();
    let tried = HashSet::new();
    let ctx = common::context(Some(&schema), &old, &[], &tried, &[]);
    assert!(builtin::candidates(&schema, &ctx, 0).iter().all(|c| c.value != "expr"));
}
