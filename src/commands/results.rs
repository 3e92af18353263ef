//! `autoqat results`.

use crate::cli::ResultsArgs;

/// Runs `autoqat results`.
pub fn run(_args: ResultsArgs) -> anyhow::Result<()> {
    anyhow::bail!("`autoqat results` is not implemented yet")
}
