//! The loop: up to `executor.workers` experiments in flight at once while the proposer
//! answers for the next one. One worker is the serial loop, not a second one: the same
//! journal, the same keep decision, the same recovery.
//!
//! Where a trial runs:
//! - with one worker, and for the baseline always, in the workspace itself: its commit is put
//!   on the branch while it runs, and the branch goes back to the best unless it is kept;
//! - with more, each in its own git worktree under `.autoqat/worktrees/` and on its own device.
//!
//! An experiment's commit is made on its parent (the best at that moment) and kept reachable
//! by `refs/autoqat/<tag>/running/<exp>` while its trial runs. When it finishes:
//! - its parent is still the best: the keep decision is [`policy`]'s (margin, second seed); a
//!   keep moves the branch to it, anything else goes under `discarded/<exp>`;
//! - another keep landed while it ran (its parent is no longer the best): it is not kept, since
//!   its recipe lacks the newer keep. If it beat the best it was tried against, it is recorded
//!   `superseded` and its change is re-applied on top of the new best (a three-way merge) and
//!   queued once as a new experiment, ahead of new proposals; otherwise it is a `discard`. A
//!   change that no longer applies (a conflict, or already in the best) is reported, not queued.
//!
//! So keeps land in experiment order, each on the one before, and the branch head is always
//! the best. Rows are written in experiment order whatever order trials finish in.
//!
//! Crash safety: before its commit, each experiment in flight has a [`journal`]; it is removed
//! after its row. A trial a signal stopped is set aside under `interrupted/<exp>`. `--resume`
//! re-runs the trial of each journal without a note (re-attaching to a Slurm job still
//! running), and the queue of changes to re-apply (`.autoqat/queue.json`) survives a kill.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use git2::Oid;
use serde::{Deserialize, Serialize};

use super::journal::{self, Flight, Pending};
use super::{limits, noise, policy, signals, Driver, Halt, StopReason, Turn};
use crate::edit::{self, EditRules};
use crate::error::{ResearchError, Result};
use crate::executor::{self, Worktree};
use crate::git::{self, Git};
use crate::killpoint::hit;
use crate::results::{self, Record, Status};
use crate::trial::Outcome;

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
    /// The baseline's repeat `r` (seed shifted by `r`), after the first trial and the PPLs of
    /// the repeats before it: they measure the noise floor.
    Repeat { first: Box<Outcome>, r: u32, ppls: Vec<f64> },
}

/// An experiment whose trial is running.
struct Live {
    f: Flight,
    /// Its running commit.
    commit: Oid,
    /// Its worktree; `None` when it runs in the workspace.
    wt: Option<Worktree>,
    stage: Stage,
}

/// What an experiment's trials measured after the first.
enum Later {
    /// Nothing more ran.
    Nothing,
    /// The second seed of a change that looked like a keep.
    Confirm(Box<Outcome>),
    /// The PPLs of the baseline's repeats.
    Repeats(Vec<f64>),
}

/// A trial's end, sent by the thread that ran it.
struct Done {
    exp: u32,
    out: Result<Outcome>,
}

/// The loop's moving parts.
struct Pool {
    live: BTreeMap<u32, Live>,
    queue: VecDeque<u32>,
    tx: mpsc::Sender<Done>,
    rx: mpsc::Receiver<Done>,
    stop: Option<StopReason>,
}

fn oid(commit: &str) -> Result<Oid> {
    Oid::from_str(commit).map_err(|e| ResearchError::Results(e.to_string()))
}

impl Driver {
    /// Runs experiments with up to `executor.workers` trials in flight until a stop condition;
    /// then waits for the trials in flight (a signal stops them, to be re-run on `--resume`).
    pub(super) fn run_pool(&mut self) -> Result<StopReason> {
        let workers = self.s.executor.workers.max(1) as usize;
        let (tx, rx) = mpsc::channel();
        let mut pool = Pool { live: BTreeMap::new(), queue: self.read_queue(), tx, rx, stop: None };
        let left: Vec<Flight> = journal::flights(&self.ws).into_iter().filter(|f| f.tag() == self.tag).collect();
        self.sweep_worktrees(&left.iter().map(Flight::exp).collect::<Vec<_>>());
        for f in left {
            self.resume_flight(&mut pool, f)?;
        }
        loop {
            if pool.stop.is_none() {
                pool.stop =
                    limits::check(&self.ws, &self.s, &self.records, pool.live.len(), self.started, self.invalid_streak);
            }
            if pool.stop.is_none() && pool.live.len() < self.capacity(&pool, workers) {
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

    /// How many trials may run now: one before there is a best (the baseline, or what stands
    /// for it after a failed one) and while one runs in the workspace, else `workers`.
    fn capacity(&self, pool: &Pool, workers: usize) -> usize {
        if results::best(&self.records).is_none() || pool.live.values().any(|l| l.wt.is_none()) {
            1
        } else {
            workers
        }
    }

    /// Starts the next experiment: the baseline, a queued replay, or a new proposal.
    fn launch_next(&mut self, pool: &mut Pool, workers: usize) -> std::result::Result<(), Halt> {
        let exp = self.next_exp(pool);
        let worker = (0..workers).find(|w| !pool.live.values().any(|l| l.f.worker == *w)).unwrap_or(0);
        if self.records.is_empty() {
            return self.launch(pool, Pending::baseline(&self.tag, exp), Vec::new(), worker, None);
        }
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
            .ok_or_else(|| ResearchError::Results("no experiment has been kept yet".into()))?;
        Ok((oid(&b.commit)?, b))
    }

    /// Journals, commits (on the best) and starts experiment `p.exp`.
    fn launch(
        &mut self,
        pool: &mut Pool,
        p: Pending,
        files: Vec<(String, String)>,
        worker: usize,
        replays: Option<u32>,
    ) -> std::result::Result<(), Halt> {
        let (parent, in_workspace) = match results::best(&self.records) {
            Some(b) => (oid(&b.commit)?, self.s.executor.workers <= 1),
            None => (self.git.head()?, true),
        };
        let exp = p.exp;
        let f = Flight { pending: p, parent: parent.to_string(), worker, replays, in_workspace };
        journal::write(&self.ws, &f)?;
        let msg = git::message(&f.pending.description, &f.pending.rationale, exp, "running", None);
        let commit = self.git.commit_on(parent, &files, &msg)?;
        self.git.set_ref(&Git::running_ref(&self.tag, exp), commit, "autoqat: running")?;
        hit("after_commit");
        // In flight counts as tried: the proposer is not to send the same change again.
        if !f.pending.diff_key.is_empty() {
            self.tried.insert(f.pending.diff_key.clone());
        }
        if let Some(k) = self.git.file_at(commit, self.recipe_path()).and_then(|t| self.validator.meaning_key(&t)) {
            self.tried.insert(k);
        }
        let wt = self.check_out(&f, commit)?;
        self.start(pool, Live { f, commit, wt, stage: Stage::First }, false)?;
        Ok(())
    }

    /// Puts `commit` where `f`'s trial runs: on the branch in the workspace, or in a fresh
    /// worktree of its own.
    fn check_out(&self, f: &Flight, commit: Oid) -> Result<Option<Worktree>> {
        if f.in_workspace {
            if self.git.head()? != commit {
                self.git.set_ref(&Git::branch_ref(&self.tag), commit, "autoqat: running")?;
            }
            self.git.force_checkout_head()?;
            return Ok(None);
        }
        let wt = Worktree::of(&self.ws, &self.tag, f.exp());
        wt.create(&self.git, commit)?;
        Ok(Some(wt))
    }

    /// The directory a trial of `live` runs in.
    fn tree<'a>(&'a self, live: &'a Live) -> &'a Path {
        live.wt.as_ref().map_or(self.ws.as_path(), |wt| wt.path.as_path())
    }

    /// Runs the current stage's trial of `live` on a thread of its own.
    fn start(&mut self, pool: &mut Pool, live: Live, reattach: bool) -> Result<()> {
        let exp = live.f.exp();
        // In the workspace the run dir stays relative, as a trial command may print it.
        let rel = self.s.run_dir(exp);
        let base = if live.wt.is_some() { self.ws.join(rel) } else { rel }.to_string_lossy().to_string();
        let (run_dir, prune) = match &live.stage {
            Stage::First => {
                let curve = results::best(&self.records).map(|b| super::run_curve(&self.ws, &self.s, b.exp));
                (base, curve)
            }
            Stage::Confirm(_) => (format!("{base}-seed2"), None),
            Stage::Repeat { r, .. } => (format!("{base}-r{r}"), None),
        };
        let env = executor::device_env(&self.s.executor, live.f.worker);
        let spec = self.trial_spec(exp, self.tree(&live), &run_dir, prune, env);
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
        let exp = f.exp();
        let running = Git::running_ref(&self.tag, exp);
        let interrupted = Git::interrupted_ref(&self.tag, exp);
        if self.records.iter().any(|r| r.exp == exp) {
            // Recorded just before the kill: only the journal was left to remove.
            self.forget(&f);
            return Ok(());
        }
        let aside = self.git.ref_target(&interrupted);
        let commit = self.git.ref_target(&running).or(aside);
        let Some(commit) = commit.filter(|c| self.git.repo.find_commit(*c).is_ok()) else {
            self.say(&format!(
                "experiment {exp} was killed before its commit was made; dropped (it cost nothing to run)"
            ));
            self.forget(&f);
            return Ok(());
        };
        self.git.set_ref(&running, commit, "autoqat: running")?;
        self.git.delete_ref(&interrupted)?;
        let what = if aside.is_some() { "re-running its interrupted trial" } else { "re-running its trial" };
        let wt = Worktree::of(&self.ws, &self.tag, exp);
        // A Slurm job may still be running in its worktree: that one stays as it is.
        let job_may_run = matches!(self.executor, crate::executor::Executor::Slurm(_)) && wt.path.join(".git").exists();
        let wt = if job_may_run && !f.in_workspace {
            self.say(&format!("resuming experiment {exp}: following its Slurm job ({})", f.description()));
            Some(wt)
        } else {
            self.say(&format!("resuming experiment {exp}: {what} ({})", f.description()));
            self.check_out(&f, commit)?
        };
        self.start(pool, Live { f, commit, wt, stage: Stage::First }, true)
    }

    /// Removes the journal, running ref and worktree of a flight.
    fn forget(&self, f: &Flight) {
        journal::remove(&self.ws, f.tag(), f.exp());
        let _ = self.git.delete_ref(&Git::running_ref(&self.tag, f.exp()));
        if !f.in_workspace {
            Worktree::of(&self.ws, &self.tag, f.exp()).remove(&self.git);
        }
    }

    /// Sets aside an experiment whose trial a signal stopped. It gets no row: it neither crashed
    /// nor finished. Its commit moves to `refs/autoqat/<tag>/interrupted/<exp>`, the branch is
    /// the best again, and the journal stays, so `autoqat run --resume` re-runs the same change.
    fn set_aside(&mut self, live: Live) -> Halt {
        let exp = live.f.exp();
        let moved = (|| -> Result<()> {
            self.git.set_ref(&Git::interrupted_ref(&self.tag, exp), live.commit, "autoqat: interrupted")?;
            self.git.delete_ref(&Git::running_ref(&self.tag, exp))?;
            match &live.wt {
                Some(wt) => {
                    wt.remove(&self.git);
                    Ok(())
                }
                None => self.git.reset_branch(&self.tag, oid(&live.f.parent)?, || {}),
            }
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

    /// Handles a finished trial: the next stage, or the decision and the record.
    fn land(&mut self, pool: &mut Pool, done: Done) -> std::result::Result<(), Halt> {
        let Some(mut live) = pool.live.remove(&done.exp) else { return Ok(()) };
        let out = match done.out {
            Ok(o) => o,
            Err(e) => {
                // The executor failed (not the trial): the journal stays for `--resume`.
                if let Some(wt) = &live.wt {
                    wt.remove(&self.git);
                }
                return Err(Halt::Error(e));
            }
        };
        if !matches!(live.stage, Stage::First) {
            // A seeded trial rewrote the recipe; the tree gets its commit's back.
            self.restore_recipe(&live)?;
        }
        if out.interrupted {
            return Err(self.set_aside(live));
        }
        match std::mem::replace(&mut live.stage, Stage::First) {
            Stage::First => {
                let Ok((best, b)) = self.best() else { return self.repeat(pool, live, out, 1, Vec::new()) };
                let wants_confirm = out.failure.is_none()
                    && best.to_string() == live.f.parent
                    && policy::verdict(
                        out.summary.eval_ppl.unwrap_or(f64::INFINITY),
                        b.eval_ppl.unwrap_or(f64::INFINITY),
                        &self.s.noise,
                        self.sigma(),
                    ) == policy::Verdict::Confirm;
                if wants_confirm && self.shift_seed(self.tree(&live), 1)? {
                    live.stage = Stage::Confirm(Box::new(out));
                    return Ok(self.start(pool, live, false)?);
                }
                self.settle(pool, live, out, Later::Nothing)
            }
            Stage::Confirm(first) => self.settle(pool, live, *first, Later::Confirm(Box::new(out))),
            Stage::Repeat { first, r, mut ppls } => {
                if let Some(v) = out.summary.eval_ppl.filter(|v| v.is_finite() && out.failure.is_none()) {
                    ppls.push(v);
                }
                self.repeat(pool, live, *first, r + 1, ppls)
            }
        }
    }

    /// Starts the baseline's repeat `r` (`noise.baseline_repeats` trials in all, each on a
    /// shifted seed), or settles the baseline when they are done or cannot run.
    fn repeat(
        &mut self,
        pool: &mut Pool,
        mut live: Live,
        first: Outcome,
        r: u32,
        ppls: Vec<f64>,
    ) -> std::result::Result<(), Halt> {
        let more = first.failure.is_none() && r < self.s.noise.baseline_repeats.max(1) && !signals::requested();
        if more && self.shift_seed(self.tree(&live), i64::from(r))? {
            live.stage = Stage::Repeat { first: Box::new(first), r, ppls };
            return Ok(self.start(pool, live, false)?);
        }
        self.settle(pool, live, first, Later::Repeats(ppls))
    }

    /// Rewrites the tree's recipe as its commit has it (a seeded trial shifted its seed, and a
    /// resumed worktree may hold a shifted seed from before the kill).
    fn restore_recipe(&self, live: &Live) -> Result<()> {
        let Some(text) = self.git.file_at(live.commit, self.recipe_path()) else { return Ok(()) };
        let path = self.tree(live).join(self.recipe_path());
        std::fs::write(&path, text).map_err(|e| ResearchError::io(&path, e))
    }

    /// Decides, commits and records a finished experiment (see the module's merge policy).
    fn settle(&mut self, pool: &mut Pool, live: Live, first: Outcome, later: Later) -> std::result::Result<(), Halt> {
        let Live { f, commit, .. } = live;
        let exp = f.exp();
        let p = &f.pending;
        let mut rec = Record { parent: f.parent.clone(), ..p.record(&first) };
        let best = self.best().ok();
        let sigma = self.sigma();
        let n = &self.s.noise;
        let status = match (first.failure, &best) {
            (Some(failure), _) => failure,
            (None, None) => {
                // The baseline. Its repeats measure the noise floor.
                let repeats = match later {
                    Later::Repeats(v) => v,
                    _ => Vec::new(),
                };
                let ppls: Vec<f64> = rec.eval_ppl.into_iter().chain(repeats).collect();
                if ppls.len() > 1 {
                    rec.sigma = noise::sigma(&ppls);
                    rec.baseline_ppls = ppls;
                }
                Status::Baseline
            }
            (None, Some((best, b))) => {
                let bp = b.eval_ppl.unwrap_or(f64::INFINITY);
                let ppl = rec.eval_ppl.unwrap_or(f64::INFINITY);
                rec.delta = Some(policy::delta(ppl, bp));
                let second = match later {
                    Later::Confirm(o) if o.failure.is_some() => {
                        if let Some(e) = &o.error {
                            rec.error = Some(format!("second-seed confirmation failed: {e}"));
                        }
                        policy::Second::Failed
                    }
                    Later::Confirm(o) => {
                        rec.confirm_ppl = o.summary.eval_ppl;
                        policy::Second::Scored(o.summary.eval_ppl)
                    }
                    _ => policy::Second::NotRun,
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
            }
        };
        hit("after_trial");
        rec.status = Some(status);
        let mut body = p.rationale.clone();
        if status == Status::Superseded {
            if let Some((_, b)) = &best {
                body.push_str(&format!(
                    "\n\nSuperseded: exp {} was kept while this ran; this change is re-applied on top of it and queued.",
                    b.exp
                ));
            }
            // Queued before the note: a kill in between re-runs the trial, which queues it again.
            if !pool.queue.contains(&exp) {
                pool.queue.push_back(exp);
            }
            self.write_queue(&pool.queue)?;
        }
        self.seal(commit, p, &body, &mut rec)?;
        if f.in_workspace && !status.is_kept() {
            // The branch carried the experiment while it ran: back to the best.
            let back = match &best {
                Some((b, _)) => *b,
                None => oid(&f.parent)?,
            };
            self.git.reset_branch(&self.tag, back, || hit("reset"))?;
        }
        self.record(rec)?;
        self.forget(&f);
        Ok(())
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
