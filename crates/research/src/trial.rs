//! Runs one trial: `sh -c <command>` in its own process group, output to `trial.log`, a
//! wall-clock timeout and a stop flag that kill the whole group, optional pruning, then the
//! result from `summary.json` or from a configured regex over the log.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use autoqat_workspace::layout::Layout;
use autoqat_workspace::run::{self, Summary};

use crate::error::{ResearchError, Result};
use crate::results::Status;

/// Called with the run dir while a trial runs; `Some(reason)` prunes it.
pub type PruneCheck<'a> = Box<dyn Fn(&Path) -> Option<String> + Send + 'a>;

/// How to run one trial.
pub struct TrialSpec<'a> {
    /// Shell command line (placeholders already replaced).
    pub command: String,
    /// The trial's cwd: the workspace, or an experiment's worktree.
    pub workspace: PathBuf,
    /// Absolute run directory (created, emptied first).
    pub run_dir: PathBuf,
    /// Wall-clock limit, counted from when the trial starts running.
    pub timeout: Duration,
    /// Limit on the wait in a cluster queue before it starts (`None`: no limit).
    pub queue_timeout: Option<Duration>,
    /// Set by SIGINT/SIGTERM: kill the trial and return.
    pub stop: &'a AtomicBool,
    /// Called every `poll` with the run dir; `Some(reason)` prunes the trial.
    pub prune: Option<PruneCheck<'a>>,
    /// How often `prune` runs.
    pub poll: Duration,
    /// Regex with one capture group for the metric in the log (foreign trials).
    pub metric_regex: Option<regex::Regex>,
    /// Environment variables removed from the child (API keys).
    pub env_remove: Vec<String>,
    /// Extra environment for the child.
    pub env: Vec<(String, String)>,
}

/// What a trial produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// crash / timeout / pruned, or `None` when the trial finished with a metric.
    pub failure: Option<Status>,
    /// Set when the trial was stopped by a signal to the driver.
    pub interrupted: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// Metrics from summary.json or the regex.
    pub summary: Summary,
    /// Wall-clock seconds measured by the driver.
    pub wall_s: f64,
}

/// The file that records the running trial's process group (killed on resume if orphaned).
pub fn pgid_file(workspace: &Path) -> PathBuf {
    Layout::new(workspace).trial_pgid()
}

/// Kills the process group left behind by a driver that died mid-trial.
pub fn kill_orphan(workspace: &Path) {
    let f = pgid_file(workspace);
    if let Ok(t) = std::fs::read_to_string(&f) {
        if let Ok(pgid) = t.trim().parse::<i32>() {
            if pgid > 1 {
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
        }
        let _ = std::fs::remove_file(&f);
    }
}

fn kill_group(pgid: i32) {
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// How a started trial ended on its own.
#[derive(Debug, Clone)]
pub struct Exit {
    /// Exit status 0.
    pub ok: bool,
    /// The status in words (`3`, `killed by signal 9`, `slurm job 12 ended NODE_FAIL`).
    pub describe: String,
}

/// A started trial, wherever it runs: a local process group or a cluster job.
pub trait Running {
    /// `Some` once the trial ended on its own.
    fn poll(&mut self) -> Result<Option<Exit>>;
    /// Ends the trial and everything it started.
    fn kill(&mut self);
    /// After a normal end: makes sure no stray child outlives the trial.
    fn reap(&mut self) {}
    /// Whether it started running (a cluster job may wait in a queue first).
    fn started(&mut self) -> bool {
        true
    }
    /// Where it is, for an error that ends it while it waits (a queue state and reason).
    fn whereabouts(&self) -> Option<String> {
        None
    }
}

/// Empties (creates) the run dir and opens its `trial.log`; a fresh start of any executor.
pub fn fresh_run_dir(dir: &Path) -> Result<(PathBuf, std::fs::File)> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| ResearchError::io(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| ResearchError::io(dir, e))?;
    let log_path = dir.join(run::LOG_FILE);
    let log = std::fs::File::create(&log_path).map_err(|e| ResearchError::io(&log_path, e))?;
    Ok((log_path, log))
}

/// A trial as a local `sh -c` in its own process group.
struct Local {
    child: std::process::Child,
    pgid: i32,
    pgid_file: PathBuf,
}

impl Local {
    fn spawn(spec: &TrialSpec) -> Result<Local> {
        let (log_path, log) = fresh_run_dir(&spec.run_dir)?;
        let log2 = log.try_clone().map_err(|e| ResearchError::io(&log_path, e))?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(&spec.command).current_dir(&spec.workspace).stdin(Stdio::null()).stdout(log).stderr(log2);
        for k in &spec.env_remove {
            cmd.env_remove(k);
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        unsafe {
            cmd.pre_exec(|| {
                // Own process group, so that a timeout kills the trial's children too.
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                #[cfg(target_os = "linux")]
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child =
            cmd.spawn().map_err(|e| ResearchError::Trial(format!("cannot start `sh -c {}`: {e}", spec.command)))?;
        let pgid = child.id() as i32;
        let pgid_file = pgid_file(&spec.workspace);
        let _ = std::fs::write(&pgid_file, pgid.to_string());
        Ok(Local { child, pgid, pgid_file })
    }
}

impl Running for Local {
    fn poll(&mut self) -> Result<Option<Exit>> {
        match self.child.try_wait() {
            Ok(Some(st)) => Ok(Some(Exit { ok: st.success(), describe: describe(st) })),
            Ok(None) => Ok(None),
            Err(e) => Err(ResearchError::Trial(format!("waiting for the trial: {e}"))),
        }
    }

    fn kill(&mut self) {
        kill_group(self.pgid);
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pgid_file);
    }

    fn reap(&mut self) {
        // The shell is gone; stray children of the trial must not outlive it.
        kill_group(self.pgid);
        let _ = std::fs::remove_file(&self.pgid_file);
    }
}

/// Runs the trial locally to completion, timeout, prune or stop.
pub fn run(spec: &TrialSpec) -> Result<Outcome> {
    let mut job = Local::spawn(spec)?;
    crate::killpoint::hit("trial");
    supervise(spec, &mut job)
}

/// Watches a started trial until it ends, runs past `spec.timeout` (counted from when it
/// started running), is pruned or stopped; then reads its result.
pub fn supervise(spec: &TrialSpec, job: &mut dyn Running) -> Result<Outcome> {
    let dir = &spec.run_dir;
    let log_path = dir.join(run::LOG_FILE);
    let start = Instant::now();
    let mut running_since: Option<Instant> = None;
    let mut out = Outcome::default();
    let mut last_poll = Instant::now();
    let status = loop {
        if let Some(exit) = job.poll()? {
            break Some(exit);
        }
        if running_since.is_none() && job.started() {
            running_since = Some(Instant::now());
        }
        let (clock, limit, what) = match running_since {
            Some(t) => (t, spec.timeout, "ran past"),
            None => (start, spec.queue_timeout.unwrap_or(Duration::MAX), "waited in the queue past"),
        };
        if clock.elapsed() >= limit {
            out.failure = Some(Status::Timeout);
            let at = job.whereabouts().map(|w| format!(" ({w})")).unwrap_or_default();
            out.error = Some(format!("{what} the {:.0} s limit{at}", limit.as_secs_f64()));
            break None;
        }
        if spec.stop.load(Ordering::SeqCst) {
            out.failure = Some(Status::Crash);
            out.interrupted = true;
            out.error = Some("interrupted: the run was stopped by a signal".into());
            break None;
        }
        if let Some(prune) = &spec.prune {
            if last_poll.elapsed() >= spec.poll {
                last_poll = Instant::now();
                if let Some(reason) = prune(dir) {
                    out.failure = Some(Status::Pruned);
                    out.error = Some(reason);
                    break None;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    match &status {
        None => job.kill(),
        Some(_) => job.reap(),
    }
    out.wall_s = start.elapsed().as_secs_f64();
    if out.failure.is_some() {
        if let Ok(Some(s)) = run::read_summary(dir) {
            out.summary = s;
        }
        return Ok(out);
    }
    let exit = status.unwrap_or(Exit { ok: false, describe: "killed".into() });
    // A summary.json that does not read is reported, not taken for a missing one.
    let (read, unreadable) = match run::read_summary(dir) {
        Ok(s) => (s, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let summary = read.or_else(|| {
        let re = spec.metric_regex.as_ref()?;
        let text = std::fs::read_to_string(&log_path).ok()?;
        let v: f64 = re.captures_iter(&text).last()?.get(1)?.as_str().parse().ok()?;
        Some(Summary::from_metric(v))
    });
    match summary {
        Some(s) if s.is_crash() => {
            out.failure = Some(Status::Crash);
            out.error = Some(s.error.clone().unwrap_or_else(|| "the trial reported a crash".into()));
            out.summary = s;
        }
        Some(s) if s.eval_ppl.is_some_and(f64::is_finite) && exit.ok => out.summary = s,
        Some(s) if !exit.ok => {
            out.failure = Some(Status::Crash);
            out.error = Some(format!("exit status {}; {}", exit.describe, tail(&log_path)));
            out.summary = s;
        }
        Some(s) => {
            out.failure = Some(Status::Crash);
            out.error = Some(format!("eval_ppl is missing or not finite ({:?})", s.eval_ppl));
            out.summary = s;
        }
        None => {
            out.failure = Some(Status::Crash);
            let what = unreadable.unwrap_or_else(|| "no summary.json".into());
            out.error =
                Some(format!("{what} and no metric in trial.log (exit status {}); {}", exit.describe, tail(&log_path)));
        }
    }
    Ok(out)
}

fn describe(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => c.to_string(),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown".into(),
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    let t: Vec<&str> = lines.into_iter().rev().collect();
    format!("last log lines: {}", t.join(" | ").chars().take(400).collect::<String>())
}
