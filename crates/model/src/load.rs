//! Loading and saving Hugging Face checkpoints: `config.json` plus `model.safetensors` or a
//! sharded `model.safetensors.index.json`, any of F32/BF16/F16 on disk, cast to the dtype and
//! device asked for. Variables are matched by name, so the VarStore names are the HF keys.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, View};
use tch::{nn, Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::hub;
use crate::linear::LinearBuilder;
use crate::llama::CausalLM;

/// A model ready to run, with everything it was built from.
#[derive(Debug)]
pub struct LoadedModel {
    /// The resolved configuration.
    pub cfg: ModelConfig,
    /// The network.
    pub model: CausalLM,
    /// Owns every variable of `model`, named by HF key.
    pub vs: nn::VarStore,
    /// The local model directory (the hub cache snapshot for a hub id).
    pub dir: PathBuf,
}

/// Loads a causal LM from a local HF directory or a hub id, weights cast to `kind` on `device`,
/// linears built by `builder`.
pub fn load_causal_lm(source: &str, device: Device, kind: Kind, builder: &dyn LinearBuilder) -> Result<LoadedModel> {
    let dir = hub::resolve_model_dir(source)?;
    let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
    let (vs, model) = build_causal_lm(&cfg, device, kind, builder)?;
    load_weights(&vs, &cfg, &dir, builder)?;
    Ok(LoadedModel { cfg, model, vs, dir })
}

/// Builds a model with freshly initialized weights (normal, std 0.02; norms at one).
/// Seed with `tch::manual_seed` first for reproducibility.
pub fn build_causal_lm(
    cfg: &ModelConfig,
    device: Device,
    kind: Kind,
    builder: &dyn LinearBuilder,
) -> Result<(nn::VarStore, CausalLM)> {
    let mut vs = nn::VarStore::new(device);
    // Setting the kind on the empty store makes every variable start in that kind.
    vs.set_kind(kind);
    let model = CausalLM::new(&vs.root(), cfg, builder)?;
    Ok((vs, model))
}

/// Where each checkpoint key lives: one file, or a shard map from the index (keyed by the
/// variable each key fills; keys outside the decoder are left out).
pub(crate) fn weight_files(dir: &Path, cfg: &ModelConfig) -> Result<(PathBuf, HashMap<String, PathBuf>)> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok((single.clone(), HashMap::new()));
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(ModelError::NoWeights(dir.to_path_buf()));
    }
    let text = std::fs::read_to_string(&index).map_err(|err| ModelError::Io { path: index.clone(), err })?;
    let corrupt = |msg: String| ModelError::CorruptWeights { path: index.clone(), msg };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| corrupt("no \"weight_map\" object".into()))?;
    let mut out = HashMap::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| corrupt(format!("weight_map entry {name} is not a file name")))?;
        if let Some(var) = cfg.var_name(name) {
            out.insert(var, dir.join(file));
        }
    }
    Ok((index, out))
}

/// Fills every variable of `vs` from the checkpoint in `dir` (keys as `cfg` maps them), except
/// those `builder` declares as its own extras. Checkpoint tensors the model does not use (an
/// image-text wrapper's vision encoder and MTP head among them) are never read.
pub fn load_weights(vs: &nn::VarStore, cfg: &ModelConfig, dir: &Path, builder: &dyn LinearBuilder) -> Result<()> {
    let (main, shards) = weight_files(dir, cfg)?;
    let vars = vs.variables();
    // Group wanted variables by the file that holds them, so each file is read once.
    let mut by_file: BTreeMap<PathBuf, Vec<(String, Tensor)>> = BTreeMap::new();
    for (name, var) in vars {
        if builder.is_extra_var(&name) {
            continue;
        }
        let file = if shards.is_empty() {
            main.clone()
        } else {
            shards
                .get(&name)
                .cloned()
                .ok_or_else(|| ModelError::MissingTensor { name: name.clone(), path: main.clone() })?
        };
        by_file.entry(file).or_default().push((name, var));
    }
    for (file, wanted) in by_file {
        let bytes = map_file(&file)?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| ModelError::CorruptWeights { path: file.clone(), msg: e.to_string() })?;
        for (name, mut var) in wanted {
            let key = cfg.checkpoint_key(&name);
            let view =
                st.tensor(&key).map_err(|_| ModelError::MissingTensor { name: key.clone(), path: file.clone() })?;
            let found: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let expected = var.size();
            if found != expected {
                return Err(ModelError::ShapeMismatch { name, path: file, expected, found });
            }
            let src_kind = match view.dtype() {
                Dtype::F32 => Kind::Float,
                Dtype::BF16 => Kind::BFloat16,
                Dtype::F16 => Kind::Half,
                other => return Err(ModelError::UnsupportedDtype { name, path: file, dtype: format!("{other:?}") }),
            };
            let src = Tensor::f_from_data_size(view.data(), &found, src_kind)?;
            let src = src.f_to_kind(var.kind())?.f_to_device(var.device())?;
            tch::no_grad(|| var.f_copy_(&src))?;
        }
    }
    Ok(())
}

/// Maps a weights file read-only instead of reading it into memory: the variables are the only
/// full copy of the model held, and the kernel pages the file in and drops it as it is copied
/// (a 1B-parameter bf16 checkpoint would otherwise cost 2.5 GB of heap on top of the model).
fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let io = |err| ModelError::Io { path: path.to_path_buf(), err };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the map is read-only and dropped before the load returns; a checkpoint rewritten by
    // another process during those seconds is the one case it cannot guard against, as with any
    // mmap-based safetensors loader.
    unsafe { memmap2::Mmap::map(&file) }.map_err(io)
}

/// A tensor whose host bytes are made only when the writer reaches it, so that a file of any
/// size is written with one tensor's copy in memory at a time.
struct LazyHost<'a> {
    tensor: &'a Tensor,
    dtype: Dtype,
    shape: Vec<usize>,
    len: usize,
    /// The first copy that failed: `View::data` cannot return an error, so it hands out zeros
    /// and the writer reports this afterwards (and removes the file).
    failed: &'a RefCell<Option<String>>,
}

impl<'a> LazyHost<'a> {
    fn new(tensor: &'a Tensor, failed: &'a RefCell<Option<String>>) -> Result<Self> {
        let dtype = match tensor.kind() {
            Kind::Float => Dtype::F32,
            Kind::BFloat16 => Dtype::BF16,
            Kind::Half => Dtype::F16,
            Kind::Double => Dtype::F64,
            Kind::Int64 => Dtype::I64,
            Kind::Int => Dtype::I32,
            Kind::Int8 => Dtype::I8,
            Kind::Uint8 => Dtype::U8,
            other => return Err(ModelError::Unsupported(format!("saving a tensor of kind {other:?}"))),
        };
        let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
        let len = tensor.numel() * tensor.kind().elt_size_in_bytes();
        Ok(Self { tensor, dtype, shape, len, failed })
    }

    fn copy(&self) -> std::result::Result<Vec<u8>, tch::TchError> {
        let t = self.tensor.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
        let mut data = vec![0u8; self.len];
        t.f_copy_data_u8(&mut data, t.numel())?;
        Ok(data)
    }
}

impl View for &LazyHost<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match self.copy() {
            Ok(data) => Cow::Owned(data),
            Err(e) => {
                self.failed.borrow_mut().get_or_insert(e.to_string());
                Cow::Owned(vec![0u8; self.len])
            }
        }
    }
    fn data_len(&self) -> usize {
        self.len
    }
}

/// Writes named tensors as a safetensors file with the `{"format": "pt"}` metadata transformers
/// expects, streamed (one tensor on the host at a time) and atomically (`atomic::replace_with`),
/// so a failure leaves no file that looks finished.
pub fn write_safetensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let failed = RefCell::new(None);
    let views =
        tensors.iter().map(|(n, t)| Ok((n.as_str(), LazyHost::new(t, &failed)?))).collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let io = |p: &Path, err| ModelError::Io { path: p.to_path_buf(), err };
    autoqat_workspace::atomic::replace_with(
        path,
        |tmp| {
            safetensors::serialize_to_file(views.iter().map(|(n, v)| (*n, v)), Some(meta), tmp).map_err(
                |e| match e {
                    safetensors::SafeTensorError::IoError(err) => io(tmp, err),
                    other => ModelError::Unsupported(format!("serializing tensors to {}: {other}", path.display())),
                },
            )?;
            match failed.take() {
                Some(msg) => Err(ModelError::Unsupported(format!("copying a tensor for {}: {msg}", path.display()))),
                None => Ok(()),
            }
        },
        io,
    )
}

/// Saves `vs` as `model.safetensors` and `cfg` as `config.json` in `dir` (created if needed),
/// loadable by this crate and by transformers.
pub fn save_pretrained(vs: &nn::VarStore, cfg: &ModelConfig, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|err| ModelError::Io { path: dir.to_path_buf(), err })?;
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    write_safetensors(&tensors, &dir.join("model.safetensors"))?;
    let cfg_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&cfg.to_hf_json())
        .map_err(|e| ModelError::Config { path: cfg_path.clone(), msg: e.to_string() })?;
    std::fs::write(&cfg_path, text).map_err(|err| ModelError::Io { path: cfg_path, err })
}
