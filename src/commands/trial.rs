//! `autoqat trial`: one QAT trial from a recipe, writing `runs/<id>/` (steps.tsv, trial.log,
//! summary.json, checkpoint/, export/, hf/).

use crate::cli::TrialArgs;
use anyhow::Context;
use autoqat_qat::train::{run_trial, StepRow, TrialOptions};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Runs `autoqat trial`.
pub fn run(args: TrialArgs) -> anyhow::Result<()> {
    if args.schema {
        println!("{}", serde_json::to_string_pretty(&autoqat_recipe::schema().to_json())?);
        return Ok(());
    }
    let recipe = autoqat_recipe::load(&args.config).with_context(|| format!("recipe {}", args.config.display()))?;
    if args.check {
        println!(
            "ok: {} ({} steps, {} tokens per step)",
            args.config.display(),
            recipe.total_steps(),
            recipe.tokens_per_step()
        );
        return Ok(());
    }
    let run_dir = match args.run_dir {
        Some(d) => d,
        None if args.resume => anyhow::bail!("--resume needs --run-dir (the run to continue)"),
        None => default_run_dir(),
    };
    let json = args.json;
    let tty = std::io::stdout().is_terminal();
    if !json {
        println!("trial: {} -> {}", args.config.display(), run_dir.display());
        if tty {
            println!(
                "{:>7} {:>7} {:>10} {:>10} {:>8} {:>10} {:>8} {:>6} {:>6} {:>6}",
                "step", "lambda", "train_loss", "eval_ppl", "eval_bpb", "lr", "time_s", "q-1", "q0", "q+1"
            );
        }
    }
    let mut on_row = |r: &StepRow| {
        if json {
            println!("{}", serde_json::json!({"event": "eval", "row": r}));
        } else if tty {
            println!(
                "{:>7} {:>7.3} {:>10.4} {:>10.3} {:>8.4} {:>10.3e} {:>8.1} {:>6.3} {:>6.3} {:>6.3}",
                r.step, r.lambda, r.train_loss, r.eval_ppl, r.eval_bpb, r.lr, r.time_s, r.q_neg1, r.q_zero, r.q_pos1
            );
        } else {
            println!(
                "step {} lambda {:.3} train_loss {:.4} eval_ppl {:.3} eval_bpb {:.4} lr {:.3e} time_s {:.1} q_neg1 {:.3} q_zero {:.3} q_pos1 {:.3}",
                r.step, r.lambda, r.train_loss, r.eval_ppl, r.eval_bpb, r.lr, r.time_s, r.q_neg1, r.q_zero, r.q_pos1
            );
        }
    };
    let mut opts = TrialOptions::new(&run_dir);
    opts.resume = args.resume;
    opts.on_row = Some(&mut on_row);
    let summary = run_trial(&recipe, opts);
    if json {
        println!("{}", serde_json::json!({"event": "summary", "summary": summary}));
    } else {
        // grep-able `key: value` lines, as autoresearch ends its runs
        let f = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        println!("status: {}", summary.status);
        println!("eval_ppl: {}", f(summary.eval_ppl));
        println!("eval_bpb: {}", f(summary.eval_bpb));
        println!("fp_ppl: {}", f(summary.fp_ppl));
        println!("steps: {}", summary.steps);
        println!("time_s: {:.1}", summary.time_s);
        println!("summary: {}", run_dir.join(autoqat_workspace::run::SUMMARY_FILE).display());
        // A trace trial's exit gates (docs/contracts.md#the-distillation-traces-track), as checked at its end.
        if let Ok(text) = std::fs::read_to_string(run_dir.join("gates.json")) {
            if let Ok(g) = serde_json::from_str::<serde_json::Value>(&text) {
                for gate in g["gates"].as_array().into_iter().flatten() {
                    println!(
                        "gate {}: {} ({})",
                        gate["name"].as_str().unwrap_or("?"),
                        gate["status"].as_str().unwrap_or("?"),
                        gate["detail"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    if summary.status != "ok" {
        let reason = summary.error.unwrap_or_else(|| "unknown".into());
        return Err(crate::exit::error(crate::exit::ExitKind::TrialFailed, reason))
            .with_context(|| format!("trial crashed (details in {})", run_dir.join("trial.log").display()));
    }
    Ok(())
}

fn default_run_dir() -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from("runs").join(format!("trial-{secs}"))
}
