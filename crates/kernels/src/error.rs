//! Errors of the kernel crate: every user-supplied length, shape and code is checked here.

use crate::layout::WeightKind;
use crate::path::KernelPath;

/// Kernel errors.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A buffer does not hold the number of elements its shape needs.
    #[error("{what}: expected {expected} elements, got {got}")]
    Length {
        /// Which buffer.
        what: &'static str,
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A matrix or activation batch with a zero dimension.
    #[error("{what}: dimensions must be positive, got {rows} x {cols}")]
    Empty {
        /// Which operand.
        what: &'static str,
        /// Rows given.
        rows: usize,
        /// Columns given.
        cols: usize,
    },
    /// A code outside the range of its kind (or a stored digit that decodes to none).
    #[error("{kind:?}: code {value} at index {index} is out of range")]
    Code {
        /// The weight kind.
        kind: WeightKind,
        /// The offending value (decoded code or raw digit).
        value: i32,
        /// Flat index of the value.
        index: usize,
    },
    /// A group size of zero, or one that does not divide the row where the format needs it to.
    #[error("group size {group} does not fit rows of {cols} values")]
    Group {
        /// The group size.
        group: usize,
        /// The row width.
        cols: usize,
    },
    /// Operands whose inner dimensions differ.
    #[error("matrix has {matrix} columns but the activations have {acts}")]
    Cols {
        /// Columns of the matrix.
        matrix: usize,
        /// Values per activation row.
        acts: usize,
    },
    /// A kernel path this CPU cannot run.
    #[error("kernel path {0} is not supported by this CPU")]
    Unsupported(KernelPath),
    /// Row indices of a mixed matrix that do not cover every row exactly once.
    #[error("mixed rows: {0}")]
    Rows(String),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, KernelError>;

/// Checks that `got` equals `expected` for buffer `what`.
pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::Length { what, expected, got })
    }
}
