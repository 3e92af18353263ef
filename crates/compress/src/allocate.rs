//! rowmix: the kind of every row, chosen so that the artifact fills its budget.
//!
//! Every row starts at the cheapest allowed kind. Upgrading a row buys an error reduction for
//! extra bits; the allocation takes upgrades by benefit per extra bit, best first, while they
//! fit. For each row only the lower convex hull of its (bits, error) points is walked, so the
//! marginal benefit of a row's successive upgrades only falls and the greedy order is the
//! order of the exact fractional optimum.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::error::{CompressError, Result};
use crate::rows::RowKind;

/// One matrix's rows as the allocation sees them.
#[derive(Debug, Clone)]
pub struct MatrixScores {
    /// Values per row.
    pub in_dim: i64,
    /// `errors[k][r]`: the sensitivity of row `r` stored as `kinds[k]`.
    pub errors: Vec<Vec<f64>>,
}

/// An upgrade of one row along its hull.
#[derive(Debug)]
struct Step {
    ratio: f64,
    matrix: usize,
    row: usize,
    /// Index into the row's hull of the point this step reaches.
    to: usize,
}

impl PartialEq for Step {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Step {}
impl PartialOrd for Step {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Step {
    fn cmp(&self, other: &Self) -> Ordering {
        // Largest ratio first; ties broken by position so the result is deterministic.
        self.ratio
            .total_cmp(&other.ratio)
            .then_with(|| other.matrix.cmp(&self.matrix))
            .then_with(|| other.row.cmp(&self.row))
    }
}

/// Indices into `points` (bits ascending) of their lower convex hull, starting at the first.
fn hull(points: &[(i64, f64)]) -> Vec<usize> {
    let mut h: Vec<usize> = vec![0];
    for i in 1..points.len() {
        // A dearer point that is not better is never worth taking.
        if points[i].1 >= points[*h.last().unwrap_or(&0)].1 {
            continue;
        }
        while h.len() >= 2 {
            let (a, b) = (points[h[h.len() - 2]], points[h[h.len() - 1]]);
            let c = points[i];
            // b is above the segment a-c: its marginal benefit is below c's, drop it.
            let cross = (b.0 - a.0) as f64 * (c.1 - a.1) - (b.1 - a.1) * (c.0 - a.0) as f64;
            if cross <= 0.0 {
                h.pop();
            } else {
                break;
            }
        }
        h.push(i);
    }
    h
}

/// Bits of rows `(rows, in_dim)` all stored as `cheapest`: the floor every allocation starts from.
pub fn all_cheapest_bits(matrices: impl IntoIterator<Item = (i64, i64)>, cheapest: RowKind) -> i64 {
    matrices.into_iter().map(|(rows, in_dim)| rows * cheapest.row_bits(in_dim)).sum()
}

/// What to change when a budget cannot hold every row at `cheapest` (binary has nothing cheaper).
pub fn over_budget_hint(cheapest: RowKind) -> &'static str {
    if cheapest == RowKind::Binary {
        "raise budget.bits_per_param"
    } else {
        "allow a cheaper kind in allocate.kinds, or raise budget.bits_per_param"
    }
}

/// The kind of every row of every matrix, within `budget_bits` for all rows together, and with
/// at most `q4_cap` parameters in q4 rows when given (the track's rescue limit).
/// `kinds` are the allowed kinds, in the order of `MatrixScores::errors`.
pub fn allocate(
    mats: &[MatrixScores],
    kinds: &[RowKind],
    budget_bits: i64,
    q4_cap: Option<i64>,
) -> Result<Vec<Vec<RowKind>>> {
    let mut order: Vec<usize> = (0..kinds.len()).collect();
    order.sort_by_key(|&k| kinds[k]);
    let cheapest = kinds[order[0]];
    let floor = all_cheapest_bits(mats.iter().map(|m| (m.errors[0].len() as i64, m.in_dim)), cheapest);
    if floor > budget_bits {
        let hint = over_budget_hint(cheapest);
        if budget_bits <= 0 {
            return Err(CompressError::Budget(format!(
                "the budget leaves no bits for the quantized rows (files, headers and full-precision tensors take {} bits more than it allows) (hint: {hint})",
                -budget_bits
            )));
        }
        return Err(CompressError::Budget(format!(
            "the budget leaves {budget_bits} bits for the quantized rows but all-{cheapest} rows need {floor}, {} bits ({:.2}%) over (hint: {hint})",
            floor - budget_bits,
            100.0 * (floor - budget_bits) as f64 / budget_bits as f64
        )));
    }
    let mut left = budget_bits - floor;
    let mut q4_left = q4_cap.unwrap_or(i64::MAX);
    // Per matrix and row: the hull (indices into `order`) and where the row stands on it.
    let mut hulls: Vec<Vec<Vec<usize>>> = Vec::with_capacity(mats.len());
    let mut at: Vec<Vec<usize>> = Vec::with_capacity(mats.len());
    let mut heap = BinaryHeap::new();
    let point = |m: &MatrixScores, r: usize, k: usize| (kinds[k].row_bits(m.in_dim), m.errors[k][r]);
    for (mi, m) in mats.iter().enumerate() {
        let n_rows = m.errors[0].len();
        let mut mh = Vec::with_capacity(n_rows);
        for r in 0..n_rows {
            let pts: Vec<(i64, f64)> = order.iter().map(|&k| point(m, r, k)).collect();
            let h = hull(&pts);
            if h.len() > 1 {
                let (a, b) = (pts[h[0]], pts[h[1]]);
                heap.push(Step { ratio: (a.1 - b.1) / (b.0 - a.0) as f64, matrix: mi, row: r, to: 1 });
            }
            mh.push(h.into_iter().map(|i| order[i]).collect::<Vec<_>>());
        }
        at.push(vec![0; n_rows]);
        hulls.push(mh);
    }
    while let Some(step) = heap.pop() {
        let m = &mats[step.matrix];
        let h = &hulls[step.matrix][step.row];
        let (from, to) = (point(m, step.row, h[step.to - 1]), point(m, step.row, h[step.to]));
        let extra = to.0 - from.0;
        let (was_q4, is_q4) = (kinds[h[step.to - 1]] == RowKind::Q4, kinds[h[step.to]] == RowKind::Q4);
        let q4_change = (i64::from(is_q4) - i64::from(was_q4)) * m.in_dim;
        if extra > left || q4_change > q4_left {
            // This row stops here; cheaper upgrades of other rows may still fit.
            continue;
        }
        left -= extra;
        q4_left -= q4_change;
        at[step.matrix][step.row] = step.to;
        if step.to + 1 < h.len() {
            let next = point(m, step.row, h[step.to + 1]);
            heap.push(Step { ratio: (to.1 - next.1) / (next.0 - to.0) as f64, to: step.to + 1, ..step });
        }
    }
    Ok(hulls.iter().zip(&at).map(|(mh, ma)| mh.iter().zip(ma).map(|(h, &i)| kinds[h[i]]).collect()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(kinds: &[Vec<RowKind>], in_dim: i64) -> i64 {
        kinds.iter().flatten().map(|k| k.row_bits(in_dim)).sum()
    }

    #[test]
    fn upgrades_the_most_sensitive_rows_first_and_stays_in_budget() {
        let kinds = [RowKind::Ternary, RowKind::Q4];
        // Row 2 gains most from q4, then row 0; row 1 gains nothing.
        let m = MatrixScores { in_dim: 128, errors: vec![vec![5.0, 1.0, 9.0], vec![1.0, 1.0, 0.5]] };
        let t = RowKind::Ternary.row_bits(128);
        let q = RowKind::Q4.row_bits(128);
        let got = allocate(std::slice::from_ref(&m), &kinds, 3 * t + (q - t), None).unwrap();
        assert_eq!(got[0], vec![RowKind::Ternary, RowKind::Ternary, RowKind::Q4]);
        let got = allocate(std::slice::from_ref(&m), &kinds, 3 * t + 2 * (q - t), None).unwrap();
        assert_eq!(got[0], vec![RowKind::Q4, RowKind::Ternary, RowKind::Q4]);
        assert!(bits(&got, 128) <= 3 * t + 2 * (q - t));
        // Row 1 never improves, so even an unlimited budget leaves it ternary.
        let got = allocate(std::slice::from_ref(&m), &kinds, i64::MAX / 2, None).unwrap();
        assert_eq!(got[0][1], RowKind::Ternary);
        // The track's rescue cap: one q4 row of 128 parameters at most, whatever the budget;
        // it goes to the row that gains most.
        let got = allocate(&[m], &kinds, i64::MAX / 2, Some(200)).unwrap();
        assert_eq!(got[0], vec![RowKind::Ternary, RowKind::Ternary, RowKind::Q4]);
    }

    #[test]
    fn a_budget_below_the_cheapest_kind_says_by_how_much() {
        let m = MatrixScores { in_dim: 64, errors: vec![vec![1.0; 4]] };
        let need = 4 * RowKind::Ternary.row_bits(64);
        let err = allocate(&[m], &[RowKind::Ternary], need - 10, None).unwrap_err().to_string();
        assert!(err.contains("10 bits"), "{err}");
    }

    #[test]
    fn hull_skips_points_that_are_not_worth_their_bits() {
        // (bits, err): the middle point lies above the chord, the last is not better.
        let pts = [(0, 10.0), (10, 9.5), (20, 0.0), (30, 1.0)];
        assert_eq!(hull(&pts), vec![0, 2]);
    }
}
