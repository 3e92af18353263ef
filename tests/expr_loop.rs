//! A code-level mutation through the research loop: a `command` proposer (a script, as an
//! agent CLI would be) writes a new quantizer program into the demo's recipe. The trial runs
//! it, a broken program is refused before any trial with the key named, and `autoqat log`
//! shows the program in the diff.

use std::path::Path;
use std::process::Command;

fn autoqat(dir: &Path, args: &[&str], cache: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autoqat"))
        .args(args)
        .current_dir(dir)
        .env("AUTOQAT_CACHE_DIR", cache)
        .output()
        .unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One proposal per line of answers, in order (a repair round asks again).
fn write_proposer(dir: &Path, answers: &[serde_json::Value]) -> std::path::PathBuf {
    for (i, a) in answers.iter().enumerate() {
        std::fs::write(dir.join(format!("answer{i}.json")), a.to_string()).unwrap();
    }
    let script = dir.join("propose.sh");
    let d = dir.display();
    std::fs::write(
        &script,
        format!("cat > /dev/null\nn=$(cat {d}/count 2>/dev/null || echo 0)\necho $((n + 1)) > {d}/count\ncat {d}/answer$n.json\n"),
    )
    .unwrap();
    script
}

fn edit(description: &str, replace: &str) -> serde_json::Value {
    serde_json::json!({
        "description": description,
        "rationale": "an idea that is not a knob",
        "edits": [{"path": "experiments/train.toml", "search": "method = \"ternary_absmean\"", "replace": replace}]
    })
}

#[test]
fn a_proposer_writes_a_quantizer_program_the_loop_runs_it_and_refuses_a_broken_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (cache, ws) = (tmp.path().join("cache"), tmp.path().join("ws"));
    let out = autoqat(tmp.path(), &["demo", "--quick", "--experiments", "0", "--dir", ws.to_str().unwrap()], &cache);
    assert!(out.status.success(), "demo: {}", String::from_utf8_lossy(&out.stderr));

    let program = "s = max(mean(abs(w)), 1e-5); scale = s; code = sign(w) * (abs(w) > 0.7 * s)";
    let broken = "scale = abs(w); code = sign(w)";
    let script = write_proposer(
        tmp.path(),
        &[
            edit("deadzone at 0.7", &format!("method = \"expr\"\nexpr = \"{program}\"")),
            edit("per-weight scale", &format!("method = \"expr\"\nexpr = \"{broken}\"")),
            edit("per-weight scale, again", &format!("method = \"expr\"\nexpr = \"{broken}\"")),
        ],
    );
    let settings = std::fs::read_to_string(ws.join("autoqat.toml")).unwrap();
    // The demo's own runs stay: this tag gets run directories of its own.
    let settings = settings
        .replace("kind = \"builtin\"", &format!("kind = \"command\"\ncommand = \"sh {}\"", script.display()))
        .replace("run_dir = \"runs/{exp}\"", "run_dir = \"runs/{tag}/{exp}\"");
    std::fs::write(ws.join("autoqat.toml"), settings).unwrap();
    git(&ws, &["commit", "-qam", "a scripted proposer"]);

    let out = autoqat(&ws, &["run", "--tag", "expr", "--max-experiments", "3"], &cache);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "run: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));

    let rows = autoqat_workspace::results::read(&ws.join("results.tsv")).unwrap();
    let row = |desc: &str| {
        rows.iter().find(|r| r.description.starts_with(desc)).unwrap_or_else(|| panic!("no row {desc}: {rows:?}"))
    };
    let ran = row("deadzone at 0.7");
    let status = ran.status.map(|s| s.as_str()).unwrap_or("");
    assert!(["keep", "discard"].contains(&status), "the program's trial ran: {ran:?}");
    assert!(ran.eval_ppl.is_some_and(|p| p.is_finite() && p > 1.0), "{ran:?}");
    let bad = row("per-weight scale");
    assert_eq!(bad.status.map(|s| s.as_str()), Some("invalid"), "{bad:?}");

    // The trial read the program: its run directory's export says so.
    let quant: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.join(format!("runs/expr/{:04}/export/quant.json", ran.record.exp))).unwrap(),
    )
    .unwrap();
    assert_eq!(quant["method"], "expr");
    let log = autoqat(&ws, &["log", "--tag", "expr"], &cache);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(log.contains(&format!("+expr = \"{program}\"")), "autoqat log shows the program: {log}");
    assert!(
        log.contains("error: `experiments/train.toml` fails the schema: invalid recipe: `quant.expr`: scale must be one value per group at most, but it is one value per weight"),
        "the refusal names the key: {log}"
    );
    assert_eq!(git(&ws, &["status", "--porcelain"]), "", "the worktree stays clean");
}
