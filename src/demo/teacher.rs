//! The demo's full-precision teacher: corpus, tokenizer and a tiny Llama pre-trained from
//! scratch with plain fp32 next-token training, written as a Hugging Face directory and cached
//! under a key derived from every setting, so that a second demo reuses it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use autoqat_model::{eval, load, tokenizer::TextTokenizer, ModelConfig, PlainBuilder};
use autoqat_recipe::LrSchedule;
use autoqat_toolkit::optim::AdamW;
use autoqat_toolkit::schedule::lr_factor;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::corpus::{self, Rng};

/// Bumped when the corpus generator or the training loop changes meaning, so old caches are
/// not reused (2: the forty-character corpus with quizzes; 3: trained by qat's AdamW step).
const CACHE_VERSION: u32 = 3;

/// Every setting that determines the cached teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherSpec {
    /// Seed of the corpus generator.
    pub corpus_seed: u64,
    /// Bytes of training text.
    pub train_bytes: usize,
    /// Bytes of evaluation text.
    pub eval_bytes: usize,
    /// BPE vocabulary size asked for.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden: i64,
    /// Decoder layers.
    pub layers: i64,
    /// Query heads.
    pub heads: i64,
    /// Key/value heads.
    pub kv_heads: i64,
    /// MLP width.
    pub intermediate: i64,
    /// Training sequence length.
    pub seq_len: i64,
    /// Sequences per step.
    pub batch: i64,
    /// Optimizer steps.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Seed of init and batches.
    pub seed: u64,
}

impl TeacherSpec {
    /// The default demo teacher: about 0.9M parameters trained for 1000 steps (about 2 minutes
    /// on two cores), long enough to learn most facts of the corpus's world, so that ternary
    /// weights have something to lose.
    pub fn standard() -> TeacherSpec {
        TeacherSpec {
            corpus_seed: 1,
            train_bytes: 2_000_000,
            eval_bytes: 60_000,
            vocab_size: 1024,
            hidden: 128,
            layers: 4,
            heads: 4,
            kv_heads: 2,
            // A multiple of 128, so that group64 and group128 scales fit every matrix.
            intermediate: 384,
            seq_len: 128,
            batch: 16,
            steps: 1000,
            lr: 3e-3,
            seed: 0,
        }
    }

    /// A teacher small enough for tests (seconds).
    pub fn quick() -> TeacherSpec {
        TeacherSpec {
            corpus_seed: 1,
            train_bytes: 120_000,
            eval_bytes: 12_000,
            vocab_size: 384,
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            intermediate: 192,
            seq_len: 64,
            batch: 8,
            steps: 60,
            lr: 5e-3,
            seed: 0,
        }
    }

    /// Stable cache key (FNV-1a over the settings): std's hasher may change between releases.
    pub fn key(&self) -> String {
        let text = format!("v{CACHE_VERSION}:{}", serde_json::to_string(self).unwrap_or_default());
        format!("tiny-llama-{}", autoqat_workspace::hash::fnv1a_hex(text.as_bytes()))
    }

    fn config_json(&self, vocab: usize) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.hidden / self.heads,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "max_position_embeddings": 512,
            "vocab_size": vocab,
            "tie_word_embeddings": true,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "torch_dtype": "float32"
        })
    }
}

/// What the cache holds for one spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Teacher {
    /// The cache entry directory.
    pub root: PathBuf,
    /// Hugging Face model directory (config.json, model.safetensors, tokenizer.json).
    pub model_dir: PathBuf,
    /// Training text.
    pub train_text: PathBuf,
    /// Evaluation text.
    pub eval_text: PathBuf,
    /// The trained tokenizer.
    pub tokenizer: PathBuf,
    /// Teacher eval PPL on the eval text (disjoint windows of `seq_len`).
    pub fp_eval_ppl: f64,
    /// Final training loss.
    pub train_loss: f64,
    /// Seconds spent pre-training.
    pub train_s: f64,
    /// Vocabulary size reached.
    pub vocab_size: usize,
    /// Parameters of the model.
    pub params: i64,
    /// True when this call found it in the cache.
    #[serde(skip)]
    pub reused: bool,
}

/// The cache directory: `$AUTOQAT_CACHE_DIR`, else `$XDG_CACHE_HOME/autoqat`, else
/// `~/.cache/autoqat`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AUTOQAT_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("autoqat");
    }
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join(".cache/autoqat")
}

/// Returns the cached teacher for `spec`, building it first when absent. `log` receives
/// progress lines.
pub fn get_or_build(cache: &Path, spec: &TeacherSpec, log: &mut dyn FnMut(&str)) -> anyhow::Result<Teacher> {
    let root = cache.join("teachers").join(spec.key());
    let meta = root.join("teacher.json");
    if meta.is_file() {
        let text = std::fs::read_to_string(&meta).with_context(|| format!("cannot read {}", meta.display()))?;
        let mut t: Teacher = serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt (hint: delete {} to rebuild)", meta.display(), root.display()))?;
        t.reused = true;
        return Ok(t);
    }
    // Build in a scratch directory and rename at the end: an interrupted build never looks
    // finished.
    let parent = cache.join("teachers");
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let scratch = parent.join(format!(".{}.tmp-{}", spec.key(), std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.join("model"))?;
    let t = relocate(build(&scratch, spec, log)?, &scratch, &root);
    std::fs::write(scratch.join("teacher.json"), serde_json::to_string_pretty(&t)?)?;
    if meta.is_file() {
        // Another process finished first; theirs is as good as ours.
        let _ = std::fs::remove_dir_all(&scratch);
        return get_or_build(cache, spec, log);
    }
    // A directory without teacher.json is a leftover of an interrupted move.
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&scratch, &root).with_context(|| format!("cannot move the teacher to {}", root.display()))?;
    Ok(t)
}

fn relocate(mut t: Teacher, from: &Path, to: &Path) -> Teacher {
    let mv = |p: &Path| to.join(p.strip_prefix(from).unwrap_or(p));
    t.root = to.to_path_buf();
    t.model_dir = mv(&t.model_dir);
    t.train_text = mv(&t.train_text);
    t.eval_text = mv(&t.eval_text);
    t.tokenizer = mv(&t.tokenizer);
    t
}

fn build(dir: &Path, spec: &TeacherSpec, log: &mut dyn FnMut(&str)) -> anyhow::Result<Teacher> {
    let (train, eval_text) = corpus::train_and_eval(spec.corpus_seed, spec.train_bytes, spec.eval_bytes);
    let train_path = dir.join("train.txt");
    let eval_path = dir.join("eval.txt");
    std::fs::write(&train_path, &train)?;
    std::fs::write(&eval_path, &eval_text)?;
    log(&format!("corpus: {} KB train, {} KB eval", train.len() / 1024, eval_text.len() / 1024));

    let model_dir = dir.join("model");
    let tok_path = model_dir.join("tokenizer.json");
    let vocab = super::tokenizer::train(&train, spec.vocab_size, &tok_path)?;
    std::fs::copy(&tok_path, dir.join("tokenizer.json"))?;
    let tok = TextTokenizer::from_path(&tok_path)?;
    let ids = tok.encode(&train)?;
    log(&format!("tokenizer: {vocab} tokens; train text is {} tokens", ids.len()));
    anyhow::ensure!(
        ids.len() as i64 > spec.seq_len + 1,
        "the training text has only {} tokens; raise train_bytes",
        ids.len()
    );

    let cfg = ModelConfig::from_json_str(&spec.config_json(vocab).to_string())?;
    tch::manual_seed(spec.seed as i64);
    let device = Device::Cpu;
    let (vs, model) = load::build_causal_lm(&cfg, device, Kind::Float, &PlainBuilder)?;
    let params: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    // The trial's optimizer and schedule: one AdamW and one training step in the project.
    let vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, v)| v.requires_grad()).collect();
    let mut opt = AdamW::new(vars, 0.9, 0.95, 0.01);
    let data = Tensor::from_slice(&ids);
    let mut rng = Rng::new(spec.seed);
    let t0 = Instant::now();
    let mut last_loss = f64::NAN;
    let warmup = (spec.steps / 10).max(1);
    for step in 0..spec.steps {
        let lr = spec.lr * lr_factor(LrSchedule::Cosine, step, spec.steps, warmup, 0.1, 0);
        let starts: Vec<i64> =
            (0..spec.batch).map(|_| rng.below(ids.len() - spec.seq_len as usize - 1) as i64).collect();
        let rows: Vec<Tensor> = starts.iter().map(|&s| data.narrow(0, s, spec.seq_len + 1)).collect();
        let batch = Tensor::stack(&rows, 0).to_device(device);
        let x = batch.narrow(1, 0, spec.seq_len);
        let y = batch.narrow(1, 1, spec.seq_len);
        let logits = model.forward(&x);
        let loss = logits.view([-1, vocab as i64]).cross_entropy_for_logits(&y.reshape([-1]));
        opt.zero_grad();
        loss.backward();
        opt.clip_and_step(lr, 1.0);
        last_loss = loss.double_value(&[]);
        anyhow::ensure!(last_loss.is_finite(), "teacher pre-training diverged at step {step} (loss {last_loss})");
        if step % (spec.steps / 10).max(1) == 0 || step + 1 == spec.steps {
            log(&format!(
                "teacher step {:>4}/{} loss {last_loss:.3} ({:.1} s)",
                step + 1,
                spec.steps,
                t0.elapsed().as_secs_f64()
            ));
        }
    }
    let train_s = t0.elapsed().as_secs_f64();
    load::save_pretrained(&vs, &cfg, &model_dir)?;

    let opts = eval::EvalOptions { ctx: spec.seq_len as usize, stride: spec.seq_len as usize, batch: 8 };
    let report = eval::EvalSet::windows_of_text(&tok, &eval_text, opts, 0)?.score(&model, device)?;
    log(&format!("teacher: eval PPL {:.3} after {train_s:.1} s of pre-training", report.eval_ppl));
    Ok(Teacher {
        root: dir.to_path_buf(),
        model_dir,
        train_text: train_path,
        eval_text: eval_path,
        tokenizer: dir.join("tokenizer.json"),
        fp_eval_ppl: report.eval_ppl,
        train_loss: last_loss,
        train_s,
        vocab_size: vocab,
        params,
        reused: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_changes_with_every_setting() {
        let base = TeacherSpec::standard();
        let json = serde_json::to_value(&base).unwrap();
        for (name, value) in json.as_object().unwrap() {
            let mut changed = json.clone();
            changed[name] = match value {
                serde_json::Value::Number(n) if n.is_f64() => (n.as_f64().unwrap() * 2.0).into(),
                serde_json::Value::Number(n) => (n.as_u64().unwrap() + 1).into(),
                other => panic!("{name}: unexpected {other}"),
            };
            let spec: TeacherSpec = serde_json::from_value(changed).unwrap();
            assert_ne!(spec.key(), base.key(), "{name} is not part of the cache key");
        }
        assert_eq!(TeacherSpec::standard().key(), base.key(), "the key is stable");
    }

    #[test]
    fn quick_teacher_learns_is_saved_as_hf_dir_and_is_reused() {
        let cache = tempfile::tempdir().unwrap();
        let spec = TeacherSpec::quick();
        let mut lines = Vec::new();
        let t = get_or_build(cache.path(), &spec, &mut |l| lines.push(l.to_string())).unwrap();
        assert!(!t.reused);
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(t.model_dir.join(f).is_file(), "{f} missing");
        }
        // Pre-training beats the uniform guess (ln vocab) by a wide margin.
        let uniform = (t.vocab_size as f64).ln();
        assert!(t.train_loss < uniform - 1.0, "loss {} vs uniform {uniform}", t.train_loss);
        assert!(t.fp_eval_ppl < (t.vocab_size as f64) / 4.0, "ppl {}", t.fp_eval_ppl);
        // The saved directory loads back and scores the same.
        let loaded =
            load::load_causal_lm(t.model_dir.to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
        let tok = TextTokenizer::from_path(&t.model_dir).unwrap();
        let text = std::fs::read_to_string(&t.eval_text).unwrap();
        let n = spec.seq_len as usize;
        let opts = eval::EvalOptions { ctx: n, stride: n, batch: 8 };
        let r =
            eval::EvalSet::windows_of_text(&tok, &text, opts, 0).unwrap().score(&loaded.model, Device::Cpu).unwrap();
        assert!((r.eval_ppl / t.fp_eval_ppl - 1.0).abs() < 1e-5, "{} vs {}", r.eval_ppl, t.fp_eval_ppl);

        let again = get_or_build(cache.path(), &spec, &mut |_| panic!("rebuilt instead of reusing")).unwrap();
        assert!(again.reused);
        assert_eq!(again.model_dir, t.model_dir);
    }
}
