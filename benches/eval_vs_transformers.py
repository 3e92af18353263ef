"""Benchmark (not a test): eval tokens/s of `autoqat eval` against Hugging Face transformers
running the "Perplexity of fixed-length models" guide loop, on the same random-weight
checkpoint, text, ctx and stride. Prints one line per config with the ratio autoqat/transformers.
`qwen3_5_100m` is a Qwen3.5 hybrid of about 100M parameters (Gated DeltaNet in three layers of
four); transformers runs its plain-PyTorch fallbacks there, as on any machine without
flash-linear-attention.

    source scripts/env.sh && cargo build --release --bin autoqat
    $AUTOQAT_PYTHON benches/eval_vs_transformers.py [--bin target/release/autoqat] [--configs tiny,smollm135m]

Both sides run on the same device (`--device`, the CPU by default) with the same torch threads; timing excludes loading and
tokenization on both sides (autoqat's `tokens_per_s` covers forward passes and loss only, and the
Python timer wraps only the guide loop). The two sides take turns, `--repeats` runs each; the
best run of each side counts, and the spread of the per-pair ratios is printed with it.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
from autoqat_ref.tiny import guide_loop, tiny_checkpoint  # noqa: E402

CONFIGS = {
    # A tiny Llama like the offline demo's teacher.
    "tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=2048, max_position_embeddings=512,
                 tie_word_embeddings=True, ctx=256, chars=120_000),
    # The SmolLM-135M shape, random weights.
    "smollm135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                       num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048,
                       tie_word_embeddings=True, ctx=512, chars=24_000),
    # A Qwen3.5 hybrid of about 100M parameters: three Gated DeltaNet layers, then one gated
    # full-attention layer, repeated.
    "qwen3_5_100m": dict(arch="qwen3_5", hidden_size=512, intermediate_size=1536, num_hidden_layers=12,
                         num_attention_heads=8, num_key_value_heads=2, head_dim=64, linear_num_key_heads=4,
                         linear_num_value_heads=8, linear_key_head_dim=64, linear_value_head_dim=64,
                         vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=False,
                         ctx=512, chars=24_000),
}


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--bin", default=os.path.join(root, "target/release/autoqat"))
    ap.add_argument("--text", default=os.path.join(os.environ.get("AUTOQAT_DATA", "."), "wikitext-2-raw-test.txt"))
    ap.add_argument("--configs", default="tiny,smollm135m")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        sys.exit(f"no autoqat binary at {args.bin}; build it with `cargo build --release --bin autoqat`")
    with open(args.text, encoding="utf-8") as f:
        full_text = f.read()
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device} ({where})")
    for name in args.configs.split(","):
        spec = dict(CONFIGS[name])
        ctx, chars, arch = spec.pop("ctx"), spec.pop("chars"), spec.pop("arch", "llama")
        text = full_text[:chars]
        with tempfile.TemporaryDirectory() as d:
            tok, model = tiny_checkpoint(d, text, min(spec["vocab_size"], 2048), arch=arch, special_tokens=(),
                                         **spec, rms_norm_eps=1e-5, rope_theta=10000.0)
            model.eval().to(args.device)
            txt = os.path.join(d, "text.txt")
            with open(txt, "w", encoding="utf-8") as f:
                f.write(text)
            ids = torch.tensor([tok.encode(text).ids], device=args.device)

            # Interleaved (hf, autoqat, hf, autoqat, ...) so that a slow spell of a shared
            # machine hits both sides; the best run of each side counts.
            hf_runs, aq_runs, hf_loss, aq = [], [], None, None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                hf_loss, n = guide_loop(model, ids, ctx, ctx)
                hf_runs.append(n / (time.perf_counter() - t0))
                out = subprocess.run([args.bin, "eval", "--model", d, "--text", txt, "--ctx", str(ctx),
                                      "--device", args.device, "--json"], capture_output=True, text=True, check=True)
                aq = json.loads(out.stdout)
                aq_runs.append(aq["tokens_per_s"])
            hf_best, aq_best = max(hf_runs), max(aq_runs)
            pairs = sorted(a / h for a, h in zip(aq_runs, hf_runs))
            params = sum(p.numel() for p in model.parameters())
            print(f"{name:11s} {params / 1e6:5.1f}M ctx {ctx:4d} tokens {n:6d}  transformers {hf_best:9.1f} tok/s  "
                  f"autoqat {aq_best:9.1f} tok/s  ratio {aq_best / hf_best:5.2f}  "
                  f"(per-pair ratios {pairs[0]:.2f}..{pairs[-1]:.2f}; "
                  f"ppl {math.exp(hf_loss):.4f} vs {aq['eval_ppl']:.4f})")

if __name__ == "__main__":
    main()
