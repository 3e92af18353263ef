//! `autoqat log`.

use crate::cli::LogArgs;

/// Runs `autoqat log`.
pub fn run(_args: LogArgs) -> anyhow::Result<()> {
    anyhow::bail!("`autoqat log` is not implemented yet")
}
