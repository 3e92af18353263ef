//! `experiments/compress.toml`: what `autoqat compress` does, strictly typed. An unknown key, a
//! wrong type or a value out of range is one line naming the key and what is allowed.
//!
//! ```toml
//! [model]
//! source = "path/to/hf-model"        # Hugging Face directory or hub id
//! [budget]
//! track = "ternary"                  # ternary: 2.2125 bits/param, binary: 1.3125
//! bits_per_param = 0.0               # 0 = the track's budget
//! track_rules = true                 # q4 the only rescue kind, on at most 10% of the parameters
//! [widen]
//! mlp_factor = 1.0                   # Net2Net: MLP width multiplier (1 = off)
//! heads_factor = 1.0                 # Net2Net: query heads per key/value group multiplier (1 = off)
//! split_noise = 1.5                  # a copy's share of the down column is (1 + u)/2, |u| <= this
//! [calibration]
//! text = "calib.txt"                 # relative to this file
//! tokens = 8192
//! seq_len = 256
//! [allocate]
//! sensitivity = "fisher"             # mse | activation | fisher
//! kinds = ["binary", "ternary", "q4"]
//! [distill]
//! enabled = false                    # layerwise distillation of each block after the allocation
//! steps = 20                         # AdamW steps per block
//! lr = 1e-4
//! batch = 4                          # calibration sequences per step
//! [finetune]
//! enabled = false                    # end-to-end KD of the whole compressed model (after distill)
//! steps = 50                         # AdamW steps, cosine from lr to lr/10 after warmup
//! lr = 5e-5
//! batch = 2                          # calibration sequences per step
//! top_k = 32                         # teacher alternatives kept per position (+ one Other bucket)
//! [eval]
//! text = "eval.txt"                  # one document per non-blank line
//! doc_tokens = 512
//! batch = 8
//! max_docs = 0                       # 0 = every document
//! [package]
//! tokenizer = true                   # ship the tokenizer files inside the artifact (counts against the budget)
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::distill::DistillSection;
use crate::error::{CompressError, Result};
use crate::finetune::FinetuneSection;
use crate::rows::RowKind;
use crate::sensitivity::Sensitivity;
use crate::widen::WidenSection;

/// The public track a budget comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Track {
    /// Native width 2 bits: 2.2125 bits/param.
    Ternary,
    /// Native width 1 bit: 1.3125 bits/param.
    Binary,
}

impl Track {
    /// `0.9 * native + 0.1 * (4 + 16/128)` (docs/contracts.md#the-compression-track).
    pub fn budget_bpp(self) -> f64 {
        let native = match self {
            Self::Ternary => 2.0,
            Self::Binary => 1.0,
        };
        0.9 * native + 0.1 * (4.0 + 16.0 / 128.0)
    }

    /// The recipe name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ternary => "ternary",
            Self::Binary => "binary",
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Hugging Face model directory (relative to the recipe) or hub id.
    pub source: String,
    /// auto, cpu, cuda, cuda:N or mps.
    #[serde(default = "default_device")]
    pub device: String,
    /// Read decoder layers in one at a time, so memory grows with one layer and not with depth
    /// (false: keep the whole model resident; widening and the fine-tune always do).
    #[serde(default = "yes")]
    pub offload: bool,
}

fn yes() -> bool {
    true
}

/// `[budget]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    /// Which track's budget applies.
    pub track: Track,
    /// An explicit budget in bits per parameter; 0 = the track's.
    #[serde(default)]
    pub bits_per_param: f64,
    /// Hold the artifact to the track's declared rules: q4 is the only rescue kind (no q8), on
    /// at most [`RESCUE_SHARE`] of the parameters. False: research beyond them.
    #[serde(default = "yes")]
    pub track_rules: bool,
}

/// The largest share of the parameters the track's rules let q4 rescue rows hold.
pub const RESCUE_SHARE: f64 = 0.10;

/// `[calibration]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSection {
    /// Calibration text (UTF-8), relative to the recipe.
    pub text: String,
    /// Calibration tokens (cut into rows of `seq_len`).
    #[serde(default = "default_calib_tokens")]
    pub tokens: usize,
    /// Tokens per calibration sequence.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
}

/// `[allocate]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocateSection {
    /// What ranks the rows.
    #[serde(default = "default_sensitivity")]
    pub sensitivity: Sensitivity,
    /// The kinds a row may take; the cheapest is every row's start.
    #[serde(default = "default_kinds")]
    pub kinds: Vec<RowKind>,
}

/// `[eval]`: the validator's protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Eval text (UTF-8, one document per non-blank line), relative to the recipe.
    pub text: String,
    /// Tokens kept from each document.
    #[serde(default = "default_doc_tokens")]
    pub doc_tokens: usize,
    /// Documents per forward pass (right-padded).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Score at most this many documents (0 = all).
    #[serde(default)]
    pub max_docs: usize,
}

/// `[package]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSection {
    /// Ship the tokenizer files `AutoTokenizer.from_pretrained` reads (their bytes count against
    /// the budget): the track's production validator tokenizes with the artifact's own.
    #[serde(default = "yes")]
    pub tokenizer: bool,
}

impl Default for PackageSection {
    fn default() -> Self {
        Self { tokenizer: true }
    }
}

/// The whole recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressRecipe {
    /// The starting checkpoint.
    pub model: ModelSection,
    /// The size budget.
    pub budget: BudgetSection,
    /// Calibration data.
    pub calibration: CalibrationSection,
    /// The row allocation.
    #[serde(default = "default_allocate")]
    pub allocate: AllocateSection,
    /// Net2Net widening before everything else.
    #[serde(default)]
    pub widen: WidenSection,
    /// Layerwise distillation after the allocation.
    #[serde(default)]
    pub distill: DistillSection,
    /// End-to-end fine-tune of the whole compressed model.
    #[serde(default)]
    pub finetune: FinetuneSection,
    /// The scoring protocol.
    pub eval: EvalSection,
    /// What goes into the artifact besides the weights.
    #[serde(default)]
    pub package: PackageSection,
    /// The recipe file's directory, for relative paths (not part of the file).
    #[serde(skip)]
    pub base: PathBuf,
}

fn default_device() -> String {
    "auto".into()
}
fn default_calib_tokens() -> usize {
    8192
}
fn default_seq_len() -> usize {
    256
}
fn default_sensitivity() -> Sensitivity {
    Sensitivity::Fisher
}
fn default_kinds() -> Vec<RowKind> {
    vec![RowKind::Binary, RowKind::Ternary, RowKind::Q4]
}
fn default_doc_tokens() -> usize {
    512
}
fn default_batch() -> usize {
    8
}
fn default_allocate() -> AllocateSection {
    AllocateSection { sensitivity: default_sensitivity(), kinds: default_kinds() }
}

impl CompressRecipe {
    /// Reads and checks a recipe file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| CompressError::Io { path: path.to_path_buf(), err })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_str(&text, path, base)
    }

    /// Parses and checks recipe text; `path` names it in errors, `base` resolves relative paths.
    pub fn from_str(text: &str, path: &Path, base: PathBuf) -> Result<Self> {
        let bad = |msg: String| CompressError::Recipe { path: path.to_path_buf(), msg };
        let mut r: CompressRecipe = toml::from_str(text).map_err(|e| bad(autoqat_recipe::toml_error_line(text, &e)))?;
        r.base = base;
        let bpp = r.budget.bits_per_param;
        if !(bpp == 0.0 || (0.5..=16.0).contains(&bpp)) {
            return Err(bad(format!("budget.bits_per_param = {bpp} is out of range (0 = the track's, else 0.5..16)")));
        }
        if r.allocate.kinds.is_empty() {
            return Err(bad("allocate.kinds is empty (allowed: binary, ternary, q4, q8)".into()));
        }
        r.allocate.kinds.sort();
        r.allocate.kinds.dedup();
        if r.budget.track_rules && r.allocate.kinds.contains(&RowKind::Q8) {
            return Err(bad(
                "allocate.kinds has q8, which the track's rules do not allow (rescue rows are q4: int4 codes in [-7, 7] with an fp16 scale per 128) (hint: drop q8, or set budget.track_rules = false to research beyond the rules)".into(),
            ));
        }
        let w = &r.widen;
        if ![w.mlp_factor, w.heads_factor].iter().all(|f| (1.0..=4.0).contains(f))
            || !(0.0..=2.0).contains(&w.split_noise)
        {
            return Err(bad(format!(
                "widen.mlp_factor = {} and widen.heads_factor = {} must be 1..4, widen.split_noise = {} in 0..2",
                w.mlp_factor, w.heads_factor, w.split_noise
            )));
        }
        if !(r.distill.lr > 0.0 && r.distill.lr <= 1.0) {
            return Err(bad(format!("distill.lr = {} is out of range (0..1]", r.distill.lr)));
        }
        if !(1..=4096).contains(&r.distill.batch) || r.distill.steps > 100_000 {
            return Err(bad("distill.batch must be 1..4096 and distill.steps at most 100000".into()));
        }
        r.finetune.check().map_err(bad)?;
        for (key, v, lo, hi) in [
            ("calibration.tokens", r.calibration.tokens, 2, 1 << 24),
            ("calibration.seq_len", r.calibration.seq_len, 2, 8192),
            ("eval.doc_tokens", r.eval.doc_tokens, 2, 8192),
            ("eval.batch", r.eval.batch, 1, 1024),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(bad(format!("{key} = {v} is out of range ({lo}..{hi})")));
            }
        }
        Ok(r)
    }

    /// The budget in bits per parameter this recipe asks for.
    pub fn budget_bpp(&self) -> f64 {
        if self.budget.bits_per_param > 0.0 {
            self.budget.bits_per_param
        } else {
            self.budget.track.budget_bpp()
        }
    }

    /// `p` resolved against the recipe's directory (absolute paths and hub ids as they are).
    pub fn resolve(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }

    /// The model source: a directory relative to the recipe when one exists there, else as given
    /// (a hub id).
    pub fn model_source(&self) -> String {
        let local = self.resolve(&self.model.source);
        if local.exists() {
            local.display().to_string()
        } else {
            self.model.source.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[model]\nsource = \"m\"\n[budget]\ntrack = \"ternary\"\n[calibration]\ntext = \"c.txt\"\n[eval]\ntext = \"e.txt\"\n";

    #[test]
    fn track_budgets_follow_the_formula() {
        assert!((Track::Ternary.budget_bpp() - 2.2125).abs() < 1e-12);
        assert!((Track::Binary.budget_bpp() - 1.3125).abs() < 1e-12);
    }

    #[test]
    fn defaults_and_errors_name_the_key() {
        let r = CompressRecipe::from_str(MIN, Path::new("c.toml"), PathBuf::new()).unwrap();
        assert_eq!(r.allocate.kinds, vec![RowKind::Binary, RowKind::Ternary, RowKind::Q4]);
        assert_eq!(r.eval.doc_tokens, 512);
        let bad = MIN.replace("track = \"ternary\"", "track = \"ternery\"");
        let err = CompressRecipe::from_str(&bad, Path::new("c.toml"), PathBuf::new()).unwrap_err().to_string();
        assert!(err.contains("ternery") && err.contains("binary"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let bad = format!("{MIN}[allocate]\nsensitivty = \"mse\"\n");
        let err = CompressRecipe::from_str(&bad, Path::new("c.toml"), PathBuf::new()).unwrap_err().to_string();
        assert!(err.contains("sensitivty"), "{err}");
    }
}
