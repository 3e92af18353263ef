//! `autoqat demo --quick` end to end, offline: generated corpus, trained tokenizer, cached
//! teacher (reused by a second demo), research loop with the builtin proposer, report.

use std::path::Path;
use std::process::Command;

fn demo(cache: &Path, dir: &Path, experiments: u32) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autoqat"))
        .args(["demo", "--quick", "--experiments", &experiments.to_string(), "--dir"])
        .arg(dir)
        .env("AUTOQAT_CACHE_DIR", cache)
        .output()
        .unwrap()
}

fn git(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("git").args(args).current_dir(dir).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report/demo-summary.json")).unwrap()).unwrap()
}

#[test]
fn quick_demo_runs_the_whole_loop_and_reuses_the_cached_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let d1 = tmp.path().join("demo1");
    let out = demo(&cache, &d1, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stderr}\n{stdout}");

    // Tokenizer and teacher in the cache, as a Hugging Face directory.
    let teachers: Vec<_> = std::fs::read_dir(cache.join("teachers")).unwrap().flatten().collect();
    assert_eq!(teachers.len(), 1, "one cache entry");
    let entry = teachers[0].path();
    for f in ["tokenizer.json", "model/config.json", "model/model.safetensors", "model/tokenizer.json", "teacher.json"]
    {
        assert!(entry.join(f).is_file(), "cache lacks {f}");
    }
    let tok = tokenizers::Tokenizer::from_file(entry.join("tokenizer.json")).unwrap();
    let eval_text = std::fs::read_to_string(d1.join("data/eval.txt")).unwrap();
    let ids = tok.encode(&eval_text[..500], false).unwrap();
    assert_eq!(tok.decode(ids.get_ids(), false).unwrap(), &eval_text[..500]);

    // results.tsv: header, the baseline, then one row per experiment.
    let results = std::fs::read_to_string(d1.join("results.tsv")).unwrap();
    let lines: Vec<&str> = results.lines().collect();
    assert!(lines[0].starts_with("exp\tcommit\tparent\tstatus\teval_ppl"), "{results}");
    assert_eq!(lines.len(), 1 + 3, "{results}");
    let status = |l: &str| l.split('\t').nth(3).unwrap_or("").to_string();
    assert_eq!(status(lines[1]), "baseline", "{results}");
    let ppl: f64 = lines[1].split('\t').nth(4).unwrap().parse().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "baseline PPL {ppl}");
    for l in &lines[2..] {
        assert!(["keep", "discard", "crash", "timeout", "pruned", "invalid"].contains(&status(l).as_str()), "{l}");
    }

    // Git: the run branch, a note per experiment, every discarded commit still reachable.
    assert!(git(&d1, &["rev-parse", "--verify", "refs/heads/autoqat/demo"]).0);
    assert!(git(&d1, &["rev-parse", "--verify", "refs/notes/autoqat"]).0);
    let discarded = lines[2..].iter().filter(|l| status(l) != "keep").count();
    let (_, refs) = git(&d1, &["for-each-ref", "--format=%(refname)", "refs/autoqat/demo/discarded/"]);
    assert_eq!(refs.lines().count(), discarded, "{refs}");
    assert_eq!(git(&d1, &["status", "--porcelain"]).1, "", "worktree left dirty");

    // Report and plot.
    let md = std::fs::read_to_string(d1.join("report/report.md")).unwrap();
    assert!(md.contains("# autoqat report: demo") && md.contains("## Experiments"), "{md}");
    // The best is scored once on the held-out stories, and the report puts it beside its search PPL.
    let heldout = autoqat_workspace::heldout::read(&d1.join("heldout.tsv")).unwrap();
    assert_eq!(heldout.len(), 1, "{heldout:?}");
    assert!(heldout[0].heldout_ppl.is_finite() && heldout[0].heldout_ppl > 1.0, "{heldout:?}");
    let row = format!("| {} |", heldout[0].exp);
    assert!(md.contains("## Held-out split") && md.lines().any(|l| l.starts_with(&row) && l.ends_with(" |")), "{md}");
    // Both files come back from git alone: the metrics notes and the held-out notes.
    let (results_before, heldout_before) =
        (std::fs::read(d1.join("results.tsv")).unwrap(), std::fs::read(d1.join("heldout.tsv")).unwrap());
    std::fs::remove_file(d1.join("results.tsv")).unwrap();
    std::fs::remove_file(d1.join("heldout.tsv")).unwrap();
    let rebuilt = Command::new(env!("CARGO_BIN_EXE_autoqat"))
        .args(["results", "--rebuild", "--tag", "demo", "--workspace"])
        .arg(&d1)
        .output()
        .unwrap();
    assert!(rebuilt.status.success(), "{}", String::from_utf8_lossy(&rebuilt.stderr));
    assert_eq!(std::fs::read(d1.join("results.tsv")).unwrap(), results_before);
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(d1.join("heldout.tsv")).unwrap()),
        String::from_utf8_lossy(&heldout_before)
    );
    let img = image::open(d1.join("report/progress.png")).unwrap();
    assert_eq!((img.width(), img.height()), (1200, 600));
    let s1 = summary(&d1);
    assert_eq!(s1["teacher_reused"], false);
    assert!(s1["teacher_fp_ppl"].as_f64().unwrap() > 1.0);
    assert!(stdout.contains("fp teacher eval PPL") && stdout.contains("report:"), "{stdout}");

    // A second demo reuses the cached teacher instead of training it again.
    let d2 = tmp.path().join("demo2");
    let out = demo(&cache, &d2, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "second demo failed:\n{stderr}");
    assert!(stderr.contains("reusing the cached teacher"), "{stderr}");
    assert!(!stderr.contains("teacher step"), "teacher was trained again:\n{stderr}");
    let s2 = summary(&d2);
    assert_eq!(s2["teacher_reused"], true);
    assert_eq!(s2["teacher_fp_ppl"], s1["teacher_fp_ppl"]);
    assert_eq!(
        std::fs::read(d2.join("teacher/model.safetensors")).unwrap(),
        std::fs::read(entry.join("model/model.safetensors")).unwrap()
    );
}

#[test]
fn demo_refuses_a_non_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
    let out = demo(&tmp.path().join("cache"), tmp.path(), 1);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty") && err.contains("--dir"), "{err}");
    assert!(!tmp.path().join("cache").exists(), "work started before the check");
}

#[test]
fn demo_again_into_a_previous_demo_dir_uses_a_fresh_sibling() {
    // A previous demo workspace: what `autoqat init --template tiny-demo` leaves.
    let tmp = tempfile::tempdir().unwrap();
    let prev = tmp.path().join("autoqat-demo");
    let init = Command::new(env!("CARGO_BIN_EXE_autoqat"))
        .args(["init", "--template", "tiny-demo"])
        .arg(&prev)
        .output()
        .unwrap();
    assert!(init.status.success());
    let before = std::fs::read_to_string(prev.join("experiments/train.toml")).unwrap();
    // Stop it early: an empty cache dir that cannot be created makes phase 1 fail after the
    // directory choice, which is all this test is about.
    let blocker = tmp.path().join("cache-is-a-file");
    std::fs::write(&blocker, "").unwrap();
    let out = demo(&blocker, &prev, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds a previous demo") && err.contains("autoqat-demo-2"), "{err}");
    assert_eq!(std::fs::read_to_string(prev.join("experiments/train.toml")).unwrap(), before);
}
