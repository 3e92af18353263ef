"""Benchmark (not a test): the builtin search against the searches a user would run instead
(issue 33), on the same base workspace, the same loop and the same budget of experiments:

- `builtin`: autoqat's own search (`provider.kind = "builtin"`);
- `tpe`: Optuna's TPE sampler (`multivariate=True, group=True`: it handles categorical and
  conditional spaces) over the schema's declared choices, trial 0 being the base recipe;
- `random`: Optuna's random sampler over the same choices.

Optuna and random search run inside `autoqat run` as a `command` proposer (this script's
`propose` mode): each proposal is a whole recipe, written as one edit of the recipe file, and
the loop runs it exactly as it runs the builtin's (same trial command, same keep rule, same
second-seed confirmation under 2 sigma, same baseline). So every search gets the same
experiments and the same rules, and only the choice of the next recipe differs. The focus limit
(`run.max_changed_lines`) is lifted for the peers: a sampler proposes every key at once.

Landscapes:
- `qat`: the offline QAT demo (`autoqat demo --experiments 0`): a tiny teacher, ternary
  fine-tuning; the gap is the ternary baseline -> the full-precision teacher. With `--fresh K`
  each search's best recipe is retrained with training seeds 1..K and the baseline with
  0..2K+1: the searches picked their bests on training seed 0, so "as selected" overstates.
- `compress`: the compression demo (`autoqat demo --track compress --experiments 0`):
  deterministic, so no retraining; the gap is the all-ternary baseline -> the full-precision
  teacher scored by the same protocol (`autoqat eval --protocol docs` on the teacher).

Budget: `--experiments` (20) after the baseline; with `--equal-compute` each search then runs
on until its trial seconds reach that many trials of the base recipe, so a search whose crashes
cost no time gets more trials. `--searches builtin-priors` adds the builtin search with the QAT
brief's ranking declared as `[[validator.priors]]`.

    source scripts/env.sh && cargo build --release --locked --bin autoqat
    .venv/bin/python benches/search_peers.py --landscape qat --seeds 100-119 --equal-compute --fresh 3
    .venv/bin/python benches/search_peers.py --landscape compress --seeds 100-119 --equal-compute

Runs already finished under --out are reused (delete a seed's directory to rerun it), so the
script can be stopped and started again, and `--summary-only` prints the figures so far. Optuna
comes from PyPI into .venv for this bench only (`pip install optuna==5.0.0`); autoqat does not
depend on it.
"""

import argparse
import csv
import glob
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCHES = ("builtin", "tpe", "random")
OPTUNA = "optuna==5.0.0"
# `builtin-priors`: the builtin search with the QAT brief's ranking as [[validator.priors]].
# program.md, "The knobs, roughly in order of expected effect", written before this bench: the
# learning rate and its schedule, the quantizer, its granularity, the STE blend, activations,
# deadzone recovery, distillation, then the second-order optimizer knobs.
BRIEF = "program.md: the knobs, roughly in order of expected effect"
QAT_PRIORS = [
    (1, ["optim.lr", "optim.lr_warmup_frac", "optim.lr_schedule", "optim.min_lr_frac", "optim.wsd_decay_frac"]),
    (2, ["quant.method", "quant.deadzone_t"]),
    (3, ["quant.granularity"]),
    (4, ["ste.lambda_schedule", "ste.lambda_warmup_frac"]),
    (5, ["activations.bits", "activations.granularity", "activations.a4_flip_frac"]),
    (6, ["deadzone_recovery.enabled", "deadzone_recovery.scale_init"]),
    (7, ["distill.enabled", "distill.temperature", "distill.ce_weight", "distill.kl_weight"]),
    (8, ["optim.weight_decay", "optim.grad_clip", "optim.beta1", "optim.beta2"]),
]


# ---------------------------------------------------------------------------------------------
# The search space and recipe values, read the way the loop reads them.

def search_space(bin_, workspace):
    """The keys a search may change: [{key, choices, default, active_when}] in schema order."""
    settings = tomllib.load(open(os.path.join(workspace, "autoqat.toml"), "rb"))
    validator = settings.get("validator", {})
    kind = validator.get("kind", "autoqat")
    if kind == "autoqat":
        schema = json.loads(subprocess.check_output([bin_, "trial", "--schema"], text=True))
        fields = [dict(key=f["key"], choices=f["choices"], default=f["default"], active_when=f.get("active_when"))
                  for f in schema["fields"] if not f["locked"] and f["choices"]]
    elif kind == "toml":
        fields = [dict(key=f["key"], choices=f["choices"], default=f["choices"][0], active_when=f.get("active_when"))
                  for f in validator.get("fields", [])]
    else:
        sys.exit(f"validator.kind = {kind!r}: this bench needs a schema (autoqat or toml)")
    return dict(recipe=settings["run"]["mutable_paths"][0], fields=fields)


def lookup(table, key):
    for part in key.split("."):
        if not isinstance(table, dict) or part not in table:
            return None
        table = table[part]
    return table


def same(a, b):
    """Values compare as the loop compares them: 8 and "8" are one value, 0.001 and 1e-3 too."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(a) == str(b)


def recipe_values(space, text):
    """Every searchable key's value in `text`, defaults filled in."""
    table = tomllib.loads(text)
    out = {}
    for f in space["fields"]:
        v = lookup(table, f["key"])
        out[f["key"]] = f["default"] if v is None else v
    return out


def active(field, values):
    cond = field.get("active_when")
    return cond is None or any(same(values.get(cond["key"]), v) for v in cond["values"])


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def set_key(text, key, value):
    """`text` with the dotted `key` set to `value`, line by line so comments stay."""
    section, leaf = key.rsplit(".", 1)
    lines = text.split("\n")
    header = re.compile(r"^\s*\[([^\]]+)\]\s*(#.*)?$")
    start = next((i for i, l in enumerate(lines) if (m := header.match(l)) and m.group(1).strip() == section), None)
    if start is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{leaf} = {toml_value(value)}\n"
    end = next((i for i in range(start + 1, len(lines)) if header.match(lines[i])), len(lines))
    for i in range(start + 1, end):
        if re.match(rf"^\s*{re.escape(leaf)}\s*=", lines[i]):
            lines[i] = f"{leaf} = {toml_value(value)}"
            return "\n".join(lines)
    lines.insert(start + 1, f"{leaf} = {toml_value(value)}")
    return "\n".join(lines)


def canon(params):
    return json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# `propose`: one answer of the peer proposer (called by `autoqat run` through provider.command).

def results_rows(workspace):
    path = os.path.join(workspace, "results.tsv")
    if not os.path.exists(path):
        return []
    return list(csv.DictReader(open(path), delimiter="\t"))


def row_value(row):
    """The PPL a row scored (the mean with its confirming seed, as the loop's model reads it),
    None when the trial failed."""
    if row["status"] in ("crash", "timeout", "invalid") or row["eval_ppl"] in ("", "nan"):
        return None
    p = float(row["eval_ppl"])
    c = row.get("confirm_ppl", "")
    return (p + float(c)) / 2 if c not in ("", "nan") else p


def propose(args):
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sys.stdin.read()  # the prompt: this proposer reads the workspace instead
    space = json.load(open(args.space))
    recipe_path = os.path.join(args.workspace, space["recipe"])
    text = open(recipe_path).read()
    rows = results_rows(args.workspace)
    state = json.load(open(args.state)) if os.path.exists(args.state) else {"proposals": []}
    current = recipe_values(space, text)
    if "base" not in state:
        # Trial 0 is the base recipe, scored by the baseline: the recipe before any proposal.
        state["base"] = current
    fields = space["fields"]
    dists = {f["key"]: CategoricalDistribution(f["choices"]) for f in fields}

    def as_choice(key, v):
        # The declared choice equal to v, so that Optuna sees one of its categories.
        return next((c for c in dists[key].choices if same(c, v)), None)

    def active_params(values):
        out = {}
        for f in fields:
            if active(f, values) and (c := as_choice(f["key"], values[f["key"]])) is not None:
                out[f["key"]] = c
        return out

    baseline = next((r for r in rows if r["status"] == "baseline"), None)
    if baseline is None:
        sys.exit("no baseline row in results.tsv yet")
    history = [(active_params(state["base"]), row_value(baseline))]
    by_tag = {}
    for r in rows:
        m = re.match(rf"^{args.sampler} #(\d+):", r["description"])
        if m:
            by_tag[int(m.group(1))] = row_value(r)
    for p in state["proposals"]:
        # A proposal with no row was refused by the loop (or never ran): a failure to the sampler.
        history.append((p["params"], by_tag.get(p["n"])))
    seen = {canon(p): v for p, v in history}

    n = len(state["proposals"]) + 1
    seed = args.seed * 100_003 + n
    if args.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    for params, value in history:
        d = {k: dists[k] for k in params}
        if value is None or not math.isfinite(value):
            study.add_trial(create_trial(params=params, distributions=d, state=TrialState.FAIL))
        else:
            study.add_trial(create_trial(params=params, distributions=d, value=value))

    for _ in range(200):
        trial = study.ask()
        values = dict(current)
        params = {}
        # Define-by-run, in schema order: a key is sampled only while its condition holds.
        for f in fields:
            if active(f, values):
                values[f["key"]] = params[f["key"]] = trial.suggest_categorical(f["key"], f["choices"])
        key = canon(params)
        if key in seen:
            # A recipe already run: the sampler learns its known score, and asks again.
            v = seen[key]
            study.tell(trial, v if v is not None else None,
                       state=TrialState.COMPLETE if v is not None else TrialState.FAIL)
            continue
        break
    else:
        sys.exit(f"{args.sampler}: 200 samples in a row were recipes already run")
    new_text = text
    changed = []
    for k, v in params.items():
        if not same(current.get(k), v):
            new_text = set_key(new_text, k, v)
            changed.append(f"{k} = {toml_value(v)}")
    state["proposals"].append({"n": n, "params": params})
    tmp = args.state + ".tmp"
    json.dump(state, open(tmp, "w"), indent=1)
    os.replace(tmp, args.state)
    print(json.dumps({
        "description": f"{args.sampler} #{n}: set {'; '.join(changed)}",
        "rationale": f"Optuna {args.sampler} sample {n} over the schema's declared choices",
        "edits": [{"path": space["recipe"], "search": text, "replace": new_text}],
    }))


# ---------------------------------------------------------------------------------------------
# The bench.

def sh(cmd, log, check=True):
    with open(log, "w") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=check)


def ensure_optuna(python):
    if subprocess.run([python, "-c", "import optuna"], capture_output=True).returncode != 0:
        print(f"installing {OPTUNA} into .venv (bench only)", flush=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", OPTUNA], check=True)


def parse_seeds(spec):
    out = []
    for part in spec.replace(",", " ").split():
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    return out


def configure(w, search, seed, python, space_path, state_path):
    """The harness settings of one search: provider and seed (committed on the run branch like
    any settings change, as benches/search_demo.sh does)."""
    p = os.path.join(w, "autoqat.toml")
    t = open(p).read()
    if search.startswith("builtin"):
        provider = f"[provider]\nkind = \"builtin\"\nseed = {seed}\n"
        if search == "builtin-priors":
            t += "".join(f"\n[[validator.priors]]\nkey = \"{k}\"\nrank = {r}\nsource = \"{BRIEF}\"\n"
                         for r, keys in QAT_PRIORS for k in keys)
    else:
        cmd = (f"{python} {os.path.abspath(__file__)} propose --sampler {search} --seed {seed} "
               f"--space {space_path} --state {state_path} --workspace {os.path.abspath(w)}")
        provider = f"[provider]\nkind = \"command\"\ncommand = {json.dumps(cmd)}\ntimeout_s = 600\n"
        # A sampler proposes every key at once: the focus limit is the builtin's discipline.
        t = re.sub(r"(?m)^max_changed_lines = .*$", "max_changed_lines = 1000", t)
    t, n = re.subn(r"(?ms)^\[provider\]\n.*?(?=^\[|\Z)", provider + "\n", t)
    assert n == 1, "autoqat.toml has no [provider] section"
    open(p, "w").write(t)
    subprocess.run(["git", "-C", w, "commit", "-qam", f"bench: {search} search, seed {seed}"], check=True)
    # The loop reads these settings once, when it starts; its first reset to the best commit
    # drops this commit from the branch (docs/benchmarks.md), so a copy records what ran.
    shutil.copy(p, f"{w}.autoqat.toml")


def run_cmd(args, w, tag, search, max_experiments):
    """`autoqat run` resuming the search's workspace up to `max_experiments` rows."""
    provider = "builtin" if search.startswith("builtin") else "command"
    return [args.bin, "run", "--workspace", w, "--tag", tag, "--provider", provider, "--resume",
            "--max-experiments", str(max_experiments)]


def mark(w, name, text):
    """A bench marker in the workspace, kept out of git so that its status stays clean."""
    open(f"{w}/{name}", "w").write(text)
    with open(f"{w}/.git/info/exclude", "a") as f:
        f.write(f"{name}\n")


def run_search(args, out, base, tag, space_path, search, seed):
    w = f"{out}/{search}/seed{seed}"
    if os.path.exists(f"{w}/.bench-done"):
        return
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(os.path.dirname(w), exist_ok=True)
    shutil.copytree(base, w, symlinks=True)
    state = f"{out}/{search}/seed{seed}.state.json"
    if os.path.exists(state):
        os.remove(state)
    configure(w, search, seed, args.python, space_path, state)
    start = time.time()
    r = sh(run_cmd(args, w, tag, search, args.experiments + 1), f"{w}.log", check=False)
    took = time.time() - start
    if r.returncode != 0:
        print(f"  {search} seed {seed}: run exited {r.returncode} (see {w}.log)", flush=True)
    mark(w, ".bench-done", f"{took:.1f}\n")
    print(f"  {search} seed {seed}: {took:.0f} s", flush=True)


def budget_seconds(base, trials):
    """The compute budget: `trials` full trials of the base recipe, at the median trial seconds
    of the baseline's runs (the issue's "trial seconds of 20 full trials")."""
    times = [json.load(open(p))["time_s"] for p in glob.glob(f"{base}/runs/0000*/summary.json")]
    return trials * statistics.median(times)


def top_up(args, out, base, tag, space_path, search, seed, budget):
    """Runs the search on until its trial seconds reach `budget`: the loop's stop file is
    written once they do, so the trial in flight finishes and the run ends (at most one trial
    over). A search whose crashes cost no time, or whose recipes train faster, gets more trials."""
    w = f"{out}/{search}/seed{seed}"
    if os.path.exists(f"{w}/.bench-topped") or not os.path.exists(f"{w}/.bench-done"):
        return
    if trial_seconds(w) < budget:
        state = f"{out}/{search}/seed{seed}.state.json"
        # The loop's resets dropped the settings commit (see configure): write it again.
        configure(w, search, seed, args.python, space_path, state)
        proc = subprocess.Popen(run_cmd(args, w, tag, search, 10 * args.experiments),
                                stdout=open(f"{w}.topup.log", "w"), stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if trial_seconds(w) >= budget and not os.path.exists(f"{w}/STOP"):
                open(f"{w}/STOP", "w").close()
            time.sleep(0.5)
        if os.path.exists(f"{w}/STOP"):
            os.remove(f"{w}/STOP")
    spent = trial_seconds(w)
    mark(w, ".bench-topped", f"{spent:.1f}\n")
    print(f"  {search} seed {seed}: {spent:.0f} trial seconds of {budget:.0f}, "
          f"{len(results_rows(w)) - 1} experiments", flush=True)


def best_of(rows):
    """The loop's best (the latest keep, else the baseline) and the baseline's PPL."""
    base = next(float(r["eval_ppl"]) for r in rows if r["status"] == "baseline")
    best = base
    for r in rows:
        if r["status"] == "keep":
            best = float(r["eval_ppl"])
    return base, best


def trial_seconds(w):
    """Seconds of every trial the search ran (confirming seeds included), baseline excluded."""
    total = 0.0
    for path in glob.glob(f"{w}/runs/*/summary.json"):
        exp = os.path.basename(os.path.dirname(path))
        if exp.startswith("0000"):
            continue
        total += float(json.load(open(path))["time_s"])
    return total


def describe(xs):
    m = statistics.mean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
    return m, sd, sd / math.sqrt(len(xs))


class Fresh:
    """Eval PPL of a recipe retrained with another training seed (optim.seed), cached by the
    recipe's blob, so seeds and searches that found one recipe share its runs."""

    def __init__(self, bin_, out, recipe):
        self.bin, self.out, self.recipe = bin_, out, recipe

    def __call__(self, w, seed):
        blob = subprocess.check_output(["git", "-C", w, "rev-parse", f"HEAD:{self.recipe}"], text=True).strip()
        run = f"{self.out}/fresh/{blob[:12]}-{seed}"
        if not os.path.exists(f"{run}/summary.json"):
            text = subprocess.check_output(["git", "-C", w, "show", f"HEAD:{self.recipe}"], text=True)
            # Beside the recipe, so that its relative paths hold; removed after.
            path = os.path.join(w, os.path.dirname(self.recipe), f"fresh-{seed}.toml")
            open(path, "w").write(re.sub(r"(?m)^seed = .*$", f"seed = {seed}", text))
            try:
                subprocess.run([self.bin, "trial", "--config", path, "--run-dir", run],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            finally:
                os.remove(path)
        return json.load(open(f"{run}/summary.json"))["eval_ppl"]


def reference_ppl(args, out, base):
    """The PPL the gap runs to: the full-precision teacher, scored as the trials score."""
    summary = json.load(open(f"{base}/report/demo-summary.json"))
    if args.landscape == "qat":
        return summary["teacher_fp_ppl"]
    path = f"{out}/teacher-eval.json"
    if not os.path.exists(path):
        cfg = tomllib.load(open(f"{base}/experiments/compress.toml", "rb"))
        ev = cfg["eval"]
        text = os.path.normpath(os.path.join(base, "experiments", ev["text"]))
        cmd = [args.bin, "eval", "--model", summary["teacher_dir"], "--protocol", "docs",
               "--doc-tokens", str(ev["doc_tokens"]), "--text", text, "--json"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        open(path, "w").write(res.stdout)
    return json.loads(open(path).read().strip().splitlines()[-1])["eval_ppl"]


def summary(args, out, base, seeds, searches, space):
    fp = reference_ppl(args, out, base)
    mark = ".bench-topped" if args.equal_compute else ".bench-done"
    done = {s: [k for k in seeds if os.path.exists(f"{out}/{s}/seed{k}/{mark}")] for s in searches}
    common = [k for k in seeds if all(k in done[s] for s in searches)]
    budget = budget_seconds(base, args.experiments)
    print(f"\n{args.landscape} landscape: {len(common)} seeds finished by every search; "
          f"reference (full precision) PPL {fp:.4f}; budget {args.experiments} experiments"
          + (f", then trial seconds up to {budget:.0f} ({args.experiments} base trials)" if args.equal_compute else ""))
    gaps = {}
    for s in searches:
        fr, secs, keeps, exps = [], [], [], []
        for k in common:
            w = f"{out}/{s}/seed{k}"
            rows = results_rows(w)
            b, best = best_of(rows)
            fr.append((b - best) / (b - fp))
            secs.append(trial_seconds(w))
            keeps.append(sum(1 for r in rows if r["status"] == "keep"))
            exps.append(len(rows) - 1)
        gaps[s] = fr
        if fr:
            m, sd, se = describe(fr)
            exps = statistics.mean(exps)
            print(f"  {s:8s} as selected: gap closed {m:6.1%} (sd {sd:.1%}, se {se:.1%}); "
                  f"trial seconds {statistics.mean(secs):.0f} per seed ({min(secs):.0f}-{max(secs):.0f}), "
                  f"{exps:.1f} experiments, {statistics.mean(keeps):.1f} keeps")
    if args.fresh and args.landscape == "qat" and common:
        fresh = Fresh(args.bin, out, space["recipe"])
        K = args.fresh
        base_runs = [fresh(base, t) for t in range(2 * K + 2)]
        b = statistics.mean(base_runs)
        print(f"  baseline retrained on training seeds 0-{2 * K + 1}: {b:.4f} (sd {statistics.stdev(base_runs):.4f})")
        for s in searches:
            fr = []
            for k in common:
                best = [fresh(f"{out}/{s}/seed{k}", t) for t in range(1, K + 1)]
                fr.append((b - statistics.mean(best)) / (b - fp))
            gaps[s] = fr
            m, sd, se = describe(fr)
            print(f"  {s:8s} retrained on seeds 1-{K}: gap closed {m:6.1%} (sd {sd:.1%}, se {se:.1%})")
    if "builtin" in gaps and len(common) > 1:
        for s in searches:
            if s == "builtin":
                continue
            # Positive: the builtin search closed more of the gap.
            d = [a - c for a, c in zip(gaps["builtin"], gaps[s])]
            m, sd, se = describe(d)
            print(f"  builtin - {s}: {m:+.1%} per seed, paired sd {sd:.1%}, se {se:.1%} "
                  f"({sum(x > 0 for x in d)} of {len(d)} seeds ahead)")
    print("  per seed (gap closed, " + ("retrained" if args.fresh and args.landscape == "qat" else "as selected")
          + "): " + "; ".join(f"{k}: " + " ".join(f"{s} {gaps[s][i]:.0%}" for s in searches)
                              for i, k in enumerate(common)))


def bench(args):
    args.bin = os.path.abspath(args.bin)
    ensure_optuna(args.python)
    out = os.path.abspath(f"{args.out}/{args.landscape}")
    os.makedirs(out, exist_ok=True)
    base = f"{out}/base"
    if not os.path.exists(f"{base}/report/demo-summary.json"):
        shutil.rmtree(base, ignore_errors=True)
        cmd = [args.bin, "demo", "--dir", base, "--experiments", "0"]
        if args.landscape == "compress":
            cmd += ["--track", "compress"]
        print(f"base workspace: {' '.join(cmd)}", flush=True)
        sh(cmd, f"{out}/base.log")
    # The demo's run branch (autoqat/demo), whatever tag its autoqat.toml names.
    tag = json.load(open(f"{base}/report/demo-summary.json"))["branch"].split("/", 1)[1]
    space_path = f"{out}/space.json"
    space = search_space(args.bin, base)
    json.dump(space, open(space_path, "w"), indent=1)
    seeds = parse_seeds(args.seeds)
    searches = args.searches.split(",")
    budget = budget_seconds(base, args.experiments)
    if not args.summary_only:
        for k in seeds:
            for s in searches:
                run_search(args, out, base, tag, space_path, s, k)
                if args.equal_compute:
                    top_up(args, out, base, tag, space_path, s, k, budget)
    summary(args, out, base, seeds, searches, space)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode")
    p = sub.add_parser("propose", help="one answer of the peer proposer (autoqat run calls this)")
    p.add_argument("--sampler", choices=("tpe", "random"), required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--space", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--workspace", required=True)
    for a in (ap,):
        a.add_argument("--bin", default=f"{ROOT}/target/release/autoqat")
        a.add_argument("--python", default=f"{ROOT}/.venv/bin/python")
        a.add_argument("--out", default="/tmp/search-peers")
        a.add_argument("--landscape", choices=("qat", "compress"), default="qat")
        a.add_argument("--seeds", default="0-19", help="e.g. 0-19 or 0,3,5")
        a.add_argument("--searches", default=",".join(SEARCHES))
        a.add_argument("--experiments", type=int, default=20, help="experiments after the baseline")
        a.add_argument("--fresh", type=int, default=0, help="qat: retrain each best on K fresh training seeds")
        a.add_argument("--summary-only", action="store_true")
        a.add_argument("--equal-compute", action="store_true",
                       help="after the experiments, run each search on until its trial seconds reach "
                            "EXPERIMENTS full trials of the base recipe")
    args = ap.parse_args()
    if args.mode == "propose":
        propose(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
