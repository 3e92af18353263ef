//! `autoqat doctor`.

use crate::cli::DoctorArgs;

/// Runs `autoqat doctor`.
pub fn run(_args: DoctorArgs) -> anyhow::Result<()> {
    anyhow::bail!("`autoqat doctor` is not implemented yet")
}
