//! `autoqat init`: scaffolds a research workspace from a template.

use std::path::PathBuf;

use crate::cli::InitArgs;
use crate::workspace::{self, Template, TinySizes};

/// Runs `autoqat init`.
pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let template = Template::parse(&args.template)?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let files = workspace::init(&dir, template, TinySizes::default())?;
    println!("initialised {} workspace in {}", args.template, dir.display());
    for f in files {
        println!("  {}", f.display());
    }
    let next = match template {
        Template::TinyDemo => "autoqat prepare (generates the corpus and the tiny teacher), then autoqat run",
        Template::PythonQat => {
            "autoqat prepare (the demo's tiny teacher and corpus into teacher/ and data/; or --model DIR --train-text F \
             --eval-text F), autoqat python prepare.py (checks the layout), then autoqat run"
        }
        Template::QwenTernary | Template::QwenBinary | Template::TinyCompress => {
            "put a calibration text in data/train.txt and the eval documents (one per line) in data/eval.txt, \
             point experiments/compress.toml's model.source at your checkpoint if not the default, then autoqat run"
        }
        _ => "autoqat prepare (fetches SmolLM-135M and the data, or takes local paths), then autoqat run",
    };
    println!("next: cd {} && {next}", dir.display());
    Ok(())
}
