//! `autoqat prepare`.

use crate::cli::PrepareArgs;

/// Runs `autoqat prepare`.
pub fn run(_args: PrepareArgs) -> anyhow::Result<()> {
    anyhow::bail!("`autoqat prepare` is not implemented yet")
}
