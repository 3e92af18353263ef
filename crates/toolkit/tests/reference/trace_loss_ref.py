"""The trace losses of docs/contracts.md#the-distillation-traces-track in plain PyTorch, row by row, in float64, for
crates/toolkit/tests/trace_loss.rs:

    python trace_loss_ref.py INPUTS.safetensors OUT.safetensors TAU

the KL between the teacher's Top-K+Other buckets and the student's at temperature TAU (times
TAU^2, averaged over valid rows), the cross entropy on the sampled token, and the format loss
(the same cross entropy on structural tokens only), each with its gradient with respect to the
student logits.
"""

import sys

import torch
from safetensors.torch import load_file, save_file


def loss(inp, out, tau):
    t = load_file(inp)
    logits = t["logits"].double().requires_grad_(True)
    ids, lps, mask = t["topk_ids"].long(), t["topk_logprobs"].double(), t["topk_mask"].bool()
    other, sample = t["other_logprob"].double(), t["sample"].long()
    valid, struct = t["valid"].double(), t["is_struct"].double()
    n_valid = valid.sum().clamp(min=1.0)

    def kl():
        total = torch.zeros((), dtype=torch.float64)
        q_all = torch.softmax(logits / tau, dim=-1)
        for r in range(logits.shape[0]):
            if valid[r] == 0:
                continue
            k = mask[r]
            # Teacher buckets: its Top-K and Other at temperature 1, tempered together.
            p = torch.softmax(torch.cat([lps[r][k], other[r:r + 1]]) / tau, dim=0)
            q_k = q_all[r][ids[r][k]]
            q = torch.cat([q_k, (1.0 - q_k.sum()).clamp(min=1e-12).reshape(1)])
            total = total + (p * (p.log() - q.log())).sum()
        return total / n_valid * tau * tau

    def ce(weight):
        per = torch.nn.functional.cross_entropy(logits, sample, reduction="none")
        return (per * weight).sum() / n_valid

    res = {}
    for name, fn in [("kl", kl), ("ce", lambda: ce(valid)), ("format", lambda: ce(valid * struct))]:
        if logits.grad is not None:
            logits.grad = None
        v = fn()
        v.backward()
        res[name] = v.detach().float().reshape(1)
        res[name + "_grad"] = logits.grad.detach().float().clone()
    save_file(res, out)




if __name__ == "__main__":
    loss(sys.argv[1], sys.argv[2], float(sys.argv[3]))
