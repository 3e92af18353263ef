//! `--resume` after a crash or a kill, first half: everything is reconciled from the git notes,
//! which say what finished: discarded refs re-created, the branch reset to the best,
//! results.tsv rewritten. The second half is the loop's: each journal without a note has its
//! trial re-run ([`super::pool`]).

use git2::Oid;

use super::{journal, Driver};
use crate::error::{ResearchError, Result};
use crate::git::{self, Git};
use crate::results;

impl Driver {
    /// Makes refs, branch and results agree with the notes.
    pub(super) fn recover(&mut self) -> Result<()> {
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
        let best = match results::best(&self.records) {
            Some(b) => Oid::from_str(&b.commit).map_err(|e| ResearchError::Results(e.to_string()))?,
            None => {
                let mut c = self.git.head()?;
                while git::parse_trailers(&self.git.message_of(c)?).status.as_deref() == Some("running") {
                    match self.git.parent_of(c)? {
                        Some(p) => c = p,
                        None => break,
                    }
                }
                c
            }
        };
        // An experiment that ran in the workspace stays on the branch for the loop to re-run:
        // a Slurm job may still be reading its files.
        let head = self.git.head()?;
        let resumed_here = journal::flights(&self.ws).into_iter().any(|f| {
            f.in_workspace
                && f.tag() == self.tag
                && self.git.ref_target(&Git::running_ref(&self.tag, f.exp())) == Some(head)
                && f.parent == best.to_string()
                && !self.records.iter().any(|r| r.exp == f.exp())
        });
        if !resumed_here {
            self.git.reset_branch(&self.tag, best, || {})?;
        }
        results::write_all(&self.results_path(), &self.records)?;
        Ok(())
    }
}
