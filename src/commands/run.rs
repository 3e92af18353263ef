//! `autoqat run`.

use crate::cli::RunArgs;

/// Runs `autoqat run`.
pub fn run(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("`autoqat run` is not implemented yet")
}
