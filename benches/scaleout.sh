#!/usr/bin/env bash
# Scale-out (issue 9): experiments per hour of the builtin search on the offline demo with 1
# and 2 local workers, and the per-experiment overhead of the Slurm executor against the local
# one (a real slurmctld/slurmd on loopback from scripts/slurm-testbed).
#
#   benches/scaleout.sh [AUTOQAT_BINARY] [OUT_DIR]   (EXPERIMENTS=12 SLURM_EXPERIMENTS=4)
#
# Each run starts from one demo workspace whose baseline is done (OUT_DIR/base, made once), so
# every run does the same kind of work. The trial command is wrapped to stamp its own start and
# end into the run dir: overhead = driver wall per experiment - the trial command's own wall.
set -euo pipefail
BIN=$(realpath "${1:-target/debug/autoqat}")
OUT=${2:-/tmp/scaleout}
EXPERIMENTS=${EXPERIMENTS:-12}
SLURM_EXPERIMENTS=${SLURM_EXPERIMENTS:-4}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$ROOT/.venv/bin/python"
mkdir -p "$OUT"
base="$OUT/base"
if [[ ! -f "$base/report/demo-summary.json" ]]; then
  rm -rf "$base"
  "$BIN" demo --dir "$base" --experiments 0 >"$OUT/base.log" 2>&1
fi

# run NAME EXPERIMENTS ARGS...: copies the base, wraps the trial command, runs the search.
run() {
  local name=$1 n=$2
  shift 2
  local w="$OUT/$name"
  rm -rf "$w"
  cp -a "$base" "$w"
  "$PY" - "$w/autoqat.toml" "$BIN" <<'PYEOF'
import re, sys
p, bin_ = sys.argv[1], sys.argv[2]
t = open(p).read()
cmd = (f"t0=$(date +%s.%N); {bin_} trial --config experiments/train.toml --run-dir {{run_dir}}; rc=$?; "
       "echo $t0 $(date +%s.%N) > {run_dir}/bench_span; exit $rc")
t = re.sub(r'(?m)^command = "autoqat trial .*"$', 'command = ' + '"' + cmd.replace('"', '\\"') + '"', t)
open(p, "w").write(t)
PYEOF
  git -C "$w" commit -qam "bench: stamp the trial command's own wall time"
  local start end
  start=$(date +%s.%N)
  "$BIN" run --workspace "$w" --tag demo --provider builtin --resume --max-experiments $((n + 1)) "$@" \
    >"$OUT/$name.log" 2>&1 || echo "$name: run exited $? (see $OUT/$name.log)"
  end=$(date +%s.%N)
  echo "$start $end" >"$OUT/$name.wall"
}

run local1 "$EXPERIMENTS" --workers 1
run local2 "$EXPERIMENTS" --workers 2
run slurm_local "$SLURM_EXPERIMENTS" --workers 1
slurm=""
if "$ROOT/scripts/slurm-testbed" install >/dev/null && bed=$(mktemp -d) \
  && conf=$("$ROOT/scripts/slurm-testbed" start "$bed"); then
  export "${conf?}"
  run slurm1 "$SLURM_EXPERIMENTS" --workers 1 --executor slurm
  "$ROOT/scripts/slurm-testbed" stop "$bed"
  slurm=1
else
  echo "no Slurm testbed here: the Slurm figures are left out"
fi

"$PY" - "$OUT" "$slurm" <<'PYEOF'
import csv, glob, os, statistics, sys
out, slurm = sys.argv[1], sys.argv[2]
def figures(name):
    start, end = map(float, open(f"{out}/{name}.wall").read().split())
    rows = [r for r in csv.DictReader(open(f"{out}/{name}/results.tsv"), delimiter="\t") if r["exp"] != "0"]
    spans = []
    for r in rows:
        f = f"{out}/{name}/runs/{int(r['exp']):04d}/bench_span"
        if os.path.exists(f):
            a, b = map(float, open(f).read().split())
            spans.append(b - a)
    wall = end - start
    return len(rows), wall, statistics.mean(spans) if spans else float("nan")
l1, l2 = figures("local1"), figures("local2")
for name, (n, wall, span) in [("1 worker", l1), ("2 workers", l2)]:
    print(f"local, {name}: {n} experiments in {wall:.1f} s = {3600 * n / wall:.0f} experiments/hour (trial command {span:.2f} s each)")
print(f"2 workers / 1 worker, experiments per hour: {(l2[0] / l2[1]) / (l1[0] / l1[1]):.2f}x")
n, wall, span = figures("slurm_local")
local_over = wall / n - span
print(f"local executor: {wall / n:.2f} s per experiment, trial command {span:.2f} s, overhead {local_over:.2f} s")
if slurm:
    n, wall, span = figures("slurm1")
    over = wall / n - span
    print(f"slurm executor: {wall / n:.2f} s per experiment, trial command {span:.2f} s, overhead {over:.2f} s "
          f"({over - local_over:+.2f} s, {over / local_over:.1f}x the local overhead)")
PYEOF
