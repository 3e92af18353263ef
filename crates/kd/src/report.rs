//! `autoqat kd report`: the student's efficiency against the teacher, every term measured
//! (docs/contracts.md#the-distillation-traces-track): quality as top-1 agreement with the teacher's own greedy tokens on held-out
//! traces (the teacher agrees with itself: quality_t = 1), memory as the bytes of the packed
//! export and of the teacher's weights, speed as decode tokens/s of a greedy KV-cached decode of
//! the baseline's prompts against the teacher's measured baseline.
//!
//! `QEI = (quality_s / quality_t) / (memory_s / memory_t)`, `QEIspeed = QEI * TPS_s / TPS_t`.
//!
//! On a CPU the student decodes on the packed low-bit kernels (`autoqat-kernels`), so `TPS_s`
//! is what a ternary model delivers and not the speed of its dequantized f32 copy; the report
//! names the path it measured (`decode_path`).

use std::path::{Path, PathBuf};

use autoqat_model::{greedy_decode, stop_ids, TextTokenizer};
use autoqat_qat::train::traces::TraceData;
use autoqat_toolkit::loss::weighted_sample_ce;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::baseline::TeacherBaseline;
use crate::error::{io_err, KdError, Result};

/// What the report needs.
pub struct ReportInputs<'a> {
    /// The student's packed export (`<run>/export`).
    pub student: PathBuf,
    /// Held-out traces (not trained on).
    pub traces: PathBuf,
    /// The teacher's measured baseline.
    pub baseline: &'a TeacherBaseline,
    /// The teacher's weight bytes (from the baseline of a local teacher, or given).
    pub teacher_bytes: u64,
    /// Compute device.
    pub device: Device,
    /// Decode the student on the packed kernels with this many threads (CPU only); None: the
    /// dequantized f32 model through libtorch.
    pub kernel_threads: Option<usize>,
}

/// `kd_report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KdReport {
    /// How quality is measured.
    pub quality_metric: String,
    /// Student top-1 agreement with the teacher's greedy tokens on the held-out traces.
    pub quality_s: f64,
    /// The teacher's agreement with its own greedy tokens.
    pub quality_t: f64,
    /// Student mean cross entropy on the teacher's tokens (nats), for reference.
    pub student_nll: f64,
    /// Held-out positions scored.
    pub positions: u64,
    /// Bytes of the student's packed export (`model.safetensors`).
    pub memory_s_bytes: u64,
    /// Bytes of the teacher's weights.
    pub memory_t_bytes: u64,
    /// Student greedy decode tokens/s (KV cache, same prompts and length as the baseline).
    pub tps_s: f64,
    /// Teacher decode tokens/s from the baseline.
    pub tps_t: f64,
    /// Quality per memory, relative to the teacher.
    pub qei: f64,
    /// QEI times the relative decode speed.
    pub qei_speed: f64,
    /// What decoded the student: the packed kernels (their path and threads) or libtorch.
    #[serde(default)]
    pub decode_path: String,
    /// Where the figures came from.
    pub student: String,
    /// The teacher.
    pub teacher: String,
}

/// Sum of the sizes of a model directory's `*.safetensors` files: the bytes its weights take.
pub fn weight_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if entry.path().extension().is_some_and(|e| e == "safetensors") {
            total += entry.metadata().map_err(io_err(&entry.path()))?.len();
        }
    }
    if total == 0 {
        return Err(KdError::Config(format!("{} holds no *.safetensors weights", dir.display())));
    }
    Ok(total)
}

/// Measures and computes the report.
pub fn report(inp: &ReportInputs<'_>) -> Result<KdReport> {
    if !autoqat_qat::is_packed(&inp.student) {
        return Err(KdError::Config(format!(
            "{} is not a packed export (no quant.json); pass the trial's <run>/export directory",
            inp.student.display()
        )));
    }
    let packed = autoqat_qat::load_packed(&inp.student, inp.device).map_err(|e| KdError::Config(e.to_string()))?;
    let model = &packed.model;
    let tok_file = inp.student.join("tokenizer.json");
    let tok = TextTokenizer::from_path(&tok_file)?;
    let data =
        TraceData::load(&inp.traces, &tok, &tok_file, 20, packed.cfg.max_position_embeddings.max(1) as usize - 1)
            .map_err(|e| KdError::Config(e.to_string()))?;

    let (mut agree, mut positions, mut nll_sum) = (0.0f64, 0u64, 0.0f64);
    tch::no_grad(|| -> Result<()> {
        for i in 0..data.len() {
            let b = data.batch_of(&[i], inp.device);
            let logits = model.forward(&b.input);
            let v = logits.size()[2];
            let at = logits.reshape([-1, v]).index_select(0, &b.positions).to_kind(Kind::Float);
            let t = &b.targets;
            let hits = at.argmax(-1, false).eq_tensor(&t.sample).to_kind(Kind::Float) * &t.valid;
            agree += hits.sum(Kind::Float).double_value(&[]);
            nll_sum += weighted_sample_ce(&at, t, &t.valid).double_value(&[]) * b.seen as f64;
            positions += b.seen;
        }
        Ok(())
    })?;
    if positions == 0 {
        return Err(KdError::Config(format!("{} has no valid position to score", inp.traces.display())));
    }

    let stop = stop_ids(&inp.student);
    // Speed is measured on the packed kernels where they run (the quality above is the same
    // computation either way: the kernels' outputs equal the dequantized model's).
    let on_kernels = match inp.kernel_threads.filter(|_| inp.device == Device::Cpu) {
        Some(threads) => Some(
            autoqat_qat::load_packed_kernels(&inp.student, threads, None)
                .map_err(|e| KdError::Config(e.to_string()))?,
        ),
        None => None,
    };
    if on_kernels.is_some() {
        // The kernels' pool has the threads; libtorch's would fight it for the same cores.
        tch::set_num_threads(1);
    }
    let (decoder, decode_path) = match &on_kernels {
        Some(k) => (&k.model, format!("{} kernels, {} thread(s)", k.kernels.path().name(), k.kernels.threads())),
        None => (model, format!("libtorch, dequantized f32 ({})", autoqat_model::device_name(inp.device))),
    };
    let (mut tokens, mut secs) = (0usize, 0.0f64);
    for a in &inp.baseline.answers {
        let ids = tok.encode(&a.prompt)?;
        let out = greedy_decode(decoder, &ids, inp.baseline.max_tokens, &stop, 0, inp.device)?;
        tokens += out.steps.len();
        secs += out.total_s;
    }
    let tps_s = tokens as f64 / secs.max(1e-9);

    let memory_s = weight_bytes(&inp.student)?;
    let quality_s = agree / positions as f64;
    let quality_t = 1.0;
    let qei = (quality_s / quality_t) / (memory_s as f64 / inp.teacher_bytes as f64);
    let tps_t = inp.baseline.decode_tokens_per_s;
    Ok(KdReport {
        quality_metric: "top-1 agreement with the teacher's greedy tokens on held-out traces".into(),
        quality_s,
        quality_t,
        student_nll: nll_sum / positions as f64,
        positions,
        memory_s_bytes: memory_s,
        memory_t_bytes: inp.teacher_bytes,
        tps_s,
        tps_t,
        qei,
        qei_speed: qei * tps_s / tps_t.max(1e-9),
        decode_path,
        student: inp.student.display().to_string(),
        teacher: inp.baseline.teacher.clone(),
    })
}
