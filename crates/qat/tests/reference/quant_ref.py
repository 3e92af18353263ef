"""Plain-PyTorch reference for autoqat's quantizers, STE gradients and schedules.

Usage: quant_ref.py INPUTS.safetensors OUT.safetensors SCHED_OUT.json

Written from the papers' published code, independently of the Rust port:
- BitNet b1.58 `weight_quant` (absmean) and `activation_quant` (absmax, per token),
  extended to per-row / per-group views by reducing over the last axis of the grouped view;
- ParetoQ-style ternary with a learned step (LSQ gradient through a clipped STE round);
- learning-rate schedules taken straight from `transformers.optimization`.
"""
import json
import math
import sys

import torch
from safetensors.torch import load_file, save_file

GROUPS = {"per_tensor": None, "per_row": "row", "group64": 64, "group128": 128, "group256": 256}


def grouped(w, gran):
    o, i = w.shape
    if gran == "per_tensor":
        return w.reshape(1, 1, o * i)
    if gran == "per_row":
        return w.reshape(o, 1, i)
    n = GROUPS[gran]
    return w.reshape(o, i // n, n)


def absmean(g):
    return g.abs().mean(dim=-1, keepdim=True).clamp(min=1e-5)


def quantize(method, w, gran, t=0.5, alpha=None):
    g = grouped(w, gran)
    if method == "ternary_absmean":  # BitNet b1.58 weight_quant
        scale = 1.0 / absmean(g)
        q = (g * scale).round().clamp(-1, 1) / scale
    elif method == "ternary_absmax":
        scale = 1.0 / g.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
        q = (g * scale).round().clamp(-1, 1) / scale
    elif method == "ternary_deadzone":
        s = absmean(g)
        q = torch.sign(g) * (g.abs() > s * t).to(g.dtype) * s
    elif method == "binary_absmean":
        s = absmean(g)
        q = torch.where(g >= 0, torch.ones_like(g), -torch.ones_like(g)) * s
    elif method == "paretoq_stretched":
        x = (g * 1.5 / alpha).clamp(-1, 1)
        r = x + (x.round() - x).detach()
        q = r * (alpha * (2.0 / 3.0))
    else:
        raise ValueError(method)
    return q.reshape(w.shape)


def activation_quant(x, bits, gran):  # BitNet activation_quant, generalized
    qmax = 2 ** (bits - 1) - 1
    if gran == "per_token":
        amax = x.abs().amax(dim=-1, keepdim=True)
    else:
        amax = x.abs().amax(dim=tuple(range(x.dim() - 1)), keepdim=True)
    scale = qmax / amax.clamp(min=1e-5)
    y = (x * scale).round().clamp(-qmax - 1, qmax) / scale
    return x + (y - x).detach()


def main():
    inp = load_file(sys.argv[1])
    out = {}
    lam = float(inp["lambda"].item())
    t = float(inp["deadzone_t"].item())
    for key in [k for k in inp if k.startswith("w__")]:
        _, method, gran = key.split("__")
        w = inp[key].clone().requires_grad_(True)
        upstream = inp[f"g__{method}__{gran}"]
        if method == "paretoq_stretched":
            alpha = (1.5 * absmean(grouped(w.detach(), gran))).requires_grad_(True)
            q = quantize(method, w, gran, t, alpha)
            blended = w + (q - w) * lam
            (blended * upstream).sum().backward()
            out[f"galpha__{method}__{gran}"] = alpha.grad
        else:
            q = quantize(method, w, gran, t)
            blended = w + (q - w).detach() * lam
            (blended * upstream).sum().backward()
        out[f"q__{method}__{gran}"] = q.detach().contiguous()
        out[f"gw__{method}__{gran}"] = w.grad
    x0 = inp["x"]
    for bits in (8, 4):
        for gran in ("per_token", "per_channel"):
            x = x0.clone().requires_grad_(True)
            y = activation_quant(x, bits, gran)
            (y * inp["gx"]).sum().backward()
            out[f"a{bits}__{gran}"] = y.detach().contiguous()
            out[f"ga{bits}__{gran}"] = x.grad
    save_file(out, sys.argv[2])

    from transformers import optimization as O

    total, warm, decay, min_frac = 200, 20, 40, 0.1
    steps = [0, 1, 5, 19, 20, 21, 50, 99, 100, 150, 159, 160, 161, 180, 199]
    sched = {}
    sched["constant"] = [O._get_constant_schedule_with_warmup_lr_lambda(s, num_warmup_steps=warm) for s in steps]
    sched["cosine"] = [
        O._get_cosine_schedule_with_warmup_lr_lambda(
            s, num_warmup_steps=warm, num_training_steps=total, num_cycles=0.5, min_lr_rate=min_frac
        )
        for s in steps
    ]
    sched["wsd"] = [
        O._get_wsd_scheduler_lambda(
            s,
            num_warmup_steps=warm,
            num_stable_steps=total - warm - decay,
            num_decay_steps=decay,
            warmup_type="linear",
            decay_type="linear",
            min_lr_ratio=min_frac,
            num_cycles=0.5,
        )
        for s in steps
    ]
    # lambda ramps, written from their definitions (p = step / warmup, capped at 1)
    lw = 50
    sig = lambda z: 1 / (1 + math.exp(-z))
    ramps = {
        "constant": lambda p: 1.0,
        "linear": lambda p: p,
        "cosine": lambda p: 0.5 * (1 - math.cos(math.pi * p)),
        "exponential": lambda p: (1 - math.exp(-5 * p)) / (1 - math.exp(-5)),
        "step": lambda p: math.floor(p * 4) / 4,
        "sigmoid": lambda p: (sig(10 * (p - 0.5)) - sig(-5)) / (sig(5) - sig(-5)),
    }
    lam_steps = [0, 1, 10, 12, 13, 25, 37, 38, 49, 50, 51, 199]
    sched["lambda"] = {k: [f(min(s / lw, 1.0)) for s in lam_steps] for k, f in ramps.items()}
    sched["meta"] = {"total": total, "warmup": warm, "decay": decay, "min_frac": min_frac, "steps": steps,
                     "lambda_warmup": lw, "lambda_steps": lam_steps}
    with open(sys.argv[3], "w") as f:
        json.dump(sched, f)


if __name__ == "__main__":
    main()
