//! Where trials run: [`Executor::Local`] (a process group on this machine) or
//! [`Executor::Slurm`] (an `sbatch` job), and the git worktrees that let several trials run at
//! once, each on its own device.

pub mod slurm;

use std::path::{Path, PathBuf};

use git2::Oid;

use crate::error::{ResearchError, Result};
use crate::git::Git;
use crate::settings::{ExecutorSettings, SlurmSettings};
use crate::trial::{self, Outcome, TrialSpec};

/// Where a trial runs.
#[derive(Debug, Clone)]
pub enum Executor {
    /// `sh -c` in its own process group on this machine.
    Local,
    /// An `sbatch` job.
    Slurm(SlurmSettings),
}

impl Executor {
    /// The executor the settings name.
    pub fn new(s: &ExecutorSettings) -> Executor {
        match s.kind.as_str() {
            "slurm" => Executor::Slurm(s.slurm.clone()),
            _ => Executor::Local,
        }
    }

    /// Runs one trial to its end. With `reattach`, a Slurm job that a killed driver left in the
    /// run dir is followed instead of being submitted again (a local trial died with it).
    pub fn run(&self, spec: &TrialSpec, name: &str, reattach: bool) -> Result<Outcome> {
        match self {
            Executor::Local => trial::run(spec),
            Executor::Slurm(s) => {
                let attached = if reattach { slurm::SlurmJob::attach(&spec.run_dir, s) } else { None };
                let mut job = match attached {
                    Some(j) => {
                        tracing::info!("re-attached to slurm job {} of {name}", j.id());
                        j
                    }
                    None => slurm::SlurmJob::submit(spec, s, name)?,
                };
                crate::killpoint::hit("trial");
                trial::supervise(spec, &mut job)
            }
        }
    }
}

/// `s` quoted for `sh -c` (single quotes; an inner quote closes, escapes and reopens).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// GPU ids this process may hand out: `CUDA_VISIBLE_DEVICES` when set, else the driver's list.
fn visible_gpus() -> Vec<String> {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return v.split(',').map(str::trim).filter(|d| !d.is_empty()).map(str::to_string).collect();
    }
    let n = std::fs::read_dir("/proc/driver/nvidia/gpus").map(|d| d.count()).unwrap_or(0);
    (0..n).map(|i| i.to_string()).collect()
}

/// The environment that pins worker `worker` of a local executor to its device: its own GPU
/// (`CUDA_VISIBLE_DEVICES`), or on a machine without GPUs its share of the cores.
pub fn device_env(s: &ExecutorSettings, worker: usize) -> Vec<(String, String)> {
    let mut env = vec![("AUTOQAT_WORKER".to_string(), worker.to_string())];
    if s.kind != "local" || s.workers <= 1 {
        return env;
    }
    let gpus = if s.devices.is_empty() { visible_gpus() } else { s.devices.clone() };
    if let Some(d) = gpus.get(worker % gpus.len().max(1)) {
        env.push(("CUDA_VISIBLE_DEVICES".into(), d.clone()));
    } else {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let threads = if s.threads > 0 { s.threads } else { (cores / s.workers).max(1) };
        for k in ["OMP_NUM_THREADS", "MKL_NUM_THREADS"] {
            env.push((k.into(), threads.to_string()));
        }
    }
    env
}

/// The name of experiment `exp`'s trial: its worktree's, and its Slurm job's.
pub fn trial_name(tag: &str, exp: u32) -> String {
    format!("autoqat-{}-{exp:04}", tag.replace('/', "-"))
}

/// A git worktree in which one experiment's trial runs.
#[derive(Debug, Clone)]
pub struct Worktree {
    /// Its name in git (`git worktree list`).
    pub name: String,
    /// Its directory, under `.autoqat/worktrees/`.
    pub path: PathBuf,
}

impl Worktree {
    /// The worktree of experiment `exp` of run `tag` (not created).
    pub fn of(ws: &Path, tag: &str, exp: u32) -> Worktree {
        let name = trial_name(tag, exp);
        let path = autoqat_workspace::Layout::new(ws).worktrees().join(&name);
        Worktree { name, path }
    }

    /// Checks `commit` out into the worktree and links into it what git does not carry (data,
    /// teacher checkpoints, run dirs: every untracked or ignored entry of the workspace but
    /// the harness state), so that a trial reads the same relative paths as in the workspace.
    pub fn create(&self, git: &Git, commit: Oid) -> Result<()> {
        git.add_worktree(&self.name, &self.path, commit)?;
        let state = autoqat_workspace::layout::STATE_DIR;
        for entry in git.untracked_entries()? {
            if entry == state || entry.starts_with(&format!("{state}/")) {
                continue;
            }
            let link = self.path.join(&entry);
            if link.symlink_metadata().is_ok() {
                continue;
            }
            if let Some(dir) = link.parent() {
                std::fs::create_dir_all(dir).map_err(|e| ResearchError::io(dir, e))?;
            }
            std::os::unix::fs::symlink(git.root.join(&entry), &link).map_err(|e| ResearchError::io(&link, e))?;
        }
        Ok(())
    }

    /// Removes the worktree (its directory and git's record of it).
    pub fn remove(&self, git: &Git) {
        trial::kill_orphan(&self.path);
        git.remove_worktree(&self.name, &self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn each_worker_gets_its_own_device_or_its_share_of_the_cores() {
        let mut s =
            ExecutorSettings { workers: 2, devices: vec!["2".into(), "3".into()], ..ExecutorSettings::default() };
        assert_eq!(get(&device_env(&s, 0), "CUDA_VISIBLE_DEVICES"), Some("2"));
        assert_eq!(get(&device_env(&s, 1), "CUDA_VISIBLE_DEVICES"), Some("3"));
        assert_eq!(get(&device_env(&s, 2), "CUDA_VISIBLE_DEVICES"), Some("2"), "worker i gets entry i mod len");
        assert_eq!(get(&device_env(&s, 1), "AUTOQAT_WORKER"), Some("1"));
        assert_eq!(get(&device_env(&s, 1), "OMP_NUM_THREADS"), None, "a GPU worker keeps libtorch's threads");
        if visible_gpus().is_empty() {
            s.devices.clear();
            s.threads = 3;
            let env = device_env(&s, 1);
            assert_eq!((get(&env, "OMP_NUM_THREADS"), get(&env, "CUDA_VISIBLE_DEVICES")), (Some("3"), None));
        }
        // One worker, or the Slurm executor (gres decides there): nothing is pinned.
        s.workers = 1;
        assert_eq!(device_env(&s, 0).len(), 1);
        s.workers = 2;
        s.kind = "slurm".into();
        assert_eq!(device_env(&s, 0).len(), 1);
    }

    #[test]
    fn the_job_script_carries_the_settings_and_writes_the_exit_status() {
        static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let spec = TrialSpec {
            command: "echo 'it''s' > x".into(),
            workspace: PathBuf::from("/ws/.autoqat/worktrees/autoqat-t-0003"),
            run_dir: PathBuf::from("/ws/runs/0003"),
            timeout: std::time::Duration::from_secs(150),
            queue_timeout: None,
            stop: &STOP,
            prune: None,
            poll: std::time::Duration::from_secs(1),
            metric_regex: None,
            env_remove: Vec::new(),
            env: Vec::new(),
        };
        let s = SlurmSettings { gres: "gpu:1".into(), extra: vec!["--mem=32G".into()], ..SlurmSettings::default() };
        let text = slurm::script(&spec, &s, "autoqat-t-0003");
        for line in [
            "#SBATCH --job-name=autoqat-t-0003",
            "#SBATCH --output=/ws/runs/0003/trial.log",
            "#SBATCH --chdir=/ws/.autoqat/worktrees/autoqat-t-0003",
            "#SBATCH --time=4",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --mem=32G",
            "sh -c 'echo '\\''it'\\'''\\''s'\\'' > x'",
            "echo $? > '/ws/runs/0003/exit_code.part' && mv '/ws/runs/0003/exit_code.part' '/ws/runs/0003/exit_code'",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("--partition"), "an empty partition is the cluster's default");
    }
}
