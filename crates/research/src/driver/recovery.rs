//! `--resume` after a crash or a kill: an experiment whose trial was running (or was stopped
//! by a signal) runs its trial again; everything else is reconciled from the git notes, which
//! say what finished: discarded refs re-created, the branch reset to the best, results.tsv
//! rewritten.

use std::collections::HashSet;

use git2::Oid;

use super::{journal, Driver, Halt};
use crate::error::{ResearchError, Result};
use crate::git::{self, Git};
use crate::results;

impl Driver {
    /// Finishes or rolls back what a killed run left behind.
    pub(super) fn recover(&mut self) -> Result<()> {
        let head = self.git.head()?;
        let t = git::parse_trailers(&self.git.message_of(head)?);
        let pending = journal::read(&self.ws);
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
        journal::clear(&self.ws);
        Ok(())
    }

    /// Finishes an experiment that recovery picked up again; a stop during it (a signal) ends
    /// recovery quietly, as the run loop's own stop check follows.
    fn finish_in_recovery(&mut self, p: journal::Pending, commit: Oid) -> Result<()> {
        self.reattach = true;
        let done = self.finish(p, commit);
        self.reattach = false;
        match done {
            Ok(()) | Err(Halt::Stop(_)) => Ok(()),
            Err(Halt::Error(e)) => Err(e),
        }
    }
}
