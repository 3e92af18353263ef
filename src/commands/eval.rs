//! `autoqat eval`.

use crate::cli::EvalArgs;

/// Runs `autoqat eval`.
pub fn run(_args: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("`autoqat eval` is not implemented yet")
}
