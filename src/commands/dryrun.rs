//! `autoqat dryrun`: a large packed ternary model's forward pass at A8 then A4, with the peak
//! memory and time of each phase (see `autoqat_kd::dryrun`).

use anyhow::Context;
use autoqat_kd::dryrun::{dry_run, Shape};

use crate::cli::DryrunArgs;

/// Runs `autoqat dryrun`.
pub fn run(a: DryrunArgs) -> anyhow::Result<()> {
    let shape: Shape = a.shape.parse().map_err(anyhow::Error::msg)?;
    let r = dry_run(shape, a.seq, a.seed, tch::Device::Cpu)?;
    if let Some(out) = &a.out {
        std::fs::write(out, serde_json::to_string_pretty(&r)? + "\n")
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "shape {}: {:.2} B parameters, packed linears {:.2} GiB (dense f32 would be {:.1} GiB), estimate {:.2} GiB, {} tokens",
        a.shape,
        r.params as f64 / 1e9,
        gib(r.packed_bytes),
        gib(r.dense_fp32_bytes),
        gib(r.estimate_bytes),
        r.seq
    );
    for p in &r.phases {
        println!("{:<12} {:>9.2} s  peak RSS {:>9.1} MiB", p.name, p.seconds, p.peak_rss_mb);
    }
    println!(
        "A8 vs A4 logits: max |diff| {:.4}, mean |diff| {:.4}, top-1 agreement {:.3}",
        r.logits_max_abs_diff, r.logits_mean_abs_diff, r.top1_agreement
    );
    Ok(())
}
