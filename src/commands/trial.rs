//! `autoqat trial`.

use crate::cli::TrialArgs;

/// Runs `autoqat trial`.
pub fn run(_args: TrialArgs) -> anyhow::Result<()> {
    anyhow::bail!("`autoqat trial` is not implemented yet")
}
