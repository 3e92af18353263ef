//! `autoqat run`, `autoqat results [--rebuild]` and `autoqat log` through the real binary in a
//! throwaway workspace with a toy trial script (no libtorch involved).

mod common;

use std::path::Path;
use std::process::Command;

const RECIPE: &str = "[optim]\nlr = 0.001\nseed = 0\n";
const TRIAL: &str = "#!/bin/sh\nmkdir -p \"$1\"\nlr=$(sed -n 's/^lr = //p' experiments/train.toml)\nppl=$(awk -v lr=\"$lr\" 'BEGIN{l=log(lr/0.003)/log(10); if(l<0)l=-l; printf \"%.6f\", 30+10*l}')\nprintf '{\"status\":\"ok\",\"eval_ppl\":%s}' \"$ppl\" > \"$1/summary.json\"\n";
const SETTINGS: &str = r#"[run]
tag = "cli"
[trial]
command = "sh ./trial.sh {run_dir}"
timeout_s = 30
[validator]
kind = "toml"
[[validator.fields]]
key = "optim.lr"
choices = [0.0003, 0.001, 0.003, 0.01]
"#;

fn sh(dir: &Path, prog: &str, args: &[&str]) -> std::process::Output {
    Command::new(prog).args(args).current_dir(dir).output().expect(prog)
}

fn autoqat(dir: &Path, args: &[&str]) -> std::process::Output {
    sh(dir, env!("CARGO_BIN_EXE_autoqat"), args)
}

/// A committed git workspace with the toy recipe and trial, `settings` as autoqat.toml, and
/// the `extra` files `(path, text)`.
fn toy_workspace(settings: &str, extra: &[(&str, &str)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    std::fs::create_dir_all(ws.join("experiments")).unwrap();
    std::fs::write(ws.join("experiments/train.toml"), RECIPE).unwrap();
    std::fs::write(ws.join("trial.sh"), TRIAL).unwrap();
    std::fs::write(ws.join("autoqat.toml"), settings).unwrap();
    for (path, text) in extra {
        std::fs::write(ws.join(path), text).unwrap();
    }
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ] {
        assert!(sh(ws, "git", args).status.success());
    }
    tmp
}

#[test]
fn run_results_rebuild_and_log_through_the_cli() {
    let tmp = toy_workspace(SETTINGS, &[]);
    let ws = tmp.path();
    // A change to a tracked file is refused with one clear line.
    let trial_sh = std::fs::read_to_string(ws.join("trial.sh")).unwrap();
    std::fs::write(ws.join("trial.sh"), format!("{trial_sh}\n# edited\n")).unwrap();
    let out = autoqat(ws, &["run", "--max-experiments", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    // Exit code 3: a workspace the command cannot use is bad input (docs/architecture.md, "Exit codes").
    assert_eq!(out.status.code(), Some(3));
    assert!(err.contains("uncommitted changes") && err.contains("trial.sh"), "{err}");
    std::fs::write(ws.join("trial.sh"), trial_sh).unwrap();

    // An untracked file outside the mutable paths (`autoqat run > run.log` in the workspace, as
    // autoresearch users run it) cannot reach a commit: the run goes on and leaves it alone.
    std::fs::write(ws.join("run.log"), "x").unwrap();
    let out = autoqat(ws, &["run", "--max-experiments", "4", "--provider", "builtin"]);
    assert_eq!(std::fs::read_to_string(ws.join("run.log")).unwrap(), "x");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("stopped: reached the experiment limit") && stdout.contains("best: exp"), "{stdout}");

    let live = std::fs::read_to_string(ws.join("results.tsv")).unwrap();
    assert_eq!(live.lines().count(), 5, "{live}");
    assert!(live.starts_with("exp\tcommit\tparent\tstatus\teval_ppl\teval_bpb\ttrain_loss\tdelta\ttime_s\ttokens\tpeak_mem_mb\tq_neg1\tq_zero\tq_pos1\tcost_usd\tdescription\tartifact_size_bytes\tbits_per_param\tconfirm_ppl\tnear_miss\n"));
    let shown = autoqat(ws, &["results"]);
    assert_eq!(String::from_utf8_lossy(&shown.stdout), live);
    std::fs::remove_file(ws.join("results.tsv")).unwrap();
    let out = autoqat(ws, &["results", "--rebuild"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(ws.join("results.tsv")).unwrap(), live);

    let log = String::from_utf8_lossy(&autoqat(ws, &["log"]).stdout).to_string();
    assert!(log.contains("== exp 0 baseline") && log.contains("+lr = "), "{log}");
    let json: serde_json::Value = serde_json::from_slice(&autoqat(ws, &["log", "--json"]).stdout).unwrap();
    assert_eq!(json.as_array().map(|a| a.len()), Some(4));
    // Nothing but the untracked log the user put there.
    assert_eq!(String::from_utf8_lossy(&sh(ws, "git", &["status", "--porcelain"]).stdout), "?? run.log\n");
}

#[test]
fn the_report_uses_the_noise_the_driver_measured() {
    // The toy trial, but the seed moves the PPL by 0.01 per step: σ over seeds 0-2 is 0.01.
    let trial = TRIAL
        .replace("printf \"%.6f\", 30+10*l}')", "printf \"%.6f\", 30+10*l+0.01*s}')")
        .replace("awk -v lr=\"$lr\"", "awk -v lr=\"$lr\" -v s=\"$(sed -n 's/^seed = //p' experiments/train.toml)\"");
    assert!(trial.contains("+0.01*s}") && trial.contains("-v s="), "{trial}");
    let tmp = toy_workspace(&format!("{SETTINGS}[noise]\nbaseline_repeats = 3\n"), &[("trial.sh", &trial)]);
    let ws = tmp.path();
    let out = autoqat(ws, &["run", "--max-experiments", "1", "--provider", "builtin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // One baseline row in results.tsv, three runs behind it.
    assert_eq!(std::fs::read_to_string(ws.join("results.tsv")).unwrap().lines().count(), 2);
    let out = autoqat(ws, &["report"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(ws.join("report/report.md")).unwrap();
    assert!(md.contains("The baseline ran 3 times"), "{md}");
    assert!(!md.contains("noise is unknown"), "{md}");
    // And how rough three runs are: 0.578 to 4.415 times the measured σ at 90% (chi-square, 2
    // degrees of freedom), with the setting that narrows it.
    let number_after = |text: &str, tag: &str| -> f64 {
        let rest = &text[text.find(tag).unwrap_or_else(|| panic!("no {tag:?} in {md}")) + tag.len()..];
        rest.split(|c: char| !(c.is_ascii_digit() || c == '.')).next().unwrap().parse().unwrap()
    };
    let between = &md[md.find("lies between ").unwrap_or_else(|| panic!("no interval in {md}"))..];
    let (sigma, lo, hi) =
        (number_after(&md, "σ = "), number_after(between, "between "), number_after(between, " and "));
    assert_eq!(sigma, 0.01, "{md}");
    assert!((lo - 0.0058).abs() < 1e-9 && (hi - 0.0442).abs() < 1e-9, "{lo} {hi}: {md}");
    assert!(md.contains("`noise.baseline_repeats`"), "{md}");
}

/// A small local model behind software nobody here wrote: llama.cpp's OpenAI-compatible server
/// (llama-cpp-python) serving the real SmolLM2-135M-Instruct with a 4,096-token context, as a
/// new user would run it. The proposer must fit its prompt into that context and get answers in
/// the proposal's shape through the server's schema-constrained decoding: every answer parses
/// (an edit the small model gets wrong is a rejected edit, never unreadable text).
#[test]
#[ignore = "slow: needs llama-cpp-python built from source (about 3 minutes; AUTOQAT_SLOW=1 ./scripts/test -- --ignored installs it) and the real SmolLM2"]
fn a_small_model_behind_llama_cpp_answers_in_the_proposals_shape() {
    let Some(server) = common::llama_server(4096, "fake-llama-loop-key") else { return };
    let provider = format!(
        "[provider]\nkind = \"openai\"\nmodel = \"smollm2\"\nbase_url = \"{}\"\napi_key_env = \"AUTOQAT_LLAMA_KEY\"\ntimeout_s = 300\nmax_retries = 1\n",
        server.url
    );
    let program = ("program.md", "Lower eval_ppl of the toy trial by changing optim.lr.\n");
    let tmp = toy_workspace(&format!("{SETTINGS}\n{provider}"), &[program]);
    let ws = tmp.path();
    let out = Command::new(env!("CARGO_BIN_EXE_autoqat"))
        .args(["run", "--max-experiments", "4", "-v"])
        .env("AUTOQAT_LLAMA_KEY", "fake-llama-loop-key")
        .current_dir(ws)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let rows = std::fs::read_to_string(ws.join("results.tsv")).unwrap();
    assert_eq!(rows.lines().count(), 1 + 4, "{rows}");
    // Rejected answers name a reason about the edit, never an answer that could not be read.
    for line in rows.lines().skip(1).filter(|l| l.contains("\tinvalid\t")) {
        let exp = line.split('\t').next().unwrap();
        let log = sh(ws, "git", &["log", "--all", "--format=%B", &format!("--grep=^Autoqat-Experiment: {exp}$")]);
        let body = String::from_utf8_lossy(&log.stdout);
        assert!(body.contains("Rejected:"), "exp {exp}: {body}");
        assert!(
            !body.contains("contains no JSON object") && !body.contains("does not parse as a proposal"),
            "exp {exp}: {body}"
        );
    }
    assert!(!stderr.contains("fake-llama-loop-key") && !stdout.contains("fake-llama-loop-key"));
}
