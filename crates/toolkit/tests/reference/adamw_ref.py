"""torch.optim.AdamW on given parameters and per-step gradients.

    python adamw_ref.py IN.safetensors OUT.safetensors

IN holds p0, p1 (initial values), g{step}_{i} (gradients), and lrs (one lr per step);
weight decay 0.1 applies to the 2-D p0 only, as in autoqat's parameter groups.
"""
import sys

import torch
from safetensors.torch import load_file, save_file

d = load_file(sys.argv[1])
p0 = d["p0"].clone().requires_grad_(True)
p1 = d["p1"].clone().requires_grad_(True)
opt = torch.optim.AdamW([{"params": [p0], "weight_decay": 0.1}, {"params": [p1], "weight_decay": 0.0}],
                        lr=1.0, betas=(0.9, 0.95), eps=1e-8, foreach=False)
for s, lr in enumerate(d["lrs"].tolist()):
    for group in opt.param_groups:
        group["lr"] = lr
    p0.grad = d[f"g{s}_0"].clone()
    p1.grad = d[f"g{s}_1"].clone()
    opt.step()
save_file({"p0": p0.detach(), "p1": p1.detach()}, sys.argv[2])
