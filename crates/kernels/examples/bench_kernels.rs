//! Memory bandwidth and packed-kernel throughput on this machine.
//!
//! `cargo run --release -p autoqat-kernels --example bench_kernels [-- --quick]`
//!
//! Every matrix-vector product cycles through copies of its matrix totalling at least 256 MiB
//! (8x this machine's L3), so each call streams its weights from DRAM as a real decode step does;
//! "%BW" is weight bytes per second over the read bandwidth measured in the same run at the same
//! thread count. The dense f32 baseline is this crate's own AVX2+FMA GEMV
//! (`Kernels::dense_matvec`), not a BLAS.

use std::hint::black_box;
use std::time::{Duration, Instant};

use autoqat_kernels::{ActMode, Granularity, Kernels, PackedMatrix, WeightKind};

const MIB: usize = 1 << 20;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// Runs `f` repeatedly for at least `min` (after one warm-up call); seconds per call.
fn time(min: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < min {
        f();
        calls += 1;
    }
    start.elapsed().as_secs_f64() / calls as f64
}

/// Read bandwidth (GB/s) over `buf` split across `threads`.
fn read_bw(buf: &[u64], threads: usize, min: Duration) -> f64 {
    let chunk = buf.len().div_ceil(threads);
    let secs = time(min, || {
        std::thread::scope(|s| {
            for part in buf.chunks(chunk) {
                s.spawn(move || {
                    let mut acc = [0u64; 8];
                    for c in part.chunks_exact(8) {
                        for (a, v) in acc.iter_mut().zip(c) {
                            *a = a.wrapping_add(*v);
                        }
                    }
                    black_box(acc)
                });
            }
        })
    });
    (buf.len() * 8) as f64 / secs / 1e9
}

/// Copy bandwidth (GB/s, bytes read + written) from `src` to `dst` split across `threads`.
fn copy_bw(src: &[u64], dst: &mut [u64], threads: usize, min: Duration) -> f64 {
    let chunk = src.len().div_ceil(threads);
    let secs = time(min, || {
        std::thread::scope(|s| {
            for (d, c) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(c));
            }
        })
    });
    (src.len() * 16) as f64 / secs / 1e9
}

/// Copies of an object of `bytes` bytes needed to exceed the caches.
fn copies(bytes: usize) -> usize {
    (256 * MIB).div_ceil(bytes).max(2)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let min = Duration::from_millis(if quick { 150 } else { 600 });
    let mut rng = Rng(42);
    let threads_list = [1usize, 2];
    let kernels: Vec<Kernels> = threads_list.iter().map(|&t| Kernels::new(t)).collect();
    println!("kernel path: {} ({} threads available)", autoqat_kernels::kernel_path(), threads_list.len());

    let words = 512 * MIB / 8;
    let src: Vec<u64> = (0..words as u64).collect();
    let mut dst = vec![0u64; words];
    let mut bw = Vec::new();
    println!("\n== memory bandwidth, 512 MiB buffers ==");
    for &t in &threads_list {
        let r = read_bw(&src, t, min);
        let c = copy_bw(&src, &mut dst, t, min);
        println!("threads {t}: read {r:6.1} GB/s   copy {c:6.1} GB/s (read+write)");
        bw.push(r);
    }
    drop(src);
    drop(dst);

    let shapes: &[(usize, usize, &str)] = &[
        (576, 576, "smol q/o"),
        (192, 576, "smol k/v"),
        (1536, 576, "smol gate/up"),
        (576, 1536, "smol down"),
        (49152, 576, "smol head"),
        (4096, 4096, "qwen7b attn"),
        (11008, 4096, "qwen7b mlp"),
    ];
    println!("\n== matvec (batch 1), weights streamed from DRAM ==");
    println!(
        "{:<13} {:>11} {:<16} {:>3} {:>10} {:>9} {:>7} {:>8}",
        "shape", "rows x cols", "kernel", "thr", "us/matvec", "GB/s", "%BW", "vs dense"
    );
    for &(rows, cols, name) in shapes {
        let dense_w: Vec<f32> = (0..rows * cols).map(|_| rng.f32()).collect();
        let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
        let mut y = vec![0.0f32; rows];
        let ternary_codes: Vec<i8> = (0..rows * cols).map(|_| (rng.next() % 3) as i8 - 1).collect();
        let q4_codes: Vec<i8> = (0..rows * cols).map(|_| (rng.next() % 15) as i8 - 7).collect();
        let row_scales: Vec<f32> = (0..rows).map(|_| 0.01 + rng.f32().abs()).collect();
        let q4_scales: Vec<f32> = (0..rows * cols.div_ceil(128)).map(|_| 0.01 + rng.f32().abs()).collect();
        let ternary =
            PackedMatrix::from_codes(WeightKind::Ternary, rows, cols, &ternary_codes, &row_scales, Granularity::PerRow)
                .unwrap_or_else(|e| panic!("{e}"));
        let q4 = PackedMatrix::from_codes(WeightKind::Q4, rows, cols, &q4_codes, &q4_scales, Granularity::Group(128))
            .unwrap_or_else(|e| panic!("{e}"));

        let dense_bytes = rows * cols * 4;
        let dense_set: Vec<Vec<f32>> = (0..copies(dense_bytes)).map(|_| dense_w.clone()).collect();
        drop(dense_w);
        let mut dense_secs = [0.0f64; 2];
        for (ti, k) in kernels.iter().enumerate() {
            let mut i = 0;
            let secs = time(min, || {
                i = (i + 1) % dense_set.len();
                k.dense_matvec(&dense_set[i], rows, cols, &x, &mut y).unwrap_or_else(|e| panic!("{e}"));
            });
            dense_secs[ti] = secs;
            report(name, rows, cols, "dense f32", k.threads(), secs, dense_bytes, bw[ti], secs);
        }
        drop(dense_set);

        for (label, m, mode) in [
            ("ternary int8", &ternary, ActMode::Int8PerVector),
            ("ternary f32act", &ternary, ActMode::F32),
            ("q4 int8", &q4, ActMode::Int8PerVector),
            ("q4 f32act", &q4, ActMode::F32),
        ] {
            let set: Vec<PackedMatrix> = (0..copies(m.bytes())).map(|_| m.clone()).collect();
            for (ti, k) in kernels.iter().enumerate() {
                let mut i = 0;
                let secs = time(min, || {
                    i = (i + 1) % set.len();
                    k.matvec(&set[i], &x, mode, &mut y).unwrap_or_else(|e| panic!("{e}"));
                });
                report(name, rows, cols, label, k.threads(), secs, m.bytes(), bw[ti], dense_secs[ti]);
            }
        }
        println!();
    }

    println!("== matmul (prefill), ternary per-row scales ==");
    println!(
        "{:<13} {:>11} {:<16} {:>4} {:>3} {:>10} {:>9} {:>11}",
        "shape", "rows x cols", "kernel", "n", "thr", "ms", "GMAC/s", "us/token"
    );
    let mm_shapes: &[(usize, usize, &str)] =
        &[(1536, 576, "smol gate/up"), (4096, 4096, "qwen7b attn"), (11008, 4096, "qwen7b mlp")];
    for &(rows, cols, name) in mm_shapes {
        let codes: Vec<i8> = (0..rows * cols).map(|_| (rng.next() % 3) as i8 - 1).collect();
        let scales: Vec<f32> = (0..rows).map(|_| 0.01 + rng.f32().abs()).collect();
        let m = PackedMatrix::from_codes(WeightKind::Ternary, rows, cols, &codes, &scales, Granularity::PerRow)
            .unwrap_or_else(|e| panic!("{e}"));
        for n in [128usize, 512] {
            if quick && n == 512 && rows * cols > 5_000_000 {
                continue;
            }
            let x: Vec<f32> = (0..n * cols).map(|_| rng.f32()).collect();
            let mut y = vec![0.0f32; n * rows];
            for (label, mode) in [("ternary int8", ActMode::Int8PerVector), ("ternary f32act", ActMode::F32)] {
                for k in &kernels {
                    let secs = time(min, || k.matmul(&m, &x, n, mode, &mut y).unwrap_or_else(|e| panic!("{e}")));
                    let gmac = (rows * cols * n) as f64 / secs / 1e9;
                    println!(
                        "{name:<13} {:>11} {label:<16} {n:>4} {:>3} {:>10.2} {gmac:>9.1} {:>11.1}",
                        format!("{rows}x{cols}"),
                        k.threads(),
                        secs * 1e3,
                        secs * 1e6 / n as f64
                    );
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn report(name: &str, rows: usize, cols: usize, label: &str, t: usize, secs: f64, bytes: usize, bw: f64, dense: f64) {
    let gbs = bytes as f64 / secs / 1e9;
    println!(
        "{name:<13} {:>11} {label:<16} {t:>3} {:>10.1} {gbs:>9.1} {:>6.0}% {:>7.1}x",
        format!("{rows}x{cols}"),
        secs * 1e6,
        100.0 * gbs / bw,
        dense / secs
    );
}
