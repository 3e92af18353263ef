//! `autoqat status`: the live run. A snapshot by default; `--watch` follows it, with a
//! progress bar on a terminal and plain lines otherwise; `--json` for machines.

use std::io::IsTerminal;
use std::time::Duration;

use crate::cli::StatusArgs;
use crate::status;

/// Runs `autoqat status`.
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let s = status::snapshot(&args.workspace)?;
    if args.json.on {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        print!("{}", status::render(&s));
    }
    if args.watch && s.running {
        watch(&args, (s.current_exp, s.trial.clone()))?;
    }
    Ok(())
}

/// Follows the run until it stops: one bar (or one line per change) per trial.
fn watch(args: &StatusArgs, shown: (Option<u32>, Option<status::TrialProgress>)) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal() && !args.json.on;
    let mut bar: Option<(u32, indicatif::ProgressBar)> = None;
    let mut last_printed = Some(shown);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let s = status::snapshot(&args.workspace)?;
        if !s.running {
            if let Some((_, b)) = bar.take() {
                b.finish();
            }
            println!(
                "run finished: {} experiments, best {}",
                s.finished,
                s.best_ppl.map(|p| format!("{p:.4}")).unwrap_or("-".into())
            );
            return Ok(());
        }
        if tty {
            let exp = s.current_exp.unwrap_or(0);
            if bar.as_ref().map(|(e, _)| *e) != Some(exp) {
                if let Some((_, b)) = bar.take() {
                    b.finish();
                }
                let total = s.trial.as_ref().and_then(|t| t.total_steps).unwrap_or(0);
                let b = indicatif::ProgressBar::new(total);
                b.set_style(
                    indicatif::ProgressStyle::with_template("exp {prefix:>4} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                b.set_prefix(exp.to_string());
                bar = Some((exp, b));
            }
            if let (Some((_, b)), Some(t)) = (&bar, &s.trial) {
                if let Some(total) = t.total_steps {
                    b.set_length(total);
                }
                b.set_position(t.step);
                b.set_message(format!(
                    "loss {} ppl {}",
                    t.train_loss.map(|v| format!("{v:.4}")).unwrap_or("-".into()),
                    t.eval_ppl.map(|v| format!("{v:.3}")).unwrap_or("-".into())
                ));
            }
        } else {
            let key = (s.current_exp, s.trial.clone());
            if last_printed.as_ref() != Some(&key) {
                if args.json.on {
                    println!("{}", serde_json::to_string(&s)?);
                } else if let Some(t) = &s.trial {
                    println!("exp {} {}", s.current_exp.unwrap_or(0), status::trial_line(t));
                }
                last_printed = Some(key);
            }
        }
    }
}
