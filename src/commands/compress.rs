//! `autoqat compress`: a checkpoint into a budgeted artifact (`autoqat_compress`), then the
//! verify stage: the zip is reloaded from disk in a fresh `autoqat eval` process and must score
//! the PPL measured in memory, or the run fails.
//!
//! The run directory holds `artifact/`, `artifact.zip`, `manifest.json` (the per-matrix mix)
//! and `summary.json`, whose `status`/`eval_ppl`/`error` are what the research loop reads, so
//! a failed compression is a crashed trial, never a keep.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use autoqat_compress::{compress, CompressRecipe, Summary};

use crate::cli::CompressArgs;

/// The verify stage's tolerance: both sides unpack the same bytes with the same kernels.
const VERIFY_REL_TOL: f64 = 1e-5;

/// Runs `autoqat compress`.
pub fn run(args: CompressArgs) -> anyhow::Result<()> {
    if args.schema {
        println!("{}", serde_json::to_string_pretty(&autoqat_compress::recipe::schema().to_json())?);
        return Ok(());
    }
    let recipe = CompressRecipe::from_file(&args.config)?;
    if args.check {
        println!(
            "ok: {} ({} track, {} bits/param)",
            args.config.display(),
            recipe.budget.track.name(),
            recipe.budget_bpp()
        );
        return Ok(());
    }
    let run_dir = args.run_dir.clone().unwrap_or_else(default_run_dir);
    let json = args.json;
    let mut log = |line: &str| {
        if !json {
            println!("[compress] {line}");
        }
    };
    let summary_path = run_dir.join(autoqat_workspace::run::SUMMARY_FILE);
    let no_verify = args.no_verify;
    let mut check = |s: &Summary| -> autoqat_compress::Result<Option<f64>> {
        if no_verify {
            return Ok(None);
        }
        if !json {
            println!("[compress] verify: reloading the zip in a fresh process");
        }
        verify(&recipe, s).map(Some).map_err(|e| autoqat_compress::CompressError::Verify(one_line(&e)))
    };
    // The pipeline writes summary.json either way (a crash summary on failure).
    let summary = compress(&recipe, &run_dir, args.resume, &mut log, &mut check)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("compress failed (run dir {})", run_dir.display()))?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary, &summary_path);
    }
    Ok(())
}

fn one_line(err: &anyhow::Error) -> String {
    err.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

fn print_summary(s: &Summary, path: &Path) {
    let mut mix: Vec<String> = s.mix.iter().map(|(k, n)| format!("{k} {n}")).collect();
    mix.sort();
    println!("status: {}", s.run.status);
    println!("eval_ppl: {:.4}", s.eval_ppl());
    println!("fp_ppl: {:.4}", s.fp_ppl());
    if let Some(v) = s.verify_ppl {
        println!("verify_ppl: {v:.4}");
    }
    println!("bits_per_param: {:.4} (budget {})", s.bits_per_param(), s.budget_bpp);
    println!("artifact_size_bytes: {}", s.artifact_size_bytes());
    println!("artifact_sha256: {}", s.artifact_sha256);
    println!("rows: {}", mix.join(", "));
    println!("artifact: {}", s.artifact_zip.display());
    println!("time_s: {:.1}", s.run.time_s);
    println!("summary: {}", path.display());
    // What the track asks a miner to submit, so nothing has to be looked up by hand.
    println!(
        "hand in: artifact_sha256 {} and artifact_size_bytes {}, with a public HTTPS URL that serves exactly these bytes without a redirect",
        s.artifact_sha256,
        s.artifact_size_bytes()
    );
}

/// Scores the zip in a fresh `autoqat eval` process and checks it against the in-memory PPL.
fn verify(recipe: &CompressRecipe, s: &Summary) -> anyhow::Result<f64> {
    let exe = autoqat_workspace::self_exe().context("cannot find the autoqat binary for the verify stage")?;
    let source = recipe.model_source();
    let tokenizer = autoqat_model::hub::resolve_model_dir(&source)?.join("tokenizer.json");
    let mut cmd = Command::new(exe);
    // SAFETY: prctl only asks the kernel to kill the child when this process dies (a killed
    // compress must not leave its verify running); no allocation or lock in between.
    #[cfg(target_os = "linux")]
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let out = cmd
        .arg("eval")
        .arg("--model")
        .arg(&s.artifact_zip)
        .arg("--text")
        .arg(recipe.resolve(&recipe.eval.text))
        .args(["--protocol", "docs", "--json", "--device", &recipe.model.device])
        .args(["--doc-tokens", &recipe.eval.doc_tokens.to_string()])
        .args(["--batch", &recipe.eval.batch.to_string()])
        .args(["--max-docs", &recipe.eval.max_docs.to_string()])
        .arg("--tokenizer")
        .arg(&tokenizer)
        // The reload is bounded by one layer too, as the compression was.
        .args(recipe.model.offload.then_some("--offload"))
        .output()
        .context("cannot run autoqat eval for the verify stage")?;
    if !out.status.success() {
        return Err(failed(format!("the artifact does not reload: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("verify: autoqat eval printed no JSON")?;
    let ppl = v["eval_ppl"].as_f64().filter(|p| p.is_finite());
    let Some(ppl) = ppl else {
        return Err(failed(format!("the reloaded artifact scores a non-finite PPL ({})", v["eval_ppl"])));
    };
    let rel = (ppl - s.eval_ppl()).abs() / s.eval_ppl();
    if rel > VERIFY_REL_TOL {
        return Err(failed(format!(
            "the reloaded artifact scores PPL {ppl:.6}, in memory {:.6} (relative difference {rel:.2e})",
            s.eval_ppl()
        )));
    }
    Ok(ppl)
}

fn default_run_dir() -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from("runs").join(format!("compress-{secs}"))
}

/// A verification failure: the compression ran, its artifact is not fit to hand in.
fn failed(msg: String) -> anyhow::Error {
    crate::exit::error(crate::exit::ExitKind::TrialFailed, msg)
}
