//! `autoqat log`: every experiment with status, metrics, rationale and diff, for review.

use anyhow::Context as _;
use autoqat_research::review;
use autoqat_research::settings::Settings;

use crate::cli::LogArgs;

/// Runs `autoqat log`.
pub fn run(args: LogArgs) -> anyhow::Result<()> {
    let tag = super::results::resolve_tag(args.tag.name, &args.workspace)?;
    let settings = Settings::load(&args.workspace)?;
    let entries = review::entries(&args.workspace, &tag, &settings.run.mutable_paths)
        .with_context(|| format!("cannot read the experiments of autoqat/{tag}"))?;
    if args.json.on {
        let v: Vec<_> = entries.iter().map(|(r, d)| serde_json::json!({"record": r, "diff": d})).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", review::render(&tag, &entries));
    }
    Ok(())
}
