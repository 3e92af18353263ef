"""Benchmark (not a test): host memory of loading an autoqat artifact the way the track's
validator does (`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True,
local_files_only=True, low_cpu_mem_usage=True, torch_dtype=...)`), in float32 and float16, against
the bound the reader is meant to keep: the dense model in the requested dtype, plus the packed
weights file, plus one unpacked matrix in float32.

    source scripts/env.sh && cargo build --bin autoqat
    $AUTOQAT_PYTHON benches/loader_memory.py [--bin target/debug/autoqat]

It builds a random checkpoint of the SmolLM-135M shape, compresses it to the ternary budget
(row-MSE sensitivity: no backward pass, so the setup is quick), then loads the artifact in a
fresh process per dtype and reads that process's peak RSS (`ru_maxrss`) after subtracting the
same process's RSS once torch, transformers and the artifact's module are imported (the
runtime, not the model).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

LOAD = r"""
import json, resource, sys, torch, transformers
from transformers import AutoModelForCausalLM
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) * 1024
# The runtime: torch, transformers and the artifact's own module (imported with its config).
transformers.AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True, local_files_only=True)
base = rss()
dtype = getattr(torch, sys.argv[2])
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True, local_files_only=True,
                                         low_cpu_mem_usage=True, torch_dtype=dtype).to("cpu")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
dense = sum(p.numel() * p.element_size() for p in m.parameters())
biggest = max(p.numel() for p in m.parameters()) * 4
print(json.dumps({"base": base, "peak": peak, "dense": dense, "biggest_f32": biggest}))
"""


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--bin", default=os.path.join(root, "target/debug/autoqat"))
    ap.add_argument("--text", default=os.path.join(os.environ.get("AUTOQAT_DATA", "."), "wikitext-2-raw-test.txt"))
    args = ap.parse_args()
    from autoqat_ref.tiny import tiny_checkpoint

    with open(args.text, encoding="utf-8") as f:
        text = f.read()[:200_000]
    with tempfile.TemporaryDirectory() as d:
        d = os.environ.get("KEEP_DIR", d)
        os.makedirs(d, exist_ok=True)
        src = os.path.join(d, "model")
        tiny_checkpoint(src, text, 2048, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                        num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
                        max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0)
        lines = [l for l in text.splitlines() if l.strip()]
        for name, part in [("calib.txt", lines[:360]), ("eval.txt", lines[360:400])]:
            with open(os.path.join(d, name), "w", encoding="utf-8") as f:
                f.write("\n".join(part) + "\n")
        recipe = os.path.join(d, "c.toml")
        with open(recipe, "w") as f:
            f.write(f'[model]\nsource = "{src}"\ndevice = "cpu"\n[budget]\ntrack = "ternary"\n'
                    f'[calibration]\ntext = "{d}/calib.txt"\ntokens = 2048\nseq_len = 256\n'
                    f'[allocate]\nsensitivity = "mse"\n[eval]\ntext = "{d}/eval.txt"\ndoc_tokens = 128\n')
        run = os.path.join(d, "run")
        out = subprocess.run([args.bin, "compress", "--config", recipe, "--run-dir", run, "--no-verify", "--json"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"autoqat compress failed: {out.stderr.strip()}")
        art = os.path.join(run, "artifact")
        packed = os.path.getsize(os.path.join(art, "model.safetensors"))
        print(f"artifact: {packed / 2**20:.1f} MiB of weights")
        for dtype in ["float32", "float16"]:
            out = subprocess.run([sys.executable, "-c", LOAD, art, dtype], check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            model_peak = r["peak"] - r["base"]
            bound = r["dense"] + packed + r["biggest_f32"]
            print(f"{dtype:8s} peak RSS over the runtime {model_peak / 2**20:7.1f} MiB; dense {r['dense'] / 2**20:7.1f} MiB "
                  f"+ packed {packed / 2**20:5.1f} + one f32 matrix {r['biggest_f32'] / 2**20:5.1f} = bound "
                  f"{bound / 2**20:7.1f} MiB; ratio {model_peak / bound:.2f}")


if __name__ == "__main__":
    main()
