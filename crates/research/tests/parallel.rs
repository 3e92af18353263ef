//! The parallel loop (`executor.workers = 2`) on CPU with a toy trial: overlapping trials in
//! their own worktrees, the superseded/replay merge policy, and kill -9 of the driver with two
//! trials in flight followed by `--resume`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use autoqat_research::driver::{Driver, RunOptions, StopReason};
use autoqat_research::results::{Record, Status};
use autoqat_research::settings::Settings;
use common::*;

/// The toy recipe: the optimum is lr = 0.003 and a large width.
const RECIPE: &str = "# toy recipe\n[optim]\nlr = 0.001\nseed = 0\n\n[model]\nwidth = 0\n";

/// The toy trial: ppl = 40 + 10*|log10(lr/0.003)| - width. It logs its start and end (with
/// its worker, cwd and thread share) to `$2`, naps `$3` s at lr = 0.003 and `$4` s at
/// width = 1, and writes steps.tsv and summary.json like a real trial.
const TRIAL: &str = r#"#!/bin/sh
set -e
dir="$1"; log="$2"
mkdir -p "$dir"
lr=$(sed -n 's/^lr = //p' experiments/train.toml)
width=$(sed -n 's/^width = //p' experiments/train.toml)
echo "start $AUTOQAT_EXP ${AUTOQAT_WORKER:--} ${OMP_NUM_THREADS:--} $(pwd)" >> "$log"
sleep 0.2
if [ "$lr" = 0.003 ]; then sleep "$3"; fi
if [ "$width" = 1 ]; then sleep "$4"; fi
ppl=$(awk -v lr="$lr" -v w="$width" 'BEGIN{l=log(lr/0.003)/log(10); if(l<0)l=-l; printf "%.6f", 40+10*l-w}')
printf 'step\tlambda\ttrain_loss\ttrain_ppl\teval_ppl\teval_bpb\tlr\ttime_s\tbest_ppl\tq_neg1\tq_zero\tq_pos1\n' > "$dir/steps.tsv"
printf '10\t1\t4\t50\t%s\t2\t0.001\t1\t%s\t0.3\t0.4\t0.3\n' $ppl $ppl >> "$dir/steps.tsv"
printf '{"status":"ok","eval_ppl":%s,"steps":10,"time_s":0.1}' "$ppl" > "$dir/summary.json"
echo "end $AUTOQAT_EXP" >> "$log"
"#;

/// A committed toy workspace with two workers; `naps` are the trial's `$3 $4`.
fn parallel_workspace(provider: &str, naps: (f64, f64)) -> tempfile::TempDir {
    let ws = workspace("");
    let p = ws.path();
    let log = p.join(".trials.log");
    let settings = format!(
        r#"[run]
tag = "t"
mutable_paths = ["experiments/train.toml"]
max_changed_lines = 4

[trial]
command = "sh ./trial.sh {{run_dir}} {} {} {}"
timeout_s = 30

{provider}

[noise]
confirm_seed = false
baseline_repeats = 1

[executor]
workers = 2

[validator]
kind = "toml"
[[validator.fields]]
key = "optim.lr"
choices = [0.0003, 0.001, 0.003, 0.01]
[[validator.fields]]
key = "model.width"
choices = [0, 1, 2]
"#,
        log.display(),
        naps.0,
        naps.1
    );
    std::fs::write(p.join("autoqat.toml"), settings).unwrap();
    std::fs::write(p.join("experiments/train.toml"), RECIPE).unwrap();
    std::fs::write(p.join("trial.sh"), TRIAL).unwrap();
    let excl = p.join(".git/info/exclude");
    let mut e = std::fs::read_to_string(&excl).unwrap_or_default();
    e.push_str("/.trials.log\n/.canned/\n");
    std::fs::write(excl, e).unwrap();
    git(p, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "parallel toy"]);
    ws
}

/// The trial log's lines as (event, exp, rest).
fn trial_events(ws: &Path) -> Vec<(String, u32, Vec<String>)> {
    std::fs::read_to_string(ws.join(".trials.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace().map(str::to_string);
            let ev = w.next().unwrap();
            let exp = w.next().unwrap().parse().unwrap();
            (ev, exp, w.collect())
        })
        .collect()
}

/// No journal, worktree or running ref is left, and git knows no extra worktree.
fn assert_no_flight_left(ws: &Path) {
    let dir = |d: &str| std::fs::read_dir(ws.join(d)).map(|r| r.count()).unwrap_or(0);
    assert_eq!(dir(".autoqat/inflight"), 0, "a journal outlived its experiment");
    assert_eq!(dir(".autoqat/worktrees"), 0, "a worktree outlived its experiment");
    assert_eq!(git(ws, &["worktree", "list"]).lines().count(), 1, "{}", git(ws, &["worktree", "list"]));
    assert!(git(ws, &["for-each-ref", "refs/autoqat/t/running/"]).trim().is_empty());
    assert!(git(ws, &["branch", "--list", "autoqat-worktree/*"]).trim().is_empty());
}

fn run_in_process(ws: &Path, max: u32, resume: bool) -> (StopReason, Vec<Record>) {
    let s = Settings::load(ws).unwrap();
    let opts = RunOptions { max_experiments: Some(max), resume, quiet: true, ..RunOptions::default() };
    let sum = Driver::open(ws, s, opts, None).unwrap().run().unwrap();
    (sum.stop, sum.records)
}

#[test]
fn two_local_workers_overlap_in_worktrees_and_lose_or_duplicate_nothing() {
    let ws = parallel_workspace("[provider]\nkind = \"builtin\"", (0.3, 0.3));
    let (stop, recs) = run_in_process(ws.path(), 8, false);
    assert_eq!(stop, StopReason::MaxExperiments);
    assert_eq!(recs.len(), 8);
    assert_eq!(recs, assert_consistent(ws.path(), "t"));
    assert_no_flight_left(ws.path());
    let events = trial_events(ws.path());
    // Every experiment's trial ran exactly once (no repeats configured).
    for r in &recs {
        let starts = events.iter().filter(|(e, x, _)| e == "start" && *x == r.exp).count();
        assert_eq!(starts, 1, "exp {} started {starts} times:\n{events:?}", r.exp);
    }
    // The baseline ran alone in the workspace; every other trial in its own worktree, on a
    // worker slot of its own with half of the cores.
    let cores = std::thread::available_parallelism().unwrap().get();
    let mut running: Vec<(u32, String)> = Vec::new();
    let mut most = 0;
    for (ev, exp, rest) in &events {
        if ev == "end" {
            running.retain(|(x, _)| x != exp);
            continue;
        }
        let (worker, threads, cwd) = (&rest[0], &rest[1], &rest[2]);
        if *exp == 0 {
            assert_eq!(Path::new(cwd).canonicalize().unwrap(), ws.path().canonicalize().unwrap());
            continue;
        }
        assert!(cwd.contains(".autoqat/worktrees/autoqat-t-"), "exp {exp} ran in {cwd}");
        assert_eq!(threads, &(cores / 2).max(1).to_string(), "exp {exp}");
        assert!(
            running.iter().all(|(_, w)| w != worker),
            "exp {exp} shares worker {worker} with a running trial: {events:?}"
        );
        running.push((*exp, worker.clone()));
        most = most.max(running.len());
    }
    assert_eq!(most, 2, "two trials never overlapped (or more than two did): {events:?}");
    // The search still finds the toy optimum.
    let best = autoqat_research::results::best(&recs).unwrap();
    assert!(best.eval_ppl.unwrap() < 40.0, "{recs:#?}");
    // `autoqat results --rebuild` gives the same file.
    let live = std::fs::read_to_string(ws.path().join("results.tsv")).unwrap();
    autoqat_research::driver::rebuild(ws.path(), "t").unwrap();
    assert_eq!(live, std::fs::read_to_string(ws.path().join("results.tsv")).unwrap());
}

#[test]
fn a_keep_is_confirmed_by_a_second_seed_in_its_worktree() {
    let ws = parallel_workspace("[provider]\nkind = \"builtin\"", (0.3, 0.3));
    let p = ws.path();
    let text =
        std::fs::read_to_string(p.join("autoqat.toml")).unwrap().replace("confirm_seed = false", "confirm_seed = true");
    std::fs::write(p.join("autoqat.toml"), text).unwrap();
    git(p, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "confirm"]);
    let (_, recs) = run_in_process(p, 6, false);
    assert_consistent(p, "t");
    assert_no_flight_left(p);
    let events = trial_events(p);
    let keeps: Vec<&Record> = recs.iter().filter(|r| r.status() == Status::Keep).collect();
    assert!(!keeps.is_empty(), "{recs:#?}");
    for r in keeps {
        assert!(r.confirm_ppl.is_some(), "exp {} kept without its second seed", r.exp);
        assert!(p.join(format!("runs/{:04}-seed2/summary.json", r.exp)).exists());
        let starts: Vec<&Vec<String>> =
            events.iter().filter(|(e, x, _)| e == "start" && *x == r.exp).map(|e| &e.2).collect();
        assert_eq!(starts.len(), 2, "exp {}: {events:?}", r.exp);
        assert!(starts.iter().all(|s| s[2].contains(".autoqat/worktrees/")), "{starts:?}");
        // The shifted seed lived in the worktree only: the kept recipe has the original one.
        let recipe = git(p, &["show", &format!("{}:experiments/train.toml", r.commit)]);
        assert!(recipe.contains("seed = 0"), "{recipe}");
    }
}

#[test]
fn a_change_overtaken_by_a_keep_is_superseded_and_replayed_on_the_new_best() {
    // exp 1 (lr 0.003, 3 s) and exp 2 (width 2, quick) both start from the baseline; exp 2 is
    // kept first, so exp 1 finishes on a stale parent. exp 3 (width 1, 10 s) starts from exp 2;
    // exp 4 is exp 1's change re-applied on exp 2 (3 s) and is kept; exp 3 then lands stale
    // and worse than its parent: a plain discard. The naps leave seconds of slack either way
    // for a loaded machine.
    let ws = parallel_workspace("", (3.0, 10.0));
    let p = ws.path();
    let lr = |desc: &str| proposal(desc, "lr = 0.001", "lr = 0.003");
    let answers =
        [lr("lr 0.003"), proposal("width 2", "width = 0", "width = 2"), proposal("width 1", "width = 2", "width = 1")];
    let provider = canned_proposer(p, &answers);
    let text =
        std::fs::read_to_string(p.join("autoqat.toml")).unwrap().replace("[noise]", &format!("{provider}\n\n[noise]"));
    std::fs::write(p.join("autoqat.toml"), text).unwrap();
    git(p, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "canned"]);
    let (_, recs) = run_in_process(p, 5, false);
    let st: Vec<Status> = recs.iter().map(|r| r.status()).collect();
    assert_eq!(st, [Status::Baseline, Status::Superseded, Status::Keep, Status::Discard, Status::Keep], "{recs:#?}");
    let ppl = |i: usize| recs[i].eval_ppl.unwrap();
    assert!((ppl(1) - 40.0).abs() < 1e-6 && (ppl(2) - 42.771213).abs() < 1e-5 && (ppl(4) - 38.0).abs() < 1e-6);
    assert!(recs[4].description.contains("exp 1 re-applied on exp 2"), "{}", recs[4].description);
    assert_eq!(recs[4].parent, recs[2].commit, "the replay runs on the new best");
    assert_eq!(recs[1].parent, recs[0].commit, "exp 1 was tried against the baseline");
    assert_eq!(recs[3].parent, recs[2].commit);
    let recipe = std::fs::read_to_string(p.join("experiments/train.toml")).unwrap();
    assert!(recipe.contains("lr = 0.003") && recipe.contains("width = 2"), "{recipe}");
    assert_consistent(p, "t");
    assert_no_flight_left(p);
    let msg = git(p, &["log", "-1", "--format=%B", &recs[1].commit]);
    assert!(msg.contains("Superseded: exp 2 was kept while this ran"), "{msg}");
    // The proposer saw what was running: the third prompt lists exp 1 in flight.
    let prompt = std::fs::read_to_string(p.join(".canned/prompt2.txt")).unwrap();
    let flight = prompt.split("# Trials in flight").nth(1).unwrap_or("");
    assert!(flight.contains("exp 1 (worker 0): lr 0.003"), "{prompt}");
}

/// Not a test on its own: the body of a driver child process (see `run_child`).
#[test]
fn parallel_driver_child() {
    let Ok(ws) = std::env::var("AQ_PAR_WS") else { return };
    autoqat_research::driver::install_signal_handlers();
    let s = Settings::load(Path::new(&ws)).unwrap();
    let opts = RunOptions {
        max_experiments: std::env::var("AQ_PAR_MAX").ok().and_then(|v| v.parse().ok()),
        resume: std::env::var("AQ_PAR_RESUME").is_ok(),
        quiet: true,
        ..RunOptions::default()
    };
    let summary = Driver::open(Path::new(&ws), s, opts, None).unwrap().run().unwrap();
    println!("STOP: {}", summary.stop);
}

fn run_child(ws: &Path, max: u32, resume: bool, kill_at: Option<&str>) -> Output {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "parallel_driver_child", "--nocapture", "--test-threads", "1"])
        .env("AQ_PAR_WS", ws)
        .env("AQ_PAR_MAX", max.to_string())
        .env_remove("AUTOQAT_TEST_KILL_AT");
    if resume {
        c.env("AQ_PAR_RESUME", "1");
    }
    if let Some(k) = kill_at {
        c.env("AUTOQAT_TEST_KILL_AT", k);
    }
    c.output().unwrap()
}

#[test]
fn kill_9_with_two_trials_in_flight_then_resume_loses_nothing() {
    // trial:3 and trial:4 fire as a second trial starts beside a running one; the others while
    // two are in flight and one of them is being recorded.
    let points = ["after_commit:3", "trial:3", "trial:4", "after_trial:2", "before_row:3"];
    let mut handles = Vec::new();
    for point in points {
        handles.push(std::thread::spawn(move || {
            let ws = parallel_workspace("[provider]\nkind = \"builtin\"", (0.5, 0.5));
            let killed = run_child(ws.path(), 6, false, Some(point));
            assert_resume_loses_nothing(ws.path(), point, 6, killed, || run_child(ws.path(), 6, true, None));
            assert_no_flight_left(ws.path());
        }));
    }
    for h in handles {
        if let Err(e) = h.join() {
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn a_wrong_executor_setting_is_named_with_its_fix() {
    let parse = |extra: &str| {
        let text = format!("[run]\nmutable_paths = [\"experiments/train.toml\"]\n{extra}");
        Settings::parse(&text, Path::new("autoqat.toml")).err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert!(parse("[executor]\nkind = \"k8s\"").contains("executor.kind = \"k8s\"; expected local or slurm"));
    assert!(parse("[executor]\nworkers = 0").contains("executor.workers must be at least 1"));
    let e = parse("[executor.slurm]\nextra = [\"mem=32G\"]");
    assert!(e.contains("\"mem=32G\" is not one sbatch option") && e.contains("--mem=32G"), "{e}");
    assert!(parse("[executor.slurm]\npoll_s = 0").contains("poll_s must be positive"));
    assert!(parse("[executor]\nworkers = 4\ndevices = [\"0\", \"1\"]\n[executor.slurm]\ngres = \"gpu:1\"").is_empty());
    let e = Driver::open(
        Path::new("/nonexistent"),
        Settings::default(),
        RunOptions { executor: Some("k8s".into()), ..RunOptions::default() },
        None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("--executor k8s: expected local or slurm"), "{e}");
}

#[test]
fn the_stop_file_lets_the_trials_in_flight_finish() {
    let ws = parallel_workspace("[provider]\nkind = \"builtin\"", (0.3, 0.3));
    let p = ws.path();
    // Experiment 3's trial drops the stop file; 4 (and 5) are in flight or queued by then.
    let text = std::fs::read_to_string(p.join("autoqat.toml")).unwrap().replace(
        "command = \"sh ./trial.sh {run_dir}",
        &format!("command = \"if [ $AUTOQAT_EXP = 3 ]; then touch {}/STOP; fi; sh ./trial.sh {{run_dir}}", p.display()),
    );
    std::fs::write(p.join("autoqat.toml"), text).unwrap();
    git(p, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "stop at 3"]);
    let (stop, recs) = run_in_process(p, 20, false);
    assert_eq!(stop, StopReason::StopFile);
    assert!((4..=6).contains(&recs.len()), "the trials in flight finish, nothing new starts: {recs:#?}");
    assert_eq!(recs, assert_consistent(p, "t"));
    assert_no_flight_left(p);
    assert!(!p.join("STOP").exists(), "the stop file is consumed");
}

#[test]
fn sigint_stops_both_trials_and_resume_runs_them_again() {
    let ws = parallel_workspace("[provider]\nkind = \"builtin\"", (5.0, 5.0));
    let p = ws.path();
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "parallel_driver_child", "--nocapture", "--test-threads", "1"])
        .env("AQ_PAR_WS", p)
        .env("AQ_PAR_MAX", "5")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    // Two trials running: two journals and, in the trial log, two starts after the baseline.
    let t = std::time::Instant::now();
    while trial_events(p).iter().filter(|(e, x, _)| e == "start" && *x > 0).count() < 2 {
        assert!(t.elapsed().as_secs() < 60, "two trials never ran at once: {:?}", trial_events(p));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    assert!(child.wait().unwrap().success());
    let journals = std::fs::read_dir(p.join(".autoqat/inflight")).unwrap().count();
    assert!(journals >= 1, "the interrupted experiments wait in their journals");
    assert_eq!(git(p, &["worktree", "list"]).lines().count(), 1, "their worktrees are gone");
    assert_clean(p);
    // Resumed with one worker: what was in flight is still the parallel loop's to finish.
    let s = Settings::load(p).unwrap();
    let opts =
        RunOptions { max_experiments: Some(5), resume: true, quiet: true, workers: Some(1), ..RunOptions::default() };
    let recs = Driver::open(p, s, opts, None).unwrap().run().unwrap().records;
    assert_eq!(recs.len(), 5);
    assert_eq!(recs, assert_consistent(p, "t"));
    assert_no_flight_left(p);
}
