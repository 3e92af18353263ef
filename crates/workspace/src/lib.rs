//! autoqat-workspace: the on-disk contract of an autoqat workspace, owned in one place and
//! free of libtorch, so that the trial (which writes it), the research loop, `status` and the
//! report (which read it) cannot drift apart.
//!
//! - [`layout`]: where things live (`autoqat.toml`, the recipe, `results.tsv`, `runs/<exp>`,
//!   `.autoqat/*`).
//! - [`run`]: a run directory's `steps.tsv` (writer and the one reader) and `summary.json`
//!   (the one struct, with the NaN rule).
//! - [`results`]: `results.tsv` and the per-experiment record kept in git notes, and how a
//!   summary becomes a record.
//! - [`tokens`]: the token cache `autoqat prepare` fills and trials read.
//! - [`atomic`]: the one whole-file writer (temporary, fsync, rename) every JSON output uses.
//! - [`hash`]: FNV-1a and SplitMix64, the stable primitives behind cache keys and samplers.
//!
//! The tracks' outputs are named here too ([`run::MANIFEST_FILE`], [`run::ARTIFACT_ZIP`],
//! [`run::ARTIFACT_DIR`], [`run::TRACE_INDEX_FILE`]): a compression run's summary extends the
//! trial's [`Summary`], and every JSON file goes through [`atomic`]. The trace index's fields
//! belong to `autoqat-traces`, which writes it.

pub mod atomic;
pub mod error;
mod exe;
pub mod hash;
pub mod heldout;
pub mod layout;
pub mod results;
pub mod run;
pub mod tokens;

pub use error::{Result, WorkspaceError};
pub use exe::self_exe;
pub use layout::Layout;
pub use run::{StepRow, Summary};
