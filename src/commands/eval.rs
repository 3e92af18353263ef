//! `autoqat eval`: perplexity of a Hugging Face model on a text file, by the HF guide's
//! sliding-window algorithm (see `autoqat_model::eval`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use autoqat_model::{
    device_name, load_causal_lm, parse_device, parse_kind, perplexity, CausalLM, EvalOptions, ModelConfig,
    PlainBuilder, TextTokenizer,
};
use tch::{Device, Kind};

use crate::cli::EvalArgs;

/// Default context when --ctx is not given: the model's positions, at most this.
const DEFAULT_MAX_CTX: usize = 1024;

/// Loads a Hugging Face model, or a packed ternary export of `autoqat trial` (it has a
/// `quant.json`), with its weights dequantized for scoring.
fn load_any(source: &str, device: Device, kind: Kind) -> anyhow::Result<(ModelConfig, CausalLM, PathBuf)> {
    let dir = Path::new(source);
    if autoqat_qat::is_packed(dir) {
        let mut packed = autoqat_qat::load_packed(dir, device)
            .with_context(|| format!("cannot load packed model {source}"))?;
        packed.vs.set_kind(kind);
        return Ok((packed.cfg, packed.model, dir.to_path_buf()));
    }
    let loaded = load_causal_lm(source, device, kind, &PlainBuilder)
        .with_context(|| format!("cannot load model {source}"))?;
    Ok((loaded.cfg, loaded.model, loaded.dir))
}

/// Runs `autoqat eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    // Cheap checks first, so a typo fails before a model is loaded.
    let device = parse_device(&args.device)?;
    let kind = parse_kind(&args.dtype)?;
    let text = std::fs::read_to_string(&args.text)
        .with_context(|| format!("cannot read text file {}", args.text.display()))?;
    if text.trim().is_empty() {
        bail!("text file {} is empty (hint: pass a UTF-8 text to score)", args.text.display());
    }
    let (cfg, model, dir) = load_any(&args.model, device, kind)?;
    let tokenizer = TextTokenizer::from_path(&dir)?;
    let max_pos = cfg.max_position_embeddings as usize;
    let ctx = args.ctx.unwrap_or(max_pos.min(DEFAULT_MAX_CTX));
    let opts = EvalOptions { ctx, stride: args.stride.unwrap_or(ctx), batch: args.batch };
    let ids = tokenizer.encode(&text)?;
    let report = perplexity(&model, &ids, text.len(), &opts, device)?;
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(m) = v.as_object_mut() {
            m.insert("model".into(), args.model.clone().into());
            m.insert("text".into(), args.text.display().to_string().into());
            m.insert("ctx".into(), opts.ctx.into());
            m.insert("stride".into(), opts.stride.into());
            m.insert("batch".into(), opts.batch.into());
            m.insert("device".into(), device_name(device).into());
            m.insert("dtype".into(), args.dtype.clone().into());
        }
        println!("{v}");
    } else {
        println!("model:        {}", args.model);
        println!("text:         {}", args.text.display());
        println!("device:       {} ({})", device_name(device), args.dtype);
        println!("ctx:          {} (stride {}, batch {})", opts.ctx, opts.stride, opts.batch);
        println!("eval_loss:    {:.6}", report.eval_loss);
        println!("eval_ppl:     {:.4}", report.eval_ppl);
        println!("eval_bpb:     {:.6}", report.eval_bpb);
        println!("tokens:       {}", report.tokens);
        println!("bytes:        {}", report.bytes);
        println!("tokens_per_s: {:.1}", report.tokens_per_s);
    }
    Ok(())
}
