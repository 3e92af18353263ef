//! `autoqat bench-decode`: how fast a model decodes on the CPU, on the packed low-bit kernels
//! (`autoqat-kernels`) or on the dense reference (the weights dequantized to f32, multiplied by
//! libtorch). Measures prefill tokens/s (one forward over the prompt), decode tokens/s (greedy,
//! one token per step with the KV cache), the bytes of the weights the model holds (packed
//! matrices plus dense tensors, counted) and the process's resident memory, and prints the
//! first generated token ids so that two runs can be compared.

use std::path::Path;

use anyhow::{bail, Context};
use autoqat_compress::artifact::{self, ArtifactFiles};
use autoqat_compress::kernel_load;
use autoqat_model::autoqat_kernels::KernelPath;
use autoqat_model::kernel_linear::{cpu_only_named, var_bytes, ActMode, Kernels};
use autoqat_model::{greedy_decode, load_causal_lm, parse_device, CausalLM, Decoded, PlainBuilder, TextTokenizer};
use tch::{Device, Kind};

use crate::cli::{ActsChoice, BenchDecodeArgs, KernelChoice};

/// The prompt when no --text is given: plain English, so a real tokenizer gives ordinary tokens.
const BUILTIN_PROMPT: &str = "The old lighthouse keeper climbed the spiral stairs every evening \
to light the lamp. Ships passing in the night relied on its steady beam to find their way \
around the rocky coast. One stormy night, the lamp flickered and went dark, and the keeper \
had to decide whether to brave the wind and rain to repair it before the fishing boats \
returned to the harbour. He gathered his tools, pulled on his heavy coat, and began to climb.";

/// Generated ids printed (and put in the JSON).
const SHOWN_IDS: usize = 16;

/// What kind of model directory or file `bench-decode` was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Dense,
    Student,
    Artifact,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Self::Dense => "dense",
            Self::Student => "packed-student",
            Self::Artifact => "artifact",
        }
    }
}

/// A loaded model and what it holds.
struct Loaded {
    model: CausalLM,
    vocab: i64,
    /// Bytes of the packed matrices (0 on the dense path).
    packed_bytes: usize,
    /// Bytes of the dense tensors (variables).
    dense_bytes: usize,
    /// `avx512-vnni`, ..., or `libtorch` on the dense path.
    path: String,
    /// The kernels' activation mode, on the packed path.
    acts: Option<ActMode>,
    tokenizer: Option<TextTokenizer>,
}

fn acts_name(mode: ActMode) -> &'static str {
    match mode {
        ActMode::F32 => "f32",
        ActMode::Int8PerVector => "int8-per-token",
        ActMode::Int8PerBlock => "int8-per-block",
    }
}

impl Loaded {
    /// A model on the dense path (libtorch).
    fn dense(model: CausalLM, vs: &tch::nn::VarStore, vocab: i64, tokenizer: Option<TextTokenizer>) -> Self {
        let dense_bytes = var_bytes(vs);
        Self { model, vocab, packed_bytes: 0, dense_bytes, path: "libtorch".into(), acts: None, tokenizer }
    }

    /// A model whose packed layers run on `kernels` in `mode`.
    fn packed(
        model: CausalLM,
        vs: &tch::nn::VarStore,
        vocab: i64,
        packed_bytes: usize,
        kernels: &Kernels,
        mode: ActMode,
        tokenizer: Option<TextTokenizer>,
    ) -> Self {
        let (dense_bytes, path) = (var_bytes(vs), kernels.path().name().to_string());
        Self { model, vocab, packed_bytes, dense_bytes, path, acts: Some(mode), tokenizer }
    }
}

fn load(args: &BenchDecodeArgs, source: Source, kernels: bool, device: Device) -> anyhow::Result<Loaded> {
    let path = Path::new(&args.model);
    let threads = args.threads;
    match source {
        Source::Artifact => {
            let files = ArtifactFiles::read(path).with_context(|| format!("cannot read artifact {}", args.model))?;
            let tokenizer =
                files.tokenizer().map(|b| TextTokenizer::from_bytes(b, &path.join("tokenizer.json"))).transpose()?;
            let cannot = || format!("cannot load artifact {}", args.model);
            if kernels {
                let mode = match args.acts {
                    Some(ActsChoice::Int8) => ActMode::Int8PerBlock,
                    _ => ActMode::F32,
                };
                let a = kernel_load::load_kernels(&files, threads, mode).with_context(cannot)?;
                let vocab = a.cfg.vocab_size;
                Ok(Loaded::packed(a.model, &a.vs, vocab, a.packed_bytes, &a.kernels, mode, tokenizer))
            } else {
                let a = artifact::load(&files, device, Kind::Float).with_context(cannot)?;
                let vocab = a.cfg.vocab_size;
                Ok(Loaded::dense(a.model, &a.vs, vocab, tokenizer))
            }
        }
        Source::Student => {
            let tokenizer = TextTokenizer::from_path(path).ok();
            let cannot = || format!("cannot load packed model {}", args.model);
            if kernels {
                let mode = args.acts.map(|a| match a {
                    ActsChoice::F32 => ActMode::F32,
                    ActsChoice::Int8 => ActMode::Int8PerVector,
                });
                let m = autoqat_qat::load_packed_kernels(path, threads, mode).with_context(cannot)?;
                let vocab = m.cfg.vocab_size;
                Ok(Loaded::packed(m.model, &m.vs, vocab, m.packed_bytes, &m.kernels, m.mode, tokenizer))
            } else {
                let m = autoqat_qat::load_packed(path, device).with_context(cannot)?;
                let vocab = m.cfg.vocab_size;
                Ok(Loaded::dense(m.model, &m.vs, vocab, tokenizer))
            }
        }
        Source::Dense => {
            let loaded = load_causal_lm(&args.model, device, Kind::Float, &PlainBuilder)
                .with_context(|| format!("cannot load model {}", args.model))?;
            let tokenizer = TextTokenizer::from_path(&loaded.dir).ok();
            let vocab = loaded.cfg.vocab_size;
            Ok(Loaded::dense(loaded.model, &loaded.vs, vocab, tokenizer))
        }
    }
}

/// The prompt's token ids, exactly `n` of them: the text's tokens repeated or cut, or fixed
/// synthetic ids when there is no tokenizer.
fn prompt_ids(args: &BenchDecodeArgs, tokenizer: Option<&TextTokenizer>, vocab: i64) -> anyhow::Result<Vec<i64>> {
    let n = args.prompt_tokens;
    let base = match tokenizer {
        Some(t) => {
            let text = match &args.text {
                Some(p) => {
                    std::fs::read_to_string(p).with_context(|| format!("cannot read text file {}", p.display()))?
                }
                None => BUILTIN_PROMPT.to_string(),
            };
            t.encode(&text)?
        }
        None => {
            if args.text.is_some() {
                bail!("--text needs a tokenizer, and {} ships none (hint: pass --tokenizer)", args.model);
            }
            (0..n.max(1) as i64).map(|i| (i * 7919 + 13) % vocab.max(1)).collect()
        }
    };
    if base.is_empty() {
        bail!("the prompt text has no tokens (hint: pass a non-empty --text)");
    }
    Ok(base.iter().cycle().take(n).copied().collect())
}

/// `VmRSS` and `VmHWM` of this process in bytes (None where /proc is absent).
fn rss() -> (Option<u64>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else { return (None, None) };
    let field = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Prefills `prompt`, then decodes `steps` tokens greedily, one forward each (no stop token:
/// every run decodes the same number): the decode every tokens/s figure of autoqat comes from.
fn time_decode(model: &CausalLM, prompt: &[i64], steps: usize, device: Device) -> anyhow::Result<Decoded> {
    Ok(greedy_decode(model, prompt, steps + 1, &[], 0, device)?)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// Runs `autoqat bench-decode`.
pub fn run(args: BenchDecodeArgs) -> anyhow::Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if args.prompt_tokens == 0 {
        bail!("--prompt-tokens must be at least 1");
    }
    let path = Path::new(&args.model);
    let source = if artifact::is_artifact(path) {
        Source::Artifact
    } else if autoqat_qat::is_packed(path) {
        Source::Student
    } else {
        Source::Dense
    };
    let kernels = args.kernel == KernelChoice::Auto && source != Source::Dense;
    if args.kernel == KernelChoice::Auto && source == Source::Dense {
        eprintln!("note: {} has no packed weights; running the dense path (libtorch f32)", args.model);
    }
    // The kernels need the CPU: any other device is refused by name, even one this machine lacks.
    let device = match (kernels, args.device.trim()) {
        (true, "cpu" | "auto") => Device::Cpu,
        (true, other) => return Err(cpu_only_named(other).into()),
        (false, name) => parse_device(name)?,
    };
    if args.acts.is_some() && !kernels {
        eprintln!(
            "note: --acts applies to the packed kernels; the dense path computes what the model's own quantizer does"
        );
    }
    let avx2 = KernelPath::Avx2.supported();
    if kernels && !avx2 {
        eprintln!("note: this CPU has no AVX2+FMA: the packed kernels run on the portable (scalar) fallback");
    }
    // The dense reference gives libtorch the threads. On the kernels the heavy products are
    // the kernels' own (their pool has the threads); libtorch keeps the small ops between them
    // on the calling thread, since its pool and the kernels' would otherwise fight over the
    // same cores (measured: 2 threads decoded slower than 1).
    tch::set_num_threads(if kernels { 1 } else { args.threads as i32 });
    let mut loaded = load(&args, source, kernels, device)?;
    loaded.model.set_host_decode(!args.libtorch_step);
    let step = if loaded.model.decodes_on_host() { "host" } else { "libtorch" };
    let tokenizer = match &args.tokenizer {
        Some(p) => Some(TextTokenizer::from_path(p).with_context(|| format!("cannot load tokenizer {}", p.display()))?),
        None => loaded.tokenizer,
    };
    let prompt = prompt_ids(&args, tokenizer.as_ref(), loaded.vocab)?;
    // Warm-up: first-touch of the weights, the thread pool, libtorch's allocator.
    time_decode(&loaded.model, &prompt[..prompt.len().min(16)], 2.min(args.new_tokens), device)?;
    let t = time_decode(&loaded.model, &prompt, args.new_tokens, device)?;
    let decode_s = t.total_s - t.prefill_s;
    let (rss_now, rss_peak) = rss();
    let prefill_tps = prompt.len() as f64 / t.prefill_s.max(1e-12);
    let decode_tps = if args.new_tokens == 0 { 0.0 } else { args.new_tokens as f64 / decode_s.max(1e-12) };
    let weight_bytes = (loaded.packed_bytes + loaded.dense_bytes) as u64;
    let shown: Vec<i64> = t.steps.iter().take(SHOWN_IDS).map(|s| s.id).collect();
    let kernel = if kernels { "packed" } else { "dense" };
    if args.json.on {
        let v = serde_json::json!({
            "model": args.model,
            "source": source.name(),
            "kernel": kernel,
            "kernel_path": loaded.path,
            "avx2": avx2,
            "acts": loaded.acts.map(acts_name),
            "step": step,
            "threads": args.threads,
            "device": autoqat_model::device_name(device),
            "prompt_tokens": prompt.len(),
            "new_tokens": args.new_tokens,
            "prefill_s": t.prefill_s,
            "prefill_tokens_per_s": prefill_tps,
            "decode_s": decode_s,
            "decode_tokens_per_s": decode_tps,
            "weight_bytes": weight_bytes,
            "packed_bytes": loaded.packed_bytes,
            "dense_bytes": loaded.dense_bytes,
            "rss_bytes": rss_now,
            "peak_rss_bytes": rss_peak,
            "first_ids": shown,
        });
        println!("{v}");
    } else {
        println!("model:          {} ({})", args.model, source.name());
        println!("kernel:         {kernel} ({}){}", loaded.path, if avx2 { "" } else { ", no AVX2" });
        if let Some(a) = loaded.acts {
            println!("acts:           {}", acts_name(a));
        }
        println!("step:           {step} (one-token decode steps)");
        println!("threads:        {}", args.threads);
        println!("prefill:        {} tokens in {:.3} s = {prefill_tps:.1} tokens/s", prompt.len(), t.prefill_s);
        println!("decode:         {} tokens in {:.3} s = {decode_tps:.2} tokens/s", args.new_tokens, decode_s);
        println!(
            "weights:        {:.2} MiB ({:.2} MiB packed + {:.2} MiB dense)",
            mib(weight_bytes),
            mib(loaded.packed_bytes as u64),
            mib(loaded.dense_bytes as u64)
        );
        if let (Some(now), Some(peak)) = (rss_now, rss_peak) {
            println!("rss:            {:.1} MiB (peak {:.1} MiB)", mib(now), mib(peak));
        }
        let ids: Vec<String> = shown.iter().map(i64::to_string).collect();
        println!("first ids:      {}", ids.join(" "));
    }
    Ok(())
}
