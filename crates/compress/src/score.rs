//! Calibration and scoring, one decoder layer at a time: the calibration sequences' hidden
//! states go through the stack layer by layer (not sequence by sequence), so each layer is read
//! once and its matrices are scored while it is resident; with an offloaded model
//! ([`autoqat_model::offload`]) memory holds one layer, its input statistics, and the
//! calibration set's hidden states, whatever the depth.
//!
//! The Fisher score `Σ_s (∂L_s/∂W)²` (one squared gradient per calibration sequence) needs a
//! backward pass, which runs the same way, top layer first: each layer's inputs are kept on
//! disk from the forward, and the gradient at a layer's output for every sequence is all that
//! travels down. The embedding's gradient, from its lookup and (tied) from the head, is
//! assembled per sequence at the end.

use std::collections::HashMap;
use std::path::Path;

use autoqat_model::linear::LinearRole;
use autoqat_model::offload::TensorFile;
use autoqat_model::{CausalLM, ModelConfig};
use tch::{Device, Kind, Reduction, Tensor};

use crate::allocate::MatrixScores;
use crate::calib::{self, input_key, Recorder};
use crate::error::{io_err, CompressError, Result};
use crate::rows::{self, RowKind};
use crate::sensitivity::{row_errors, Sensitivity, Weighting};

/// Calibration sequences per forward pass.
const CALIB_BATCH: i64 = 8;

/// One quantized matrix: where it lives and what its input statistics are called.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Module path (`model.layers.0.mlp.up_proj`, `model.embed_tokens`, `lm_head`).
    pub prefix: String,
    /// Its decoder layer; None for the embedding and the head.
    pub layer: Option<usize>,
    /// [`input_key`] of its Gram matrix; None for the embedding.
    pub gram: Option<String>,
}

/// The projections of decoder layer `layer` of `cfg`, in the order the artifact lists them (the
/// order the model builds them: the token mixer's, then the MLP's).
fn layer_roles(cfg: &ModelConfig, layer: usize) -> Vec<LinearRole> {
    cfg.layer_linears(layer).into_iter().map(|(role, _, _)| role).collect()
}

/// Every matrix the artifact quantizes, in a fixed order: the embedding (and with it a tied
/// lm_head), each layer's projections, an untied lm_head.
pub(crate) fn targets(cfg: &ModelConfig) -> Vec<Target> {
    let tied = cfg.tie_word_embeddings;
    let mut out = vec![Target { prefix: "model.embed_tokens".into(), layer: None, gram: None }];
    for layer in 0..cfg.num_hidden_layers as usize {
        for role in layer_roles(cfg, layer) {
            out.push(Target {
                prefix: role.module_path(Some(layer)),
                layer: Some(layer),
                gram: Some(input_key(role, Some(layer))),
            });
        }
    }
    if !tied {
        out.push(Target {
            prefix: LinearRole::LmHead.module_path(None),
            layer: None,
            gram: Some(input_key(LinearRole::LmHead, None)),
        });
    }
    out
}

/// The model's variable `{prefix}.weight`.
pub(crate) fn weight(vars: &HashMap<String, Tensor>, prefix: &str) -> Result<Tensor> {
    vars.get(&format!("{prefix}.weight"))
        .map(Tensor::detach)
        .ok_or_else(|| CompressError::Torch(format!("the model has no variable {prefix}.weight")))
}

fn gram<'a>(grams: &'a HashMap<String, Tensor>, key: &str) -> Result<&'a Tensor> {
    grams.get(key).ok_or_else(|| CompressError::Calibration(format!("no calibration statistics for {key}")))
}

/// The error of every row of `w` under every kind, weighted by `weighting`, a block of rows at
/// a time (a 27B model's embedding is 1.3B weights; its temporaries must not be).
fn score_matrix(w: &Tensor, kinds: &[RowKind], weighting: &Weighting) -> Result<MatrixScores> {
    score_blocks(w, kinds, weighting, rows::row_blocks(w.size()[0], w.size()[1]))
}

fn score_blocks(
    w: &Tensor,
    kinds: &[RowKind],
    weighting: &Weighting,
    blocks: impl Iterator<Item = (i64, i64)>,
) -> Result<MatrixScores> {
    let (n_rows, n_in) = (w.size()[0], w.size()[1]);
    let mut errors = vec![Vec::with_capacity(n_rows as usize); kinds.len()];
    for (start, len) in blocks {
        let block = w.narrow(0, start, len);
        for (e, &k) in errors.iter_mut().zip(kinds) {
            let (codes, scale) = rows::quantize_codes(&block, k);
            e.extend(row_errors(&block, &rows::dequantize(&codes, &scale, k), weighting, start)?);
        }
    }
    Ok(MatrixScores { in_dim: n_in, errors })
}

/// What scoring reads.
pub(crate) struct Calibration<'a> {
    /// The full-precision model (its linears built by `recorder`).
    pub model: &'a CausalLM,
    /// Its variables by name (handles: an offloaded layer's are filled while it is resident).
    pub vars: &'a HashMap<String, Tensor>,
    /// Records the linears' input Gram matrices.
    pub recorder: &'a Recorder,
    /// `[n, T]` calibration ids.
    pub seqs: &'a Tensor,
    /// Called after each pass over a layer: an offloaded model's read errors surface here.
    pub check: &'a dyn Fn() -> Result<()>,
    /// Where the Fisher pass keeps each layer's inputs between its forward and backward.
    pub scratch: &'a Path,
    pub device: Device,
}

/// The scores of every target (in `targets`' order) for every kind, by `sens`.
pub(crate) fn score(
    c: &Calibration,
    targets: &[Target],
    kinds: &[RowKind],
    sens: Sensitivity,
    tied: bool,
) -> Result<Vec<MatrixScores>> {
    let model = c.model;
    let n = c.seqs.size()[0];
    let batches: Vec<(i64, i64)> = calib::batches(n, CALIB_BATCH).collect();
    let ids: Vec<Tensor> = batches.iter().map(|&(i, b)| c.seqs.narrow(0, i, b).to_device(c.device)).collect();
    let mut h: Vec<Tensor> = ids.iter().map(|x| tch::no_grad(|| model.embed(x))).collect();
    let mut scores: Vec<Option<MatrixScores>> = vec![None; targets.len()];
    let fisher = sens == Sensitivity::Fisher;
    if fisher {
        std::fs::create_dir_all(c.scratch).map_err(io_err(c.scratch))?;
    }
    for layer in 0..model.num_layers() {
        if fisher {
            let path = acts_file(c.scratch, layer);
            autoqat_model::load::write_safetensors(&[("acts".to_string(), Tensor::cat(&h, 0))], &path)?;
        }
        c.recorder.set_recording(sens == Sensitivity::Activation);
        for x in h.iter_mut() {
            *x = tch::no_grad(|| model.layer(layer, x));
        }
        c.recorder.set_recording(false);
        (c.check)()?;
        let grams = c.recorder.take_grams();
        if !fisher {
            for (i, t) in targets.iter().enumerate().filter(|(_, t)| t.layer == Some(layer)) {
                let weighting = match (sens, &t.gram) {
                    (Sensitivity::Activation, Some(key)) => Weighting::Gram(gram(&grams, key)?),
                    _ => Weighting::None,
                };
                scores[i] = Some(score_matrix(&weight(c.vars, &t.prefix)?, kinds, &weighting)?);
            }
        }
    }
    let embed_i = targets.iter().position(|t| t.prefix == "model.embed_tokens");
    let head_i = targets.iter().position(|t| t.layer.is_none() && t.gram.is_some());
    match sens {
        Sensitivity::Fisher => {
            let index: HashMap<String, usize> =
                targets.iter().enumerate().map(|(i, t)| (format!("{}.weight", t.prefix), i)).collect();
            stream_fisher(c, &ids, &h, tied, &mut |name, f| {
                if let Some(&i) = index.get(name) {
                    let w = weight(c.vars, &targets[i].prefix)?;
                    scores[i] = Some(score_matrix(&w, kinds, &Weighting::Fisher(f))?);
                }
                Ok(())
            })?;
        }
        Sensitivity::Activation => {
            c.recorder.set_recording(true);
            for x in &h {
                let _ = tch::no_grad(|| model.head(&model.final_norm(x)));
            }
            c.recorder.set_recording(false);
            let grams = c.recorder.take_grams();
            let head_gram = gram(&grams, &input_key(LinearRole::LmHead, None))?;
            let counts = calib::token_counts(c.seqs, model.cfg.vocab_size).to_device(c.device);
            if let Some(i) = embed_i {
                let weighting = Weighting::Embedding { counts: &counts, head: tied.then_some(head_gram) };
                scores[i] = Some(score_matrix(&weight(c.vars, &targets[i].prefix)?, kinds, &weighting)?);
            }
            if let Some(i) = head_i {
                scores[i] =
                    Some(score_matrix(&weight(c.vars, &targets[i].prefix)?, kinds, &Weighting::Gram(head_gram))?);
            }
        }
        Sensitivity::Mse => {
            for i in [embed_i, head_i].into_iter().flatten() {
                scores[i] = Some(score_matrix(&weight(c.vars, &targets[i].prefix)?, kinds, &Weighting::None)?);
            }
        }
    }
    scores
        .into_iter()
        .zip(targets)
        .map(|(s, t)| s.ok_or_else(|| CompressError::Calibration(format!("{} was not scored", t.prefix))))
        .collect()
}

fn acts_file(scratch: &Path, layer: usize) -> std::path::PathBuf {
    scratch.join(format!("acts-{layer}.safetensors"))
}

/// The next-token loss of one sequence's final hidden states `[1, T, C]` (mean over `T - 1`).
fn seq_loss(model: &CausalLM, h: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let logits = model.head(&model.final_norm(h));
    let (t, v) = (logits.size()[1], logits.size()[2]);
    Ok(logits.narrow(1, 0, t - 1).reshape([-1, v]).f_cross_entropy_loss::<Tensor>(
        &ids.narrow(1, 1, t - 1).reshape([-1]),
        None,
        Reduction::Mean,
        -100,
        0.0,
    )?)
}

/// A weight's name and its Fisher score, visited while the weight is resident.
pub(crate) type FisherVisit<'a> = &'a mut dyn FnMut(&str, &Tensor) -> Result<()>;

/// The Fisher pass (see the module doc): `visit` gets every quantized weight's summed squared
/// per-sequence gradient as soon as it is complete, while its layer is resident; nothing of it
/// is kept. `h` is the last layer's output per batch, `ids` the batches.
pub(crate) fn stream_fisher(
    c: &Calibration,
    ids: &[Tensor],
    h: &[Tensor],
    tied: bool,
    visit: FisherVisit,
) -> Result<()> {
    let model = c.model;
    let seqs: Vec<Tensor> = ids.iter().flat_map(|b| (0..b.size()[0]).map(move |s| b.narrow(0, s, 1))).collect();
    let finals: Vec<Tensor> = h.iter().flat_map(|b| (0..b.size()[0]).map(move |s| b.narrow(0, s, 1))).collect();
    let head_name = format!("{}.weight", LinearRole::LmHead.module_path(None));
    let mut fisher: HashMap<String, Tensor> = HashMap::new();
    let mut flush = |fisher: &mut HashMap<String, Tensor>| -> Result<()> {
        let mut names: Vec<String> = fisher.keys().cloned().collect();
        names.sort();
        for n in names {
            if let Some(f) = fisher.remove(&n) {
                visit(&n, &f)?;
            }
        }
        Ok(())
    };
    let add = |fisher: &mut HashMap<String, Tensor>, name: &str, g: &Tensor| {
        let sq = g.square();
        match fisher.get_mut(name) {
            Some(f) => {
                let _ = f.g_add_(&sq);
            }
            None => {
                fisher.insert(name.to_string(), sq);
            }
        }
    };
    // The gradient at the last layer's output, per sequence (and the untied head's Fisher).
    let mut grads: Vec<Tensor> = Vec::with_capacity(seqs.len());
    for (x, fin) in seqs.iter().zip(&finals) {
        let hs = fin.detach().set_requires_grad(true);
        let loss = seq_loss(model, &hs, x)?;
        let mut inputs = vec![hs.shallow_clone()];
        if !tied {
            inputs.push(c.vars[&head_name].shallow_clone());
        }
        let g = Tensor::f_run_backward(&[&loss], &inputs, false, false)?;
        if !tied {
            add(&mut fisher, &head_name, &g[1]);
        }
        grads.push(g[0].shallow_clone());
    }
    flush(&mut fisher)?;
    for layer in (0..model.num_layers()).rev() {
        let path = acts_file(c.scratch, layer);
        let acts = TensorFile::open(&path)?.read("acts")?.to_device(c.device);
        let names: Vec<String> =
            layer_roles(&model.cfg, layer).iter().map(|r| format!("{}.weight", r.module_path(Some(layer)))).collect();
        for (s, g) in grads.iter_mut().enumerate() {
            let x = acts.narrow(0, s as i64, 1).detach().set_requires_grad(true);
            let out = model.layer(layer, &x);
            let mut inputs = vec![x.shallow_clone()];
            inputs.extend(names.iter().map(|n| c.vars[n].shallow_clone()));
            let vjp = (&out * &*g).sum(Kind::Float);
            let gs = Tensor::f_run_backward(&[&vjp], &inputs, false, false)?;
            for (n, gw) in names.iter().zip(&gs[1..]) {
                add(&mut fisher, n, gw);
            }
            *g = gs[0].shallow_clone();
        }
        (c.check)()?;
        flush(&mut fisher)?;
        std::fs::remove_file(&path).map_err(io_err(&path))?;
    }
    // The embedding: its lookup's gradient (the first layer's input gradient, summed into the
    // rows of the sequence's tokens), plus the tied head's.
    let embed_name = "model.embed_tokens.weight";
    let embed = &c.vars[embed_name];
    for ((x, fin), g) in seqs.iter().zip(&finals).zip(&grads) {
        let cdim = g.size()[2];
        let lookup = embed.zeros_like().index_add(0, &x.reshape([-1]), &g.reshape([-1, cdim]));
        let total = if tied {
            let loss = seq_loss(model, &fin.detach(), x)?;
            let gh = Tensor::f_run_backward(&[&loss], &[embed], false, false)?;
            lookup + &gh[0]
        } else {
            lookup
        };
        add(&mut fisher, embed_name, &total);
    }
    flush(&mut fisher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_by_blocks_of_rows_equal_the_whole_matrix_for_every_weighting() {
        tch::manual_seed(3);
        let w = Tensor::randn([37, 300], (Kind::Float, Device::Cpu));
        let h = {
            let x = Tensor::randn([64, 300], (Kind::Float, Device::Cpu));
            x.transpose(0, 1).matmul(&x)
        };
        let counts = Tensor::randint(9, [37], (Kind::Int64, Device::Cpu));
        let f = Tensor::rand([37, 300], (Kind::Float, Device::Cpu));
        let kinds = [RowKind::Binary, RowKind::Ternary, RowKind::Q4];
        for weighting in [
            Weighting::None,
            Weighting::Gram(&h),
            Weighting::Embedding { counts: &counts, head: Some(&h) },
            Weighting::Fisher(&f),
        ] {
            let whole = score_blocks(&w, &kinds, &weighting, std::iter::once((0, 37))).unwrap();
            // Blocks of 3 rows (1000 weights / 300 per row), the last one short.
            let blocks: Vec<_> = rows::row_blocks_of(37, 300, 1000).collect();
            assert_eq!((blocks.len(), blocks[12]), (13, (36, 1)));
            let blocked = score_blocks(&w, &kinds, &weighting, blocks.into_iter()).unwrap();
            // The Gram product is an f32 matmul, which BLAS may sum in another order for another
            // shape: equal to f32 precision. A row read at the wrong offset would be off by O(1).
            for (a, b) in whole.errors.iter().zip(&blocked.errors) {
                assert_eq!(a.len(), 37);
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{weighting:?}: {x} vs {y}");
                }
            }
        }
    }

    fn config(extra: &str) -> ModelConfig {
        ModelConfig::from_json_str(&format!(
            r#"{{"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,
            "num_key_value_heads":2,"head_dim":16,"vocab_size":50,{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn targets_list_the_embedding_each_layers_projections_and_an_untied_head() {
        let t = targets(&config(r#""model_type":"llama","tie_word_embeddings":false"#));
        assert_eq!(t.len(), 1 + 2 * 7 + 1);
        assert_eq!(t[0].prefix, "model.embed_tokens");
        assert_eq!(t[8].layer, Some(1));
        assert_eq!(t.last().map(|t| t.prefix.as_str()), Some("lm_head"));
        assert_eq!(targets(&config(r#""model_type":"llama","tie_word_embeddings":true"#)).len(), 15);
    }

    #[test]
    fn deltanet_layers_list_their_own_projections() {
        let cfg = config(
            r#""model_type":"qwen3_5_text","layer_types":["linear_attention","full_attention"],
            "linear_num_key_heads":2,"linear_num_value_heads":4,"linear_key_head_dim":8,"linear_value_head_dim":8"#,
        );
        let t = targets(&cfg);
        assert_eq!(t.len(), 1 + 8 + 7 + 1);
        assert_eq!(t[1].prefix, "model.layers.0.linear_attn.in_proj_qkv");
        assert_eq!(t[5].prefix, "model.layers.0.linear_attn.out_proj");
        assert_eq!(t[5].gram.as_deref(), Some("0.o_in"));
        assert_eq!(t[9].prefix, "model.layers.1.self_attn.q_proj");
    }
}
