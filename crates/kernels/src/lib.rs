//! Packed low-bit matrix kernels for batch-1 CPU decode and small-batch prefill.
//!
//! The stored formats (the student export's four 2-bit codes a byte, the compression artifact's
//! per-row binary/ternary/q4/q8 bytes) stay as they are; loaders repack into [`PackedMatrix`]
//! once, at load time, and every product then reads only the packed codes and f32 scales.
//!
//! # Layout
//!
//! Every row is cut into blocks of [`BLOCK`] = 128 values (the row is padded with zero codes, or
//! with +1 for binary, up to a whole block; activations are padded with zeros, so padding adds
//! nothing). A block is stored in the fewest bytes its kind allows, arranged so that one
//! unaligned vector load plus shifts and masks yields the codes of 32 (AVX2) or 64 (AVX-512)
//! *consecutive* values as unsigned bytes, ready for `maddubs`/`dpbusd` against the int8
//! activations at the same offsets:
//!
//! | kind | bytes/block | byte `j` of the block holds | stored digit |
//! |---|---|---|---|
//! | ternary | 32 | values `j`, `32+j`, `64+j`, `96+j` in bits 0-1, 2-3, 4-5, 6-7 | `code + 1` |
//! | binary | 16 | values `8j..8j+8`, LSB first | bit set = +1 |
//! | q4 | 64 | half `h = j / 32`: value `64h + j%32` (low nibble), `64h + 32 + j%32` (high) | `code + 8` |
//! | q8 | 128 | value `j` | `code` as i8 |
//!
//! Why: with the ternary interleave, `(v >> 2k) & 3` over a 32-byte load is the 32 consecutive
//! values `32k..32k+32`, so AVX2 needs one load, four shift/and pairs and four `maddubs` per 128
//! values, and AVX-512 broadcasts the 32 bytes and uses per-lane shifts (`vpsrlvw`) to get
//! values `0..64` and `64..128` in two registers. A byte-sequential 2-bit layout would need a
//! byte shuffle per chunk instead. Binary keeps the natural bit order because AVX-512 uses 64
//! bits directly as a byte mask (`vmovdqu8` with zeroing) and AVX2 expands 32 bits with one
//! `vpshufb`. Unsigned digits (code + offset) let the weights be the unsigned operand of
//! `maddubs`/`dpbusd`; the offset is removed once per row as `offset * Σ x` from a per-vector
//! sum computed when the activations are quantized. Every layout keeps values `0..64` and
//! `64..128` of a block separable, so 64-value scale groups need no other layout.
//!
//! Scales are f32 (converting f16 per block in the inner loop costs more than the bytes it
//! saves) at one of three granularities: one per row (per-tensor scales are repeated per row),
//! one per 128-value block, or one per 64 values. A group of 256 (or any multiple of 128) is
//! stored as its scale repeated per block; a group of 64·k (k odd) per 64 values. Any other
//! group size is accepted but runs on the portable path only.
//!
//! # Activations
//!
//! [`ActMode::Int8PerVector`] quantizes each activation row to int8 with one absmax scale
//! (`q = round(x * 127 / max|x|)`, the same rounding as autoqat's per-token activation
//! quantization, so the codes lie in [-127, 127]); [`ActMode::Int8PerBlock`] uses one scale per
//! 128-value block, llama.cpp's Q8_K idea with the kernel's block size instead of 256.
//! [`ActMode::F32`] keeps the activations exact and decodes the packed weights to f32 in
//! registers. With per-row weight scales and a per-vector activation scale the int8 kernels
//! accumulate in i32 over the whole row (one float conversion per row); otherwise they convert
//! once per block or half-block and multiply by the product of the two scales.
//!
//! # Paths and threads
//!
//! [`KernelPath`] names the implementation: portable scalar, AVX2+FMA, AVX-512 F+BW, or
//! AVX-512 with VNNI (`vpdpbusd`). [`Kernels`] holds the path and a small persistent thread
//! pool: workers spin briefly between calls, because a decode step makes hundreds of small
//! matrix-vector products and spawning or waking threads per call would cost more than the
//! product itself.

mod acts;
mod error;
mod exec;
mod layout;
mod path;
mod pool;
mod portable;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

pub use acts::{ActMode, Acts};
pub use error::{KernelError, Result};
pub use exec::{Kernels, MixedRows};
pub use layout::{Granularity, PackedMatrix, WeightKind, BLOCK};
pub use path::{kernel_path, KernelPath, KERNEL_ENV};
