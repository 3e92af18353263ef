//! The AVX-512 paths: 64 codes per register. `bw` uses `vpmaddubsw` + `vpmaddwd`, `vnni` uses
//! `vpdpbusd`; the two are one body instantiated twice so that the BW path never contains a
//! VNNI instruction.

macro_rules! avx512_path {
    ($name:ident, $features:literal, $vnni:expr) => {
        pub(crate) mod $name {
            use std::arch::x86_64::*;
            use std::ops::Range;

            use crate::acts::{finish_int, Acts};
            use crate::layout::{flush, kind, PackedMatrix, BLOCK};

            use crate::layout::{prefetch, PREFETCH};

            /// Activation rows per tile: their codes stay in cache while the weights stream.
            const TILE: usize = 64;
            /// Whether this instantiation uses `vpdpbusd`.
            const VNNI: bool = $vnni;

            /// The stored digit minus the code, removed from the row sum by [`finish_int`]. With
            /// VNNI, q8 is the unsigned operand `code ^ 0x80 = code + 128`; without it, q8 moves
            /// its sign onto the activations and has no offset.
            const fn offset(k: u8) -> i32 {
                match k {
                    kind::BINARY | kind::TERNARY => 1,
                    kind::Q4 => 8,
                    _ if VNNI => 128,
                    _ => 0,
                }
            }

            /// Computes `out[(r - rows.start) * n + j] = W[r] · x_j` for `r` in `rows`.
            ///
            /// # Safety
            /// The CPU must support this path's features, and `m` must be runnable by SIMD
            /// paths (`flush_mode` is Some); `out` holds `rows.len() * a.n()` values and `a`
            /// has `m`'s columns.
            pub(crate) unsafe fn run(m: &PackedMatrix, a: &Acts, f: u8, rows: Range<usize>, out: &mut [f32]) {
                macro_rules! go {
                    ($k:expr) => {
                        match (f, a.mode().is_int8()) {
                            (flush::ROW_INT, true) => tiles::<{ $k }, { flush::ROW_INT }, true>(m, a, rows, out),
                            (flush::ROW, true) => tiles::<{ $k }, { flush::ROW }, true>(m, a, rows, out),
                            (flush::BLOCK, true) => tiles::<{ $k }, { flush::BLOCK }, true>(m, a, rows, out),
                            (_, true) => tiles::<{ $k }, { flush::HALF }, true>(m, a, rows, out),
                            (flush::ROW_INT | flush::ROW, false) => {
                                tiles::<{ $k }, { flush::ROW }, false>(m, a, rows, out)
                            }
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

            // SAFETY (all functions below): reached only through `run`, whose contract
            // guarantees the features; pointer reads stay within one packed block
            // (`block_bytes(K)` bytes at a block start of a row) or one block of padded
            // activations (128 values at a block start).

            #[target_feature(enable = $features)]
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

            #[target_feature(enable = $features)]
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

            /// One decoded block: unsigned digits of values 0..64 and 64..128 (`u`), and for
            /// q8 the signed codes (`w`) and their sign masks (`neg`).
            struct Dec {
                u: [__m512i; 2],
                w: [__m512i; 2],
                neg: [__mmask64; 2],
            }

            /// Per-16-bit-lane shift counts: `lo` in the low 256 bits, `hi` in the high 256.
            #[target_feature(enable = $features)]
            #[inline]
            fn shifts(lo: i16, hi: i16) -> __m512i {
                _mm512_inserti64x4::<1>(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi))
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn decode<const K: u8>(p: *const u8) -> Dec {
                let z = _mm512_setzero_si512();
                match K {
                    kind::TERNARY => {
                        // Both halves of the register hold the 32 bytes; shifting the low half by
                        // 0 and the high half by 2 gives values 0..32 then 32..64.
                        let v = _mm512_broadcast_i64x4(_mm256_loadu_si256(p.cast()));
                        let m3 = _mm512_set1_epi8(3);
                        let u0 = _mm512_and_si512(_mm512_srlv_epi16(v, shifts(0, 2)), m3);
                        let u1 = _mm512_and_si512(_mm512_srlv_epi16(v, shifts(4, 6)), m3);
                        Dec { u: [u0, u1], w: [z; 2], neg: [0; 2] }
                    }
                    kind::BINARY => {
                        let two = _mm512_set1_epi8(2);
                        let k0 = p.cast::<u64>().read_unaligned();
                        let k1 = p.add(8).cast::<u64>().read_unaligned();
                        let u = [_mm512_maskz_mov_epi8(k0, two), _mm512_maskz_mov_epi8(k1, two)];
                        Dec { u, w: [z; 2], neg: [0; 2] }
                    }
                    kind::Q4 => {
                        let mf = _mm512_set1_epi8(15);
                        let sh = shifts(0, 4);
                        let v0 = _mm512_broadcast_i64x4(_mm256_loadu_si256(p.cast()));
                        let v1 = _mm512_broadcast_i64x4(_mm256_loadu_si256(p.add(32).cast()));
                        let u0 = _mm512_and_si512(_mm512_srlv_epi16(v0, sh), mf);
                        let u1 = _mm512_and_si512(_mm512_srlv_epi16(v1, sh), mf);
                        Dec { u: [u0, u1], w: [z; 2], neg: [0; 2] }
                    }
                    _ => {
                        let w = [_mm512_loadu_si512(p.cast()), _mm512_loadu_si512(p.add(64).cast())];
                        if VNNI {
                            let flip = _mm512_set1_epi8(-128);
                            let u = [_mm512_xor_si512(w[0], flip), _mm512_xor_si512(w[1], flip)];
                            Dec { u, w, neg: [0; 2] }
                        } else {
                            let u = [_mm512_abs_epi8(w[0]), _mm512_abs_epi8(w[1])];
                            Dec { u, w, neg: [_mm512_movepi8_mask(w[0]), _mm512_movepi8_mask(w[1])] }
                        }
                    }
                }
            }

            /// `acc` plus the integer dot product of half `h` of a decoded block with 64 int8
            /// activations at `x`, as sixteen i32 lanes.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn dot<const K: u8>(acc: __m512i, d: &Dec, h: usize, x: *const i8) -> __m512i {
                let mut xv = _mm512_loadu_si512(x.cast());
                if K == kind::Q8 && !VNNI {
                    xv = _mm512_mask_sub_epi8(xv, d.neg[h], _mm512_setzero_si512(), xv);
                }
                dpbusd(acc, d.u[h], xv)
            }

            /// `acc + Σ u·x` over each four bytes: `vpdpbusd`, or its BW emulation (pair sums
            /// fit i16: digits are at most 15, or |q8| * |x| <= 128 * 127).
            #[target_feature(enable = $features)]
            #[inline]
            fn dpbusd(acc: __m512i, u: __m512i, x: __m512i) -> __m512i {
                #[allow(unused_unsafe)]
                // SAFETY: the VNNI branch only exists in the instantiation whose features
                // include avx512vnni.
                unsafe {
                    if VNNI {
                        super::vnni_dot(acc, u, x)
                    } else {
                        _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, x), _mm512_set1_epi16(1)))
                    }
                }
            }

            #[target_feature(enable = $features)]
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
                // Two integer accumulators per activation row (one per half) halve the
                // dependency chain of `vpdpbusd`.
                let mut iacc = [[_mm512_setzero_si512(); 2]; N];
                let mut facc = [_mm512_setzero_ps(); N];
                let z = _mm512_setzero_si512();
                for b in 0..m.blocks() {
                    prefetch(data.wrapping_add(b * bb + PREFETCH));
                    let d = decode::<K>(data.add(b * bb));
                    for i in 0..N {
                        let x = xs[i].add(b * BLOCK);
                        if F == flush::ROW_INT {
                            iacc[i][0] = dot::<K>(iacc[i][0], &d, 0, x);
                            iacc[i][1] = dot::<K>(iacc[i][1], &d, 1, x.add(64));
                            continue;
                        }
                        let h0 = dot::<K>(z, &d, 0, x);
                        let h1 = dot::<K>(z, &d, 1, x.add(64));
                        facc[i] = match F {
                            flush::ROW => _mm512_fmadd_ps(
                                _mm512_cvtepi32_ps(_mm512_add_epi32(h0, h1)),
                                _mm512_set1_ps(asc[i][b]),
                                facc[i],
                            ),
                            flush::BLOCK => _mm512_fmadd_ps(
                                _mm512_cvtepi32_ps(_mm512_add_epi32(h0, h1)),
                                _mm512_set1_ps(ws[b] * asc[i][b]),
                                facc[i],
                            ),
                            _ => _mm512_fmadd_ps(
                                _mm512_cvtepi32_ps(h1),
                                _mm512_set1_ps(ws[2 * b + 1] * asc[i][b]),
                                _mm512_fmadd_ps(_mm512_cvtepi32_ps(h0), _mm512_set1_ps(ws[2 * b] * asc[i][b]), facc[i]),
                            ),
                        };
                    }
                }
                for (i, o) in out.iter_mut().enumerate().take(N) {
                    let isum =
                        i64::from(_mm512_reduce_add_epi32(iacc[i][0])) + i64::from(_mm512_reduce_add_epi32(iacc[i][1]));
                    *o = finish_int(m, r, a, j0 + i, F, offset(K), (isum, _mm512_reduce_add_ps(facc[i])));
                }
            }

            /// Signed codes of one block into `out`.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn codes<const K: u8>(p: *const u8, out: &mut [i8; BLOCK]) {
                let d = decode::<K>(p);
                let off = _mm512_set1_epi8(offset(K) as i8);
                for h in 0..2 {
                    // q8 digits wrap back to the code (`(c ^ 0x80) - 0x80`); without VNNI the
                    // digits are |c|, so the raw codes are taken instead.
                    let c = if K == kind::Q8 { d.w[h] } else { _mm512_sub_epi8(d.u[h], off) };
                    _mm512_storeu_si512(out.as_mut_ptr().add(64 * h).cast(), c);
                }
            }

            /// Σ w·x over 64 values, in two chains so FMA latency does not serialize the block.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn half_f32(w: *const f32, x: *const f32) -> __m512 {
                let c0 = _mm512_fmadd_ps(_mm512_loadu_ps(w), _mm512_loadu_ps(x), _mm512_setzero_ps());
                let c1 = _mm512_fmadd_ps(_mm512_loadu_ps(w.add(16)), _mm512_loadu_ps(x.add(16)), _mm512_setzero_ps());
                let c0 = _mm512_fmadd_ps(_mm512_loadu_ps(w.add(32)), _mm512_loadu_ps(x.add(32)), c0);
                let c1 = _mm512_fmadd_ps(_mm512_loadu_ps(w.add(48)), _mm512_loadu_ps(x.add(48)), c1);
                _mm512_add_ps(c0, c1)
            }

            #[target_feature(enable = $features)]
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
                let mut acc = [_mm512_setzero_ps(); N];
                let mut c8 = [0i8; BLOCK];
                let mut wf = [0f32; BLOCK];
                for b in 0..m.blocks() {
                    prefetch(data.wrapping_add(b * bb + PREFETCH));
                    codes::<K>(data.add(b * bb), &mut c8);
                    for v in 0..BLOCK / 16 {
                        let c = _mm_loadu_si128(c8.as_ptr().add(16 * v).cast());
                        _mm512_storeu_ps(wf.as_mut_ptr().add(16 * v), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c)));
                    }
                    for i in 0..N {
                        let x = xs[i].add(b * BLOCK);
                        let h0 = half_f32(wf.as_ptr(), x);
                        let h1 = half_f32(wf.as_ptr().add(64), x.add(64));
                        acc[i] = match F {
                            flush::BLOCK => _mm512_fmadd_ps(_mm512_add_ps(h0, h1), _mm512_set1_ps(ws[b]), acc[i]),
                            flush::HALF => _mm512_fmadd_ps(
                                h1,
                                _mm512_set1_ps(ws[2 * b + 1]),
                                _mm512_fmadd_ps(h0, _mm512_set1_ps(ws[2 * b]), acc[i]),
                            ),
                            _ => _mm512_add_ps(acc[i], _mm512_add_ps(h0, h1)),
                        };
                    }
                }
                for (i, o) in out.iter_mut().enumerate().take(N) {
                    let s = _mm512_reduce_add_ps(acc[i]);
                    *o = if F == flush::BLOCK || F == flush::HALF { s } else { s * ws[0] };
                }
            }
        }
    };
}

avx512_path!(bw, "avx512f,avx512bw,avx2,fma", false);
avx512_path!(vnni, "avx512f,avx512bw,avx512vnni,avx2,fma", true);

/// `vpdpbusd`, kept out of the macro so the BW instantiation never names it in its own body.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn vnni_dot(
    acc: std::arch::x86_64::__m512i,
    u: std::arch::x86_64::__m512i,
    x: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512i {
    std::arch::x86_64::_mm512_dpbusd_epi32(acc, u, x)
}
