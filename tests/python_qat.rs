//! The python-qat template (`autoqat init --template python-qat`): program.md, a read-only
//! prepare.py and the mutable train.py, run by the loop like any trial. The layout and the
//! refusals run against a stub trial (no Python); the end-to-end runs and the protocol check
//! run the template's real train.py on the tiny Llama fixture with the project's Python.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{git, s};

/// Runs the built `autoqat` in `dir` with `AUTOQAT_PYTHON` set to `py` (when given).
fn autoqat(dir: &Path, args: &[&str], py: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autoqat"));
    cmd.args(args).current_dir(dir);
    if let Some(py) = py {
        cmd.env("AUTOQAT_PYTHON", py);
    }
    cmd.output().expect("running autoqat")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// `autoqat init --template python-qat` in a fresh directory; the settings edited by `settings`
/// (and committed), so that a test can swap the trial or the proposer.
fn workspace(settings: impl Fn(String) -> String) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    ok(&autoqat(tmp.path(), &["init", "--template", "python-qat", s(&ws)], None));
    let toml = std::fs::read_to_string(ws.join("autoqat.toml")).unwrap();
    std::fs::write(ws.join("autoqat.toml"), settings(toml)).unwrap();
    commit(&ws, "test settings");
    (tmp, ws)
}

fn commit(ws: &Path, msg: &str) {
    git(ws, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", msg]);
}

/// `[provider]` as a `command` proposer that answers `answers` in turn (then the last again);
/// the answers, the counter and the last prompt (`prompt.txt`) live outside the workspace.
fn scripted(settings: &str, dir: &Path, answers: &[serde_json::Value]) -> String {
    for (i, a) in answers.iter().enumerate() {
        std::fs::write(dir.join(format!("answer{i}.json")), a.to_string()).unwrap();
    }
    let script = dir.join("propose.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nd='{d}'\nn=$(cat \"$d/n\" 2>/dev/null || echo 0)\n[ -f \"$d/answer$n.json\" ] || n={last}\necho $((n + 1)) > \"$d/n\"\ncat > \"$d/prompt.txt\"\ncat \"$d/answer$n.json\"\n",
            d = dir.display(),
            last = answers.len() - 1
        ),
    )
    .unwrap();
    settings.replace(
        "[provider]\nkind = \"builtin\"",
        &format!("[provider]\nkind = \"command\"\ncommand = \"sh {}\"", script.display()),
    )
}

fn edit(path: &str, search: &str, replace: &str, description: &str) -> serde_json::Value {
    serde_json::json!({"description": description, "rationale": "test",
        "edits": [{"path": path, "search": search, "replace": replace}]})
}

/// A trial that costs nothing: it notes the seed it ran with and writes a summary.
const STUB: &str = "grep '^SEED = ' train.py >> ../trials.count; mkdir -p {run_dir}; echo '{\"status\":\"ok\",\"eval_ppl\":5.0}' > {run_dir}/summary.json";

fn stub_trial(toml: String) -> String {
    toml.replace("command = \"autoqat python train.py --run-dir {run_dir}\"", &format!("command = '''{STUB}'''"))
        .replace("baseline_repeats = 3", "baseline_repeats = 1")
        .replace("command = \"autoqat python prepare.py --eval {run_dir}/hf", "command = \"\" # ")
}

/// results.tsv rows as (exp, commit, status, eval_ppl, description).
fn rows(ws: &Path) -> Vec<(String, String, String, Option<f64>, String)> {
    let text = std::fs::read_to_string(ws.join("results.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c[0].into(), c[1].into(), c[3].into(), c[4].parse().ok(), c[15].into())
        })
        .collect()
}

const COMMENT_SEARCH: &str = "LR = 1e-3  # peak AdamW learning rate";
const WARMUP_SEARCH: &str = "    return 1.0 if warm <= 0 else min(1.0, step / warm)";
const WARMUP_COSINE: &str = "    return 1.0 if warm <= 0 else 0.5 * (1 - math.cos(math.pi * min(1.0, step / warm)))";

#[test]
fn init_writes_the_python_layout_and_an_edit_of_prepare_py_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (_t, ws) = workspace(|t| {
        let answers = [edit("prepare.py", "STEPS = 30", "STEPS = 3000", "a longer budget")];
        // A declared constant train.py does not have is said at the start.
        scripted(&stub_trial(t), &dir, &answers) + "[[validator.fields]]\nkey = \"NO_SUCH\"\nchoices = [1, 2]\n"
    });
    for f in ["program.md", "prepare.py", "train.py", "autoqat.toml", ".gitignore", "prompts/propose.md"] {
        assert!(ws.join(f).is_file(), "{f} missing");
    }
    assert!(!ws.join("experiments").exists(), "no TOML recipe in the python layout");
    let settings = std::fs::read_to_string(ws.join("autoqat.toml")).unwrap();
    assert!(settings.contains("mutable_paths = [\"train.py\"]") && settings.contains("kind = \"python\""));
    let gitignore = std::fs::read_to_string(ws.join(".gitignore")).unwrap();
    assert!(gitignore.contains("__pycache__/") && gitignore.contains("runs/"), "{gitignore}");
    // train.py writes what `autoqat trial` writes: the columns come from prepare.py.
    let prepare = std::fs::read_to_string(ws.join("prepare.py")).unwrap();
    let columns = autoqat_workspace::run::STEPS_COLUMNS.map(|c| format!("\"{c}\"")).join(", ");
    assert!(prepare.replace("\n                 ", " ").contains(&columns), "prepare.py's STEPS_COLUMNS differ");
    let help = ok(&autoqat(&ws, &["init", "--help"], None));
    assert!(help.contains("python-qat"), "{help}");
    // A Python without torch (the venv's, its site-packages off) fails in one line saying so.
    if let Some(py) = common::qat::python() {
        let bare = dir.join("python-without-site-packages");
        std::fs::write(&bare, format!("#!/bin/sh\nexec '{}' -S \"$@\"\n", py.display())).unwrap();
        assert!(Command::new("chmod").arg("+x").arg(&bare).status().unwrap().success());
        let out = autoqat(&ws, &["python", "train.py"], Some(&bare));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("prepare.py: cannot import torch with"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        let doctor: serde_json::Value =
            serde_json::from_str(&ok(&autoqat(&ws, &["doctor", "--json"], Some(&bare)))).unwrap();
        assert_eq!(
            (doctor["python"].as_str(), doctor["python_from"].as_str()),
            (Some(s(&bare)), Some("AUTOQAT_PYTHON"))
        );
    }

    let run = autoqat(&ws, &["run", "--max-experiments", "2"], None);
    let out = ok(&run);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("validator field `NO_SUCH` is not a top-level `NO_SUCH = <literal>` of train.py"), "{err}");
    let r = rows(&ws);
    assert_eq!(r.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(), ["baseline", "invalid"], "{out}");
    let log = ok(&autoqat(&ws, &["log"], None));
    assert!(log.contains("path `prepare.py` is not mutable; only train.py may be edited"), "{log}");
    assert_eq!(std::fs::read_to_string(ws.parent().unwrap().join("trials.count")).unwrap().lines().count(), 1);
    assert_eq!(std::fs::read_to_string(ws.join("prepare.py")).unwrap(), prepare, "prepare.py untouched");
}

#[test]
fn a_comment_or_whitespace_only_edit_of_train_py_runs_no_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let answers = [
        edit("train.py", COMMENT_SEARCH, "LR = 0.001  # the peak learning rate, as before", "same lr, new comment"),
        edit(
            "train.py",
            WARMUP_SEARCH,
            "    return 1.0 if warm <= 0 else min(1.0,\n                                     step / warm)  # wrapped",
            "wrap a line",
        ),
        edit("train.py", WARMUP_SEARCH, WARMUP_COSINE, "cosine lambda warmup"),
        // The same program again, written differently: already tried.
        edit("train.py", WARMUP_SEARCH, &WARMUP_COSINE.replace("0.5 * ", "0.50 * "), "cosine again"),
        edit("train.py", WARMUP_SEARCH, &WARMUP_COSINE.replace("0.5 * ", "0.50 * "), "cosine again"),
        // The focus gate counts code lines too; broken code is refused naming its line.
        edit("train.py", "SEED = 0\n", &(0..10).map(|i| format!("X{i} = {i}\n")).collect::<String>(), "ten lines"),
        edit("train.py", "SEED = 0\n", &(0..10).map(|i| format!("X{i} = {i}\n")).collect::<String>(), "ten lines"),
        edit("train.py", "SEED = 0\n", "SEED = int(\n", "unclosed"),
    ];
    let (_t, ws) =
        workspace(|t| scripted(&stub_trial(t).replace("baseline_repeats = 1", "baseline_repeats = 2"), &dir, &answers));
    let out = ok(&autoqat(&ws, &["run", "--max-experiments", "6"], None));
    let r = rows(&ws);
    let status: Vec<&str> = r.iter().map(|r| r.2.as_str()).collect();
    // exp 1: a comment, then a wrapped line: both refused, no trial. exp 2: the cosine warmup
    // runs. exp 3: the same program with 0.50 for 0.5 is refused twice as already tried.
    // exp 4: ten new lines, twice. exp 5: an unclosed bracket.
    assert_eq!(status, ["baseline", "invalid", "discard", "invalid", "invalid", "invalid"], "{out}");
    // The baseline and its repeat (train.py's SEED shifted, then restored), and exp 2.
    let trials = std::fs::read_to_string(ws.parent().unwrap().join("trials.count")).unwrap();
    assert_eq!(trials, "SEED = 0\nSEED = 1\nSEED = 0\n", "{out}");
    let log = ok(&autoqat(&ws, &["log"], None));
    assert!(log.contains("the code runs the same as before"), "{log}");
    assert!(log.contains("this code was already tried"), "{log}");
    assert!(log.contains("the change touches 10 lines; at most 8 are allowed"), "{log}");
    assert!(log.contains("not valid Python: line 32: `(` is never closed"), "{log}");
    assert!(log.contains("+    return 1.0 if warm <= 0 else 0.5 * (1 - math.cos"), "the code diff: {log}");
}

/// The builtin search on train.py without torch (a stub trial): each proposal rewrites one
/// declared constant's line in place, comment kept, and none repeats.
#[test]
fn the_builtin_search_sets_train_py_constants_in_place() {
    let (_t, ws) = workspace(stub_trial);
    let out = ok(&autoqat(&ws, &["run", "--max-experiments", "4"], None));
    let r = rows(&ws);
    let desc: Vec<&str> = r.iter().map(|r| r.4.as_str()).collect();
    assert_eq!(desc[1..], ["set LR = 0.002", "set LAMBDA_WARMUP_FRAC = 0.4", "set MIN_LR_FRAC = 0.0"], "{out}");
    let train = git(&ws, &["show", &format!("{}:train.py", r[1].1)]);
    assert!(train.contains("\nLR = 0.002  # peak AdamW learning rate\n"), "{train}");
    assert_eq!(train.lines().count(), std::fs::read_to_string(ws.join("train.py")).unwrap().lines().count());
}

/// The tiny Llama fixture as a python-qat workspace through `autoqat prepare --model`: train
/// text, an eval text and a held-out text cut from the fixture's text; sizes for seconds.
fn tiny_python_workspace(settings: impl Fn(String) -> String) -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    let py = common::qat::python()?;
    let model = common::qat::tiny_model()?;
    let (tmp, ws) = workspace(|t| settings(t.replace("baseline_repeats = 3", "baseline_repeats = 1")));
    let text = std::fs::read_to_string(model.join("train.txt")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (train, rest) = lines.split_at(lines.len() * 3 / 4);
    let (eval, heldout) = rest.split_at(rest.len() / 2);
    for (name, part) in [("train.txt", train), ("eval.txt", eval), ("heldout.txt", heldout)] {
        std::fs::write(tmp.path().join(name), part.join("\n") + "\n").unwrap();
    }
    let t = |n: &str| tmp.path().join(n).display().to_string();
    let (train_t, eval_t, heldout_t) = (t("train.txt"), t("eval.txt"), t("heldout.txt"));
    let args = [
        "prepare",
        "--model",
        s(&model),
        "--train-text",
        &train_t,
        "--eval-text",
        &eval_t,
        "--heldout-text",
        &heldout_t,
    ];
    ok(&autoqat(&ws, &args, Some(&py)));
    // The goalposts of these tests: 4 steps of 4 x 32 tokens; windows of 64 every 32 tokens.
    let prepare = std::fs::read_to_string(ws.join("prepare.py")).unwrap();
    let mut small = prepare.clone();
    for (from, to) in [
        ("SEQ_LEN = 128", "SEQ_LEN = 32"),
        ("BATCH_SIZE = 8", "BATCH_SIZE = 4"),
        ("STEPS = 30", "STEPS = 4"),
        ("EVAL_EVERY = 10", "EVAL_EVERY = 2"),
        ("EVAL_CTX = 128", "EVAL_CTX = 64"),
        ("EVAL_STRIDE = 128", "EVAL_STRIDE = 32"),
        ("EVAL_MAX_TOKENS = 16384", "EVAL_MAX_TOKENS = 0"),
    ] {
        assert!(small.contains(from), "prepare.py lacks {from}");
        small = small.replacen(from, to, 1);
    }
    std::fs::write(ws.join("prepare.py"), small).unwrap();
    commit(&ws, "test sizes");
    Some((tmp, ws, py))
}

/// Checks a finished run: one commit per row, the branch head at the best row, a clean tree.
fn assert_run(ws: &Path, tag: &str) -> Vec<(String, String, String, Option<f64>, String)> {
    let r = rows(ws);
    for row in &r {
        let msg = git(ws, &["log", "-1", "--format=%B", &row.1]);
        assert!(msg.contains(&format!("Autoqat-Status: {}", row.2)), "{msg}");
    }
    let best = r
        .iter()
        .filter(|r| r.2 == "baseline" || r.2 == "keep")
        .min_by(|a, b| a.3.partial_cmp(&b.3).unwrap())
        .expect("a best row");
    let head = git(ws, &["rev-parse", &format!("autoqat/{tag}")]);
    assert!(head.trim().starts_with(&best.1) || best.1.starts_with(head.trim()), "head {head} best {best:?}");
    assert_eq!(git(ws, &["status", "--porcelain", "--untracked-files=no"]), "");
    r
}

#[test]
fn the_loop_searches_train_py_constants_with_the_builtin_proposer() {
    let Some((_t, ws, py)) = tiny_python_workspace(|t| t) else { return };
    let out = ok(&autoqat(&ws, &["run", "--max-experiments", "3"], Some(&py)));
    let r = assert_run(&ws, "python-qat");
    assert_eq!(r.len(), 3, "{out}");
    assert_eq!(r[0].2, "baseline");
    for row in &r {
        assert!(row.3.is_some_and(|p| p.is_finite() && p > 1.0), "{row:?}\n{out}");
    }
    // The builtin search sets declared constants of train.py, one at a time.
    assert!(r[1].4.starts_with("set LR = ") && r[2].4.starts_with("set "), "{r:?}");
    // The run directory holds what `autoqat trial` writes.
    let steps = autoqat_workspace::run::read_steps(&ws.join("runs/0000/steps.tsv")).unwrap();
    assert_eq!(steps.iter().map(|s| s.step).collect::<Vec<_>>(), [2, 4]);
    assert!(steps.iter().all(|s| s.eval_ppl.is_finite() && (s.q_neg1 + s.q_zero + s.q_pos1 - 1.0).abs() < 1e-4));
    let summary = autoqat_workspace::run::read_summary(&ws.join("runs/0000")).unwrap().unwrap();
    assert_eq!((summary.status.as_str(), summary.steps, summary.tokens), ("ok", 4, 4 * 4 * 32));
    assert!(summary.fp_ppl.is_some() && summary.eval_bpb.is_some() && summary.q_zero.is_some(), "{summary:?}");
    // The held-out score of the best, on train.py's export, by prepare.py's protocol.
    assert!(out.contains("held-out: exp") && out.contains("on the held-out text"), "{out}");
    assert_eq!(std::fs::read_to_string(ws.join("heldout.tsv")).unwrap().lines().count(), 2, "{out}");
}

#[test]
fn a_scripted_command_proposer_edits_the_code_of_train_py() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let answers = [
        // A whitespace-only answer is refused before any trial; the repair round edits the code.
        edit("train.py", COMMENT_SEARCH, "LR = 1e-3    # peak AdamW learning rate", "realign a comment"),
        edit("train.py", WARMUP_SEARCH, WARMUP_COSINE, "cosine lambda warmup"),
        edit(
            "train.py",
            "        loss = CE_WEIGHT * ce\n",
            "        loss = CE_WEIGHT * ce * 2.0\n",
            "double the CE term",
        ),
        // Code that raises: a crash row with the exception, from prepare.py's summary.
        edit("train.py", "        return LR * step / warm\n", "        return LR * step / 0\n", "a broken warmup"),
    ];
    let Some((_t, ws, py)) = tiny_python_workspace(|t| scripted(&t, &dir, &answers)) else { return };
    let out = ok(&autoqat(&ws, &["run", "--max-experiments", "4"], Some(&py)));
    let r = assert_run(&ws, "python-qat");
    let got: Vec<(&str, &str)> = r.iter().map(|r| (r.2.as_str(), r.4.as_str())).collect();
    assert_eq!(got.len(), 4, "{out}");
    assert_eq!(got[1].1, "cosine lambda warmup", "{out}");
    assert_eq!(got[2].1, "double the CE term", "{out}");
    assert_eq!(got[3], ("crash", "a broken warmup"), "{out}");
    assert!(r[..3].iter().all(|r| r.3.is_some_and(f64::is_finite)), "{r:?}");
    // Four trials (no run directory for the refused answer), and the log shows the code diffs.
    let runs: Vec<_> = std::fs::read_dir(ws.join("runs")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(runs.iter().filter(|n| !n.to_string_lossy().contains('-')).count(), 4, "{runs:?}");
    let log = ok(&autoqat(&ws, &["log"], Some(&py)));
    assert!(log.contains("+    return 1.0 if warm <= 0 else 0.5 * (1 - math.cos"), "{log}");
    // The proposer saw train.py as Python, its searchable constants as the schema.
    let prompt = std::fs::read_to_string(dir.join("prompt.txt")).unwrap();
    assert!(prompt.contains("```python\n\"\"\"train.py: ternary"), "{prompt}");
    assert!(prompt.contains("- LR (one of 0.001 | 0.002 | 0.003 | 0.0005"), "{prompt}");
    assert!(log.contains("+        loss = CE_WEIGHT * ce * 2.0"), "{log}");
    assert!(log.contains("error: ZeroDivisionError: float division by zero"), "{log}");
    let crashed = autoqat_workspace::run::read_summary(&ws.join("runs/0003")).unwrap().unwrap();
    assert_eq!((crashed.status.as_str(), crashed.fp_ppl), ("crash", None), "{crashed:?}");
    // The kept code is on the branch: its head holds the best experiment's train.py.
    let best = r.iter().rfind(|r| r.2 == "baseline" || r.2 == "keep").unwrap();
    let train = git(&ws, &["show", &format!("{}:train.py", best.1)]);
    assert_eq!(std::fs::read_to_string(ws.join("train.py")).unwrap(), train);
}

/// The same checkpoint scored by prepare.py's evaluation and by autoqat's (`autoqat eval` on
/// train.py's export, and the QAT trial's eval set with an `eval_max_tokens` cut): one PPL.
#[test]
fn prepare_py_scores_like_autoqat_on_the_same_tokens() {
    let Some((_t, ws, py)) = tiny_python_workspace(|t| t) else { return };
    ok(&autoqat(&ws, &["python", "train.py", "--run-dir", "runs/manual"], Some(&py)));
    let summary = autoqat_workspace::run::read_summary(&ws.join("runs/manual")).unwrap().unwrap();
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    let eval = |model: &str| -> serde_json::Value {
        let args = ["eval", "--model", model, "--text", "data/eval.txt", "--ctx", "64", "--stride", "32", "--json"];
        serde_json::from_str(&ok(&autoqat(&ws, &args, Some(&py)))).unwrap()
    };
    // The ternary student, as exported, and the full-precision model.
    let student = eval("runs/manual/hf");
    let (ppl, bpb) = (summary.eval_ppl.unwrap(), summary.eval_bpb.unwrap());
    assert!(rel(student["eval_ppl"].as_f64().unwrap(), ppl) < 1e-4, "{student} vs {summary:?}");
    assert!(rel(student["eval_bpb"].as_f64().unwrap(), bpb) < 1e-4, "{student} vs {summary:?}");
    let fp = eval("teacher");
    assert!(rel(fp["eval_ppl"].as_f64().unwrap(), summary.fp_ppl.unwrap()) < 1e-4, "{fp} vs {summary:?}");
    // A token cut: `autoqat trial`'s fp_ppl and prepare.py's evaluate(max_tokens=...) agree.
    let recipe = "[model]\nsource = \"../teacher\"\n[data]\ntrain_text = \"../data/train.txt\"\neval_text = \"../data/eval.txt\"\nseq_len = 32\neval_ctx = 64\neval_stride = 48\neval_max_tokens = 300\n[budget]\nsteps = 1\neval_every = 1\ncheckpoint_every = 0\n[optim]\nbatch_size = 1\n[runtime]\ndevice = \"cpu\"\n";
    std::fs::create_dir_all(ws.join("exp")).unwrap();
    std::fs::write(ws.join("exp/train.toml"), recipe).unwrap();
    let _ = autoqat(&ws, &["trial", "--config", "exp/train.toml", "--run-dir", "runs/rust"], Some(&py));
    let rust = autoqat_workspace::run::read_summary(&ws.join("runs/rust")).unwrap().unwrap();
    // And the budget: one pass of STEPS batches, a second pass refused.
    let code = "import json, prepare\nev = prepare.evaluate(prepare.load_model(), ctx=64, stride=48, max_tokens=300)\n\
                ev['batches'] = sum(1 for _ in prepare.batches(0))\n\
                tok, prepare.tokenizer = prepare.tokenizer(), None\nids = prepare.train_ids()\n\
                ev['cache'] = ids.tolist() == tok.encode(open(prepare.TRAIN_TEXT).read()).ids\n\
                try:\n    next(prepare.batches(1))\n\
                except RuntimeError as e:\n    ev['again'] = str(e)\nprint(json.dumps(ev))";
    let out = ok(&autoqat(&ws, &["python", "-c", code], Some(&py)));
    let ours: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(rel(ours["eval_ppl"].as_f64().unwrap(), rust.fp_ppl.unwrap()) < 1e-4, "{ours} vs {rust:?}");
    assert_eq!(ours["batches"], 4, "{ours}");
    // The train ids come from `autoqat prepare`'s token cache (no tokenizer at hand) and are
    // the tokenizer's.
    assert!(ws.join("data/train.txt.tokens").is_file());
    assert_eq!(ours["cache"], true, "{ours}");
    assert!(ours["again"].as_str().is_some_and(|e| e.contains("called twice")), "{ours}");
}

/// The proof on the demo's own teacher (`autoqat prepare` in a python-qat workspace builds or
/// reuses it, offline): the builtin search over train.py's constants, then a scripted proposer
/// whose comment-only answer runs no trial and whose repair edits the lambda ramp.
#[test]
#[ignore = "slow: the demo's standard teacher (about 2 minutes to build once, then cached) and 30-step trials"]
fn on_the_demo_teacher_the_builtin_and_a_code_editing_proposer_run_the_loop() {
    let Some(py) = common::qat::python() else { return };
    let (_t, ws) = workspace(|t| t.replace("baseline_repeats = 3", "baseline_repeats = 1"));
    ok(&autoqat(&ws, &["prepare"], Some(&py)));
    let out = ok(&autoqat(&ws, &["run", "--max-experiments", "2"], Some(&py)));
    let r = assert_run(&ws, "python-qat");
    assert_eq!((r.len(), r[1].4.starts_with("set LR = ")), (2, true), "{out}");
    let summary = autoqat_workspace::run::read_summary(&ws.join("runs/0000")).unwrap().unwrap();
    // The teacher's PPL under this protocol is the QAT demo's (eval text cut the same way).
    assert!(summary.fp_ppl.is_some_and(|p| p > 1.0 && p < 3.0), "{summary:?}");

    let tmp = tempfile::tempdir().unwrap();
    let answers = [
        edit("train.py", COMMENT_SEARCH, "LR = 0.001  # peak AdamW learning rate (1e-3)", "same lr"),
        edit("train.py", WARMUP_SEARCH, WARMUP_COSINE, "cosine lambda warmup"),
    ];
    let (_t2, ws2) =
        workspace(|t| scripted(&t.replace("baseline_repeats = 3", "baseline_repeats = 1"), tmp.path(), &answers));
    ok(&autoqat(&ws2, &["prepare"], Some(&py)));
    let out = ok(&autoqat(&ws2, &["run", "--max-experiments", "2"], Some(&py)));
    let r = assert_run(&ws2, "python-qat");
    assert_eq!(r[1].4, "cosine lambda warmup", "{out}");
    assert!(!ws2.join("runs/0002").exists() && ws2.join("runs/0001/summary.json").is_file());
    let log = ok(&autoqat(&ws2, &["log"], Some(&py)));
    assert!(log.contains("+    return 1.0 if warm <= 0 else 0.5 * (1 - math.cos"), "{log}");
}
