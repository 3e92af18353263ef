use super::*;
use std::collections::BTreeSet;

fn leaf_keys(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                leaf_keys(v, &key, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn schema_and_structs_name_the_same_keys() {
    let recipe = Recipe::default();
    let value = toml::Value::try_from(&recipe).unwrap();
    let mut struct_keys = BTreeSet::new();
    leaf_keys(&value, "", &mut struct_keys);
    let schema_keys: BTreeSet<String> = schema().fields.iter().map(|f| f.key.clone()).collect();
    assert_eq!(struct_keys, schema_keys);
}

#[test]
fn every_enum_value_and_choice_parses() {
    for f in schema().fields {
        if f.locked {
            continue;
        }
        for c in &f.choices {
            let (sec, key) = f.key.split_once('.').unwrap();
            let lit = match c {
                serde_json::Value::String(s) => format!("\"{s}\""),
                other => other.to_string(),
            };
            let text = format!("[{sec}]\n{key} = {lit}\n");
            parse(&text).unwrap_or_else(|e| panic!("choice {lit} of {} rejected: {e}", f.key));
        }
    }
}

#[test]
fn defaults_round_trip_through_toml() {
    let r = Recipe::default();
    assert_eq!(parse(&r.to_toml()).unwrap(), r);
}

#[test]
fn typed_values_arrive() {
    let r = parse(
        "[quant]\nmethod = \"paretoq_stretched\"\ngranularity = \"group128\"\n[activations]\nbits = 8\n[optim]\nlr = 1\n",
    )
    .unwrap();
    assert_eq!(r.quant.method, QuantMethod::ParetoqStretched);
    assert_eq!(r.quant.granularity.group_size(), Some(128));
    assert_eq!(r.activations.bits, ActBits::A8);
    assert_eq!(r.optim.lr, 1.0);
}

#[test]
fn unknown_key_names_key_and_lists_allowed() {
    let err = parse("[quant]\nmethd = \"ternary_absmean\"\n").unwrap_err().to_string();
    assert!(err.contains("`quant.methd`"), "{err}");
    assert!(err.contains("method, granularity"), "{err}");
}

#[test]
fn unknown_section_lists_sections() {
    let err = parse("[quantization]\nmethod = 1\n").unwrap_err().to_string();
    assert!(err.contains("`[quantization]`"), "{err}");
    assert!(err.contains("model, data, budget, quant"), "{err}");
}

#[test]
fn key_outside_a_section_is_rejected() {
    let err = parse("lr = 0.1\n").unwrap_err().to_string();
    assert!(err.contains("`[lr]`"), "{err}");
}

#[test]
fn wrong_type_names_key_and_expected_type() {
    let err = parse("[optim]\nbatch_size = \"8\"\n").unwrap_err().to_string();
    assert!(err.contains("`optim.batch_size`"), "{err}");
    assert!(err.contains("an integer in [1, 4096]"), "{err}");
    let err = parse("[optim]\nbatch_size = 8.0\n").unwrap_err().to_string();
    assert!(err.contains("`optim.batch_size`"), "{err}");
    let err = parse("[quant]\nattention = \"yes\"\n").unwrap_err().to_string();
    assert!(err.contains("`quant.attention`") && err.contains("true or false"), "{err}");
}

#[test]
fn out_of_range_number_names_key_and_range() {
    let err = parse("[optim]\nlr = 1000.0\n").unwrap_err();
    assert!(matches!(err, RecipeError::OutOfRange { .. }));
    let msg = err.to_string();
    assert!(msg.contains("`optim.lr` = 1000.0"), "{msg}");
    assert!(msg.contains("a number in [0.0000001, 100]"), "{msg}");
    let err = parse("[ste]\nlambda_warmup_frac = -0.1\n").unwrap_err().to_string();
    assert!(err.contains("`ste.lambda_warmup_frac`"), "{err}");
}

#[test]
fn bad_enum_value_lists_allowed_values() {
    let err = parse("[quant]\ngranularity = \"group32\"\n").unwrap_err().to_string();
    assert!(err.contains("`quant.granularity` = \"group32\""), "{err}");
    assert!(err.contains("\"per_tensor\", \"per_row\", \"group64\", \"group128\", \"group256\""), "{err}");
    let err = parse("[activations]\nbits = 2\n").unwrap_err().to_string();
    assert!(err.contains("`activations.bits`") && err.contains("\"none\", \"8\", \"4\""), "{err}");
}

#[test]
fn invalid_toml_is_an_error_not_a_panic() {
    let err = parse("[quant\nmethod = ").unwrap_err();
    assert!(matches!(err, RecipeError::Invalid(_)));
}

#[test]
fn cross_key_rules() {
    let err = parse("[data]\neval_ctx = 64\neval_stride = 128\n").unwrap_err().to_string();
    assert!(err.contains("`data.eval_stride`"), "{err}");
    let err = parse("[budget]\nsteps = 0\n").unwrap_err().to_string();
    assert!(err.contains("`budget.steps`"), "{err}");
}

#[test]
fn goalposts_are_locked() {
    let s = schema();
    for key in [
        "model.source",
        "data.train_text",
        "data.eval_text",
        "data.seq_len",
        "data.eval_ctx",
        "budget.steps",
        "budget.tokens",
        "optim.seed",
    ] {
        assert!(s.field(key).unwrap().locked, "{key} must be locked");
    }
    // Regression (demo run): the builtin search "won" by switching quantization off.
    for key in ["quant.attention", "quant.mlp", "quant.embeddings", "quant.lm_head"] {
        assert!(s.field(key).unwrap().locked, "{key} must be locked: what is quantized is the goal");
    }
    let method = s.field("quant.method").unwrap();
    assert!(
        !method.choices.contains(&serde_json::json!("none")),
        "the proposer must not be offered quant.method = none"
    );
    assert!(parse("[quant]\nmethod = \"none\"\n").is_ok(), "humans may still run a full-precision reference");
    for key in ["quant.method", "ste.lambda_schedule", "optim.lr", "distill.temperature"] {
        assert!(!s.field(key).unwrap().locked, "{key} must be free");
    }
}

#[test]
fn ladders_stay_inside_ranges() {
    for f in schema().fields {
        let (min, max) = match f.ty {
            FieldType::Float { min, max } => (min, max),
            FieldType::Int { min, max } => (min as f64, max as f64),
            _ => continue,
        };
        for c in &f.choices {
            let x = c.as_f64().unwrap();
            assert!(x >= min && x <= max, "{}: {x}", f.key);
        }
        let d = f.default.as_f64().unwrap();
        assert!(d >= min && d <= max, "{} default {d}", f.key);
    }
}

#[test]
fn token_budget_sets_steps() {
    let r =
        parse("[budget]\ntokens = 10000\n[data]\nseq_len = 100\n[optim]\nbatch_size = 4\ngrad_accum = 2\n").unwrap();
    assert_eq!(r.tokens_per_step(), 800);
    assert_eq!(r.total_steps(), 13);
}

#[test]
fn data_paths_resolve_against_the_recipe_dir() {
    let mut r = parse("[data]\ntrain_text = \"a.txt\"\neval_text = \"/abs/b.txt\"\n").unwrap();
    r.resolve_paths(std::path::Path::new("/x/experiments"));
    assert_eq!(r.data.train_text, "/x/experiments/a.txt");
    assert_eq!(r.data.eval_text, "/abs/b.txt");
    assert_eq!(r.model.source, "HuggingFaceTB/SmolLM-135M");
}

#[test]
fn schema_json_has_type_tag_and_ranges() {
    let j = schema().to_json();
    let lr = j["fields"].as_array().unwrap().iter().find(|f| f["key"] == "optim.lr").unwrap();
    assert_eq!(lr["type"], "float");
    assert_eq!(lr["max"], 100.0);
    assert_eq!(lr["locked"], false);
}

#[test]
fn shipped_train_toml_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/train.toml");
    if !path.exists() {
        eprintln!("skip: {} not present", path.display());
        return;
    }
    let r = load(&path).unwrap();
    assert_eq!(r.model.source, "HuggingFaceTB/SmolLM-135M");
}

#[test]
fn expression_keys_are_checked_before_any_work_and_errors_name_the_key() {
    let err = |text: &str| parse(text).unwrap_err().to_string();
    let ok = parse("[quant]\nmethod = \"expr\"\ngranularity = \"per_row\"\nexpr = \"\"\"\ns = max(mean(abs(w)), 1e-5)\nscale = s\ncode = sign(w) * (abs(w) > 0.7 * s)\n\"\"\"\n").unwrap();
    assert!(ok.quant_program().unwrap().is_some());
    assert_eq!(
        err("[quant]\nmethod = \"expr\"\nexpr = \"scale = abs(w); code = sign(w)\"\n"),
        "invalid recipe: `quant.expr`: scale must be one value per group at most, but it is one value per weight; reduce it with mean/amax/...(x)"
    );
    assert!(err("[quant]\nmethod = \"expr\"\n")
        .contains("`quant.expr`: empty, but quant.method = \"expr\" needs a program"));
    // A row reduction needs rows: the check reads quant.granularity.
    let per_tensor = "[quant]\nmethod = \"expr\"\ngranularity = \"per_tensor\"\nexpr = \"scale = mean(abs(w), row); code = sign(w)\"\n";
    assert!(err(per_tensor).contains("per_tensor"));
    // A program under another method is still checked, so a broken one cannot wait in the file.
    assert!(err("[quant]\nexpr = \"scale = 1; code = v\"\n").contains("unknown name `v`"));

    let lambda = |e: &str| {
        format!("[budget]\nsteps = 10\n[ste]\nlambda_schedule = \"expr\"\nlambda_warmup_frac = 0.4\nlambda_expr = \"{e}\"\n")
    };
    assert_eq!(parse(&lambda("p * p")).unwrap().lambda_program().unwrap().unwrap().at(2, 10, 4), 0.25);
    assert_eq!(
        err(&lambda("2 * p")),
        "invalid recipe: `ste.lambda_expr`: it gives 1.5 at step 3 of 10; lambda must be a number in [0, 1] at every step (hint: wrap it in clamp(..., 0, 1))"
    );
    assert!(err("[loss]\nextra = \"0.1 * ce\"\n").starts_with("invalid recipe: `loss.extra`: unknown name `ce`"));
    assert!(parse("[loss]\nextra = \"0.01 * progress * qerr\"\n").unwrap().extra_loss().unwrap().is_some());
}
