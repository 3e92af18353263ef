//! `autoqat report`.

use crate::cli::ReportArgs;

/// Runs `autoqat report`.
pub fn run(_args: ReportArgs) -> anyhow::Result<()> {
    anyhow::bail!("`autoqat report` is not implemented yet")
}
