//! The artifact: a Hugging Face model directory that transformers loads with
//! `trust_remote_code=True`, its deterministic zip, and the budget gate.
//!
//! Layout (see `assets/modeling_autoqat.py` for the reader transformers runs):
//! - `config.json`: the source config, plus `auto_map` naming the unpacking class and an
//!   `autoqat` block (format, track, budget).
//! - `model.safetensors`: for each quantized matrix `P.weight`, `P.row_kind` (2-bit kind per row,
//!   four per byte) and per kind present `P.<kind>.codes` / `P.<kind>.scales`; every other
//!   tensor (norms, biases) in f16.
//! - `modeling_autoqat.py`, and the tokenizer files (`tokenizer.json`, `tokenizer_config.json`
//!   and the companions the source has) unless the recipe turns `package.tokenizer` off.
//!
//! The zip is deterministic: entries in sorted order, fixed timestamp (1980-01-01) and
//! permissions (0644), the weights stored, text deflated; the same tensors give the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use autoqat_model::load::{build_causal_lm, write_safetensors};
use autoqat_model::{CausalLM, ModelConfig, PlainBuilder};
use autoqat_workspace::atomic;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use tch::{nn, Device, Kind, Tensor};
use zip::write::FileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use crate::error::{io_err, CompressError, Result};
use crate::rows;

/// The Python reader shipped in every artifact, as it reads in this repository.
pub const MODELING_PY: &str = include_str!("../assets/modeling_autoqat.py");

/// The reader as an artifact ships it: the module docstring cut to one line and comment lines
/// dropped, since its bytes count against the budget (a tiny model's budget has no room for
/// prose). Code and inline comments are untouched.
pub fn modeling_py() -> Vec<u8> {
    let body = MODELING_PY
        .strip_prefix("\"\"\"")
        .and_then(|rest| rest.split_once("\"\"\"").map(|(_, body)| body))
        .unwrap_or(MODELING_PY);
    let mut out = String::from(
        "\"\"\"autoqat rowmix artifact reader (commented source: autoqat, crates/compress/assets/modeling_autoqat.py).\"\"\"",
    );
    for line in body.lines().filter(|l| !l.trim_start().starts_with('#')) {
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}
/// Format tag in `config.json`'s `autoqat` block.
pub const FORMAT: &str = "autoqat-rowmix-1";
/// The weights file.
pub const WEIGHTS: &str = "model.safetensors";

/// The reference models of the live tracks (owner, name, lower case) and the parameter count
/// their gate uses.
const REFERENCE_MODELS: [(&str, &str, i64); 1] = [("qwen", "qwen3.6-27b", 27_000_000_000)];

/// The track's reference parameter count when `source` (a hub id, or a directory named after
/// one) is a track's reference model: the artifact must then also fit `ceil(reference * bpp)`.
pub fn reference_params(source: &str) -> Option<i64> {
    let s = source.trim_end_matches('/').to_lowercase();
    REFERENCE_MODELS
        .iter()
        .find(|(owner, name, _)| s == format!("{owner}/{name}") || s.ends_with(&format!("/{name}")))
        .map(|(_, _, n)| *n)
}

/// `artifact_bytes * 8 <= ceil(param_count * bpp)` (docs/contracts.md#the-compression-track), in bits.
pub fn budget_bits(param_count: i64, bpp: f64) -> i64 {
    (param_count as f64 * bpp).ceil() as i64
}

/// The unpacking class for a `model_type`.
fn class_for(model_type: &str) -> Result<&'static str> {
    match model_type {
        "llama" => Ok("AutoqatLlamaForCausalLM"),
        "qwen2" => Ok("AutoqatQwen2ForCausalLM"),
        "qwen3" => Ok("AutoqatQwen3ForCausalLM"),
        "qwen3_5_text" => Ok("AutoqatQwen3_5ForCausalLM"),
        other => Err(CompressError::Budget(format!(
            "model_type \"{other}\" is not supported (llama, qwen2, qwen3, qwen3_5_text)"
        ))),
    }
}

/// `config.json` of the artifact: the source config with `auto_map` and the `autoqat` block.
pub fn artifact_config(source_config: &serde_json::Value, extra: serde_json::Value) -> Result<Vec<u8>> {
    let mut cfg = source_config.clone();
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| CompressError::Budget("the source config.json is not a JSON object".into()))?;
    let class = class_for(obj.get("model_type").and_then(|v| v.as_str()).unwrap_or(""))?;
    obj.insert("auto_map".into(), serde_json::json!({ "AutoModelForCausalLM": format!("modeling_autoqat.{class}") }));
    obj.insert("autoqat".into(), extra);
    let mut text = serde_json::to_vec_pretty(&cfg).map_err(|e| CompressError::Budget(e.to_string()))?;
    text.push(b'\n');
    Ok(text)
}

/// What `AutoTokenizer.from_pretrained` reads from a model directory, besides `tokenizer.json`.
const TOKENIZER_COMPANIONS: [&str; 5] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
];

/// The tokenizer files of the model directory `dir` to ship in an artifact, so that
/// `AutoTokenizer.from_pretrained(artifact)` (how the track's production validator tokenizes)
/// reproduces the source model's tokenizer: `tokenizer.json` and the companions present. A
/// directory with `tokenizer.json` alone gets a `tokenizer_config.json` that names the fast
/// tokenizer class, since without one transformers picks a class from `model_type` and may
/// tokenize differently.
pub fn tokenizer_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let main = dir.join("tokenizer.json");
    let mut out = vec![("tokenizer.json".to_string(), std::fs::read(&main).map_err(io_err(&main))?)];
    for name in TOKENIZER_COMPANIONS {
        let p = dir.join(name);
        if p.is_file() {
            out.push((name.to_string(), std::fs::read(&p).map_err(io_err(&p))?));
        }
    }
    if !dir.join("tokenizer_config.json").is_file() {
        let cfg = serde_json::json!({ "tokenizer_class": "PreTrainedTokenizerFast" });
        out.push(("tokenizer_config.json".to_string(), format!("{cfg}\n").into_bytes()));
    }
    Ok(out)
}

/// The files of an artifact other than the weights, by name.
pub type TextFiles = BTreeMap<String, Vec<u8>>;

/// Entries from this size on need ZIP64 (the classic format stores sizes in 32 bits).
const ZIP64_FROM: u64 = u32::MAX as u64;

/// What a zip entry holds: text kept in memory (deflated), or a file streamed from disk
/// (stored, as the weights are, so their bytes in the zip are the file's bytes).
enum Body<'a> {
    Deflated(&'a [u8]),
    StoredFile(&'a Path),
    /// A stored entry with no bytes: the weights' headers when sizing the zip's overhead.
    StoredEmpty,
}

/// Writes a deterministic zip of `entries` to `out`, in name order. A stored entry of 4 GiB or
/// more (the weights at the live tracks' 27B budgets) gets ZIP64 sizes; the others keep the
/// classic headers, so small artifacts are byte-identical to what earlier versions wrote. A
/// file is copied through a fixed buffer, never held whole in memory.
fn write_zip<W: Write + std::io::Seek>(out: W, entries: &[(&str, Body)]) -> Result<W> {
    let mut sorted: Vec<&(&str, Body)> = entries.iter().collect();
    sorted.sort_by_key(|e| e.0);
    let zerr = |e: zip::result::ZipError| CompressError::Artifact { path: PathBuf::from("<zip>"), msg: e.to_string() };
    let werr = |e: std::io::Error| CompressError::Artifact { path: PathBuf::from("<zip>"), msg: e.to_string() };
    let mut w = ZipWriter::new(out);
    for (name, body) in sorted {
        let opts = FileOptions::default()
            .last_modified_time(DateTime::default())
            .unix_permissions(0o644)
            .compression_method(CompressionMethod::Stored);
        match body {
            Body::Deflated(data) => {
                w.start_file(*name, opts.compression_method(CompressionMethod::Deflated)).map_err(zerr)?;
                w.write_all(data).map_err(werr)?;
            }
            Body::StoredEmpty => w.start_file(*name, opts).map_err(zerr)?,
            Body::StoredFile(path) => {
                let mut f = std::fs::File::open(path).map_err(io_err(path))?;
                let len = f.metadata().map_err(io_err(path))?.len();
                w.start_file(*name, opts.large_file(len >= ZIP64_FROM)).map_err(zerr)?;
                let copied = std::io::copy(&mut f, &mut w).map_err(werr)?;
                if copied != len {
                    return Err(CompressError::Artifact {
                        path: path.to_path_buf(),
                        msg: format!("changed while zipped ({len} bytes, then {copied})"),
                    });
                }
            }
        }
    }
    w.finish().map_err(zerr)
}

/// Bytes of the zip besides the weights' own bytes: the other files (deflated) and every
/// header. Exact, because the weights entry is stored, except where the weights may reach
/// ZIP64 sizes (`max_weight_bytes`): then an upper bound of the ZIP64 records is added (the
/// weights' extra fields, the 64-bit offsets of the entries after them, the ZIP64 end record
/// and its locator).
pub fn zip_overhead(files: &TextFiles, max_weight_bytes: u64) -> Result<i64> {
    let mut entries: Vec<(&str, Body)> = files.iter().map(|(n, d)| (n.as_str(), Body::Deflated(d))).collect();
    entries.push((WEIGHTS, Body::StoredEmpty));
    let classic = write_zip(Cursor::new(Vec::new()), &entries)?.into_inner().len() as i64;
    let zip64 = if max_weight_bytes >= ZIP64_FROM { 20 + 28 + 56 + 20 + 12 * entries.len() as i64 + 64 } else { 0 };
    Ok(classic + zip64)
}

/// An upper bound of the safetensors header (8-byte length, JSON, padding to 8) for tensors
/// with these names, no dimension above `max_dim` and no byte offset above `max_offset`.
pub fn safetensors_header_bound<'a>(names: impl Iterator<Item = &'a str>, max_dim: i64, max_offset: i64) -> i64 {
    let digits = |x: i64| x.max(1).to_string().len() as i64;
    // `"NAME":{"dtype":"F16","shape":[A,B],"data_offsets":[X,Y]},` is the name plus 50 bytes of
    // punctuation and keys, two dimensions and two offsets.
    let entry = 50 + 2 * digits(max_dim) + 2 * digits(max_offset);
    // `{"__metadata__":{"format":"pt"},` ... `}`, the length prefix, and padding.
    8 + 40 + 8 + names.map(|n| n.len() as i64 + entry).sum::<i64>()
}

/// What a written artifact is.
#[derive(Debug, Clone)]
pub struct Written {
    /// The unzipped directory.
    pub dir: PathBuf,
    /// The zip.
    pub zip: PathBuf,
    /// Bytes of the zip.
    pub size_bytes: i64,
    /// SHA-256 of the zip, hex.
    pub sha256: String,
}

/// Writes the artifact directory `dir` and its zip `zip_path`, each built under a temporary
/// name and renamed when complete (`atomic`), so a failure (a full disk) leaves no artifact
/// that looks finished. The weights go to disk one tensor at a time and into the zip through a
/// buffer: the host holds the packed tensors and nothing more (at 27B, the artifact's 7 GB once
/// rather than three times). A zip over `max_bits` is refused before anything is renamed in.
pub fn write(
    dir: &Path,
    zip_path: &Path,
    files: &TextFiles,
    tensors: &[(String, Tensor)],
    max_bits: i64,
) -> Result<Written> {
    let io = |p: &Path, e| io_err(p)(e);
    let (sha256, size_bytes) = atomic::replace_with(
        zip_path,
        |tmp_zip| {
            atomic::replace_dir_with(
                dir,
                |tmp_dir| {
                    for (name, data) in files {
                        let p = tmp_dir.join(name);
                        std::fs::write(&p, data).map_err(io_err(&p))?;
                    }
                    write_safetensors(tensors, &tmp_dir.join(WEIGHTS))?;
                    zip_dir(tmp_dir, tmp_zip)?;
                    // Hashed before the directory goes in, so nothing after that can fail
                    // but the zip's own sync and rename.
                    let (sha256, size) = sha256_file(tmp_zip)?;
                    // The gate is the zip's size, known only once it is written: an artifact
                    // over the budget never reaches the finished names.
                    if size * 8 > max_bits {
                        return Err(CompressError::Budget(format!(
                            "the artifact would be {size} bytes = {} bits, {} over the budget of {max_bits} bits; nothing was written",
                            size * 8,
                            size * 8 - max_bits
                        )));
                    }
                    Ok((sha256, size))
                },
                io,
            )
        },
        io,
    )?;
    Ok(Written { dir: dir.to_path_buf(), zip: zip_path.to_path_buf(), size_bytes, sha256 })
}

/// Zips the artifact directory `dir` into `zip_path` deterministically: its files in name
/// order, the weights stored and streamed from disk (ZIP64 from 4 GiB on), the rest deflated.
pub fn zip_dir(dir: &Path, zip_path: &Path) -> Result<()> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if entry.file_type().map_err(io_err(dir))?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    let mut text = BTreeMap::new();
    for name in names.iter().filter(|n| n.as_str() != WEIGHTS) {
        let p = dir.join(name);
        text.insert(name.as_str(), std::fs::read(&p).map_err(io_err(&p))?);
    }
    let weights = dir.join(WEIGHTS);
    let mut entries: Vec<(&str, Body)> = text.iter().map(|(n, d)| (*n, Body::Deflated(d))).collect();
    entries.push((WEIGHTS, Body::StoredFile(&weights)));
    let out = std::fs::File::create(zip_path).map_err(io_err(zip_path))?;
    let out = write_zip(std::io::BufWriter::with_capacity(1 << 20, out), &entries)?;
    out.into_inner().map(drop).map_err(|e| io_err(zip_path)(e.into_error()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (hex) and size of a file, streamed through the hasher.
pub fn sha256_file(path: &Path) -> Result<(String, i64)> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let len = std::io::copy(&mut f, &mut hasher).map_err(io_err(path))?;
    Ok((hex(&hasher.finalize()), len as i64))
}

/// True when `path` is an autoqat artifact: a zip, or a directory whose config has an
/// `autoqat` block of our format.
pub fn is_artifact(path: &Path) -> bool {
    if path.is_file() {
        return path.extension().is_some_and(|e| e == "zip");
    }
    std::fs::read_to_string(path.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["autoqat"]["format"] == FORMAT)
}

/// An artifact's files in memory, from a directory or a zip.
#[derive(Debug)]
pub struct ArtifactFiles {
    /// Where they came from.
    pub path: PathBuf,
    /// File name -> bytes.
    pub files: HashMap<String, Vec<u8>>,
}

impl ArtifactFiles {
    /// Reads every file of the artifact at `path` (a zip or a directory).
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |msg: String| CompressError::Artifact { path: path.to_path_buf(), msg };
        let mut files = HashMap::new();
        if path.is_file() {
            let data = std::fs::read(path).map_err(io_err(path))?;
            let mut z = ZipArchive::new(Cursor::new(data)).map_err(|e| bad(format!("not a readable zip: {e}")))?;
            for i in 0..z.len() {
                let mut f = z.by_index(i).map_err(|e| bad(e.to_string()))?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf).map_err(|e| bad(e.to_string()))?;
                let name = f.name().trim_start_matches("./").to_string();
                files.insert(name, buf);
            }
        } else {
            for name in ["config.json", WEIGHTS, "tokenizer.json"].into_iter().chain(TOKENIZER_COMPANIONS) {
                let p = path.join(name);
                if p.is_file() {
                    files.insert(name.to_string(), std::fs::read(&p).map_err(io_err(&p))?);
                }
            }
        }
        for need in ["config.json", WEIGHTS] {
            if !files.contains_key(need) {
                return Err(bad(format!("no {need} in the artifact")));
            }
        }
        Ok(Self { path: path.to_path_buf(), files })
    }

    /// The artifact's `tokenizer.json`, when it ships one.
    pub fn tokenizer(&self) -> Option<&[u8]> {
        self.files.get("tokenizer.json").map(Vec::as_slice)
    }
}

impl ArtifactFiles {
    /// The configuration's text, the configuration, and the weights' view.
    pub(crate) fn parts(&self) -> Result<(&str, ModelConfig, SafeTensors<'_>)> {
        let path = &self.path;
        let cfg_text = std::str::from_utf8(&self.files["config.json"])
            .map_err(|_| CompressError::Artifact { path: path.clone(), msg: "config.json is not UTF-8".into() })?;
        let cfg = ModelConfig::from_json_str(cfg_text)?;
        let st = SafeTensors::deserialize(&self.files[WEIGHTS])
            .map_err(|e| CompressError::Artifact { path: path.clone(), msg: format!("{WEIGHTS}: {e}") })?;
        Ok((cfg_text, cfg, st))
    }
}

/// Variable `name` of the model, dense f32 with shape `size`: a quantized matrix unpacked, any
/// other tensor as stored.
pub(crate) fn dense_tensor(st: &SafeTensors, name: &str, size: &[i64], path: &Path) -> Result<Tensor> {
    let unpacked = match name.strip_suffix(".weight") {
        Some(prefix) if size.len() == 2 => unpack_weight(st, prefix, size[0], size[1], path)?,
        _ => None,
    };
    let value = match unpacked {
        Some(w) => w,
        None => tensor_of(st, name, path)?.to_kind(Kind::Float),
    };
    if value.size() != size {
        return Err(CompressError::Artifact {
            path: path.to_path_buf(),
            msg: format!("tensor {name} has shape {:?}, the config implies {size:?}", value.size()),
        });
    }
    Ok(value)
}

/// A tensor of a safetensors view, on the CPU in its stored kind.
fn tensor_of(st: &SafeTensors, name: &str, path: &Path) -> Result<Tensor> {
    let bad = |msg: String| CompressError::Artifact { path: path.to_path_buf(), msg };
    let view = st.tensor(name).map_err(|_| bad(format!("missing tensor {name}")))?;
    let kind = match view.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::U8 => Kind::Uint8,
        other => return Err(bad(format!("tensor {name} has dtype {other:?}"))),
    };
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_data_size(view.data(), &shape, kind)?)
}

/// The dense f32 weight `[rows, n_in]` of quantized matrix `prefix`, or None when `prefix` is
/// not quantized in this artifact.
fn unpack_weight(st: &SafeTensors, prefix: &str, rows: i64, n_in: i64, path: &Path) -> Result<Option<Tensor>> {
    let kind_name = format!("{prefix}.row_kind");
    if st.tensor(&kind_name).is_err() {
        return Ok(None);
    }
    let bad = |msg: String| CompressError::Artifact { path: path.to_path_buf(), msg };
    let kinds_t = tensor_of(st, &kind_name, path)?;
    let kind_bytes = Vec::<u8>::try_from(&kinds_t.flatten(0, -1))?;
    let kinds = rows::unpack_kinds(&kind_bytes, rows as usize)
        .ok_or_else(|| bad(format!("{kind_name} does not hold {rows} row kinds")))?;
    let mut w = Tensor::zeros([rows, n_in], (Kind::Float, Device::Cpu));
    for (kind, idx) in rows::kind_groups(&kinds, Device::Cpu) {
        let n = idx.size()[0];
        let codes = tensor_of(st, &format!("{prefix}.{}.codes", kind.name()), path)?;
        let scales = tensor_of(st, &format!("{prefix}.{}.scales", kind.name()), path)?.to_kind(Kind::Float);
        if codes.size() != [n, kind.code_bytes(n_in)] || scales.size() != [n, kind.scales_per_row(n_in)] {
            return Err(bad(format!(
                "{prefix}.{} has shapes {:?}/{:?} for {n} rows of {n_in}",
                kind.name(),
                codes.size(),
                scales.size()
            )));
        }
        let values = rows::dequantize(&rows::unpack(&codes, kind, n_in), &scales, kind);
        let _ = w.index_copy_(0, &idx, &values);
    }
    Ok(Some(w))
}

/// A runnable model rebuilt from an artifact's files.
#[derive(Debug)]
pub struct LoadedArtifact {
    /// The configuration.
    pub cfg: ModelConfig,
    /// The network (dense weights, as transformers unpacks them).
    pub model: CausalLM,
    /// Its variables.
    pub vs: nn::VarStore,
}

/// Rebuilds the model of an artifact on `device` in `kind`, weights unpacked exactly as the
/// shipped Python reader does.
pub fn load(files: &ArtifactFiles, device: Device, kind: Kind) -> Result<LoadedArtifact> {
    let path = &files.path;
    let (_, cfg, st) = files.parts()?;
    let (mut vs, model) = build_causal_lm(&cfg, device, Kind::Float, &PlainBuilder)?;
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut var) in vars {
        let value = dense_tensor(&st, &name, &var.size(), path)?;
        tch::no_grad(|| var.f_copy_(&value))?;
    }
    vs.set_kind(kind);
    Ok(LoadedArtifact { cfg, model, vs })
}

/// An artifact unpacked to a dense checkpoint on disk (one shard per decoder layer) and loaded
/// with its layers offloaded ([`autoqat_model::offload`]): memory holds the packed zip and one
/// dense layer, not the dense model. The shards are removed when this is dropped.
#[derive(Debug)]
pub struct OffloadedArtifact {
    /// The configuration.
    pub cfg: ModelConfig,
    /// The network; its layers are read in as a pass reaches them.
    pub model: CausalLM,
    /// Reads the layers in; [`Offload::check`] returns a read error after a pass.
    pub offload: std::sync::Arc<autoqat_model::Offload>,
    /// The dense shards the layers are read from (deleted on drop: keep it while scoring).
    pub shards: tempfile::TempDir,
}

/// Variables by name with their shapes.
type Shapes = Vec<(String, Vec<i64>)>;

/// Every variable of the model `cfg` describes, by name with its shape, grouped by decoder layer
/// (the last group: the embedding, final norm and untied head). No layer is ever allocated
/// whole: each is emptied as soon as it is built.
fn variable_shapes(cfg: &ModelConfig) -> Result<Vec<Shapes>> {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut groups: Vec<Shapes> = Vec::new();
    CausalLM::new_with(&vs.root(), cfg, &PlainBuilder, &mut |i| {
        let prefix = autoqat_model::offload::layer_prefix(i);
        let mut layer: Shapes = Vec::new();
        for (name, mut var) in vs.variables().into_iter().filter(|(n, _)| n.starts_with(&prefix)) {
            layer.push((name, var.size()));
            var.set_data(&Tensor::empty([0], (Kind::Float, Device::Cpu)));
        }
        layer.sort();
        groups.push(layer);
        autoqat_model::offload::return_freed_pages();
        Ok(())
    })?;
    let mut rest: Shapes = vs
        .variables()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("model.layers."))
        .map(|(n, v)| (n, v.size()))
        .collect();
    rest.sort();
    groups.push(rest);
    Ok(groups)
}

/// Unpacks `files` layer by layer into a sharded f32 checkpoint under `scratch` (a new temporary
/// directory) and loads it with its decoder layers offloaded on `device` in `kind`. Scores the
/// same as [`load`]: the same bytes are unpacked by the same code.
pub fn load_offloaded(files: &ArtifactFiles, device: Device, kind: Kind, scratch: &Path) -> Result<OffloadedArtifact> {
    let path = &files.path;
    let (cfg_text, cfg, st) = files.parts()?;
    std::fs::create_dir_all(scratch).map_err(io_err(scratch))?;
    let dir = tempfile::Builder::new().prefix("autoqat-artifact-").tempdir_in(scratch).map_err(io_err(scratch))?;
    let mut weight_map = serde_json::Map::new();
    for (i, group) in variable_shapes(&cfg)?.into_iter().enumerate() {
        let shard = format!("shard-{i:05}.safetensors");
        let mut dense: Vec<(String, Tensor)> = Vec::with_capacity(group.len());
        for (name, size) in group {
            let value = dense_tensor(&st, &name, &size, path)?;
            weight_map.insert(name.clone(), shard.clone().into());
            dense.push((name, value));
        }
        autoqat_model::load::write_safetensors(&dense, &dir.path().join(&shard))?;
        drop(dense);
        autoqat_model::offload::return_freed_pages();
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    for (name, bytes) in [
        ("config.json", cfg_text.as_bytes().to_vec()),
        ("model.safetensors.index.json", index.to_string().into_bytes()),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).map_err(io_err(&p))?;
    }
    let source = dir.path().to_string_lossy().into_owned();
    let (loaded, offload) = autoqat_model::load_offloaded(&source, device, kind, &PlainBuilder)?;
    Ok(OffloadedArtifact { cfg, model: loaded.model, offload, shards: dir })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_live_reference_model_is_recognised_by_hub_id_or_directory() {
        assert_eq!(super::reference_params("Qwen/Qwen3.6-27B"), Some(27_000_000_000));
        assert_eq!(super::reference_params("/models/Qwen3.6-27B/"), Some(27_000_000_000));
        assert_eq!(super::reference_params("Qwen/Qwen3.6-27B-FP8"), None);
        assert_eq!(super::reference_params("HuggingFaceTB/SmolLM2-135M"), None);
    }

    #[test]
    fn an_artifact_over_its_budget_is_refused_and_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, zip) = (tmp.path().join("artifact"), tmp.path().join("artifact.zip"));
        let files: super::TextFiles = [("config.json".to_string(), b"{}".to_vec())].into_iter().collect();
        let tensors = vec![("w".to_string(), tch::Tensor::zeros([64, 64], (tch::Kind::Half, tch::Device::Cpu)))];
        let err = super::write(&dir, &zip, &files, &tensors, 8 * 1024).unwrap_err().to_string();
        assert!(err.contains("over the budget of 8192 bits") && err.contains("nothing was written"), "{err}");
        assert!(!dir.exists() && !zip.exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "no temporary left either");
        let written = super::write(&dir, &zip, &files, &tensors, 8 * 1024 * 1024).unwrap();
        assert!(zip.exists() && dir.join(super::WEIGHTS).exists() && written.size_bytes > 8192);
    }

    #[test]
    fn the_shipped_reader_keeps_every_line_of_code() {
        let shipped = String::from_utf8(super::modeling_py()).unwrap();
        assert!(shipped.len() < super::MODELING_PY.len());
        assert!(!shipped.lines().any(|l| l.trim_start().starts_with('#')));
        let code = |t: &str| -> Vec<String> {
            t.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).map(String::from).collect()
        };
        // Everything after the module docstring is there, in order.
        let after = super::MODELING_PY.splitn(3, "\"\"\"").nth(2).unwrap();
        assert!(code(&shipped).ends_with(&code(after)));
    }
}
