//! The research loop end to end, in throwaway git workspaces with a toy trial script: keep and
//! discard, crash, timeout, NaN, pruning, invalid answers and repair, noise, foreign trials,
//! stop file, signals, and the audit trail that results.tsv can be rebuilt from.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use autoqat_research::driver::{Driver, RunOptions, StopReason};
use autoqat_research::results::{Record, Status};
use autoqat_research::settings::Settings;
use common::*;

/// Not a test on its own: the body of a driver child process (see `spawn_driver`).
#[test]
fn driver_child() {
    let Ok(ws) = std::env::var("AQ_CHILD_WS") else { return };
    let _ = tracing_subscriber::fmt().with_env_filter("debug").with_writer(std::io::stderr).try_init();
    autoqat_research::driver::install_signal_handlers();
    let s = Settings::load(Path::new(&ws)).unwrap();
    let opts = RunOptions {
        max_experiments: std::env::var("AQ_CHILD_MAX").ok().and_then(|v| v.parse().ok()),
        resume: std::env::var("AQ_CHILD_RESUME").is_ok(),
        ..RunOptions::default()
    };
    let summary = Driver::open(Path::new(&ws), s, opts, None).unwrap().run().unwrap();
    println!("STOP: {}", summary.stop);
}

/// Runs the driver in a child process (this test binary, filtered to `driver_child`).
fn spawn_driver(ws: &Path, max: u32, resume: bool, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "driver_child", "--nocapture", "--test-threads", "1"])
        .env("AQ_CHILD_WS", ws)
        .env("AQ_CHILD_MAX", max.to_string())
        .env_remove("AUTOQAT_TEST_KILL_AT");
    if resume {
        c.env("AQ_CHILD_RESUME", "1");
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn run_child(ws: &Path, max: u32, resume: bool, env: &[(&str, &str)]) -> Output {
    spawn_driver(ws, max, resume, env).output().unwrap()
}

fn run_in_process(ws: &Path, max: u32, resume: bool) -> (StopReason, Vec<Record>) {
    let s = Settings::load(ws).unwrap();
    let opts = RunOptions { max_experiments: Some(max), resume, quiet: true, ..RunOptions::default() };
    let sum = Driver::open(ws, s, opts, None).unwrap().run().unwrap();
    (sum.stop, sum.records)
}

fn set_method(m: &str) -> String {
    proposal(&format!("method {m}"), "method = \"absmean\"", &format!("method = \"{m}\""))
}

fn statuses(recs: &[Record]) -> Vec<Status> {
    recs.iter().map(|r| r.status()).collect()
}

/// Alive and not a zombie (a killed orphan may wait for a reaper that a container lacks).
fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => unsafe { libc::kill(pid, 0) == 0 },
    }
}

#[test]
fn builtin_loop_keeps_improvements_and_audits_everything() {
    let ws = workspace(&settings_toml("[provider]\nkind = \"builtin\"", ""));
    // Only the harmless values, so that this run is fast.
    let toml = settings_toml("[provider]\nkind = \"builtin\"", "")
        .replace(r#", "crash", "hang", "nan", "slowbad", "hangonce""#, "");
    std::fs::write(ws.path().join("autoqat.toml"), toml).unwrap();
    git(ws.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "settings"]);
    let (stop, recs) = run_in_process(ws.path(), 6, false);
    assert_eq!(stop, StopReason::MaxExperiments);
    assert_eq!(recs.len(), 6);
    let recs2 = assert_consistent(ws.path(), "t");
    assert_eq!(recs, recs2);
    // The toy optimum is lr = 0.003, absmean: the builtin search must find it.
    let best = autoqat_research::results::best(&recs).unwrap();
    assert!((best.eval_ppl.unwrap() - 30.0).abs() < 1e-6, "{recs:#?}");
    let head_recipe = std::fs::read_to_string(ws.path().join("experiments/train.toml")).unwrap();
    assert!(head_recipe.contains("lr = 0.003") && head_recipe.contains("method = \"absmean\""), "{head_recipe}");
    assert!(ws.path().join("runs/0003/trial.log").exists());
    // --resume continues the same run, numbering on.
    let (stop, recs) = run_in_process(ws.path(), 20, true);
    // Every recipe run is a different one by meaning: once every change from the best it
    // would consider was tried (single changes, and pairs of changes predicted to help), the
    // builtin search says so instead of running one again.
    let s = Settings::load(ws.path()).unwrap();
    let schema = autoqat_research::validate::Validator::from_settings(&s).schema().cloned().unwrap();
    let git = autoqat_research::git::Git::open(ws.path()).unwrap();
    let meanings: std::collections::HashSet<String> = recs
        .iter()
        .map(|r| {
            let text = git.file_at(git2::Oid::from_str(&r.commit).unwrap(), "experiments/train.toml").unwrap();
            autoqat_research::validate::recipe_key(&schema, &text).unwrap()
        })
        .collect();
    assert_eq!(meanings.len(), recs.len(), "a recipe ran twice: {recs:#?}");
    assert!(matches!(stop, StopReason::Exhausted(_)), "{stop:?}");
    // The toy space has 4 x 3 recipes; a search that ran them all would be an enumeration.
    assert!(recs.len() < 12, "{}", recs.iter().map(|r| r.description.as_str()).collect::<Vec<_>>().join("\n"));
    assert_consistent(ws.path(), "t");
    // A second run on the same tag without --resume is refused.
    let s = Settings::load(ws.path()).unwrap();
    let e = Driver::open(ws.path(), s, RunOptions::default(), None).err().unwrap().to_string();
    assert!(e.contains("--resume"), "{e}");
}

#[test]
fn crash_timeout_nan_and_pruned_trials_are_recorded_and_reverted() {
    let ws = workspace(&settings_toml("", ""));
    let answers: Vec<String> = ["crash", "hang", "nan", "slowbad"]
        .iter()
        .map(|m| set_method(m))
        .chain([proposal("raise lr", "lr = 0.001", "lr = 0.003")])
        .collect();
    let prov = canned_proposer(ws.path(), &answers);
    let toml = settings_toml(&prov, "").replace("timeout_s = 20", "timeout_s = 1.5");
    std::fs::write(ws.path().join("autoqat.toml"), toml).unwrap();
    git(ws.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "settings"]);
    let t = Instant::now();
    let (_, recs) = run_in_process(ws.path(), 6, false);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(
        statuses(&recs),
        [Status::Baseline, Status::Crash, Status::Timeout, Status::Crash, Status::Pruned, Status::Keep]
    );
    assert!(recs[1].error.as_deref().unwrap().contains("exit status 3"), "{:?}", recs[1].error);
    assert!(recs[3].error.as_deref().unwrap().contains("not finite"), "{:?}", recs[3].error);
    assert!(recs[4].error.as_deref().unwrap().contains("at step 10"), "{:?}", recs[4].error);
    // The timeout killed the whole process group, including the trial's own child.
    let pid: i32 = std::fs::read_to_string(ws.path().join("runs/0002/child.pid")).unwrap().trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!pid_alive(pid), "the timed-out trial's child {pid} survived");
    assert!(std::fs::read_to_string(ws.path().join("runs/0001/trial.log")).unwrap().contains("boom"));
    assert_consistent(ws.path(), "t");
}

#[test]
fn invalid_answers_get_one_repair_round_then_stop_the_run() {
    let ws = workspace(&settings_toml("", ""));
    let mut answers = vec!["no json here".to_string(), proposal("fixed", "lr = 0.001", "lr = 0.003")];
    answers.extend((0..6).map(|_| proposal("bad path", "x", "y").replace("experiments/train.toml", "../x.toml")));
    let prov = canned_proposer(ws.path(), &answers);
    std::fs::write(ws.path().join("autoqat.toml"), settings_toml(&prov, "")).unwrap();
    git(ws.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "settings"]);
    let (stop, recs) = run_in_process(ws.path(), 20, false);
    assert_eq!(stop, StopReason::InvalidStreak(3));
    assert_eq!(statuses(&recs), [Status::Baseline, Status::Keep, Status::Invalid, Status::Invalid, Status::Invalid]);
    assert!(recs[2].error.as_deref().unwrap().contains("leaves the workspace"));
    // The repair prompt quotes the rejection.
    let repair = std::fs::read_to_string(ws.path().join(".canned/prompt1.txt")).unwrap();
    assert!(repair.contains("rejected") && repair.contains("no JSON object"), "{repair}");
    let first = std::fs::read_to_string(ws.path().join(".canned/prompt0.txt")).unwrap();
    assert!(first.contains("optim.lr") && first.contains("Lower eval_ppl of the toy trial"), "{first}");
    assert_eq!(std::fs::read_to_string(ws.path().join(".canned/count")).unwrap().trim(), "8");
    assert_consistent(ws.path(), "t");
}

#[test]
fn repeated_baseline_reports_sigma_and_second_seed_confirms_a_keep() {
    let extra = "[noise]\nbaseline_repeats = 3\nconfirm_seed = true\nmin_rel_improvement = 0.01";
    let ws = workspace(&settings_toml("[provider]\nkind = \"builtin\"", extra));
    let (_, recs) = run_in_process(ws.path(), 2, false);
    // The toy trial adds seed * 0.01: seeds 0, 1, 2 give a sample sigma of exactly 0.01.
    assert_eq!(recs[0].baseline_ppls.len(), 3);
    assert!((recs[0].sigma.unwrap() - 0.01).abs() < 1e-6, "{:?}", recs[0]);
    assert!(ws.path().join("runs/0000-r2/summary.json").exists());
    if recs[1].status() == Status::Keep {
        let c = recs[1].confirm_ppl.expect("a keep must be confirmed on a second seed");
        assert!((c - recs[1].eval_ppl.unwrap() - 0.01).abs() < 1e-6);
    }
    assert_consistent(ws.path(), "t");
}

#[test]
fn foreign_trial_metric_from_a_regex() {
    let ws = workspace(&settings_toml("", ""));
    std::fs::write(ws.path().join("train.py"), "DEPTH = 4\n").unwrap();
    std::fs::write(
        ws.path().join("run.sh"),
        "#!/bin/sh\nd=$(sed -n 's/^DEPTH = //p' train.py)\necho 'step 1'\necho \"val_bpb: 1.$d\"\n",
    )
    .unwrap();
    let prov = canned_proposer(ws.path(), &[serde_json::json!({"description":"shallower","edits":[{"path":"train.py","search":"DEPTH = 4","replace":"DEPTH = 2"}]}).to_string()]);
    let toml = format!(
        "[run]\ntag = \"t\"\nmutable_paths = [\"train.py\"]\n[trial]\ncommand = \"sh run.sh\"\nmetric_regex = '^val_bpb:\\s*([0-9.]+)'\n{prov}\n[validator]\nkind = \"none\"\n"
    );
    std::fs::write(ws.path().join("autoqat.toml"), toml).unwrap();
    git(ws.path(), &["add", "."]);
    git(ws.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "foreign"]);
    let (_, recs) = run_in_process(ws.path(), 2, false);
    assert_eq!(recs[0].eval_ppl, Some(1.4));
    assert_eq!(recs[1].eval_ppl, Some(1.2));
    assert_eq!(recs[1].status(), Status::Keep);
    assert_consistent(ws.path(), "t");
}

#[test]
fn stop_file_and_dirty_worktree_and_lock() {
    let ws = workspace(&settings_toml("[provider]\nkind = \"builtin\"", ""));
    std::fs::write(ws.path().join("experiments/train.toml"), "changed\n").unwrap();
    let s = Settings::load(ws.path()).unwrap();
    let e = Driver::open(ws.path(), s.clone(), RunOptions::default(), None).err().unwrap().to_string();
    assert!(e.contains("uncommitted changes") && e.contains("experiments/train.toml"), "{e}");
    git(ws.path(), &["checkout", "--", "."]);
    let (_, recs) = run_in_process(ws.path(), 1, false);
    assert_eq!(recs.len(), 1);
    std::fs::write(ws.path().join("STOP"), "").unwrap();
    let (stop, recs) = run_in_process(ws.path(), 10, true);
    assert_eq!((stop, recs.len()), (StopReason::StopFile, 1));
    assert!(!ws.path().join("STOP").exists());
    // A second driver on the same workspace is refused while the first holds the lock.
    let _held = autoqat_research::git::Lock::acquire(ws.path()).unwrap();
    let e = Driver::open(ws.path(), s, RunOptions { resume: true, ..RunOptions::default() }, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("locked"), "{e}");
}

#[test]
fn sigint_sets_the_experiment_aside_and_resume_reruns_the_same_change() {
    let ws = workspace(&settings_toml("", ""));
    let prov = canned_proposer(ws.path(), &[set_method("hangonce")]);
    std::fs::write(ws.path().join("autoqat.toml"), settings_toml(&prov, "")).unwrap();
    git(ws.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "settings"]);
    let child = spawn_driver(ws.path(), 5, false, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pidfile = ws.path().join("runs/0001/child.pid");
    let t = Instant::now();
    while !pidfile.exists() && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pidfile.exists(), "the hanging trial never started");
    std::thread::sleep(Duration::from_millis(50));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains("STOP: stopped by a signal")
            && stdout.contains("experiment 1 interrupted"),
        "{stdout}"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!pid_alive(pid), "the interrupted trial's child survived");
    // No row for a trial that neither crashed nor finished: the branch is back on the baseline,
    // the worktree is clean, and the change waits under its ref for --resume.
    let recs = assert_consistent(ws.path(), "t");
    assert_eq!(statuses(&recs), [Status::Baseline]);
    assert_eq!(git(ws.path(), &["status", "--porcelain"]).trim(), "");
    let aside = git(ws.path(), &["rev-parse", "refs/autoqat/t/interrupted/0001"]);
    assert!(
        git(ws.path(), &["show", aside.trim()]).contains("method = \"hangonce\""),
        "the interrupted change is not under its ref"
    );

    let out = run_child(ws.path(), 2, true, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("re-running its interrupted trial"), "{stdout}");
    let recs = assert_consistent(ws.path(), "t");
    assert_eq!(statuses(&recs), [Status::Baseline, Status::Discard]);
    assert_eq!(recs[1].description, "method hangonce");
    assert!(recs[1].error.is_none(), "{:?}", recs[1].error);
    // The same change ran again: the proposer was asked once in all.
    assert_eq!(std::fs::read_to_string(ws.path().join(".canned/count")).unwrap().trim(), "1");
    assert!(
        git(ws.path(), &["for-each-ref", "refs/autoqat/t/interrupted/"]).trim().is_empty(),
        "the interrupted ref outlived its resume"
    );
}

#[test]
fn resume_after_sigkill_at_every_point_loses_and_duplicates_nothing() {
    let points = [
        "propose:3",
        "after_commit:2",
        "trial:1",
        "trial:3",
        "after_trial:2",
        "reset:1",
        "before_row:2",
        "before_row:4",
    ];
    let mut handles = Vec::new();
    for point in points {
        handles.push(std::thread::spawn(move || {
            let ws = workspace(
                &settings_toml("[provider]\nkind = \"builtin\"", "")
                    .replace(r#", "crash", "hang", "nan", "slowbad", "hangonce""#, ""),
            );
            let killed = run_child(ws.path(), 6, false, &[("AUTOQAT_TEST_KILL_AT", point)]);
            assert_resume_loses_nothing(ws.path(), point, 6, killed, || run_child(ws.path(), 6, true, &[]));
            let journals = std::fs::read_dir(ws.path().join(".autoqat/inflight")).map_or(0, |d| d.count());
            assert_eq!(journals, 0, "{point}: a journal outlived its experiment");
        }));
    }
    for h in handles {
        if let Err(e) = h.join() {
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn a_fake_api_key_never_reaches_disk_git_or_logs() {
    let key = "fake-AUTOQAT-FAKE-KEY-5f3a9c0e1b7d";
    let ws = workspace(&settings_toml("", ""));
    let mut busy = Canned::json(429, format!(r#"{{"error":"slow down, {key}"}}"#));
    busy.headers.push(("retry-after".into(), "0".into()));
    let script = vec![
        busy,
        Canned::json(200, openai_body(&proposal("raise lr", "lr = 0.001", "lr = 0.003"))),
        Canned::json(200, openai_body("no idea")),
        Canned::json(200, openai_body(&set_method("absmax"))),
    ];
    let srv = serve(script);
    let prov = format!(
        "[provider]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{}/v1\"\napi_key_env = \"AQ_FAKE_KEY\"\nbackoff_s = 0.01\nprice_in_per_mtok = 2.0\nprice_out_per_mtok = 10.0",
        srv.url
    );
    let toml = settings_toml(&prov, "")
        .replace("command = \"sh ./trial.sh {run_dir}\"", "command = \"env; sh ./trial.sh {run_dir}\"");
    std::fs::write(ws.path().join("autoqat.toml"), toml).unwrap();
    git(ws.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "settings"]);
    let out = run_child(ws.path(), 3, false, &[("AQ_FAKE_KEY", key), ("RUST_LOG", "debug")]);
    let logs = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{logs}");
    assert!(!logs.contains(key), "key in the driver's output:\n{logs}");
    assert!(logs.contains("retrying"), "the 429 was not logged: {logs}");
    let recs = assert_consistent(ws.path(), "t");
    // Cost: 2 answers at 1000 in / 200 out tokens (exp 2 needed a repair round).
    assert!((recs[1].cost_usd - 0.004).abs() < 1e-9 && (recs[2].cost_usd - 0.008).abs() < 1e-9, "{recs:#?}");
    let trial_log = std::fs::read_to_string(ws.path().join("runs/0001/trial.log")).unwrap();
    assert!(trial_log.contains("AUTOQAT_EXP=1") && !trial_log.contains("AQ_FAKE_KEY"), "{trial_log}");
    // Every file under the workspace, and every git object decompressed (commits, notes, refs).
    let mut files = vec![ws.path().to_path_buf()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            assert!(!String::from_utf8_lossy(&bytes).contains(key), "key found in {}", p.display());
        }
    }
    let repo = git2::Repository::open(ws.path()).unwrap();
    let odb = repo.odb().unwrap();
    let mut n = 0;
    odb.foreach(|oid| {
        let obj = odb.read(*oid).unwrap();
        assert!(!String::from_utf8_lossy(obj.data()).contains(key), "key in git object {oid}");
        n += 1;
        true
    })
    .unwrap();
    assert!(n > 10);
}

#[test]
fn a_prompt_longer_than_the_context_is_retried_with_fewer_rows_then_named() {
    let ws = workspace(&settings_toml("", ""));
    // OpenAI's own wording; llama.cpp and vLLM answer alike with their words.
    let too_long = || {
        Canned::json(
            400,
            r#"{"error":{"message":"This model's maximum context length is 4096 tokens. However, you requested 6173 tokens (4125 in the messages, 2048 in the completion).","code":"context_length_exceeded"}}"#,
        )
    };
    let good = Canned::json(200, openai_body(&proposal("raise lr", "lr = 0.001", "lr = 0.003")));
    let script = vec![too_long(), good, too_long(), too_long(), too_long(), too_long(), too_long()];
    let srv = serve(script);
    let prov = format!(
        "[provider]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{}/v1\"\napi_key_env = \"AQ_CTX_KEY\"\nbackoff_s = 0.01",
        srv.url
    );
    std::fs::write(ws.path().join("autoqat.toml"), settings_toml(&prov, "")).unwrap();
    git(ws.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "settings"]);
    std::env::set_var("AQ_CTX_KEY", "fake-ctx-test");
    let s = Settings::load(ws.path()).unwrap();
    let opts = RunOptions { max_experiments: Some(3), quiet: true, ..RunOptions::default() };
    let err = Driver::open(ws.path(), s, opts, None).unwrap().run().unwrap_err().to_string();
    // Experiment 1 passed on its second, shorter prompt; experiment 2 did not fit even without rows.
    assert!(err.contains("does not fit the model's context even without result rows"), "{err}");
    assert!(err.contains("4125 in the messages") && err.contains("provider.max_tokens, now 2048"), "{err}");
    let recs = assert_consistent(ws.path(), "t");
    assert_eq!(statuses(&recs)[..2], [Status::Baseline, Status::Keep]);
    let seen = srv.seen.lock().unwrap();
    assert_eq!(seen.len(), 7, "2 requests for experiment 1, 5 for experiment 2 (15, 7, 3, 1, 0 rows)");
    let lens: Vec<usize> = seen[2..].iter().map(|r| r.body.len()).collect();
    assert!(lens.windows(2).all(|w| w[1] <= w[0]) && lens[4] < lens[0], "each retry is no longer: {lens:?}");
    assert_clean(ws.path());
}

#[test]
fn the_best_is_scored_once_on_the_heldout_split_and_near_misses_are_recorded() {
    // A 20% keep margin: lr 0.003 (ppl 30 against the baseline's 34.77) beats the best by 13.7%,
    // not enough to keep, and is recorded as a near miss.
    let extra = "[noise]\nmin_rel_improvement = 0.2\n[heldout]\ncommand = \"sh ./heldout.sh {run_dir}\"\n";
    let toml = settings_toml("[provider]\nkind = \"builtin\"", extra)
        .replace(r#", "crash", "hang", "nan", "slowbad", "hangonce""#, "");
    let ws = workspace(&toml);
    // The held-out scorer: the run's PPL plus one, as `autoqat eval --json` prints it; each call
    // leaves a mark so that the test can count them.
    std::fs::write(
        ws.path().join("heldout.sh"),
        "#!/bin/sh\ntouch \"$1.heldout-called\"\np=$(sed -n 's/.*\"eval_ppl\":\\([0-9.]*\\).*/\\1/p' \"$1/summary.json\")\necho \"{\\\"eval_ppl\\\": $(awk \"BEGIN{print $p + 1}\")}\"\n",
    )
    .unwrap();
    git(ws.path(), &["add", "heldout.sh"]);
    git(ws.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "heldout scorer"]);
    let (_, recs) = run_in_process(ws.path(), 4, false);
    let rows = autoqat_workspace::heldout::read(&ws.path().join("heldout.tsv")).unwrap();
    let best = autoqat_research::results::best(&recs).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].exp, best.exp);
    assert_eq!(rows[0].search_ppl.map(|p| (p * 1e4).round()), best.eval_ppl.map(|p| (p * 1e4).round()));
    assert!((rows[0].heldout_ppl - best.eval_ppl.unwrap() - 1.0).abs() < 1e-3, "{rows:?}");
    let called: Vec<_> = std::fs::read_dir(ws.path().join("runs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".heldout-called"))
        .collect();
    assert_eq!(called.len(), 1, "only the best is scored");
    // A second stop does not score the same best again.
    let (_, recs) = run_in_process(ws.path(), 5, true);
    assert_eq!(autoqat_workspace::heldout::read(&ws.path().join("heldout.tsv")).unwrap().len(), 1);
    // The near miss is in the note and in results.tsv.
    let near = recs.iter().find(|r| r.eval_ppl.is_some_and(|p| (p - 30.0).abs() < 1e-6)).expect("lr 0.003 ran");
    assert_eq!(near.status(), Status::Discard);
    assert!(near.near_miss, "{near:?}");
    let rows = autoqat_research::results::read(&ws.path().join("results.tsv")).unwrap();
    assert!(rows.iter().any(|r| r.record.exp == near.exp && r.near_miss));
    assert!(!rows.iter().any(|r| r.status() == Status::Keep && r.near_miss));
    assert_consistent(ws.path(), "t");
}

#[test]
fn a_second_tag_never_writes_over_the_first_tags_run_directories() {
    let toml = settings_toml("[provider]\nkind = \"builtin\"", "")
        .replace(r#", "crash", "hang", "nan", "slowbad", "hangonce""#, "");
    let ws = workspace(&toml);
    let p = ws.path();
    run_in_process(p, 2, false);
    let before = std::fs::read(p.join("runs/0000/summary.json")).unwrap();
    let open = |tag: &str| {
        let opts = RunOptions { tag: Some(tag.into()), max_experiments: Some(2), quiet: true, ..RunOptions::default() };
        Driver::open(p, Settings::load(p).unwrap(), opts, None)
    };
    let e = open("u").err().unwrap().to_string();
    assert!(e.contains("tag `u` would write over the run directories of tag `t`"), "{e}");
    assert!(e.contains(r#"trial.run_dir = "runs/{tag}/{exp}""#), "{e}");
    // With {tag} in the template, each tag has its own run directories.
    let toml = std::fs::read_to_string(p.join("autoqat.toml"))
        .unwrap()
        .replace("[trial]\n", "[trial]\nrun_dir = \"runs/{tag}/{exp}\"\n");
    std::fs::write(p.join("autoqat.toml"), toml).unwrap();
    git(p, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "a run dir per tag"]);
    let sum = open("u").unwrap().run().unwrap();
    assert_eq!(sum.records.len(), 2);
    assert!(p.join("runs/u/0000/summary.json").exists() && p.join("runs/u/0001/trial.log").exists());
    assert_eq!(std::fs::read(p.join("runs/0000/summary.json")).unwrap(), before, "tag t's run was overwritten");
    assert_consistent(p, "u");
}
