//! The CLI's error edge: each failure is classified into a documented exit code, so that a
//! script or an agent driving autoqat can tell a typo from a failed trial from a Ctrl-C.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other error (I/O, libtorch, a bug) |
//! | 2 | usage: unknown flag or subcommand, a missing argument (clap exits with it itself) |
//! | 3 | bad input: a malformed recipe or `autoqat.toml`, a missing file, a workspace the command cannot use |
//! | 4 | the trial (or compression) ran and failed: crash, NaN, over budget, failed verification |
//! | 130 | interrupted by SIGINT/SIGTERM; finished work is safe (`autoqat run --resume` continues) |

use autoqat_compress::CompressError;
use autoqat_kd::KdError;
use autoqat_model::ModelError;
use autoqat_qat::QatError;
use autoqat_recipe::RecipeError;
use autoqat_research::ResearchError;
use autoqat_workspace::WorkspaceError;

/// What ended a command, with its exit code as the discriminant (2, usage, is clap's own exit
/// before any command runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Anything not classified below.
    Error = 1,
    /// A config, recipe, file or workspace the user supplied is wrong or missing.
    BadInput = 3,
    /// The work ran and failed.
    TrialFailed = 4,
    /// A signal stopped the command.
    Interrupted = 130,
}

/// An error whose kind the command knows (the library errors are classified by type).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// Its exit code.
    pub kind: ExitKind,
    message: String,
}

impl CliError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ExitKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

/// An `anyhow` error of `kind` saying `message`, for a command to return.
pub fn error(kind: ExitKind, message: impl Into<String>) -> anyhow::Error {
    CliError::new(kind, message).into()
}

/// The exit code of `err`: the first error in its chain that has a known kind decides.
pub fn classify(err: &anyhow::Error) -> ExitKind {
    err.chain().find_map(kind_of).unwrap_or(ExitKind::Error)
}

fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<ExitKind> {
    use ExitKind::*;
    if let Some(c) = e.downcast_ref::<CliError>() {
        return Some(c.kind);
    }
    if e.is::<RecipeError>() {
        return Some(BadInput);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return missing(io);
    }
    if let Some(r) = e.downcast_ref::<ResearchError>() {
        return match r {
            ResearchError::Settings { .. } | ResearchError::Workspace(_) => Some(BadInput),
            ResearchError::Io { cause, .. } => missing(cause),
            ResearchError::Files(w) => kind_of(w),
            _ => None,
        };
    }
    if let Some(w) = e.downcast_ref::<WorkspaceError>() {
        return match w {
            WorkspaceError::Io { cause, .. } => missing(cause),
            WorkspaceError::Format { .. } | WorkspaceError::Line { .. } => Some(BadInput),
        };
    }
    if let Some(q) = e.downcast_ref::<QatError>() {
        return match q {
            QatError::Config(_) => Some(BadInput),
            QatError::Io { cause, .. } => missing(cause),
            QatError::NonFinite(_) => Some(TrialFailed),
            QatError::Model(m) => kind_of(m),
            _ => None,
        };
    }
    if let Some(m) = e.downcast_ref::<ModelError>() {
        return match m {
            ModelError::Io { .. }
            | ModelError::Config { .. }
            | ModelError::Unsupported(_)
            | ModelError::UnsupportedModelType { .. }
            | ModelError::NoWeights(_)
            | ModelError::CorruptWeights { .. }
            | ModelError::MissingTensor { .. }
            | ModelError::ShapeMismatch { .. }
            | ModelError::UnsupportedDtype { .. }
            | ModelError::Tokenizer { .. }
            | ModelError::Device(_)
            | ModelError::Dtype(_) => Some(BadInput),
            _ => None,
        };
    }
    if let Some(c) = e.downcast_ref::<CompressError>() {
        return match c {
            // A changed recipe or nothing to resume (`Resume`) and an unreadable artifact are
            // the user's input, as a malformed recipe is.
            CompressError::Recipe { .. }
            | CompressError::Calibration(_)
            | CompressError::Resume(_)
            | CompressError::Artifact { .. } => Some(BadInput),
            CompressError::Budget(_) | CompressError::Verify(_) => Some(TrialFailed),
            CompressError::Io { err, .. } => missing(err),
            CompressError::Model(m) => kind_of(m),
            _ => None,
        };
    }
    if let Some(k) = e.downcast_ref::<KdError>() {
        return match k {
            KdError::Config(_) => Some(BadInput),
            KdError::Io { cause, .. } => missing(cause),
            KdError::Model(m) => kind_of(m),
            KdError::Traces(t) => kind_of(t),
            _ => None,
        };
    }
    if let Some(t) = e.downcast_ref::<autoqat_traces::TraceError>() {
        return match t {
            autoqat_traces::TraceError::Io { cause, .. } => missing(cause),
            _ => Some(BadInput),
        };
    }
    None
}

/// A file that is not there is the user's input; other I/O failures are not classified.
fn missing(e: &std::io::Error) -> Option<ExitKind> {
    (e.kind() == std::io::ErrorKind::NotFound).then_some(ExitKind::BadInput)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_chain() {
        let recipe = anyhow::Error::new(RecipeError::Invalid("lr".into())).context("cannot load the recipe");
        assert_eq!(classify(&recipe), ExitKind::BadInput);
        let failed = anyhow::Error::new(CliError::new(ExitKind::TrialFailed, "nan")).context("trial crashed");
        assert_eq!(classify(&failed), ExitKind::TrialFailed);
        let missing = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(classify(&missing), ExitKind::BadInput);
        assert_eq!(classify(&anyhow::anyhow!("disk on fire")), ExitKind::Error);
        assert_eq!(ExitKind::Interrupted as i32, 130);
    }

    #[test]
    fn a_cut_short_checkpoint_and_a_bad_resume_are_bad_input() {
        let cut = ModelError::CorruptWeights { path: "m.safetensors".into(), msg: "truncated".into() };
        assert_eq!(classify(&anyhow::Error::new(cut)), ExitKind::BadInput);
        let resume = CompressError::Resume("nothing to resume".into());
        assert_eq!(classify(&anyhow::Error::new(resume)), ExitKind::BadInput);
    }
}
