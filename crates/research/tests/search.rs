//! The builtin search's model and choices, on the autoqat recipe schema: the Parzen densities
//! are densities, the search follows what went well, and two near misses are combined.

mod common;

use std::collections::{BTreeMap, HashSet};

use autoqat_research::proposer::builtin;
use autoqat_research::proposer::tpe::{Axis, Model};
use autoqat_research::proposer::Observation;
use autoqat_research::results::Status;
use serde_json::{json, Value};

const RECIPE: &str = "[quant]\nmethod = \"ternary_absmean\"\ngranularity = \"per_tensor\"\n\n[optim]\nlr = 0.001\nbeta1 = 0.9\nweight_decay = 0.0\n";

fn values(recipe: &str) -> BTreeMap<String, Value> {
    autoqat_research::validate::recipe_values(&autoqat_recipe::schema(), recipe).unwrap()
}

/// An observation of `RECIPE` with `sets` applied, scored `ppl`.
fn obs(exp: u32, status: Status, ppl: Option<f64>, sets: &[(&str, Value)], near_miss: bool) -> Observation {
    let mut v = values(RECIPE);
    for (k, x) in sets {
        v.insert(k.to_string(), x.clone());
    }
    Observation {
        exp,
        status,
        ppl,
        values: v,
        changed: sets.iter().map(|(k, x)| (k.to_string(), x.clone())).collect(),
        near_miss,
    }
}

fn choose(recipe: &str, observations: &[Observation], tried: &HashSet<String>) -> builtin::Choice {
    let schema = autoqat_recipe::schema();
    let ctx = common::context(Some(&schema), recipe, &[], tried, observations);
    builtin::choose(&schema, &ctx, 0).expect("the search has something to propose")
}

#[test]
fn parzen_densities_integrate_to_one_on_their_axis() {
    let schema = autoqat_recipe::schema();
    let lr = schema.field("optim.lr").unwrap();
    let Some(axis @ Axis::Number { lo, hi, log: true, .. }) = Axis::of(lr) else {
        panic!("optim.lr's ladder spans decades: a log axis")
    };
    // The lr ladder is 1e-5..3e-3, widened by a quarter of its span on each side.
    assert!((lo - (1e-5f64.ln() - 0.25 * (3e-3f64 / 1e-5).ln())).abs() < 1e-9, "lo {lo}");
    assert!((hi - (3e-3f64.ln() + 0.25 * (3e-3f64 / 1e-5).ln())).abs() < 1e-9, "hi {hi}");
    let points = [
        obs(0, Status::Baseline, Some(2.0), &[], false),
        obs(1, Status::Discard, Some(3.0), &[("optim.lr", json!(3e-4))], false),
        obs(2, Status::Keep, Some(1.8), &[("optim.lr", json!(3e-3))], false),
        obs(3, Status::Discard, Some(2.1), &[("optim.beta1", json!(0.8))], false),
        obs(4, Status::Crash, None, &[("optim.lr", json!(1e-2))], false),
    ];
    // Each kernel and the prior carry mass 1, so the mixture integrates to 1 in axis units
    // (here u = ln lr); a kernel's tails past the axis ends count too.
    let pts: Vec<&Value> = points.iter().map(|o| &o.values["optim.lr"]).collect();
    let (a, b, n) = (lo - 10.0, hi + 10.0, 40_000);
    let du = (b - a) / n as f64;
    let mass: f64 = (0..n).map(|i| axis.density(&pts, &json!((a + (i as f64 + 0.5) * du).exp())) * du).sum();
    assert!((mass - 1.0).abs() < 1e-3, "mass {mass}");
    let method = Axis::of(schema.field("quant.method").unwrap()).unwrap();
    let m: Vec<&Value> = points.iter().map(|o| &o.values["quant.method"]).collect();
    let choices = &schema.field("quant.method").unwrap().choices;
    let total: f64 = choices.iter().map(|c| method.density(&m, c)).sum();
    assert!((total - 1.0).abs() < 1e-12, "choice mass {total}");
    let model = Model::fit(&points, 2).unwrap();
    // The best quarter of 4 scored runs is exp 2 (lr 3e-3): moving there from the baseline's
    // 1e-3 is worth more than moving to the poor 3e-4; a crash counts against its value.
    let g = |v: f64| model.gain("optim.lr", &axis, &json!(1e-3), &json!(v));
    assert!(g(3e-3) > 0.0, "{}", g(3e-3));
    assert!(g(3e-3) > g(3e-4), "{} vs {}", g(3e-3), g(3e-4));
    let without_crash = Model::fit(&points[..4], 2).unwrap();
    let g2 = |v: f64| without_crash.gain("optim.lr", &axis, &json!(1e-3), &json!(v));
    assert!(g(1e-2) < g2(1e-2), "{} vs {}", g(1e-2), g2(1e-2));
}

#[test]
fn the_search_follows_what_went_well_and_never_repeats_a_recipe() {
    // Lower learning rates hurt, the higher one was kept: the model proposes no lr below the
    // best's, and the proposal is a recipe not tried before.
    let best = RECIPE.replace("lr = 0.001", "lr = 0.003");
    let history = [
        obs(0, Status::Baseline, Some(2.0), &[], false),
        obs(1, Status::Discard, Some(2.6), &[("optim.lr", json!(3e-4))], false),
        obs(2, Status::Discard, Some(3.5), &[("optim.lr", json!(1e-4))], false),
        obs(3, Status::Keep, Some(1.8), &[("optim.lr", json!(3e-3))], false),
        obs(
            4,
            Status::Discard,
            Some(2.3),
            &[("optim.lr", json!(3e-3)), ("quant.method", json!("ternary_absmax"))],
            false,
        ),
        obs(5, Status::Discard, Some(2.2), &[("optim.lr", json!(3e-3)), ("optim.beta1", json!(0.95))], false),
    ];
    let schema = autoqat_recipe::schema();
    let mut tried: HashSet<String> = HashSet::new();
    for o in &history {
        let mut text = RECIPE.to_string();
        for (k, v) in &o.changed {
            let (s, r) = builtin::line_edit(&text, k, v).unwrap();
            text = text.replacen(&s, &r, 1);
        }
        tried.extend(autoqat_research::validate::recipe_key(&schema, &text));
    }
    for _ in 0..6 {
        let c = choose(&best, &history, &tried);
        assert!(c.why.contains("TPE"), "past the start-up the model chooses: {}", c.why);
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
        obs(0, Status::Baseline, Some(2.0), &[], false),
        obs(1, Status::Discard, Some(1.99), &[("optim.beta1", json!(0.8))], true),
        obs(2, Status::Discard, Some(2.5), &[("quant.method", json!("ternary_absmax"))], false),
        obs(3, Status::Discard, Some(1.995), &[("optim.weight_decay", json!(0.01))], true),
        // Within noise but worse than the best: recorded as a near miss, not combined.
        obs(4, Status::Discard, Some(2.003), &[("ste.lambda_warmup_frac", json!(0.1))], true),
    ];
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

#[test]
fn sampled_numbers_stay_inside_the_keys_limits_after_rounding() {
    // beta2's upper limit is 0.99999: two significant digits of a draw near it would be 1.0,
    // which the schema refuses.
    let schema = autoqat_recipe::schema();
    let axis = Axis::of(schema.field("optim.beta2").unwrap()).unwrap();
    let points = [
        obs(0, Status::Baseline, Some(2.0), &[("optim.beta2", json!(0.999))], false),
        obs(1, Status::Discard, Some(2.5), &[("optim.beta2", json!(0.95))], false),
    ];
    let model = Model::fit(&points, 1).unwrap();
    let mut rng = autoqat_research::proposer::tpe::Rng::new(7);
    let mut near_top = 0;
    for _ in 0..2000 {
        let v = model.sample("optim.beta2", &axis, &mut rng).as_f64().unwrap();
        assert!((0.0..=0.99999).contains(&v), "{v}");
        near_top += usize::from(v > 0.995);
    }
    assert!(near_top > 0, "draws near the good point's 0.999 do happen");
}
