//! autoqat-expr: the recipe's expression language, for the places where researchers invent
//! things: the weight quantizer (`quant.expr`), the STE lambda schedule (`ste.lambda_expr`)
//! and an extra loss term (`loss.extra`).
//!
//! Text is parsed and type-checked here, before any work: an unknown name, a scale with one
//! value per weight, or codes that can leave {-1, 0, +1} are one-line errors. This crate has
//! no tensors; `autoqat-qat` evaluates checked programs with tch operations (with autograd)
//! and the schedules are evaluated here on plain numbers.

mod check;
mod parse;
pub mod scalar;

pub use check::{axis_of, is_reduction, Axis, Info, Level, FUNCTIONS};
pub use parse::{parse_expr, parse_program, BinOp, Expr};

use check::{check_level, Scope};
use std::collections::BTreeMap;

/// An expression error: what is wrong and, for syntax errors, where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// One line.
    pub message: String,
}

impl ExprError {
    fn at(offset: usize, message: String) -> ExprError {
        ExprError { message: format!("column {}: {message}", offset + 1) }
    }

    fn plain(message: String) -> ExprError {
        ExprError { message }
    }
}

/// The syntax, for the schema and the prompt.
pub const SYNTAX: &str = "numbers (1, 0.5, 1e-5), names, + - * / (left to right, * / before + -), comparisons < <= > >= == != (give 0 or 1), parentheses, and the functions below";

/// How a quantizer program's dequantized weight is formed from its outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleForm {
    /// `q = code * scale`.
    Scale,
    /// `q = code / inv_scale` (BitNet's form; the stored scale is `1 / inv_scale`).
    InvScale,
}

/// A checked weight-quantizer program (`quant.expr`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantProgram {
    /// The source text.
    pub source: String,
    /// Statements in order; `uses_alpha` says which ones depend on the learned scale.
    pub stmts: Vec<Stmt>,
    /// Whether the scale is given as `scale` or as `inv_scale`.
    pub form: ScaleForm,
    /// The program learns a per-group scale `alpha` (initialised by `alpha_init`).
    pub learned: bool,
}

/// One `name = expr` statement of a program.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    /// The bound name.
    pub name: String,
    /// Its value.
    pub expr: Expr,
    /// It reads `alpha`, directly or through another name.
    pub uses_alpha: bool,
}

/// Names a quantizer program reads and binds.
pub const QUANT_NAMES: &str = "inputs: w (the weight, one value per weight), alpha (the learned per-group scale, when alpha_init is defined); outputs: code (in {-1, 0, +1}, one per weight), scale or inv_scale (one per group at most; q = code * scale or code / inv_scale), optional alpha_init (the learned scale's start, one per group)";

const RESERVED: &[&str] = &["w", "alpha", "row", "group", "tensor"];

impl QuantProgram {
    /// Parses and checks `text`. `rows`: the grouping has rows (not `per_tensor`).
    pub fn compile(text: &str, rows: bool) -> Result<QuantProgram, ExprError> {
        let parsed = parse_program(text)?;
        let learned = parsed.iter().any(|(n, _)| n == "alpha_init");
        let mut names = BTreeMap::new();
        names
            .insert("w".to_string(), Info { level: Level::Elem, int: false, lo: f64::NEG_INFINITY, hi: f64::INFINITY });
        let mut alpha_names = vec!["alpha".to_string()];
        let mut stmts = Vec::new();
        for (name, expr) in parsed {
            if RESERVED.contains(&name.as_str()) || check::is_reduction(&name) {
                return Err(ExprError::plain(format!("`{name}` is reserved and cannot be assigned")));
            }
            if names.contains_key(&name) {
                return Err(ExprError::plain(format!(
                    "`{name}` is assigned twice; give the second value another name"
                )));
            }
            let uses_alpha = alpha_names.iter().any(|a| expr.mentions(a));
            if name == "alpha_init" && uses_alpha {
                return Err(ExprError::plain("alpha_init cannot read alpha (it is alpha's starting value)".into()));
            }
            if uses_alpha && !learned {
                return Err(ExprError::plain(
                    "`alpha` is the learned scale and needs `alpha_init = ...` (e.g. alpha_init = max(mean(abs(w)), 1e-5) * 1.5)".into(),
                ));
            }
            let mut scope_names = names.clone();
            if learned && name != "alpha_init" {
                scope_names
                    .insert("alpha".into(), Info { level: Level::Group, int: false, lo: 0.0, hi: f64::INFINITY });
            }
            let known = "w, alpha (with alpha_init), and names assigned above";
            let scope = Scope { names: scope_names, rows: Some(rows), known };
            let info = scope.check(&expr).map_err(|m| ExprError::plain(format!("in `{name} = ...`: {m}")))?;
            match name.as_str() {
                "code" if !info.is_code() => {
                    return Err(ExprError::plain(format!(
                        "code must be an integer in [-1, 1], but it can be {}; e.g. clamp(round(w / scale), -1, 1) or sign(w)",
                        describe_range(info)
                    )))
                }
                "scale" | "inv_scale" | "alpha_init" => {
                    check_level(&name, info, Level::Group, "; reduce it with mean/amax/...(x)")?;
                }
                _ => {}
            }
            if uses_alpha {
                alpha_names.push(name.clone());
            }
            names.insert(name.clone(), info);
            stmts.push(Stmt { name, expr, uses_alpha });
        }
        if !names.contains_key("code") {
            return Err(ExprError::plain("the program does not assign `code`".into()));
        }
        let form = match (names.contains_key("scale"), names.contains_key("inv_scale")) {
            (true, false) => ScaleForm::Scale,
            (false, true) => ScaleForm::InvScale,
            (false, false) => {
                return Err(ExprError::plain("the program assigns neither `scale` nor `inv_scale`".into()))
            }
            (true, true) => return Err(ExprError::plain("assign `scale` or `inv_scale`, not both".into())),
        };
        if learned && !stmts.iter().any(|s| s.name != "alpha_init" && s.uses_alpha) {
            return Err(ExprError::plain("alpha_init is defined but nothing reads `alpha`".into()));
        }
        Ok(QuantProgram { source: text.to_string(), stmts, form, learned })
    }
}

fn describe_range(i: Info) -> String {
    let kind = if i.int { "an integer" } else { "any real" };
    let bound = |v: f64| if v.is_finite() { format!("{v}") } else { "unbounded".into() };
    format!("{kind} in [{}, {}]", bound(i.lo), bound(i.hi))
}

/// Names of a schedule expression (`ste.lambda_expr`).
pub const SCHEDULE_NAMES: &str = "step (0-based), steps (the trial's total), warmup (ste.lambda_warmup_frac of steps, in steps), p (min(step / warmup, 1); 1 when warmup = 0), progress (step / steps), pi";

/// A checked lambda schedule: a function of the step.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleExpr {
    expr: Expr,
}

const SCHEDULE_VARS: &[&str] = &["step", "steps", "warmup", "p", "progress", "pi"];

impl ScheduleExpr {
    /// Parses and checks `text`.
    pub fn compile(text: &str) -> Result<ScheduleExpr, ExprError> {
        let expr = parse_expr(text)?;
        let scope = scalar_scope(SCHEDULE_VARS, "step, steps, warmup, p, progress, pi");
        scope.check(&expr).map_err(ExprError::plain)?;
        Ok(ScheduleExpr { expr })
    }

    /// The value at 0-based `step` of `steps`, with `warmup` warm-up steps.
    pub fn at(&self, step: u64, steps: u64, warmup: u64) -> f64 {
        let p = if warmup == 0 { 1.0 } else { (step as f64 / warmup as f64).min(1.0) };
        let lookup = |n: &str| {
            Some(match n {
                "step" => step as f64,
                "steps" => steps as f64,
                "warmup" => warmup as f64,
                "p" => p,
                "progress" => step as f64 / steps.max(1) as f64,
                "pi" => std::f64::consts::PI,
                _ => return None,
            })
        };
        scalar::eval(&self.expr, &lookup).unwrap_or(f64::NAN)
    }

    /// The first step of `0..steps` where the value is not a finite number in `[0, 1]`.
    pub fn first_bad_step(&self, steps: u64, warmup: u64) -> Option<(u64, f64)> {
        (0..steps).map(|s| (s, self.at(s, steps, warmup))).find(|(_, v)| !(v.is_finite() && (0.0..=1.0).contains(v)))
    }
}

/// The loss terms a `loss.extra` expression may use, with one line each.
pub const LOSS_TERMS: &[(&str, &str)] = &[
    ("qerr", "mean over quantized matrices of mean((w - q)^2) / mean(w^2), q detached: pulls weights onto their grid"),
    ("zero_frac", "fraction of zero codes over quantized matrices; gradient (straight-through) of mean(relu(1 - 2|w| / scale)), which is positive exactly where round(w / scale) is 0"),
    ("l2", "mean over quantized matrices of mean(w^2)"),
];

const LOSS_VARS: &[&str] = &["qerr", "zero_frac", "l2", "step", "steps", "progress", "pi"];

/// A checked extra loss term (`loss.extra`): scalar terms from [`LOSS_TERMS`] combined with
/// numbers and the step.
#[derive(Debug, Clone, PartialEq)]
pub struct LossExpr {
    /// The expression.
    pub expr: Expr,
}

impl LossExpr {
    /// Parses and checks `text`.
    pub fn compile(text: &str) -> Result<LossExpr, ExprError> {
        let expr = parse_expr(text)?;
        let scope = scalar_scope(LOSS_VARS, "qerr, zero_frac, l2, step, steps, progress, pi");
        scope.check(&expr).map_err(ExprError::plain)?;
        Ok(LossExpr { expr })
    }

    /// Whether the expression reads `term`.
    pub fn uses(&self, term: &str) -> bool {
        self.expr.mentions(term)
    }
}

fn scalar_scope(vars: &[&str], known: &'static str) -> Scope {
    let names = vars
        .iter()
        .map(|v| (v.to_string(), Info { level: Level::Const, int: false, lo: f64::NEG_INFINITY, hi: f64::INFINITY }))
        .collect();
    Scope { names, rows: None, known }
}

/// The grammar of one kind of expression, for the schema's `doc` and the prompt.
pub fn grammar(names: &str) -> String {
    let funcs: Vec<String> = FUNCTIONS.iter().map(|(f, d)| format!("{f}: {d}")).collect();
    format!("{SYNTAX}. Names: {names}. Functions: {}.", funcs.join("; "))
}

#[cfg(test)]
mod tests;
