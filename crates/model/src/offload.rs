//! Layer offloading: a model whose decoder layers stay in safetensors files and are read in when
//! a forward reaches them, one layer resident at a time, so that memory grows with one decoder
//! layer and not with depth (accelerate's disk offload, for passes that go layer by layer).
//!
//! [`Offload`] is the model's [`LayerHook`]: entering layer `i` reads its tensors (with `pread`,
//! not a map, so the file's pages never count as the process's memory) into the variables and
//! empties the layer that was resident. A layer whose weights changed in memory is written to a
//! file of its own and [`Offload::redirect`]ed there, so later passes read the changed weights.
//! Every file is indexed and checked (names, shapes, dtypes, byte ranges) before it is used, so
//! a read can only fail on I/O; such an error is kept, the layer is zero-filled so the pass
//! runs to its end, and [`Offload::check`] returns it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tch::{nn, Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::hub;
use crate::linear::LinearBuilder;
use crate::llama::{CausalLM, LayerHook};
use crate::load::{weight_files, LoadedModel};

/// Where one tensor's bytes are in its file.
#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    shape: Vec<i64>,
    /// Absolute byte range in the file.
    begin: u64,
    end: u64,
}

/// The header of one safetensors file: every tensor's dtype, shape and byte range.
#[derive(Debug)]
pub struct TensorFile {
    path: PathBuf,
    entries: HashMap<String, Entry>,
}

impl TensorFile {
    /// Reads and checks the header of `path` (the data is not read).
    pub fn open(path: &Path) -> Result<Self> {
        let io = |err| ModelError::Io { path: path.to_path_buf(), err };
        let corrupt = |msg: String| ModelError::CorruptWeights { path: path.to_path_buf(), msg };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut n = [0u8; 8];
        file.read_exact_at(&mut n, 0).map_err(io)?;
        let n = u64::from_le_bytes(n);
        if n > 100_000_000 || 8 + n > len {
            return Err(corrupt(format!("header length {n} does not fit a file of {len} bytes")));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact_at(&mut header, 8).map_err(io)?;
        let value: serde_json::Value = serde_json::from_slice(&header).map_err(|e| corrupt(e.to_string()))?;
        let map = value.as_object().ok_or_else(|| corrupt("the header is not a JSON object".into()))?;
        let mut entries = HashMap::new();
        for (name, info) in map {
            if name == "__metadata__" {
                continue;
            }
            let bad = || corrupt(format!("malformed header entry {name}"));
            let kind = match info.get("dtype").and_then(|d| d.as_str()).ok_or_else(bad)? {
                "F32" => Kind::Float,
                "BF16" => Kind::BFloat16,
                "F16" => Kind::Half,
                other => {
                    return Err(ModelError::UnsupportedDtype {
                        name: name.clone(),
                        path: path.to_path_buf(),
                        dtype: other.to_string(),
                    })
                }
            };
            let shape: Vec<i64> = info
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(bad)?
                .iter()
                .map(|d| d.as_i64().filter(|&d| d >= 0))
                .collect::<Option<_>>()
                .ok_or_else(bad)?;
            let offsets: Vec<u64> = info
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .ok_or_else(bad)?
                .iter()
                .map(|d| d.as_u64())
                .collect::<Option<_>>()
                .ok_or_else(bad)?;
            let [begin, end] = offsets[..] else { return Err(bad()) };
            let (begin, end) = (8 + n + begin, 8 + n + end);
            let bytes = shape.iter().product::<i64>() as u64 * kind.elt_size_in_bytes() as u64;
            if end < begin || end - begin != bytes || end > len {
                return Err(corrupt(format!(
                    "{name}: byte range {begin}..{end} does not hold {shape:?} in a file of {len} bytes"
                )));
            }
            entries.insert(name.clone(), Entry { kind, shape, begin, end });
        }
        Ok(Self { path: path.to_path_buf(), entries })
    }

    /// The same file with its tensors named by the variables they fill (see
    /// [`ModelConfig::var_name`]); tensors outside the decoder are dropped from the index.
    pub fn renamed(mut self, cfg: &ModelConfig) -> Self {
        if cfg.wrapped {
            self.entries = self.entries.into_iter().filter_map(|(k, e)| Some((cfg.var_name(&k)?, e))).collect();
        }
        self
    }

    /// The shape of `name`, when the file holds it.
    pub fn shape(&self, name: &str) -> Option<&[i64]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Reads `name` as a CPU tensor of its stored kind.
    pub fn read(&self, name: &str) -> Result<Tensor> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor { name: name.to_string(), path: self.path.clone() })?;
        let io = |err| ModelError::Io { path: self.path.clone(), err };
        let file = File::open(&self.path).map_err(io)?;
        let mut bytes = vec![0u8; (entry.end - entry.begin) as usize];
        file.read_exact_at(&mut bytes, entry.begin).map_err(io)?;
        Ok(Tensor::f_from_data_size(&bytes, &entry.shape, entry.kind)?)
    }
}

/// One variable of a decoder layer.
#[derive(Debug)]
struct LayerVar {
    name: String,
    shape: Vec<i64>,
}

#[derive(Debug)]
struct State {
    /// The variables of each layer, as [`Offload::layers`] names them (a tensor is not `Sync`,
    /// so they live behind the lock).
    vars: Vec<Vec<Tensor>>,
    resident: std::collections::BTreeSet<usize>,
    /// Every layer stays once read (widening and end-to-end training need the whole model).
    pinned: bool,
    /// Per layer, files that override the checkpoint for the names they hold, newest first.
    redirects: HashMap<usize, Vec<Arc<TensorFile>>>,
    error: Option<ModelError>,
}

/// Hands the heap's free pages back to the kernel. A released layer's buffers are free but stay
/// resident (the CLI raises glibc's mmap and trim thresholds so that a forward's buffers are
/// reused, see `src/host_alloc.rs`), and layers read in later land elsewhere in the heap: without
/// this, resident memory grew with every layer read (measured: 4x the layers, 2.5x the peak).
pub fn return_freed_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Decoder layers read in from files as a forward reaches them (see the module doc).
#[derive(Debug)]
pub struct Offload {
    layers: Vec<Vec<LayerVar>>,
    /// Which checkpoint file holds each name.
    checkpoint: HashMap<String, Arc<TensorFile>>,
    kind: Kind,
    device: Device,
    state: Mutex<State>,
}

/// The prefix of decoder layer `i`'s variable names.
pub fn layer_prefix(i: usize) -> String {
    format!("model.layers.{i}.")
}

fn empty(kind: Kind, device: Device) -> Tensor {
    Tensor::empty([0], (kind, device))
}

impl Offload {
    /// The full shape of every offloaded variable, by name.
    pub fn shapes(&self) -> impl Iterator<Item = (&str, &[i64])> {
        self.layers.iter().flatten().map(|v| (v.name.as_str(), v.shape.as_slice()))
    }

    /// Decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held leaves nothing half-done that a later read repairs.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps every layer resident from now on, reading in those that are not (for stages that
    /// need the whole model at once). Returns the first read error.
    pub fn pin_all(&self) -> Result<()> {
        self.lock().pinned = true;
        for i in 0..self.layers.len() {
            self.enter(i);
        }
        self.check()
    }

    /// Whether layers stay resident (see [`Offload::pin_all`]).
    pub fn pinned(&self) -> bool {
        self.lock().pinned
    }

    /// The first error a read met since the last check, if any.
    pub fn check(&self) -> Result<()> {
        match self.lock().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Empties the resident layer (its weights are read again when next entered).
    pub fn release(&self) {
        let mut state = self.lock();
        if !state.pinned {
            self.release_all(&mut state);
        }
    }

    /// Empties every resident layer and hands the freed pages back.
    fn release_all(&self, state: &mut State) {
        for r in std::mem::take(&mut state.resident) {
            for var in &state.vars[r] {
                self.set(var, &empty(self.kind, self.device));
            }
        }
        return_freed_pages();
    }

    /// From now on layer `layer`'s names that `file` holds are read from it (newest redirect
    /// first, then the checkpoint). The shapes are checked against the model's.
    pub fn redirect(&self, layer: usize, file: &Path) -> Result<()> {
        let file = TensorFile::open(file)?;
        for v in &self.layers[layer] {
            if let Some(found) = file.shape(&v.name) {
                if found != v.shape.as_slice() {
                    return Err(ModelError::ShapeMismatch {
                        name: v.name.clone(),
                        path: file.path.clone(),
                        expected: v.shape.clone(),
                        found: found.to_vec(),
                    });
                }
            }
        }
        self.lock().redirects.entry(layer).or_default().insert(0, Arc::new(file));
        Ok(())
    }

    /// Writes layer `layer`'s current weights (it must be resident) to `path` and redirects the
    /// layer there, so that its changes outlive its release. Nothing to do while pinned.
    pub fn write_back(&self, layer: usize, path: &Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = {
            let state = self.lock();
            if state.pinned {
                return Ok(());
            }
            self.layers[layer].iter().zip(&state.vars[layer]).map(|(v, var)| (v.name.clone(), var.detach())).collect()
        };
        crate::load::write_safetensors(&tensors, path)?;
        self.redirect(layer, path)
    }

    /// Sets `var`'s data (and its gradient's, which follows the weight so that a released layer
    /// keeps no gradient either).
    fn set(&self, var: &Tensor, data: &Tensor) {
        let mut var = var.shallow_clone();
        let mut grad = var.grad();
        if grad.defined() {
            let g = if data.numel() == 0 { data.shallow_clone() } else { data.zeros_like() };
            grad.set_data(&g);
        }
        var.set_data(data);
    }

    fn read(&self, state: &State, layer: usize, v: &LayerVar) -> Result<Tensor> {
        let file = state
            .redirects
            .get(&layer)
            .and_then(|files| files.iter().find(|f| f.shape(&v.name).is_some()))
            .or_else(|| self.checkpoint.get(&v.name))
            .ok_or_else(|| ModelError::MissingTensor { name: v.name.clone(), path: PathBuf::from("the checkpoint") })?;
        Ok(file.read(&v.name)?.f_to_kind(self.kind)?.f_to_device(self.device)?)
    }
}

impl LayerHook for Offload {
    fn enter(&self, layer: usize) {
        let mut state = self.lock();
        if state.resident.contains(&layer) {
            return;
        }
        let Some(names) = self.layers.get(layer) else { return };
        if !state.pinned {
            self.release_all(&mut state);
        }
        for (i, v) in names.iter().enumerate() {
            let data = match self.read(&state, layer, v) {
                Ok(t) => t,
                Err(e) => {
                    state.error.get_or_insert(e);
                    Tensor::zeros(v.shape.as_slice(), (self.kind, self.device))
                }
            };
            self.set(&state.vars[layer][i], &data);
        }
        state.resident.insert(layer);
    }
}

/// Loads a causal LM from a local HF directory or a hub id with its decoder layers offloaded:
/// the embedding, final norm and head are read now; each layer is read when entered (see
/// [`Offload`]), and the whole model is never allocated, not even while it is built.
pub fn load_offloaded(
    source: &str,
    device: Device,
    kind: Kind,
    builder: &dyn LinearBuilder,
) -> Result<(LoadedModel, Arc<Offload>)> {
    let dir = hub::resolve_model_dir(source)?;
    let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
    let (main, shards) = weight_files(&dir, &cfg)?;
    let mut files: BTreeMap<PathBuf, Arc<TensorFile>> = BTreeMap::new();
    let mut checkpoint = HashMap::new();
    if shards.is_empty() {
        let f = Arc::new(TensorFile::open(&main)?.renamed(&cfg));
        for name in f.entries.keys() {
            checkpoint.insert(name.clone(), f.clone());
        }
    } else {
        for (name, path) in &shards {
            let f = match files.get(path) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(TensorFile::open(path)?.renamed(&cfg));
                    files.insert(path.clone(), f.clone());
                    f
                }
            };
            checkpoint.insert(name.clone(), f);
        }
    }
    let mut vs = nn::VarStore::new(device);
    vs.set_kind(kind);
    let mut layers: Vec<Vec<LayerVar>> = Vec::new();
    let mut layer_vars: Vec<Vec<Tensor>> = Vec::new();
    let mut model = {
        let vs = &vs;
        let layers = &mut layers;
        let layer_vars = &mut layer_vars;
        CausalLM::new_with(&vs.root(), &cfg, builder, &mut |i| {
            let prefix = layer_prefix(i);
            let mut vars: Vec<(String, Tensor)> = vs
                .variables()
                .into_iter()
                .filter(|(n, _)| n.starts_with(&prefix) && !builder.is_extra_var(n))
                .collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            let names: Vec<LayerVar> =
                vars.iter().map(|(name, var)| LayerVar { name: name.clone(), shape: var.size() }).collect();
            for (v, (_, var)) in names.iter().zip(&vars) {
                let file = checkpoint
                    .get(&v.name)
                    .ok_or_else(|| ModelError::MissingTensor { name: v.name.clone(), path: main.clone() })?;
                let found = file.shape(&v.name).unwrap_or_default();
                if found != v.shape.as_slice() {
                    return Err(ModelError::ShapeMismatch {
                        name: v.name.clone(),
                        path: file.path.clone(),
                        expected: v.shape.clone(),
                        found: found.to_vec(),
                    });
                }
                let mut var = var.shallow_clone();
                var.set_data(&empty(kind, device));
            }
            layers.push(names);
            layer_vars.push(vars.into_iter().map(|(_, v)| v).collect());
            return_freed_pages();
            Ok(())
        })?
    };
    let offload = Arc::new(Offload {
        layers,
        checkpoint,
        kind,
        device,
        state: Mutex::new(State {
            vars: layer_vars,
            resident: Default::default(),
            pinned: false,
            redirects: HashMap::new(),
            error: None,
        }),
    });
    // Everything outside the layers (embedding, final norm, untied head) is read now.
    let layer_names: std::collections::HashSet<&str> = offload.shapes().map(|(n, _)| n).collect();
    for (name, mut var) in vs.variables() {
        if layer_names.contains(name.as_str()) || builder.is_extra_var(&name) {
            continue;
        }
        let file = offload
            .checkpoint
            .get(&name)
            .ok_or_else(|| ModelError::MissingTensor { name: name.clone(), path: main.clone() })?;
        let found = file.shape(&name).unwrap_or_default().to_vec();
        if found != var.size() {
            return Err(ModelError::ShapeMismatch { name, path: file.path.clone(), expected: var.size(), found });
        }
        let src = file.read(&name)?.f_to_kind(kind)?.f_to_device(device)?;
        tch::no_grad(|| var.f_copy_(&src))?;
    }
    model.set_layer_hook(Some(offload.clone()));
    Ok((LoadedModel { cfg, model, vs, dir }, offload))
}
