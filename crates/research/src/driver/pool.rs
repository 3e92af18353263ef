//! The parallel loop (`executor.workers > 1`): up to N experiments in flight at once, each in
//! its own git worktree under `.autoqat/worktrees/` and on its own device, while the proposer
//! answers for the next one. The baseline runs first and alone, in the workspace.
//!
//! An experiment's commit is made beside the branch, its parent the best at that moment, and
//! kept reachable by `refs/autoqat/<tag>/running/<exp>` while its trial runs. When it finishes:
//! - its parent is still the best: the keep decision is the serial loop's (margin, second seed);
//!   a keep moves the branch to it, anything else goes under `discarded/<exp>`;
//! - another keep landed while it ran (its parent is no longer the best): it is not kept, since
//!   its recipe lacks the newer keep. If it beat the best it was tried against, it is recorded
//!   `superseded` and its change is re-applied on top of the new best (a three-way merge) and
//!   queued once as a new experiment, ahead of new proposals; otherwise it is a `discard`. A
//!   change that no longer applies (a conflict, or already in the best) is reported, not queued.
//!
//! So keeps land in experiment order, each on the one before, and the branch head is always
//! the best. Rows are written in experiment order whatever order trials finish in.
//!
//! Crash safety: before its commit, each experiment in flight has a journal
//! (`.autoqat/inflight/<tag>-<exp>.json`); it is removed after its row. `--resume` re-runs the
//! trial of each journal without a note (re-attaching to a Slurm job still running), and the
//! queue of changes to re-apply (`.autoqat/queue.json`) survives a kill.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use git2::Oid;
use serde::{Deserialize, Serialize};

use super::journal::Pending;
use super::{limits, policy, Driver, Halt, StopReason, Turn};
use crate::edit::{self, EditRules};
use crate::error::{ResearchError, Result};
use crate::executor::{self, Worktree};
use crate::git::{self, Git};
use crate::killpoint::hit;
use crate::results::{self, Record, Status};
use crate::trial::Outcome;

/// The journal of one experiment in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flight {
    /// What it is (the serial loop's journal entry).
    pending: Pending,
    /// Its running commit (empty until it is made).
    commit: String,
    /// The best it was proposed against: its commit's parent.
    parent: String,
    /// The worker slot (device) it runs on.
    pub worker: usize,
    /// The experiment whose change it re-applies on a newer best, if it is such a replay.
    replays: Option<u32>,
}

impl Flight {
    /// Its experiment number.
    pub fn exp(&self) -> u32 {
        self.pending.exp
    }

    /// Its run tag.
    pub fn tag(&self) -> &str {
        &self.pending.tag
    }

    /// Its one-line description.
    pub fn description(&self) -> &str {
        &self.pending.description
    }
}

fn journal_path(ws: &Path, tag: &str, exp: u32) -> PathBuf {
    autoqat_workspace::Layout::new(ws).inflight().join(format!("{}-{exp:04}.json", tag.replace('/', "-")))
}

fn write_flight(ws: &Path, f: &Flight) -> Result<()> {
    let path = journal_path(ws, &f.pending.tag, f.pending.exp);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ResearchError::io(dir, e))?;
    }
    Ok(autoqat_workspace::atomic::write_json(&path, f)?)
}

/// The journals of the experiments in flight in `ws` (every tag), in experiment order.
pub fn flights(ws: &Path) -> Vec<Flight> {
    let dir = autoqat_workspace::Layout::new(ws).inflight();
    let mut out: Vec<Flight> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok())
        .collect();
    out.sort_by_key(|f: &Flight| (f.pending.tag.clone(), f.pending.exp));
    out
}

/// Kills the trials a killed driver left running in its worktrees.
pub(super) fn kill_orphans(ws: &Path) {
    for e in std::fs::read_dir(autoqat_workspace::Layout::new(ws).worktrees()).into_iter().flatten().flatten() {
        crate::trial::kill_orphan(&e.path());
    }
}

/// One queued replay: experiment `exp` of run `tag`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Queued {
    tag: String,
    exp: u32,
}

/// A change to run: its journal entry and the files it writes.
type Change = (Pending, Vec<(String, String)>);

/// A stage of an experiment's trials.
enum Stage {
    /// Its first trial.
    First,
    /// Its second-seed trial, after the first one's outcome.
    Confirm(Box<Outcome>),
}

/// An experiment whose trial is running.
struct Live {
    f: Flight,
    wt: Worktree,
    stage: Stage,
}

/// A trial's end, sent by the thread that ran it.
struct Done {
    exp: u32,
    out: Result<Outcome>,
}

/// The parallel loop's moving parts.
struct Pool {
    live: BTreeMap<u32, Live>,
    queue: VecDeque<u32>,
    tx: mpsc::Sender<Done>,
    rx: mpsc::Receiver<Done>,
    stop: Option<StopReason>,
}

impl Driver {
    /// Runs experiments with up to `executor.workers` trials in flight until a stop condition;
    /// then waits for the trials in flight (a signal stops them, to be re-run on `--resume`).
    pub(super) fn run_pool(&mut self) -> Result<StopReason> {
        let workers = self.s.executor.workers as usize;
        let (tx, rx) = mpsc::channel();
        let mut pool = Pool { live: BTreeMap::new(), queue: self.read_queue(), tx, rx, stop: None };
        let left: Vec<Flight> = flights(&self.ws).into_iter().filter(|f| f.pending.tag == self.tag).collect();
        self.sweep_worktrees(&left.iter().map(|f| f.pending.exp).collect::<Vec<_>>());
        for f in left {
            self.resume_flight(&mut pool, f)?;
        }
        loop {
            if pool.stop.is_none() {
                pool.stop =
                    limits::check(&self.ws, &self.s, &self.records, pool.live.len(), self.started, self.invalid_streak);
            }
            if pool.stop.is_none() && pool.live.len() < workers {
                match self.launch_next(&mut pool, workers) {
                    Ok(()) => {}
                    Err(Halt::Stop(r)) => pool.stop = Some(r),
                    Err(Halt::Error(e)) => return Err(e),
                }
                continue;
            }
            if pool.live.is_empty() {
                break;
            }
            match pool.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(done) => match self.land(&mut pool, done) {
                    Ok(()) => {}
                    Err(Halt::Stop(r)) => pool.stop = Some(r),
                    Err(Halt::Error(e)) => return Err(e),
                },
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.in_flight.clear();
        self.sweep_worktrees(&[]);
        Ok(pool.stop.unwrap_or(StopReason::MaxExperiments))
    }

    /// Starts the next experiment: the baseline (alone, in the workspace), a queued replay, or
    /// a new proposal.
    fn launch_next(&mut self, pool: &mut Pool, workers: usize) -> std::result::Result<(), Halt> {
        if self.records.is_empty() {
            if pool.live.is_empty() {
                return self.experiment(0);
            }
            return Err(Halt::Error(ResearchError::Workspace("experiments are in flight before the baseline".into())));
        }
        let exp = self.next_exp(pool);
        let worker = (0..workers).find(|w| !pool.live.values().any(|l| l.f.worker == *w)).unwrap_or(0);
        while let Some(of) = pool.queue.pop_front() {
            self.write_queue(&pool.queue)?;
            if let Some((p, files)) = self.replay(of, exp)? {
                return self.launch(pool, p, files, worker, Some(of));
            }
        }
        // The prompt shows what is running now.
        self.in_flight = pool
            .live
            .values()
            .map(|l| {
                let p = &l.f.pending;
                format!("exp {} (worker {}): {}\n{}", p.exp, l.f.worker, p.description, p.diff.trim_end())
            })
            .collect();
        match self.propose(exp)? {
            Turn::Change(p, files) => self.launch(pool, p, files, worker, None),
            Turn::Recorded => Ok(()),
        }
    }

    /// The next free experiment number: after every recorded or running one. (Every journal
    /// is running once the loop has resumed them; a set-aside one only appears on a signal,
    /// after which nothing is launched.)
    fn next_exp(&self, pool: &Pool) -> u32 {
        self.records.iter().map(|r| r.exp).chain(pool.live.keys().copied()).max().map_or(0, |m| m + 1)
    }

    /// The best's commit and its record.
    fn best(&self) -> Result<(Oid, Record)> {
        let b = results::best(&self.records)
            .cloned()
            .ok_or_else(|| ResearchError::Results("the parallel loop needs the baseline first".into()))?;
        Ok((Oid::from_str(&b.commit).map_err(|e| ResearchError::Results(e.to_string()))?, b))
    }

    /// Journals, commits (beside the branch, on the best) and starts experiment `p.exp`.
    fn launch(
        &mut self,
        pool: &mut Pool,
        p: Pending,
        files: Vec<(String, String)>,
        worker: usize,
        replays: Option<u32>,
    ) -> std::result::Result<(), Halt> {
        let (best, _) = self.best()?;
        let exp = p.exp;
        let mut f = Flight { pending: p, commit: String::new(), parent: best.to_string(), worker, replays };
        write_flight(&self.ws, &f)?;
        let msg = git::message(&f.pending.description, &f.pending.rationale, exp, "running", None);
        let commit = self.git.commit_on(best, &files, &msg)?;
        self.git.set_ref(&Git::running_ref(&self.tag, exp), commit, "autoqat: running")?;
        f.commit = commit.to_string();
        write_flight(&self.ws, &f)?;
        hit("after_commit");
        // In flight counts as tried: the proposer is not to send the same change again.
        if !f.pending.diff_key.is_empty() {
            self.tried.insert(f.pending.diff_key.clone());
        }
        if let Some(k) = self.git.file_at(commit, self.recipe_path()).and_then(|t| self.validator.meaning_key(&t)) {
            self.tried.insert(k);
        }
        let wt = Worktree::of(&self.ws, &self.tag, exp);
        wt.create(&self.git, commit)?;
        self.start(pool, Live { f, wt, stage: Stage::First }, false)?;
        Ok(())
    }

    /// Runs the current stage's trial of `live` on a thread of its own.
    fn start(&mut self, pool: &mut Pool, live: Live, reattach: bool) -> Result<()> {
        let exp = live.f.pending.exp;
        let base = self.ws.join(self.s.run_dir(exp)).to_string_lossy().to_string();
        let (run_dir, prune) = match &live.stage {
            Stage::First => {
                let curve = results::best(&self.records).map(|b| super::run_curve(&self.ws, &self.s, b.exp));
                (base, curve)
            }
            Stage::Confirm(_) => (format!("{base}-seed2"), None),
        };
        let env = executor::device_env(&self.s.executor, live.f.worker);
        let spec = self.trial_spec(exp, &live.wt.path, &run_dir, prune, env);
        let executor = self.executor.clone();
        let name = self.job_name(exp);
        let tx = pool.tx.clone();
        std::thread::Builder::new()
            .name(format!("trial-{exp}"))
            .spawn(move || {
                let out = executor.run(&spec, &name, reattach);
                let _ = tx.send(Done { exp, out });
            })
            .map_err(|e| ResearchError::Trial(format!("cannot start a trial thread: {e}")))?;
        pool.live.insert(exp, live);
        Ok(())
    }

    /// Picks up an experiment a killed or stopped driver left in flight.
    fn resume_flight(&mut self, pool: &mut Pool, f: Flight) -> Result<()> {
        let exp = f.pending.exp;
        let wt = Worktree::of(&self.ws, &self.tag, exp);
        let running = Git::running_ref(&self.tag, exp);
        if self.records.iter().any(|r| r.exp == exp) {
            // Recorded just before the kill: only the journal was left to remove.
            self.forget(&f, &wt);
            return Ok(());
        }
        let commit = Oid::from_str(&f.commit).ok().or_else(|| self.git.ref_target(&running));
        let Some(commit) = commit.filter(|c| self.git.repo.find_commit(*c).is_ok()) else {
            self.say(&format!(
                "experiment {exp} was killed before its commit was made; dropped (it cost nothing to run)"
            ));
            self.forget(&f, &wt);
            return Ok(());
        };
        let f = Flight { commit: commit.to_string(), ..f };
        // A Slurm job may still be running in its worktree: that one stays as it is.
        let job_may_run = matches!(self.executor, crate::executor::Executor::Slurm(_)) && wt.path.join(".git").exists();
        if job_may_run {
            self.say(&format!("resuming experiment {exp}: following its Slurm job ({})", f.pending.description));
        } else {
            self.say(&format!("resuming experiment {exp}: re-running its trial ({})", f.pending.description));
            wt.create(&self.git, commit)?;
        }
        self.start(pool, Live { f, wt, stage: Stage::First }, true)
    }

    /// Removes the journal, running ref and worktree of a flight.
    fn forget(&self, f: &Flight, wt: &Worktree) {
        let _ = std::fs::remove_file(journal_path(&self.ws, &f.pending.tag, f.pending.exp));
        let _ = self.git.delete_ref(&Git::running_ref(&self.tag, f.pending.exp));
        wt.remove(&self.git);
    }

    /// Removes this tag's worktrees but those of `keep`.
    fn sweep_worktrees(&self, keep: &[u32]) {
        let prefix = format!("autoqat-{}-", self.tag.replace('/', "-"));
        for name in self.git.worktree_names() {
            let exp = name.strip_prefix(&prefix).and_then(|n| n.parse::<u32>().ok());
            if let Some(e) = exp.filter(|e| !keep.contains(e)) {
                Worktree::of(&self.ws, &self.tag, e).remove(&self.git);
            }
        }
    }

    /// Handles a finished trial: the next stage, or the decision and the record.
    fn land(&mut self, pool: &mut Pool, done: Done) -> std::result::Result<(), Halt> {
        let Some(mut live) = pool.live.remove(&done.exp) else { return Ok(()) };
        let out = match done.out {
            Ok(o) => o,
            Err(e) => {
                // The executor failed (not the trial): the journal stays for `--resume`.
                live.wt.remove(&self.git);
                return Err(Halt::Error(e));
            }
        };
        if out.interrupted {
            live.wt.remove(&self.git);
            self.say(&format!(
                "experiment {} interrupted before its trial finished: not recorded; `autoqat run --resume` re-runs it",
                done.exp
            ));
            return Err(Halt::Stop(StopReason::Signal));
        }
        match std::mem::replace(&mut live.stage, Stage::First) {
            Stage::First => {
                let (best, b) = self.best()?;
                let sigma = self.sigma();
                let fresh = best.to_string() == live.f.parent;
                let wants_confirm = out.failure.is_none()
                    && fresh
                    && policy::verdict(
                        out.summary.eval_ppl.unwrap_or(f64::INFINITY),
                        b.eval_ppl.unwrap_or(f64::INFINITY),
                        &self.s.noise,
                        sigma,
                    ) == policy::Verdict::Confirm;
                if wants_confirm && self.restore_recipe(&live)? && self.shift_seed(&live.wt.path, 1)? {
                    live.stage = Stage::Confirm(Box::new(out));
                    return Ok(self.start(pool, live, false)?);
                }
                self.settle(pool, live, out, None)
            }
            Stage::Confirm(first) => self.settle(pool, live, *first, Some(out)),
        }
    }

    /// Rewrites the worktree's recipe as its commit has it (a resumed worktree may hold a
    /// shifted seed from before the kill); `true` when it could.
    fn restore_recipe(&self, live: &Live) -> Result<bool> {
        let commit = Oid::from_str(&live.f.commit).map_err(|e| ResearchError::Results(e.to_string()))?;
        let Some(text) = self.git.file_at(commit, self.recipe_path()) else { return Ok(false) };
        let path = live.wt.path.join(self.recipe_path());
        std::fs::write(&path, text).map_err(|e| ResearchError::io(&path, e))?;
        Ok(true)
    }

    /// Decides, commits and records a finished experiment (see the module's merge policy).
    fn settle(
        &mut self,
        pool: &mut Pool,
        live: Live,
        first: Outcome,
        confirm: Option<Outcome>,
    ) -> std::result::Result<(), Halt> {
        let Live { f, wt, .. } = live;
        let exp = f.pending.exp;
        let p = &f.pending;
        let mut rec = Record { parent: f.parent.clone(), ..p.record(&first) };
        let (best, b) = self.best()?;
        let bp = b.eval_ppl.unwrap_or(f64::INFINITY);
        let sigma = self.sigma();
        let n = &self.s.noise;
        let status = if let Some(failure) = first.failure {
            failure
        } else {
            let ppl = rec.eval_ppl.unwrap_or(f64::INFINITY);
            rec.delta = Some(policy::delta(ppl, bp));
            let second = match &confirm {
                None => policy::Second::NotRun,
                Some(o) if o.failure.is_some() => {
                    if let Some(e) = &o.error {
                        rec.error = Some(format!("second-seed confirmation failed: {e}"));
                    }
                    policy::Second::Failed
                }
                Some(o) => {
                    rec.confirm_ppl = o.summary.eval_ppl;
                    policy::Second::Scored(o.summary.eval_ppl)
                }
            };
            let beats = |against: f64| policy::beats(ppl, against, n, sigma, second);
            if best.to_string() == f.parent {
                let st = if beats(bp) { Status::Keep } else { Status::Discard };
                rec.near_miss = st == Status::Discard && policy::near_miss(ppl, bp, n, sigma);
                st
            } else {
                let parent_ppl = self
                    .records
                    .iter()
                    .find(|r| r.commit == f.parent)
                    .and_then(|r| r.eval_ppl)
                    .unwrap_or(f64::INFINITY);
                if beats(parent_ppl) && f.replays.is_none() {
                    Status::Superseded
                } else {
                    Status::Discard
                }
            }
        };
        hit("after_trial");
        rec.status = Some(status);
        let commit = Oid::from_str(&f.commit).map_err(|e| ResearchError::Results(e.to_string()))?;
        let mut body = p.rationale.clone();
        if status == Status::Superseded {
            body.push_str(&format!(
                "\n\nSuperseded: exp {} was kept while this ran; this change is re-applied on top of it and queued.",
                b.exp
            ));
            // Queued before the note: a kill in between re-runs the trial, which queues it again.
            if !pool.queue.contains(&exp) {
                pool.queue.push_back(exp);
            }
            self.write_queue(&pool.queue)?;
        }
        self.seal(commit, p, &body, &mut rec)?;
        self.record(rec)?;
        self.forget(&f, &wt);
        Ok(())
    }

    /// Experiment `of`'s change re-applied on top of the best, as experiment `exp`; `None`
    /// (with the reason reported) when it no longer applies.
    fn replay(&mut self, of: u32, exp: u32) -> std::result::Result<Option<Change>, Halt> {
        let Some(rec) = self.records.iter().find(|r| r.exp == of && r.status() == Status::Superseded).cloned() else {
            return Ok(None);
        };
        let (best, b) = self.best()?;
        let theirs = Oid::from_str(&rec.commit).map_err(|e| ResearchError::Results(e.to_string()))?;
        let merged = self.git.replay(theirs, best, &self.s.run.mutable_paths)?;
        let files = match merged {
            None => {
                self.say(&format!("exp {of}'s change conflicts with the best (exp {}); not re-applied", b.exp));
                return Ok(None);
            }
            Some(files) if files.is_empty() => {
                self.say(&format!("exp {of}'s change is already in the best (exp {}); not re-applied", b.exp));
                return Ok(None);
            }
            Some(files) => files,
        };
        let old_new = files
            .into_iter()
            .map(|(path, new)| {
                let old = self.git.file_at(best, &path).unwrap_or_default();
                (path, (old, new))
            })
            .collect();
        let rules = EditRules {
            root: &self.ws,
            mutable_paths: &self.s.run.mutable_paths,
            validator: &self.validator,
            max_changed_lines: usize::MAX,
            tried: &self.tried,
        };
        match edit::check(old_new, &rules) {
            Err(e) => {
                self.say(&format!("exp {of}'s change on top of exp {} is not run: {e}", b.exp));
                Ok(None)
            }
            Ok(a) => Ok(Some((
                Pending {
                    tag: self.tag.clone(),
                    exp,
                    description: format!("{} (exp {of} re-applied on exp {})", rec.description, b.exp),
                    rationale: format!(
                        "{}\n\nReplay: exp {of} beat the best it was tried against, but exp {} was kept while it ran.",
                        rec.rationale, b.exp
                    ),
                    diff: a.diff,
                    diff_key: a.diff_key,
                    cost_usd: 0.0,
                    input_tokens: 0,
                    output_tokens: 0,
                },
                a.files,
            ))),
        }
    }

    fn read_queue(&self) -> VecDeque<u32> {
        let path = autoqat_workspace::Layout::new(&self.ws).queue();
        let all: Vec<Queued> =
            std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        all.into_iter().filter(|q| q.tag == self.tag).map(|q| q.exp).collect()
    }

    /// Writes this tag's queue, keeping other tags' entries.
    fn write_queue(&self, queue: &VecDeque<u32>) -> Result<()> {
        let path = autoqat_workspace::Layout::new(&self.ws).queue();
        let old: Vec<Queued> =
            std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        let all: Vec<Queued> = old
            .into_iter()
            .filter(|q| q.tag != self.tag)
            .chain(queue.iter().map(|&exp| Queued { tag: self.tag.clone(), exp }))
            .collect();
        Ok(autoqat_workspace::atomic::write_json(&path, &all)?)
    }
}
