#!/usr/bin/env bash
# The compression track on a real model: SmolLM2-135M-Instruct (built offline by
# $AUTOQAT_REAL_SMOLLM2, which scripts/env.sh sets), calibrated on the first 4000 lines of WikiText-2 test and scored
# on the next documents by the validator's protocol (512 tokens, batch 8). For each budget
# (ternary 2.2125, binary 1.3125 bits/param) it compresses with one kind everywhere (the plain
# per-row baseline) and with the rowmix allocation under each sensitivity, and prints the PPL of
# each as a ratio to the baseline's at the same budget; then the baseline and the Fisher mix
# again after layerwise distillation (16 steps of 2 sequences per block), and the Fisher mix with
# layerwise distillation and then the end-to-end KD fine-tune (60 steps of 2 sequences).
#
# usage: benches/compress_smollm2.sh [WORKDIR] [MAX_DOCS]     (about three hours on 2 cores; finished runs are reused)
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
work=${1:-target/bench-compress}
max_docs=${2:-150}
data="${AUTOQAT_DATA:?set AUTOQAT_DATA to the directory of the real text}"/wikitext-2-raw-test.txt
[ -f "$data" ] || { echo "error: $data is missing (WikiText-2 test split; see docs/contracts.md#data-the-tests-and-benchmarks-read)"; exit 1; }
mkdir -p "$work"
work=$(cd "$work" && pwd)
"${AUTOQAT_REAL_SMOLLM2:?set AUTOQAT_REAL_SMOLLM2 to the offline SmolLM2 builder}" "$work/smollm2" "$VENV/bin/python" >/dev/null
head -n 4000 "$data" > "$work/calib.txt"
tail -n +4001 "$data" > "$work/eval.txt"
cargo build --locked --quiet
bin=target/debug/autoqat

run() { # name track kinds sensitivity [distill steps] [finetune steps]
    local name=$1 track=$2 kinds=$3 sens=$4 distill=${5:-0} finetune=${6:-0}
    [ -s "$work/$name.json" ] && return 0
    cat > "$work/$name.toml" <<TOML
[model]
source = "$work/smollm2"
device = "cpu"
[budget]
track = "$track"
[calibration]
text = "$work/calib.txt"
tokens = 16384
seq_len = 512
[allocate]
sensitivity = "$sens"
kinds = $kinds
[distill]
enabled = $([ "$distill" -gt 0 ] && echo true || echo false)
steps = $distill
lr = 1e-4
batch = 2
[finetune]
enabled = $([ "$finetune" -gt 0 ] && echo true || echo false)
steps = $finetune
lr = 1e-4
batch = 2
top_k = 32
[eval]
text = "$work/eval.txt"
doc_tokens = 512
batch = 8
max_docs = $max_docs
TOML
    "$bin" compress --config "$work/$name.toml" --run-dir "$work/runs/$name" --no-verify --json > "$work/$name.json"
}

mix='["binary", "ternary", "q4"]'
for track in ternary binary; do
    run "$track-uniform" "$track" "[\"$track\"]" mse
    for sens in mse activation fisher; do
        run "$track-$sens" "$track" "$mix" "$sens"
    done
    run "$track-uniform-distill" "$track" "[\"$track\"]" mse 16
    run "$track-fisher-distill" "$track" "$mix" fisher 16
    run "$track-fisher-distill-ft" "$track" "$mix" fisher 16 60
done

"$VENV/bin/python" - "$work" <<'PY'
import json, sys
work = sys.argv[1]
print(f"{'run':<26} {'bytes':>10} {'bits/param':>10} {'budget':>7} {'eval_ppl':>12} {'vs uniform':>10} {'fp_ppl':>8}  mix (rows)  stages (s)")
for track in ("ternary", "binary"):
    base = json.load(open(f"{work}/{track}-uniform.json"))["eval_ppl"]
    for v in ("uniform", "mse", "activation", "fisher", "uniform-distill", "fisher-distill", "fisher-distill-ft"):
        s = json.load(open(f"{work}/{track}-{v}.json"))
        mix = ", ".join(f"{k} {n}" for k, n in sorted(s["mix"].items()))
        st = s["stages"]
        stages = " ".join(f"{k[:-2]} {st.get(k, 0):.0f}" for k in ("calibrate_s", "allocate_s", "distill_s", "teacher_s", "finetune_s", "apply_s", "eval_s", "pack_s"))
        print(f"{track + '-' + v:<26} {s['artifact_size_bytes']:>10} {s['bits_per_param']:>10.4f} {s['budget_bpp']:>7} "
              f"{s['eval_ppl']:>12.1f} {s['eval_ppl'] / base:>10.3g} {s['fp_ppl']:>8.2f}  {mix}  {stages}")
PY
