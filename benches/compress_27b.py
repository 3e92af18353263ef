"""Benchmark (not a test): `autoqat compress` at the live track's scale on this machine.

    source scripts/env.sh && cargo build --release --bin autoqat
    $AUTOQAT_PYTHON benches/compress_27b.py --work DIR [--layers 4] [--bin target/release/autoqat]

It writes a checkpoint with Qwen/Qwen3.6-27B's exact widths (hidden 5120, vocab 248,320, MLP
17,408, Gated DeltaNet 16 key and 48 value heads of 128, gated attention 24 query and 4 key/value
heads of 256, three linear layers then one full) but only `--layers` decoder layers, as the
released model ships it (the image-text wrapper's keys, bf16 shards of at most 4 GB with an
index), with random weights generated one tensor at a time. It then compresses it with the
ternary track's rules, row-MSE sensitivity (no backward pass) and decoder layers offloaded, and
reports the run's peak RSS and per-stage time from the summary, the artifact's bytes, and the
extrapolation to all 64 layers (per-layer bytes and seconds times 64, plus the embedding and
head): the artifact against the 27e9 * 2.2125 bit budget.

Last, the artifact is loaded through the transformers reader it ships, with the validator's
keyword arguments, in float16 on the CPU, and that process's peak RSS is reported against the
dense model in float16.
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from loader_memory import LOAD  # noqa: E402  (the validator-style load, measured in its own process)

LAYERS_27B = 64
TEXT = dict(hidden_size=5120, intermediate_size=17408, num_attention_heads=24, num_key_value_heads=4, head_dim=256,
            linear_num_key_heads=16, linear_num_value_heads=48, linear_key_head_dim=128, linear_value_head_dim=128,
            linear_conv_kernel_dim=4, vocab_size=248320, max_position_embeddings=262144, rms_norm_eps=1e-6,
            tie_word_embeddings=False, attn_output_gate=True, full_attention_interval=4,
            rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25})


def make_checkpoint(out, layers, text):
    """The wrapped checkpoint, tensor by tensor: names and shapes from transformers' own model
    built on the meta device (no memory), values drawn per tensor, shards of at most 4 GB."""
    from safetensors.torch import save_file
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    from autoqat_ref.tiny import byte_level_bpe

    kinds = ["linear_attention" if (i + 1) % 4 else "full_attention" for i in range(layers)]
    cfg = Qwen3_5TextConfig(**TEXT, num_hidden_layers=layers, layer_types=kinds)
    with torch.device("meta"):
        model = Qwen3_5ForCausalLM(cfg)
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    shard, shard_bytes, index, n = {}, 0, {}, 0

    def flush():
        nonlocal shard, shard_bytes, n
        if shard:
            n += 1
            name = f"model-{n:05d}.safetensors"
            save_file(shard, os.path.join(out, name), metadata={"format": "pt"})
            index.update({k: name for k in shard})
            shard, shard_bytes = {}, 0

    for name, p in model.named_parameters():
        # The released checkpoint's keys: the decoder under model.language_model.
        key = name.replace("model.", "model.language_model.", 1) if name.startswith("model.") else name
        if name.endswith("linear_attn.norm.weight"):
            t = torch.ones(p.shape)
        elif "norm" in name:
            t = 0.02 * torch.randn(p.shape, generator=g)  # scales by 1 + w
        elif "A_log" in name or "dt_bias" in name:
            t = 0.5 * torch.randn(p.shape, generator=g)
        else:
            fan_in = p.shape[-1] if p.dim() > 1 else 1
            t = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)
        t = t.to(torch.bfloat16)
        if shard_bytes + t.numel() * 2 > 4e9:
            flush()
        shard[key] = t
        shard_bytes += t.numel() * 2
    flush()
    names = sorted(set(index.values()))
    renamed = {}
    for i, old in enumerate(names, 1):
        new = f"model-{i:05d}-of-{len(names):05d}.safetensors"
        os.replace(os.path.join(out, old), os.path.join(out, new))
        renamed[old] = new
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": {k: renamed[v] for k, v in sorted(index.items())}}, f, indent=1)
    text_cfg = cfg.to_dict()
    text_cfg["model_type"] = "qwen3_5_text"
    wrapped = {"architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": "qwen3_5",
               "text_config": text_cfg, "tie_word_embeddings": False,
               "vision_config": {"depth": 1, "hidden_size": 32, "num_heads": 2, "out_hidden_size": 5120}}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(wrapped, f, indent=1)
    byte_level_bpe(text, 2048).save(os.path.join(out, "tokenizer.json"))
    return sum(p.numel() for p in model.parameters())




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "autoqat"))
    ap.add_argument("--text", default=os.path.join(os.environ.get("AUTOQAT_DATA", "."), "wikitext-2-raw-test.txt"))
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    with open(a.text, encoding="utf-8") as f:
        text = f.read()[:400_000]
    lines = [l for l in text.splitlines() if len(l.split()) > 20]
    calib, evals = os.path.join(a.work, "calib.txt"), os.path.join(a.work, "eval.txt")
    with open(calib, "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:400]) + "\n")
    with open(evals, "w", encoding="utf-8") as f:
        f.write("\n".join(lines[400:408]) + "\n")
    model = os.path.join(a.work, "qwen3.6-27b-shaped")
    t0 = time.time()
    if not os.path.exists(os.path.join(model, "config.json")):
        params = make_checkpoint(model, a.layers, text)
        print(f"checkpoint: {a.layers} layers, {params / 1e9:.2f}B parameters, written in {time.time() - t0:.0f} s",
              flush=True)
    recipe = os.path.join(a.work, "compress.toml")
    with open(recipe, "w") as f:
        f.write(f"""[model]
source = "{model}"
device = "cpu"
[budget]
track = "ternary"
[calibration]
text = "{calib}"
tokens = 2048
seq_len = 256
[allocate]
sensitivity = "mse"
[eval]
text = "{evals}"
doc_tokens = 128
batch = 1
max_docs = 8
""")
    run = os.path.join(a.work, "run")
    t0 = time.time()
    p = subprocess.run([a.bin, "compress", "--config", recipe, "--run-dir", run, "--json", "--no-verify"],
                       capture_output=True, text=True)
    wall = time.time() - t0
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    if p.returncode != 0:
        sys.exit(f"compress failed ({p.returncode}):\n{p.stderr[-4000:]}")
    s = json.loads(p.stdout)
    size, params = s["artifact_size_bytes"], s["param_count"]
    print(f"compress: {wall:.0f} s wall, peak RSS {child_peak:.2f} GiB, {params / 1e9:.3f}B parameters, "
          f"artifact {size / 1e9:.3f} GB ({size * 8 / params:.4f} bits/param), q4 share {s.get('q4_share')}")
    print("stages (s):", json.dumps({k: round(v, 1) for k, v in s["stages"].items()}))

    # Extrapolation: embedding and head are fixed, the decoder grows with depth. The bits each
    # part got come from the manifest (the allocation's per-matrix record).
    with open(os.path.join(run, "manifest.json")) as f:
        mats = json.load(f)["matrices"]
    fixed_bits = sum(m["bits"] for m in mats if ".layers." not in m["name"])
    layer_bits = sum(m["bits"] for m in mats if ".layers." in m["name"])
    embed = 2 * TEXT["vocab_size"] * TEXT["hidden_size"]
    per_layer_params = (params - embed - TEXT["hidden_size"]) / a.layers
    full_params = embed + TEXT["hidden_size"] + LAYERS_27B * per_layer_params
    full_bytes = (fixed_bits + layer_bits * LAYERS_27B / a.layers) / 8
    budget = math.ceil(27e9 * 2.2125) / 8
    grows = sum(v for k, v in s["stages"].items() if k != "load_s")
    print(f"extrapolated to {LAYERS_27B} layers: {full_params / 1e9:.2f}B parameters, artifact about "
          f"{full_bytes / 1e9:.2f} GB (embedding and head {fixed_bits / embed:.3f} bits/weight, decoder "
          f"{layer_bits / (per_layer_params * a.layers):.3f}), against the reference budget of {budget / 1e9:.2f} GB; "
          f"compress time at most about {(s['stages']['load_s'] + grows * LAYERS_27B / a.layers) / 3600:.1f} h "
          f"(every stage but loading taken to grow linearly with depth)")

    out = subprocess.run([sys.executable, "-c", LOAD, os.path.join(run, "artifact"), "float16"], capture_output=True,
                         text=True)
    if out.returncode != 0:
        sys.exit(f"the transformers reader failed:\n{out.stderr[-4000:]}")
    r = json.loads(out.stdout)
    above = r["peak"] - r["base"]
    print(f"transformers reader, float16 on the CPU: peak RSS above the runtime {above / 2**30:.2f} GiB for a dense "
          f"model of {r['dense'] / 2**30:.2f} GiB, ratio {above / r['dense']:.2f} (largest matrix in f32 "
          f"{r['biggest_f32'] / 2**30:.2f} GiB)")


if __name__ == "__main__":
    main()
