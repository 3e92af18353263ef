//! `autoqat status` on a workspace whose run is simulated: the test holds the run lock (flock,
//! as `autoqat run` does) and writes results.tsv and a partial steps.tsv itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

const HEADER: &str = "exp\tcommit\tparent\tstatus\teval_ppl\teval_bpb\ttrain_loss\tdelta\ttime_s\ttokens\tpeak_mem_mb\tq_neg1\tq_zero\tq_pos1\tcost_usd\tdescription";
const STEPS: &str =
    "step\tlambda\ttrain_loss\ttrain_ppl\teval_ppl\teval_bpb\tlr\ttime_s\tbest_ppl\tq_neg1\tq_zero\tq_pos1";

fn workspace() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let st = Command::new(env!("CARGO_BIN_EXE_autoqat"))
        .args(["init", "--template", "tiny-demo"])
        .arg(&ws)
        .output()
        .unwrap();
    assert!(st.status.success());
    std::fs::write(
        ws.join("results.tsv"),
        format!(
            "{HEADER}\n0\tc0\t\tbaseline\t3.0\t0.4\t1.1\t\t50\t1000\t300\t0.35\t0.3\t0.35\t0\tbaseline\n\
             1\tc1\tc0\tkeep\t2.8\t0.38\t1.0\t-0.0667\t50\t1000\t300\t0.3\t0.4\t0.3\t0\tlr up\n"
        ),
    )
    .unwrap();
    // The tiny-demo recipe runs 30 steps; 10 are done after 20 s.
    std::fs::create_dir_all(ws.join("runs/0002")).unwrap();
    std::fs::write(
        ws.join("runs/0002/steps.tsv"),
        format!("{STEPS}\n10\t0.5\t1.25\t3.49\t2.9\t0.39\t1e-3\t20.0\t2.9\t0.3\t0.4\t0.3\n"),
    )
    .unwrap();
    tmp
}

fn hold_lock(ws: &Path) -> std::fs::File {
    std::fs::create_dir_all(ws.join(".autoqat")).unwrap();
    let f =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(ws.join(".autoqat/lock")).unwrap();
    f.lock().unwrap();
    f
}

fn status_json(ws: &Path) -> serde_json::Value {
    let out =
        Command::new(env!("CARGO_BIN_EXE_autoqat")).args(["status", "--json", "--workspace"]).arg(ws).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn status_shows_current_trial_progress_and_best_while_the_lock_is_held() {
    let tmp = workspace();
    let ws = tmp.path().join("ws");
    let lock = hold_lock(&ws);
    let s = status_json(&ws);
    assert_eq!(s["running"], true);
    assert_eq!(s["finished"], 2);
    assert_eq!(s["current_exp"], 2);
    assert_eq!(s["best_exp"], "1");
    assert_eq!(s["best_ppl"], 2.8);
    assert_eq!(s["trial"]["step"], 10);
    assert_eq!(s["trial"]["total_steps"], 30);
    // 20 s for 10 steps, 20 steps left.
    assert_eq!(s["trial"]["eta_s"], 40.0);
    assert_eq!(s["trial"]["q_zero"], 0.4);

    drop(lock);
    let s = status_json(&ws);
    assert_eq!(s["running"], false);
    assert!(s["current_exp"].is_null());
}

#[test]
fn status_during_an_append_leaves_out_the_half_written_row() {
    let tmp = workspace();
    let ws = tmp.path().join("ws");
    let mut f = std::fs::OpenOptions::new().append(true).open(ws.join("results.tsv")).unwrap();
    // The next row, caught mid-write: no newline, cells missing.
    write!(f, "2\tc2\tc1\tdisc").unwrap();
    drop(f);
    let s = status_json(&ws);
    assert_eq!(s["finished"], 2);
    assert_eq!(s["best_exp"], "1");
}

#[test]
fn watch_without_a_terminal_prints_a_line_per_eval_and_ends_with_the_run() {
    let tmp = workspace();
    let ws = tmp.path().join("ws");
    let lock = hold_lock(&ws);
    let mut child = Command::new(env!("CARGO_BIN_EXE_autoqat"))
        .args(["status", "--watch", "--workspace"])
        .arg(&ws)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the snapshot, then let the trial evaluate once more, then end the run.
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    while !text.contains("trial: step 10/30") {
        assert!(reader.read_line(&mut text).unwrap() > 0, "status ended early: {text}");
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(ws.join("runs/0002/steps.tsv")).unwrap();
    writeln!(f, "20\t1.0\t1.2\t3.3\t2.85\t0.385\t5e-4\t40.0\t2.85\t0.3\t0.4\t0.3").unwrap();
    drop(f);
    while !text.contains("step 20/30") {
        assert!(reader.read_line(&mut text).unwrap() > 0, "status ended early: {text}");
    }
    drop(lock);
    reader.read_to_string(&mut text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(text.contains("exp 2 step 20/30 train_loss 1.2000 eval_ppl 2.850"), "{text}");
    assert!(text.contains("run finished: 2 experiments"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes without a terminal: {text}");
}

#[test]
fn status_outside_a_workspace_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_autoqat")).args(["status", "--workspace"]).arg(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an autoqat workspace"));
}

#[test]
fn status_lists_what_each_worker_of_the_parallel_loop_runs() {
    let tmp = workspace();
    let ws = tmp.path().join("ws");
    let _lock = hold_lock(&ws);
    // The parallel loop's journals (`.autoqat/inflight/`), as `autoqat run --workers 2` writes them.
    std::fs::create_dir_all(ws.join(".autoqat/inflight")).unwrap();
    for (exp, worker, desc) in [(2, 0, "lr up again"), (3, 1, "per-group scales")] {
        let journal = serde_json::json!({
            "pending": {"tag": "demo", "exp": exp, "description": desc, "rationale": "", "diff": "", "diff_key": "",
                        "cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0},
            "commit": "", "parent": "", "worker": worker, "replays": null
        });
        std::fs::write(ws.join(format!(".autoqat/inflight/demo-{exp:04}.json")), journal.to_string()).unwrap();
    }
    std::fs::create_dir_all(ws.join("runs/0003")).unwrap();
    std::fs::write(ws.join("runs/0003/slurm_job"), "17\n").unwrap();
    let s = status_json(&ws);
    assert!(s["current_exp"].is_null(), "one current experiment means nothing with two in flight");
    let f = s["in_flight"].as_array().unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!((f[0]["exp"].as_u64(), f[0]["worker"].as_u64()), (Some(2), Some(0)));
    assert_eq!(f[0]["trial"]["step"], 10);
    assert_eq!(f[1]["slurm_job"], "17");
    let out = Command::new(env!("CARGO_BIN_EXE_autoqat")).args(["status", "--workspace"]).arg(&ws).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("worker 0: experiment 2: lr up again\n  trial: step 10/"), "{text}");
    assert!(text.contains("worker 1: experiment 3 [slurm job 17]: per-group scales"), "{text}");
    // A report taken meanwhile says so too (with the baseline alone: its fake commits have no recipe diff).
    std::fs::write(
        ws.join("results.tsv"),
        format!("{HEADER}\n0\tc0\t\tbaseline\t3.0\t0.4\t1.1\t\t50\t1000\t300\t0.35\t0.3\t0.35\t0\tbaseline\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_autoqat")).args(["report", "--workspace"]).arg(&ws).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(ws.join("report/report.md")).unwrap();
    assert!(md.contains("- in flight: worker 0: experiment 2: lr up again\n"), "{md}");
}

#[test]
fn with_one_worker_the_journal_in_the_workspace_names_the_current_experiment() {
    let tmp = workspace();
    let ws = tmp.path().join("ws");
    let _lock = hold_lock(&ws);
    // One worker's journal, as `autoqat run` writes it: the trial runs in the workspace.
    std::fs::create_dir_all(ws.join(".autoqat/inflight")).unwrap();
    let journal = serde_json::json!({
        "pending": {"tag": "demo", "exp": 2, "description": "group size 64", "rationale": "", "diff": "",
                    "diff_key": "", "cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0},
        "commit": "", "parent": "", "worker": 0, "replays": null, "in_workspace": true
    });
    std::fs::write(ws.join(".autoqat/inflight/demo-0002.json"), journal.to_string()).unwrap();
    let s = status_json(&ws);
    assert_eq!(s["current_exp"], 2);
    assert_eq!(s["current_description"], "group size 64");
    assert_eq!(s["trial"]["step"], 10);
    assert!(s["in_flight"].as_array().unwrap().is_empty(), "one worker's experiment is the current one: {s}");
}
