//! The scalar path: any CPU and any scale granularity, including group sizes the SIMD paths do
//! not take. Each block is decoded once and reused for every activation row of the tile.

use std::ops::Range;

use crate::acts::{ActMode, Acts};
use crate::layout::{decode_block, PackedMatrix, BLOCK};

/// Activation rows per tile: their codes stay in cache while a row range's weights stream.
const TILE: usize = 64;

/// Computes `out[(r - rows.start) * n + j] = W[r] · x_j` for `r` in `rows`, `j < n`.
pub(crate) fn run(m: &PackedMatrix, a: &Acts, rows: Range<usize>, out: &mut [f32]) {
    let n = a.n();
    let mut codes = [0i8; BLOCK];
    for t0 in (0..n).step_by(TILE) {
        let t1 = n.min(t0 + TILE);
        for r in rows.clone() {
            let data = m.row_data(r);
            let ws = m.row_scales(r);
            let bb = m.kind().block_bytes();
            let o = &mut out[(r - rows.start) * n..(r - rows.start + 1) * n];
            o[t0..t1].fill(0.0);
            for b in 0..m.blocks() {
                decode_block(m.kind(), &data[b * bb..(b + 1) * bb], &mut codes);
                let len = BLOCK.min(m.cols() - b * BLOCK);
                for (j, y) in o.iter_mut().enumerate().take(t1).skip(t0) {
                    *y += match a.mode() {
                        ActMode::F32 => block_f32(m, ws, &codes[..len], &a.f_row(j)[b * BLOCK..], b),
                        _ => block_int(m, ws, &codes[..len], &a.q_row(j)[b * BLOCK..], a.scale_row(j)[b], b),
                    };
                }
            }
        }
    }
}

/// Block `b` of one row against int8 codes `q` with block scale `s`: integer sums over each
/// run of values sharing a weight scale, then one float multiply per run.
fn block_int(m: &PackedMatrix, ws: &[f32], codes: &[i8], q: &[i8], s: f32, b: usize) -> f32 {
    let mut total = 0.0f32;
    let mut unit = m.unit_of(b * BLOCK);
    let mut acc = 0i32;
    for (i, (&c, &v)) in codes.iter().zip(q).enumerate() {
        let u = m.unit_of(b * BLOCK + i);
        if u != unit {
            total += acc as f32 * ws[unit] * s;
            acc = 0;
            unit = u;
        }
        acc += i32::from(c) * i32::from(v);
    }
    total + acc as f32 * ws[unit] * s
}

/// Block `b` of one row against f32 values `x`, one multiply by the weight scale per run.
fn block_f32(m: &PackedMatrix, ws: &[f32], codes: &[i8], x: &[f32], b: usize) -> f32 {
    let mut total = 0.0f32;
    let mut unit = m.unit_of(b * BLOCK);
    let mut acc = 0.0f32;
    for (i, (&c, &v)) in codes.iter().zip(x).enumerate() {
        let u = m.unit_of(b * BLOCK + i);
        if u != unit {
            total += acc * ws[unit];
            acc = 0.0;
            unit = u;
        }
        acc += f32::from(c) * v;
    }
    total + acc * ws[unit]
}
