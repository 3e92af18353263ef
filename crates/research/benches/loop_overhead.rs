//! Harness overhead per experiment with 1,000 experiments of history: everything the loop
//! does except waiting for the proposer and for the trial (prompt build over the history,
//! answer parsing, edit checks, commits, notes, refs, reset, results row).
//!
//! Run: `cargo bench -p autoqat-research --bench loop_overhead` (or benches/loop_overhead.sh).
//! Env: AQ_BENCH_HISTORY (default 1000), AQ_BENCH_MEASURE (default 50).

use std::cell::RefCell;
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use autoqat_research::driver::{Driver, RunOptions};
use autoqat_research::proposer::{Proposer, ProposerError, Reply, Request};
use autoqat_research::settings::Settings;

/// Proposes a new unique lr each call and measures its own time (excluded from overhead).
struct Unique {
    n: u64,
    spent: Rc<RefCell<Duration>>,
    prompt_bytes: Rc<RefCell<usize>>,
}

impl Proposer for Unique {
    fn propose(&mut self, req: &Request) -> Result<Reply, ProposerError> {
        let t = Instant::now();
        *self.prompt_bytes.borrow_mut() = req.user.len();
        self.n += 1;
        let cur = req.ctx.recipe.lines().find(|l| l.starts_with("lr = ")).unwrap_or("lr = 1").to_string();
        // Alternate better and worse values so that both keep and discard paths run.
        let v = if self.n.is_multiple_of(3) { 1.0 / (self.n as f64 + 2.0) } else { 10.0 + self.n as f64 };
        let text = serde_json::json!({
            "description": format!("lr {v}"), "rationale": "bench",
            "edits": [{"path": "experiments/train.toml", "search": cur, "replace": format!("lr = {v}")}]
        })
        .to_string();
        *self.spent.borrow_mut() += t.elapsed();
        Ok(Reply { text, ..Reply::default() })
    }
}

const TRIAL: &str = "#!/bin/sh\nmkdir -p \"$1\"\nlr=$(sed -n 's/^lr = //p' experiments/train.toml)\nprintf '{\"status\":\"ok\",\"eval_ppl\":%s}' \"$lr\" > \"$1/summary.json\"\n";

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git").args(args).current_dir(dir).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "git {args:?} failed");
}

/// Runs `n` experiments; returns (wall, proposer time, trial time, open time, prompt bytes).
fn run(ws: &Path, total: u32, resume: bool) -> (Duration, Duration, Duration, Duration, usize, usize) {
    let spent = Rc::new(RefCell::new(Duration::ZERO));
    let bytes = Rc::new(RefCell::new(0));
    let p = Unique { n: total as u64 * 7, spent: spent.clone(), prompt_bytes: bytes.clone() };
    let s = Settings::load(ws).expect("settings");
    let t0 = Instant::now();
    let d = Driver::open(
        ws,
        s,
        RunOptions { max_experiments: Some(total), resume, quiet: true, ..RunOptions::default() },
        Some(Box::new(p)),
    )
    .expect("open");
    let open = t0.elapsed();
    let before = autoqat_research::git::Git::open(ws).and_then(|g| g.records("b")).map(|r| r.len()).unwrap_or(0);
    let sum = d.run().expect("run");
    let wall = t0.elapsed();
    let ran = sum.records.len() - before;
    let trial: f64 = sum.records[before..].iter().filter_map(|r| r.time_s).sum();
    let spent = *spent.borrow();
    let prompt = *bytes.borrow();
    (wall, spent, Duration::from_secs_f64(trial), open, prompt, ran)
}

fn main() {
    let history: u32 = std::env::var("AQ_BENCH_HISTORY").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let measure: u32 = std::env::var("AQ_BENCH_MEASURE").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().expect("tempdir");
    let ws = dir.path();
    std::fs::create_dir_all(ws.join("experiments")).unwrap();
    std::fs::write(ws.join("experiments/train.toml"), "[optim]\nlr = 100.0\nseed = 0\n").unwrap();
    std::fs::write(ws.join("trial.sh"), TRIAL).unwrap();
    std::fs::write(ws.join("program.md"), "bench\n").unwrap();
    std::fs::write(
        ws.join("autoqat.toml"),
        "[run]\ntag = \"b\"\n[trial]\ncommand = \"sh ./trial.sh {run_dir}\"\n[prune]\nenabled = false\n[validator]\nkind = \"none\"\n",
    )
    .unwrap();
    git(ws, &["init", "-q", "-b", "main"]);
    git(ws, &["add", "."]);
    git(ws, &["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init"]);

    let per = |(wall, prop, trial, open, _, ran): (Duration, Duration, Duration, Duration, usize, usize)| {
        (wall.saturating_sub(prop).saturating_sub(trial).saturating_sub(open)).as_secs_f64() / ran.max(1) as f64
    };
    // Reference: the first `measure` experiments, on an empty history.
    let first = run(ws, measure, false);
    let early = per(first);
    let t = Instant::now();
    let fill = run(ws, history, true);
    let fill_s = t.elapsed().as_secs_f64();
    let late_run = run(ws, history + measure, true);
    let late = per(late_run);
    let t = Instant::now();
    let recs = autoqat_research::driver::rebuild(ws, "b").expect("rebuild");
    let rebuild = t.elapsed();
    println!(
        "loop_overhead: history {} experiments (filled in {fill_s:.1} s, {} run there)",
        recs.len() - measure as usize,
        fill.5
    );
    println!("  overhead/experiment, history 0..{measure}:           {:8.2} ms (reference)", early * 1e3);
    println!("  overhead/experiment, history {history}..{}:     {:8.2} ms", history + measure, late * 1e3);
    println!("  ratio late/reference:                       {:8.2}x", late / early);
    println!(
        "  mean trial (sh spawn + summary.json), excluded: {:6.2} ms",
        late_run.2.as_secs_f64() * 1e3 / late_run.5.max(1) as f64
    );
    println!(
        "  open + recover with {} notes (once per run):  {:8.2} ms",
        history + measure,
        late_run.3.as_secs_f64() * 1e3
    );
    println!("  results --rebuild of {} rows:                {:8.2} ms", recs.len(), rebuild.as_secs_f64() * 1e3);
    println!("  prompt size at the end: {} bytes", late_run.4);
    println!("  goal < 1000 ms per experiment: {}", if late < 1.0 { "met" } else { "NOT met" });
}
