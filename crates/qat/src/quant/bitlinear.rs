//! BitLinear: a linear layer whose weight passes through the STE blend of a quantizer, with
//! optional activation quantization and Tequila-style deadzone recovery; and the
//! [`QuantBuilder`] that puts it in place of the roles a recipe selects.

use super::act::act_quant;
use super::weight::{ste_blend, WeightQuant};
use autoqat_model::linear::{Embedding, Linear, LinearBuilder, LinearRole, LinearSpec, PlainEmbedding, PlainLinear};
use autoqat_model::ModelError;
use autoqat_recipe::{ActGranularity, QuantMethod, Recipe};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use tch::nn::{self, Init};
use tch::Tensor;

/// State that changes during training and is read by every quantized layer: the STE blend
/// factor lambda and the activation bit width (after the A8 -> A4 flip).
#[derive(Debug, Default)]
pub struct QatState {
    lambda_bits: AtomicU64,
    act_bits: AtomicU32,
}

impl QatState {
    /// A state with `lambda` and activation bits (`0`: full precision).
    pub fn new(lambda: f64, act_bits: u32) -> Arc<Self> {
        let s = Arc::new(Self::default());
        s.set_lambda(lambda);
        s.set_act_bits(act_bits);
        s
    }
    /// Current lambda.
    pub fn lambda(&self) -> f64 {
        f64::from_bits(self.lambda_bits.load(Ordering::Relaxed))
    }
    /// Sets lambda.
    pub fn set_lambda(&self, v: f64) {
        self.lambda_bits.store(v.to_bits(), Ordering::Relaxed)
    }
    /// Current activation bits (`0`: none).
    pub fn act_bits(&self) -> u32 {
        self.act_bits.load(Ordering::Relaxed)
    }
    /// Sets activation bits (`0`: none).
    pub fn set_act_bits(&self, b: u32) {
        self.act_bits.store(b, Ordering::Relaxed)
    }
}

/// A quantized weight: what training, statistics and export need to know about it.
#[derive(Debug)]
pub struct QuantHandle {
    /// VarStore name of the weight (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// The weight variable (shares storage with the layer's).
    pub weight: Tensor,
    /// The learned scale (ParetoQ), if any.
    pub alpha: Option<Tensor>,
    /// The learned factor of the deadzone-recovery bias, if enabled.
    pub dz_scale: Option<Tensor>,
    /// The quantizer.
    pub quant: WeightQuant,
}

/// Quantizes `weight` for one forward pass: `w + lambda * (q(w) - w)`.
fn blended(weight: &Tensor, alpha: Option<&Tensor>, quant: &WeightQuant, lambda: f64) -> Tensor {
    if lambda == 0.0 {
        return weight.shallow_clone();
    }
    let q = quant.fake_quant(weight, alpha);
    ste_blend(weight, &q, lambda, alpha.is_some())
}

/// Per-output deadzone-recovery bias `dz * sum_i w_ij [code_ij = 0]`: input-independent, so it
/// folds into a bias offline, and it gives trapped weights a gradient.
pub fn deadzone_bias(weight: &Tensor, alpha: Option<&Tensor>, quant: &WeightQuant, dz: &Tensor) -> Tensor {
    let codes = quant.codes(weight, alpha);
    let trapped = codes.codes.eq(0.0).to_kind(weight.kind()).reshape(weight.size());
    (weight * trapped).sum_dim_intlist(-1, false, weight.kind()) * dz
}

/// A linear layer trained with quantization-aware training.
#[derive(Debug)]
pub struct BitLinear {
    weight: Tensor,
    bias: Option<Tensor>,
    alpha: Option<Tensor>,
    dz_scale: Option<Tensor>,
    quant: WeightQuant,
    act_gran: ActGranularity,
    state: Arc<QatState>,
}

impl Linear for BitLinear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let lambda = self.state.lambda();
        let w = blended(&self.weight, self.alpha.as_ref(), &self.quant, lambda);
        let bits = self.state.act_bits();
        let x = if bits > 0 { act_quant(xs, bits, self.act_gran) } else { xs.shallow_clone() };
        let y = x.linear(&w, self.bias.as_ref());
        match &self.dz_scale {
            Some(dz) if lambda > 0.0 => y + deadzone_bias(&self.weight, self.alpha.as_ref(), &self.quant, dz) * lambda,
            _ => y,
        }
    }
}

/// A token embedding whose table is quantized (weights only; lookups are not activations).
#[derive(Debug)]
pub struct BitEmbedding {
    weight: Tensor,
    alpha: Option<Tensor>,
    quant: WeightQuant,
    state: Arc<QatState>,
}

impl Embedding for BitEmbedding {
    fn forward(&self, ids: &Tensor) -> Tensor {
        let w = blended(&self.weight, self.alpha.as_ref(), &self.quant, self.state.lambda());
        Tensor::embedding(&w, ids, -1, false, false)
    }
    fn weight(&self) -> &Tensor {
        &self.weight
    }
}

/// Builds BitLinear for the roles a recipe quantizes and plain layers elsewhere; remembers
/// every quantized weight for statistics, scale initialization and export.
#[derive(Debug)]
pub struct QuantBuilder {
    quant: WeightQuant,
    attention: bool,
    mlp: bool,
    embeddings: bool,
    lm_head: bool,
    deadzone: Option<f64>,
    act_gran: ActGranularity,
    state: Arc<QatState>,
    handles: RefCell<Vec<QuantHandle>>,
    extra: RefCell<Vec<String>>,
}

/// Name of the learned scale variable under a layer's path.
pub const ALPHA_NAME: &str = "qat_alpha";
/// Name of the deadzone-recovery factor under a layer's path.
pub const DZ_NAME: &str = "qat_dz_scale";

impl QuantBuilder {
    /// A builder for `recipe`, sharing `state` with the trainer; fails on a `quant.expr` that
    /// does not check (a recipe from `autoqat_recipe::parse` always does).
    pub fn new(recipe: &Recipe, state: Arc<QatState>) -> Result<Self, crate::QatError> {
        let q = &recipe.quant;
        let on = q.method != QuantMethod::None;
        let quant = match recipe.quant_program().map_err(|e| crate::QatError::Config(e.to_string()))? {
            Some(p) => WeightQuant::program(p, q.granularity),
            None => WeightQuant::builtin(q.method, q.granularity, q.deadzone_t),
        };
        Ok(Self {
            quant,
            attention: on && q.attention,
            mlp: on && q.mlp,
            embeddings: on && q.embeddings,
            lm_head: on && q.lm_head,
            deadzone: (on && recipe.deadzone_recovery.enabled && q.method != QuantMethod::BinaryAbsmean)
                .then_some(recipe.deadzone_recovery.scale_init),
            act_gran: recipe.activations.granularity,
            state,
            handles: RefCell::new(Vec::new()),
            extra: RefCell::new(Vec::new()),
        })
    }

    /// The quantizer.
    pub fn quant(&self) -> WeightQuant {
        self.quant.clone()
    }

    /// The quantized weights built so far (drains the registry).
    pub fn take_handles(&self) -> Vec<QuantHandle> {
        std::mem::take(&mut *self.handles.borrow_mut())
    }

    fn selects(&self, spec: &LinearSpec) -> bool {
        match spec.role {
            LinearRole::LmHead if spec.tied.is_some() => self.embeddings,
            LinearRole::LmHead => self.lm_head,
            r if r.is_attention() => self.attention,
            r if r.is_mlp() => self.mlp,
            _ => false,
        }
    }

    fn check(&self, p: &nn::Path, out_dim: i64, in_dim: i64) -> Result<(), ModelError> {
        self.quant
            .check_shape(out_dim, in_dim)
            .map_err(|m| ModelError::Unsupported(format!("{}: {m}", p.path("weight"))))
    }

    fn alpha_var(&self, p: &nn::Path, out_dim: i64, in_dim: i64) -> Result<Option<Tensor>, ModelError> {
        if !self.quant.learned_scale() {
            return Ok(None);
        }
        let shape = self.quant.scale_shape(out_dim, in_dim);
        let a = p.f_var(ALPHA_NAME, &shape, Init::Const(1.0))?;
        self.extra.borrow_mut().push(p.path(ALPHA_NAME));
        Ok(Some(a))
    }
}

impl LinearBuilder for QuantBuilder {
    fn linear(&self, p: &nn::Path, spec: LinearSpec) -> Result<Box<dyn Linear>, ModelError> {
        if !self.selects(&spec) {
            return Ok(Box::new(PlainLinear::new(p, spec)?));
        }
        let (out_dim, in_dim) = (spec.out_dim, spec.in_dim);
        self.check(p, out_dim, in_dim)?;
        let tied = spec.tied.is_some();
        let plain = PlainLinear::new(p, spec)?;
        // A tied head shares the embedding's learned scale: only an untied head gets its own.
        let alpha = if tied {
            self.handles
                .borrow()
                .iter()
                .find(|h| h.name.ends_with("embed_tokens.weight"))
                .and_then(|h| h.alpha.as_ref().map(Tensor::shallow_clone))
        } else {
            self.alpha_var(p, out_dim, in_dim)?
        };
        let dz_scale = match self.deadzone {
            Some(init) => {
                let v = p.f_var(DZ_NAME, &[1], Init::Const(init))?;
                self.extra.borrow_mut().push(p.path(DZ_NAME));
                Some(v)
            }
            None => None,
        };
        if !tied {
            self.handles.borrow_mut().push(QuantHandle {
                name: p.path("weight"),
                weight: plain.weight.shallow_clone(),
                alpha: alpha.as_ref().map(Tensor::shallow_clone),
                dz_scale: dz_scale.as_ref().map(Tensor::shallow_clone),
                quant: self.quant.clone(),
            });
        }
        Ok(Box::new(BitLinear {
            weight: plain.weight,
            bias: plain.bias,
            alpha,
            dz_scale,
            quant: self.quant.clone(),
            act_gran: self.act_gran,
            state: self.state.clone(),
        }))
    }

    fn embedding(&self, p: &nn::Path, vocab: i64, dim: i64) -> Result<Box<dyn Embedding>, ModelError> {
        let plain = PlainEmbedding::new(p, vocab, dim)?;
        if !self.embeddings {
            return Ok(Box::new(plain));
        }
        self.check(p, vocab, dim)?;
        let alpha = self.alpha_var(p, vocab, dim)?;
        self.handles.borrow_mut().push(QuantHandle {
            name: p.path("weight"),
            weight: plain.weight.shallow_clone(),
            alpha: alpha.as_ref().map(Tensor::shallow_clone),
            dz_scale: None,
            quant: self.quant.clone(),
        });
        Ok(Box::new(BitEmbedding { weight: plain.weight, alpha, quant: self.quant.clone(), state: self.state.clone() }))
    }

    fn is_extra_var(&self, name: &str) -> bool {
        self.extra.borrow().iter().any(|n| n == name)
    }
}

/// Sets every learned scale from its (loaded) weight; call once after loading the checkpoint.
pub fn init_learned_scales(handles: &[QuantHandle]) {
    tch::no_grad(|| {
        for h in handles {
            if let Some(a) = &h.alpha {
                let init = h.quant.init_learned_scale(&h.weight);
                let mut a = a.shallow_clone();
                a.copy_(&init);
            }
        }
    });
}

/// Fractions of codes -1, 0 and +1 over every quantized weight (they sum to 1).
pub fn code_fractions(handles: &[QuantHandle]) -> [f64; 3] {
    let mut counts = [0i64; 3];
    for h in handles {
        let c = h.quant.codes(&h.weight, h.alpha.as_ref());
        let k = super::weight::code_counts(&c.codes);
        for i in 0..3 {
            counts[i] += k[i];
        }
    }
    let n: i64 = counts.iter().sum();
    if n == 0 {
        return [0.0, 0.0, 0.0];
    }
    counts.map(|c| c as f64 / n as f64)
}
