//! Every path this CPU supports, every kind, scale granularity and activation mode, odd shapes:
//! the kernels equal an f64 reference over the dequantized weights and the activations the
//! kernels multiply by (the int8-dequantized ones, or the raw f32).

use autoqat_kernels::{ActMode, Acts, Granularity, KernelError, KernelPath, Kernels, PackedMatrix, WeightKind};

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0
    }
}

fn random_code(rng: &mut Rng, kind: WeightKind) -> i8 {
    match kind {
        WeightKind::Binary => [-1, 1][rng.below(2) as usize],
        WeightKind::Ternary => rng.below(3) as i8 - 1,
        WeightKind::Q4 => rng.below(16) as i8 - 8,
        WeightKind::Q8 => rng.below(256) as u8 as i8,
    }
}

/// A random matrix: codes, scales, and the dense values computed here (not by the crate).
fn random_matrix(
    rng: &mut Rng,
    kind: WeightKind,
    rows: usize,
    cols: usize,
    gran: Granularity,
) -> (PackedMatrix, Vec<f64>) {
    let codes: Vec<i8> = (0..rows * cols).map(|_| random_code(rng, kind)).collect();
    let per_row = match gran {
        Granularity::PerTensor | Granularity::PerRow => 1,
        Granularity::Group(g) => cols.div_ceil(g),
    };
    let n_scales = if gran == Granularity::PerTensor { 1 } else { rows * per_row };
    let scales: Vec<f32> = (0..n_scales).map(|_| 0.01 + rng.uniform()).collect();
    let scale = |r: usize, c: usize| match gran {
        Granularity::PerTensor => scales[0],
        Granularity::PerRow => scales[r],
        Granularity::Group(g) => scales[r * per_row + c / g],
    };
    let dense = (0..rows * cols).map(|i| f64::from(codes[i]) * f64::from(scale(i / cols, i % cols))).collect();
    let m = PackedMatrix::from_codes(kind, rows, cols, &codes, &scales, gran).expect("valid matrix");
    (m, dense)
}

/// Checks `y` (`[n, rows]`) against `dense` times the kernels' activation values.
fn check(y: &[f32], dense: &[f64], acts: &Acts, rows: usize, cols: usize, kind: WeightKind, what: &str) {
    // The largest digit offset a path removes in f32 (q8: 128 with VNNI), times the largest scale.
    let offset = match kind {
        WeightKind::Binary | WeightKind::Ternary => 1.0,
        WeightKind::Q4 => 8.0,
        WeightKind::Q8 => 128.0,
    } * 1.01;
    let x = acts.values();
    for j in 0..acts.n() {
        for r in 0..rows {
            let terms = (0..cols).map(|c| (dense[r * cols + c], f64::from(x[j * cols + c])));
            let (want, mag, xmag) =
                terms.fold((0.0, 0.0, 0.0), |(s, m, xm), (w, v)| (s + w * v, m + (w * v).abs(), xm + v.abs()));
            // Offsets are removed in f32, so the error scales with offset * Σ|x| as well as Σ|w·x|.
            let tol = 4e-6 * (mag + offset * xmag) + 1e-6;
            let got = f64::from(y[j * rows + r]);
            assert!((got - want).abs() <= tol, "{what}: y[{j},{r}] = {got}, want {want} (tol {tol})");
        }
    }
}

const KINDS: [WeightKind; 4] = [WeightKind::Binary, WeightKind::Ternary, WeightKind::Q4, WeightKind::Q8];
const MODES: [ActMode; 3] = [ActMode::F32, ActMode::Int8PerVector, ActMode::Int8PerBlock];

fn grans(cols: usize) -> Vec<Granularity> {
    let mut g = vec![Granularity::PerTensor, Granularity::PerRow, Granularity::Group(64), Granularity::Group(128)];
    g.extend([Granularity::Group(256), Granularity::Group(192), Granularity::Group(7), Granularity::Group(cols)]);
    g
}

fn run_all(path: KernelPath, threads: usize, cols_list: &[usize], rows_list: &[usize], ns: &[usize]) {
    let k = Kernels::with_path(path, threads).expect("available path");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (path as u64) << 8 ^ threads as u64);
    for &cols in cols_list {
        for &rows in rows_list {
            for kind in KINDS {
                for gran in grans(cols) {
                    let (m, dense) = random_matrix(&mut rng, kind, rows, cols, gran);
                    for mode in MODES {
                        for &n in ns {
                            let x: Vec<f32> = (0..n * cols).map(|_| rng.normal()).collect();
                            let acts = Acts::new(&x, n, cols, mode).expect("valid acts");
                            let what = format!("{path} t{threads} {kind:?} {gran:?} {mode:?} {rows}x{cols} n{n}");
                            let mut y = vec![f32::NAN; n * rows];
                            if n == 1 {
                                k.matvec(&m, &x, mode, &mut y).expect("matvec");
                            } else {
                                k.matmul(&m, &x, n, mode, &mut y).expect("matmul");
                            }
                            check(&y, &dense, &acts, rows, cols, kind, &what);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn every_path_kind_granularity_and_mode_matches_the_reference() {
    for path in KernelPath::available() {
        run_all(path, 1, &[1, 7, 33, 64, 130, 257, 1000], &[1, 3, 17], &[1, 2, 5]);
    }
}

#[test]
fn threads_split_rows_and_tiles_cover_large_batches() {
    for path in KernelPath::available() {
        for threads in [2, 3] {
            run_all(path, threads, &[130, 1000], &[1, 17, 40], &[1, 7]);
        }
        // More activation rows than one tile (64), with a partial last quad.
        run_all(path, 2, &[257], &[9], &[70]);
    }
}

#[test]
fn large_rows_with_int8_per_vector_do_not_overflow() {
    // Long rows of extreme codes: the whole-row i32 accumulation is used up to 65536 values.
    for path in KernelPath::available() {
        let k = Kernels::with_path(path, 2).expect("path");
        for kind in [WeightKind::Q8, WeightKind::Q4] {
            for cols in [65_536, 70_000] {
                let extreme = if kind == WeightKind::Q8 { -128 } else { -8 };
                let codes = vec![extreme; 2 * cols];
                let m =
                    PackedMatrix::from_codes(kind, 2, cols, &codes, &[0.5, 0.25], Granularity::PerRow).expect("matrix");
                let x = vec![-1.0f32; cols];
                let acts = Acts::new(&x, 1, cols, ActMode::Int8PerVector).expect("acts");
                let mut y = vec![0.0; 2];
                k.matmul_acts(&m, &acts, &mut y).expect("product");
                let want = f64::from(extreme) * -(cols as f64);
                for (r, s) in [0.5, 0.25].iter().enumerate() {
                    let w = want * s;
                    assert!((f64::from(y[r]) - w).abs() <= 1e-5 * w.abs(), "{path} {kind:?} {cols}: {} vs {w}", y[r]);
                }
            }
        }
    }
}

#[test]
fn int8_activations_follow_absmax_rounding() {
    let x = [0.5f32, -1.0, 0.25, 0.0, 1.0 / 254.0];
    let a = Acts::new(&x, 1, 5, ActMode::Int8PerVector).expect("acts");
    let q: Vec<f32> = a.values().iter().map(|v| v * 127.0).collect();
    // round-half-even of 63.5 is 64, of 0.5 is 0, as torch.round does.
    assert_eq!(q.iter().map(|v| v.round() as i32).collect::<Vec<_>>(), vec![64, -127, 32, 0, 0]);
}

#[test]
fn bad_shapes_and_codes_are_errors() {
    let k = Kernels::with_path(KernelPath::Portable, 1).expect("portable");
    let err = PackedMatrix::from_codes(WeightKind::Ternary, 2, 3, &[0; 5], &[1.0], Granularity::PerTensor);
    assert!(matches!(err, Err(KernelError::Length { .. })));
    let err = PackedMatrix::from_codes(WeightKind::Ternary, 1, 3, &[0, 2, 0], &[1.0], Granularity::PerTensor);
    assert!(matches!(err, Err(KernelError::Code { index: 1, .. })));
    let err = PackedMatrix::from_codes(WeightKind::Binary, 1, 2, &[0, 1], &[1.0], Granularity::PerRow);
    assert!(matches!(err, Err(KernelError::Code { index: 0, .. })));
    let err = PackedMatrix::from_codes(WeightKind::Q4, 1, 2, &[1, 1], &[1.0], Granularity::Group(0));
    assert!(matches!(err, Err(KernelError::Group { .. })));
    let err = PackedMatrix::from_codes(WeightKind::Q8, 0, 2, &[], &[], Granularity::PerRow);
    assert!(matches!(err, Err(KernelError::Empty { .. })));
    let m = PackedMatrix::from_codes(WeightKind::Q8, 2, 3, &[1; 6], &[1.0, 2.0], Granularity::PerRow).expect("m");
    let mut y = vec![0.0; 2];
    assert!(matches!(k.matvec(&m, &[1.0; 4], ActMode::F32, &mut y), Err(KernelError::Length { .. })));
    assert!(matches!(k.matvec(&m, &[1.0; 3], ActMode::F32, &mut y[..1]), Err(KernelError::Length { .. })));
    let a = Acts::new(&[1.0; 4], 1, 4, ActMode::F32).expect("acts");
    assert!(matches!(k.matmul_acts(&m, &a, &mut y), Err(KernelError::Cols { .. })));
    k.matvec(&m, &[1.0, 1.0, 1.0], ActMode::F32, &mut y).expect("product");
    assert_eq!(y, vec![3.0, 6.0]);
}

#[test]
fn kernel_path_names_a_supported_path() {
    let name = autoqat_kernels::kernel_path();
    let path = KernelPath::ALL.into_iter().find(|p| p.name() == name).expect("known name");
    assert!(path.supported());
    assert!(KernelPath::available().contains(&KernelPath::Portable));
    assert!(matches!(Kernels::with_path(path, 1).map(|k| k.path()), Ok(p) if p == path));
}
