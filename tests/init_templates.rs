//! `autoqat init`: each template yields a committed, clean workspace whose recipe passes the
//! recipe schema.

mod common;

use common::git;

use std::path::Path;
use std::process::Command;

fn autoqat(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autoqat")).args(args).arg(dir).output().unwrap()
}

fn init(template: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ws");
    let out = autoqat(&["init", "--template", template], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tmp
}

#[test]
fn every_template_is_a_clean_committed_workspace_with_a_valid_recipe() {
    let repo_program = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("program.md")).unwrap();
    for template in ["tiny-demo", "smollm-ternary", "smollm-binary"] {
        let tmp = init(template);
        let dir = tmp.path().join("ws");
        for f in ["program.md", "autoqat.toml", "experiments/train.toml", ".gitignore"] {
            assert!(dir.join(f).is_file(), "{template}: {f} missing");
        }
        assert!(dir.join("prompts").is_dir(), "{template}: prompts/ missing");
        let ignore = std::fs::read_to_string(dir.join(".gitignore")).unwrap();
        assert!(ignore.lines().any(|l| l == "results.tsv") && ignore.lines().any(|l| l == "runs/"), "{ignore}");
        assert_eq!(git(&dir, &["rev-list", "--count", "HEAD"]).trim(), "1", "{template}: one first commit");
        assert_eq!(git(&dir, &["status", "--porcelain"]), "", "{template}: worktree not clean");
        let tracked = git(&dir, &["ls-files"]);
        assert!(tracked.lines().any(|l| l == "experiments/train.toml"), "{tracked}");

        let program = std::fs::read_to_string(dir.join("program.md")).unwrap();
        assert!(program.starts_with(&repo_program), "{template}: program.md is not the repository's brief");
        let recipe_text = std::fs::read_to_string(dir.join("experiments/train.toml")).unwrap();
        let recipe = autoqat_recipe::parse(&recipe_text)
            .unwrap_or_else(|e| panic!("{template}: recipe does not parse: {e}\n{recipe_text}"));
        let method = format!("{:?}", recipe.quant.method);
        let want = if template == "smollm-binary" { "BinaryAbsmean" } else { "TernaryAbsmean" };
        assert_eq!(method, want, "{template}");
        assert_eq!(recipe.data.train_text, "../data/train.txt", "{template}");
        let settings_text = std::fs::read_to_string(dir.join("autoqat.toml")).unwrap();
        let settings = autoqat_research::settings::Settings::parse(&settings_text, &dir.join("autoqat.toml"))
            .unwrap_or_else(|e| panic!("{template}: autoqat.toml does not parse: {e}"));
        assert_eq!(settings.run.mutable_paths, vec!["experiments/train.toml".to_string()]);
        for p in ["system.md", "propose.md", "repair.md"] {
            let repo = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts").join(p)).unwrap();
            assert_eq!(std::fs::read_to_string(dir.join("prompts").join(p)).unwrap(), repo, "{template}: prompts/{p}");
        }
    }
}

#[test]
fn smollm_ternary_recipe_is_the_repository_recipe() {
    let tmp = init("smollm-ternary");
    let ours = std::fs::read_to_string(tmp.path().join("ws/experiments/train.toml")).unwrap();
    let root = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/train.toml")).unwrap();
    let differing: Vec<(&str, &str)> = ours.lines().zip(root.lines()).filter(|(a, b)| a != b).collect();
    assert_eq!(ours.lines().count(), root.lines().count());
    // The repository's recipe already reads its data where `autoqat prepare` writes it.
    assert!(differing.is_empty(), "{differing:?}");
}

#[test]
fn init_refuses_to_overwrite_and_names_the_file() {
    let tmp = init("tiny-demo");
    let dir = tmp.path().join("ws");
    std::fs::write(dir.join("program.md"), "my own brief\n").unwrap();
    let out = autoqat(&["init", "--template", "tiny-demo"], &dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("program.md")).unwrap(), "my own brief\n");
}

#[test]
fn unknown_template_lists_the_known_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let out = autoqat(&["init", "--template", "smollm-quaternary"], &tmp.path().join("ws"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tiny-demo, smollm-ternary, smollm-binary"), "{err}");
    assert!(!tmp.path().join("ws").exists(), "a failed init left a directory behind");
}

/// Regression (fresh-clone demo): the demo's workspace `autoqat-demo` sits inside the project
/// checkout; init committed its files into the project's repository and `autoqat run` then
/// refused the workspace. A workspace inside another repository gets its own.
#[test]
fn init_inside_another_repository_makes_its_own() {
    let outer = tempfile::tempdir().unwrap();
    git(outer.path(), &["init", "-q"]);
    git(outer.path(), &["commit", "-q", "--allow-empty", "-m", "outer"]);
    let before = git(outer.path(), &["rev-parse", "HEAD"]);
    let ws = outer.path().join("inner");
    let out = autoqat(&["init", "--template", "tiny-demo"], &ws);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(git(outer.path(), &["rev-parse", "HEAD"]), before, "the outer repository got a commit");
    assert_eq!(git(&ws, &["rev-parse", "--show-toplevel"]).trim(), ws.canonicalize().unwrap().to_str().unwrap());
    assert_eq!(git(&ws, &["status", "--porcelain"]).trim(), "", "the new workspace is committed and clean");
}
