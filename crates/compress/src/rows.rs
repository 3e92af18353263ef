//! Row quantizers of the compression track and their packed storage (docs/contracts.md#the-compression-track).
//!
//! Every row of a quantized matrix is one [`RowKind`]. Each kind quantizes a row on its own and
//! stores whole bytes per row, so a row's cost in bits is exact and known before packing:
//!
//! | kind | values | scale (f16) | codes per byte |
//! |---|---|---|---|
//! | binary | `sign(w) * mean|w|` (sign(0) = +1) | one per row | 8 (bit set = +1, LSB first) |
//! | ternary | TWN: 0 where `|w| <= 0.7 * mean|w|`, else `sign(w) * mean|w|` over those kept | one per row | 5 (base 3, digit = code + 1) |
//! | q4 | symmetric int4 in [-7, 7], `scale = max|w| / 7` | one per 128 values | 2 (nibble = code + 7, low first) |
//! | q8 | symmetric int8 in [-127, 127], `scale = max|w| / 127` | one per row | 1 (byte = code + 128) |
//!
//! A row's dequantized value is `code * f32(scale_f16)`, exactly representable in f32, so this
//! crate, the artifact's Python unpacker and any other reader compute bit-identical weights.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::Result;

/// Values sharing one q4 scale.
pub const Q4_GROUP: i64 = 128;
/// The ternary zero threshold as a multiple of the row's mean |w| (Ternary Weight Networks).
pub const TERNARY_THRESHOLD: f64 = 0.7;

/// How one row is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    /// 1 bit per value, one scale.
    Binary,
    /// 1.6 bits per value (5 trits per byte), one scale.
    Ternary,
    /// 4 bits per value, one scale per 128 values ("q4 rescue").
    Q4,
    /// 8 bits per value, one scale.
    Q8,
}

impl RowKind {
    /// Every kind, cheapest first; the index is the 2-bit code stored in `row_kind`.
    pub const ALL: [RowKind; 4] = [RowKind::Binary, RowKind::Ternary, RowKind::Q4, RowKind::Q8];

    /// The lowercase name used in recipes, manifests and tensor names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Binary => "binary",
            Self::Ternary => "ternary",
            Self::Q4 => "q4",
            Self::Q8 => "q8",
        }
    }

    /// The 2-bit code of this kind in a matrix's `row_kind` tensor.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind with 2-bit code `c`.
    pub fn from_code(c: u8) -> Option<Self> {
        Self::ALL.get(c as usize).copied()
    }

    /// How codes are stored: `(codes per byte, base, offset)`, a byte being
    /// `Σ_i (code_i + offset) * base^i`; binary codes -1/+1 are stored as digits 0/1.
    fn packing(self) -> (i64, i64, i64) {
        match self {
            Self::Binary => (8, 2, 0),
            Self::Ternary => (5, 3, 1),
            Self::Q4 => (2, 16, 7),
            Self::Q8 => (1, 256, 128),
        }
    }

    /// Code bytes of one row of `n` values.
    pub fn code_bytes(self, n: i64) -> i64 {
        let per_byte = self.packing().0;
        (n + per_byte - 1) / per_byte
    }

    /// f16 scales of one row of `n` values.
    pub fn scales_per_row(self, n: i64) -> i64 {
        match self {
            Self::Q4 => (n + Q4_GROUP - 1) / Q4_GROUP,
            _ => 1,
        }
    }

    /// Exact storage of one row of `n` values, in bits (codes and scales).
    pub fn row_bits(self, n: i64) -> i64 {
        8 * self.code_bytes(n) + 16 * self.scales_per_row(n)
    }
}

impl std::fmt::Display for RowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Rows quantized to one kind: what the model computes with and what the artifact stores.
#[derive(Debug)]
pub struct QuantRows {
    /// `[n, in]` f32: `codes * scale`.
    pub dequant: Tensor,
    /// `[n, code_bytes]` u8.
    pub packed: Tensor,
    /// `[n, scales_per_row]` f16.
    pub scales: Tensor,
}

/// Rounds to f16 and back, as the stored scale will be read.
fn f16_round(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Half).to_kind(Kind::Float)
}

/// Integer codes (as f32) and f16-exact scales `[n, groups]` of `w` `[n, in]` for `kind`.
pub fn quantize_codes(w: &Tensor, kind: RowKind) -> (Tensor, Tensor) {
    let w = w.to_kind(Kind::Float);
    let n_in = w.size()[1];
    match kind {
        RowKind::Binary => {
            let scale = f16_round(&w.abs().mean_dim(-1, true, Kind::Float));
            let codes = w.ge(0.0).to_kind(Kind::Float) * 2.0 - 1.0;
            (codes, scale)
        }
        RowKind::Ternary => {
            let a = w.abs();
            let keep = a.gt_tensor(&(a.mean_dim(-1, true, Kind::Float) * TERNARY_THRESHOLD));
            let keep_f = keep.to_kind(Kind::Float);
            let kept = keep_f.sum_dim_intlist(-1, true, Kind::Float);
            // The least-squares magnitude of the kept values; a row with none kept stores 0.
            let scale = f16_round(&((&a * &keep_f).sum_dim_intlist(-1, true, Kind::Float) / kept.clamp_min(1.0)));
            (w.sign() * keep_f, scale)
        }
        RowKind::Q4 | RowKind::Q8 => {
            let (qmax, group) = if kind == RowKind::Q4 { (7.0, Q4_GROUP) } else { (127.0, n_in) };
            let groups = (n_in + group - 1) / group;
            let pad = groups * group - n_in;
            let padded = if pad > 0 { w.constant_pad_nd([0, pad]) } else { w.shallow_clone() };
            let g = padded.view([-1, groups, group]);
            let scale = f16_round(&(g.abs().amax([-1], false) / qmax)); // [n, groups]
            let div = scale.clamp_min(f64::MIN_POSITIVE).unsqueeze(-1);
            let codes = (g / div).round().clamp(-qmax, qmax).view([-1, groups * group]).narrow(1, 0, n_in);
            (codes, scale)
        }
    }
}

/// `codes * scale` for `[n, in]` codes and `[n, groups]` scales of `kind`.
pub fn dequantize(codes: &Tensor, scale: &Tensor, kind: RowKind) -> Tensor {
    let n_in = codes.size()[1];
    let group = if kind == RowKind::Q4 { Q4_GROUP } else { n_in };
    let per_value = scale.repeat_interleave_self_int(group, Some(1), None::<i64>).narrow(1, 0, n_in);
    codes * per_value
}

/// Weights per block when a matrix is worked on a block of rows at a time: every quantizer here
/// is row-wise, so blocks give the same bytes, and their temporaries (f32 codes, int64 digits)
/// stay near 400 MB however large the matrix.
const BLOCK_WEIGHTS: i64 = 1 << 24;

/// `(first_row, rows)` blocks covering `n_rows` rows of width `n_in`.
pub fn row_blocks(n_rows: i64, n_in: i64) -> impl Iterator<Item = (i64, i64)> {
    row_blocks_of(n_rows, n_in, BLOCK_WEIGHTS)
}

/// [`row_blocks`] with `block_weights` weights per block (tests use small blocks).
pub(crate) fn row_blocks_of(n_rows: i64, n_in: i64, block_weights: i64) -> impl Iterator<Item = (i64, i64)> {
    let step = (block_weights / n_in.max(1)).max(1);
    (0..n_rows).step_by(step as usize).map(move |start| (start, step.min(n_rows - start)))
}

/// Quantizes rows `w` `[n, in]` to `kind` and packs them.
pub fn quantize(w: &Tensor, kind: RowKind) -> Result<QuantRows> {
    let w = w.to_device(Device::Cpu).to_kind(Kind::Float);
    let (codes, scale) = quantize_codes(&w, kind);
    let dequant = dequantize(&codes, &scale, kind);
    let packed = pack(&codes, kind)?;
    Ok(QuantRows { dequant, packed, scales: scale.to_kind(Kind::Half) })
}

/// Packs integer codes `[n, in]` (f32) of `kind` into `[n, code_bytes]` u8.
pub fn pack(codes: &Tensor, kind: RowKind) -> Result<Tensor> {
    let n_in = codes.size()[1];
    let (per_byte, base, offset) = kind.packing();
    let bytes = kind.code_bytes(n_in);
    let pad = bytes * per_byte - n_in;
    // Padding with code 0 gives each scheme's zero digit (binary: bit 0, never read back).
    let codes = if pad > 0 { codes.constant_pad_nd([0, pad]) } else { codes.shallow_clone() };
    let digits = match kind {
        RowKind::Binary => codes.gt(0.0).to_kind(Kind::Int64),
        _ => codes.to_kind(Kind::Int64) + offset,
    };
    let d = digits.view([-1, bytes, per_byte]);
    let weights: Vec<i64> = (0..per_byte).map(|i| base.pow(i as u32)).collect();
    let w = Tensor::from_slice(&weights).to_device(d.device());
    Ok((d * w).sum_dim_intlist(-1, false, Kind::Int64).to_kind(Kind::Uint8))
}

/// Integer codes `[n, in]` (f32) from packed bytes `[n, code_bytes]` of `kind`.
pub fn unpack(packed: &Tensor, kind: RowKind, n_in: i64) -> Tensor {
    let (per_byte, base, offset) = kind.packing();
    let x = packed.to_kind(Kind::Int64).unsqueeze(-1);
    let pows: Vec<i64> = (0..per_byte).map(|i| base.pow(i as u32)).collect();
    let pows = Tensor::from_slice(&pows).to_device(x.device());
    let digits = x.floor_divide(&pows).remainder(base).flatten(1, 2).narrow(1, 0, n_in).to_kind(Kind::Float);
    match kind {
        RowKind::Binary => digits * 2.0 - 1.0,
        _ => digits - offset as f64,
    }
}

/// The row indices of each kind present in `kinds`, cheapest kind first.
pub fn kind_groups(kinds: &[RowKind], device: Device) -> Vec<(RowKind, Tensor)> {
    RowKind::ALL
        .iter()
        .filter_map(|&k| {
            let idx: Vec<i64> = kinds.iter().enumerate().filter(|(_, r)| **r == k).map(|(i, _)| i as i64).collect();
            (!idx.is_empty()).then(|| (k, Tensor::from_slice(&idx).to_device(device)))
        })
        .collect()
}

/// `w` `[rows, in]` with every row quantized to its kind and dequantized (f32, on `w`'s device).
pub fn quantize_mix(w: &Tensor, groups: &[(RowKind, Tensor)]) -> Tensor {
    let w = w.detach().to_kind(Kind::Float);
    let mut out = w.zeros_like();
    for (kind, idx) in groups {
        let (codes, scale) = quantize_codes(&w.index_select(0, idx), *kind);
        let _ = out.index_copy_(0, idx, &dequantize(&codes, &scale, *kind));
    }
    out
}

/// Packs per-row kinds four to a byte (2-bit codes, LSB first).
pub fn pack_kinds(kinds: &[RowKind]) -> Vec<u8> {
    kinds.chunks(4).map(|c| c.iter().enumerate().fold(0u8, |acc, (i, k)| acc | (k.code() << (2 * i)))).collect()
}

/// The first `n` per-row kinds from [`pack_kinds`] bytes; None on an unknown code or short input.
pub fn unpack_kinds(bytes: &[u8], n: usize) -> Option<Vec<RowKind>> {
    if bytes.len() * 4 < n {
        return None;
    }
    (0..n).map(|i| RowKind::from_code((bytes[i / 4] >> (2 * (i % 4))) & 3)).collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn packing_by_blocks_of_rows_gives_the_same_bytes() {
        tch::manual_seed(5);
        let w = Tensor::randn([29, 260], (Kind::Float, Device::Cpu));
        for kind in RowKind::ALL {
            let whole = quantize(&w, kind).unwrap();
            let parts: Vec<QuantRows> = row_blocks_of(29, 260, 1200)
                .map(|(start, len)| quantize(&w.narrow(0, start, len), kind).unwrap())
                .collect();
            let cat = |f: fn(&QuantRows) -> &Tensor| Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0);
            assert!(parts.len() > 1);
            assert!(whole.packed.equal(&cat(|q| &q.packed)), "{kind:?}: packed codes differ");
            assert!(whole.scales.equal(&cat(|q| &q.scales)), "{kind:?}: scales differ");
            assert!(whole.dequant.equal(&cat(|q| &q.dequant)), "{kind:?}: values differ");
        }
    }
    use super::*;

    #[test]
    fn pack_round_trips_every_kind_with_padding() {
        tch::manual_seed(1);
        for kind in RowKind::ALL {
            for n_in in [1i64, 5, 7, 128, 131] {
                let w = Tensor::randn([3, n_in], (Kind::Float, Device::Cpu));
                let (codes, _) = quantize_codes(&w, kind);
                let packed = pack(&codes, kind).unwrap();
                assert_eq!(packed.size(), vec![3, kind.code_bytes(n_in)], "{kind} {n_in}");
                let back = unpack(&packed, kind, n_in);
                assert!(back.equal(&codes), "{kind} n_in {n_in}: unpack(pack(c)) != c");
            }
        }
    }

    #[test]
    fn kinds_pack_four_to_a_byte() {
        let kinds = [RowKind::Q8, RowKind::Binary, RowKind::Ternary, RowKind::Q4, RowKind::Ternary];
        let bytes = pack_kinds(&kinds);
        assert_eq!(bytes.len(), 2);
        assert_eq!(unpack_kinds(&bytes, 5).unwrap(), kinds);
        assert!(unpack_kinds(&bytes, 9).is_none());
    }

    #[test]
    fn row_bits_are_exact() {
        assert_eq!(RowKind::Binary.row_bits(576), 576 + 16);
        assert_eq!(RowKind::Ternary.row_bits(576), 8 * 116 + 16);
        assert_eq!(RowKind::Q4.row_bits(576), 8 * 288 + 16 * 5);
        assert_eq!(RowKind::Q8.row_bits(576), 8 * 576 + 16);
    }
}
