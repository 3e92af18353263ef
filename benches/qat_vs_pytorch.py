"""QAT training throughput and peak memory: `autoqat trial` vs a PyTorch-eager implementation
of the same recipe (ternary absmean per-row BitLinear in attention + MLP, lambda = 1, AdamW,
grad clip 1.0, CE loss, fp32), same model shape, batch, sequence length and data, on the CPU or
on CUDA.

    source scripts/env.sh && cargo build && \
    $AUTOQAT_PYTHON benches/qat_vs_pytorch.py [--configs tiny,smollm] [--steps N] [--bin PATH] [--device cuda]

Each side runs in its own process. Memory on the CPU is that process's peak RSS; on CUDA it is the
device memory in use at the end above what was in use once the context existed (cudaMemGetInfo on
both sides; PyTorch's caching allocator keeps what it reserved, so the end is the high-water
mark), and the PyTorch side also prints `max_memory_reserved` as a check. Tokens/s is batch * seq
/ the median step time, steps after the first (the first pays for allocation warm-up; the
median resists other processes on a shared machine); evals are excluded. On CUDA each PyTorch
step ends in a synchronize, as autoqat's does when it reads the gradient norm. Prints one line
per config with the ratio autoqat / PyTorch.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
CONFIGS = {
    # name: (model shape, batch, seq)
    "tiny": (dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=2048), 8, 128),
    "smollm": (dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152), 4, 128),
}


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def make_model(out, shape, text):
    # Imported here: the PyTorch side's process must not pay for modules it does not use.
    from autoqat_ref.tiny import tiny_checkpoint

    tiny_checkpoint(out, text, tokenizer_vocab=1024, **shape, max_position_embeddings=2048, rms_norm_eps=1e-5,
                    tie_word_embeddings=True, rope_theta=10000.0, save_kwargs=dict(safe_serialization=True))


def pytorch_side(model_dir, text_path, batch, seq, steps, out_json, device):
    """The same recipe in plain PyTorch eager (runs in a child process)."""
    import torch
    import torch.nn.functional as F
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    cuda = device.startswith("cuda")
    torch.manual_seed(0)
    if cuda:
        free, total = torch.cuda.mem_get_info(device)
        base = total - free
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    model.train()

    def bitlinear_forward(self, x):
        w = self.weight
        scale = 1.0 / w.abs().mean(dim=-1, keepdim=True).clamp(min=1e-5)
        q = (w * scale).round().clamp(-1, 1) / scale
        w = w + 1.0 * (q - w).detach()
        return F.linear(x, w, self.bias)

    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    for name, mod in model.named_modules():
        if name.split(".")[-1] in names:
            mod.forward = bitlinear_forward.__get__(mod)
    ids = torch.tensor(Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json")).encode(
        open(text_path, encoding="utf-8").read()).ids)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=g)
        b = torch.stack([ids[s:s + seq + 1] for s in starts]).to(device)
        opt.zero_grad(set_to_none=True)
        logits = model(b[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), b[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter())
    tps = batch * seq / median([b - a for a, b in zip(times, times[1:])])
    out = {"tokens_per_s": tps, "loss": float(loss.detach())}
    if cuda:
        free, total = torch.cuda.mem_get_info(device)
        out["peak_mb"] = (total - free - base) / 2**20
        out["max_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    else:
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump(out, open(out_json, "w"))


def trial_recipe(model_dir, text_path, batch, seq, steps, device, precision="fp32", lr=1e-4, eval_tokens=None):
    """The benches' QAT recipe: ternary absmean per row in attention and MLP, lambda = 1, AdamW at
    a constant `lr`, grad clip 1.0, one eval at the end (`scripts/gpu-check` runs it too)."""
    return f"""
[model]
source = "{model_dir}"
[data]
train_text = "{text_path}"
eval_text = "{text_path}"
seq_len = {seq}
eval_ctx = {seq}
eval_stride = {seq}
eval_max_tokens = {eval_tokens or seq * 2}
[budget]
steps = {steps}
eval_every = {steps}
checkpoint_every = 0
[quant]
method = "ternary_absmean"
granularity = "per_row"
[ste]
lambda_schedule = "constant"
[optim]
lr = {lr}
lr_schedule = "constant"
lr_warmup_frac = 0.0
batch_size = {batch}
grad_clip = 1.0
[distill]
enabled = false
[runtime]
device = "{device}"
precision = "{precision}"
"""


def autoqat_side(binary, model_dir, text_path, batch, seq, steps, work, device):
    recipe = trial_recipe(model_dir, text_path, batch, seq, steps, device)
    path = os.path.join(work, "bench.toml")
    open(path, "w").write(recipe)
    run = os.path.join(work, "run")
    subprocess.run([binary, "trial", "--config", path, "--run-dir", run], check=True, stdout=subprocess.DEVNULL)
    log = open(os.path.join(run, "trial.log")).read()
    t = [float(x) for x in re.findall(r"^timing step \d+ wall_s ([0-9.]+)$", log, re.M)]
    summary = json.load(open(os.path.join(run, "summary.json")))
    return {"tokens_per_s": batch * seq / median([b - a for a, b in zip(t, t[1:])]), "peak_mb": summary["peak_mem_mb"],
            "loss": summary["train_loss"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="tiny,smollm")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                                                  "debug", "autoqat"))
    ap.add_argument("--text", default=os.path.join(os.environ.get("AUTOQAT_DATA", "."), "tinystories-valid-sample.txt"))
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--_pytorch", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._pytorch:
        d, text, batch, seq, out = a._pytorch
        pytorch_side(d, text, int(batch), int(seq), a.steps, out, a.device)
        return
    import torch
    where = torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {a.device} ({where})")
    for name in a.configs.split(","):
        shape, batch, seq = CONFIGS[name]
        with tempfile.TemporaryDirectory() as work:
            model_dir = os.path.join(work, "model")
            os.makedirs(model_dir)
            make_model(model_dir, shape, open(a.text, encoding="utf-8").read())
            ours = autoqat_side(a.bin, model_dir, a.text, batch, seq, a.steps, work, a.device)
            out = os.path.join(work, "pt.json")
            subprocess.run([sys.executable, __file__, "--steps", str(a.steps), "--device", a.device, "--_pytorch",
                            model_dir, a.text, str(batch), str(seq), out], check=True)
            pt = json.load(open(out))
        print(f"{name:7s} batch {batch} seq {seq} steps {a.steps}: "
              f"autoqat {ours['tokens_per_s']:8.1f} tok/s {ours['peak_mb']:7.0f} MB | "
              f"pytorch {pt['tokens_per_s']:8.1f} tok/s {pt['peak_mb']:7.0f} MB | "
              f"speed ratio {ours['tokens_per_s'] / pt['tokens_per_s']:.2f}x, "
              f"memory ratio {ours['peak_mb'] / pt['peak_mb']:.2f}x"
              + (f" (pytorch max_memory_reserved {pt['max_reserved_mb']:.0f} MB)" if "max_reserved_mb" in pt else ""),
              flush=True)


if __name__ == "__main__":
    main()
