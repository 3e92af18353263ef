//! The builtin search's model and choices, on the autoqat recipe schema: the Gaussian-process
//! posterior against a hand solve, the search following what went well, and two near misses
//! combined.

use std::collections::{BTreeMap, HashSet};

use autoqat_research::proposer::builtin;
use autoqat_research::proposer::gp::{Axis, Effects};
use autoqat_research::proposer::{Context, Observation};
use autoqat_research::results::Status;
use serde_json::{json, Value};

const RECIPE: &str = "[quant]\nmethod = \"ternary_absmean\"\ngranularity = \"per_tensor\"\n\n[optim]\nlr = 0.001\nbeta1 = 0.9\nweight_decay = 0.0\n";

fn values(recipe: &str) -> BTreeMap<String, Value> {
    autoqat_research::validate::recipe_values(&autoqat_recipe::schema(), recipe).unwrap()
}

/// An observation of `from` with `sets` applied, `delta` against the best it was tried on.
fn obs(
    exp: u32,
    status: Status,
    delta: Option<f64>,
    from: &str,
    sets: &[(&str, Value)],
    near_miss: bool,
) -> Observation {
    let parent = values(from);
    let mut v = parent.clone();
    for (k, x) in sets {
        v.insert(k.to_string(), x.clone());
    }
    Observation {
        exp,
        status,
        ppl: delta.map(|d| 2.0 * (1.0 + d)),
        values: v,
        changed: sets.iter().map(|(k, x)| (k.to_string(), x.clone())).collect(),
        was: sets.iter().map(|(k, _)| parent[*k].clone()).collect(),
        delta,
        near_miss,
    }
}

fn choose(recipe: &str, observations: &[Observation], tried: &HashSet<String>) -> builtin::Choice {
    let schema = autoqat_recipe::schema();
    let ctx = Context {
        schema: Some(&schema),
        recipe_path: "experiments/train.toml",
        recipe,
        records: &[],
        tried,
        observations,
        max_changed_lines: 8,
        keep_margin: 0.0,
    };
    builtin::choose(&schema, &ctx, 0).expect("the search has something to propose")
}

#[test]
fn the_posterior_matches_a_hand_solve_and_a_bad_step_down_predicts_a_good_step_up() {
    let schema = autoqat_recipe::schema();
    let lr = Axis::of(schema.field("optim.lr").unwrap()).unwrap();
    let Axis::Number { rung, log: true, .. } = lr else { panic!("optim.lr's ladder spans decades: a log axis") };
    // The lr ladder 1e-5, 3e-5, ..., 3e-3: five rungs over ln(300).
    assert!((rung - (300f64).ln() / 5.0).abs() < 1e-12);
    let d = 0.17;
    let history = [
        obs(0, Status::Baseline, None, RECIPE, &[], false),
        obs(1, Status::Discard, Some(d), RECIPE, &[("optim.lr", json!(3e-4))], false),
    ];
    let axes = vec![
        ("optim.lr".to_string(), lr),
        ("optim.beta1".to_string(), Axis::of(schema.field("optim.beta1").unwrap()).unwrap()),
    ];
    let model = Effects::fit(&axes, &history, &values(RECIPE), Some(0.001));
    // By hand: points ln 1e-3 (effect 0) and ln 3e-4 (effect ln 1.17); prior variance the
    // squared step, counted at most 0.05; noise 0.001^2 + 0.002^2; squared-exponential kernel
    // one rung wide.
    let y1 = (1.0f64 + d).ln();
    let (s2, n2) = (y1.min(0.05).powi(2), 0.001f64.powi(2) + 0.002f64.powi(2));
    let k = |a: f64, b: f64| s2 * (-0.5 * ((a.ln() - b.ln()) / rung).powi(2)).exp();
    let (a, b, c) = (k(1e-3, 1e-3) + n2, k(1e-3, 3e-4), k(3e-4, 3e-4) + n2);
    let det = a * c - b * b;
    let alpha = [(-b * y1) / det, (a * y1) / det];
    for x in [3e-3, 1e-4, 2e-3] {
        let ks = [k(x, 1e-3), k(x, 3e-4)];
        let mean = ks[0] * alpha[0] + ks[1] * alpha[1];
        let var = s2 - (c * ks[0] * ks[0] - 2.0 * b * ks[0] * ks[1] + a * ks[1] * ks[1]) / det + n2;
        let p = model.predict(&[("optim.lr".to_string(), json!(x))]).unwrap();
        assert!((p.mean - mean).abs() < 1e-9, "lr {x}: {} vs {mean}", p.mean);
        assert!((p.var - var).abs() < 1e-9, "lr {x}: {} vs {var}", p.var);
    }
    let up = model.predict(&[("optim.lr".to_string(), json!(3e-3))]).unwrap();
    let down = model.predict(&[("optim.lr".to_string(), json!(1e-4))]).unwrap();
    assert!(up.mean < 0.0 && down.mean > 0.0, "{up:?} {down:?}");
    assert!(up.expected_improvement(0.0) > down.expected_improvement(0.0));
    // A key never changed: no opinion on the direction, and any first change is one rung into
    // the unknown (its only point is the best's own value, effect 0).
    let beta = model.predict(&[("optim.beta1".to_string(), json!(0.8))]).unwrap();
    let rho = (-0.5f64).exp();
    let var = s2 - (s2 * rho).powi(2) / (s2 + n2) + n2;
    assert!(beta.mean.abs() < 1e-12 && (beta.var - var).abs() < 1e-12, "{beta:?} vs {var}");
}

#[test]
fn the_search_follows_what_went_well_and_never_repeats_a_recipe() {
    // Lower learning rates hurt and the higher one was kept: the model proposes no lr below
    // the best's, and every proposal is a recipe not tried before.
    let best = RECIPE.replace("lr = 0.001", "lr = 0.003");
    let history = [
        obs(0, Status::Baseline, None, RECIPE, &[], false),
        obs(1, Status::Discard, Some(0.3), RECIPE, &[("optim.lr", json!(3e-4))], false),
        obs(2, Status::Discard, Some(0.75), RECIPE, &[("optim.lr", json!(1e-4))], false),
        obs(3, Status::Keep, Some(-0.1), RECIPE, &[("optim.lr", json!(3e-3))], false),
        obs(4, Status::Discard, Some(0.2), &best, &[("quant.method", json!("ternary_absmax"))], false),
        obs(5, Status::Discard, Some(0.01), &best, &[("optim.beta1", json!(0.95))], false),
    ];
    let schema = autoqat_recipe::schema();
    let mut tried: HashSet<String> = HashSet::new();
    for o in &history {
        let text = o.values.iter().filter(|(k, _)| o.changed.iter().any(|(c, _)| c == *k)).fold(
            RECIPE.to_string(),
            |text, (k, v)| {
                let (s, r) = builtin::line_edit(&text, k, v).unwrap();
                text.replacen(&s, &r, 1)
            },
        );
        tried.extend(autoqat_research::validate::recipe_key(&schema, &text));
    }
    for _ in 0..6 {
        let c = choose(&best, &history, &tried);
        assert!(c.why.contains("GP"), "{}", c.why);
        assert!(!c.sets.is_empty() && c.sets.len() <= 3);
        for (k, v) in &c.sets {
            if k == "optim.lr" {
                assert!(v.as_f64().unwrap() > 1e-3, "the model went back to a low lr: {v}");
            }
        }
        let mut text = best.clone();
        for (s, r) in &c.edits {
            assert_eq!(text.matches(s.as_str()).count(), 1);
            text = text.replacen(s.as_str(), r, 1);
        }
        let key = autoqat_research::validate::recipe_key(&schema, &text).unwrap();
        assert!(tried.insert(key), "proposed a recipe already tried: {:?}", c.sets);
    }
}

#[test]
fn two_near_misses_that_beat_the_best_on_different_keys_are_combined_first() {
    let history = [
        obs(0, Status::Baseline, None, RECIPE, &[], false),
        obs(1, Status::Discard, Some(-0.005), RECIPE, &[("optim.beta1", json!(0.8))], true),
        obs(2, Status::Discard, Some(0.25), RECIPE, &[("quant.method", json!("ternary_absmax"))], false),
        obs(3, Status::Discard, Some(-0.0025), RECIPE, &[("optim.weight_decay", json!(0.01))], true),
        // Within noise but worse than the best: recorded as a near miss, not combined.
        obs(4, Status::Discard, Some(0.0015), RECIPE, &[("ste.lambda_warmup_frac", json!(0.1))], true),
    ];
    let mut history = history.to_vec();
    history[0].ppl = Some(2.0);
    let c = choose(RECIPE, &history, &HashSet::new());
    let mut keys: Vec<&str> = c.sets.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["optim.beta1", "optim.weight_decay"], "{c:?}");
    assert!(c.why.contains("near misses exp 1 and exp 3"), "{}", c.why);
    // Once that recipe ran, the search moves on.
    let schema = autoqat_recipe::schema();
    let mut text = RECIPE.to_string();
    for (s, r) in &c.edits {
        text = text.replacen(s.as_str(), r, 1);
    }
    let tried: HashSet<String> = autoqat_research::validate::recipe_key(&schema, &text).into_iter().collect();
    let next = choose(RECIPE, &history, &tried);
    assert!(!next.why.contains("near misses"), "{next:?}");
}
