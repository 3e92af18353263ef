//! Type checking: where each value lives (a constant, one value per tensor, row, group or
//! weight) and what it can hold (an integer range), so that a program that cannot give codes
//! in {-1, 0, +1}, or a scale with one value per weight, is refused before any work.

use crate::parse::{BinOp, Expr};
use crate::ExprError;
use std::collections::BTreeMap;

/// How many values an expression holds, from fewest to most. Values of different levels
/// broadcast to the larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// One number.
    Const,
    /// One value per weight matrix.
    Tensor,
    /// One value per output row.
    Row,
    /// One value per quantization group (`quant.granularity`).
    Group,
    /// One value per weight.
    Elem,
}

impl Level {
    fn describe(self) -> &'static str {
        match self {
            Level::Const => "a constant",
            Level::Tensor => "one value per matrix",
            Level::Row => "one value per row",
            Level::Group => "one value per group",
            Level::Elem => "one value per weight",
        }
    }
}

/// What the checker knows about a value: its level, and bounds and integrality when known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Info {
    /// How many values.
    pub level: Level,
    /// Every value is an integer.
    pub int: bool,
    /// Lower bound (`-inf` when unknown).
    pub lo: f64,
    /// Upper bound (`inf` when unknown).
    pub hi: f64,
}

impl Info {
    fn real(level: Level) -> Info {
        Info { level, int: false, lo: f64::NEG_INFINITY, hi: f64::INFINITY }
    }

    fn ranged(level: Level, int: bool, lo: f64, hi: f64) -> Info {
        // NaN bounds (from inf - inf) mean "unknown".
        let lo = if lo.is_nan() { f64::NEG_INFINITY } else { lo };
        let hi = if hi.is_nan() { f64::INFINITY } else { hi };
        Info { level, int, lo, hi }
    }

    /// Every value is -1, 0 or +1.
    pub fn is_code(&self) -> bool {
        self.int && self.lo >= -1.0 && self.hi <= 1.0
    }
}

/// The functions of the language: name, arity, and one line for the grammar.
pub const FUNCTIONS: &[(&str, &str)] = &[
    ("abs(x)", "|x|"),
    ("sign(x)", "-1, 0 or +1"),
    ("round(x)", "nearest integer, ties to even (as torch.round)"),
    ("floor(x) / ceil(x)", "integer below / above"),
    ("round_ste(x)", "round(x) forward, gradient 1 backward: x + detach(round(x) - x)"),
    ("detach(x)", "the value of x, no gradient"),
    ("clamp(x, lo, hi)", "x limited to [lo, hi]"),
    ("min(a, b) / max(a, b)", "elementwise smaller / larger"),
    ("where(c, a, b)", "a where c is nonzero, else b"),
    ("sqrt exp log relu sigmoid tanh cos sin (x)", "elementwise"),
    ("mean sum amax amin (x[, axis])", "reductions over the quantization group; axis = group (default), row or tensor"),
];

fn arity(name: &str) -> Option<(usize, usize)> {
    Some(match name {
        "abs" | "sign" | "round" | "floor" | "ceil" | "round_ste" | "detach" | "sqrt" | "exp" | "log" | "relu"
        | "sigmoid" | "tanh" | "cos" | "sin" => (1, 1),
        "min" | "max" => (2, 2),
        "clamp" | "where" => (3, 3),
        "mean" | "sum" | "amax" | "amin" => (1, 2),
        _ => return None,
    })
}

/// Whether `name` is a reduction.
pub fn is_reduction(name: &str) -> bool {
    matches!(name, "mean" | "sum" | "amax" | "amin")
}

/// The axis of a reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// The quantization group (`quant.granularity`).
    Group,
    /// A whole output row.
    Row,
    /// The whole matrix.
    Tensor,
}

/// The axis named by a reduction's second argument.
pub fn axis_of(arg: Option<&Expr>) -> Result<Axis, String> {
    match arg {
        None => Ok(Axis::Group),
        Some(Expr::Name(n)) if n == "group" => Ok(Axis::Group),
        Some(Expr::Name(n)) if n == "row" => Ok(Axis::Row),
        Some(Expr::Name(n)) if n == "tensor" => Ok(Axis::Tensor),
        Some(_) => Err("the axis of a reduction is `group`, `row` or `tensor`".into()),
    }
}

/// The names a checker knows and whether reductions are allowed.
pub struct Scope {
    /// Known names and their info.
    pub names: BTreeMap<String, Info>,
    /// Reductions are allowed (weight programs); `Some(false)` when the grouping has no rows
    /// (`per_tensor`), so `row` reductions are refused.
    pub rows: Option<bool>,
    /// What the names are, for the unknown-name error.
    pub known: &'static str,
}

impl Scope {
    /// The info of `e`, or an error naming the problem.
    pub fn check(&self, e: &Expr) -> Result<Info, String> {
        match e {
            Expr::Num(v) => Ok(Info::ranged(Level::Const, v.fract() == 0.0, *v, *v)),
            Expr::Name(n) => self.names.get(n).copied().ok_or_else(|| {
                if matches!(n.as_str(), "row" | "tensor" | "group") {
                    format!("`{n}` is an axis: it only appears as the second argument of mean/sum/amax/amin")
                } else {
                    format!("unknown name `{n}` (known here: {})", self.known)
                }
            }),
            Expr::Neg(a) => {
                let a = self.check(a)?;
                Ok(Info::ranged(a.level, a.int, -a.hi, -a.lo))
            }
            Expr::Bin(op, a, b) => {
                let (a, b) = (self.check(a)?, self.check(b)?);
                let level = a.level.max(b.level);
                let int = a.int && b.int;
                Ok(match op {
                    BinOp::Add => Info::ranged(level, int, a.lo + b.lo, a.hi + b.hi),
                    BinOp::Sub => Info::ranged(level, int, a.lo - b.hi, a.hi - b.lo),
                    BinOp::Mul => {
                        let c = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi];
                        if c.iter().any(|v| v.is_nan()) {
                            Info::real(level)
                        } else {
                            let lo = c.iter().copied().fold(f64::INFINITY, f64::min);
                            let hi = c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                            Info::ranged(level, int, lo, hi)
                        }
                    }
                    BinOp::Div => Info::real(level),
                    _ => Info::ranged(level, true, 0.0, 1.0),
                })
            }
            Expr::Call(name, args) => self.call(name, args),
        }
    }

    fn call(&self, name: &str, args: &[Expr]) -> Result<Info, String> {
        let (min, max) = arity(name).ok_or_else(|| {
            format!("unknown function `{name}` (functions: abs sign round floor ceil round_ste detach clamp min max where sqrt exp log relu sigmoid tanh cos sin mean sum amax amin)")
        })?;
        if args.len() < min || args.len() > max {
            let want = if min == max { format!("{min}") } else { format!("{min} or {max}") };
            return Err(format!("{name}(...) takes {want} argument(s), not {}", args.len()));
        }
        if is_reduction(name) {
            let Some(rows) = self.rows else {
                return Err(format!("{name}(...) reduces weights, and there are none here"));
            };
            let axis = axis_of(args.get(1))?;
            let x = self.check(&args[0])?;
            let level = match axis {
                Axis::Tensor => Level::Tensor,
                Axis::Row if !rows => {
                    return Err(format!("{name}(x, row) needs rows, but quant.granularity = per_tensor groups the whole matrix; use `tensor`"))
                }
                Axis::Row => Level::Row,
                Axis::Group => Level::Group,
            };
            let level = level.min(x.level);
            return Ok(match name {
                "amax" | "amin" => Info::ranged(level, x.int, x.lo, x.hi),
                _ if name == "mean" => Info::ranged(level, false, x.lo, x.hi),
                _ => Info::real(level),
            });
        }
        let infos = args.iter().map(|a| self.check(a)).collect::<Result<Vec<_>, _>>()?;
        let x = infos[0];
        let level = infos.iter().map(|i| i.level).max().unwrap_or(Level::Const);
        let rounded = |f: fn(f64) -> f64| Info::ranged(x.level, true, f(x.lo), f(x.hi));
        Ok(match name {
            "abs" => {
                let m = x.lo.abs().max(x.hi.abs());
                let lo = if x.lo <= 0.0 && x.hi >= 0.0 { 0.0 } else { x.lo.abs().min(x.hi.abs()) };
                Info::ranged(x.level, x.int, lo, m)
            }
            "sign" => Info::ranged(x.level, true, -1.0, 1.0),
            "round" | "round_ste" => rounded(f64::round_ties_even),
            "floor" => rounded(f64::floor),
            "ceil" => rounded(f64::ceil),
            "detach" => x,
            "relu" => Info::ranged(x.level, x.int, x.lo.max(0.0), x.hi.max(0.0)),
            "sigmoid" => Info::ranged(x.level, false, 0.0, 1.0),
            "tanh" | "cos" | "sin" => Info::ranged(x.level, false, -1.0, 1.0),
            "exp" | "sqrt" => Info::ranged(x.level, false, 0.0, f64::INFINITY),
            "log" => Info::real(x.level),
            "min" => {
                let (a, b) = (infos[0], infos[1]);
                Info::ranged(level, a.int && b.int, a.lo.min(b.lo), a.hi.min(b.hi))
            }
            "max" => {
                let (a, b) = (infos[0], infos[1]);
                Info::ranged(level, a.int && b.int, a.lo.max(b.lo), a.hi.max(b.hi))
            }
            "clamp" => {
                let (lo, hi) = (infos[1], infos[2]);
                if lo.level != Level::Const || hi.level != Level::Const {
                    return Err("clamp(x, lo, hi) takes constant bounds; use min/max for others".into());
                }
                Info::ranged(x.level, x.int && lo.int && hi.int, x.lo.max(lo.lo).min(hi.hi), x.hi.min(hi.hi).max(lo.lo))
            }
            "where" => {
                let (a, b) = (infos[1], infos[2]);
                Info::ranged(level, a.int && b.int, a.lo.min(b.lo), a.hi.max(b.hi))
            }
            _ => Info::real(level),
        })
    }
}

/// An error about one level: `what` must be at most `max`.
pub fn check_level(what: &str, info: Info, max: Level, hint: &str) -> Result<(), ExprError> {
    if info.level > max {
        return Err(ExprError::plain(format!(
            "{what} must be {} at most, but it is {}{hint}",
            max.describe(),
            info.level.describe()
        )));
    }
    Ok(())
}
