//! Weight quantizers. Each maps a `[out, in]` matrix to ternary (or binary) codes times a
//! scale per group of weights; `fake_quant` returns `codes * scale` in the weight's dtype.
//!
//! Grouping: per-tensor views the matrix as `[1, 1, out*in]`, per-row as `[out, 1, in]`,
//! groupN as `[out, in/N, N]`; a scale is computed over the last axis.

use autoqat_recipe::{Granularity, QuantMethod, QuantProgram, ScaleForm};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// Smallest scale, as in BitNet's reference code, so an all-zero group does not divide by 0.
pub const SCALE_EPS: f64 = 1e-5;

/// A weight quantizer with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightQuant {
    /// Which quantizer.
    pub method: QuantMethod,
    /// Which weights share a scale.
    pub granularity: Granularity,
    /// Deadzone threshold (multiple of mean|w|) for `TernaryDeadzone`.
    pub deadzone_t: f64,
    /// The checked program of `QuantMethod::Expr`.
    pub program: Option<Arc<QuantProgram>>,
}

/// Ternary/binary codes (`{-1, 0, 1}` as the weight's float kind) and the scale of each
/// group, shaped so that `codes * scale` broadcasts in the grouped view.
#[derive(Debug)]
pub struct Codes {
    /// Codes in the grouped view `[a, b, c]`.
    pub codes: Tensor,
    /// Scales `[a, b, 1]`.
    pub scale: Tensor,
    /// `1 / scale` as computed, when the quantizer divides by it (BitNet form).
    pub inv_scale: Option<Tensor>,
}

impl WeightQuant {
    /// A builtin quantizer (no program).
    pub fn builtin(method: QuantMethod, granularity: Granularity, deadzone_t: f64) -> WeightQuant {
        WeightQuant { method, granularity, deadzone_t, program: None }
    }

    /// The quantizer of an `expr` program.
    pub fn program(program: QuantProgram, granularity: Granularity) -> WeightQuant {
        WeightQuant { method: QuantMethod::Expr, granularity, deadzone_t: 0.0, program: Some(Arc::new(program)) }
    }

    fn expr(&self) -> Option<&QuantProgram> {
        self.program.as_deref().filter(|_| self.method == QuantMethod::Expr)
    }

    /// Whether this quantizer learns its scale (a variable trained by the optimizer).
    pub fn learned_scale(&self) -> bool {
        self.method == QuantMethod::ParetoqStretched || self.expr().is_some_and(|p| p.learned)
    }

    /// Checks that a `[out, in]` matrix can be grouped; the error names the shapes.
    pub fn check_shape(&self, out_dim: i64, in_dim: i64) -> Result<(), String> {
        match self.granularity.group_size() {
            Some(g) if in_dim % g != 0 => Err(format!(
                "quant.granularity = group{g} needs input widths divisible by {g}, but a [{out_dim}, {in_dim}] weight is not (hint: use per_row or a smaller group)"
            )),
            _ => Ok(()),
        }
    }

    /// Shape of the grouped view of a `[out, in]` matrix.
    pub fn grouped_shape(&self, out_dim: i64, in_dim: i64) -> [i64; 3] {
        match self.granularity {
            Granularity::PerTensor => [1, 1, out_dim * in_dim],
            Granularity::PerRow => [out_dim, 1, in_dim],
            g => {
                let n = g.group_size().unwrap_or(in_dim);
                [out_dim, in_dim / n, n]
            }
        }
    }

    /// Shape of the learned scale of a `[out, in]` matrix (one per group).
    pub fn scale_shape(&self, out_dim: i64, in_dim: i64) -> [i64; 3] {
        let [a, b, _] = self.grouped_shape(out_dim, in_dim);
        [a, b, 1]
    }

    /// The grouped view of `w`.
    pub fn group(&self, w: &Tensor) -> Tensor {
        let s = w.size();
        w.reshape(self.grouped_shape(s[0], s[1]))
    }

    /// Initial value of a learned scale: 1.5 * mean|w| per group, so that at the start the
    /// stretched quantizer equals ternary absmean (step mean|w|, threshold mean|w|/2).
    pub fn init_learned_scale(&self, w: &Tensor) -> Tensor {
        if let Some(p) = self.expr() {
            return tch::no_grad(|| super::expr::alpha_init(p, &self.group(w)));
        }
        self.group(w).abs().mean_dim(-1, true, Kind::Float).clamp_min(SCALE_EPS).to_kind(w.kind()) * 1.5
    }

    /// Codes and scales of `w` (no gradient); `alpha` is the learned scale of ParetoQ.
    ///
    /// The arithmetic follows BitNet's reference code (`scale = 1 / mean|w|`,
    /// `round(w * scale)`, `/ scale`) so that results equal a PyTorch port bit for bit.
    pub fn codes(&self, w: &Tensor, alpha: Option<&Tensor>) -> Codes {
        tch::no_grad(|| {
            let g = self.group(w);
            let ternary = |inv: Tensor| Codes {
                codes: (&g * &inv).round().clamp(-1.0, 1.0),
                scale: inv.reciprocal(),
                inv_scale: Some(inv),
            };
            match self.method {
                QuantMethod::Expr => match self.expr() {
                    Some(p) => {
                        // Without a trained alpha yet, a learned scale starts at alpha_init.
                        let alpha =
                            alpha.map(Tensor::shallow_clone).or_else(|| p.learned.then(|| self.init_learned_scale(w)));
                        program_codes(super::expr::run(p, &g, alpha.as_ref()))
                    }
                    // A WeightQuant built by hand with the method but no program (a recipe always
                    // brings one): BitNet's absmean, the default method.
                    None => ternary(absmean(&g).reciprocal()),
                },
                QuantMethod::TernaryAbsmean | QuantMethod::None => ternary(absmean(&g).reciprocal()),
                QuantMethod::TernaryAbsmax => ternary(g.abs().amax(-1, true).clamp_min(SCALE_EPS).reciprocal()),
                QuantMethod::TernaryDeadzone => {
                    let s = absmean(&g);
                    let keep = g.abs().gt_tensor(&(&s * self.deadzone_t)).to_kind(g.kind());
                    Codes { codes: g.sign() * keep, scale: s, inv_scale: None }
                }
                QuantMethod::BinaryAbsmean => {
                    let s = absmean(&g);
                    let ones = g.ones_like();
                    Codes { codes: ones.where_self(&g.ge(0.0), &(-&ones)), scale: s, inv_scale: None }
                }
                QuantMethod::ParetoqStretched => {
                    let a = match alpha {
                        Some(a) => a.shallow_clone(),
                        None => self.init_learned_scale(w),
                    };
                    let codes = (&g * 1.5 / &a).clamp(-1.0, 1.0).round();
                    Codes { codes, scale: a * (2.0 / 3.0), inv_scale: None }
                }
            }
        })
    }

    /// Dequantized values `codes * scale` (or `codes / inv_scale`) in the shape of `w`.
    pub fn dequant(&self, c: &Codes, shape: &[i64]) -> Tensor {
        match &c.inv_scale {
            Some(inv) => (&c.codes / inv).reshape(shape),
            None => (&c.codes * &c.scale).reshape(shape),
        }
    }

    /// `q(w)` in the shape of `w`. For ParetoQ the result is differentiable in `w` (clipped
    /// straight-through round) and in `alpha` (LSQ-style); for the others it carries no
    /// gradient (the STE blend detaches it).
    pub fn fake_quant(&self, w: &Tensor, alpha: Option<&Tensor>) -> Tensor {
        if let (Some(p), Some(a)) = (self.expr().filter(|p| p.learned), alpha) {
            // A learned scale trains through the program's own graph; its STE is whatever the
            // program wrote (`round_ste`, `detach`).
            let out = super::expr::run(p, &self.group(w), Some(a));
            let c = program_codes(out);
            return self.dequant(&c, &w.size());
        }
        match (self.method, alpha) {
            (QuantMethod::ParetoqStretched, Some(a)) => {
                let g = self.group(w);
                let x = (&g * 1.5 / a).clamp(-1.0, 1.0);
                let r = &x + (x.round() - &x).detach();
                // r * (a * 2/3), not (r * a) * 2/3: the same bits as `dequant(codes(w))`, so
                // the forward that trains is the one the packed export computes.
                (r * (a * (2.0 / 3.0))).reshape(w.size())
            }
            _ => {
                let c = self.codes(w, alpha);
                self.dequant(&c, &w.size())
            }
        }
    }
}

fn program_codes(out: super::expr::ProgramOut) -> Codes {
    match out.form {
        ScaleForm::Scale => Codes { codes: out.code, scale: out.scale, inv_scale: None },
        ScaleForm::InvScale => Codes { codes: out.code, scale: out.scale.reciprocal(), inv_scale: Some(out.scale) },
    }
}

fn absmean(g: &Tensor) -> Tensor {
    g.abs().mean_dim(-1, true, g.kind()).clamp_min(SCALE_EPS)
}

/// The STE blend `w + lambda * (q - w)`: with a fixed quantizer `q` is detached (plain STE,
/// gradient 1 to `w`); with a learned scale `q` keeps its own gradient (ParetoQ/LSQ).
pub fn ste_blend(w: &Tensor, q: &Tensor, lambda: f64, q_has_grad: bool) -> Tensor {
    if q_has_grad {
        w + (q - w) * lambda
    } else {
        w + (q - w).detach() * lambda
    }
}

/// Counts of codes -1, 0 and +1 in `codes`.
pub fn code_counts(codes: &Tensor) -> [i64; 3] {
    tch::no_grad(|| {
        let neg = codes.lt(-0.5).sum(Kind::Int64).int64_value(&[]);
        let pos = codes.gt(0.5).sum(Kind::Int64).int64_value(&[]);
        let n = codes.numel() as i64;
        [neg, n - neg - pos, pos]
    })
}
