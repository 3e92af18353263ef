//! Activations prepared for the kernels: padded to whole blocks and, in the int8 modes,
//! quantized with absmax scales plus the sums the kernels need to remove the weight offsets.

use crate::error::{check_len, KernelError, Result};
use crate::layout::{BLOCK, HALF};

/// How the kernels consume activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActMode {
    /// Exact f32 activations; the packed weights are decoded to f32 in registers.
    F32,
    /// int8 with one absmax scale per activation row (autoqat's per-token quantization).
    Int8PerVector,
    /// int8 with one absmax scale per 128-value block (llama.cpp Q8_K style, finer).
    Int8PerBlock,
}

impl ActMode {
    /// Whether the activations are quantized to int8.
    pub fn is_int8(self) -> bool {
        self != Self::F32
    }
}

/// Smallest absmax, as in autoqat's activation quantizer, so a zero vector does not divide by 0.
const AMAX_EPS: f32 = 1e-5;

/// A batch of `n` activation rows of `cols` values, ready for the kernels.
#[derive(Debug, Clone)]
pub struct Acts {
    mode: ActMode,
    n: usize,
    cols: usize,
    blocks: usize,
    /// `[n, blocks * BLOCK]` f32, zero-padded (F32 mode only).
    pub(crate) f: Vec<f32>,
    /// `[n, blocks * BLOCK]` int8 codes, zero-padded (int8 modes only).
    pub(crate) q: Vec<i8>,
    /// `[n, blocks]` dequantization multiplier of each block (equal along a row per vector).
    pub(crate) scale: Vec<f32>,
    /// `[n, 2 * blocks]` sum of the codes of each 64 values.
    pub(crate) half_sum: Vec<i32>,
    /// `[n]` sum of the codes of the row.
    pub(crate) total: Vec<i32>,
    /// `[n]` Σ over blocks of scale × code sum: the offset correction for per-row weights.
    pub(crate) scaled_sum: Vec<f32>,
}

impl Acts {
    /// Prepares `x` (`[n, cols]` row-major) for `mode`.
    pub fn new(x: &[f32], n: usize, cols: usize, mode: ActMode) -> Result<Acts> {
        if n == 0 || cols == 0 {
            return Err(KernelError::Empty { what: "activations", rows: n, cols });
        }
        check_len("activations", n * cols, x.len())?;
        let blocks = cols.div_ceil(BLOCK);
        let pcols = blocks * BLOCK;
        let mut a = Acts {
            mode,
            n,
            cols,
            blocks,
            f: Vec::new(),
            q: Vec::new(),
            scale: Vec::new(),
            half_sum: Vec::new(),
            total: Vec::new(),
            scaled_sum: Vec::new(),
        };
        if mode == ActMode::F32 {
            a.f = vec![0.0; n * pcols];
            for (dst, src) in a.f.chunks_exact_mut(pcols).zip(x.chunks_exact(cols)) {
                dst[..cols].copy_from_slice(src);
            }
            return Ok(a);
        }
        a.q = vec![0; n * pcols];
        a.scale = vec![0.0; n * blocks];
        a.half_sum = vec![0; n * 2 * blocks];
        a.total = vec![0; n];
        a.scaled_sum = vec![0.0; n];
        for (j, src) in x.chunks_exact(cols).enumerate() {
            let q = &mut a.q[j * pcols..j * pcols + cols];
            let scales = &mut a.scale[j * blocks..(j + 1) * blocks];
            match mode {
                ActMode::Int8PerVector => {
                    let s = quantize(src, q);
                    scales.fill(s);
                }
                _ => {
                    for ((s, src), q) in scales.iter_mut().zip(src.chunks(BLOCK)).zip(q.chunks_mut(BLOCK)) {
                        *s = quantize(src, q);
                    }
                }
            }
            let q = &a.q[j * pcols..(j + 1) * pcols];
            let halves = &mut a.half_sum[j * 2 * blocks..(j + 1) * 2 * blocks];
            for (h, chunk) in halves.iter_mut().zip(q.chunks_exact(HALF)) {
                *h = chunk.iter().map(|&v| i32::from(v)).sum();
            }
            a.total[j] = halves.iter().sum();
            a.scaled_sum[j] = scales.iter().zip(halves.chunks_exact(2)).map(|(s, h)| s * (h[0] + h[1]) as f32).sum();
        }
        Ok(a)
    }

    /// The activation mode.
    pub fn mode(&self) -> ActMode {
        self.mode
    }

    /// Activation rows.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Values per activation row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The values the kernels multiply by, `[n, cols]`: the dequantized int8 codes, or `x`.
    pub fn values(&self) -> Vec<f32> {
        let pcols = self.blocks * BLOCK;
        (0..self.n)
            .flat_map(|j| (0..self.cols).map(move |c| (j, c)))
            .map(|(j, c)| match self.mode {
                ActMode::F32 => self.f[j * pcols + c],
                _ => f32::from(self.q[j * pcols + c]) * self.scale[j * self.blocks + c / BLOCK],
            })
            .collect()
    }

    /// The int8 codes of row `j` (padded), for the kernels.
    pub(crate) fn q_row(&self, j: usize) -> &[i8] {
        let pcols = self.blocks * BLOCK;
        &self.q[j * pcols..(j + 1) * pcols]
    }

    /// The f32 values of row `j` (padded), for the kernels.
    pub(crate) fn f_row(&self, j: usize) -> &[f32] {
        let pcols = self.blocks * BLOCK;
        &self.f[j * pcols..(j + 1) * pcols]
    }

    /// Block scales of row `j`.
    pub(crate) fn scale_row(&self, j: usize) -> &[f32] {
        &self.scale[j * self.blocks..(j + 1) * self.blocks]
    }

    /// Half-block code sums of row `j`.
    pub(crate) fn half_sum_row(&self, j: usize) -> &[i32] {
        &self.half_sum[j * 2 * self.blocks..(j + 1) * 2 * self.blocks]
    }
}

/// Quantizes `src` into `dst` with one absmax scale; returns the dequantization multiplier.
/// Codes stay in [-127, 127] (never -128), which the AVX2 `sign` trick for q8 weights needs.
fn quantize(src: &[f32], dst: &mut [i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected.
        return unsafe { quantize_avx2(src, dst) };
    }
    quantize_body(src, dst)
}

/// The same code compiled for AVX2: rounding becomes one vector instruction instead of a libm
/// call per value (`rintf`, measured at 2.6% of a decode). Same results: ties to even either way.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(src: &[f32], dst: &mut [i8]) -> f32 {
    quantize_body(src, dst)
}

#[inline(always)]
fn quantize_body(src: &[f32], dst: &mut [i8]) -> f32 {
    let amax = src.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(AMAX_EPS);
    let inv = 127.0 / amax;
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    1.0 / inv
}

/// The dot product of row `r` of `m` with activation row `j` from the SIMD accumulators:
/// `isum` (flush mode ROW_INT) or `fsum` (the others), both taken over the stored digits, so
/// `offset * Σ x` (weighted by the scales that multiplied each block) is removed here.
pub(crate) fn finish_int(
    m: &crate::layout::PackedMatrix,
    r: usize,
    a: &Acts,
    j: usize,
    f: u8,
    offset: i32,
    (isum, fsum): (i64, f32),
) -> f32 {
    use crate::layout::flush;
    let ws = m.row_scales(r);
    let asc = a.scale_row(j);
    let hs = a.half_sum_row(j);
    let off = offset as f32;
    match f {
        flush::ROW_INT => (isum - i64::from(offset) * i64::from(a.total[j])) as f32 * ws[0] * asc[0],
        flush::ROW => (fsum - off * a.scaled_sum[j]) * ws[0],
        _ if offset == 0 => fsum,
        flush::BLOCK => {
            let corr: f32 =
                ws.iter().zip(asc).zip(hs.chunks_exact(2)).map(|((w, s), h)| w * s * (h[0] + h[1]) as f32).sum();
            fsum - off * corr
        }
        _ => {
            let corr: f32 = ws.iter().zip(hs).enumerate().map(|(h, (w, &q))| w * asc[h / 2] * q as f32).sum();
            fsum - off * corr
        }
    }
}
