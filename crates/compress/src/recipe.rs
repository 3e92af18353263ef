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

use autoqat_recipe::{
    bool_field, enum_field, float_field, int_field, list_field, required_enum_field, required_string_field,
    string_field, Schema,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{CompressError, Result};
use crate::rows::RowKind;
use crate::sensitivity::Sensitivity;

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
    pub device: String,
    /// Read decoder layers in one at a time, so memory grows with one layer and not with depth
    /// (false: keep the whole model resident; widening and the fine-tune always do).
    pub offload: bool,
}

/// `[budget]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    /// Which track's budget applies.
    pub track: Track,
    /// An explicit budget in bits per parameter; 0 = the track's.
    pub bits_per_param: f64,
    /// Hold the artifact to the track's declared rules: q4 is the only rescue kind (no q8), on
    /// at most [`RESCUE_SHARE`] of the parameters. False: research beyond them.
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
    pub tokens: usize,
    /// Tokens per calibration sequence.
    pub seq_len: usize,
}

/// `[allocate]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocateSection {
    /// What ranks the rows.
    pub sensitivity: Sensitivity,
    /// The kinds a row may take; the cheapest is every row's start.
    pub kinds: Vec<RowKind>,
}

/// `[eval]`: the validator's protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Eval text (UTF-8, one document per non-blank line), relative to the recipe.
    pub text: String,
    /// Tokens kept from each document.
    pub doc_tokens: usize,
    /// Documents per forward pass (right-padded).
    pub batch: usize,
    /// Score at most this many documents (0 = all).
    pub max_docs: usize,
}

/// `[package]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSection {
    /// Ship the tokenizer files `AutoTokenizer.from_pretrained` reads (their bytes count against
    /// the budget): the track's production validator tokenizes with the artifact's own.
    pub tokenizer: bool,
}

/// `[widen]`: Net2Net widening before everything else.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidenSection {
    /// MLP width multiplier (1 = off).
    pub mlp_factor: f64,
    /// Query heads per key/value group multiplier (1 = off); rounded to whole heads per group.
    pub heads_factor: f64,
    /// Half-width of the uniform noise `u` of a copy's share `(1 + u) / 2` of the down column.
    pub split_noise: f64,
    /// Seed of that noise.
    pub seed: u64,
}

/// `[distill]`: layerwise distillation after the allocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSection {
    /// Run the stage.
    pub enabled: bool,
    /// Optimizer steps per block.
    pub steps: usize,
    /// AdamW learning rate of the latents.
    pub lr: f64,
    /// Calibration sequences per step.
    pub batch: i64,
}

/// `[finetune]`: end-to-end KD of the whole compressed model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneSection {
    /// Run the stage.
    pub enabled: bool,
    /// Optimizer steps over the whole model.
    pub steps: usize,
    /// Peak AdamW learning rate of the latents (cosine to a tenth after `warmup` steps).
    pub lr: f64,
    /// Linear warmup steps.
    pub warmup: usize,
    /// Calibration sequences per step.
    pub batch: i64,
    /// Teacher alternatives kept per position (the rest is one "Other" bucket).
    pub top_k: i64,
    /// Softmax temperature of the KL term (scaled by its square).
    pub temperature: f64,
    /// Weight of the Top-K + Other KL to the teacher.
    pub kl_weight: f64,
    /// Weight of the cross entropy on the calibration text's next token.
    pub ce_weight: f64,
    /// Global gradient-norm clip (0 = none).
    pub clip: f64,
    /// Save a resumable checkpoint every this many steps (0 = never).
    pub checkpoint_every: usize,
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
    pub allocate: AllocateSection,
    /// Net2Net widening before everything else.
    pub widen: WidenSection,
    /// Layerwise distillation after the allocation.
    pub distill: DistillSection,
    /// End-to-end fine-tune of the whole compressed model.
    pub finetune: FinetuneSection,
    /// The scoring protocol.
    pub eval: EvalSection,
    /// What goes into the artifact besides the weights.
    pub package: PackageSection,
    /// The recipe file's directory, for relative paths (not part of the file).
    #[serde(skip)]
    pub base: PathBuf,
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
        let mut r: CompressRecipe = autoqat_recipe::parse_with(text, &schema()).map_err(|e| bad(e.detail()))?;
        r.base = base;
        r.allocate.kinds.sort();
        r.allocate.kinds.dedup();
        // Rules between keys; every single key's type and range is the schema's.
        if r.budget.track_rules && r.allocate.kinds.contains(&RowKind::Q8) {
            return Err(bad(
                "allocate.kinds has q8, which the track's rules do not allow (rescue rows are q4: int4 codes in [-7, 7] with an fp16 scale per 128) (hint: drop q8, or set budget.track_rules = false to research beyond the rules)".into(),
            ));
        }
        let f = &r.finetune;
        if f.kl_weight + f.ce_weight == 0.0 {
            return Err(bad(
                "finetune.kl_weight and finetune.ce_weight are both 0, so the fine-tune would have no loss (hint: set one of them above 0)".into(),
            ));
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

/// Every key of `experiments/compress.toml`: what `autoqat compress --schema`
/// prints, what the parser checks, what the configuration reference shows, and (for the free
/// keys) the search space the compression workspace's loop explores.
pub fn schema() -> Schema {
    const LOCKED: bool = true;
    const FREE: bool = false;
    let fields = vec![
        // [model]
        required_string_field("model.source", "Hugging Face directory (relative to the recipe) or hub id"),
        string_field("model.device", "compute device: auto, cpu, cuda, cuda:N or mps", "auto"),
        bool_field("model.offload", "read decoder layers in one at a time (memory of one layer, not the model; the verify stage reloads the zip the same way); widening and the end-to-end fine-tune hold the whole model whatever this says", true, LOCKED),
        // [budget]
        required_enum_field("budget.track", "whose budget applies: ternary = 2.2125 bits/param, binary = 1.3125", &["ternary", "binary"]),
        float_field("budget.bits_per_param", "an explicit budget in bits per parameter; 0 = the track's", 0.0, 16.0, 0.0, &[], LOCKED),
        bool_field("budget.track_rules", "the track's declared rules: q4 is the only rescue kind (q8 is refused) and q4 rows hold at most 10% of the parameters (`q4_share` in the summary); false researches beyond them", true, LOCKED),
        // [allocate]
        enum_field("allocate.sensitivity", "how a row's loss from quantization is measured, which ranks the rows (fisher won by far on SmolLM2, see docs/benchmarks.md)", &["fisher", "activation", "mse"], "fisher", FREE),
        list_field("allocate.kinds", "the kinds a row may take; the cheapest is every row's start, one kind = the plain per-row baseline", &["binary", "ternary", "q4", "q8"], &["binary", "ternary", "q4"]),
        // [calibration]
        required_string_field("calibration.text", "calibration text (UTF-8), relative to the recipe"),
        int_field("calibration.tokens", "calibration tokens that measure the sensitivities, cut into sequences", 2, 1 << 24, 8192, &[8192, 4096, 16384, 32768], FREE),
        int_field("calibration.seq_len", "tokens per calibration sequence", 2, 8192, 256, &[256, 128, 512], FREE),
        // [widen]
        float_field("widen.mlp_factor", "Net2Net MLP width multiplier (1 = off)", 1.0, 4.0, 1.0, &[], LOCKED),
        float_field("widen.heads_factor", "Net2Net query heads per key/value group multiplier (1 = off)", 1.0, 4.0, 1.0, &[], LOCKED),
        float_field("widen.split_noise", "half-width of the noise on a copy's share of the down column", 0.0, 2.0, 1.5, &[], LOCKED),
        int_field("widen.seed", "seed of that noise", 0, i64::MAX, 0, &[], LOCKED),
        // [distill]
        bool_field("distill.enabled", "layerwise distillation of each block after the allocation", false, FREE),
        int_field("distill.steps", "AdamW steps per block when distilling", 0, 100_000, 20, &[20, 50, 100], FREE).active_when("distill.enabled", &[json!(true)]),
        float_field("distill.lr", "learning rate of the latent weights", 1e-9, 1.0, 1e-4, &[], LOCKED),
        int_field("distill.batch", "calibration sequences per step", 1, 4096, 4, &[], LOCKED),
        // [finetune]
        bool_field("finetune.enabled", "end-to-end KD of the whole compressed model to the full-precision teacher, after the allocation (and distill)", false, FREE),
        int_field("finetune.steps", "AdamW steps of the end-to-end fine-tune", 0, 1_000_000, 50, &[50, 100, 200], FREE).active_when("finetune.enabled", &[json!(true)]),
        float_field("finetune.lr", "peak learning rate of the end-to-end fine-tune: linear warmup, then cosine to a tenth", 1e-9, 1.0, 5e-5, &[5e-5, 1e-4, 2e-5], FREE).active_when("finetune.enabled", &[json!(true)]),
        int_field("finetune.warmup", "warmup steps", 0, 1_000_000, 5, &[], LOCKED),
        int_field("finetune.batch", "calibration sequences per step", 1, 4096, 2, &[], LOCKED),
        int_field("finetune.top_k", "teacher alternatives kept per position; the rest is one Other bucket", 1, 1024, 32, &[], LOCKED),
        float_field("finetune.temperature", "softmax temperature of the KL (scaled by its square)", 1e-3, 20.0, 1.0, &[], LOCKED),
        float_field("finetune.kl_weight", "weight of the Top-K + Other KL to the teacher", 0.0, 100.0, 1.0, &[], LOCKED),
        float_field("finetune.ce_weight", "weight of the cross entropy on the calibration text's next token", 0.0, 100.0, 0.0, &[], LOCKED),
        float_field("finetune.clip", "global gradient-norm clip (0 = none)", 0.0, 1e6, 1.0, &[], LOCKED),
        int_field("finetune.checkpoint_every", "steps between resumable checkpoints (0 = none)", 0, 1_000_000, 25, &[], LOCKED),
        // [eval]
        required_string_field("eval.text", "eval documents (UTF-8, one per non-blank line), relative to the recipe"),
        int_field("eval.doc_tokens", "tokens kept per document", 2, 8192, 512, &[], LOCKED),
        int_field("eval.batch", "documents per forward pass (right-padded)", 1, 1024, 8, &[], LOCKED),
        int_field("eval.max_docs", "score at most this many documents (0 = all)", 0, i64::MAX, 0, &[], LOCKED),
        // [package]
        bool_field("package.tokenizer", "ship the tokenizer files `AutoTokenizer` reads in the artifact (their bytes count against the budget): the track's production validator tokenizes with the artifact's own", true, LOCKED),
    ];
    // `[allocate]` comes before `[calibration]` here (not in the file): the order of the free
    // keys is the order the builtin search polls them in, and the allocation's sensitivity
    // moves the score most.
    Schema { fields }
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

    fn parse(text: &str) -> Result<CompressRecipe> {
        CompressRecipe::from_str(text, Path::new("c.toml"), PathBuf::new())
    }

    fn leaf_keys(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    leaf_keys(v, &key, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }

    #[test]
    fn schema_and_structs_name_the_same_keys() {
        let r = parse(MIN).unwrap();
        let mut struct_keys = Vec::new();
        leaf_keys(&toml::Value::try_from(&r).unwrap(), "", &mut struct_keys);
        let mut schema_keys: Vec<String> = schema().fields.iter().map(|f| f.key.clone()).collect();
        struct_keys.sort();
        schema_keys.sort();
        assert_eq!(struct_keys, schema_keys);
    }

    #[test]
    fn every_choice_parses_and_ladders_hold_their_default() {
        for f in schema().searchable() {
            assert_eq!(f.choices.first(), Some(&f.default), "{}: the search starts from the default", f.key);
            for c in &f.choices {
                let (sec, key) = f.key.split_once('.').unwrap();
                let mut table: toml::Table = MIN.parse().unwrap();
                let section = table.entry(sec).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let value: toml::Value = toml::Value::try_from(c).unwrap();
                section.as_table_mut().unwrap().insert(key.to_string(), value);
                let text = toml::to_string(&table).unwrap();
                parse(&text).unwrap_or_else(|e| panic!("choice {c} of {} rejected: {e}", f.key));
            }
        }
    }

    #[test]
    fn defaults_and_errors_name_the_key() {
        let r = parse(MIN).unwrap();
        assert_eq!(r.allocate.kinds, vec![RowKind::Binary, RowKind::Ternary, RowKind::Q4]);
        assert_eq!(r.eval.doc_tokens, 512);
        assert_eq!(r.finetune.checkpoint_every, 25);
        assert!(r.package.tokenizer && r.model.offload);
        let bad = MIN.replace("track = \"ternary\"", "track = \"ternery\"");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.contains("budget.track") && err.contains("ternery") && err.contains("binary"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let bad = format!("{MIN}[allocate]\nsensitivty = \"mse\"\n");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.contains("allocate.sensitivty") && err.contains("sensitivity"), "{err}");
        let err = parse(&MIN.replace("[eval]\ntext = \"e.txt\"\n", "")).unwrap_err().to_string();
        assert!(err.contains("eval.text") && err.contains("missing"), "{err}");
        let err = parse(&format!("{MIN}[distill]\nlr = 3.0\n")).unwrap_err().to_string();
        assert!(err.contains("distill.lr") && err.contains("3.0") && err.contains(", 1]"), "{err}");
    }

    #[test]
    fn kinds_are_a_set_of_known_kinds_and_the_rules_refuse_q8() {
        let r = parse(&format!("{MIN}[allocate]\nkinds = [\"q4\", \"binary\", \"q4\"]\n")).unwrap();
        assert_eq!(r.allocate.kinds, vec![RowKind::Binary, RowKind::Q4]);
        for bad in ["[]", "[\"q3\"]", "\"q4\""] {
            let err = parse(&format!("{MIN}[allocate]\nkinds = {bad}\n")).unwrap_err().to_string();
            assert!(err.contains("allocate.kinds"), "{bad}: {err}");
        }
        let err = parse(&format!("{MIN}[allocate]\nkinds = [\"ternary\", \"q8\"]\n")).unwrap_err().to_string();
        assert!(err.contains("q8") && err.contains("track_rules"), "{err}");
        let err = parse(&format!("{MIN}[finetune]\nkl_weight = 0.0\n")).unwrap_err().to_string();
        assert!(err.contains("finetune.kl_weight") && err.contains("finetune.ce_weight"), "{err}");
    }
}
