//! `autoqat results`: print results.tsv, or rebuild it from git notes alone.

use anyhow::Context as _;
use autoqat_research::driver;
use autoqat_research::git::Git;
use autoqat_research::settings::Settings;

use crate::cli::ResultsArgs;

/// The tag given, else the checked-out `autoqat/<tag>` branch, else autoqat.toml's.
pub fn resolve_tag(tag: Option<String>, workspace: &std::path::Path) -> anyhow::Result<String> {
    if let Some(t) = tag {
        return Ok(t);
    }
    if let Some(t) = Git::open(workspace).ok().and_then(|g| g.current_tag()) {
        return Ok(t);
    }
    Ok(Settings::load(workspace)?.run.tag)
}

/// Runs `autoqat results`.
pub fn run(args: ResultsArgs) -> anyhow::Result<()> {
    let tag = resolve_tag(args.tag.name, &args.workspace)?;
    if args.rebuild {
        let records = driver::rebuild(&args.workspace, &tag)
            .with_context(|| format!("cannot rebuild results.tsv in {}", args.workspace.display()))?;
        if !args.json.on {
            eprintln!("rebuilt results.tsv from git notes: {} experiments of autoqat/{tag}", records.len());
        }
    }
    if args.json.on {
        let git = Git::open(&args.workspace)?;
        println!("{}", serde_json::to_string_pretty(&git.records(&tag)?)?);
        return Ok(());
    }
    let path = autoqat_workspace::Layout::new(&*args.workspace).results();
    match std::fs::read_to_string(&path) {
        Ok(text) => print!("{text}"),
        Err(_) if !args.rebuild => {
            anyhow::bail!("{} does not exist (hint: `autoqat results --rebuild` recreates it from git)", path.display())
        }
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    }
    Ok(())
}
