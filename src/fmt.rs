//! How numbers are shown to people, the same in every command's output.

/// A perplexity with as many decimals as its size deserves.
pub fn ppl(p: f64) -> String {
    if p >= 1000.0 {
        format!("{p:.0}")
    } else if p >= 100.0 {
        format!("{p:.1}")
    } else {
        format!("{p:.3}")
    }
}

/// [`ppl`], or `-` when there is none.
pub fn ppl_or_dash(p: Option<f64>) -> String {
    p.map(ppl).unwrap_or_else(|| "-".into())
}
