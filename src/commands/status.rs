//! `autoqat status`.

use crate::cli::StatusArgs;

/// Runs `autoqat status`.
pub fn run(_args: StatusArgs) -> anyhow::Result<()> {
    anyhow::bail!("`autoqat status` is not implemented yet")
}
