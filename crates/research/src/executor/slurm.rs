//! The Slurm executor: a trial becomes an `sbatch` job whose script (written into the run dir
//! for review) runs the trial command in its worktree and then writes the command's exit
//! status beside its outputs. The driver follows the job with `squeue`, ends it with `scancel`,
//! and reads the result from the run dir as for a local trial. The job id is kept in the run
//! dir, so that a driver restarted after a kill -9 re-attaches to a job still running instead
//! of submitting it again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::shell_quote;
use crate::error::{ResearchError, Result};
use crate::settings::SlurmSettings;
use crate::trial::{self, Exit, Running, TrialSpec};

/// The job script, in the run dir.
pub const SCRIPT_FILE: &str = "job.sh";
/// The job id, in the run dir.
pub const JOB_FILE: &str = "slurm_job";
/// The trial command's exit status, written by the job script when the command ends.
pub const EXIT_FILE: &str = "exit_code";

/// States in which a job has not ended (`squeue`'s long names).
const ALIVE: [&str; 8] =
    ["PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "STAGE_OUT"];

/// The `--time` of a job: the configured one, or the trial timeout plus a minute (whole minutes).
fn time_limit(s: &SlurmSettings, timeout: Duration) -> String {
    if !s.time.trim().is_empty() {
        return s.time.trim().to_string();
    }
    ((timeout.as_secs_f64() / 60.0).ceil().max(1.0) as u64 + 1).to_string()
}

/// The job script of a trial.
pub fn script(spec: &TrialSpec, s: &SlurmSettings, name: &str) -> String {
    let dir = spec.run_dir.display().to_string();
    let mut lines = vec![
        "#!/bin/sh".to_string(),
        format!("#SBATCH --job-name={name}"),
        format!("#SBATCH --output={}", spec.run_dir.join(autoqat_workspace::run::LOG_FILE).display()),
        format!("#SBATCH --chdir={}", spec.workspace.display()),
        format!("#SBATCH --time={}", time_limit(s, spec.timeout)),
        "#SBATCH --ntasks=1".to_string(),
    ];
    for (flag, v) in [("partition", &s.partition), ("account", &s.account), ("gres", &s.gres)] {
        if !v.trim().is_empty() {
            lines.push(format!("#SBATCH --{flag}={}", v.trim()));
        }
    }
    lines.extend(s.extra.iter().map(|l| format!("#SBATCH {}", l.trim())));
    lines.push("# Written by autoqat: the trial command, then its exit status for the driver.".into());
    lines.push(format!("sh -c {}", shell_quote(&spec.command)));
    let part = shell_quote(&format!("{dir}/{EXIT_FILE}.part"));
    lines.push(format!("echo $? > {part} && mv {part} {}", shell_quote(&format!("{dir}/{EXIT_FILE}"))));
    lines.join("\n") + "\n"
}

/// A trial submitted to Slurm.
pub struct SlurmJob {
    id: String,
    run_dir: PathBuf,
    poll: Duration,
    last: Option<Instant>,
    state: String,
    reason: String,
}

/// Runs a Slurm client command; its stdout, or an error naming the command and its stderr.
fn client(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().map_err(|e| {
        ResearchError::Trial(format!(
            "cannot run `{what}`: {e} (the slurm executor needs the Slurm client commands on PATH)"
        ))
    })?;
    if !out.status.success() {
        return Err(ResearchError::Trial(format!("`{what}` failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

impl SlurmJob {
    /// Empties the run dir, writes the job script there and submits it.
    pub fn submit(spec: &TrialSpec, s: &SlurmSettings, name: &str) -> Result<SlurmJob> {
        trial::fresh_run_dir(&spec.run_dir)?;
        let path = spec.run_dir.join(SCRIPT_FILE);
        std::fs::write(&path, script(spec, s, name)).map_err(|e| ResearchError::io(&path, e))?;
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable").arg(&path).current_dir(&spec.workspace);
        // The job inherits sbatch's environment (--export=ALL): no API key, the trial's own vars.
        for k in &spec.env_remove {
            cmd.env_remove(k);
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let out = client(&mut cmd, "sbatch --parsable")?;
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
            return Err(ResearchError::Trial(format!("sbatch printed no job id: {:?}", out.trim())));
        }
        let f = spec.run_dir.join(JOB_FILE);
        std::fs::write(&f, format!("{id}\n")).map_err(|e| ResearchError::io(&f, e))?;
        Ok(SlurmJob::new(id, &spec.run_dir, s))
    }

    /// The job a killed driver left behind in `run_dir`, when Slurm still knows it or it
    /// finished (its exit status is there).
    pub fn attach(run_dir: &Path, s: &SlurmSettings) -> Option<SlurmJob> {
        let id = std::fs::read_to_string(run_dir.join(JOB_FILE)).ok()?.trim().to_string();
        if id.is_empty() {
            return None;
        }
        let mut job = SlurmJob::new(id, run_dir, s);
        let known = run_dir.join(EXIT_FILE).exists() || job.query().ok().flatten().is_some();
        known.then_some(job)
    }

    fn new(id: String, run_dir: &Path, s: &SlurmSettings) -> SlurmJob {
        SlurmJob {
            id,
            run_dir: run_dir.to_path_buf(),
            poll: Duration::from_secs_f64(s.poll_s),
            last: None,
            state: "PENDING".into(),
            reason: String::new(),
        }
    }

    /// The job id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `squeue`'s state of the job; `None` once Slurm no longer lists it as alive.
    fn query(&mut self) -> Result<Option<String>> {
        let mut cmd = Command::new("squeue");
        cmd.args(["-h", "-j", &self.id, "-o", "%T|%r"]);
        let out = match client(&mut cmd, "squeue") {
            Ok(o) => o,
            // A job that left the controller's memory is an "invalid job id" to squeue.
            Err(e) if e.to_string().contains("Invalid job id") => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(line) = out.lines().find(|l| !l.trim().is_empty()) else { return Ok(None) };
        let (state, reason) = line.trim().split_once('|').unwrap_or((line.trim(), ""));
        self.state = state.to_string();
        self.reason = reason.to_string();
        Ok(ALIVE.contains(&state).then(|| state.to_string()))
    }

    /// How a job that ended without writing its exit status ended, in Slurm's words.
    fn final_state(&self) -> String {
        let show = Command::new("scontrol").args(["show", "job", &self.id, "-o"]).output();
        if let Ok(o) = show {
            let text = String::from_utf8_lossy(&o.stdout);
            let field = |k: &str| {
                text.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string).unwrap_or_default()
            };
            let state = field("JobState=");
            if !state.is_empty() {
                let reason = field("Reason=");
                return match reason.as_str() {
                    "" | "None" => state,
                    r => format!("{state} ({r})"),
                };
            }
        }
        let acct = Command::new("sacct").args(["-j", &self.id, "-X", "-n", "-P", "-o", "State"]).output();
        match acct.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()) {
            Ok(s) if !s.is_empty() => s,
            _ => self.state.clone(),
        }
    }

    fn exit_code(&self) -> Option<Exit> {
        let text = std::fs::read_to_string(self.run_dir.join(EXIT_FILE)).ok()?;
        let code = text.trim().to_string();
        Some(Exit { ok: code == "0", describe: code })
    }
}

impl Running for SlurmJob {
    fn poll(&mut self) -> Result<Option<Exit>> {
        if let Some(e) = self.exit_code() {
            return Ok(Some(e));
        }
        if self.last.is_some_and(|t| t.elapsed() < self.poll) {
            return Ok(None);
        }
        self.last = Some(Instant::now());
        if self.query()?.is_some() {
            return Ok(None);
        }
        // Gone from the queue: the exit status may have landed in between.
        Ok(Some(self.exit_code().unwrap_or_else(|| Exit {
            ok: false,
            describe: format!("slurm job {} ended {} before the trial command finished", self.id, self.final_state()),
        })))
    }

    fn kill(&mut self) {
        let _ = Command::new("scancel").arg(&self.id).output();
    }

    fn started(&mut self) -> bool {
        self.state != "PENDING" || self.run_dir.join(EXIT_FILE).exists()
    }

    fn whereabouts(&self) -> Option<String> {
        Some(match self.reason.as_str() {
            "" | "None" => format!("slurm job {} {}", self.id, self.state),
            r => format!("slurm job {} {}: {r}", self.id, self.state),
        })
    }
}
