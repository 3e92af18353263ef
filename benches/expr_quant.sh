#!/usr/bin/env bash
# What a quantizer written as a `quant.expr` program costs against the builtin it reproduces:
# the demo's teacher trained into ternary with `ternary_absmean` (per row) and with the same
# quantizer as a program, alternately, REPEATS times each. Prints each trial's eval PPL (the
# two must be equal: the program gives the builtin's bits) and the median time of the program
# as a ratio to the builtin's. A third recipe, a program that is not a builtin (a learned
# per-row scale with a wider deadzone), is timed and scored too.
#
# usage: benches/expr_quant.sh [WORKDIR] [STEPS] [REPEATS]     (about 5 minutes on 2 cores)
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
work=${1:-target/bench-expr}
steps=${2:-120}
repeats=${3:-3}
cargo build --locked --quiet
bin=$PWD/target/debug/autoqat
mkdir -p "$work"
work=$(cd "$work" && pwd)
[ -d "$work/ws" ] || AUTOQAT_CACHE_DIR="$work/cache" "$bin" demo --quick --experiments 0 --dir "$work/ws" >/dev/null 2>&1
base="$work/ws/experiments/train.toml"

recipe() { # name quant-lines
    sed -e "s/^steps = .*/steps = $steps/" -e "s/^eval_every = .*/eval_every = $steps/" \
        -e "s/^granularity = \"per_tensor\"/granularity = \"per_row\"/" \
        -e "s|^method = .*|$2|" "$base" > "$work/ws/experiments/$1.toml"
}
recipe builtin 'method = "ternary_absmean"'
recipe program 'method = "expr"\nexpr = "inv_scale = 1 / max(mean(abs(w)), 1e-5); code = clamp(round(w * inv_scale), -1, 1)"'
recipe novel 'method = "expr"\nexpr = "alpha_init = max(mean(abs(w)), 1e-5); code = round_ste(clamp(w / alpha, -1, 1)) * (abs(w) > 0.3 * alpha); scale = alpha"'

trial() { # name repeat -> "seconds ppl"
    local dir="$work/runs/$1-$2"
    rm -rf "$dir"
    local t0=$(date +%s.%N)
    (cd "$work/ws" && "$bin" trial --config "experiments/$1.toml" --run-dir "$dir" >/dev/null 2>&1) || { echo "error: trial $1 failed (see $dir/trial.log)" >&2; exit 1; }
    local t1=$(date +%s.%N)
    echo "$(echo "$t1 - $t0" | bc) $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['eval_ppl'])" "$dir/summary.json")"
}

declare -A times ppls
for r in $(seq 1 "$repeats"); do
    for name in builtin program novel; do
        read -r t p < <(trial "$name" "$r")
        times[$name]+="$t "
        ppls[$name]+="$p "
        echo "repeat $r $name: ${t}s eval_ppl $p"
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mb=$(echo "${times[builtin]}" | median)
for name in builtin program novel; do
    m=$(echo "${times[$name]}" | median)
    echo "$name: median ${m}s ($(echo "scale=3; $m / $mb" | bc)x builtin), eval_ppl ${ppls[$name]}"
done
[ "${ppls[builtin]}" = "${ppls[program]}" ] && echo "program = builtin: identical eval PPL on every repeat" \
    || { echo "error: the program's PPL differs from the builtin's"; exit 1; }
