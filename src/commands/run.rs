//! `autoqat run`: the research loop until a stop condition.

use anyhow::Context as _;
use autoqat_research::driver::{self, Driver, RunOptions};
use autoqat_research::settings::Settings;

use crate::cli::RunArgs;
use crate::exit::{self, ExitKind};

/// Runs `autoqat run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&args.workspace)?;
    let opts = RunOptions {
        tag: args.tag.name,
        max_experiments: args.max_experiments,
        hours: args.hours,
        max_cost: args.max_cost,
        provider: args.provider,
        resume: args.resume,
        json: args.json.on,
        quiet: false,
        workers: args.workers,
        executor: args.executor,
    };
    driver::install_signal_handlers();
    let d = Driver::open(&args.workspace, settings, opts, None)
        .with_context(|| format!("cannot start the research loop in {}", args.workspace.display()))?;
    let summary =
        d.run().context("the research loop failed (finished experiments are safe; continue with --resume)")?;
    let best = autoqat_research::results::best(&summary.records);
    let cost: f64 = summary.records.iter().map(|r| r.cost_usd).sum();
    if args.json.on {
        println!(
            "{}",
            serde_json::json!({
                "stop": summary.stop.to_string(),
                "experiments": summary.records.len(),
                "best": best,
                "cost_usd": cost,
            })
        );
    } else {
        println!("stopped: {}", summary.stop);
        println!("experiments: {}, proposer cost ${cost:.4}", summary.records.len());
        if let Some(b) = best {
            let ppl = b.eval_ppl.map(|p| format!("{p:.4}")).unwrap_or_else(|| "-".into());
            println!(
                "best: exp {} eval_ppl {ppl} commit {} ({})",
                b.exp,
                &b.commit[..b.commit.len().min(12)],
                b.description
            );
        }
        if let Some(s) = summary.records.first().and_then(|r| r.sigma) {
            println!("baseline noise: sigma {s:.4} over {} repeats", summary.records[0].baseline_ppls.len());
        }
    }
    if matches!(summary.stop, driver::StopReason::Signal) {
        return Err(exit::error(
            ExitKind::Interrupted,
            "interrupted by a signal (finished experiments are safe; continue with `autoqat run --resume`)",
        ));
    }
    Ok(())
}
