//! Running an experiment's trial: the command line (with `autoqat` resolved to this
//! executable, shell-quoted), an environment without API keys, pruning against the best run's
//! curve, and the seed-shifted repeats that measure noise and confirm keeps.

use std::path::Path;
use std::time::Duration;

use super::{signals, Driver};
use crate::error::{ResearchError, Result};
use crate::executor::shell_quote;
use crate::prune;
use crate::trial::TrialSpec;
use crate::validate::Validator;

/// What a trial (or its held-out scorer) learns from its environment: its experiment and run dir.
fn run_env(exp: u32, run_dir: &str) -> Vec<(String, String)> {
    vec![("AUTOQAT_EXP".into(), exp.to_string()), ("AUTOQAT_RUN_DIR".into(), run_dir.to_string())]
}

impl Driver {
    /// `template` with `{exp}` and `{run_dir}` replaced and a leading `autoqat` resolved.
    fn command_from(&self, template: &str, exp: u32, run_dir: &str) -> String {
        let mut c = template.replace("{exp}", &format!("{exp:04}")).replace("{run_dir}", run_dir);
        if let Some(rest) = c.strip_prefix("autoqat ") {
            if let Some(exe) = &self.exe {
                c = format!("{} {rest}", shell_quote(&exe.display().to_string()));
            }
        }
        c
    }

    /// The spec of a trial of `exp` run in `root` (the workspace, or the experiment's
    /// worktree, where `run_dir` is given absolute) with `env` added to its environment.
    pub(super) fn trial_spec(
        &self,
        exp: u32,
        root: &Path,
        run_dir: &str,
        prune_against: Option<Vec<(u64, f64)>>,
        env: Vec<(String, String)>,
    ) -> TrialSpec<'static> {
        let margin = self.s.prune.margin;
        let min_step = self.s.prune.min_step;
        let prune: Option<crate::trial::PruneCheck<'static>> = match prune_against {
            Some(best) if self.s.prune.enabled && !best.is_empty() => Some(Box::new(move |dir: &Path| {
                prune::verdict(&prune::curve(&dir.join(autoqat_workspace::run::STEPS_FILE)), &best, margin, min_step)
            })),
            _ => None,
        };
        let queue = self.s.executor.slurm.max_queue_s;
        TrialSpec {
            command: self.command_from(&self.s.trial.command, exp, run_dir),
            workspace: root.to_path_buf(),
            run_dir: self.ws.join(run_dir),
            timeout: Duration::from_secs_f64(self.s.trial.timeout_s),
            queue_timeout: (queue > 0.0).then(|| Duration::from_secs_f64(queue)),
            stop: &signals::STOP,
            prune,
            poll: Duration::from_secs_f64(self.s.prune.poll_s.max(0.05)),
            metric_regex: self
                .s
                .trial
                .metric_regex
                .as_deref()
                .and_then(|r| regex::RegexBuilder::new(r).multi_line(true).build().ok()),
            env_remove: self.secret_env(),
            env: run_env(exp, run_dir).into_iter().chain(env).collect(),
        }
    }

    /// The job name of a trial (what `squeue` shows).
    pub(super) fn job_name(&self, exp: u32) -> String {
        crate::executor::trial_name(&self.tag, exp)
    }

    /// The environment variables that hold API keys: no trial or scorer sees them.
    fn secret_env(&self) -> Vec<String> {
        let mut remove = vec!["OPENAI_API_KEY".to_string(), "ANTHROPIC_API_KEY".to_string()];
        if !self.s.provider.api_key_env.is_empty() {
            remove.push(self.s.provider.api_key_env.clone());
        }
        remove
    }

    /// Scores experiment `exp` (run directory `run_dir`) with `heldout.command`; its log goes to
    /// `<run_dir>-heldout/`. `None` when it failed or was stopped (the reason is logged).
    pub(super) fn score_heldout(&self, exp: u32, run_dir: &str) -> Result<Option<(f64, f64)>> {
        let h = &self.s.heldout;
        let spec = TrialSpec {
            command: self.command_from(&h.command, exp, run_dir),
            workspace: self.ws.clone(),
            run_dir: self.ws.join(format!("{run_dir}{}", autoqat_workspace::layout::HELDOUT_RUN_SUFFIX)),
            timeout: Duration::from_secs_f64(h.timeout_s),
            queue_timeout: None,
            stop: &signals::STOP,
            prune: None,
            poll: Duration::from_secs(1),
            metric_regex: regex::RegexBuilder::new(&h.metric_regex).multi_line(true).build().ok(),
            env_remove: self.secret_env(),
            env: run_env(exp, run_dir),
        };
        let out = self.executor.run(&spec, &format!("{}-heldout", self.job_name(exp)), false)?;
        match (out.failure, out.summary.eval_ppl) {
            (None, Some(p)) => Ok(Some((p, out.wall_s))),
            _ => {
                tracing::warn!("held-out scoring of exp {exp} failed: {}", out.error.unwrap_or_default());
                Ok(None)
            }
        }
    }

    /// Shifts the seed key of the recipe under `root` by `offset` (the file is rewritten; the
    /// caller restores it from the commit). `false` when there is no seed key to shift.
    pub(super) fn shift_seed(&self, root: &Path, offset: i64) -> Result<bool> {
        let Some(key) = self.s.trial.seed_key.clone() else { return Ok(false) };
        if matches!(self.validator, Validator::None) {
            return Ok(false);
        }
        let path = root.join(self.recipe_path());
        let text = std::fs::read_to_string(&path).map_err(|e| ResearchError::io(&path, e))?;
        let format = self.validator.format();
        if format == crate::validate::Format::Toml && text.parse::<toml::Table>().is_err() {
            return Ok(false);
        }
        let seed = format.read(&text, &key).and_then(|v| v.as_i64()).unwrap_or(0);
        let Some((search, replace)) = format.set_edit(&text, &key, &serde_json::Value::from(seed + offset)) else {
            return Ok(false);
        };
        std::fs::write(&path, text.replacen(&search, &replace, 1)).map_err(|e| ResearchError::io(&path, e))?;
        Ok(true)
    }
}
