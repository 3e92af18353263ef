//! The schema table: every recipe key with its doc, type, range, default, proposer ladder and
//! lock. Validation reads this table, so ranges live in exactly one place.
//!
//! The builders are public so that every other typed recipe (the compression track's
//! `experiments/compress.toml`) declares its keys with the same machinery.

use crate::{FieldSpec, FieldType};
use serde_json::{json, Value};

/// A field of any type.
pub fn field(key: &str, doc: &str, ty: FieldType, default: Value, choices: Vec<Value>, locked: bool) -> FieldSpec {
    FieldSpec { key: key.into(), doc: doc.into(), ty, default, choices, locked, active_when: None, prior: None }
}

/// One of `values`, all of them open to proposers unless `locked`.
pub fn enum_field(key: &str, doc: &str, values: &[&str], default: &str, locked: bool) -> FieldSpec {
    enum_field_for_humans(key, doc, values, &[], default, locked)
}

/// An enum whose `humans_only` values parse but are kept out of the proposer's `choices`.
pub fn enum_field_for_humans(
    key: &str,
    doc: &str,
    values: &[&str],
    humans_only: &[&str],
    default: &str,
    locked: bool,
) -> FieldSpec {
    let vals: Vec<String> = values.iter().map(|s| s.to_string()).collect();
    let choices = vals.iter().filter(|v| !humans_only.contains(&v.as_str())).map(|v| json!(v)).collect();
    field(key, doc, FieldType::Enum { values: vals }, json!(default), choices, locked)
}

/// An integer in `[min, max]` with a proposer ladder.
pub fn int_field(key: &str, doc: &str, min: i64, max: i64, default: i64, ladder: &[i64], locked: bool) -> FieldSpec {
    let choices = ladder.iter().map(|v| json!(v)).collect();
    field(key, doc, FieldType::Int { min, max }, json!(default), choices, locked)
}

/// A float in `[min, max]` with a proposer ladder.
pub fn float_field(key: &str, doc: &str, min: f64, max: f64, default: f64, ladder: &[f64], locked: bool) -> FieldSpec {
    let choices = ladder.iter().map(|v| json!(v)).collect();
    field(key, doc, FieldType::Float { min, max }, json!(default), choices, locked)
}

/// A flag; proposers may flip it unless `locked`.
pub fn bool_field(key: &str, doc: &str, default: bool, locked: bool) -> FieldSpec {
    let choices = if locked { vec![] } else { vec![json!(false), json!(true)] };
    field(key, doc, FieldType::Bool, json!(default), choices, locked)
}

/// An expression key the proposer may change: free text checked by `autoqat-expr`.
pub fn expr_field(key: &str, doc: &str, names: &str) -> FieldSpec {
    field(key, doc, FieldType::Expr { names: names.into() }, json!(""), vec![], false)
}

/// Free text (a path or hub id); always locked.
pub fn string_field(key: &str, doc: &str, default: &str) -> FieldSpec {
    field(key, doc, FieldType::String, json!(default), vec![], true)
}

/// A string the file must set (no default): a path or hub id.
pub fn required_string_field(key: &str, doc: &str) -> FieldSpec {
    field(key, doc, FieldType::String, Value::Null, vec![], true)
}

/// One of `values` that the file must set (no default); locked.
pub fn required_enum_field(key: &str, doc: &str, values: &[&str]) -> FieldSpec {
    let values = values.iter().map(|s| s.to_string()).collect();
    field(key, doc, FieldType::Enum { values }, Value::Null, vec![], true)
}

/// A non-empty list of distinct `values` (order does not matter); locked.
pub fn list_field(key: &str, doc: &str, values: &[&str], default: &[&str]) -> FieldSpec {
    let vals = values.iter().map(|s| s.to_string()).collect();
    field(key, doc, FieldType::List { values: vals }, json!(default), vec![], true)
}

fn loss_names() -> String {
    let terms: Vec<String> = autoqat_expr::LOSS_TERMS.iter().map(|(n, d)| format!("{n} ({d})")).collect();
    format!("{}; and step, steps, progress (step / steps), pi", terms.join(", "))
}

/// Every recipe key, in file order.
pub(crate) fn fields() -> Vec<FieldSpec> {
    const LOCKED: bool = true;
    const FREE: bool = false;
    vec![
        // [model]
        string_field("model.source", "HF model directory or hub id of the full-precision starting checkpoint", "HuggingFaceTB/SmolLM-135M"),
        string_field("model.teacher", "teacher checkpoint for distillation; empty = the starting checkpoint", ""),
        // [data]
        string_field("data.train_text", "training text file (UTF-8), relative to the recipe file (`autoqat prepare` writes it)", "../data/train.txt"),
        string_field("data.eval_text", "evaluation text file (UTF-8), relative to the recipe file (`autoqat prepare` writes it)", "../data/eval.txt"),
        int_field("data.seq_len", "training sequence length in tokens", 8, 8192, 256, &[], LOCKED),
        int_field("data.eval_ctx", "evaluation context length in tokens", 8, 8192, 512, &[], LOCKED),
        int_field("data.eval_stride", "evaluation stride in tokens (= eval_ctx: disjoint windows)", 1, 8192, 512, &[], LOCKED),
        int_field("data.eval_max_tokens", "evaluate on at most this many tokens (0 = the whole eval text)", 0, 1 << 40, 0, &[], LOCKED),
        // [budget]
        int_field("budget.steps", "optimizer steps (ignored when budget.tokens > 0)", 0, 10_000_000, 300, &[], LOCKED),
        int_field("budget.tokens", "token budget; 0 = use budget.steps", 0, 1 << 50, 0, &[], LOCKED),
        int_field("budget.eval_every", "evaluate every N steps (and at the end)", 1, 10_000_000, 100, &[], LOCKED),
        int_field("budget.checkpoint_every", "write a resumable checkpoint every N steps (0 = only at the end)", 0, 10_000_000, 100, &[], LOCKED),
        // [quant]
        // `none` (full-precision fine-tuning, a reference for humans) would win every
        // comparison by not quantizing, so it is not among the proposer's choices.
        enum_field_for_humans(
            "quant.method",
            "weight quantizer: ternary_absmean (BitNet b1.58), ternary_absmax, ternary_deadzone (|w| > t*scale), paretoq_stretched (learned per-row step), binary_absmean, expr (the program in quant.expr), none (full precision, reference runs only)",
            &["ternary_absmean", "ternary_absmax", "ternary_deadzone", "paretoq_stretched", "binary_absmean", "expr", "none"],
            // `expr` needs a program a search cannot invent; an LLM writes one in quant.expr.
            &["expr", "none"],
            "ternary_absmean",
            FREE,
        ),
        enum_field("quant.granularity", "weights sharing one scale", &["per_tensor", "per_row", "group64", "group128", "group256"], "per_tensor", FREE),
        float_field("quant.deadzone_t", "deadzone threshold as a multiple of mean|w| (ternary_deadzone only)", 0.0, 2.0, 0.5, &[0.3, 0.4, 0.5, 0.6, 0.7, 0.8], FREE).active_when("quant.method", &[json!("ternary_deadzone")]),
        expr_field("quant.expr", "the weight quantizer as a program (quant.method = \"expr\"), evaluated per matrix in the grouping of quant.granularity", autoqat_expr::QUANT_NAMES).active_when("quant.method", &[json!("expr")]),
        bool_field("quant.attention", "quantize the attention projections q/k/v/o (locked: what is quantized is the goal)", true, LOCKED),
        bool_field("quant.mlp", "quantize the MLP projections gate/up/down (locked: what is quantized is the goal)", true, LOCKED),
        bool_field("quant.embeddings", "quantize the token embedding (and a tied lm_head) (locked: what is quantized is the goal)", false, LOCKED),
        bool_field("quant.lm_head", "quantize an untied lm_head (locked: what is quantized is the goal)", false, LOCKED),
        // [ste]
        enum_field_for_humans(
            "ste.lambda_schedule",
            "ramp of lambda in w + lambda*(q(w) - w).detach(), from 0 to 1 over the warmup; expr = the function in ste.lambda_expr",
            &["constant", "linear", "cosine", "exponential", "step", "sigmoid", "expr"],
            &["expr"],
            "linear",
            FREE,
        ),
        float_field("ste.lambda_warmup_frac", "fraction of the steps over which lambda reaches 1", 0.0, 1.0, 0.2, &[0.0, 0.05, 0.1, 0.2, 0.3, 0.5], FREE),
        expr_field("ste.lambda_expr", "lambda at each step (ste.lambda_schedule = \"expr\"), a number in [0, 1]", autoqat_expr::SCHEDULE_NAMES).active_when("ste.lambda_schedule", &[json!("expr")]),
        // [activations]
        enum_field("activations.bits", "bits of the inputs of quantized linears: none, 8 or 4 (symmetric absmax)", &["none", "8", "4"], "none", FREE),
        enum_field("activations.granularity", "activations sharing one absmax scale", &["per_token", "per_channel"], "per_token", FREE).active_when("activations.bits", &[json!("8"), json!("4")]),
        float_field("activations.a4_flip_frac", "with bits = 8, switch to 4 bits (one-way) after this fraction of the steps, or of budget.tokens once that many tokens were seen (1 = never)", 0.0, 1.0, 1.0, &[0.5, 0.7, 0.8, 0.9, 1.0], FREE).active_when("activations.bits", &[json!("8")]),
        // [deadzone_recovery]
        bool_field("deadzone_recovery.enabled", "Tequila-style: the weights quantized to 0 feed a per-output bias (foldable offline)", false, FREE),
        float_field("deadzone_recovery.scale_init", "initial learned factor of that bias", 0.0, 1.0, 0.01, &[0.001, 0.01, 0.05, 0.1], FREE).active_when("deadzone_recovery.enabled", &[json!(true)]),
        // [optim]
        float_field("optim.lr", "peak AdamW learning rate", 1e-7, 100.0, 1e-4, &[1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3], FREE),
        float_field("optim.lr_warmup_frac", "fraction of the steps of linear lr warmup", 0.0, 0.5, 0.05, &[0.0, 0.02, 0.05, 0.1, 0.2], FREE),
        enum_field("optim.lr_schedule", "lr schedule after warmup", &["constant", "cosine", "wsd"], "cosine", FREE),
        float_field("optim.min_lr_frac", "final lr as a fraction of the peak (cosine, wsd)", 0.0, 1.0, 0.1, &[0.0, 0.1, 0.3], FREE).active_when("optim.lr_schedule", &[json!("cosine"), json!("wsd")]),
        float_field("optim.wsd_decay_frac", "fraction of the steps spent decaying (wsd)", 0.0, 1.0, 0.2, &[0.1, 0.2, 0.3], FREE).active_when("optim.lr_schedule", &[json!("wsd")]),
        float_field("optim.weight_decay", "decoupled weight decay (matrices only; never norms, scales or biases)", 0.0, 1.0, 0.0, &[0.0, 0.01, 0.05, 0.1], FREE),
        float_field("optim.beta1", "AdamW beta1", 0.0, 0.999, 0.9, &[0.8, 0.9, 0.95], FREE),
        float_field("optim.beta2", "AdamW beta2", 0.0, 0.99999, 0.95, &[0.95, 0.98, 0.999], FREE),
        float_field("optim.grad_clip", "clip the global gradient norm (0 = off)", 0.0, 1000.0, 1.0, &[0.0, 0.5, 1.0, 2.0], FREE),
        int_field("optim.batch_size", "sequences per micro-batch (tokens per step are part of the budget)", 1, 4096, 8, &[], LOCKED),
        int_field("optim.grad_accum", "micro-batches per optimizer step", 1, 4096, 1, &[], LOCKED),
        int_field("optim.seed", "seed of data order and initialization", 0, i64::MAX, 0, &[], LOCKED),
        // [distill]
        bool_field("distill.enabled", "distill from the frozen full-precision teacher", false, FREE),
        float_field("distill.temperature", "softmax temperature tau of the KL term (scaled by tau^2)", 0.1, 20.0, 2.0, &[1.0, 2.0, 4.0], FREE).active_when("distill.enabled", &[json!(true)]),
        float_field("distill.ce_weight", "weight of the next-token cross entropy", 0.0, 10.0, 0.5, &[0.0, 0.1, 0.5, 1.0], FREE).active_when("distill.enabled", &[json!(true)]),
        float_field("distill.kl_weight", "weight of the KL(teacher || student) term", 0.0, 10.0, 1.0, &[0.5, 1.0, 2.0], FREE).active_when("distill.enabled", &[json!(true)]),
        // [loss]
        expr_field("loss.extra", "an extra term added to the training loss (empty = none)", &loss_names()),
        // [traces]
        bool_field("traces.enabled", "train on teacher traces (`autoqat kd collect`) instead of data.train_text (locked: the data is the goal)", false, LOCKED),
        string_field("traces.dir", "trace directory written by `autoqat kd collect --out`, relative to the recipe file", ""),
        int_field("traces.top_k", "use the first K teacher alternatives per position; the rest joins the Other mass", 1, 20, 20, &[5, 10, 20], FREE).active_when("traces.enabled", &[json!(true)]),
        float_field("traces.temperature", "temperature tau of teacher and student in the Top-K+Other KL (scaled by tau^2)", 0.1, 20.0, 1.3, &[1.0, 1.3, 2.0], FREE).active_when("traces.enabled", &[json!(true)]),
        float_field("traces.kl_weight", "weight of the KL over Top-K+Other", 0.0, 10.0, 1.0, &[0.5, 1.0, 2.0], FREE).active_when("traces.enabled", &[json!(true)]),
        float_field("traces.ce_weight", "weight of the cross entropy on the teacher's sampled token", 0.0, 10.0, 0.5, &[0.0, 0.1, 0.5, 1.0], FREE).active_when("traces.enabled", &[json!(true)]),
        float_field("traces.format_weight", "extra cross-entropy weight on structural tokens (JSON/code punctuation)", 0.0, 10.0, 0.2, &[0.0, 0.2, 0.5], FREE).active_when("traces.enabled", &[json!(true)]),
        // [runtime]
        enum_field("runtime.device", "compute device; auto = cuda > mps > cpu", &["auto", "cpu", "cuda", "mps"], "auto", LOCKED),
        enum_field("runtime.precision", "auto = bf16 autocast on CUDA, fp32 on CPU/MPS", &["auto", "fp32", "bf16"], "auto", LOCKED),
    ]
}
