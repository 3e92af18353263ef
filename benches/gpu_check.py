"""The GPU proof in one run (driven by `scripts/gpu-check`): everything a short GPU loan must
measure, written under one output folder, each step timed and recorded even when another fails.

    scripts/gpu-check --out DIR [--device cuda] [--bin target/release/autoqat] [--text FILE]

Steps, in order (the cheap ones first, so that a loan cut short still brings back the proofs):
  doctor      `autoqat doctor --json`: the libtorch and CUDA the binary found.
  eval        `autoqat eval` of tiny Llama and Qwen3.5 checkpoints on the CPU and on the device:
              the perplexities must agree (fp32 on both; TF32 is not enabled by autoqat).
  trial       the same short fp32 QAT trial on the CPU and on the device: train loss and eval
              PPL compared; the device run's peak_mem_mb is its CUDA memory.
  bf16        the same trial on the device in bf16 autocast against fp32: the PPL difference.
  qat_bench   benches/qat_vs_pytorch.py at the SmolLM-135M shape on the device.
  eval_bench  benches/eval_vs_transformers.py at the SmolLM-135M shape on the device.

`--device cpu` rehearses the whole script on a CPU: the comparisons then pit the CPU against
itself, and bf16 is recorded as skipped (autoqat refuses bf16 autocast off CUDA).
Results: DIR/results.json (machine-readable, rewritten after every step), DIR/summary.txt (the
lines for docs/benchmarks.md) and one log per step.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from qat_vs_pytorch import trial_recipe  # noqa: E402

TINY = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=10000.0)
TINY_QWEN3_5 = dict(TINY, num_hidden_layers=4, head_dim=32, linear_num_key_heads=2, linear_num_value_heads=4,
                    linear_key_head_dim=32, linear_value_head_dim=32, tie_word_embeddings=False,
                    layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"])
# Relative agreement asked of the device against the CPU. Eval runs the same fp32 kernels up
# to summation order; a trial's 30 optimizer steps let that order drift a little further.
EVAL_RTOL, TRIAL_RTOL, BF16_RTOL = 1e-3, 1e-2, 1e-2



class Check:
    """Runs the steps, keeping results.json current after each."""

    def __init__(self, out, device, binary, text):
        self.out, self.device, self.bin, self.text = out, device, binary, text
        self.results = {"device": device, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "steps": {}}
        self.lines = []

    def save(self):
        with open(os.path.join(self.out, "results.json.tmp"), "w") as f:
            json.dump(self.results, f, indent=2)
        os.replace(os.path.join(self.out, "results.json.tmp"), os.path.join(self.out, "results.json"))
        with open(os.path.join(self.out, "summary.txt"), "w") as f:
            f.write("\n".join(self.lines) + "\n")

    def step(self, name, fn):
        t0 = time.time()
        print(f"[gpu-check] {name} ...", flush=True)
        try:
            res = fn()
            res.setdefault("status", "ok")
        except Exception as e:  # noqa: BLE001 - one failed step must not lose the others
            res = {"status": "error", "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        res["wall_s"] = round(time.time() - t0, 1)
        self.results["steps"][name] = res
        print(f"[gpu-check] {name}: {res['status']} in {res['wall_s']} s"
              + (f" ({res['error']})" if "error" in res else ""), flush=True)
        self.save()

    def run(self, args, log, **kw):
        """Runs a command, its output into DIR/log; an error names the log."""
        path = os.path.join(self.out, log)
        with open(path, "w") as f:
            p = subprocess.run(args, stdout=subprocess.PIPE, stderr=f, text=True, **kw)
            f.write(p.stdout)
        if p.returncode != 0:
            raise RuntimeError(f"{os.path.basename(args[0])} {args[1]} exited {p.returncode}; see {log}")
        return p.stdout

    # -- steps ---------------------------------------------------------------------------

    def doctor(self):
        d = json.loads(self.run([self.bin, "doctor", "--json"], "doctor.log"))
        self.lines.append(f"doctor: libtorch {d.get('torch_version')}, cuda linked {d.get('cuda_linked')}, "
                          f"available {d.get('cuda_available')}, devices {d.get('cuda_devices')}")
        on_cuda = self.device.startswith("cuda")
        if on_cuda and not d.get("cuda_available"):
            return {"status": "error", "error": "the binary sees no CUDA device", "doctor": d}
        return {"doctor": d}

    def models(self):
        from autoqat_ref.tiny import tiny_checkpoint

        with open(self.text, encoding="utf-8") as f:
            text = f.read()[:200_000]
        self.small_text = os.path.join(self.out, "text.txt")
        with open(self.small_text, "w", encoding="utf-8") as f:
            f.write(text)
        made = {}
        for name, arch, cfg in (("llama", "llama", TINY), ("qwen3_5", "qwen3_5", TINY_QWEN3_5)):
            d = os.path.join(self.out, "models", name)
            tiny_checkpoint(d, text, 1024, arch=arch, **cfg)
            made[name] = d
        self.model_dirs = made
        return {"models": list(made)}

    def eval_parity(self):
        res = {}
        for name, d in self.model_dirs.items():
            got = {}
            for dev in ("cpu", self.device):
                out = self.run([self.bin, "eval", "--model", d, "--text", self.small_text, "--ctx", "256",
                                "--device", dev, "--json"], f"eval-{name}-{dev.replace(':', '')}.log")
                got[dev] = json.loads(out)
            cpu, dev = got["cpu"]["eval_ppl"], got[self.device]["eval_ppl"]
            rel = abs(dev - cpu) / cpu
            res[name] = {"cpu_ppl": cpu, "device_ppl": dev, "rel_diff": rel, "agree": rel <= EVAL_RTOL,
                         "device_tokens_per_s": got[self.device].get("tokens_per_s")}
            self.lines.append(f"eval parity {name}: cpu PPL {cpu:.6f}, {self.device} PPL {dev:.6f}, "
                              f"relative difference {rel:.2e} (asked <= {EVAL_RTOL:g})")
        ok = all(r["agree"] for r in res.values())
        return {"status": "ok" if ok else "mismatch", **res}

    def trial(self, device, precision, tag, steps=30):
        work = os.path.join(self.out, "trials", tag)
        os.makedirs(work, exist_ok=True)
        cfg = os.path.join(work, "recipe.toml")
        with open(cfg, "w") as f:
            f.write(trial_recipe(self.model_dirs["llama"], self.small_text, batch=8, seq=128, steps=steps,
                                 device=device, precision=precision, lr=2e-3, eval_tokens=4096))
        run_dir = os.path.join(work, "run")
        self.run([self.bin, "trial", "--config", cfg, "--run-dir", run_dir], f"trial-{tag}.log")
        with open(os.path.join(run_dir, "summary.json")) as f:
            s = json.load(f)
        if s.get("status") != "ok":
            raise RuntimeError(f"trial {tag} ended {s.get('status')}: {s.get('error')}")
        return s

    def trial_parity(self):
        cpu = self.trial("cpu", "fp32", "cpu-fp32")
        dev = self.trial(self.device, "fp32", "device-fp32")
        self.device_fp32 = dev
        rel_ppl = abs(dev["eval_ppl"] - cpu["eval_ppl"]) / cpu["eval_ppl"]
        rel_loss = abs(dev["train_loss"] - cpu["train_loss"]) / cpu["train_loss"]
        self.lines.append(
            f"trial parity (30 steps, fp32): cpu PPL {cpu['eval_ppl']:.4f} loss {cpu['train_loss']:.4f} "
            f"{cpu['time_s']:.1f} s | {self.device} PPL {dev['eval_ppl']:.4f} loss {dev['train_loss']:.4f} "
            f"{dev['time_s']:.1f} s peak_mem_mb {dev['peak_mem_mb']:.0f} | relative PPL difference {rel_ppl:.2e}")
        ok = rel_ppl <= TRIAL_RTOL and rel_loss <= TRIAL_RTOL
        return {"status": "ok" if ok else "mismatch", "cpu": cpu, "device": dev, "rel_ppl": rel_ppl,
                "rel_loss": rel_loss}

    def bf16(self):
        if not self.device.startswith("cuda"):
            return {"status": "skipped", "reason": "bf16 autocast needs CUDA; this is a CPU rehearsal"}
        fp32 = getattr(self, "device_fp32", None) or self.trial(self.device, "fp32", "device-fp32")
        bf = self.trial(self.device, "bf16", "device-bf16")
        rel = (bf["eval_ppl"] - fp32["eval_ppl"]) / fp32["eval_ppl"]
        self.lines.append(f"bf16 vs fp32 on {self.device} (30 steps): PPL {bf['eval_ppl']:.4f} vs "
                          f"{fp32['eval_ppl']:.4f} ({100 * rel:+.2f}%), {bf['time_s']:.1f} s vs {fp32['time_s']:.1f} s, "
                          f"peak_mem_mb {bf['peak_mem_mb']:.0f} vs {fp32['peak_mem_mb']:.0f}")
        return {"status": "ok" if abs(rel) <= BF16_RTOL else "over", "bf16": bf, "fp32": fp32, "rel_ppl": rel}

    def bench(self, script, args, log):
        out = self.run([sys.executable, os.path.join(ROOT, "benches", script), "--bin", self.bin, "--text", self.text,
                        "--device", self.device, *args], log)
        lines = [line for line in out.splitlines() if line.strip()]
        self.lines.extend(f"{script}: {line}" for line in lines)
        return {"output": lines}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "autoqat"))
    ap.add_argument("--text", required=True, help="real text for the tokenizer, the trial and the benches")
    ap.add_argument("--skip", default="", help="comma-separated steps to leave out")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    c = Check(os.path.abspath(a.out), a.device, os.path.abspath(a.bin), os.path.abspath(a.text))
    skip = set(filter(None, a.skip.split(",")))
    steps = [
        ("doctor", c.doctor),
        ("models", c.models),
        ("eval", c.eval_parity),
        ("trial", c.trial_parity),
        ("bf16", c.bf16),
        ("qat_bench", lambda: c.bench("qat_vs_pytorch.py", ["--configs", "smollm", "--steps", "8"], "qat_bench.log")),
        ("eval_bench", lambda: c.bench("eval_vs_transformers.py", ["--configs", "smollm135m", "--repeats", "2"],
                                       "eval_bench.log")),
    ]
    for name, fn in steps:
        if name in skip:
            c.results["steps"][name] = {"status": "skipped", "reason": "--skip"}
            continue
        c.step(name, fn)
        if name in ("doctor", "models") and c.results["steps"][name]["status"] == "error":
            break  # nothing after these can run
    c.results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    c.save()
    print("\n".join(c.lines))
    bad = [n for n, r in c.results["steps"].items() if r["status"] not in ("ok", "skipped")]
    if bad:
        print(f"[gpu-check] not ok: {', '.join(bad)} (see {a.out}/results.json)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
