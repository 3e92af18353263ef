//! `autoqat demo`.

use crate::cli::DemoArgs;

/// Runs `autoqat demo`.
pub fn run(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("`autoqat demo` is not implemented yet")
}
