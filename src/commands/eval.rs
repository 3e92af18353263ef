//! `autoqat eval`: perplexity of a Hugging Face model, a packed export of `autoqat trial` or a
//! compression artifact of `autoqat compress`, by the HF guide's sliding windows or by the
//! compression track's document protocol (see `autoqat_model::eval`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use autoqat_compress::artifact::{self, ArtifactFiles};
use autoqat_model::{
    device_name, load_causal_lm, load_offloaded, parse_device, parse_kind, CausalLM, DocEvalOptions, EvalOptions,
    EvalSet, ModelConfig, Offload, PlainBuilder, TextTokenizer,
};
use tch::{Device, Kind};

use crate::cli::{EvalArgs, Protocol};

/// Default context when --ctx is not given: the model's positions, at most this.
const DEFAULT_MAX_CTX: usize = 1024;

/// A model ready to score and the tokenizer that came with it, if any.
struct Scored {
    cfg: ModelConfig,
    model: CausalLM,
    tokenizer: Option<TextTokenizer>,
    /// With `--offload`: reads the layers in; its read errors are checked after the pass.
    offload: Option<Arc<Offload>>,
    /// What the offloaded layers are read from (an artifact's dense shards), kept until scored.
    _shards: Option<Box<dyn std::any::Any>>,
}

/// Loads a Hugging Face model, a packed ternary export of `autoqat trial` (it has a
/// `quant.json`), or a compression artifact (a zip, or its directory), weights dequantized.
fn load_any(source: &str, device: Device, kind: Kind, offload: bool) -> anyhow::Result<Scored> {
    let dir = Path::new(source);
    if artifact::is_artifact(dir) {
        let files = ArtifactFiles::read(dir).with_context(|| format!("cannot read artifact {source}"))?;
        let tokenizer =
            files.tokenizer().map(|b| TextTokenizer::from_bytes(b, &dir.join("tokenizer.json"))).transpose()?;
        let cannot = || format!("cannot load artifact {source}");
        if offload {
            let a = artifact::load_offloaded(&files, device, kind, &std::env::temp_dir()).with_context(cannot)?;
            let (model, offload, shards) =
                (a.model, Some(a.offload), Some(Box::new(a.shards) as Box<dyn std::any::Any>));
            return Ok(Scored { cfg: a.cfg, model, tokenizer, offload, _shards: shards });
        }
        let loaded = artifact::load(&files, device, kind).with_context(cannot)?;
        return Ok(Scored { cfg: loaded.cfg, model: loaded.model, tokenizer, offload: None, _shards: None });
    }
    if autoqat_qat::is_packed(dir) {
        if offload {
            bail!("--offload reads Hugging Face checkpoints and compression artifacts, not the packed export {source} (hint: drop --offload)");
        }
        let mut packed =
            autoqat_qat::load_packed(dir, device).with_context(|| format!("cannot load packed model {source}"))?;
        packed.vs.set_kind(kind);
        let tokenizer = TextTokenizer::from_path(dir).ok();
        return Ok(Scored { cfg: packed.cfg, model: packed.model, tokenizer, offload: None, _shards: None });
    }
    let cannot = || format!("cannot load model {source}");
    let (loaded, offload) = if offload {
        let (loaded, o) = load_offloaded(source, device, kind, &PlainBuilder).with_context(cannot)?;
        (loaded, Some(o))
    } else {
        (load_causal_lm(source, device, kind, &PlainBuilder).with_context(cannot)?, None)
    };
    let tokenizer = Some(TextTokenizer::from_path(&loaded.dir)?);
    Ok(Scored { cfg: loaded.cfg, model: loaded.model, tokenizer, offload, _shards: None })
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
    let reference = args.tokenizer.as_deref().map(reference_tokenizer).transpose()?;
    let scored = load_any(&args.model, device, kind, args.offload)?;
    let tokenizer = match (reference, scored.tokenizer) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => bail!(
            "{} ships no tokenizer.json (hint: pass --tokenizer with the reference or source model's tokenizer.json)",
            args.model
        ),
    };
    let mut fields = serde_json::Map::new();
    let report = match args.protocol {
        Protocol::Windows => {
            let max_pos = scored.cfg.max_position_embeddings as usize;
            let ctx = args.ctx.unwrap_or(max_pos.min(DEFAULT_MAX_CTX));
            let opts = EvalOptions { ctx, stride: args.stride.unwrap_or(ctx), batch: args.batch.unwrap_or(1) };
            fields.insert("ctx".into(), opts.ctx.into());
            fields.insert("stride".into(), opts.stride.into());
            fields.insert("batch".into(), opts.batch.into());
            EvalSet::windows_of_text(&tokenizer, &text, opts, 0)?.score(&scored.model, device)?
        }
        Protocol::Docs => {
            let opts = DocEvalOptions { max_tokens: args.doc_tokens, batch: args.batch.unwrap_or(8) };
            let set = EvalSet::documents(&tokenizer, &text, opts, args.max_docs)?;
            fields.insert("doc_tokens".into(), opts.max_tokens.into());
            fields.insert("batch".into(), opts.batch.into());
            fields.insert("docs".into(), set.documents_len().into());
            set.score(&scored.model, device)?
        }
    };
    if let Some(o) = &scored.offload {
        o.check().context("reading an offloaded layer failed")?;
    }
    let protocol = match args.protocol {
        Protocol::Windows => "windows",
        Protocol::Docs => "docs",
    };
    if args.json.on {
        let mut v = serde_json::to_value(&report)?;
        if let Some(m) = v.as_object_mut() {
            m.insert("model".into(), args.model.clone().into());
            m.insert("text".into(), args.text.display().to_string().into());
            m.insert("protocol".into(), protocol.into());
            m.extend(fields);
            m.insert("device".into(), device_name(device).into());
            m.insert("dtype".into(), args.dtype.clone().into());
        }
        println!("{v}");
    } else {
        println!("model:        {}", args.model);
        println!("text:         {}", args.text.display());
        println!("device:       {} ({})", device_name(device), args.dtype);
        let setting: Vec<String> = fields.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("protocol:     {protocol} ({})", setting.join(", "));
        println!("eval_loss:    {:.6}", report.eval_loss);
        println!("eval_ppl:     {:.4}", report.eval_ppl);
        println!("eval_bpb:     {:.6}", report.eval_bpb);
        println!("tokens:       {}", report.tokens);
        println!("bytes:        {}", report.bytes);
        println!("tokens_per_s: {:.1}", report.tokens_per_s);
    }
    Ok(())
}

/// `--tokenizer`: a tokenizer.json, a directory holding one, or the hub id of a model whose
/// tokenizer to use (an artifact's source model, as the compression templates name it).
fn reference_tokenizer(p: &std::path::Path) -> anyhow::Result<TextTokenizer> {
    if p.exists() {
        return Ok(TextTokenizer::from_path(p)?);
    }
    let dir = autoqat_model::hub::resolve_model_dir(&p.to_string_lossy())
        .with_context(|| format!("--tokenizer {}: not a file, a directory or a model id", p.display()))?;
    Ok(TextTokenizer::from_path(&dir)?)
}
