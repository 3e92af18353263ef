//! The converters from autoqat's stored formats decode to the values the formats' own readers
//! give: tiny reference packers written from the format docs (`crates/qat/src/export.rs`,
//! `crates/compress/src/rows.rs`), and a fixture written by the artifact's Python reader.

use autoqat_kernels::{
    ActMode, Acts, Granularity, KernelError, KernelPath, Kernels, MixedRows, PackedMatrix, WeightKind,
};
use half::f16;

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
    fn scale(&mut self) -> f16 {
        f16::from_f32(0.01 + (self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// The student export's packing: four digits (code + 1) a byte, LSB first, flat row-major,
/// padded with digit 1 (`pack_codes` in crates/qat/src/export.rs).
fn student_pack(codes: &[i8]) -> Vec<u8> {
    codes.chunks(4).map(|c| (0..4).map(|i| ((c.get(i).copied().unwrap_or(0) + 1) as u8) << (2 * i)).sum()).collect()
}

#[test]
fn student_bytes_decode_to_codes_times_f16_scales() {
    let mut rng = Rng(11);
    for (rows, cols) in [(1, 4), (3, 64), (5, 256), (7, 768), (2, 1)] {
        let mut grans = vec![Granularity::PerTensor, Granularity::PerRow];
        grans.extend([64, 128, 256].into_iter().filter(|g| cols % g == 0).map(Granularity::Group));
        for gran in grans {
            let codes: Vec<i8> = (0..rows * cols).map(|_| rng.below(3) as i8 - 1).collect();
            let n_scales = match gran {
                Granularity::PerTensor => 1,
                Granularity::PerRow => rows,
                Granularity::Group(g) => rows * cols / g,
            };
            let scales: Vec<f16> = (0..n_scales).map(|_| rng.scale()).collect();
            let m = PackedMatrix::from_student(rows, cols, &student_pack(&codes), &scales, gran).expect("student");
            let got = m.dequantize();
            for (i, (&c, &v)) in codes.iter().zip(&got).enumerate() {
                // The grouped view is row-major over [out, in], so group index = flat index / g.
                let s = match gran {
                    Granularity::PerTensor => scales[0],
                    Granularity::PerRow => scales[i / cols],
                    Granularity::Group(g) => scales[i / g],
                };
                assert_eq!(v, f32::from(c) * s.to_f32(), "{rows}x{cols} {gran:?} value {i}");
            }
        }
    }
}

#[test]
fn student_rejects_bad_digits_and_groups() {
    let s = [f16::ONE];
    assert!(matches!(
        PackedMatrix::from_student(1, 4, &[0b11], &s, Granularity::PerTensor),
        Err(KernelError::Code { value: 3, index: 0, .. })
    ));
    assert!(matches!(
        PackedMatrix::from_student(1, 100, &[0x55; 25], &[f16::ONE; 2], Granularity::Group(64)),
        Err(KernelError::Group { group: 64, cols: 100 })
    ));
    assert!(matches!(
        PackedMatrix::from_student(1, 8, &[0x55], &s, Granularity::PerTensor),
        Err(KernelError::Length { .. })
    ));
}

/// `(codes per byte, base, digit offset)` of each artifact kind (rows.rs `packing`).
fn packing(kind: WeightKind) -> (usize, u32, i32) {
    match kind {
        WeightKind::Binary => (8, 2, 0),
        WeightKind::Ternary => (5, 3, 1),
        WeightKind::Q4 => (2, 16, 7),
        WeightKind::Q8 => (1, 256, 128),
    }
}

/// The artifact's packing of one row (rows.rs `pack`): binary codes -1/+1 as digits 0/1,
/// others as code + offset; padding digits are those of code 0.
fn artifact_pack_row(kind: WeightKind, codes: &[i8]) -> Vec<u8> {
    let (per_byte, base, offset) = packing(kind);
    let digit = |c: i8| if kind == WeightKind::Binary { u32::from(c > 0) } else { (i32::from(c) + offset) as u32 };
    codes
        .chunks(per_byte)
        .map(|ch| (0..per_byte).map(|i| digit(ch.get(i).copied().unwrap_or(0)) * base.pow(i as u32)).sum::<u32>() as u8)
        .collect()
}

fn artifact_code(rng: &mut Rng, kind: WeightKind) -> i8 {
    match kind {
        WeightKind::Binary => [-1, 1][rng.below(2) as usize],
        WeightKind::Ternary => rng.below(3) as i8 - 1,
        WeightKind::Q4 => rng.below(15) as i8 - 7,
        WeightKind::Q8 => (rng.below(256) as i16 - 128) as i8,
    }
}

#[test]
fn artifact_rows_decode_to_codes_times_f16_scales() {
    let mut rng = Rng(5);
    for kind in WeightKind::ALL {
        for (rows, cols) in [(1, 1), (3, 7), (4, 130), (2, 257), (5, 1000)] {
            let codes: Vec<i8> = (0..rows * cols).map(|_| artifact_code(&mut rng, kind)).collect();
            let packed: Vec<u8> = codes.chunks(cols).flat_map(|row| artifact_pack_row(kind, row)).collect();
            let per_row = kind.artifact_scales_per_row(cols);
            let scales: Vec<f16> = (0..rows * per_row).map(|_| rng.scale()).collect();
            let m = PackedMatrix::from_artifact_rows(kind, rows, cols, &packed, &scales).expect("artifact");
            for (i, (&c, v)) in codes.iter().zip(m.dequantize()).enumerate() {
                let (r, col) = (i / cols, i % cols);
                let s = if kind == WeightKind::Q4 { scales[r * per_row + col / 128] } else { scales[r] };
                assert_eq!(v, f32::from(c) * s.to_f32(), "{kind:?} {rows}x{cols} value {i}");
            }
        }
    }
}

/// The fixture of `artifact_fixture.py`: `key v v v ...` lines.
fn fixture() -> std::collections::HashMap<String, Vec<u64>> {
    let text = include_str!("fixtures/artifact_rows.txt");
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.split_whitespace().map(|x| x.parse().expect("number")).collect()))
        .collect()
}

#[test]
fn artifact_matrix_matches_the_python_reader() {
    let f = fixture();
    let (rows, cols) = (f["rows"][0] as usize, f["cols"][0] as usize);
    let bytes = |k: &str| f[k].iter().map(|&v| v as u8).collect::<Vec<u8>>();
    let halves = |k: &str| f[k].iter().map(|&v| f16::from_bits(v as u16)).collect::<Vec<f16>>();
    let owned: Vec<(WeightKind, Vec<u8>, Vec<f16>)> = [
        (WeightKind::Binary, "binary"),
        (WeightKind::Ternary, "ternary"),
        (WeightKind::Q4, "q4"),
        (WeightKind::Q8, "q8"),
    ]
    .into_iter()
    .map(|(k, name)| (k, bytes(&format!("{name}.codes")), halves(&format!("{name}.scales"))))
    .collect();
    let parts: Vec<(WeightKind, &[u8], &[f16])> = owned.iter().map(|(k, c, s)| (*k, &c[..], &s[..])).collect();
    let m = MixedRows::from_artifact(rows, cols, &bytes("row_kind"), &parts).expect("artifact");
    let want: Vec<f32> = f["dense"].iter().map(|&b| f32::from_bits(b as u32)).collect();
    assert_eq!(m.dequantize(), want, "bit-identical to modeling_autoqat.unpack_weight");

    // The mixed product on every path equals the dense reference.
    let x: Vec<f32> = (0..cols).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
    for path in KernelPath::available() {
        let k = Kernels::with_path(path, 2).expect("path");
        for mode in [ActMode::F32, ActMode::Int8PerVector, ActMode::Int8PerBlock] {
            let acts = Acts::new(&x, 1, cols, mode).expect("acts");
            let xv = acts.values();
            let mut y = vec![0.0; rows];
            k.mixed_matmul_acts(&m, &acts, &mut y).expect("product");
            for r in 0..rows {
                let row = &want[r * cols..(r + 1) * cols];
                let exact: f64 = row.iter().zip(&xv).map(|(&w, &v)| f64::from(w) * f64::from(v)).sum();
                let mag: f64 = row.iter().zip(&xv).map(|(&w, &v)| (f64::from(w) * f64::from(v)).abs()).sum();
                let xmag: f64 = xv.iter().map(|&v| f64::from(v.abs())).sum();
                let tol = 4e-6 * (mag + 130.0 * xmag) + 1e-6;
                assert!((f64::from(y[r]) - exact).abs() <= tol, "{path} {mode:?} row {r}: {} vs {exact}", y[r]);
            }
        }
    }
}

#[test]
fn mixed_rows_reject_bad_covers() {
    let m = |rows| {
        PackedMatrix::from_codes(WeightKind::Ternary, rows, 4, &vec![0; rows * 4], &[1.0], Granularity::PerTensor)
    };
    let a = m(2).expect("m");
    let b = m(1).expect("m");
    assert!(MixedRows::new(3, vec![(a.clone(), vec![0, 2]), (b.clone(), vec![1])]).is_ok());
    assert!(matches!(
        MixedRows::new(3, vec![(a.clone(), vec![0, 1]), (b.clone(), vec![1])]),
        Err(KernelError::Rows(_))
    ));
    assert!(matches!(MixedRows::new(3, vec![(a.clone(), vec![0, 1])]), Err(KernelError::Rows(_))));
    assert!(matches!(MixedRows::new(3, vec![(a, vec![0, 5]), (b, vec![1])]), Err(KernelError::Rows(_))));
}
