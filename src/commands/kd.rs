//! `autoqat kd baseline|collect|report`: the distillation-traces track's commands (the work is
//! in `autoqat_kd`; this module parses, prints and names the fix when something is wrong).

use std::path::Path;

use anyhow::{bail, Context};
use autoqat_http::HttpSettings;
use autoqat_kd::baseline::{run_baseline, TeacherBaseline};
use autoqat_kd::collect::{collect, read_prompts, CollectOptions};
use autoqat_kd::report::{report, weight_bytes, ReportInputs};
use autoqat_kd::teacher::{LocalTeacher, OpenAiSettings, OpenAiTeacher, Teacher, TeacherSpec};
use autoqat_model::{parse_device, TextTokenizer};

use crate::cli::{KdBaselineArgs, KdCollectArgs, KdCommand, KdReportArgs, TeacherArgs};

/// Runs `autoqat kd <command>`.
pub fn run(cmd: KdCommand) -> anyhow::Result<()> {
    match cmd {
        KdCommand::Baseline(a) => baseline(a),
        KdCommand::Collect(a) => collect_cmd(a),
        KdCommand::Report(a) => report_cmd(a),
    }
}

/// The teacher the flags name, and the weight bytes of a local one.
fn open_teacher(a: &TeacherArgs) -> anyhow::Result<(Box<dyn Teacher>, Option<std::path::PathBuf>)> {
    let spec: TeacherSpec = a.teacher.parse().map_err(anyhow::Error::msg)?;
    match spec {
        TeacherSpec::OpenAi { model } => {
            let settings = OpenAiSettings {
                model,
                base_url: a.base_url.clone(),
                api_key_env: a.api_key_env.clone(),
                http: HttpSettings { timeout_s: a.timeout_s, max_retries: a.max_retries, ..HttpSettings::default() },
            };
            Ok((Box::new(OpenAiTeacher::new(&settings, a.min_interval_s)?), None))
        }
        TeacherSpec::Local(dir) => {
            let device = parse_device(&a.device)?;
            let t = LocalTeacher::new(&dir, device)
                .with_context(|| format!("cannot load the local teacher {}", dir.display()))?;
            Ok((Box::new(t), Some(dir)))
        }
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    Ok(autoqat_workspace::atomic::write_json(path, value)?)
}

fn baseline(a: KdBaselineArgs) -> anyhow::Result<()> {
    if !a.teacher.template.contains("{prompt}") {
        bail!("the template `{}` has no {{prompt}} placeholder", a.teacher.template);
    }
    // The report decodes the same rendered prompts with the student.
    let prompts: Vec<String> =
        read_prompts(&a.teacher.prompts)?.iter().map(|p| a.teacher.template.replace("{prompt}", p)).collect();
    let (mut teacher, local) = open_teacher(&a.teacher)?;
    let bytes = local.as_deref().map(weight_bytes).transpose()?;
    let n = prompts.len();
    let b = run_baseline(teacher.as_mut(), &prompts, a.teacher.max_tokens, bytes, &mut |ans| {
        println!("[{:>4}/{n}] {} tokens in {:.3} s", ans.idx + 1, ans.completion_tokens, ans.latency_s);
    })?;
    write_json(&a.out, &b)?;
    println!(
        "teacher {}: {:.1} decode tokens/s, latency p50 {:.3} s p90 {:.3} s p99 {:.3} s, {} prompt + {} completion tokens -> {}",
        b.teacher,
        b.decode_tokens_per_s,
        b.latency_p50_s,
        b.latency_p90_s,
        b.latency_p99_s,
        b.prompt_tokens,
        b.completion_tokens,
        a.out.display()
    );
    Ok(())
}

fn collect_cmd(a: KdCollectArgs) -> anyhow::Result<()> {
    let spec: TeacherSpec = a.teacher.teacher.parse().map_err(anyhow::Error::msg)?;
    let prompts = read_prompts(&a.teacher.prompts)?;
    let tok_path = match (&a.student_tokenizer, spec) {
        (Some(t), _) => t.clone(),
        (None, TeacherSpec::Local(dir)) => dir,
        (None, TeacherSpec::OpenAi { .. }) => bail!(
            "--student-tokenizer is required with an API teacher (the student's tokenizer.json or model directory)"
        ),
    };
    let tok = TextTokenizer::from_path(&tok_path)?;
    let hash = autoqat_traces::tokenizer_hash(&tok_path)?;
    let (mut teacher, _) = open_teacher(&a.teacher)?;
    let opts = CollectOptions {
        prompts,
        out: a.out.clone(),
        top_k: a.top_k,
        max_tokens: a.teacher.max_tokens,
        template: a.teacher.template.clone(),
        prompts_per_shard: a.prompts_per_shard,
    };
    let total = opts.prompts.len();
    let mut fresh = 0usize;
    let index = collect(teacher.as_mut(), &tok, &hash, &opts, &mut |p, index| {
        fresh += 1;
        println!(
            "[{:>4}/{total}] prompt {}: {} positions, {} invalid -> {}",
            index.prompts.len(),
            p.idx,
            p.positions,
            p.invalid,
            p.shard
        );
    })?;
    let s = &index.stats;
    println!(
        "{} prompts collected ({} now, {} from before): {} positions, invalid rate {:.2}% (target < 2%), clamped {:.2}%, mean Other mass {:.4}, Top-K coverage {:.4}, {} duplicate and {} surplus alternatives dropped -> {}",
        index.prompts.len(),
        fresh,
        index.prompts.len() - fresh,
        s.positions,
        100.0 * s.invalid_rate,
        100.0 * s.clamped as f64 / s.positions.max(1) as f64,
        s.mean_other_mass,
        s.topk_coverage,
        s.duplicates,
        s.truncated,
        a.out.display()
    );
    if s.invalid_rate >= 0.02 {
        // Near-certain positions are clamped, not invalid: what is left is a sampled token the
        // student cannot encode (or a server that lost its bytes).
        eprintln!(
            "warning: {:.2}% of the positions are invalid (target < 2%): their sampled tokens have no student encoding; check that --student-tokenizer belongs to the student, and that the server sends each token's `bytes`",
            100.0 * s.invalid_rate
        );
    }
    Ok(())
}

fn report_cmd(a: KdReportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.baseline).with_context(|| {
        format!("cannot read the teacher baseline {} (hint: run `autoqat kd baseline` first)", a.baseline.display())
    })?;
    let baseline: TeacherBaseline =
        serde_json::from_str(&text).with_context(|| format!("{} is not a teacher baseline", a.baseline.display()))?;
    let Some(teacher_bytes) = a.teacher_bytes.or(baseline.weight_bytes) else {
        bail!("the teacher's memory is unknown for an API teacher: pass --teacher-bytes (its parameters times 2 for bf16)");
    };
    let device = parse_device(&a.device)?;
    let r = report(&ReportInputs {
        student: a.student.clone(),
        traces: a.traces.clone(),
        baseline: &baseline,
        teacher_bytes,
        device,
        kernel_threads: (a.kernel == "auto").then_some(a.threads.max(1)),
    })?;
    write_json(&a.out, &r)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("{:<10} {:>12} {:>16} {:>12}", "", "quality", "memory bytes", "tokens/s");
    println!("{:<10} {:>12.4} {:>16} {:>12.1}", "student", r.quality_s, r.memory_s_bytes, r.tps_s);
    println!("{:<10} {:>12.4} {:>16} {:>12.1}", "teacher", r.quality_t, r.memory_t_bytes, r.tps_t);
    println!("quality: {} over {} positions (student NLL {:.4} nats)", r.quality_metric, r.positions, r.student_nll);
    println!("QEI = (quality_s / quality_t) / (memory_s / memory_t) = {:.4}", r.qei);
    println!("QEIspeed = QEI * TPS_s / TPS_t = {:.4} (student decoded by {})", r.qei_speed, r.decode_path);
    println!("-> {}", a.out.display());
    Ok(())
}
