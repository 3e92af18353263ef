//! `autoqat init`.

use crate::cli::InitArgs;

/// Runs `autoqat init`.
pub fn run(_args: InitArgs) -> anyhow::Result<()> {
    anyhow::bail!("`autoqat init` is not implemented yet")
}
