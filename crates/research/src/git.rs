//! Git side of the loop (git2): workspace lock, clean-worktree check, the run branch, one
//! commit per experiment with trailers, `refs/autoqat/<tag>/discarded/<exp>`, and the metrics
//! note on every experiment commit (`refs/notes/autoqat`).

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository, Signature, StatusOptions};

use crate::error::{ResearchError, Result};
use crate::results::Record;

/// The notes ref that holds every experiment's metrics JSON.
pub const NOTES_REF: &str = "refs/notes/autoqat";
/// The notes ref that holds held-out scores, apart from the metrics note: that one marks an
/// experiment finished and is written once; a held-out score comes later, when a run stops.
pub const HELDOUT_NOTES_REF: &str = "refs/notes/autoqat-heldout";

/// A held-out score as its git note holds it: the row, and when it was scored (the order of
/// heldout.tsv).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HeldoutNote {
    /// The heldout.tsv row.
    pub row: autoqat_workspace::heldout::Row,
    /// Seconds since the Unix epoch when the score was taken.
    pub scored_at: f64,
}

use autoqat_workspace::layout::{Layout, GIT_EXCLUDES as EXCLUDES};

/// An exclusive lock on a workspace, released when dropped or when the process dies.
pub struct Lock {
    _file: File,
}

/// How long a busy workspace lock is retried before the run is refused.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

impl Lock {
    /// Takes `<workspace>/.autoqat/lock`; fails (after a short grace) if another run holds it.
    pub fn acquire(workspace: &Path) -> Result<Lock> {
        let layout = Layout::new(workspace);
        let dir = layout.state_dir();
        std::fs::create_dir_all(&dir).map_err(|e| ResearchError::io(&dir, e))?;
        let path = layout.lock();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ResearchError::io(&path, e))?;
        // flock, not a pid file: the kernel releases it even after kill -9. A lock just released
        // can stay held for a moment by a child another thread forked before its exec closed
        // the inherited descriptor (close-on-exec), so a busy lock is retried briefly.
        let start = std::time::Instant::now();
        let rc = loop {
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 || start.elapsed() >= LOCK_GRACE {
                break rc;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        };
        if rc != 0 {
            return Err(ResearchError::Workspace(format!(
                "{} is locked by another `autoqat run`; wait for it or stop it (touch STOP)",
                workspace.display()
            )));
        }
        Ok(Lock { _file: file })
    }
}

/// The trailers of an experiment commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trailers {
    /// `Autoqat-Experiment`.
    pub exp: Option<u32>,
    /// `Autoqat-Status` (`running` while the trial has not finished).
    pub status: Option<String>,
    /// `Autoqat-Eval-PPL`.
    pub eval_ppl: Option<String>,
}

/// Builds a commit message: subject, optional body, trailers.
pub fn message(subject: &str, body: &str, exp: u32, status: &str, ppl: Option<f64>) -> String {
    let mut m = crate::results::one_line(subject);
    if m.is_empty() {
        m.push_str("experiment");
    }
    m.push_str("\n\n");
    if !body.trim().is_empty() {
        m.push_str(body.trim());
        m.push_str("\n\n");
    }
    m.push_str(&format!("Autoqat-Experiment: {exp}\nAutoqat-Status: {status}\n"));
    let ppl = ppl.map(|p| format!("{p:.4}")).unwrap_or_else(|| "none".into());
    m.push_str(&format!("Autoqat-Eval-PPL: {ppl}\n"));
    m
}

/// Reads the autoqat trailers of a commit message.
pub fn parse_trailers(msg: &str) -> Trailers {
    let mut t = Trailers::default();
    for line in msg.lines() {
        if let Some(v) = line.strip_prefix("Autoqat-Experiment: ") {
            t.exp = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("Autoqat-Status: ") {
            t.status = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("Autoqat-Eval-PPL: ") {
            t.eval_ppl = Some(v.trim().to_string());
        }
    }
    t
}

/// A workspace repository.
pub struct Git {
    /// The repository.
    pub repo: Repository,
    /// Its worktree root (the workspace).
    pub root: PathBuf,
}

impl Git {
    /// Opens the repository whose worktree root is `workspace`.
    pub fn open(workspace: &Path) -> Result<Git> {
        let repo = Repository::open(workspace).map_err(|e| {
            ResearchError::Workspace(format!(
                "{} is not the root of a git repository ({}); run `git init` and commit the workspace",
                workspace.display(),
                e.message()
            ))
        })?;
        Self::of(repo)
    }

    /// Opens the repository that contains `path` (the workspace or any folder inside it), for
    /// readers such as `report` and `status` that may run from a subfolder.
    pub fn discover(path: &Path) -> Result<Git> {
        let repo = Repository::discover(path).map_err(|e| {
            ResearchError::Workspace(format!("{} is not inside a git repository ({})", path.display(), e.message()))
        })?;
        Self::of(repo)
    }

    /// Opens the repository whose root is exactly `dir`, creating one there when there is none
    /// (never the repository of an enclosing directory: a workspace made inside a project
    /// checkout must not commit into that project).
    pub fn open_or_init(dir: &Path) -> Result<Git> {
        let repo = match Repository::open(dir) {
            Ok(r) => r,
            Err(_) => Repository::init(dir).map_err(|e| {
                ResearchError::Workspace(format!(
                    "cannot create a git repository in {} ({})",
                    dir.display(),
                    e.message()
                ))
            })?,
        };
        Self::of(repo)
    }

    fn of(repo: Repository) -> Result<Git> {
        let root = repo
            .workdir()
            .ok_or_else(|| ResearchError::Workspace("bare repositories are not supported".into()))?
            .to_path_buf();
        Ok(Git { repo, root })
    }

    /// Commits `paths` (relative to the root) on HEAD, whatever else the index holds.
    pub fn commit_paths(&self, paths: &[PathBuf], message: &str) -> Result<Oid> {
        let mut index = self.repo.index()?;
        for p in paths {
            index.add_path(p)?;
        }
        index.write()?;
        let tree = self.repo.find_tree(index.write_tree()?)?;
        let sig = self.signature()?;
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        Ok(self.repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)?)
    }

    /// Adds the harness outputs to `.git/info/exclude` so they never dirty the worktree.
    pub fn ensure_excludes(&self) -> Result<()> {
        let path = self.repo.path().join("info").join("exclude");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let missing: Vec<&str> = EXCLUDES.iter().copied().filter(|e| !old.lines().any(|l| l.trim() == *e)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ResearchError::io(dir, e))?;
        }
        let mut text = old;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("# autoqat outputs\n");
        for m in missing {
            text.push_str(m);
            text.push('\n');
        }
        std::fs::write(&path, text).map_err(|e| ResearchError::io(&path, e))
    }

    /// Every uncommitted change (untracked files included, ignored ones not) with its status.
    fn changes(&self) -> Result<Vec<(String, git2::Status)>> {
        let mut opts = StatusOptions::new();
        opts.include_untracked(true).include_ignored(false).recurse_untracked_dirs(true);
        let statuses = self.repo.statuses(Some(&mut opts))?;
        Ok(statuses.iter().filter_map(|s| s.path().ok().map(|p| (p.to_string(), s.status()))).collect())
    }

    /// Paths with uncommitted changes (untracked files included, ignored ones not).
    pub fn dirty_paths(&self) -> Result<Vec<String>> {
        Ok(self.changes()?.into_iter().map(|(p, _)| p).collect())
    }

    /// Changes that could reach an experiment commit or be lost when one is reverted: every
    /// change to a tracked file, and an untracked file at a mutable path. Anything else
    /// untracked (`autoqat run > run.log` inside the workspace) never reaches a commit.
    pub fn blocking_changes(&self, mutable: &[String]) -> Result<Vec<String>> {
        let at_mutable =
            |p: &str| mutable.iter().any(|m| p == m || p.starts_with(&format!("{}/", m.trim_end_matches('/'))));
        Ok(self
            .changes()?
            .into_iter()
            .filter(|(p, st)| *st != git2::Status::WT_NEW || at_mutable(p))
            .map(|(p, _)| p)
            .collect())
    }

    /// Fails with the changes listed unless nothing that could reach a commit is changed (see
    /// [`Git::blocking_changes`]).
    pub fn require_clean(&self, mutable: &[String]) -> Result<()> {
        let dirty = self.blocking_changes(mutable)?;
        if dirty.is_empty() {
            return Ok(());
        }
        let shown: Vec<_> = dirty.iter().take(5).cloned().collect();
        Err(ResearchError::Workspace(format!(
            "the worktree has uncommitted changes ({}{}); commit or remove them first",
            shown.join(", "),
            if dirty.len() > 5 { ", ..." } else { "" }
        )))
    }

    /// The signature for experiment commits: the user's git identity, or `autoqat`.
    pub fn signature(&self) -> Result<Signature<'static>> {
        match self.repo.signature() {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Ok(Signature::now("autoqat", "autoqat@localhost")?),
        }
    }

    /// The full name of the run branch.
    pub fn branch_ref(tag: &str) -> String {
        format!("refs/heads/autoqat/{tag}")
    }

    /// The ref that keeps a discarded experiment reachable.
    pub fn discarded_ref(tag: &str, exp: u32) -> String {
        format!("refs/autoqat/{tag}/discarded/{exp:04}")
    }

    /// The ref that keeps an experiment whose trial a signal stopped, until `--resume` re-runs it.
    pub fn interrupted_ref(tag: &str, exp: u32) -> String {
        format!("refs/autoqat/{tag}/interrupted/{exp:04}")
    }

    /// Deletes `name` if it exists.
    pub fn delete_ref(&self, name: &str) -> Result<()> {
        match self.repo.find_reference(name) {
            Ok(mut r) => Ok(r.delete()?),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The commit a ref points to, if the ref exists.
    pub fn ref_target(&self, name: &str) -> Option<Oid> {
        self.repo.find_reference(name).ok().and_then(|r| r.peel_to_commit().ok()).map(|c| c.id())
    }

    /// Creates `autoqat/<tag>` at HEAD (fails if it exists) and checks it out.
    pub fn create_branch(&self, tag: &str) -> Result<Oid> {
        let head = self
            .repo
            .head()?
            .peel_to_commit()
            .map_err(|e| ResearchError::Workspace(format!("the repository has no commit yet ({})", e.message())))?;
        let name = Git::branch_ref(tag);
        if self.ref_target(&name).is_some() {
            return Err(ResearchError::Workspace(format!(
                "branch autoqat/{tag} already exists; pass --resume to continue it or --tag to start another run"
            )));
        }
        self.repo.reference(&name, head.id(), false, "autoqat: start run")?;
        self.repo.set_head(&name)?;
        Ok(head.id())
    }

    /// Checks out an existing `autoqat/<tag>`.
    pub fn checkout_branch(&self, tag: &str) -> Result<Oid> {
        let name = Git::branch_ref(tag);
        let oid = self.ref_target(&name).ok_or_else(|| {
            ResearchError::Workspace(format!("branch autoqat/{tag} does not exist; run without --resume to start it"))
        })?;
        self.repo.set_head(&name)?;
        self.force_checkout_head()?;
        Ok(oid)
    }

    /// Makes the worktree and index equal HEAD (only tracked files change).
    pub fn force_checkout_head(&self) -> Result<()> {
        let mut co = git2::build::CheckoutBuilder::new();
        co.force();
        self.repo.checkout_head(Some(&mut co))?;
        Ok(())
    }

    /// The commit HEAD points to.
    pub fn head(&self) -> Result<Oid> {
        Ok(self.repo.head()?.peel_to_commit()?.id())
    }

    /// A copy of `commit` (same tree and parents) with a new message; moves no ref.
    pub fn amend(&self, commit: Oid, msg: &str) -> Result<Oid> {
        let c = self.repo.find_commit(commit)?;
        let parents: Vec<_> = c.parents().collect();
        let parent_refs: Vec<_> = parents.iter().collect();
        let sig = self.signature()?;
        let author = c.author().to_owned();
        let tree = c.tree()?;
        Ok(self.repo.commit(None, &author, &sig, msg, &tree, &parent_refs)?)
    }

    /// Points `name` at `oid` (created or overwritten).
    pub fn set_ref(&self, name: &str, oid: Oid, why: &str) -> Result<()> {
        self.repo.reference(name, oid, true, why)?;
        Ok(())
    }

    /// Moves the run branch to `oid`, then makes the worktree match it.
    pub fn reset_branch(&self, tag: &str, oid: Oid, between: impl FnOnce()) -> Result<()> {
        self.set_ref(&Git::branch_ref(tag), oid, "autoqat: reset to best")?;
        between();
        self.force_checkout_head()
    }

    /// Attaches (or replaces) the metrics note of an experiment commit.
    pub fn write_note(&self, commit: Oid, record: &Record) -> Result<()> {
        self.note_json(NOTES_REF, commit, record)
    }

    /// The note of one commit, if any.
    pub fn read_note(&self, commit: Oid) -> Option<Record> {
        let note = self.repo.find_note(Some(NOTES_REF), commit).ok()?;
        serde_json::from_str(note.message().ok()?).ok()
    }

    /// Records a held-out score on the scored experiment's commit.
    pub fn write_heldout_note(&self, commit: Oid, note: &HeldoutNote) -> Result<()> {
        self.note_json(HELDOUT_NOTES_REF, commit, note)
    }

    /// Every held-out score in the repository, in the order it was taken.
    pub fn heldout_notes(&self) -> Result<Vec<HeldoutNote>> {
        let mut out: Vec<HeldoutNote> = self.notes_json(HELDOUT_NOTES_REF)?;
        out.sort_by(|a, b| a.scored_at.total_cmp(&b.scored_at));
        Ok(out)
    }

    /// Every experiment record of `tag`, sorted by exp; one per exp.
    pub fn records(&self, tag: &str) -> Result<Vec<Record>> {
        let mut out: Vec<Record> = self.notes_json::<Record>(NOTES_REF)?.into_iter().filter(|r| r.tag == tag).collect();
        out.sort_by_key(|r| r.exp);
        out.dedup_by_key(|r| r.exp);
        Ok(out)
    }

    /// Every run tag with at least one finished experiment.
    pub fn tags(&self) -> Result<std::collections::BTreeSet<String>> {
        Ok(self.notes_json::<Record>(NOTES_REF)?.into_iter().map(|r| r.tag).collect())
    }

    /// Attaches (or replaces) the JSON note of `commit` under `notes_ref`.
    fn note_json(&self, notes_ref: &str, commit: Oid, value: &impl serde::Serialize) -> Result<()> {
        let json = serde_json::to_string_pretty(value).map_err(|e| ResearchError::Results(e.to_string()))?;
        let sig = self.signature()?;
        self.repo.note(&sig, &sig, Some(notes_ref), commit, &json, true)?;
        Ok(())
    }

    /// Every note under `notes_ref` that reads as a `T` (none when the ref does not exist).
    fn notes_json<T: serde::de::DeserializeOwned>(&self, notes_ref: &str) -> Result<Vec<T>> {
        let notes = match self.repo.notes(Some(notes_ref)) {
            Ok(n) => n,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for item in notes {
            let (blob_id, _commit) = item?;
            if let Ok(v) = serde_json::from_slice::<T>(self.repo.find_blob(blob_id)?.content()) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Tags that have at least one note, for `--tag` defaults.
    pub fn current_tag(&self) -> Option<String> {
        let head = self.repo.head().ok()?;
        head.shorthand().ok()?.strip_prefix("autoqat/").map(str::to_string)
    }

    /// The first line of HEAD's commit message.
    pub fn head_subject(&self) -> Option<String> {
        let commit = self.repo.head().ok()?.peel_to_commit().ok()?;
        commit.summary().ok().flatten().map(str::to_string)
    }

    /// Every file that differs between two commits (full or abbreviated hashes, or any
    /// revision git understands), as `(path, old text, new text)`; a side where the file does
    /// not exist is empty.
    pub fn changed_files(&self, base: &str, new: &str) -> Result<Vec<(String, String, String)>> {
        let tree = |rev: &str| -> Result<git2::Tree<'_>> {
            let obj = self.repo.revparse_single(rev).map_err(|e| {
                ResearchError::Results(format!("commit {rev} is not in the repository ({})", e.message()))
            })?;
            Ok(obj.peel_to_commit()?.tree()?)
        };
        let (old_tree, new_tree) = (tree(base)?, tree(new)?);
        let diff = self.repo.diff_tree_to_tree(Some(&old_tree), Some(&new_tree), None)?;
        let text = |id: Oid| -> String {
            if id.is_zero() {
                return String::new();
            }
            self.repo.find_blob(id).map(|b| String::from_utf8_lossy(b.content()).into_owned()).unwrap_or_default()
        };
        Ok(diff
            .deltas()
            .map(|d| {
                let path = d.new_file().path().or_else(|| d.old_file().path());
                let path = path.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
                (path, text(d.old_file().id()), text(d.new_file().id()))
            })
            .collect())
    }

    /// The commit message of `oid`.
    pub fn message_of(&self, oid: Oid) -> Result<String> {
        Ok(self.repo.find_commit(oid)?.message().unwrap_or_default().to_string())
    }

    /// The parent of a commit.
    pub fn parent_of(&self, oid: Oid) -> Result<Option<Oid>> {
        Ok(self.repo.find_commit(oid)?.parent_ids().next())
    }

    /// The commit a revision names (a full or abbreviated hash, a ref), if the repository has it.
    pub fn revision(&self, rev: &str) -> Option<Oid> {
        self.repo.revparse_single(rev).ok()?.peel_to_commit().ok().map(|c| c.id())
    }

    /// A file's content at a commit, if it exists there.
    pub fn file_at(&self, oid: Oid, path: &str) -> Option<String> {
        let tree = self.repo.find_commit(oid).ok()?.tree().ok()?;
        let entry = tree.get_path(Path::new(path)).ok()?;
        let blob = self.repo.find_blob(entry.id()).ok()?;
        String::from_utf8(blob.content().to_vec()).ok()
    }
}

impl Git {
    /// A commit of HEAD's tree on top of HEAD that moves no ref (for invalid experiments).
    pub fn commit_detached(&self, msg: &str) -> Result<Oid> {
        let parent = self.repo.head()?.peel_to_commit()?;
        let sig = self.signature()?;
        Ok(self.repo.commit(None, &sig, &sig, msg, &parent.tree()?, &[&parent])?)
    }
}

/// Commits, worktrees and merges of the parallel loop, where an experiment's commit is made
/// beside the branch (its parent the best at that moment) and only a keep moves the branch.
impl Git {
    /// The ref that keeps an experiment whose trial is in flight reachable.
    pub fn running_ref(tag: &str, exp: u32) -> String {
        format!("refs/autoqat/{tag}/running/{exp:04}")
    }

    /// A commit of `parent`'s tree with `files` (path, content) written into it; moves no ref
    /// and touches neither the index nor the worktree.
    pub fn commit_on(&self, parent: Oid, files: &[(String, String)], msg: &str) -> Result<Oid> {
        let parent = self.repo.find_commit(parent)?;
        let mut index = git2::Index::new()?;
        index.read_tree(&parent.tree()?)?;
        for (path, content) in files {
            let blob = self.repo.blob(content.as_bytes())?;
            let mode = index.get_path(Path::new(path), 0).map_or(0o100644, |e| e.mode);
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode,
                uid: 0,
                gid: 0,
                file_size: content.len() as u32,
                id: blob,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry)?;
        }
        let tree = self.repo.find_tree(index.write_tree_to(&self.repo)?)?;
        let sig = self.signature()?;
        Ok(self.repo.commit(None, &sig, &sig, msg, &tree, &[&parent])?)
    }

    /// `commit`'s change re-applied on top of `onto` (a three-way merge, as `git cherry-pick`):
    /// the new content of each of `paths` that differs from `onto`'s, or `None` on a conflict.
    pub fn replay(&self, commit: Oid, onto: Oid, paths: &[String]) -> Result<Option<Vec<(String, String)>>> {
        let theirs = self.repo.find_commit(commit)?;
        let ours = self.repo.find_commit(onto)?;
        let mut index = self.repo.cherrypick_commit(&theirs, &ours, 0, None)?;
        if index.has_conflicts() {
            return Ok(None);
        }
        let tree = self.repo.find_tree(index.write_tree_to(&self.repo)?)?;
        let mut out = Vec::new();
        for p in paths {
            let read = |t: &git2::Tree| -> Option<String> {
                let blob = t.get_path(Path::new(p)).ok()?.to_object(&self.repo).ok()?.peel_to_blob().ok()?;
                Some(String::from_utf8_lossy(blob.content()).to_string())
            };
            if let Some(new) = read(&tree) {
                if read(&ours.tree()?).as_deref() != Some(new.as_str()) {
                    out.push((p.clone(), new));
                }
            }
        }
        Ok(Some(out))
    }

    /// Adds a git worktree `name` at `path` with `commit` checked out (detached HEAD).
    pub fn add_worktree(&self, name: &str, path: &Path, commit: Oid) -> Result<()> {
        self.remove_worktree(name, path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ResearchError::io(dir, e))?;
        }
        // libgit2 checks a worktree out on a branch: a short-lived one, detached from at once.
        let branch = format!("refs/heads/autoqat-worktree/{name}");
        let reference = self.repo.reference(&branch, commit, true, "autoqat: worktree")?;
        let mut opts = git2::WorktreeAddOptions::new();
        opts.reference(Some(&reference));
        let added = self.repo.worktree(name, path, Some(&opts)).and_then(|wt| {
            let repo = Repository::open_from_worktree(&wt)?;
            repo.set_head_detached(commit)
        });
        let _ = self.repo.find_reference(&branch).and_then(|mut r| r.delete());
        added?;
        Ok(())
    }

    /// Removes worktree `name` (its directory at `path` and git's record of it), if any.
    pub fn remove_worktree(&self, name: &str, path: &Path) {
        let _ = std::fs::remove_dir_all(path);
        if let Ok(wt) = self.repo.find_worktree(name) {
            let mut opts = git2::WorktreePruneOptions::new();
            opts.valid(true).locked(true).working_tree(true);
            let _ = wt.prune(Some(&mut opts));
        }
        let _ = self.repo.find_reference(&format!("refs/heads/autoqat-worktree/{name}")).and_then(|mut r| r.delete());
    }

    /// The names of this repository's worktrees.
    pub fn worktree_names(&self) -> Vec<String> {
        self.repo.worktrees().map(|w| w.iter().flatten().flatten().map(str::to_string).collect()).unwrap_or_default()
    }

    /// Untracked and ignored entries of the workspace (directories not descended into), the
    /// inputs a trial reads that git does not carry: data, teacher checkpoints, run dirs.
    pub fn untracked_entries(&self) -> Result<Vec<String>> {
        let mut opts = StatusOptions::new();
        opts.include_untracked(true).include_ignored(true).recurse_untracked_dirs(false).recurse_ignored_dirs(false);
        let statuses = self.repo.statuses(Some(&mut opts))?;
        Ok(statuses
            .iter()
            .filter(|s| s.status().intersects(git2::Status::WT_NEW | git2::Status::IGNORED))
            .filter_map(|s| s.path().ok().map(|p| p.trim_end_matches('/').to_string()))
            .collect())
    }
}
