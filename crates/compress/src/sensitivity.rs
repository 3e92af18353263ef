//! How much a row loses when stored as a given kind.
//!
//! With `d` the row's quantization error (`w - q(w)`, one row of `dW`):
//! - `mse`: `|d|²`, the weight-space proxy. The track's tips warn that it can win while
//!   perplexity loses; it is here to be compared against.
//! - `activation`: `d H dᵀ` with `H = Σ x xᵀ` the Gram matrix of the layer's calibration
//!   inputs: the squared error the row adds to the layer's outputs over the calibration tokens.
//!   For the embedding, whose inputs are one-hot, `H` is the diagonal of token counts (plus the
//!   lm_head's `H` when the head is tied to it).
//! - `fisher`: `Σ_j F_j d_j²` with `F` the empirical Fisher diagonal (squared gradients of the
//!   calibration loss, summed over sequences): the second-order loss increase of the error.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::Result;

/// Which sensitivity ranks the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Row weight MSE.
    Mse,
    /// Activation-weighted error `dW H dWᵀ`.
    Activation,
    /// Empirical Fisher-weighted error.
    Fisher,
}

impl Sensitivity {
    /// Every kind, for error messages.
    pub const NAMES: [&'static str; 3] = ["mse", "activation", "fisher"];

    /// The recipe name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mse => "mse",
            Self::Activation => "activation",
            Self::Fisher => "fisher",
        }
    }
}

/// What weighs a matrix's error, gathered on calibration tokens.
#[derive(Debug)]
pub enum Weighting<'a> {
    /// No weighting (`mse`).
    None,
    /// A full input Gram matrix `[in, in]`.
    Gram(&'a Tensor),
    /// Per-row counts `[rows]` (an embedding's one-hot inputs), plus an optional Gram matrix
    /// over the row's values (a tied lm_head).
    Embedding {
        /// Token counts.
        counts: &'a Tensor,
        /// The tied lm_head's input Gram matrix.
        head: Option<&'a Tensor>,
    },
    /// Per-weight Fisher diagonal `[rows, in]`.
    Fisher(&'a Tensor),
}

/// The sensitivity of each row of `w` `[rows, in]` when replaced by `q` (same shape). `w` may be
/// a block of a larger matrix starting at row `first_row`: per-row weightings (token counts,
/// the Fisher diagonal) are read at those rows.
pub fn row_errors(w: &Tensor, q: &Tensor, weighting: &Weighting, first_row: i64) -> Result<Vec<f64>> {
    let d = (w.to_kind(Kind::Float) - q).to_kind(Kind::Float);
    let rows = |t: &Tensor| t.narrow(0, first_row, d.size()[0]);
    let sq = |t: &Tensor| t.pow_tensor_scalar(2).sum_dim_intlist(-1, false, Kind::Double);
    let err = match weighting {
        Weighting::None => sq(&d),
        Weighting::Gram(h) => (d.matmul(h) * &d).sum_dim_intlist(-1, false, Kind::Double),
        Weighting::Embedding { counts, head } => {
            let lookup = sq(&d) * rows(counts).to_kind(Kind::Double);
            match head {
                Some(h) => lookup + (d.matmul(h) * &d).sum_dim_intlist(-1, false, Kind::Double),
                None => lookup,
            }
        }
        Weighting::Fisher(f) => (d.pow_tensor_scalar(2) * rows(f)).sum_dim_intlist(-1, false, Kind::Double),
    };
    Ok(Vec::<f64>::try_from(&err.to_device(tch::Device::Cpu))?)
}
