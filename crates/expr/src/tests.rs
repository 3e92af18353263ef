use super::*;

fn quant_err(text: &str) -> String {
    QuantProgram::compile(text, true).unwrap_err().to_string()
}

#[test]
fn the_builtin_quantizers_compile() {
    for text in [
        "inv_scale = 1 / max(mean(abs(w)), 1e-5); code = clamp(round(w * inv_scale), -1, 1)",
        "s = max(mean(abs(w)), 1e-5)\nscale = s\ncode = sign(w) * (abs(w) > s * 0.5)",
        "scale = max(mean(abs(w)), 1e-5); code = where(w >= 0, 1, -1)",
        "alpha_init = max(mean(abs(w)), 1e-5) * 1.5; code = round_ste(clamp(w * 1.5 / alpha, -1, 1)); scale = alpha * (2 / 3)",
    ] {
        let p = QuantProgram::compile(text, true).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(p.learned, text.contains("alpha_init"));
    }
}

#[test]
fn codes_that_can_leave_the_ternary_set_are_refused_with_a_fix() {
    let e = quant_err("scale = mean(abs(w)); code = round(w / scale)");
    assert!(e.contains("code must be an integer in [-1, 1]") && e.contains("clamp(round"), "{e}");
    let e = quant_err("scale = mean(abs(w)); code = clamp(w / scale, -1, 1)");
    assert!(e.contains("any real in [-1, 1]"), "{e}");
    // A product of two codes is a code; twice a code is not.
    QuantProgram::compile("scale = 1; code = sign(w) * (abs(w) > 0.1)", true).unwrap();
    assert!(quant_err("scale = 1; code = 2 * sign(w)").contains("[-2, 2]"));
}

#[test]
fn a_scale_with_one_value_per_weight_is_a_shape_error() {
    let e = quant_err("scale = abs(w); code = sign(w)");
    assert_eq!(
        e,
        "scale must be one value per group at most, but it is one value per weight; reduce it with mean/amax/...(x)"
    );
    // A row scale under per-row or grouped quantization is fine; a row reduction under
    // per-tensor grouping is not.
    QuantProgram::compile("scale = mean(abs(w), row); code = sign(w)", true).unwrap();
    let e = QuantProgram::compile("scale = mean(abs(w), row); code = sign(w)", false).unwrap_err().to_string();
    assert!(e.contains("per_tensor") && e.contains("use `tensor`"), "{e}");
}

#[test]
fn names_outputs_and_the_learned_scale_are_checked() {
    assert!(quant_err("scale = mean(abs(v)); code = sign(w)").contains("unknown name `v`"));
    assert!(quant_err("scale = mean(abs(w))").contains("does not assign `code`"));
    assert!(quant_err("code = sign(w)").contains("neither `scale` nor `inv_scale`"));
    assert!(quant_err("scale = 1; inv_scale = 1; code = sign(w)").contains("not both"));
    assert!(quant_err("scale = alpha; code = sign(w)").contains("needs `alpha_init"));
    assert!(quant_err("alpha_init = alpha; scale = alpha; code = sign(w)").contains("cannot read alpha"));
    assert!(quant_err("a = 1; a = 2; scale = a; code = sign(w)").contains("assigned twice"));
    assert!(quant_err("w = 1; scale = 1; code = sign(w)").contains("reserved"));
    assert!(quant_err("scale = foo(w); code = sign(w)").contains("unknown function `foo`"));
    assert!(quant_err("scale = mean(w, col); code = sign(w)").contains("axis"));
    assert!(quant_err("scale = max(w); code = sign(w)").contains("takes 2 argument(s), not 1"));
}

#[test]
fn the_builtin_lambda_schedules_as_expressions_give_the_same_bits() {
    use std::f64::consts::PI;
    let s = |x: f64| 1.0 / (1.0 + (-x).exp());
    let cases: [(&str, &dyn Fn(f64) -> f64); 5] = [
        ("p", &|p| p),
        ("0.5 * (1 - cos(pi * p))", &|p| 0.5 * (1.0 - (PI * p).cos())),
        ("(1 - exp(-5 * p)) / (1 - exp(-5))", &|p| (1.0 - (-5.0 * p).exp()) / (1.0 - (-5.0f64).exp())),
        ("floor(p * 4) / 4", &|p| (p * 4.0).floor() / 4.0),
        ("(sigmoid(10 * (p - 0.5)) - sigmoid(-10 / 2)) / (sigmoid(10 / 2) - sigmoid(-10 / 2))", &|p| {
            (s(10.0 * (p - 0.5)) - s(-10.0 / 2.0)) / (s(10.0 / 2.0) - s(-10.0 / 2.0))
        }),
    ];
    for (text, f) in cases {
        let e = ScheduleExpr::compile(text).unwrap();
        for step in 0..40u64 {
            let p = (step as f64 / 30.0).min(1.0);
            assert_eq!(e.at(step, 40, 30).to_bits(), f(p).to_bits(), "{text} at {step}");
        }
        assert_eq!(e.first_bad_step(40, 30), None);
    }
}

#[test]
fn schedules_outside_zero_one_and_unknown_names_are_refused() {
    let e = ScheduleExpr::compile("2 * p").unwrap();
    assert_eq!(e.first_bad_step(10, 4), Some((3, 1.5)));
    assert!(ScheduleExpr::compile("mean(w)").unwrap_err().to_string().contains("reduces weights"));
    assert!(ScheduleExpr::compile("w").unwrap_err().to_string().contains("unknown name `w`"));
}

#[test]
fn loss_terms_are_names_of_a_fixed_vocabulary() {
    let e = LossExpr::compile("0.01 * progress * zero_frac + 1e-3 * qerr").unwrap();
    assert!(e.uses("zero_frac") && e.uses("qerr") && !e.uses("l2"));
    assert!(LossExpr::compile("ce").unwrap_err().to_string().contains("unknown name `ce`"));
}
