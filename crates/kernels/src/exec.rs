//! [`Kernels`]: the chosen path plus the thread pool, and the products it runs; [`MixedRows`]:
//! a matrix whose rows have different kinds.

use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use half::f16;

use crate::acts::{ActMode, Acts};
use crate::error::{check_len, KernelError, Result};
use crate::layout::{flush_mode, PackedMatrix, WeightKind};
use crate::path::KernelPath;
use crate::pool::Pool;
use crate::portable;

/// Below this many weight bytes a batch-1 product runs on one thread: waking a worker and
/// sharing the output costs more than splitting saves.
const SPLIT_MIN_BYTES: usize = 16 << 10;

/// A kernel path and a persistent pool of `threads` workers (the caller counts as one).
#[derive(Debug)]
pub struct Kernels {
    path: KernelPath,
    pool: Pool,
}

impl Kernels {
    /// Kernels on the default path ([`KernelPath::default_path`]) with `threads` threads.
    pub fn new(threads: usize) -> Kernels {
        Kernels { path: KernelPath::default_path(), pool: Pool::new(threads) }
    }

    /// Kernels on `path`, or an error when this CPU lacks it.
    pub fn with_path(path: KernelPath, threads: usize) -> Result<Kernels> {
        if !path.supported() {
            return Err(KernelError::Unsupported(path));
        }
        Ok(Kernels { path, pool: Pool::new(threads) })
    }

    /// The path in use (matrices with group sizes that are not multiples of 64 use the portable
    /// kernels whatever this says).
    pub fn path(&self) -> KernelPath {
        self.path
    }

    /// Threads a product is split over.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// `y = W x` for one activation vector `x` (`cols`), `y` (`rows`).
    pub fn matvec(&self, m: &PackedMatrix, x: &[f32], mode: ActMode, y: &mut [f32]) -> Result<()> {
        let a = Acts::new(x, 1, m.cols(), mode)?;
        self.matmul_acts(m, &a, y)
    }

    /// `y = x Wᵀ` for `n` activation rows: `x` is `[n, cols]`, `y` is `[n, rows]`, row-major.
    pub fn matmul(&self, m: &PackedMatrix, x: &[f32], n: usize, mode: ActMode, y: &mut [f32]) -> Result<()> {
        let a = Acts::new(x, n, m.cols(), mode)?;
        self.matmul_acts(m, &a, y)
    }

    /// [`Kernels::matmul`] with activations prepared once (several matrices sharing an input,
    /// such as q/k/v, quantize it once).
    pub fn matmul_acts(&self, m: &PackedMatrix, a: &Acts, y: &mut [f32]) -> Result<()> {
        if a.cols() != m.cols() {
            return Err(KernelError::Cols { matrix: m.cols(), acts: a.cols() });
        }
        check_len("output", a.n() * m.rows(), y.len())?;
        let (path, f) = match flush_mode(m, a.mode()) {
            Some(f) => (self.path, f),
            None => (KernelPath::Portable, 0),
        };
        let compute = |rows: Range<usize>, out: &mut [f32]| match path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `with_path`/`new` only hold supported paths; `flush_mode` returned Some, so
            // the SIMD kernels accept the matrix; shapes were checked above; `out` is
            // `rows.len() * n` long (see `split`).
            KernelPath::Avx2 => unsafe { crate::avx2::run(m, a, f, rows, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as for AVX2.
            KernelPath::Avx512 => unsafe { crate::avx512::bw::run(m, a, f, rows, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as for AVX2.
            KernelPath::Avx512Vnni => unsafe { crate::avx512::vnni::run(m, a, f, rows, out) },
            _ => portable::run(m, a, rows, out),
        };
        let small = a.n() == 1 && m.bytes() < SPLIT_MIN_BYTES;
        let parts = if small { 1 } else { self.chunks(m.rows()) };
        self.split(m.rows(), a.n(), parts, y, &compute);
        Ok(())
    }

    /// Chunks to split `rows` into: a few per thread, so a thread the OS has descheduled leaves
    /// little for the others to wait for, but at least 8 rows each.
    fn chunks(&self, rows: usize) -> usize {
        if self.threads() == 1 {
            return 1;
        }
        (4 * self.threads()).min(rows.div_ceil(8))
    }

    /// Splits `rows` into `parts` contiguous ranges run on the pool; `compute(range, out)` fills
    /// `out[(r - range.start) * n + j]`, which lands in `y[j * rows + r]`.
    fn split(
        &self,
        rows: usize,
        n: usize,
        parts: usize,
        y: &mut [f32],
        compute: &(dyn Fn(Range<usize>, &mut [f32]) + Sync),
    ) {
        let chunk = rows.div_ceil(parts.max(1));
        if parts <= 1 {
            if n == 1 {
                compute(0..rows, y);
            } else {
                let mut t = vec![0.0; rows * n];
                compute(0..rows, &mut t);
                transpose_into(&t, rows, n, y);
            }
            return;
        }
        let mut t = if n == 1 { Vec::new() } else { vec![0.0; rows * n] };
        {
            let target: &mut [f32] = if n == 1 { y } else { &mut t };
            // One lock per part, taken once and never contended: the safe way to hand each
            // worker its own slice of the output.
            let slices: Vec<Mutex<&mut [f32]>> = target.chunks_mut(chunk * n).map(Mutex::new).collect();
            self.pool.run(slices.len(), &|part| {
                if let Some(slot) = slices.get(part) {
                    let mut out = slot.lock().unwrap_or_else(PoisonError::into_inner);
                    let start = part * chunk;
                    compute(start..(start + chunk).min(rows), &mut out);
                }
            });
        }
        if n > 1 {
            transpose_into(&t, rows, n, y);
        }
    }

    /// `y = W x` for a mixed-kind matrix.
    pub fn mixed_matvec(&self, m: &MixedRows, x: &[f32], mode: ActMode, y: &mut [f32]) -> Result<()> {
        let a = Acts::new(x, 1, m.cols(), mode)?;
        self.mixed_matmul_acts(m, &a, y)
    }

    /// `y = x Wᵀ` (`[n, rows]`) for a mixed-kind matrix and prepared activations: one product
    /// per kind, scattered into the rows of that kind.
    pub fn mixed_matmul_acts(&self, m: &MixedRows, a: &Acts, y: &mut [f32]) -> Result<()> {
        if a.cols() != m.cols() {
            return Err(KernelError::Cols { matrix: m.cols(), acts: a.cols() });
        }
        let n = a.n();
        check_len("output", n * m.rows(), y.len())?;
        let mut part_y = Vec::new();
        for (pm, idx) in &m.parts {
            part_y.clear();
            part_y.resize(n * pm.rows(), 0.0);
            self.matmul_acts(pm, a, &mut part_y)?;
            for j in 0..n {
                let src = &part_y[j * pm.rows()..(j + 1) * pm.rows()];
                let dst = &mut y[j * m.rows()..(j + 1) * m.rows()];
                for (&r, &v) in idx.iter().zip(src) {
                    dst[r] = v;
                }
            }
        }
        Ok(())
    }

    /// Dense f32 `y = W x` (`w` `[rows, cols]` row-major): the baseline the packed kernels are
    /// measured against (AVX2+FMA when the path allows, scalar otherwise).
    pub fn dense_matvec(&self, w: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
        if rows == 0 || cols == 0 {
            return Err(KernelError::Empty { what: "matrix", rows, cols });
        }
        check_len("dense weights", rows * cols, w.len())?;
        check_len("activations", cols, x.len())?;
        check_len("output", rows, y.len())?;
        let path = self.path;
        let compute = |range: Range<usize>, out: &mut [f32]| {
            let w = &w[range.start * cols..range.end * cols];
            match path {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: every path above portable implies AVX2+FMA, checked at construction;
                // `w` is `out.len() * cols` long and `x` is `cols` long.
                KernelPath::Avx2 | KernelPath::Avx512 | KernelPath::Avx512Vnni => unsafe {
                    crate::avx2::dense_rows(w, cols, x, out)
                },
                _ => {
                    for (o, row) in out.iter_mut().zip(w.chunks_exact(cols)) {
                        *o = row.iter().zip(x).map(|(a, b)| a * b).sum();
                    }
                }
            }
        };
        let parts = if rows * cols * 4 < SPLIT_MIN_BYTES { 1 } else { self.chunks(rows) };
        self.split(rows, 1, parts, y, &compute);
        Ok(())
    }
}

/// `y[j * rows + r] = t[r * n + j]`.
fn transpose_into(t: &[f32], rows: usize, n: usize, y: &mut [f32]) {
    for (r, row) in t.chunks_exact(n).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            y[j * rows + r] = v;
        }
    }
}

/// A matrix whose rows have different kinds (the compression track): one [`PackedMatrix`] per
/// kind present and the output rows it fills.
#[derive(Debug, Clone)]
pub struct MixedRows {
    rows: usize,
    cols: usize,
    parts: Vec<(PackedMatrix, Vec<usize>)>,
}

impl MixedRows {
    /// Joins per-kind matrices: `parts[i].1` lists the output rows of `parts[i].0`'s rows, in
    /// order; together they must cover `0..rows` exactly once, with equal columns.
    pub fn new(rows: usize, parts: Vec<(PackedMatrix, Vec<usize>)>) -> Result<MixedRows> {
        let cols = parts.first().map(|(m, _)| m.cols()).ok_or_else(|| KernelError::Rows("no parts".into()))?;
        let mut seen = vec![false; rows];
        for (m, idx) in &parts {
            if m.cols() != cols {
                return Err(KernelError::Cols { matrix: cols, acts: m.cols() });
            }
            check_len("mixed row indices", m.rows(), idx.len())?;
            for &r in idx {
                match seen.get_mut(r) {
                    Some(s) if !*s => *s = true,
                    Some(_) => return Err(KernelError::Rows(format!("row {r} appears twice"))),
                    None => return Err(KernelError::Rows(format!("row {r} is outside 0..{rows}"))),
                }
            }
        }
        if let Some(r) = seen.iter().position(|s| !s) {
            return Err(KernelError::Rows(format!("row {r} has no kind")));
        }
        Ok(MixedRows { rows, cols, parts })
    }

    /// Repacks a compression-artifact matrix: `row_kind` holds the 2-bit kind of each row (four
    /// a byte, LSB first); `kinds` gives, per kind present, its `P.<kind>.codes` bytes and
    /// `P.<kind>.scales` f16 values, whose rows are that kind's rows in increasing order.
    pub fn from_artifact(
        rows: usize,
        cols: usize,
        row_kind: &[u8],
        kinds: &[(WeightKind, &[u8], &[f16])],
    ) -> Result<MixedRows> {
        check_len("row_kind bytes", rows.div_ceil(4), row_kind.len())?;
        let mut of_kind: Vec<(WeightKind, Vec<usize>)> = WeightKind::ALL.iter().map(|&k| (k, Vec::new())).collect();
        for r in 0..rows {
            let code = (row_kind[r / 4] >> (2 * (r % 4))) & 3;
            let k = WeightKind::from_row_kind(code)
                .ok_or_else(|| KernelError::Rows(format!("row {r} has kind code {code}")))?;
            if let Some((_, idx)) = of_kind.iter_mut().find(|(kk, _)| *kk == k) {
                idx.push(r);
            }
        }
        let mut parts = Vec::new();
        for (k, idx) in of_kind.into_iter().filter(|(_, idx)| !idx.is_empty()) {
            let (_, codes, scales) = kinds.iter().find(|(kk, _, _)| *kk == k).ok_or_else(|| {
                KernelError::Rows(format!("{} rows are {k:?} but no {k:?} codes were given", idx.len()))
            })?;
            check_len("artifact scales", idx.len() * k.artifact_scales_per_row(cols), scales.len())?;
            let m = PackedMatrix::from_artifact_rows(k, idx.len(), cols, codes, scales)?;
            parts.push((m, idx));
        }
        MixedRows::new(rows, parts)
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The per-kind matrices and their output rows.
    pub fn parts(&self) -> &[(PackedMatrix, Vec<usize>)] {
        &self.parts
    }

    /// Bytes one product reads.
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|(m, _)| m.bytes()).sum()
    }

    /// The dense f32 matrix, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0.0; self.rows * self.cols];
        for (m, idx) in &self.parts {
            for (src, &r) in m.dequantize().chunks_exact(self.cols).zip(idx) {
                w[r * self.cols..(r + 1) * self.cols].copy_from_slice(src);
            }
        }
        w
    }
}
