#!/usr/bin/env bash
# Memory of `autoqat compress` against depth (issue 12's goal: 4x the layers within 1.3x the
# peak RSS). Two random Llama checkpoints of the same width, L and 4L decoder layers (saved by
# transformers), each compressed to the ternary budget with the Fisher allocation and layerwise
# distillation, once with layers offloaded (the default) and once resident (`model.offload =
# false`), which is the reference run of the same script. Prints per run the peak RSS of the
# compress process itself (summary.json's VmHWM), the peak of any process it waited for (GNU
# time's ru_maxrss: the verify child that reloads the zip), and the deep/shallow ratios.
#
# usage: benches/compress_memory.sh [WORKDIR] [LAYERS]      (HIDDEN=1024 FFN=4096 LAYERS=4)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
work=${1:-target/bench-compress-memory}
layers=${2:-4}
hidden=${HIDDEN:-1024}
ffn=${FFN:-4096}
mkdir -p "$work"
work=$(cd "$work" && pwd)
data="${AUTOQAT_DATA:?set AUTOQAT_DATA to the directory of the real text}"/wikitext-2-raw-test.txt
[ -f "$data" ] || { echo "error: $data is missing (WikiText-2 test split; see docs/contracts.md#data-the-tests-and-benchmarks-read)"; exit 1; }
head -n 2000 "$data" > "$work/calib.txt"
sed -n 2001,2400p "$data" > "$work/eval.txt"
cargo build --locked --quiet
bin=$(pwd)/target/debug/autoqat

"$VENV/bin/python" - "$work" "$layers" "$hidden" "$ffn" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "python"))
from autoqat_ref.tiny import byte_level_bpe, random_model, save
work, layers, hidden, ffn = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
text = open(os.path.join(work, "calib.txt"), encoding="utf-8").read()
tok = None
for name, n in (("shallow", layers), ("deep", 4 * layers)):
    out = os.path.join(work, name)
    if os.path.exists(os.path.join(out, "config.json")):
        continue
    tok = tok or byte_level_bpe(text, 2048)
    model = random_model("llama", seed=1, vocab_size=tok.get_vocab_size(), hidden_size=hidden,
                         intermediate_size=ffn, num_hidden_layers=n, num_attention_heads=hidden // 64,
                         num_key_value_heads=hidden // 128, max_position_embeddings=512,
                         tie_word_embeddings=True)
    save(out, model, tok)
PY

run() { # name model offload
    local name=$1 model=$2 offload=$3
    cat > "$work/$name.toml" <<TOML
[model]
source = "$work/$model"
device = "cpu"
offload = $offload
[budget]
track = "ternary"
[calibration]
text = "$work/calib.txt"
tokens = 4096
seq_len = 256
[allocate]
sensitivity = "fisher"
[distill]
enabled = true
steps = 4
batch = 2
[eval]
text = "$work/eval.txt"
doc_tokens = 256
batch = 8
max_docs = 40
TOML
    rm -rf "$work/runs/$name"
    /usr/bin/time -f "%M" -o "$work/$name.maxrss" "$bin" compress --config "$work/$name.toml" \
        --run-dir "$work/runs/$name" --json > "$work/$name.json"
}

for mode in offloaded resident; do
    offload=$([ $mode = offloaded ] && echo true || echo false)
    run "shallow-$mode" shallow "$offload"
    run "deep-$mode" deep "$offload"
done

"$VENV/bin/python" - "$work" <<'PY'
import json, sys
work = sys.argv[1]
print(f"{'run':<20} {'params':>11} {'compress MB':>12} {'any process MB':>15} {'time s':>7} {'eval_ppl':>10}  sha256")
peak = {}
for mode in ("offloaded", "resident"):
    for depth in ("shallow", "deep"):
        name = f"{depth}-{mode}"
        s = json.load(open(f"{work}/{name}.json"))
        anyp = int(open(f"{work}/{name}.maxrss").read().split()[-1]) / 1024
        peak[name] = (s["peak_mem_mb"], anyp)
        print(f"{name:<20} {s['param_count']:>11,} {s['peak_mem_mb']:>12.0f} {anyp:>15.0f} {s['time_s']:>7.1f} "
              f"{s['eval_ppl']:>10.2f}  {s['artifact_sha256'][:12]}")
for mode in ("offloaded", "resident"):
    d, sh = peak[f"deep-{mode}"], peak[f"shallow-{mode}"]
    print(f"{mode}: 4x the layers -> compress process {d[0] / sh[0]:.2f}x, any process {d[1] / sh[1]:.2f}x")
PY
