//! `autoqat status`: a snapshot of the live run, read from files only (the run's lock, results.tsv,
//! the current trial's steps.tsv, the recipe), so it never disturbs the run it watches.

use std::path::{Path, PathBuf};

use serde::Serialize;

use autoqat_research::results::{self, Row};
use autoqat_workspace::{layout, run, Layout};

/// The last evaluated step of the running trial.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrialProgress {
    /// Last step with an eval row.
    pub step: u64,
    /// Steps the trial will run.
    pub total_steps: Option<u64>,
    /// Train loss at that step.
    pub train_loss: Option<f64>,
    /// Eval PPL at that step.
    pub eval_ppl: Option<f64>,
    /// Seconds since the trial started.
    pub time_s: Option<f64>,
    /// Estimated seconds left, from the pace so far.
    pub eta_s: Option<f64>,
    /// Weight mix at that step.
    pub q_neg1: Option<f64>,
    /// See `q_neg1`.
    pub q_zero: Option<f64>,
    /// See `q_neg1`.
    pub q_pos1: Option<f64>,
}

/// What `autoqat status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// True while an `autoqat run` holds the workspace lock.
    pub running: bool,
    /// Experiments finished (rows of results.tsv).
    pub finished: usize,
    /// The experiment in progress (the next number), when running.
    pub current_exp: Option<u32>,
    /// Subject of the commit at HEAD (the experiment being tried, while running).
    pub current_description: Option<String>,
    /// Its run directory.
    pub run_dir: Option<PathBuf>,
    /// Its progress, once it has evaluated.
    pub trial: Option<TrialProgress>,
    /// The best finished experiment.
    pub best_exp: Option<String>,
    /// Its eval PPL.
    pub best_ppl: Option<f64>,
    /// Eval PPL of the baseline.
    pub baseline_ppl: Option<f64>,
    /// Count of each status so far.
    pub counts: Vec<(String, usize)>,
    /// The parallel loop's experiments in flight, one per busy worker.
    pub in_flight: Vec<InFlight>,
}

/// One experiment the parallel loop has in flight.
#[derive(Debug, Clone, Serialize)]
pub struct InFlight {
    /// Experiment number.
    pub exp: u32,
    /// Worker slot (device) it runs on.
    pub worker: usize,
    /// Its description.
    pub description: String,
    /// Its run directory.
    pub run_dir: PathBuf,
    /// Its Slurm job id, under the Slurm executor.
    pub slurm_job: Option<String>,
    /// Its progress, once it has evaluated.
    pub trial: Option<TrialProgress>,
}

/// Reads the workspace's state.
pub fn snapshot(ws: &Path) -> anyhow::Result<Status> {
    let layout = Layout::new(ws);
    if !layout.config().is_file() {
        return Err(crate::exit::error(
            crate::exit::ExitKind::BadInput,
            format!("{} is not an autoqat workspace (no autoqat.toml; hint: pass --workspace DIR)", ws.display()),
        ));
    }
    // No results.tsv yet: the run has not finished its baseline.
    let rows: Vec<Row> = results::read(&layout.results())?;
    let running = lock_held(ws);
    let next = rows.iter().map(|r| r.record.exp).max().map_or(0, |m| m + 1);
    let mut settings = autoqat_research::settings::Settings::load(ws)?;
    let in_flight = in_flight(ws, &settings);
    // One worker runs its experiment in the workspace: that is the current one.
    let here = autoqat_research::driver::flights(ws).into_iter().find(|f| f.in_workspace);
    if let Some(tag) = here
        .as_ref()
        .map(|f| f.tag().to_string())
        .or_else(|| autoqat_research::git::Git::discover(ws).ok().and_then(|g| g.current_tag()))
    {
        settings.for_tag(&tag);
    }
    let (current_exp, run_dir, trial, current_description) = if running && in_flight.is_empty() {
        let next = here.as_ref().map_or(next, |f| f.exp());
        let rel = settings.run_dir(next);
        let dir = ws.join(&rel);
        let total = autoqat_recipe::load(&layout.recipe()).ok().map(|r| r.total_steps());
        let trial = progress(&dir.join(run::STEPS_FILE), total);
        let description = here.as_ref().map(|f| f.description().to_string());
        let description =
            description.or_else(|| autoqat_research::git::Git::discover(ws).ok().and_then(|g| g.head_subject()));
        (Some(next), Some(rel), trial, description)
    } else {
        (None, None, None, None)
    };
    let best = results::best_row(&rows);
    let counts = results::Status::ALL
        .iter()
        .map(|s| (s.to_string(), rows.iter().filter(|r| r.status() == *s).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok(Status {
        running,
        finished: rows.len(),
        current_exp,
        current_description,
        run_dir,
        trial,
        best_exp: best.map(|i| rows[i].exp.clone()),
        best_ppl: best.and_then(|i| rows[i].eval_ppl),
        baseline_ppl: rows.iter().find(|r| r.status() == results::Status::Baseline).and_then(|r| r.eval_ppl),
        counts,
        in_flight,
    })
}

/// The experiments in flight in worktrees of their own (two workers or more), from the
/// loop's journals (every tag), in order.
pub fn in_flight(ws: &Path, settings: &autoqat_research::settings::Settings) -> Vec<InFlight> {
    autoqat_research::driver::flights(ws)
        .into_iter()
        .filter(|f| !f.in_workspace)
        .map(|f| {
            let mut settings = settings.clone();
            settings.for_tag(f.tag());
            let rel = settings.run_dir(f.exp());
            let dir = ws.join(&rel);
            let recipe = autoqat_research::executor::Worktree::of(ws, f.tag(), f.exp()).path.join(layout::RECIPE);
            let total = autoqat_recipe::load(&recipe).ok().map(|r| r.total_steps());
            InFlight {
                exp: f.exp(),
                worker: f.worker,
                description: f.description().to_string(),
                slurm_job: std::fs::read_to_string(dir.join(autoqat_research::executor::slurm::JOB_FILE))
                    .ok()
                    .map(|t| t.trim().to_string()),
                trial: progress(&dir.join(run::STEPS_FILE), total),
                run_dir: rel,
            }
        })
        .collect()
}

impl InFlight {
    /// `worker 1: experiment 3 [slurm job 17]: <description>`.
    pub fn line(&self) -> String {
        let job = self.slurm_job.as_ref().map(|j| format!(" [slurm job {j}]")).unwrap_or_default();
        format!("worker {}: experiment {}{job}: {}", self.worker, self.exp, self.description)
    }
}

/// Whether another process holds `.autoqat/lock` (the research loop takes it with flock).
fn lock_held(ws: &Path) -> bool {
    let path = Layout::new(ws).lock();
    let Ok(file) = std::fs::OpenOptions::new().read(true).open(&path) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(_) => false,
    }
}

/// The last row of a trial's `steps.tsv` (docs/contracts.md#the-trial columns), read by the workspace's reader.
pub fn progress(path: &Path, total_steps: Option<u64>) -> Option<TrialProgress> {
    let last = run::read_steps(path).ok()?.pop()?;
    let get = |name: &str| last.get(name).filter(|v| v.is_finite());
    let step = last.step;
    let time_s = get("time_s");
    let eta_s = match (time_s, total_steps) {
        (Some(t), Some(total)) if step > 0 && total >= step => Some(t / step as f64 * (total - step) as f64),
        _ => None,
    };
    Some(TrialProgress {
        step,
        total_steps,
        train_loss: get("train_loss"),
        eval_ppl: get("eval_ppl"),
        time_s,
        eta_s,
        q_neg1: get("q_neg1"),
        q_zero: get("q_zero"),
        q_pos1: get("q_pos1"),
    })
}

/// Human-readable lines.
pub fn render(s: &Status) -> String {
    let ppl = crate::fmt::ppl_or_dash;
    let mut out = String::new();
    let counts: Vec<String> = s.counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    out.push_str(&format!(
        "run: {}\nfinished: {}{}\n",
        if s.running { "running" } else { "not running" },
        s.finished,
        if counts.is_empty() { String::new() } else { format!(" ({})", counts.join(", ")) }
    ));
    out.push_str(&format!(
        "best: {} (experiment {}), baseline {}\n",
        ppl(s.best_ppl),
        s.best_exp.as_deref().unwrap_or("-"),
        ppl(s.baseline_ppl)
    ));
    if let Some(exp) = s.current_exp {
        out.push_str(&format!("current: experiment {exp}: {}\n", s.current_description.as_deref().unwrap_or("")));
        match &s.trial {
            Some(t) => out.push_str(&format!("trial: {}\n", trial_line(t))),
            None => out.push_str("trial: starting (no eval yet)\n"),
        }
    }
    for f in &s.in_flight {
        out.push_str(&f.line());
        out.push('\n');
        match &f.trial {
            Some(t) => out.push_str(&format!("  trial: {}\n", trial_line(t))),
            None => out.push_str("  trial: starting (no eval yet)\n"),
        }
    }
    out
}

/// One line of trial progress: step, loss, PPL, weight mix, ETA.
pub fn trial_line(t: &TrialProgress) -> String {
    let total = t.total_steps.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
    let f = |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into());
    format!(
        "step {}/{total} train_loss {} eval_ppl {} -1/0/+1 {}/{}/{} eta {}",
        t.step,
        f(t.train_loss, 4),
        f(t.eval_ppl, 3),
        f(t.q_neg1, 2),
        f(t.q_zero, 2),
        f(t.q_pos1, 2),
        t.eta_s.map(|e| format!("{e:.0}s")).unwrap_or_else(|| "-".into())
    )
}
