//! Every builtin quantizer written as a `quant.expr` program gives the builtin's codes,
//! scales, quantized weights and gradients bit for bit, so a program is a generalisation of
//! the builtins and not a second implementation that drifts.

use autoqat_qat::quant::{ste_blend, WeightQuant};
use autoqat_recipe::{Granularity, QuantMethod, QuantProgram};
use tch::{Device, Kind, Tensor};

const DEADZONE_T: f64 = 0.6;

/// The builtins as programs (the deadzone threshold written in as 0.6).
const PROGRAMS: [(QuantMethod, &str); 5] = [
    (QuantMethod::TernaryAbsmean, "inv_scale = 1 / max(mean(abs(w)), 1e-5); code = clamp(round(w * inv_scale), -1, 1)"),
    (QuantMethod::TernaryAbsmax, "inv_scale = 1 / max(amax(abs(w)), 1e-5); code = clamp(round(w * inv_scale), -1, 1)"),
    (QuantMethod::TernaryDeadzone, "scale = max(mean(abs(w)), 1e-5); code = sign(w) * (abs(w) > scale * 0.6)"),
    (
        QuantMethod::ParetoqStretched,
        "alpha_init = max(mean(abs(w)), 1e-5) * 1.5; code = round_ste(clamp(w * 1.5 / alpha, -1, 1)); scale = alpha * (2 / 3)",
    ),
    (QuantMethod::BinaryAbsmean, "scale = max(mean(abs(w)), 1e-5); code = where(w >= 0, 1, -1)"),
];
const GRANS: [Granularity; 5] =
    [Granularity::PerTensor, Granularity::PerRow, Granularity::Group64, Granularity::Group128, Granularity::Group256];

fn bits_equal(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.size(), b.size(), "{what}: shapes");
    let same = a.to_kind(Kind::Float).view_dtype(Kind::Int).eq_tensor(&b.to_kind(Kind::Float).view_dtype(Kind::Int));
    let n_diff = same.logical_not().sum(Kind::Int64).int64_value(&[]);
    assert_eq!(n_diff, 0, "{what}: {n_diff} values differ in their bits");
}

/// Quantized weight, w gradient and alpha gradient (if learned) of one STE-blended pass.
fn pass(wq: &WeightQuant, w0: &Tensor, up: &Tensor) -> (Tensor, Tensor, Option<Tensor>) {
    let w = w0.detach().copy().set_requires_grad(true);
    let alpha = wq.learned_scale().then(|| wq.init_learned_scale(&w).detach().set_requires_grad(true));
    let q = wq.fake_quant(&w, alpha.as_ref());
    (ste_blend(&w, &q, 0.7, alpha.is_some()) * up).sum(Kind::Float).backward();
    (q.detach(), w.grad(), alpha.map(|a| a.grad()))
}

#[test]
fn every_builtin_quantizer_written_as_a_program_gives_the_same_bits() {
    tch::manual_seed(11);
    for (method, text) in PROGRAMS {
        for gran in GRANS {
            let case = format!("{method:?} x {gran:?}");
            let program = QuantProgram::compile(text, gran != Granularity::PerTensor).unwrap();
            let builtin = WeightQuant::builtin(method, gran, DEADZONE_T);
            let expr = WeightQuant::program(program, gran);
            assert_eq!(expr.learned_scale(), builtin.learned_scale(), "{case}");
            // Exact zeros and exact ties (0.5 * scale) are where rounding rules show.
            let w = Tensor::randn([24, 512], (Kind::Float, Device::Cpu)) * 0.05;
            let _ = w.narrow(1, 0, 8).fill_(0.0);
            let up = Tensor::randn([24, 512], (Kind::Float, Device::Cpu));

            let alpha = builtin.learned_scale().then(|| builtin.init_learned_scale(&w));
            if let Some(a) = &alpha {
                bits_equal(&format!("{case}: alpha_init"), a, &expr.init_learned_scale(&w));
            }
            let (cb, ce) = (builtin.codes(&w, alpha.as_ref()), expr.codes(&w, alpha.as_ref()));
            bits_equal(&format!("{case}: codes"), &cb.codes, &ce.codes);
            bits_equal(&format!("{case}: scales"), &cb.scale, &ce.scale);
            let dq = (builtin.dequant(&cb, &w.size()), expr.dequant(&ce, &w.size()));
            bits_equal(&format!("{case}: dequantized"), &dq.0, &dq.1);

            let (qb, gb, ab) = pass(&builtin, &w, &up);
            let (qe, ge, ae) = pass(&expr, &w, &up);
            bits_equal(&format!("{case}: fake-quantized"), &qb, &qe);
            bits_equal(&format!("{case}: weight gradient"), &gb, &ge);
            match (ab, ae) {
                (Some(a), Some(b)) => bits_equal(&format!("{case}: alpha gradient"), &a, &b),
                (None, None) => {}
                _ => panic!("{case}: only one of the two learns a scale"),
            }
        }
    }
}

#[test]
fn a_new_program_quantizes_with_its_own_rule() {
    // A deadzone at 0.7 of a row's mean with one scale per row: not a builtin.
    let text = "s = max(mean(abs(w), row), 1e-5); scale = s; code = sign(w) * (abs(w) > 0.7 * s)";
    let wq = WeightQuant::program(QuantProgram::compile(text, true).unwrap(), Granularity::Group64);
    let w = Tensor::from_slice(&[0.1f32, -0.02, 0.05, -0.3]).reshape([1, 4]).repeat([1, 16]);
    let c = wq.codes(&w, None);
    // mean |w| = 0.1175; the threshold 0.08225 zeroes 0.05 and -0.02.
    let row: Vec<f32> = Vec::try_from(c.codes.reshape([-1]).narrow(0, 0, 4)).unwrap();
    assert_eq!(row, [1.0, 0.0, 0.0, -1.0]);
    let s: Vec<f32> = Vec::try_from(c.scale.reshape([-1])).unwrap();
    assert_eq!(s.len(), 1, "one scale per group64 group of the one row");
    assert!((s[0] - 0.1175).abs() < 1e-6, "{s:?}");
}
