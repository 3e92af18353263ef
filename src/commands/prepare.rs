//! `autoqat prepare`: model, train text and eval text for the workspace, tokens cached.

use crate::cli::PrepareArgs;
use crate::prepare::{self, Options};

/// Runs `autoqat prepare`.
pub fn run(args: PrepareArgs) -> anyhow::Result<()> {
    let opts = Options {
        workspace: args.workspace.dir.clone(),
        model: args.model,
        train_text: args.train_text,
        eval_text: args.eval_text,
        heldout_text: args.heldout_text,
    };
    let p = prepare::prepare(&opts, &mut |line| eprintln!("[prepare] {line}"))?;
    println!("model: {} ({})", p.model_source, p.model_dir.display());
    println!("train_text: {} ({} tokens)", p.train_text.display(), p.train_tokens.meta.tokens);
    println!("eval_text: {} ({} tokens)", p.eval_text.display(), p.eval_tokens.meta.tokens);
    println!("next: autoqat run --workspace {}", args.workspace.display());
    Ok(())
}
