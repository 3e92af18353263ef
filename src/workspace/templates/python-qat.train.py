"""train.py: ternary quantization-aware training, the file the research loop edits.

Plain PyTorch + transformers. Every linear layer of the decoder blocks becomes a BitLinear:
weights quantized to {-1, 0, +1} times one absmean scale per output row (BitNet b1.58),
trained through the straight-through blend w + lambda * (q(w) - w).detach() while lambda
warms up from 0 to 1, distilled from the frozen full-precision model. Data, budget and
evaluation come from prepare.py (read-only). Run: `autoqat python train.py --run-dir DIR`.
"""
import copy
import math
import sys

import prepare  # first: it says in one line when torch or transformers is missing

import torch
import torch.nn as nn
import torch.nn.functional as F

# Hyperparameters: the builtin search varies the constants declared in autoqat.toml's
# [[validator.fields]]; any proposer may change the code itself.
LR = 1e-3  # peak AdamW learning rate
LR_WARMUP_FRAC = 0.05  # fraction of the steps of linear lr warmup
MIN_LR_FRAC = 0.1  # cosine decay to this fraction of the peak
WEIGHT_DECAY = 0.0  # decoupled weight decay of the matrices
BETA1 = 0.9
BETA2 = 0.95
GRAD_CLIP = 1.0  # global gradient-norm clip (0 = off)
LAMBDA_WARMUP_FRAC = 0.2  # fraction of the steps over which lambda ramps from 0 to 1
KD_WEIGHT = 1.0  # weight of KL(teacher || student) at TEMPERATURE (0 = no teacher)
CE_WEIGHT = 0.5  # weight of the next-token cross entropy
TEMPERATURE = 2.0
SEED = 0


class BitLinear(nn.Linear):
    """nn.Linear with ternary absmean weights per output row, blended in by `lam`."""

    lam = 0.0

    def ternary(self):
        """The quantized weights q(w): codes in {-1, 0, +1} times the row's mean |w|."""
        w = self.weight
        scale = w.abs().mean(dim=1, keepdim=True).clamp(min=1e-8)
        return (w / scale).round().clamp(-1, 1) * scale

    def forward(self, x):
        w = self.weight
        w = w + self.lam * (self.ternary() - w).detach()
        return F.linear(x, w, self.bias)


def bitlinear_swap(model):
    """Every nn.Linear of the decoder blocks (attention and MLP projections) becomes a BitLinear
    sharing its parameters; embeddings and lm_head stay full precision."""
    swapped = []
    for layer in model.model.layers:
        for name, child in list(layer.named_modules()):
            if type(child) is nn.Linear:
                child.__class__ = BitLinear
                swapped.append(child)
    return swapped


def set_lambda(layers, lam):
    for m in layers:
        m.lam = lam


def lambda_at(step):
    """Linear warmup of lambda from 0 to 1 over LAMBDA_WARMUP_FRAC of the steps."""
    warm = LAMBDA_WARMUP_FRAC * prepare.STEPS
    return 1.0 if warm <= 0 else min(1.0, step / warm)


def lr_at(step):
    """Linear warmup, then cosine to MIN_LR_FRAC of the peak."""
    warm = max(1, round(LR_WARMUP_FRAC * prepare.STEPS))
    if step <= warm:
        return LR * step / warm
    t = (step - warm) / max(1, prepare.STEPS - warm)
    return LR * (MIN_LR_FRAC + (1 - MIN_LR_FRAC) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def code_fractions(layers):
    """Fractions of quantized weights at -1, 0 and +1."""
    counts, total = torch.zeros(3), 0
    for m in layers:
        w = m.weight
        codes = (w / w.abs().mean(dim=1, keepdim=True).clamp(min=1e-8)).round().clamp(-1, 1)
        counts += torch.stack([(codes == v).sum() for v in (-1, 0, 1)]).cpu().float()
        total += codes.numel()
    return tuple((counts / total).tolist())


def evaluate(layers, model):
    """prepare.py's evaluation of the fully quantized model (lambda = 1)."""
    lam = layers[0].lam
    set_lambda(layers, 1.0)
    ev = prepare.evaluate(model)
    set_lambda(layers, lam)
    return ev


def main(run_dir):
    run = prepare.Run(run_dir)
    torch.manual_seed(SEED)
    tok = prepare.tokenizer()
    model = prepare.load_model()
    fp_ppl = prepare.evaluate(model, tok=tok)["eval_ppl"]
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if KD_WEIGHT > 0 else None
    layers = bitlinear_swap(model)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}],
                            lr=LR, betas=(BETA1, BETA2))
    model.train()
    step, losses, ev, train_loss = 0, [], None, float("nan")
    for x, y in prepare.batches(SEED, tok):
        step += 1
        lam, lr = lambda_at(step), lr_at(step)
        set_lambda(layers, lam)
        for g in opt.param_groups:
            g["lr"] = lr
        logits = model(input_ids=x).logits
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        loss = CE_WEIGHT * ce
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(input_ids=x).logits
            kl = F.kl_div(F.log_softmax(logits / TEMPERATURE, -1), F.log_softmax(t_logits / TEMPERATURE, -1),
                          log_target=True, reduction="batchmean") / x.size(1)  # per token
            loss = loss + KD_WEIGHT * TEMPERATURE ** 2 * kl
        if not math.isfinite(loss.item()):
            run.summary("crash", fp_ppl=fp_ppl, error=f"loss is {loss.item()} at step {step}")
            sys.exit(f"crash: loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        losses.append(ce.item())
        if step % prepare.EVAL_EVERY == 0 or step == prepare.STEPS:
            train_loss = sum(losses) / len(losses)
            losses = []
            ev = evaluate(layers, model)
            run.row(step, lam, train_loss, ev, lr, code_fractions(layers))
            print(f"step {step:5d} lambda {lam:.3f} train_loss {train_loss:.4f} eval_ppl {ev['eval_ppl']:.4f}",
                  flush=True)
    if ev is None:
        ev = evaluate(layers, model)
    # The quantized weights as a plain Hugging Face model, for `autoqat eval` and the held-out score.
    state = model.state_dict()
    names = {m: n for n, m in model.named_modules()}
    with torch.no_grad():
        for m in layers:
            state[names[m] + ".weight"] = m.ternary().detach().clone()
    prepare.export(model, state, f"{run_dir}/hf")
    run.summary("ok", ev, train_loss=train_loss, q=code_fractions(layers), fp_ppl=fp_ppl)  # last: the trial is done
    print(f"eval_ppl: {ev['eval_ppl']:.6f}\neval_bpb: {ev['eval_bpb']:.6f}\nfp_ppl: {fp_ppl:.6f}\nsteps: {step}")


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--run-dir") + 1] if "--run-dir" in sys.argv else "runs/manual")
