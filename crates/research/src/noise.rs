//! Keep decisions under noise: the relative-improvement bar, and the spread of repeated
//! baseline runs.

/// Whether `ppl` beats `best` by the required relative margin.
pub fn beats(ppl: f64, best: f64, min_rel_improvement: f64) -> bool {
    ppl.is_finite() && ppl < best * (1.0 - min_rel_improvement)
}

/// Mean of the values.
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Sample standard deviation (n - 1); `None` with fewer than two values.
pub fn sigma(v: &[f64]) -> Option<f64> {
    if v.len() < 2 {
        return None;
    }
    let m = mean(v);
    Some((v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt())
}
