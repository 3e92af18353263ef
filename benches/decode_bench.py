"""Benchmark (not a test): CPU decode speed of ternary models on autoqat's packed low-bit kernels
(`autoqat bench-decode --kernel auto`) against the dense reference of the same weights
(`--kernel dense`: dequantized f32 through libtorch), at 1 and 2 threads, each kernel model both
with its one-token steps on host buffers (the default) and as libtorch ops between the products
(`--libtorch-step`). Prints tokens/s, the ratio to dense and the share of the memory-bandwidth limit each run reaches (weight bytes
read per token / measured bandwidth).

    source scripts/env.sh && cargo build --release --locked --bin autoqat
    $AUTOQAT_PYTHON benches/decode_bench.py [--bin target/release/autoqat] [--config smollm135m]

Everything is built offline here: a random checkpoint of the SmolLM2-135M shape (transformers),
then from it, in this script (no training, so it takes seconds):
- a packed student export (`quant.json` + `W.codes`/`W.scales`, the format `autoqat trial`
  writes): every projection ternary absmean per row, 8-bit per-token activations (A8), so
  the kernels run int8 x ternary;
- a compression artifact (the `autoqat-rowmix-1` format `autoqat compress` writes): every
  projection ternary (TWN rows, 5 trits a byte), the kernels run f32 x ternary.
The tied embedding / lm_head stays dense f32 in both (as `autoqat trial` and `autoqat compress`
leave it), so its 113 MB are read every token by both paths.

Runs take turns (dense, kernels, dense, ...), `--repeats` each; the best run counts. On a shared
two-core machine the numbers are noisy: read the ratios, not the absolute figures.

llama.cpp: the `llama-cpp-python` wheel in .venv ships libllama but neither
`convert_hf_to_gguf.py` nor `llama-quantize`, so no TQ2_0 comparison is made here.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
from autoqat_ref.tiny import tiny_checkpoint  # noqa: E402

CONFIGS = {
    # The SmolLM2-135M shape, random weights.
    "smollm135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                       num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048,
                       tie_word_embeddings=True),
    # A small one for a quick check of the script.
    "tiny": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=2048, max_position_embeddings=512, tie_word_embeddings=True),
}

TEXT = ("the old lighthouse keeper climbed the spiral stairs every evening to light the lamp and "
        "ships passing in the night relied on its steady beam to find their way around the coast\n") * 200

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def is_proj(name):
    return name.endswith(".weight") and any(f".{p}." in name for p in PROJ)


def write_student(src, out, state, config):
    """A packed export: ternary absmean per row (BitNet), codes + 1 four to a byte, A8 per token."""
    os.makedirs(out, exist_ok=True)
    tensors, packed = {}, []
    for name, w in state.items():
        if not is_proj(name):
            tensors[name] = w.float().contiguous()
            continue
        w = w.float()
        inv = 1.0 / w.abs().mean(-1, keepdim=True).clamp_min(1e-5)
        codes = (w * inv).round().clamp(-1, 1)
        digits = (codes.flatten().to(torch.int64) + 1).view(-1, 4)
        tensors[name + ".codes"] = (digits[:, 0] + 4 * digits[:, 1] + 16 * digits[:, 2] + 64 * digits[:, 3]).to(
            torch.uint8)
        tensors[name + ".scales"] = (1.0 / inv).to(torch.float16).view(w.shape[0], 1, 1)
        packed.append([name, list(w.shape)])
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    quant = dict(format="autoqat-packed-v1", method="ternary_absmean", granularity="per_row", packed=packed,
                 folded_biases=[], act_bits=8, act_granularity="per_token")
    with open(os.path.join(out, "quant.json"), "w") as f:
        json.dump(quant, f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    os.link(os.path.join(src, "tokenizer.json"), os.path.join(out, "tokenizer.json"))


def write_artifact(src, out, state, config):
    """A rowmix artifact with every projection row ternary (TWN, as crates/compress/src/rows.rs)."""
    os.makedirs(out, exist_ok=True)
    tensors = {}
    for name, w in state.items():
        if not is_proj(name):
            tensors[name] = w.to(torch.float16).contiguous()
            continue
        w = w.float()
        prefix = name[: -len(".weight")]
        rows, cols = w.shape
        a = w.abs()
        keep = (a > a.mean(-1, keepdim=True) * 0.7).float()
        scale = ((a * keep).sum(-1, keepdim=True) / keep.sum(-1, keepdim=True).clamp_min(1)).to(torch.float16)
        codes = (w.sign() * keep).to(torch.int64) + 1
        nbytes = (cols + 4) // 5
        codes = torch.nn.functional.pad(codes, (0, nbytes * 5 - cols), value=1).view(rows, nbytes, 5)
        pows = torch.tensor([1, 3, 9, 27, 81])
        tensors[prefix + ".ternary.codes"] = (codes * pows).sum(-1).to(torch.uint8)
        tensors[prefix + ".ternary.scales"] = scale
        # Row kind code 1 (ternary) for every row, four 2-bit codes a byte.
        tensors[prefix + ".row_kind"] = torch.full(((rows + 3) // 4,), 0b01010101, dtype=torch.uint8)
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    cfg = dict(config, autoqat=dict(format="autoqat-rowmix-1", track="bench"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    os.link(os.path.join(src, "tokenizer.json"), os.path.join(out, "tokenizer.json"))


def bandwidth_gbs(threads):
    """Read bandwidth in GB/s at `threads` threads: the best of a few sums over 512 MB (torch's
    sum is vectorized and splits over its threads; one thread's numpy sum read 16-24 GB/s here
    where two threads read about 30, so a 2-thread decode must be held to the 2-thread figure)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    a = torch.ones(128 << 20, dtype=torch.float32)
    best = 0.0
    for _ in range(7):
        t0 = time.perf_counter()
        a.sum()
        best = max(best, a.numel() * 4 / (time.perf_counter() - t0))
    torch.set_num_threads(old)
    return best / 1e9


def bench(binary, model, kernel, threads, args, extra=()):
    cmd = [binary, "bench-decode", model, "--kernel", kernel, "--threads", str(threads),
           "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens), "--json", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--bin", default=os.path.join(root, "target/release/autoqat"))
    ap.add_argument("--config", default="smollm135m", choices=sorted(CONFIGS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--keep", help="build the models in this directory and keep them (for profiling)")
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        sys.exit(f"no autoqat binary at {args.bin}; build it with `cargo build --release --locked --bin autoqat`")
    thread_counts = [int(t) for t in args.threads.split(",")]
    bws = {t: bandwidth_gbs(t) for t in thread_counts}
    print("read bandwidth (torch sum over 512 MB): "
          + ", ".join(f"{bw:.1f} GB/s at {t} thread(s)" for t, bw in bws.items()) + f"; torch {torch.__version__}")
    with (contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory()) as d:
        src = os.path.join(d, "dense")
        spec = dict(CONFIGS[args.config])
        _, model = tiny_checkpoint(src, TEXT, 1024, special_tokens=(), **spec, rms_norm_eps=1e-5, rope_theta=10000.0)
        with open(os.path.join(src, "config.json")) as f:
            config = json.load(f)
        state = {k: v.detach() for k, v in model.state_dict().items()}
        if config.get("tie_word_embeddings"):
            state.pop("lm_head.weight", None)
        params = sum(v.numel() for v in state.values())
        print(f"model: {args.config} shape, {params / 1e6:.1f}M parameters, random weights")
        models = {"student W1.58A8": os.path.join(d, "student"), "artifact W1.58 (f32 acts)": os.path.join(d, "artifact")}
        write_student(src, models["student W1.58A8"], state, config)
        write_artifact(src, models["artifact W1.58 (f32 acts)"], state, config)
        # The dense reference, the kernels with libtorch ops between the products, and the
        # kernels with the host decode step (the default).
        variants = {"dense": ("dense", ()), "libtorch": ("auto", ("--libtorch-step",)), "host": ("auto", ())}
        print(f"{'model':27s} {'thr':>3s} {'step':>8s} {'path':>12s} {'prefill tok/s':>13s} "
              f"{'decode tok/s':>12s} {'ratio':>6s} {'weights MiB':>11s} {'rss MiB':>8s} {'% of BW limit':>13s}  first ids")
        for label, path in models.items():
            for threads in thread_counts:
                runs = {v: [] for v in variants}
                for _ in range(args.repeats):
                    for v, (kernel, extra) in variants.items():
                        runs[v].append(bench(args.bin, path, kernel, threads, args, extra))
                best = {k: max(v, key=lambda r: r["decode_tokens_per_s"]) for k, v in runs.items()}
                for v in variants:
                    r = best[v]
                    ratio = r["decode_tokens_per_s"] / best["dense"]["decode_tokens_per_s"]
                    # Every weight byte is read once per decoded token (the tied embedding is
                    # the lm_head); the embedding lookup itself reads one row.
                    limit = bws[threads] * 1e9 / r["weight_bytes"]
                    same = "same" if r["first_ids"] == best["dense"]["first_ids"] else "DIFFER"
                    print(f"{label:27s} {threads:3d} {v:>8s} {r['kernel_path']:>12s} "
                          f"{r['prefill_tokens_per_s']:13.1f} {r['decode_tokens_per_s']:12.2f} {ratio:6.2f} "
                          f"{r['weight_bytes'] / 2**20:11.1f} {r['peak_rss_bytes'] / 2**20:8.0f} "
                          f"{100 * r['decode_tokens_per_s'] / limit:12.1f}%  {r['first_ids'][:6]} ({same})")


if __name__ == "__main__":
    main()
