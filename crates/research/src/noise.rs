//! Keep decisions under noise: the relative-improvement bar, and the spread of repeated
//! baseline runs.

/// Whether `ppl` beats `best` by the required relative margin.
pub fn beats(ppl: f64, best: f64, min_rel_improvement: f64) -> bool {
    ppl.is_finite() && ppl < best * (1.0 - min_rel_improvement)
}

pub use autoqat_workspace::results::{mean, sigma};
