//! [`PackedMatrix`]: the kernel layout (see the crate doc) and the converters from autoqat's
//! stored formats into it.

use half::f16;

use crate::error::{check_len, KernelError, Result};

/// Values per block: the unit of padding, packing and activation scales.
pub const BLOCK: usize = 128;
/// Values per half block, the finest scale granularity the SIMD paths handle.
pub(crate) const HALF: usize = 64;

/// The code alphabet of a packed matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightKind {
    /// Codes -1/+1, 1 bit each.
    Binary,
    /// Codes -1/0/+1, 2 bits each.
    Ternary,
    /// Codes in [-8, 7], 4 bits each (the artifact's q4 uses [-7, 7]).
    Q4,
    /// Codes in [-128, 127], 8 bits each.
    Q8,
}

impl WeightKind {
    /// Every kind, in the order of the artifact's 2-bit `row_kind` codes.
    pub const ALL: [WeightKind; 4] = [Self::Binary, Self::Ternary, Self::Q4, Self::Q8];

    /// The kind with the artifact's `row_kind` code `c` (0 binary, 1 ternary, 2 q4, 3 q8).
    pub fn from_row_kind(c: u8) -> Option<WeightKind> {
        Self::ALL.get(c as usize).copied()
    }

    /// Bytes of one packed block of [`BLOCK`] values.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Binary => 16,
            Self::Ternary => 32,
            Self::Q4 => 64,
            Self::Q8 => 128,
        }
    }

    /// Whether `c` is a code of this kind.
    pub fn valid(self, c: i8) -> bool {
        match self {
            Self::Binary => c == 1 || c == -1,
            Self::Ternary => (-1..=1).contains(&c),
            Self::Q4 => (-8..=7).contains(&c),
            Self::Q8 => true,
        }
    }

    /// The code written into padding: one whose product with a zero activation is zero.
    fn pad_code(self) -> i8 {
        if self == Self::Binary {
            1
        } else {
            0
        }
    }

    /// Bytes of one row of `cols` values in the compression artifact (`rows.rs` packing).
    pub fn artifact_row_bytes(self, cols: usize) -> usize {
        let per_byte = match self {
            Self::Binary => 8,
            Self::Ternary => 5,
            Self::Q4 => 2,
            Self::Q8 => 1,
        };
        cols.div_ceil(per_byte)
    }

    /// f16 scales of one row of `cols` values in the compression artifact.
    pub fn artifact_scales_per_row(self, cols: usize) -> usize {
        if self == Self::Q4 {
            cols.div_ceil(ARTIFACT_Q4_GROUP)
        } else {
            1
        }
    }
}

/// Values per q4 scale in the compression artifact.
const ARTIFACT_Q4_GROUP: usize = 128;

/// Which values share a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale for the whole matrix.
    PerTensor,
    /// One scale per row.
    PerRow,
    /// One scale per `g` consecutive values of a row; the last group of a row may be partial.
    Group(usize),
}

/// How the stored f32 scales map onto a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScaleUnit {
    /// One scale per row.
    Row,
    /// One scale per block of 128.
    Block,
    /// One scale per 64 values.
    Half,
    /// One scale per `g` values, `g` not a multiple of 64: portable path only.
    Other(usize),
}

/// A matrix of one [`WeightKind`] in the kernel layout, with f32 scales.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    kind: WeightKind,
    rows: usize,
    cols: usize,
    blocks: usize,
    data: Vec<u8>,
    scales: Vec<f32>,
    unit: ScaleUnit,
    units_per_row: usize,
}

impl PackedMatrix {
    /// Packs signed codes `[rows, cols]` (row-major) with `scales` at `gran` (1 scale per tensor,
    /// `rows` per row, `rows * ceil(cols / g)` per group); value = code * scale.
    pub fn from_codes(
        kind: WeightKind,
        rows: usize,
        cols: usize,
        codes: &[i8],
        scales: &[f32],
        gran: Granularity,
    ) -> Result<PackedMatrix> {
        if rows == 0 || cols == 0 {
            return Err(KernelError::Empty { what: "matrix", rows, cols });
        }
        check_len("codes", rows * cols, codes.len())?;
        if let Some(index) = codes.iter().position(|&c| !kind.valid(c)) {
            return Err(KernelError::Code { kind, value: i32::from(codes[index]), index });
        }
        let blocks = cols.div_ceil(BLOCK);
        let (unit, group) = match gran {
            Granularity::PerTensor => {
                check_len("scales (per tensor)", 1, scales.len())?;
                (ScaleUnit::Row, cols)
            }
            Granularity::PerRow => {
                check_len("scales (per row)", rows, scales.len())?;
                (ScaleUnit::Row, cols)
            }
            Granularity::Group(0) => return Err(KernelError::Group { group: 0, cols }),
            Granularity::Group(g) => {
                check_len("scales (per group)", rows * cols.div_ceil(g), scales.len())?;
                let unit = if g >= cols {
                    ScaleUnit::Row
                } else if g.is_multiple_of(BLOCK) {
                    ScaleUnit::Block
                } else if g.is_multiple_of(HALF) {
                    ScaleUnit::Half
                } else {
                    ScaleUnit::Other(g)
                };
                (unit, g)
            }
        };
        let groups_per_row = cols.div_ceil(group);
        // The caller's scale of value `c` of row `r`; 0 past the row (only padding sits there).
        let user = |r: usize, c: usize| -> f32 {
            if c >= cols {
                return 0.0;
            }
            match gran {
                Granularity::PerTensor => scales[0],
                Granularity::PerRow => scales[r],
                Granularity::Group(_) => scales[r * groups_per_row + c / group],
            }
        };
        let (units_per_row, step) = match unit {
            ScaleUnit::Row => (1, 0),
            ScaleUnit::Block => (blocks, BLOCK),
            ScaleUnit::Half => (2 * blocks, HALF),
            ScaleUnit::Other(g) => (groups_per_row, g),
        };
        let scales: Vec<f32> =
            (0..rows).flat_map(|r| (0..units_per_row).map(move |u| (r, u * step))).map(|(r, c)| user(r, c)).collect();

        let bb = kind.block_bytes();
        let mut data = vec![0u8; rows * blocks * bb];
        let mut block = [0i8; BLOCK];
        for r in 0..rows {
            let row = &codes[r * cols..(r + 1) * cols];
            for b in 0..blocks {
                block.fill(kind.pad_code());
                let part = &row[b * BLOCK..cols.min((b + 1) * BLOCK)];
                block[..part.len()].copy_from_slice(part);
                let at = (r * blocks + b) * bb;
                encode_block(kind, &block, &mut data[at..at + bb]);
            }
        }
        Ok(PackedMatrix { kind, rows, cols, blocks, data, scales, unit, units_per_row })
    }

    /// Repacks a KD/QAT student export weight `[rows, cols]`: `bytes` hold four 2-bit digits
    /// (code + 1, LSB first) a byte, row-major; `scales` one f16 per group of `gran`.
    pub fn from_student(
        rows: usize,
        cols: usize,
        bytes: &[u8],
        scales: &[f16],
        gran: Granularity,
    ) -> Result<PackedMatrix> {
        if let Granularity::Group(g) = gran {
            if g == 0 || !cols.is_multiple_of(g) {
                return Err(KernelError::Group { group: g, cols });
            }
        }
        let n = rows * cols;
        check_len("student codes (bytes)", n.div_ceil(4), bytes.len())?;
        let mut codes = Vec::with_capacity(n);
        for i in 0..n {
            let digit = (bytes[i / 4] >> (2 * (i % 4))) & 3;
            if digit == 3 {
                return Err(KernelError::Code { kind: WeightKind::Ternary, value: 3, index: i });
            }
            codes.push(digit as i8 - 1);
        }
        let scales: Vec<f32> = scales.iter().map(|s| s.to_f32()).collect();
        PackedMatrix::from_codes(WeightKind::Ternary, rows, cols, &codes, &scales, gran)
    }

    /// Repacks rows of one kind from the compression artifact: `packed` is `[rows,
    /// artifact_row_bytes(cols)]` and `scales` `[rows, artifact_scales_per_row(cols)]` f16.
    pub fn from_artifact_rows(
        kind: WeightKind,
        rows: usize,
        cols: usize,
        packed: &[u8],
        scales: &[f16],
    ) -> Result<PackedMatrix> {
        let row_bytes = kind.artifact_row_bytes(cols);
        check_len("artifact codes (bytes)", rows * row_bytes, packed.len())?;
        let mut codes = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            let row = &packed[r * row_bytes..(r + 1) * row_bytes];
            for c in 0..cols {
                let index = r * cols + c;
                let code = match kind {
                    WeightKind::Binary => {
                        if (row[c / 8] >> (c % 8)) & 1 == 1 {
                            1
                        } else {
                            -1
                        }
                    }
                    WeightKind::Ternary => {
                        let byte = row[c / 5];
                        if byte >= 243 {
                            return Err(KernelError::Code { kind, value: i32::from(byte), index });
                        }
                        ((byte / 3u8.pow((c % 5) as u32)) % 3) as i8 - 1
                    }
                    WeightKind::Q4 => {
                        let nib = (row[c / 2] >> (4 * (c % 2))) & 15;
                        if nib == 15 {
                            return Err(KernelError::Code { kind, value: 15, index });
                        }
                        nib as i8 - 7
                    }
                    WeightKind::Q8 => (i16::from(row[c]) - 128) as i8,
                };
                codes.push(code);
            }
        }
        let scales: Vec<f32> = scales.iter().map(|s| s.to_f32()).collect();
        let gran = match kind {
            WeightKind::Q4 => Granularity::Group(ARTIFACT_Q4_GROUP),
            _ => Granularity::PerRow,
        };
        PackedMatrix::from_codes(kind, rows, cols, &codes, &scales, gran)
    }

    /// The code alphabet.
    pub fn kind(&self) -> WeightKind {
        self.kind
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes one product reads from the matrix: packed codes plus f32 scales.
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * self.scales.len()
    }

    /// The code of value `c` of row `r` (panics when out of range).
    pub fn code(&self, r: usize, c: usize) -> i8 {
        assert!(r < self.rows && c < self.cols, "code ({r}, {c}) outside {}x{}", self.rows, self.cols);
        let (b, i) = (c / BLOCK, c % BLOCK);
        let bb = self.kind.block_bytes();
        let at = (r * self.blocks + b) * bb;
        decode_one(self.kind, &self.data[at..at + bb], i)
    }

    /// The scale of value `c` of row `r` (panics when out of range).
    pub fn scale(&self, r: usize, c: usize) -> f32 {
        assert!(r < self.rows && c < self.cols, "scale ({r}, {c}) outside {}x{}", self.rows, self.cols);
        self.row_scales(r)[self.unit_of(c)]
    }

    /// The dense f32 matrix `code * scale`, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        (0..self.rows).flat_map(|r| (0..self.cols).map(move |c| (r, c))).map(|(r, c)| self.value(r, c)).collect()
    }

    fn value(&self, r: usize, c: usize) -> f32 {
        f32::from(self.code(r, c)) * self.scale(r, c)
    }

    /// Index of the scale of column `c` within its row's scales.
    pub(crate) fn unit_of(&self, c: usize) -> usize {
        match self.unit {
            ScaleUnit::Row => 0,
            ScaleUnit::Block => c / BLOCK,
            ScaleUnit::Half => c / HALF,
            ScaleUnit::Other(g) => c / g,
        }
    }

    /// Blocks per row.
    pub(crate) fn blocks(&self) -> usize {
        self.blocks
    }

    /// The scale granularity of the stored scales.
    pub(crate) fn unit(&self) -> ScaleUnit {
        self.unit
    }

    /// Packed bytes of row `r`.
    pub(crate) fn row_data(&self, r: usize) -> &[u8] {
        let n = self.blocks * self.kind.block_bytes();
        &self.data[r * n..(r + 1) * n]
    }

    /// Stored scales of row `r`.
    pub(crate) fn row_scales(&self, r: usize) -> &[f32] {
        &self.scales[r * self.units_per_row..(r + 1) * self.units_per_row]
    }
}

/// Writes one block of [`BLOCK`] codes in the layout of `kind` into `out` (`block_bytes`).
fn encode_block(kind: WeightKind, codes: &[i8; BLOCK], out: &mut [u8]) {
    out.fill(0);
    match kind {
        WeightKind::Ternary => {
            for (i, &c) in codes.iter().enumerate() {
                out[i % 32] |= ((c + 1) as u8) << (2 * (i / 32));
            }
        }
        WeightKind::Binary => {
            for (i, &c) in codes.iter().enumerate() {
                out[i / 8] |= u8::from(c > 0) << (i % 8);
            }
        }
        WeightKind::Q4 => {
            for (i, &c) in codes.iter().enumerate() {
                let (h, t) = (i / HALF, i % HALF);
                out[32 * h + t % 32] |= ((c + 8) as u8) << (4 * (t / 32));
            }
        }
        WeightKind::Q8 => {
            for (o, &c) in out.iter_mut().zip(codes) {
                *o = c as u8;
            }
        }
    }
}

/// The code of value `i` of one packed block.
pub(crate) fn decode_one(kind: WeightKind, block: &[u8], i: usize) -> i8 {
    match kind {
        WeightKind::Ternary => ((block[i % 32] >> (2 * (i / 32))) & 3) as i8 - 1,
        WeightKind::Binary => {
            if (block[i / 8] >> (i % 8)) & 1 == 1 {
                1
            } else {
                -1
            }
        }
        WeightKind::Q4 => {
            let (h, t) = (i / HALF, i % HALF);
            ((block[32 * h + t % 32] >> (4 * (t / 32))) & 15) as i8 - 8
        }
        WeightKind::Q8 => block[i] as i8,
    }
}

/// Decodes one packed block into its [`BLOCK`] codes.
pub(crate) fn decode_block(kind: WeightKind, block: &[u8], out: &mut [i8; BLOCK]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = decode_one(kind, block, i);
    }
}

/// Flush modes of the SIMD kernels: how block results become the row's sum.
pub(crate) mod flush {
    /// Per-row weight scale, per-vector activation scale: integer sum over the row.
    pub const ROW_INT: u8 = 0;
    /// Per-row weight scale, per-block activation scale (or exact f32 activations).
    pub const ROW: u8 = 1;
    /// One weight scale per block.
    pub const BLOCK: u8 = 2;
    /// One weight scale per 64 values.
    pub const HALF: u8 = 3;
}

/// Longest padded row for which [`flush::ROW_INT`] cannot overflow i32: every product is at most
/// 255 * 127 in magnitude (q8 with the VNNI offset), and 65536 of them stay below 2^31.
const ROW_INT_MAX_COLS: usize = 65536;

/// The flush mode for `m` against activations in `mode`; None when only the portable path can
/// run the matrix (a group size that is not a multiple of 64).
pub(crate) fn flush_mode(m: &PackedMatrix, mode: crate::acts::ActMode) -> Option<u8> {
    match m.unit() {
        ScaleUnit::Row if mode == crate::acts::ActMode::Int8PerVector && m.blocks() * BLOCK <= ROW_INT_MAX_COLS => {
            Some(flush::ROW_INT)
        }
        ScaleUnit::Row => Some(flush::ROW),
        ScaleUnit::Block => Some(flush::BLOCK),
        ScaleUnit::Half => Some(flush::HALF),
        ScaleUnit::Other(_) => None,
    }
}

/// Kind numbers for const generics of the SIMD kernels.
pub(crate) mod kind {
    /// Binary.
    pub const BINARY: u8 = 0;
    /// Ternary.
    pub const TERNARY: u8 = 1;
    /// q4.
    pub const Q4: u8 = 2;
    /// q8.
    pub const Q8: u8 = 3;

    /// Packed bytes per block of kind `k`.
    pub const fn block_bytes(k: u8) -> usize {
        match k {
            BINARY => 16,
            TERNARY => 32,
            Q4 => 64,
            _ => 128,
        }
    }
}

impl WeightKind {
    /// The const-generic number of this kind.
    pub(crate) fn id(self) -> u8 {
        match self {
            Self::Binary => kind::BINARY,
            Self::Ternary => kind::TERNARY,
            Self::Q4 => kind::Q4,
            Self::Q8 => kind::Q8,
        }
    }
}

/// Bytes ahead of the current block that the SIMD kernels prefetch: the hardware prefetcher
/// alone leaves a single streaming core at about half the read bandwidth, because the kernel's
/// loads are too few to keep enough cache misses in flight.
pub(crate) const PREFETCH: usize = 2048;

/// Hints that the line at `p` will be read soon; never faults, whatever `p` is.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    // SAFETY: `prefetcht0` is a hint that never faults, even on an invalid address, and SSE is
    // part of the x86_64 baseline.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast()) }
}
