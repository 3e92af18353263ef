//! The AVX2 + FMA path: 32 codes per register, `maddubs` (u8 weights x i8 activations) for
//! int8 activations, FMA over codes widened to f32 for exact activations.

use std::arch::x86_64::*;
use std::ops::Range;

use crate::acts::{finish_int, Acts};
use crate::layout::{flush, kind, prefetch, PackedMatrix, BLOCK, PREFETCH};

/// Activation rows per tile: their codes stay in cache while a row range's weights stream.
const TILE: usize = 64;

/// Bit `i % 8` of byte `i`, for expanding binary bits to byte masks.
static BIT_OF_BYTE: [u8; 32] = [
    1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128,
];
/// Byte `i` takes source byte `i / 8` (within each 128-bit lane the word repeats, so lane 1
/// indexes bytes 2 and 3 of the same word).
static BYTE_OF_BIT: [u8; 32] =
    [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];

/// The stored digit minus the code, removed from the row sum by [`finish_int`].
const fn offset(k: u8) -> i32 {
    match k {
        kind::BINARY | kind::TERNARY => 1,
        kind::Q4 => 8,
        _ => 0,
    }
}

/// Computes `out[(r - rows.start) * n + j] = W[r] · x_j` for `r` in `rows`, `j < n`.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and `m` must be runnable by SIMD paths (`flush_mode`
/// is Some); `out` holds `rows.len() * a.n()` values and `a` has `m`'s columns.
pub(crate) unsafe fn run(m: &PackedMatrix, a: &Acts, f: u8, rows: Range<usize>, out: &mut [f32]) {
    macro_rules! go {
        ($k:expr) => {
            match (f, a.mode().is_int8()) {
                (flush::ROW_INT, true) => tiles::<{ $k }, { flush::ROW_INT }, true>(m, a, rows, out),
                (flush::ROW, true) => tiles::<{ $k }, { flush::ROW }, true>(m, a, rows, out),
                (flush::BLOCK, true) => tiles::<{ $k }, { flush::BLOCK }, true>(m, a, rows, out),
                (_, true) => tiles::<{ $k }, { flush::HALF }, true>(m, a, rows, out),
                (flush::ROW_INT | flush::ROW, false) => tiles::<{ $k }, { flush::ROW }, false>(m, a, rows, out),
                (flush::BLOCK, false) => tiles::<{ $k }, { flush::BLOCK }, false>(m, a, rows, out),
                (_, false) => tiles::<{ $k }, { flush::HALF }, false>(m, a, rows, out),
            }
        };
    }
    match m.kind().id() {
        kind::BINARY => go!(kind::BINARY),
        kind::TERNARY => go!(kind::TERNARY),
        kind::Q4 => go!(kind::Q4),
        _ => go!(kind::Q8),
    }
}

// SAFETY (all functions below): callers reach them only through `run`, whose contract
// guarantees AVX2+FMA; pointer reads stay within one packed block (`block_bytes(K)` bytes at a
// block start of a row) or one block of padded activations (128 values at a block start).

#[target_feature(enable = "avx2,fma")]
unsafe fn tiles<const K: u8, const F: u8, const INT: bool>(
    m: &PackedMatrix,
    a: &Acts,
    rows: Range<usize>,
    out: &mut [f32],
) {
    let n = a.n();
    for t0 in (0..n).step_by(TILE) {
        let t1 = n.min(t0 + TILE);
        for r in rows.clone() {
            let o = &mut out[(r - rows.start) * n..(r - rows.start + 1) * n];
            let mut j = t0;
            while j + 4 <= t1 {
                row::<K, F, INT, 4>(m, r, a, j, &mut o[j..j + 4]);
                j += 4;
            }
            match t1 - j {
                1 => row::<K, F, INT, 1>(m, r, a, j, &mut o[j..j + 1]),
                2 => row::<K, F, INT, 2>(m, r, a, j, &mut o[j..j + 2]),
                3 => row::<K, F, INT, 3>(m, r, a, j, &mut o[j..j + 3]),
                _ => {}
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn row<const K: u8, const F: u8, const INT: bool, const N: usize>(
    m: &PackedMatrix,
    r: usize,
    a: &Acts,
    j0: usize,
    out: &mut [f32],
) {
    if INT {
        row_int::<K, F, N>(m, r, a, j0, out)
    } else {
        row_f32::<K, F, N>(m, r, a, j0, out)
    }
}

/// Unsigned digits of one block as four registers of 32 consecutive values (`u`), and for q8
/// the signed codes (`s`) whose signs move onto the activations.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn decode<const K: u8>(p: *const u8) -> ([__m256i; 4], [__m256i; 4]) {
    let z = _mm256_setzero_si256();
    match K {
        kind::TERNARY => {
            let v = _mm256_loadu_si256(p.cast());
            let m3 = _mm256_set1_epi8(3);
            let u = [
                _mm256_and_si256(v, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(v), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(v), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(v), m3),
            ];
            (u, [z; 4])
        }
        kind::BINARY => {
            let bits = _mm256_loadu_si256(BIT_OF_BYTE.as_ptr().cast());
            let idx = _mm256_loadu_si256(BYTE_OF_BIT.as_ptr().cast());
            let two = _mm256_set1_epi8(2);
            let mut u = [z; 4];
            for (k, u) in u.iter_mut().enumerate() {
                let w = p.add(4 * k).cast::<i32>().read_unaligned();
                let spread = _mm256_shuffle_epi8(_mm256_set1_epi32(w), idx);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits);
                *u = _mm256_and_si256(set, two);
            }
            (u, [z; 4])
        }
        kind::Q4 => {
            let lo = _mm256_loadu_si256(p.cast());
            let hi = _mm256_loadu_si256(p.add(32).cast());
            let mf = _mm256_set1_epi8(15);
            let u = [
                _mm256_and_si256(lo, mf),
                _mm256_and_si256(_mm256_srli_epi16::<4>(lo), mf),
                _mm256_and_si256(hi, mf),
                _mm256_and_si256(_mm256_srli_epi16::<4>(hi), mf),
            ];
            (u, [z; 4])
        }
        _ => {
            let s = [
                _mm256_loadu_si256(p.cast()),
                _mm256_loadu_si256(p.add(32).cast()),
                _mm256_loadu_si256(p.add(64).cast()),
                _mm256_loadu_si256(p.add(96).cast()),
            ];
            ([_mm256_abs_epi8(s[0]), _mm256_abs_epi8(s[1]), _mm256_abs_epi8(s[2]), _mm256_abs_epi8(s[3])], s)
        }
    }
}

/// Integer dot products of a decoded block with int8 activations at `x`: values 0..64 and
/// 64..128 as eight i32 lanes each.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot<const K: u8>(u: &[__m256i; 4], s: &[__m256i; 4], x: *const i8) -> (__m256i, __m256i) {
    let ones = _mm256_set1_epi16(1);
    let xs = [
        _mm256_loadu_si256(x.cast()),
        _mm256_loadu_si256(x.add(32).cast()),
        _mm256_loadu_si256(x.add(64).cast()),
        _mm256_loadu_si256(x.add(96).cast()),
    ];
    if K == kind::Q8 {
        // |w| * sign(x, w) = w * x; a pair reaches 2 * 127 * 127, so widen each chunk at once.
        let mut p = [_mm256_setzero_si256(); 4];
        for k in 0..4 {
            p[k] = _mm256_madd_epi16(_mm256_maddubs_epi16(u[k], _mm256_sign_epi8(xs[k], s[k])), ones);
        }
        (_mm256_add_epi32(p[0], p[1]), _mm256_add_epi32(p[2], p[3]))
    } else {
        // Digits are at most 15, so two chunks' i16 pair sums (<= 4 * 15 * 127) cannot saturate.
        let mut p = [_mm256_setzero_si256(); 4];
        for k in 0..4 {
            p[k] = _mm256_maddubs_epi16(u[k], xs[k]);
        }
        (_mm256_madd_epi16(_mm256_add_epi16(p[0], p[1]), ones), _mm256_madd_epi16(_mm256_add_epi16(p[2], p[3]), ones))
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hsum_epi32(v: __m256i) -> i64 {
    let mut lanes = [0i32; 8];
    _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v);
    lanes.iter().map(|&l| i64::from(l)).sum()
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn row_int<const K: u8, const F: u8, const N: usize>(
    m: &PackedMatrix,
    r: usize,
    a: &Acts,
    j0: usize,
    out: &mut [f32],
) {
    let data = m.row_data(r).as_ptr();
    let ws = m.row_scales(r);
    let bb = kind::block_bytes(K);
    let xs: [*const i8; N] = std::array::from_fn(|i| a.q_row(j0 + i).as_ptr());
    let asc: [&[f32]; N] = std::array::from_fn(|i| a.scale_row(j0 + i));
    let mut iacc = [_mm256_setzero_si256(); N];
    let mut facc = [_mm256_setzero_ps(); N];
    for b in 0..m.blocks() {
        prefetch(data.wrapping_add(b * bb + PREFETCH));
        let (u, s) = decode::<K>(data.add(b * bb));
        for i in 0..N {
            let (h0, h1) = dot::<K>(&u, &s, xs[i].add(b * BLOCK));
            match F {
                flush::ROW_INT => iacc[i] = _mm256_add_epi32(iacc[i], _mm256_add_epi32(h0, h1)),
                flush::ROW => {
                    let whole = _mm256_cvtepi32_ps(_mm256_add_epi32(h0, h1));
                    facc[i] = _mm256_fmadd_ps(whole, _mm256_set1_ps(asc[i][b]), facc[i]);
                }
                flush::BLOCK => {
                    let whole = _mm256_cvtepi32_ps(_mm256_add_epi32(h0, h1));
                    facc[i] = _mm256_fmadd_ps(whole, _mm256_set1_ps(ws[b] * asc[i][b]), facc[i]);
                }
                _ => {
                    let f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h0), _mm256_set1_ps(ws[2 * b] * asc[i][b]), facc[i]);
                    facc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h1), _mm256_set1_ps(ws[2 * b + 1] * asc[i][b]), f0);
                }
            }
        }
    }
    for (i, o) in out.iter_mut().enumerate().take(N) {
        *o = finish_int(m, r, a, j0 + i, F, offset(K), (hsum_epi32(iacc[i]), hsum_ps(facc[i])));
    }
}

/// Signed codes of one block into `out`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn codes<const K: u8>(p: *const u8, out: &mut [i8; BLOCK]) {
    let (u, s) = decode::<K>(p);
    let off = _mm256_set1_epi8(offset(K) as i8);
    for k in 0..4 {
        let c = if K == kind::Q8 { s[k] } else { _mm256_sub_epi8(u[k], off) };
        _mm256_storeu_si256(out.as_mut_ptr().add(32 * k).cast(), c);
    }
}

/// Σ w·x over 64 values, in two chains so FMA latency does not serialize the block.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn half_f32(w: *const f32, x: *const f32) -> __m256 {
    let mut c = [_mm256_setzero_ps(); 2];
    for v in 0..8 {
        c[v % 2] = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(8 * v)), _mm256_loadu_ps(x.add(8 * v)), c[v % 2]);
    }
    _mm256_add_ps(c[0], c[1])
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn row_f32<const K: u8, const F: u8, const N: usize>(
    m: &PackedMatrix,
    r: usize,
    a: &Acts,
    j0: usize,
    out: &mut [f32],
) {
    let data = m.row_data(r).as_ptr();
    let ws = m.row_scales(r);
    let bb = kind::block_bytes(K);
    let xs: [*const f32; N] = std::array::from_fn(|i| a.f_row(j0 + i).as_ptr());
    let mut acc = [_mm256_setzero_ps(); N];
    let mut c8 = [0i8; BLOCK];
    let mut wf = [0f32; BLOCK];
    for b in 0..m.blocks() {
        prefetch(data.wrapping_add(b * bb + PREFETCH));
        codes::<K>(data.add(b * bb), &mut c8);
        for v in 0..BLOCK / 8 {
            let w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(c8.as_ptr().add(8 * v).cast())));
            _mm256_storeu_ps(wf.as_mut_ptr().add(8 * v), w);
        }
        for i in 0..N {
            let x = xs[i].add(b * BLOCK);
            let (h0, h1) = (half_f32(wf.as_ptr(), x), half_f32(wf.as_ptr().add(64), x.add(64)));
            acc[i] = match F {
                flush::BLOCK => _mm256_fmadd_ps(_mm256_add_ps(h0, h1), _mm256_set1_ps(ws[b]), acc[i]),
                flush::HALF => _mm256_fmadd_ps(
                    h1,
                    _mm256_set1_ps(ws[2 * b + 1]),
                    _mm256_fmadd_ps(h0, _mm256_set1_ps(ws[2 * b]), acc[i]),
                ),
                _ => _mm256_add_ps(acc[i], _mm256_add_ps(h0, h1)),
            };
        }
    }
    for (i, o) in out.iter_mut().enumerate().take(N) {
        let s = hsum_ps(acc[i]);
        *o = if F == flush::BLOCK || F == flush::HALF { s } else { s * ws[0] };
    }
}

/// Dense f32 rows: `out[i] = w[i] · x` for each row `w[i]` of `cols` values (the baseline).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `w` holds `out.len() * cols` values and `x` holds `cols`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dense_rows(w: &[f32], cols: usize, x: &[f32], out: &mut [f32]) {
    let body = cols / 32 * 32;
    for (o, row) in out.iter_mut().zip(w.chunks_exact(cols)) {
        let (wp, xp) = (row.as_ptr(), x.as_ptr());
        let mut c = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < body {
            for (k, c) in c.iter_mut().enumerate() {
                *c = _mm256_fmadd_ps(_mm256_loadu_ps(wp.add(i + 8 * k)), _mm256_loadu_ps(xp.add(i + 8 * k)), *c);
            }
            i += 32;
        }
        let s = _mm256_add_ps(_mm256_add_ps(c[0], c[1]), _mm256_add_ps(c[2], c[3]));
        *o = hsum_ps(s) + row[body..].iter().zip(&x[body..]).map(|(a, b)| a * b).sum::<f32>();
    }
}
