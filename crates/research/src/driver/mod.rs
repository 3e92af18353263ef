//! The research loop. Each experiment: prompt, proposal, edit, journal, commit (`Autoqat-Status:
//! running`), trial, decision, final commit with trailers, note, refs, results row.
//!
//! Crash safety: a finished experiment is defined by its git note. The order of writes is
//! journal (`.autoqat/inflight/<tag>-<exp>.json`) → running commit → trial → final commit →
//! discarded ref → note → branch move/reset → results row → journal removed. On `--resume`,
//! each journal without a note has its trial re-run; everything else is reconciled from the
//! notes: discarded refs re-created, the branch reset to the best, results.tsv rewritten.
//!
//! The concerns live in submodules: [`signals`], the stop [`limits`], the [`journal`],
//! [`recovery`], running [`trials`], the keep [`policy`], the [`pool`] of workers that runs
//! them (one worker is the serial loop), and the [`report`]er fed by events. This module holds
//! the driver's state and the proposer's turn.

mod journal;
mod limits;
mod policy;
mod pool;
mod recovery;
pub mod report;
mod signals;
mod trials;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use git2::Oid;

use journal::Pending;
pub use journal::{flights, Flight};
pub use limits::StopReason;
use report::{Console, Event, Reporter};
pub use signals::install_signal_handlers;

use crate::answer;
use crate::edit::{self, EditRules};
use crate::error::{ResearchError, Result};
use crate::executor::Executor;
use crate::git::{self, Git, Lock};
use crate::killpoint::hit;
use crate::noise;
use crate::prompt::{self, PromptInputs, Templates};
use crate::proposer::{self, Context, Observation, Proposer, ProposerError, Request};
use crate::prune;
use crate::results::{self, Record, Status};
use crate::settings::Settings;
use crate::trial;
use crate::validate::Validator;

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
    /// Trials in flight at once (`executor.workers`).
    pub workers: Option<u32>,
    /// Where trials run: `local` or `slurm` (`executor.kind`).
    pub executor: Option<String>,
}

impl RunOptions {
    /// Writes the overrides given into `s`; an executor other than `local` or `slurm` is refused.
    fn apply(&self, s: &mut Settings) -> Result<()> {
        if let Some(p) = &self.provider {
            s.provider.kind = p.clone();
        }
        if let Some(n) = self.max_experiments {
            s.run.max_experiments = Some(n);
        }
        if let Some(h) = self.hours {
            s.run.hours = Some(h);
        }
        if let Some(c) = self.max_cost {
            s.run.max_cost_usd = Some(c);
        }
        if let Some(w) = self.workers {
            s.executor.workers = w.max(1);
        }
        if let Some(k) = &self.executor {
            if !["local", "slurm"].contains(&k.as_str()) {
                return Err(ResearchError::Workspace(format!("--executor {k}: expected local or slurm")));
            }
            s.executor.kind = k.clone();
        }
        Ok(())
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

/// What `rec` meant and scored, for the searches and the tried set: its recipe and its
/// parent's read through the schema. `None` without a schema, or for a record without a recipe
/// of its own (an invalid answer's commit holds its parent's, which is tried already).
fn observe(git: &Git, validator: &Validator, s: &Settings, ws: &Path, rec: &Record) -> Option<Observation> {
    let schema = validator.schema()?;
    let path = s.run.mutable_paths.first()?;
    let read = |commit: &str| {
        let text = git.file_at(Oid::from_str(commit).ok()?, path)?;
        validator.format().values(schema, &text)
    };
    if rec.status() == Status::Invalid {
        return None;
    }
    let values = read(&rec.commit)?;
    let parent = read(&rec.parent).unwrap_or_default();
    let changed: Vec<(String, serde_json::Value)> = if rec.status() == Status::Baseline {
        Vec::new()
    } else {
        let differs = |k: &String, v: &serde_json::Value| !parent.get(k).is_some_and(|p| proposer::tpe::same(p, v));
        values.iter().filter(|(k, v)| differs(k, v)).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let ppl = match (rec.status(), rec.eval_ppl.filter(|p| p.is_finite())) {
        (_, Some(p)) => Some(rec.confirm_ppl.filter(|c| c.is_finite()).map_or(p, |c| (p + c) / 2.0)),
        // A pruned trial stopped while clearly worse: its curve's last point is what it reached.
        (Status::Pruned, None) => run_curve(ws, s, rec.exp).iter().rev().map(|p| p.1).find(|p| p.is_finite()),
        _ => None,
    };
    Some(Observation { exp: rec.exp, status: rec.status(), ppl, values, changed, near_miss: rec.near_miss })
}

/// The eval curve (step, PPL) of experiment `exp`'s run, from its steps.tsv (what pruning
/// compares against).
fn run_curve(ws: &Path, s: &Settings, exp: u32) -> Vec<(u64, f64)> {
    prune::curve(&ws.join(s.run_dir(exp)).join(autoqat_workspace::run::STEPS_FILE))
}

/// What `rec`'s recipe is remembered by in the tried set: its meaning through the validator
/// (the values of a TOML recipe, what a Python file runs). `None` for an invalid answer, whose
/// commit holds its parent's recipe.
fn meaning(git: &Git, validator: &Validator, s: &Settings, rec: &Record) -> Option<String> {
    if rec.status() == Status::Invalid {
        return None;
    }
    let text = git.file_at(Oid::from_str(&rec.commit).ok()?, s.run.mutable_paths.first()?)?;
    validator.meaning_key(&text)
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
    observations: Vec<Observation>,
    tried: HashSet<String>,
    started: Instant,
    invalid_streak: u32,
    exe: Option<PathBuf>,
    reporter: Box<dyn Reporter>,
    executor: Executor,
    /// What the other workers have running, as the prompt shows it.
    in_flight: Vec<String>,
    _lock: Lock,
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
        opts.apply(&mut s)?;
        let lock = Lock::acquire(workspace)?;
        let git = Git::open(workspace)?;
        let ws = git.root.clone();
        git.ensure_excludes()?;
        trial::kill_orphan(&ws);
        pool::kill_orphans(&ws);
        let tag = opts.tag.clone().unwrap_or_else(|| s.run.tag.clone());
        if tag.is_empty() || tag.contains(|c: char| c.is_whitespace() || c == ':' || c == '~' || c == '^') {
            return Err(ResearchError::Workspace(format!("tag `{tag}` is not a valid branch name part")));
        }
        let records = git.records(&tag)?;
        // Another tag's run directories are its checkpoints and exports: a new tag must not
        // write over them.
        let shared = !s.trial.run_dir.contains("{tag}");
        s.for_tag(&tag);
        if shared && !opts.resume && records.is_empty() && ws.join(s.run_dir(0)).exists() {
            if let Some(other) = git.tags()?.into_iter().find(|t| *t != tag) {
                return Err(ResearchError::Workspace(format!(
                    "tag `{tag}` would write over the run directories of tag `{other}` (trial.run_dir = {:?} has no {{tag}}); \
                     set trial.run_dir = \"runs/{{tag}}/{{exp}}\" in autoqat.toml and commit it, or move {} away first",
                    s.trial.run_dir,
                    s.run_dir(0).display()
                )));
            }
        }
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
        if let (Validator::Python(schema), Some(path)) = (&validator, s.run.mutable_paths.first()) {
            let constants = std::fs::read_to_string(ws.join(path)).ok().and_then(|t| crate::python::constants(&t));
            for f in &schema.fields {
                if !constants.as_ref().is_some_and(|c| c.contains_key(&f.key)) {
                    tracing::warn!(
                        "validator field `{}` is not a top-level `{} = <literal>` of {path}: the builtin search cannot set it",
                        f.key,
                        f.key
                    );
                }
            }
        }
        let observations: Vec<Observation> =
            records.iter().filter_map(|r| observe(&git, &validator, &s, &ws, r)).collect();
        // Tried means the diff's text, and (with a schema) the recipe's meaning.
        let tried: HashSet<String> = records
            .iter()
            .filter(|r| !r.diff_key.is_empty())
            .map(|r| r.diff_key.clone())
            .chain(records.iter().filter_map(|r| meaning(&git, &validator, &s, r)))
            .collect();
        let exe = autoqat_workspace::self_exe().ok();
        let reporter: Box<dyn Reporter> = Box::new(Console { json: opts.json, quiet: opts.quiet });
        let templates = Templates::load(&ws.join(&s.run.prompts_dir));
        Ok(Driver {
            ws,
            git,
            tag,
            validator,
            templates,
            proposer,
            records,
            observations,
            tried,
            started: Instant::now(),
            invalid_streak: 0,
            exe,
            reporter,
            executor: Executor::new(&s.executor),
            s,
            in_flight: Vec::new(),
            _lock: lock,
        })
    }

    /// Sends the loop's events to `reporter` instead of the console.
    pub fn with_reporter(mut self, reporter: Box<dyn Reporter>) -> Self {
        self.reporter = reporter;
        self
    }

    /// Runs experiments until a stop condition.
    pub fn run(mut self) -> Result<RunSummary> {
        self.recover()?;
        let stop = self.run_pool()?;
        if stop == StopReason::StopFile {
            let _ = std::fs::remove_file(self.ws.join(&self.s.run.stop_file));
        }
        if stop != StopReason::Signal {
            if let Some(exp) = results::best(&self.records).map(|b| b.exp) {
                self.heldout(exp);
            }
        }
        Ok(RunSummary { stop, records: self.records })
    }

    /// Scores experiment `exp` on the held-out split once (heldout.tsv remembers it). Nothing
    /// here feeds a decision, so a failure is reported and the run goes on.
    fn heldout(&mut self, exp: u32) {
        if self.s.heldout.command.trim().is_empty() {
            return;
        }
        let Some(rec) = self.records.iter().find(|r| r.exp == exp).cloned() else { return };
        let path = autoqat_workspace::Layout::new(&self.ws).heldout();
        let scored = autoqat_workspace::heldout::read(&path);
        if scored
            .as_ref()
            .is_ok_and(|rows| rows.iter().any(|r| !r.commit.is_empty() && rec.commit.starts_with(&r.commit)))
        {
            return;
        }
        let run_dir = self.s.run_dir(exp).to_string_lossy().to_string();
        let line = match self.score_heldout(exp, &run_dir) {
            Ok(Some((ppl, time_s))) => {
                let row = autoqat_workspace::heldout::Row {
                    exp,
                    commit: rec.commit.clone(),
                    search_ppl: rec.eval_ppl,
                    heldout_ppl: ppl,
                    time_s,
                };
                // The note first: heldout.tsv is rebuilt from the notes, so a row written
                // without its note could not come back.
                let scored_at =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                let note = git::HeldoutNote { row: row.clone(), scored_at };
                let noted = Oid::from_str(&rec.commit)
                    .map_err(|e| ResearchError::Results(e.to_string()))
                    .and_then(|c| self.git.write_heldout_note(c, &note));
                match noted
                    .map_err(|e| e.to_string())
                    .and_then(|()| autoqat_workspace::heldout::append(&path, &row).map_err(|e| e.to_string()))
                {
                    Ok(()) => format!(
                        "held-out: exp {exp} scores {ppl:.4} on the held-out text (search PPL {})",
                        rec.eval_ppl.map_or("-".into(), |p| format!("{p:.4}"))
                    ),
                    Err(e) => format!("held-out: exp {exp} scored {ppl:.4}, but {e}"),
                }
            }
            Ok(None) => format!(
                "held-out: scoring exp {exp} failed; see {run_dir}{}/trial.log",
                autoqat_workspace::layout::HELDOUT_RUN_SUFFIX
            ),
            Err(e) => format!("held-out: cannot score exp {exp}: {e}"),
        };
        self.say(&line);
    }

    /// The baseline's measured run-to-run σ, if it ran more than once.
    fn sigma(&self) -> Option<f64> {
        self.records.iter().find(|r| r.status() == Status::Baseline).and_then(|r| r.sigma)
    }

    fn results_path(&self) -> PathBuf {
        autoqat_workspace::Layout::new(&self.ws).results()
    }

    fn recipe_path(&self) -> &str {
        &self.s.run.mutable_paths[0]
    }

    fn say(&mut self, line: &str) {
        self.reporter.event(Event::Note(line));
    }

    /// The system and user prompts with the `rows` most recent results.
    fn prompt(&self, program: &str, recipe_path: &str, recipe: &str, rows: usize) -> (String, String) {
        prompt::build(
            &self.templates,
            &PromptInputs {
                program,
                schema: self.validator.schema(),
                recipe_path,
                recipe,
                records: &self.records,
                mutable_paths: &self.s.run.mutable_paths,
                max_changed_lines: self.s.run.max_changed_lines,
                recent_rows: rows,
                observations: &self.observations,
                in_flight: &self.in_flight,
            },
        )
    }

    /// The proposer's turn for experiment `exp`, against the recipe in the workspace (the
    /// best): a change to try, or an invalid answer already recorded.
    fn propose(&mut self, exp: u32) -> std::result::Result<Turn, Halt> {
        let recipe_path = self.recipe_path().to_string();
        let recipe = std::fs::read_to_string(self.ws.join(&recipe_path))
            .map_err(|e| ResearchError::io(self.ws.join(&recipe_path), e))?;
        let program =
            std::fs::read_to_string(self.ws.join(&self.s.run.program)).unwrap_or_else(|_| "(no program.md)".into());
        // A prompt the model's context cannot hold is rebuilt with half the result rows, down to
        // none; only then is it an error.
        let mut rows = self.s.run.recent_rows;
        let (mut system, mut user) = self.prompt(&program, &recipe_path, &recipe, rows);
        let mut cost = (0.0, 0u64, 0u64);
        // After a rejected first answer: the reason and the answer, quoted back once.
        let mut repair: Option<(String, String)> = None;
        let mut last_desc = String::new();
        let mut round = 0;
        while round < 2 {
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
                    format: self.validator.format(),
                    recipe_path: &recipe_path,
                    recipe: &recipe,
                    records: &self.records,
                    tried: &self.tried,
                    observations: &self.observations,
                    max_changed_lines: self.s.run.max_changed_lines,
                };
                let attempt_user = match &repair {
                    Some((e, answer)) => prompt::repair(&self.templates, &user, answer, e, &recipe_path),
                    None => user.clone(),
                };
                let req = Request {
                    system: system.clone(),
                    user: attempt_user,
                    repair: repair.as_ref().map(|r| r.0.clone()),
                    ctx,
                };
                match self.proposer.as_mut().map(|p| p.propose(&req)) {
                    Some(Ok(r)) => r,
                    Some(Err(ProposerError::Exhausted(m))) => return Err(Halt::Stop(StopReason::Exhausted(m))),
                    Some(Err(ProposerError::ContextTooLong(m))) if rows > 0 => {
                        rows /= 2;
                        self.say(&format!(
                            "the prompt is longer than the model's context; retrying with {rows} result rows ({m})"
                        ));
                        (system, user) = self.prompt(&program, &recipe_path, &recipe, rows);
                        continue;
                    }
                    Some(Err(ProposerError::ContextTooLong(m))) => {
                        return Err(Halt::Error(ResearchError::Proposer(format!(
                            "the prompt does not fit the model's context even without result rows: {m} (hint: \
                             lower provider.max_tokens, now {}, which is reserved for the answer, or serve the \
                             model with a longer context)",
                            self.s.provider.max_tokens
                        ))))
                    }
                    Some(Err(e)) => return Err(Halt::Error(ResearchError::Proposer(e.to_string()))),
                    None => return Err(Halt::Error(ResearchError::Proposer("no proposer".into()))),
                }
            };
            round += 1;
            cost.0 += reply.cost_usd;
            cost.1 += reply.input_tokens;
            cost.2 += reply.output_tokens;
            // An answer cut at max_tokens reads as broken JSON; say which knob cut it.
            let parsed = answer::parse(&reply.text).map_err(|e| match reply.truncated {
                true => format!(
                    "{e} (the answer was cut off at provider.max_tokens = {}; raise it)",
                    self.s.provider.max_tokens
                ),
                false => e,
            });
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
                    return Ok(Turn::Change(pend, a.files));
                }
                Err(e) if round == 1 => {
                    tracing::info!("answer rejected, asking for a repair: {e}");
                    repair = Some((e, reply.text));
                }
                Err(e) => {
                    let desc = if last_desc.is_empty() { "invalid answer".to_string() } else { last_desc.clone() };
                    self.record_invalid(exp, &desc, &e, cost)?;
                    return Ok(Turn::Recorded);
                }
            }
        }
        Err(Halt::Error(ResearchError::Proposer("the proposer gave no answer".into())))
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
        // Rows stay in experiment order: in the parallel loop a later experiment can finish
        // first, and then the file is rewritten whole (as `results --rebuild` writes it).
        let at = self.records.partition_point(|r| r.exp < rec.exp);
        if at == self.records.len() {
            results::append(&self.results_path(), &rec)?;
        } else {
            let mut all = self.records.clone();
            all.insert(at, rec.clone());
            results::write_all(&self.results_path(), &all)?;
        }
        self.reporter.event(Event::Finished(&rec));
        if !rec.diff_key.is_empty() {
            self.tried.insert(rec.diff_key.clone());
        }
        if let Some(k) = meaning(&self.git, &self.validator, &self.s, &rec) {
            self.tried.insert(k);
        }
        if let Some(o) = observe(&self.git, &self.validator, &self.s, &self.ws, &rec) {
            self.observations.push(o);
        }
        self.records.insert(at, rec);
        Ok(())
    }

    /// Writes the final commit of `rec` (the running `commit` with its status, PPL and any
    /// error in the message; `body` before the error), its note and its ref: a keep moves the
    /// branch to it, anything else goes under `refs/autoqat/<tag>/discarded/<exp>`.
    fn seal(&mut self, commit: Oid, p: &Pending, body: &str, rec: &mut Record) -> Result<()> {
        let status = rec.status();
        let body = match &rec.error {
            Some(e) => format!("{body}\n\nError: {}", results::one_line(e)),
            None => body.to_string(),
        };
        let msg = git::message(&p.description, &body, rec.exp, status.as_str(), rec.eval_ppl);
        let final_commit = self.git.amend(commit, &msg)?;
        rec.commit = final_commit.to_string();
        if status.is_kept() {
            self.git.write_note(final_commit, rec)?;
            self.git.set_ref(&Git::branch_ref(&self.tag), final_commit, "autoqat: keep")?;
            self.git.force_checkout_head()?;
        } else {
            self.git.set_ref(&Git::discarded_ref(&self.tag, rec.exp), final_commit, "autoqat: discard")?;
            self.git.write_note(final_commit, rec)?;
        }
        Ok(())
    }

    /// Writes the row of a sealed experiment; a keep is scored on the held-out split when
    /// `heldout.keeps` asks for it.
    fn record(&mut self, rec: Record) -> std::result::Result<(), Halt> {
        hit("before_row");
        let (exp, kept) = (rec.exp, rec.status() == Status::Keep);
        self.push(rec)?;
        if kept && self.s.heldout.keeps {
            self.heldout(exp);
        }
        Ok(())
    }
}

/// What a proposer's turn produced.
enum Turn {
    /// A valid change: its journal entry and the files it writes.
    Change(Pending, Vec<(String, String)>),
    /// An invalid answer, recorded as such.
    Recorded,
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

/// Rebuilds `results.tsv` from the notes of `tag` alone, and heldout.tsv (every tag's held-out
/// scores, in the order they were taken) when the repository holds any; returns the records.
pub fn rebuild(workspace: &Path, tag: &str) -> Result<Vec<Record>> {
    let git = Git::open(workspace)?;
    let records = git.records(tag)?;
    let layout = autoqat_workspace::Layout::new(&git.root);
    results::write_all(&layout.results(), &records)?;
    let heldout: Vec<_> = git.heldout_notes()?.into_iter().map(|n| n.row).collect();
    if !heldout.is_empty() {
        autoqat_workspace::heldout::write_all(&layout.heldout(), &heldout)?;
    }
    Ok(records)
}
