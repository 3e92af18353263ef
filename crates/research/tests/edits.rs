//! Every rejection an answer can get (through a real loopback provider), and the builtin
//! proposer's search.

mod common;

use std::collections::HashSet;

use autoqat_research::answer;
use autoqat_research::edit::{self, EditRules};
use autoqat_research::proposer::builtin::{self, Builtin};
use autoqat_research::proposer::{self, Proposer, ProposerError, Request};
use autoqat_research::results::{Record, Status};
use autoqat_research::settings::{ProviderSettings, Settings};
use autoqat_research::validate::Validator;
use common::*;

fn toy_settings() -> Settings {
    Settings::parse(&settings_toml("", ""), std::path::Path::new("autoqat.toml")).unwrap()
}

/// Fetches `answer` through the OpenAI-compatible server, then parses and applies it.
fn through_provider(
    answer_text: &str,
    root: &std::path::Path,
    mutable: &[String],
    tried: &HashSet<String>,
) -> Result<edit::Applied, String> {
    let srv = serve(vec![Canned::json(200, openai_body(answer_text))]);
    std::env::set_var("AQ_T_EDITS_KEY", "k-edits-xxxx");
    let s = ProviderSettings {
        kind: "openai".into(),
        model: "m".into(),
        base_url: srv.url.clone(),
        api_key_env: "AQ_T_EDITS_KEY".into(),
        ..ProviderSettings::default()
    };
    let mut p = proposer::make(&s).unwrap();
    let reply = p.propose(&bare_request("", "", RECIPE, tried)).unwrap();
    let validator = Validator::from_settings(&toy_settings());
    let rules = EditRules { root, mutable_paths: mutable, validator: &validator, max_changed_lines: 4, tried };
    answer::parse(&reply.text).and_then(|prop| edit::apply(&prop, &rules))
}

fn toy_schema() -> autoqat_recipe::Schema {
    Validator::from_settings(&toy_settings()).schema().cloned().expect("the toy settings declare a schema")
}

#[test]
fn each_rejection_names_its_reason() {
    let ws = workspace(&settings_toml("", ""));
    let root = ws.path();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.toml"), "lr = 1\n").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.toml"), root.join("experiments/link.toml")).unwrap();
    let mutable = vec!["experiments/train.toml".to_string(), "experiments/link.toml".to_string()];
    let good = proposal("raise lr", "lr = 0.001", "lr = 0.003");
    let applied = through_provider(&good, root, &mutable, &HashSet::new()).unwrap();
    assert_eq!(applied.changed_lines, 1);
    let tried: HashSet<String> = [applied.diff_key.clone()].into();

    let edit = |path: &str, search: &str, replace: &str| {
        serde_json::json!({"description": "d", "rationale": "r", "edits": [{"path": path, "search": search, "replace": replace}]}).to_string()
    };
    let t = "experiments/train.toml";
    let cases: Vec<(String, &str)> = vec![
        ("I would raise the learning rate a bit.".into(), "no JSON object"),
        (r#"{"description": "x", "edits": [{"path": 3}]}"#.into(), "does not parse as a proposal"),
        (edit("../outside.toml", "a", "b"), "leaves the workspace"),
        (edit("experiments/../../x.toml", "a", "b"), "leaves the workspace"),
        (edit("/etc/passwd", "root", "x"), "absolute"),
        (edit("experiments/link.toml", "lr = 1", "lr = 2"), "symlink that leaves the workspace"),
        (edit("trial.sh", "set -e", "true"), "not mutable"),
        (edit(t, "lr = 0.5", "lr = 0.003"), "not found"),
        (edit(t, " = 0", " = 1"), "occurs 2 times"),
        (edit(t, "lr = 0.001", "lr = 0.5"), "fails the schema: `optim.lr` = 0.5 is not allowed"),
        (edit(t, "seed = 0", "seed = 1"), "`optim.seed` may not be changed"),
        (edit(t, "lr = 0.001", "lr = = 0.5"), "not valid TOML"),
        (edit(t, "[quant]", "[quant]\nbits = 2\ngroup = 64\nx = 1\ny = 2\nz = 3"), "at most 4 are allowed"),
        (edit(t, "lr = 0.001", "lr = 0.001"), "change nothing"),
        (edit(t, "lr = 0.001", "lr = 1e-3"), "means the same after parsing"),
        (edit(t, "lr = 0.001", "lr = 0.001 # try"), "means the same after parsing"),
        (good.clone(), "already tried"),
    ];
    // The recipe `good` produced, reached another way, counts as tried too.
    let mut tried = tried;
    tried.extend(autoqat_research::validate::recipe_key(&toy_schema(), &RECIPE.replace("lr = 0.001", "lr = 0.003")));
    let cases: Vec<(String, &str)> =
        cases.into_iter().chain([(edit(t, "lr = 0.001", "lr = 3e-3"), "this recipe was already tried")]).collect();
    for (text, want) in cases {
        match through_provider(&text, root, &mutable, &tried) {
            Ok(a) => panic!("accepted {text}: {a:?}"),
            Err(e) => assert!(e.contains(want), "answer {text}\n  got: {e}\n  want: {want}"),
        }
    }
    // Nothing was written by a rejected edit.
    assert_eq!(std::fs::read_to_string(root.join(t)).unwrap(), RECIPE);
}

#[test]
fn no_validator_accepts_foreign_files() {
    let ws = workspace(&settings_toml("", ""));
    let v = Validator::None;
    let rules = EditRules {
        root: ws.path(),
        mutable_paths: &["trial.sh".to_string()],
        validator: &v,
        max_changed_lines: 4,
        tried: &HashSet::new(),
    };
    let p = answer::parse(
        &serde_json::json!({"description":"d","edits":[{"path":"trial.sh","search":"set -e","replace":"set -eu"}]})
            .to_string(),
    )
    .unwrap();
    assert_eq!(edit::apply(&p, &rules).unwrap().files[0].0, "trial.sh");
}

fn builtin_ctx<'a>(
    recipe: &'a str,
    records: &'a [Record],
    tried: &'a HashSet<String>,
    schema: &'a autoqat_recipe::Schema,
) -> Request<'a> {
    Request {
        system: String::new(),
        user: String::new(),
        repair: None,
        ctx: context(Some(schema), recipe, records, tried, &[]),
    }
}

#[test]
fn builtin_never_repeats_a_tried_change_and_ends_when_exhausted() {
    let ws = workspace(&settings_toml("", ""));
    let s = toy_settings();
    let validator = Validator::from_settings(&s);
    let schema = validator.schema().unwrap().clone();
    let mut tried = HashSet::new();
    let mut b = Builtin::new(0);
    let mut seen = Vec::new();
    loop {
        let req = builtin_ctx(RECIPE, &[], &tried, &schema);
        match b.propose(&req) {
            Ok(reply) => {
                let p = answer::parse(&reply.text).unwrap();
                let rules = EditRules {
                    root: ws.path(),
                    mutable_paths: &s.run.mutable_paths,
                    validator: &validator,
                    max_changed_lines: 4,
                    tried: &tried,
                };
                let a =
                    edit::apply(&p, &rules).unwrap_or_else(|e| panic!("builtin proposed an invalid edit {p:?}: {e}"));
                assert_eq!(a.changed_lines, 1);
                assert!(!seen.contains(&a.diff_key));
                seen.push(a.diff_key.clone());
                // As the driver records an experiment: its diff and the meaning of its recipe.
                tried.extend(autoqat_research::validate::recipe_key(&schema, &a.files[0].1));
                tried.insert(a.diff_key);
            }
            Err(ProposerError::Exhausted(_)) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(seen.len() < 100);
    }
    // 3 other lr values + 7 other methods: every one tried exactly once.
    assert_eq!(seen.len(), 10);
}

#[test]
fn builtin_continues_a_kept_direction_and_does_not_go_back() {
    let s = toy_settings();
    let validator = Validator::from_settings(&s);
    let schema = validator.schema().unwrap().clone();
    let kept_recipe = RECIPE.replace("lr = 0.001", "lr = 0.003");
    let records = vec![
        Record {
            exp: 0,
            status: Some(Status::Baseline),
            eval_ppl: Some(34.0),
            description: "baseline".into(),
            ..Record::default()
        },
        Record {
            exp: 1,
            status: Some(Status::Keep),
            eval_ppl: Some(30.0),
            description: "set optim.lr = 0.003".into(),
            diff: "experiments/train.toml: -lr = 0.001\nexperiments/train.toml: +lr = 0.003\n".into(),
            ..Record::default()
        },
    ];
    let tried = HashSet::new();
    let ctx = builtin_ctx(&kept_recipe, &records, &tried, &schema).ctx;
    let c = builtin::candidates(&schema, &ctx, 0);
    assert_eq!((c[0].key.as_str(), c[0].value.clone()), ("optim.lr", serde_json::json!(0.01)));
    assert_eq!(c.last().map(|c| c.value.clone()), Some(serde_json::json!(0.001)), "going back must come last");
    // Without the keep, an untried key is preferred over a tried one.
    let records2 = vec![records[0].clone(), Record { status: Some(Status::Discard), ..records[1].clone() }];
    let ctx = builtin_ctx(RECIPE, &records2, &tried, &schema).ctx;
    assert_eq!(builtin::candidates(&schema, &ctx, 0)[0].key, "quant.method");
}

#[test]
fn builtin_line_edit_handles_suffix_keys_and_absent_keys() {
    let text = "[optim]\nwarmup_lr = 0.1\nlr = 0.1\n";
    let (s, r) = builtin::line_edit(text, "optim.lr", &serde_json::json!(0.2)).unwrap();
    assert_eq!(text.replacen(&s, &r, 1), "[optim]\nwarmup_lr = 0.1\nlr = 0.2\n");
    let (s, r) = builtin::line_edit(text, "optim.wd", &serde_json::json!("x")).unwrap();
    assert_eq!(text.replacen(&s, &r, 1), "[optim]\nwd = \"x\"\nwarmup_lr = 0.1\nlr = 0.1\n");
}
