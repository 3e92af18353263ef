//! AdamW written out in tensor ops, so that its state (moments and step) can be checkpointed
//! and restored exactly. Weight decay applies to matrices only, never to norms, learned
//! scales or biases.

use tch::{Kind, Tensor};

/// One trained tensor with its moments.
#[derive(Debug)]
pub struct Param {
    /// VarStore name.
    pub name: String,
    /// The variable.
    pub var: Tensor,
    /// First moment.
    pub m: Tensor,
    /// Second moment.
    pub v: Tensor,
    /// Whether weight decay applies.
    pub decay: bool,
}

/// Decoupled-weight-decay Adam (Loshchilov & Hutter), as `torch.optim.AdamW`.
#[derive(Debug)]
pub struct AdamW {
    /// The parameters.
    pub params: Vec<Param>,
    /// Steps taken (for bias correction).
    pub step: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

/// Whether a variable gets weight decay: 2-D weights, not the quantizers' own variables.
pub fn decays(name: &str, var: &Tensor) -> bool {
    var.dim() == 2 && !name.contains("qat_")
}

impl AdamW {
    /// An optimizer over `vars` (name, variable), sorted by name for a stable order.
    pub fn new(mut vars: Vec<(String, Tensor)>, beta1: f64, beta2: f64, weight_decay: f64) -> Self {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                let m = tch::no_grad(|| var.zeros_like().to_kind(Kind::Float));
                let v = tch::no_grad(|| var.zeros_like().to_kind(Kind::Float));
                let decay = decays(&name, &var);
                Param { name, var, m, v, decay }
            })
            .collect();
        Self { params, step: 0, beta1, beta2, eps: 1e-8, weight_decay }
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.var.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// Global L2 norm of the gradients (one host sync, no gradient-sized temporaries).
    pub fn grad_norm(&self) -> f64 {
        tch::no_grad(|| {
            let norms: Vec<Tensor> = self
                .params
                .iter()
                .map(|p| p.var.grad())
                .filter(|g| g.defined())
                .map(|g| g.norm().to_kind(Kind::Float))
                .collect();
            if norms.is_empty() {
                return 0.0;
            }
            Tensor::stack(&norms, 0).norm().double_value(&[])
        })
    }

    /// Scales every gradient by `factor` (gradient clipping, accumulation averaging).
    pub fn scale_grads(&mut self, factor: f64) {
        tch::no_grad(|| {
            for p in &self.params {
                let mut g = p.var.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(factor);
                }
            }
        })
    }

    /// The training step after the backward pass: clips the global gradient norm to `clip`
    /// (0: no clipping) and updates with `lr`. Returns the norm before clipping and whether it
    /// was clipped; a non-finite norm skips the update. Every trainer in autoqat steps through this (the trial, the demo teacher).
    pub fn clip_and_step(&mut self, lr: f64, clip: f64) -> (f64, bool) {
        let norm = self.grad_norm();
        // A NaN or infinite gradient must not reach the weights; the caller reports it.
        if !norm.is_finite() {
            return (norm, false);
        }
        let clipped = clip > 0.0 && norm > clip;
        if clipped {
            self.scale_grads(clip / (norm + 1e-6));
        }
        self.step(lr);
        (norm, clipped)
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        let step_size = lr / bc1;
        let bc2_sqrt = bc2.sqrt();
        tch::no_grad(|| {
            for p in &mut self.params {
                let g = p.var.grad();
                if !g.defined() {
                    continue;
                }
                let g = g.to_kind(Kind::Float);
                if p.decay && self.weight_decay > 0.0 {
                    let _ = p.var.g_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                let _ = p.m.lerp_(&g, 1.0 - b1);
                let _ = p.v.g_mul_scalar_(b2);
                let _ = p.v.addcmul_(&g, &g.g_mul_scalar(1.0 - b2));
                let mut denom = p.v.sqrt();
                let _ = denom.g_div_scalar_(bc2_sqrt);
                let _ = denom.g_add_scalar_(self.eps);
                let mut upd = p.m.g_div(&denom);
                let _ = upd.g_mul_scalar_(step_size);
                let _ = p.var.g_sub_(&upd.to_kind(p.var.kind()));
            }
        });
    }
}
