#!/usr/bin/env bash
# The distillation-traces track on real models: SmolLM2-135M-Instruct (built offline by
# $AUTOQAT_REAL_SMOLLM2, which scripts/env.sh sets) is the teacher; the student is its first LAYERS decoder layers
# (same tokenizer, a smaller model) trained ternary from the teacher's traces. Prompts are story
# openings from TinyStories and WikiText-2, asked through the model's chat template.
#
# It measures, in one run on this machine:
#   - collection: positions, invalid rate, Other mass, Top-K coverage, seconds;
#   - the teacher baseline (greedy, KV cache) on held-out prompts;
#   - three students at the same token budget: Top-K+Other KD from the traces, hard labels on
#     the same traces (the un-distilled ternary student), and the untrained ternary student;
#   - `autoqat kd report` for each: quality (top-1 agreement on held-out traces), packed bytes,
#     decode tokens/s, QEI and QEIspeed, and the eval PPL of each student on WikiText-2.
#
# usage: benches/kd_smollm2.sh [WORKDIR] [LAYERS] [TOKENS]   (about 30 minutes on 2 cores: the
# fp32 teacher decodes about 20 tokens/s here, bound by reading its 538 MB per token)
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
work=${1:-target/bench-kd}
layers=${2:-6}
tokens=${3:-48000}
stories="${AUTOQAT_DATA:?set AUTOQAT_DATA to the directory of the real text}"/tinystories-valid-sample.txt
wiki="${AUTOQAT_DATA:?set AUTOQAT_DATA to the directory of the real text}"/wikitext-2-raw-test.txt
for f in "$stories" "$wiki"; do [ -f "$f" ] || { echo "error: $f is missing (see docs/contracts.md#data-the-tests-and-benchmarks-read)"; exit 1; }; done
mkdir -p "$work"
work=$(cd "$work" && pwd)
[ -f "$work/smollm2/model.safetensors" ] || "${AUTOQAT_REAL_SMOLLM2:?set AUTOQAT_REAL_SMOLLM2 to the offline SmolLM2 builder}" "$work/smollm2" "$VENV/bin/python" >/dev/null
# AUTOQAT_BIN: a binary already built (e.g. target/release/autoqat); else the debug build.
if [ -n "${AUTOQAT_BIN:-}" ]; then
    bin=$(cd "$(dirname "$AUTOQAT_BIN")" && pwd)/$(basename "$AUTOQAT_BIN")
else
    cargo build --locked --quiet
    bin=$(pwd)/target/debug/autoqat
fi

# The student: the teacher's embedding, first $layers layers, final norm and head.
if [ ! -f "$work/student/model.safetensors" ]; then
    "$VENV/bin/python" - "$work/smollm2" "$work/student" "$layers" <<'PY'
import sys, shutil, torch
from transformers import AutoModelForCausalLM
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
m.model.layers = m.model.layers[:n]
m.config.num_hidden_layers = n
m.save_pretrained(out)
for f in ["tokenizer.json", "generation_config.json"]:
    shutil.copy(f"{src}/{f}", f"{out}/{f}")
PY
fi

# Prompts: openings of stories and articles; the last 16 are held out.
"$VENV/bin/python" - "$stories" "$wiki" "$work" <<'PY'
import sys, re
stories, wiki, work = sys.argv[1:]
text = open(stories).read()
sents = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if 6 <= len(s.split()) <= 30]
lines = [l.strip() for l in open(wiki) if len(l.split()) >= 12 and not l.startswith(" =")]
prompts = [f"Continue the story: {s}" for s in sents[:68]] + [f"Continue this text: {' '.join(l.split()[:20])}" for l in lines[:68]]
prompts = prompts[::2] + prompts[1::2]
open(f"{work}/prompts.txt", "w").write("\n".join(prompts[:-16]) + "\n")
open(f"{work}/heldout.txt", "w").write("\n".join(prompts[-16:]) + "\n")
open(f"{work}/eval.txt", "w").write("\n".join(lines[1500:1900]) + "\n")
open(f"{work}/train.txt", "w").write("\n".join(lines[400:1500]) + "\n")
PY

template='<|im_start|>user
{prompt}<|im_end|>
<|im_start|>assistant
'
teacher="local:$work/smollm2"
cd "$work"
start=$(date +%s)
"$bin" kd collect --teacher "$teacher" --prompts prompts.txt --out traces --template "$template" --max-tokens 48 --top-k 20 | tail -1
echo "collect: $(( $(date +%s) - start )) s"
"$bin" kd collect --teacher "$teacher" --prompts heldout.txt --out heldout --template "$template" --max-tokens 48 --top-k 20 | tail -1
"$bin" kd baseline --teacher "$teacher" --prompts heldout.txt --template "$template" --max-tokens 48 | tail -1

trial() { # name budget-line lr [traces lines]
    local name=$1 budget=$2 lr=$3 extra=${4:-}
    [ -s "runs/$name/summary.json" ] && grep -q '"ok"' "runs/$name/summary.json" && return 0
    cat > "$name.toml" <<TOML
[model]
source = "$work/student"
[data]
train_text = "train.txt"
eval_text = "eval.txt"
seq_len = 128
eval_ctx = 256
eval_stride = 256
eval_max_tokens = 16384
[budget]
$budget
eval_every = 1000
checkpoint_every = 100
[activations]
bits = "8"
a4_flip_frac = 0.9
[optim]
lr = $lr
batch_size = 8
[traces]
enabled = true
dir = "traces"
$extra
[runtime]
device = "cpu"
TOML
    local t=$(date +%s)
    "$bin" trial --config "$name.toml" --run-dir "runs/$name" > "$name.log" 2>&1 || { tail -3 "$name.log"; exit 1; }
    echo "$name: $(( $(date +%s) - t )) s, $(grep -E '^eval_ppl' "$name.log")"
    grep '^gate' "runs/$name/trial.log" || true
}
trial kd "tokens = $tokens" 2e-3
trial hard "tokens = $tokens" 2e-3 "kl_weight = 0.0
ce_weight = 1.0
format_weight = 0.0"
trial untrained "steps = 1" 1e-7

for name in kd hard untrained; do
    "$bin" kd report --student "runs/$name/export" --traces heldout --baseline teacher_baseline.json --out "report-$name.json" --json > /dev/null
    "$VENV/bin/python" - "$name" "report-$name.json" "runs/$name/summary.json" <<'PY'
import json, sys
name, rep, summ = sys.argv[1:]
r, s = json.load(open(rep)), json.load(open(summ))
print(f"{name:<10} eval_ppl {s['eval_ppl']:>9.2f}  agreement {r['quality_s']:.4f}  nll {r['student_nll']:.3f}  "
      f"memory {r['memory_s_bytes']/2**20:6.1f} MiB vs {r['memory_t_bytes']/2**20:6.1f}  "
      f"tok/s {r['tps_s']:6.1f} vs {r['tps_t']:6.1f}  QEI {r['qei']:.4f}  QEIspeed {r['qei_speed']:.4f}")
PY
done
