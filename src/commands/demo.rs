//! `autoqat demo`: the whole loop offline. Corpus, tokenizer and tiny teacher (cached), a
//! tiny-demo workspace pointing at them, the research loop with the builtin proposer, and the
//! report; prints where everything is and the wall time of each phase.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::cli::{DemoArgs, DemoTrack};
use crate::demo::teacher::{self, TeacherSpec};
use crate::report;
use crate::workspace::{self, Template, TinySizes};

/// The run tag of the demo: its branch is `autoqat/demo`.
pub const TAG: &str = "demo";

/// Wall time of one phase.
#[derive(Debug, Serialize)]
struct Phase {
    name: &'static str,
    seconds: f64,
}

/// What the demo leaves behind, also written to `<dir>/report/demo-summary.json`.
#[derive(Debug, Serialize)]
struct Summary {
    workspace: PathBuf,
    teacher_dir: PathBuf,
    teacher_reused: bool,
    teacher_fp_ppl: f64,
    teacher_params: i64,
    vocab_size: usize,
    results: PathBuf,
    report: PathBuf,
    plot: PathBuf,
    /// `frontier.png` of the compression demo.
    frontier: Option<PathBuf>,
    branch: String,
    experiments: usize,
    baseline_ppl: Option<f64>,
    best_ppl: Option<f64>,
    best_exp: Option<String>,
    phases: Vec<Phase>,
    total_s: f64,
}

/// Runs `autoqat demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.real {
        return run_real(&args);
    }
    let start = Instant::now();
    let dir = pick_dir(&args.dir)?;
    let (spec, sizes) = if args.quick {
        (
            TeacherSpec::quick(),
            TinySizes { steps: 10, eval_every: 5, timeout_s: 300, seq_len: 64, batch: 8, baseline_repeats: 1 },
        )
    } else {
        (TeacherSpec::standard(), TinySizes::default())
    };
    let mut phases = Vec::new();

    let cache = teacher::cache_dir();
    say(&format!("phase 1/4: corpus, tokenizer and teacher (cache: {})", cache.display()));
    let t0 = Instant::now();
    let teacher = teacher::get_or_build(&cache, &spec, &mut |line| say(&format!("  {line}")))?;
    if teacher.reused {
        say(&format!("  reusing the cached teacher {}", teacher.root.display()));
    }
    phases.push(Phase { name: "teacher", seconds: t0.elapsed().as_secs_f64() });

    say(&format!("phase 2/4: workspace {}", dir.display()));
    let t0 = Instant::now();
    let template = if args.track == DemoTrack::Compress { Template::TinyCompress } else { Template::TinyDemo };
    workspace::init(&dir, template, sizes)?;
    crate::demo::install_teacher(&dir, &teacher)?;
    phases.push(Phase { name: "workspace", seconds: t0.elapsed().as_secs_f64() });

    say(&format!("phase 3/4: research loop, baseline + {} experiments (builtin proposer)", args.experiments()));
    let t0 = Instant::now();
    run_loop(&dir, args.experiments() + 1)?;
    phases.push(Phase { name: "research loop", seconds: t0.elapsed().as_secs_f64() });

    say("phase 4/4: report");
    let t0 = Instant::now();
    let w = report::generate(&dir, Some(TAG), None)?;
    let mut frontier = None;
    if args.track == DemoTrack::Compress {
        let runs = crate::commands::frontier::runs_in(&dir.join("runs"))?;
        crate::commands::frontier::write(&runs, None, &dir.join("report"))?;
        frontier = Some(abs(&dir.join("report/frontier.png")));
    }
    phases.push(Phase { name: "report", seconds: t0.elapsed().as_secs_f64() });

    let summary = Summary {
        workspace: abs(&dir),
        teacher_dir: teacher.model_dir.clone(),
        teacher_reused: teacher.reused,
        teacher_fp_ppl: teacher.fp_eval_ppl,
        teacher_params: teacher.params,
        vocab_size: teacher.vocab_size,
        results: abs(&autoqat_workspace::Layout::new(&dir).results()),
        report: abs(&w.report_md),
        plot: abs(&w.png),
        frontier,
        branch: format!("autoqat/{TAG}"),
        experiments: w.experiments,
        baseline_ppl: w.baseline_ppl,
        best_ppl: w.best_ppl,
        best_exp: w.best_exp.clone(),
        phases,
        total_s: start.elapsed().as_secs_f64(),
    };
    let json = dir.join("report/demo-summary.json");
    std::fs::write(&json, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    print_summary(&summary, &w.best_diff);
    Ok(())
}

/// `autoqat run` on `dir` with the builtin proposer, as a child so that its signal handling
/// and workspace lock are exactly those of a user's run.
fn run_loop(dir: &Path, experiments: u32) -> anyhow::Result<()> {
    let exe = autoqat_workspace::self_exe().context("cannot locate the autoqat executable")?;
    let status = Command::new(&exe)
        .arg("run")
        .arg("--workspace")
        .arg(dir)
        .args(["--tag", TAG, "--provider", "builtin", "--max-experiments", &experiments.to_string()])
        .status()
        .with_context(|| format!("cannot start {} run", exe.display()))?;
    anyhow::ensure!(
        status.success(),
        "`autoqat run` failed ({status}); see the trial logs under {}",
        dir.join("runs").display()
    );
    Ok(())
}

/// The real path: the smollm-ternary workspace, SmolLM-135M / TinyStories / WikiText-2 from
/// the Hub (`autoqat prepare`), the same loop and report. Needs the network (or a Hub cache).
fn run_real(args: &DemoArgs) -> anyhow::Result<()> {
    let dir = pick_dir(&args.dir)?;
    say(&format!("real path: workspace {} (template smollm-ternary)", dir.display()));
    workspace::init(&dir, Template::SmollmTernary, TinySizes::default())?;
    say("fetching SmolLM-135M, TinyStories and WikiText-2 (autoqat prepare)");
    let opts = crate::prepare::Options {
        workspace: dir.clone(),
        model: None,
        train_text: None,
        eval_text: None,
        heldout_text: None,
    };
    crate::prepare::prepare(&opts, &mut |line| say(&format!("  {line}")))
        .context("the real path needs the Hub (hint: without network, use `autoqat prepare --model DIR --train-text F --eval-text F` in an `autoqat init --template smollm-ternary` workspace)")?;
    say(&format!("research loop, baseline + {} experiments (builtin proposer)", args.experiments()));
    run_loop(&dir, args.experiments() + 1)?;
    let w = report::generate(&dir, Some(TAG), None)?;
    println!("report:      {}", abs(&w.report_md).display());
    println!("plot:        {}", abs(&w.png).display());
    if !w.best_diff.is_empty() {
        println!("best recipe against the baseline:\n{}", w.best_diff);
    }
    Ok(())
}

fn say(line: &str) {
    eprintln!("[demo] {line}");
}

fn abs(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// The demo creates its workspace and never writes into an existing one. A previous demo's
/// workspace is kept and the next free `<dir>-N` is used, so running the demo again just works
/// (and reuses the cached teacher); any other non-empty directory is refused.
fn pick_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let empty = |d: &Path| !d.exists() || std::fs::read_dir(d).map(|mut e| e.next().is_none()).unwrap_or(false);
    if empty(dir) {
        return Ok(dir.to_path_buf());
    }
    anyhow::ensure!(
        autoqat_workspace::Layout::new(dir).config().is_file() && dir.join(".git").exists(),
        "{} already exists and is not empty (hint: pass --dir NEW_DIR, or delete it; the cached teacher is reused either way)",
        dir.display()
    );
    for n in 2..1000 {
        let next = PathBuf::from(format!("{}-{n}", dir.display()));
        if empty(&next) {
            say(&format!("{} holds a previous demo; this one goes to {}", dir.display(), next.display()));
            return Ok(next);
        }
    }
    anyhow::bail!("{}-2 .. -999 all exist (hint: pass --dir NEW_DIR)", dir.display())
}

fn print_summary(s: &Summary, diff: &str) {
    let ppl = crate::fmt::ppl_or_dash;
    println!();
    println!("autoqat demo finished in {:.1} s", s.total_s);
    for p in &s.phases {
        println!("  {:<14} {:>7.1} s", p.name, p.seconds);
    }
    println!("fp teacher eval PPL:     {}", crate::fmt::ppl(s.teacher_fp_ppl));
    println!("ternary baseline PPL:    {}", ppl(s.baseline_ppl));
    println!("best recipe PPL:         {} (experiment {})", ppl(s.best_ppl), s.best_exp.as_deref().unwrap_or("-"));
    println!("workspace:   {}", s.workspace.display());
    println!("teacher:     {}{}", s.teacher_dir.display(), if s.teacher_reused { " (cached)" } else { "" });
    println!("results:     {}", s.results.display());
    println!("report:      {}", s.report.display());
    println!("plot:        {}", s.plot.display());
    if let Some(f) = &s.frontier {
        println!("frontier:    {} (the table: cd {} && autoqat frontier)", f.display(), s.workspace.display());
    }
    println!("git branch:  {} (git -C {} log --all --oneline)", s.branch, s.workspace.display());
    if !diff.is_empty() {
        println!("best recipe against the baseline:\n{diff}");
    }
}
