//! The research loop. Each experiment: prompt, proposal, edit, commit (`Autoqat-Status:
//! running`), trial, decision, final commit with trailers, note, refs, results row.
//!
//! Crash safety: a finished experiment is defined by its git note. The order of writes is
//! journal (`.autoqat/pending.json`) → running commit → trial → final commit → discarded ref →
//! note → branch move/reset → results row. On `--resume`, a running commit at the branch head
//! with a matching journal has its trial re-run; everything else is reconciled from the notes:
//! discarded refs re-created, the branch reset to the best, results.tsv rewritten.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use git2::Oid;
use serde::{Deserialize, Serialize};

use crate::answer;
use crate::edit::{self, EditRules};
use crate::error::{ResearchError, Result};
use crate::git::{self, Git, Lock};
use crate::killpoint::hit;
use crate::noise;
use crate::prompt::{self, PromptInputs, Templates};
use crate::proposer::{self, Context, Proposer, ProposerError, Request};
use crate::prune;
use crate::results::{self, Record, Status};
use crate::settings::Settings;
use crate::trial::{self, Outcome, TrialSpec};
use crate::validate::Validator;

/// Set by SIGINT/SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to the stop flag: the running trial is stopped and set aside for `--resume`.
pub fn install_signal_handlers() {
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Command-line overrides of the settings.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run tag (default: settings.run.tag).
    pub tag: Option<String>,
    /// Stop after this many experiments.
    pub max_experiments: Option<u32>,
    /// Stop after this many hours.
    pub hours: Option<f64>,
    /// Stop at this proposer cost.
    pub max_cost: Option<f64>,
    /// Provider kind override.
    pub provider: Option<String>,
    /// Continue an interrupted run.
    pub resume: bool,
    /// Print one JSON record per experiment instead of a text line.
    pub json: bool,
    /// Print nothing (benchmarks, tests).
    pub quiet: bool,
}

/// Why the loop ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// `max_experiments` reached.
    MaxExperiments,
    /// `hours` reached.
    Hours,
    /// Cost ceiling reached.
    Cost,
    /// The stop file appeared.
    StopFile,
    /// SIGINT or SIGTERM.
    Signal,
    /// Too many invalid answers in a row.
    InvalidStreak(u32),
    /// The builtin search has nothing left to try.
    Exhausted(String),
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::MaxExperiments => write!(f, "reached the experiment limit"),
            StopReason::Hours => write!(f, "reached the wall-clock limit"),
            StopReason::Cost => write!(f, "reached the cost ceiling"),
            StopReason::StopFile => write!(f, "found the stop file"),
            StopReason::Signal => write!(f, "stopped by a signal"),
            StopReason::InvalidStreak(n) => {
                write!(f, "{n} invalid answers in a row; check the proposer's model and the prompts")
            }
            StopReason::Exhausted(m) => write!(f, "{m}"),
        }
    }
}

/// What a finished `run` reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Why it stopped.
    pub stop: StopReason,
    /// Every finished experiment of the tag.
    pub records: Vec<Record>,
}

/// The meaning key (`validate::recipe_key`) of the recipe at `commit`, when there is a schema
/// to read it with and the commit holds the recipe.
fn recipe_key_at(git: &Git, validator: &Validator, s: &Settings, commit: &str) -> Option<String> {
    let schema = validator.schema()?;
    let oid = git2::Oid::from_str(commit).ok()?;
    let text = git.file_at(oid, s.run.mutable_paths.first()?)?;
    crate::validate::recipe_key(schema, &text)
}

/// The journal of the experiment in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    tag: String,
    exp: u32,
    description: String,
    rationale: String,
    diff: String,
    diff_key: String,
    cost_usd: f64,
    input_tokens: u64,
    output_tokens: u64,
}

/// The loop's state.
pub struct Driver {
    ws: PathBuf,
    s: Settings,
    git: Git,
    tag: String,
    validator: Validator,
    templates: Templates,
    proposer: Option<Box<dyn Proposer>>,
    records: Vec<Record>,
    tried: HashSet<String>,
    opts: RunOptions,
    started: Instant,
    invalid_streak: u32,
    exe: Option<PathBuf>,
    _lock: Lock,
}

fn pending_path(ws: &Path) -> PathBuf {
    autoqat_workspace::Layout::new(ws).pending()
}

impl Driver {
    /// Locks the workspace, creates or resumes the branch and recovers an interrupted
    /// experiment. `proposer` overrides the one named in the settings (tests, benchmarks).
    pub fn open(
        workspace: &Path,
        mut s: Settings,
        opts: RunOptions,
        proposer: Option<Box<dyn Proposer>>,
    ) -> Result<Driver> {
        if let Some(p) = &opts.provider {
            s.provider.kind = p.clone();
        }
        if let Some(n) = opts.max_experiments {
            s.run.max_experiments = Some(n);
        }
        if let Some(h) = opts.hours {
            s.run.hours = Some(h);
        }
        if let Some(c) = opts.max_cost {
            s.run.max_cost_usd = Some(c);
        }
        let lock = Lock::acquire(workspace)?;
        let git = Git::open(workspace)?;
        let ws = git.root.clone();
        git.ensure_excludes()?;
        trial::kill_orphan(&ws);
        let tag = opts.tag.clone().unwrap_or_else(|| s.run.tag.clone());
        if tag.is_empty() || tag.contains(|c: char| c.is_whitespace() || c == ':' || c == '~' || c == '^') {
            return Err(ResearchError::Workspace(format!("tag `{tag}` is not a valid branch name part")));
        }
        let records = git.records(&tag)?;
        if opts.resume {
            // A kill during a reset may leave a mutable file half-written; the loop owns those.
            let dirty: Vec<String> =
                git.dirty_paths()?.into_iter().filter(|p| !s.run.mutable_paths.contains(p)).collect();
            if !dirty.is_empty() {
                return Err(ResearchError::Workspace(format!(
                    "the worktree has uncommitted changes outside the mutable paths ({}); commit or remove them first",
                    dirty.join(", ")
                )));
            }
            git.checkout_branch(&tag)?;
        } else {
            git.require_clean(&s.run.mutable_paths)?;
            if !records.is_empty() {
                return Err(ResearchError::Workspace(format!(
                    "tag `{tag}` already has {} experiments; pass --resume to continue it or --tag to start another run",
                    records.len()
                )));
            }
            git.create_branch(&tag)?;
        }
        let validator = Validator::from_settings(&s);
        let mut tried: HashSet<String> =
            records.iter().filter(|r| !r.diff_key.is_empty()).map(|r| r.diff_key.clone()).collect();
        for r in &records {
            tried.extend(recipe_key_at(&git, &validator, &s, &r.commit));
        }
        let exe = std::env::current_exe().ok();
        let templates = Templates::load(&ws.join(&s.run.prompts_dir));
        Ok(Driver {
            ws,
            s,
            git,
            tag,
            validator,
            templates,
            proposer,
            records,
            tried,
            opts,
            started: Instant::now(),
            invalid_streak: 0,
            exe,
            _lock: lock,
        })
    }

    /// Runs experiments until a stop condition.
    pub fn run(mut self) -> Result<RunSummary> {
        self.recover()?;
        let stop = loop {
            if let Some(r) = self.should_stop() {
                break r;
            }
            let exp = self.records.last().map(|r| r.exp + 1).unwrap_or(0);
            match self.experiment(exp) {
                Ok(()) => {}
                Err(Halt::Stop(r)) => break r,
                Err(Halt::Error(e)) => return Err(e),
            }
        };
        if stop == StopReason::StopFile {
            let _ = std::fs::remove_file(self.ws.join(&self.s.run.stop_file));
        }
        Ok(RunSummary { stop, records: self.records })
    }

    fn should_stop(&self) -> Option<StopReason> {
        if STOP.load(Ordering::SeqCst) {
            return Some(StopReason::Signal);
        }
        if self.ws.join(&self.s.run.stop_file).exists() {
            return Some(StopReason::StopFile);
        }
        if let Some(n) = self.s.run.max_experiments {
            if self.records.len() as u64 >= n as u64 {
                return Some(StopReason::MaxExperiments);
            }
        }
        if let Some(h) = self.s.run.hours {
            if self.started.elapsed().as_secs_f64() >= h * 3600.0 {
                return Some(StopReason::Hours);
            }
        }
        if let Some(c) = self.s.run.max_cost_usd {
            if self.records.iter().map(|r| r.cost_usd).sum::<f64>() >= c {
                return Some(StopReason::Cost);
            }
        }
        if self.invalid_streak >= self.s.run.max_invalid_streak.max(1) {
            return Some(StopReason::InvalidStreak(self.invalid_streak));
        }
        None
    }

    /// Finishes or rolls back what a killed run left behind.
    fn recover(&mut self) -> Result<()> {
        let head = self.git.head()?;
        let t = git::parse_trailers(&self.git.message_of(head)?);
        let pending: Option<Pending> =
            std::fs::read_to_string(pending_path(&self.ws)).ok().and_then(|t| serde_json::from_str(&t).ok());
        let finished: HashSet<u32> = self.records.iter().map(|r| r.exp).collect();
        if let Some(p) = pending.clone().filter(|p| p.tag == self.tag && !finished.contains(&p.exp)) {
            // A signal stopped this experiment's trial: put its commit back on the branch and
            // run the same change again (no new proposal, no second bill).
            let name = Git::interrupted_ref(&self.tag, p.exp);
            if let Some(commit) = self.git.ref_target(&name) {
                if self.git.parent_of(commit)? == Some(head) {
                    self.git.reset_branch(&self.tag, commit, || {})?;
                    self.git.delete_ref(&name)?;
                    self.say(&format!("resuming experiment {}: re-running its interrupted trial", p.exp));
                    return self.finish_in_recovery(p, commit);
                }
            }
        }
        if t.status.as_deref() == Some("running") {
            if let (Some(exp), Some(p)) = (t.exp, pending.clone()) {
                if p.exp == exp && p.tag == self.tag && !finished.contains(&exp) {
                    self.git.force_checkout_head()?;
                    self.say(&format!("resuming experiment {exp}: re-running its trial"));
                    return self.finish_in_recovery(p, head);
                }
            }
        }
        // Everything else: the notes say what finished; make refs, branch and results agree.
        for r in &self.records {
            if !r.status().is_kept() {
                let name = Git::discarded_ref(&self.tag, r.exp);
                if self.git.ref_target(&name).is_none() {
                    if let Ok(oid) = Oid::from_str(&r.commit) {
                        self.git.set_ref(&name, oid, "autoqat: recover discarded ref")?;
                    }
                }
            }
        }
        let target = match results::best(&self.records) {
            Some(b) => Oid::from_str(&b.commit).map_err(|e| ResearchError::Results(e.to_string()))?,
            None => {
                let mut c = head;
                while git::parse_trailers(&self.git.message_of(c)?).status.as_deref() == Some("running") {
                    match self.git.parent_of(c)? {
                        Some(p) => c = p,
                        None => break,
                    }
                }
                c
            }
        };
        self.git.reset_branch(&self.tag, target, || {})?;
        results::write_all(&self.results_path(), &self.records)?;
        let _ = std::fs::remove_file(pending_path(&self.ws));
        Ok(())
    }

    /// Finishes an experiment that recovery picked up again; a stop during it (a signal) ends
    /// recovery quietly, as the run loop's own stop check follows.
    fn finish_in_recovery(&mut self, p: Pending, commit: Oid) -> Result<()> {
        match self.finish(p, commit) {
            Ok(()) | Err(Halt::Stop(_)) => Ok(()),
            Err(Halt::Error(e)) => Err(e),
        }
    }

    fn results_path(&self) -> PathBuf {
        autoqat_workspace::Layout::new(&self.ws).results()
    }

    fn recipe_path(&self) -> &str {
        &self.s.run.mutable_paths[0]
    }

    fn say(&self, line: &str) {
        if !self.opts.quiet && !self.opts.json {
            println!("{line}");
        }
    }

    /// One experiment: propose (or baseline), commit, trial, record.
    fn experiment(&mut self, exp: u32) -> std::result::Result<(), Halt> {
        if self.records.is_empty() {
            let p = Pending {
                tag: self.tag.clone(),
                exp,
                description: "baseline: the unmodified recipe".into(),
                rationale: String::new(),
                diff: String::new(),
                diff_key: String::new(),
                cost_usd: 0.0,
                input_tokens: 0,
                output_tokens: 0,
            };
            let commit = self.commit_pending(&p, &[])?;
            return self.finish(p, commit);
        }
        let recipe_path = self.recipe_path().to_string();
        let recipe = std::fs::read_to_string(self.ws.join(&recipe_path))
            .map_err(|e| ResearchError::io(self.ws.join(&recipe_path), e))?;
        let program =
            std::fs::read_to_string(self.ws.join(&self.s.run.program)).unwrap_or_else(|_| "(no program.md)".into());
        let (system, user) = prompt::build(
            &self.templates,
            &PromptInputs {
                program: &program,
                schema: self.validator.schema(),
                recipe_path: &recipe_path,
                recipe: &recipe,
                records: &self.records,
                mutable_paths: &self.s.run.mutable_paths,
                max_changed_lines: self.s.run.max_changed_lines,
                recent_rows: self.s.run.recent_rows,
            },
        );
        let mut cost = (0.0, 0u64, 0u64);
        let mut attempt_user = user.clone();
        let mut repair: Option<String> = None;
        let mut last_desc = String::new();
        for round in 0..2 {
            hit("propose");
            let reply = {
                if self.proposer.is_none() {
                    self.proposer = Some(
                        proposer::make(&self.s.provider)
                            .map_err(|e| Halt::Error(ResearchError::Proposer(e.to_string())))?,
                    );
                }
                let ctx = Context {
                    schema: self.validator.schema(),
                    recipe_path: &recipe_path,
                    recipe: &recipe,
                    records: &self.records,
                    tried: &self.tried,
                };
                let req = Request { system: system.clone(), user: attempt_user.clone(), repair: repair.clone(), ctx };
                match self.proposer.as_mut().map(|p| p.propose(&req)) {
                    Some(Ok(r)) => r,
                    Some(Err(ProposerError::Exhausted(m))) => return Err(Halt::Stop(StopReason::Exhausted(m))),
                    Some(Err(e)) => return Err(Halt::Error(ResearchError::Proposer(e.to_string()))),
                    None => return Err(Halt::Error(ResearchError::Proposer("no proposer".into()))),
                }
            };
            cost.0 += reply.cost_usd;
            cost.1 += reply.input_tokens;
            cost.2 += reply.output_tokens;
            let parsed = answer::parse(&reply.text);
            if let Ok(p) = &parsed {
                last_desc = p.description.clone();
            }
            let rules = EditRules {
                root: &self.ws,
                mutable_paths: &self.s.run.mutable_paths,
                validator: &self.validator,
                max_changed_lines: self.s.run.max_changed_lines,
                tried: &self.tried,
            };
            let applied = parsed.and_then(|p| edit::apply(&p, &rules).map(|a| (p, a)));
            match applied {
                Ok((p, a)) => {
                    self.invalid_streak = 0;
                    let pend = Pending {
                        tag: self.tag.clone(),
                        exp,
                        description: p.description,
                        rationale: p.rationale,
                        diff: a.diff,
                        diff_key: a.diff_key,
                        cost_usd: cost.0,
                        input_tokens: cost.1,
                        output_tokens: cost.2,
                    };
                    let commit = self.commit_pending(&pend, &a.files)?;
                    return self.finish(pend, commit);
                }
                Err(e) if round == 0 => {
                    tracing::info!("answer rejected, asking for a repair: {e}");
                    attempt_user = prompt::repair(&self.templates, &user, &reply.text, &e, &recipe_path);
                    repair = Some(e);
                }
                Err(e) => {
                    let desc = if last_desc.is_empty() { "invalid answer".to_string() } else { last_desc.clone() };
                    return self.record_invalid(exp, &desc, &e, cost);
                }
            }
        }
        Ok(())
    }

    fn commit_pending(&mut self, p: &Pending, files: &[(String, String)]) -> std::result::Result<Oid, Halt> {
        autoqat_workspace::atomic::write_json(&pending_path(&self.ws), p)?;
        let msg = git::message(&p.description, &p.rationale, p.exp, "running", None);
        let oid = self.git.commit_files(files, &msg)?;
        hit("after_commit");
        Ok(oid)
    }

    fn record_invalid(
        &mut self,
        exp: u32,
        desc: &str,
        error: &str,
        cost: (f64, u64, u64),
    ) -> std::result::Result<(), Halt> {
        self.invalid_streak += 1;
        let msg = git::message(desc, &format!("Rejected: {error}"), exp, "invalid", None);
        let commit = self.git.commit_detached(&msg)?;
        let parent = self.git.head()?;
        let rec = Record {
            tag: self.tag.clone(),
            exp,
            commit: commit.to_string(),
            parent: parent.to_string(),
            status: Some(Status::Invalid),
            cost_usd: cost.0,
            input_tokens: cost.1,
            output_tokens: cost.2,
            description: desc.to_string(),
            error: Some(error.to_string()),
            ..Record::default()
        };
        self.git.set_ref(&Git::discarded_ref(&self.tag, exp), commit, "autoqat: invalid")?;
        self.git.write_note(commit, &rec)?;
        hit("before_row");
        self.push(rec)
    }

    fn push(&mut self, rec: Record) -> std::result::Result<(), Halt> {
        results::append(&self.results_path(), &rec)?;
        let _ = std::fs::remove_file(pending_path(&self.ws));
        if self.opts.json && !self.opts.quiet {
            println!("{}", serde_json::to_string(&rec).unwrap_or_default());
        } else {
            self.say(&prompt::record_line(&rec));
        }
        if !rec.diff_key.is_empty() {
            self.tried.insert(rec.diff_key.clone());
        }
        self.tried.extend(recipe_key_at(&self.git, &self.validator, &self.s, &rec.commit));
        self.records.push(rec);
        Ok(())
    }

    /// The trial command line for one run directory.
    fn command_line(&self, exp: u32, run_dir: &str) -> String {
        let mut c = self.s.trial.command.replace("{exp}", &format!("{exp:04}")).replace("{run_dir}", run_dir);
        if let Some(rest) = c.strip_prefix("autoqat ") {
            if let Some(exe) = &self.exe {
                c = format!("'{}' {rest}", exe.display().to_string().replace('\'', "'\\''"));
            }
        }
        c
    }

    fn run_trial(&self, exp: u32, run_dir: &str, prune_against: Option<Vec<(u64, f64)>>) -> Result<Outcome> {
        let mut remove = vec!["OPENAI_API_KEY".to_string(), "ANTHROPIC_API_KEY".to_string()];
        if !self.s.provider.api_key_env.is_empty() {
            remove.push(self.s.provider.api_key_env.clone());
        }
        let margin = self.s.prune.margin;
        let min_step = self.s.prune.min_step;
        let prune: Option<trial::PruneCheck> = match prune_against {
            Some(best) if self.s.prune.enabled && !best.is_empty() => Some(Box::new(move |dir: &Path| {
                prune::verdict(
                    &prune::read_steps(&dir.join(autoqat_workspace::run::STEPS_FILE)),
                    &best,
                    margin,
                    min_step,
                )
            })),
            _ => None,
        };
        let spec = TrialSpec {
            command: self.command_line(exp, run_dir),
            workspace: &self.ws,
            run_dir: self.ws.join(run_dir),
            timeout: Duration::from_secs_f64(self.s.trial.timeout_s),
            stop: &STOP,
            prune,
            poll: Duration::from_secs_f64(self.s.prune.poll_s.max(0.05)),
            metric_regex: self
                .s
                .trial
                .metric_regex
                .as_deref()
                .and_then(|r| regex::RegexBuilder::new(r).multi_line(true).build().ok()),
            env_remove: remove,
            env: vec![("AUTOQAT_EXP".into(), exp.to_string()), ("AUTOQAT_RUN_DIR".into(), run_dir.to_string())],
        };
        trial::run(&spec)
    }

    /// Runs a trial with the seed key shifted by `offset` (the file is restored from git).
    fn run_seeded(&self, exp: u32, run_dir: &str, offset: i64) -> Result<Option<Outcome>> {
        let Some(key) = self.s.trial.seed_key.clone() else { return Ok(None) };
        if matches!(self.validator, Validator::None) {
            return Ok(None);
        }
        let path = self.recipe_path().to_string();
        let text =
            std::fs::read_to_string(self.ws.join(&path)).map_err(|e| ResearchError::io(self.ws.join(&path), e))?;
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(_) => return Ok(None),
        };
        let seed = crate::validate::lookup(&table, &key).and_then(|v| v.as_integer()).unwrap_or(0);
        let Some((search, replace)) =
            proposer::builtin::line_edit(&text, &key, &serde_json::Value::from(seed + offset))
        else {
            return Ok(None);
        };
        std::fs::write(self.ws.join(&path), text.replacen(&search, &replace, 1))
            .map_err(|e| ResearchError::io(self.ws.join(&path), e))?;
        let out = self.run_trial(exp, run_dir, None);
        self.git.force_checkout_head()?;
        out.map(Some)
    }

    /// Runs the trial(s) of a committed experiment and records the result.
    fn finish(&mut self, p: Pending, commit: Oid) -> std::result::Result<(), Halt> {
        let exp = p.exp;
        let run_dir = self.s.run_dir(exp).to_string_lossy().to_string();
        let best = results::best(&self.records).cloned();
        let best_steps = best
            .as_ref()
            .map(|b| prune::read_steps(&self.ws.join(self.s.run_dir(b.exp)).join(autoqat_workspace::run::STEPS_FILE)));
        let first = self.run_trial(exp, &run_dir, best_steps)?;
        if first.interrupted {
            return Err(self.set_aside(exp, commit));
        }
        let mut rec = Record {
            tag: self.tag.clone(),
            exp,
            description: p.description.clone(),
            rationale: p.rationale.clone(),
            diff: p.diff.clone(),
            diff_key: p.diff_key.clone(),
            cost_usd: p.cost_usd,
            input_tokens: p.input_tokens,
            output_tokens: p.output_tokens,
            ..Record::default()
        };
        rec.set_measurements(&first.summary, first.wall_s);
        rec.error = first.error.clone();
        let status = if let Some(f) = first.failure {
            f
        } else if let Some(b) = &best {
            let bp = b.eval_ppl.unwrap_or(f64::INFINITY);
            let ppl = rec.eval_ppl.unwrap_or(f64::INFINITY);
            rec.delta = Some((ppl - bp) / bp);
            if noise::beats(ppl, bp, self.s.noise.min_rel_improvement) {
                if self.s.noise.confirm_seed {
                    match self.run_seeded(exp, &format!("{run_dir}-seed2"), 1)? {
                        Some(o) if o.interrupted => return Err(self.set_aside(exp, commit)),
                        Some(o) if o.failure.is_none() => {
                            rec.confirm_ppl = o.summary.eval_ppl;
                            let c = o.summary.eval_ppl.unwrap_or(f64::INFINITY);
                            if noise::beats(c, bp, self.s.noise.min_rel_improvement) {
                                Status::Keep
                            } else {
                                Status::Discard
                            }
                        }
                        Some(o) => {
                            rec.error =
                                Some(format!("second-seed confirmation failed: {}", o.error.unwrap_or_default()));
                            Status::Discard
                        }
                        None => Status::Keep,
                    }
                } else {
                    Status::Keep
                }
            } else {
                Status::Discard
            }
        } else {
            // The baseline (no best yet). Repeats measure the noise floor.
            let mut ppls: Vec<f64> = rec.eval_ppl.into_iter().collect();
            for r in 1..self.s.noise.baseline_repeats.max(1) {
                if STOP.load(Ordering::SeqCst) {
                    break;
                }
                if let Some(o) = self.run_seeded(exp, &format!("{run_dir}-r{r}"), r as i64)? {
                    if o.interrupted {
                        return Err(self.set_aside(exp, commit));
                    }
                    if let Some(v) = o.summary.eval_ppl.filter(|v| v.is_finite() && o.failure.is_none()) {
                        ppls.push(v);
                    }
                }
            }
            if ppls.len() > 1 {
                rec.sigma = noise::sigma(&ppls);
                rec.baseline_ppls = ppls;
            }
            Status::Baseline
        };
        hit("after_trial");
        rec.status = Some(status);
        let parent = self.git.parent_of(commit)?.unwrap_or(commit);
        rec.parent = parent.to_string();
        let body = match &rec.error {
            Some(e) => format!("{}\n\nError: {}", p.rationale, results::one_line(e)),
            None => p.rationale.clone(),
        };
        let msg = git::message(&p.description, &body, exp, status.as_str(), rec.eval_ppl);
        let final_commit = self.git.amend(commit, &msg)?;
        rec.commit = final_commit.to_string();
        if status.is_kept() {
            self.git.write_note(final_commit, &rec)?;
            self.git.set_ref(&Git::branch_ref(&self.tag), final_commit, "autoqat: keep")?;
            self.git.force_checkout_head()?;
        } else {
            self.git.set_ref(&Git::discarded_ref(&self.tag, exp), final_commit, "autoqat: discard")?;
            self.git.write_note(final_commit, &rec)?;
            let back = best.as_ref().and_then(|b| Oid::from_str(&b.commit).ok()).unwrap_or(parent);
            self.git.reset_branch(&self.tag, back, || hit("reset"))?;
        }
        hit("before_row");
        self.push(rec)
    }

    /// Sets aside an experiment whose trial a signal stopped. It gets no row: it neither crashed
    /// nor finished. Its commit moves to `refs/autoqat/<tag>/interrupted/<exp>`, the branch goes
    /// back to the commit before it, and the journal stays, so `autoqat run --resume` re-runs
    /// the same change.
    fn set_aside(&mut self, exp: u32, commit: Oid) -> Halt {
        let moved = (|| -> Result<()> {
            self.git.set_ref(&Git::interrupted_ref(&self.tag, exp), commit, "autoqat: interrupted")?;
            let parent = self.git.parent_of(commit)?.unwrap_or(commit);
            self.git.reset_branch(&self.tag, parent, || {})
        })();
        match moved {
            Ok(()) => {
                self.say(&format!(
                    "experiment {exp} interrupted before its trial finished: not recorded; `autoqat run --resume` re-runs it"
                ));
                Halt::Stop(StopReason::Signal)
            }
            Err(e) => Halt::Error(e),
        }
    }
}

/// Ends one experiment early: a stop condition or an error.
enum Halt {
    Stop(StopReason),
    Error(ResearchError),
}

impl From<ResearchError> for Halt {
    fn from(e: ResearchError) -> Self {
        Halt::Error(e)
    }
}

impl From<git2::Error> for Halt {
    fn from(e: git2::Error) -> Self {
        Halt::Error(e.into())
    }
}

impl From<autoqat_workspace::WorkspaceError> for Halt {
    fn from(e: autoqat_workspace::WorkspaceError) -> Self {
        Halt::Error(e.into())
    }
}

/// Rebuilds `results.tsv` from the notes of `tag` alone; returns the records.
pub fn rebuild(workspace: &Path, tag: &str) -> Result<Vec<Record>> {
    let git = Git::open(workspace)?;
    let records = git.records(tag)?;
    results::write_all(&autoqat_workspace::Layout::new(&git.root).results(), &records)?;
    Ok(records)
}
