//! Running an experiment's trial: the command line (with `autoqat` resolved to this
//! executable, shell-quoted), an environment without API keys, pruning against the best run's
//! curve, and the seed-shifted repeats that measure noise and confirm keeps.

use std::path::Path;
use std::time::Duration;

use super::{signals, Driver};
use crate::error::{ResearchError, Result};
use crate::prune;
use crate::trial::{self, Outcome, TrialSpec};
use crate::validate::Validator;

/// `s` quoted for `sh -c` (single quotes; an inner quote closes, escapes and reopens).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// What a trial (or its held-out scorer) learns from its environment: its experiment and run dir.
fn run_env(exp: u32, run_dir: &str) -> Vec<(String, String)> {
    vec![("AUTOQAT_EXP".into(), exp.to_string()), ("AUTOQAT_RUN_DIR".into(), run_dir.to_string())]
}

impl Driver {
    /// The trial command line for one run directory.
    pub(super) fn command_line(&self, exp: u32, run_dir: &str) -> String {
        self.command_from(&self.s.trial.command, exp, run_dir)
    }

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

    pub(super) fn run_trial(&self, exp: u32, run_dir: &str, prune_against: Option<Vec<(u64, f64)>>) -> Result<Outcome> {
        let margin = self.s.prune.margin;
        let min_step = self.s.prune.min_step;
        let prune: Option<trial::PruneCheck> = match prune_against {
            Some(best) if self.s.prune.enabled && !best.is_empty() => Some(Box::new(move |dir: &Path| {
                prune::verdict(&prune::curve(&dir.join(autoqat_workspace::run::STEPS_FILE)), &best, margin, min_step)
            })),
            _ => None,
        };
        let spec = TrialSpec {
            command: self.command_line(exp, run_dir),
            workspace: &self.ws,
            run_dir: self.ws.join(run_dir),
            timeout: Duration::from_secs_f64(self.s.trial.timeout_s),
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
            env: run_env(exp, run_dir),
        };
        trial::run(&spec)
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
            workspace: &self.ws,
            run_dir: self.ws.join(format!("{run_dir}{}", autoqat_workspace::layout::HELDOUT_RUN_SUFFIX)),
            timeout: Duration::from_secs_f64(h.timeout_s),
            stop: &signals::STOP,
            prune: None,
            poll: Duration::from_secs(1),
            metric_regex: regex::RegexBuilder::new(&h.metric_regex).multi_line(true).build().ok(),
            env_remove: self.secret_env(),
            env: run_env(exp, run_dir),
        };
        let out = trial::run(&spec)?;
        match (out.failure, out.summary.eval_ppl) {
            (None, Some(p)) => Ok(Some((p, out.wall_s))),
            _ => {
                tracing::warn!("held-out scoring of exp {exp} failed: {}", out.error.unwrap_or_default());
                Ok(None)
            }
        }
    }

    /// Runs a trial with the seed key shifted by `offset` (the file is restored from git).
    pub(super) fn run_seeded(&self, exp: u32, run_dir: &str, offset: i64) -> Result<Option<Outcome>> {
        let Some(key) = self.s.trial.seed_key.clone() else { return Ok(None) };
        if matches!(self.validator, Validator::None) {
            return Ok(None);
        }
        let path = self.recipe_path().to_string();
        let text =
            std::fs::read_to_string(self.ws.join(&path)).map_err(|e| ResearchError::io(self.ws.join(&path), e))?;
        let format = self.validator.format();
        if format == crate::validate::Format::Toml && text.parse::<toml::Table>().is_err() {
            return Ok(None);
        }
        let seed = format.read(&text, &key).and_then(|v| v.as_i64()).unwrap_or(0);
        let Some((search, replace)) = format.set_edit(&text, &key, &serde_json::Value::from(seed + offset)) else {
            return Ok(None);
        };
        std::fs::write(self.ws.join(&path), text.replacen(&search, &replace, 1))
            .map_err(|e| ResearchError::io(self.ws.join(&path), e))?;
        let out = self.run_trial(exp, run_dir, None);
        self.git.force_checkout_head()?;
        out.map(Some)
    }
}
