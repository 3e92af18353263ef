//! Activation fake-quantization: symmetric absmax to 8 or 4 bits, per token or per channel,
//! with a straight-through gradient (BitNet's `activation_quant`).

use autoqat_recipe::ActGranularity;
use tch::Tensor;

/// `x` quantized to `bits` and dequantized; the backward pass is the identity.
pub fn act_quant(x: &Tensor, bits: u32, gran: ActGranularity) -> Tensor {
    let q = act_quant_values(x, bits, gran);
    x + (q - x).detach()
}

/// The forward values of [`act_quant`] (no gradient).
pub fn act_quant_values(x: &Tensor, bits: u32, gran: ActGranularity) -> Tensor {
    tch::no_grad(|| {
        let qmax = ((1i64 << (bits - 1)) - 1) as f64;
        let amax = match gran {
            ActGranularity::PerToken => x.abs().amax(-1, true),
            ActGranularity::PerChannel => {
                let dims: Vec<i64> = (0..x.dim() as i64 - 1).collect();
                x.abs().amax(dims.as_slice(), true)
            }
        };
        let scale = amax.clamp_min(1e-5).reciprocal() * qmax;
        (x * &scale).round().clamp(-qmax - 1.0, qmax) / scale
    })
}
