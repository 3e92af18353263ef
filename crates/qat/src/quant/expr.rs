//! Evaluation of checked expression programs (`autoqat-expr`) with tch operations, autograd
//! on. Each operation is the one a PyTorch user would write (`c / x` is `reciprocal(x) * c`,
//! as in `Tensor.__rtruediv__`; `max(x, 1e-5)` is `clamp_min`), so that a builtin quantizer
//! written as a program gives the builtin's bits.
//!
//! Values live in the quantizer's grouped view `[a, b, c]` of the weight: a group reduction is
//! over the last axis, a row reduction over the last two, a tensor reduction over all three.

use autoqat_expr::{axis_of, is_reduction, Axis, BinOp, Expr, QuantProgram, ScaleForm};
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// A value: a plain number or a tensor that broadcasts in the grouped view.
#[derive(Debug)]
pub enum Val {
    /// A number.
    Num(f64),
    /// A tensor.
    T(Tensor),
}

impl Val {
    fn shallow(&self) -> Val {
        match self {
            Val::Num(v) => Val::Num(*v),
            Val::T(t) => Val::T(t.shallow_clone()),
        }
    }

    /// The value as a tensor of `like`'s kind and device, broadcast to `shape`.
    pub fn to_tensor(&self, like: &Tensor, shape: &[i64]) -> Tensor {
        match self {
            Val::Num(v) => Tensor::full(shape, *v, (like.kind(), like.device())),
            Val::T(t) => t.expand(shape, false).contiguous(),
        }
    }
}

/// The names a program reads, and the grouped view's shape.
pub struct Env {
    names: HashMap<String, Val>,
    view: Vec<i64>,
    kind: Kind,
    device: tch::Device,
}

impl Env {
    /// An environment over a weight in its grouped view `w`.
    pub fn new(w: &Tensor) -> Env {
        let mut names = HashMap::new();
        names.insert("w".to_string(), Val::T(w.shallow_clone()));
        Env { names, view: w.size(), kind: w.kind(), device: w.device() }
    }

    /// An environment of scalar terms (loss expressions).
    pub fn scalars(terms: Vec<(&str, Val)>) -> Env {
        Env {
            names: terms.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
            view: vec![],
            kind: Kind::Float,
            device: tch::Device::Cpu,
        }
    }

    /// Binds `name`.
    pub fn bind(&mut self, name: &str, v: Val) {
        self.names.insert(name.to_string(), v);
    }

    /// The value of a bound name.
    pub fn get(&self, name: &str) -> Option<&Val> {
        self.names.get(name)
    }

    fn cast(&self, b: Tensor) -> Tensor {
        b.to_kind(self.kind)
    }

    /// Evaluates `e`. Names and functions were checked by `autoqat-expr`; an unknown one
    /// evaluates to NaN rather than panicking.
    pub fn eval(&self, e: &Expr) -> Val {
        match e {
            Expr::Num(v) => Val::Num(*v),
            Expr::Name(n) => self.names.get(n).map_or(Val::Num(f64::NAN), Val::shallow),
            Expr::Neg(a) => match self.eval(a) {
                Val::Num(v) => Val::Num(-v),
                Val::T(t) => Val::T(-t),
            },
            Expr::Bin(op, a, b) => self.binary(*op, self.eval(a), self.eval(b)),
            Expr::Call(name, args) if is_reduction(name) => {
                let axis = axis_of(args.get(1)).unwrap_or(Axis::Group);
                self.reduce(name, axis, self.eval(&args[0]))
            }
            Expr::Call(name, args) => {
                let v: Vec<Val> = args.iter().map(|a| self.eval(a)).collect();
                self.call(name, v)
            }
        }
    }

    fn binary(&self, op: BinOp, a: Val, b: Val) -> Val {
        use Val::{Num, T};
        if let (Num(x), Num(y)) = (&a, &b) {
            let e = Expr::Bin(op, Box::new(Expr::Num(*x)), Box::new(Expr::Num(*y)));
            return Num(autoqat_expr::scalar::eval(&e, &|_| None).unwrap_or(f64::NAN));
        }
        match op {
            BinOp::Add => match (a, b) {
                (T(x), T(y)) => T(x + y),
                (T(x), Num(y)) | (Num(y), T(x)) => T(x + y),
                _ => Num(f64::NAN),
            },
            BinOp::Mul => match (a, b) {
                (T(x), T(y)) => T(x * y),
                (T(x), Num(y)) | (Num(y), T(x)) => T(x * y),
                _ => Num(f64::NAN),
            },
            BinOp::Sub => match (a, b) {
                (T(x), T(y)) => T(x - y),
                (T(x), Num(y)) => T(x - y),
                // c - x == -x + c exactly (negation is exact).
                (Num(c), T(x)) => T(-x + c),
                _ => Num(f64::NAN),
            },
            BinOp::Div => match (a, b) {
                (T(x), T(y)) => T(x / y),
                (T(x), Num(y)) => T(x / y),
                (Num(1.0), T(x)) => T(x.reciprocal()),
                (Num(c), T(x)) => T(x.reciprocal() * c),
                _ => Num(f64::NAN),
            },
            cmp => {
                let (x, y, flipped) = match (a, b) {
                    (T(x), y) => (x, y, false),
                    (Num(c), T(y)) => (y, Num(c), true),
                    _ => return Num(f64::NAN),
                };
                let op = if flipped { flip(cmp) } else { cmp };
                let r = match y {
                    Num(c) => match op {
                        BinOp::Lt => x.lt(c),
                        BinOp::Le => x.le(c),
                        BinOp::Gt => x.gt(c),
                        BinOp::Ge => x.ge(c),
                        BinOp::Eq => x.eq(c),
                        _ => x.ne(c),
                    },
                    T(y) => match op {
                        BinOp::Lt => x.lt_tensor(&y),
                        BinOp::Le => x.le_tensor(&y),
                        BinOp::Gt => x.gt_tensor(&y),
                        BinOp::Ge => x.ge_tensor(&y),
                        BinOp::Eq => x.eq_tensor(&y),
                        _ => x.ne_tensor(&y),
                    },
                };
                T(self.cast(r))
            }
        }
    }

    fn reduce(&self, name: &str, axis: Axis, x: Val) -> Val {
        let dims: &[i64] = match axis {
            Axis::Group => &[-1],
            Axis::Row => &[1, 2],
            Axis::Tensor => &[0, 1, 2],
        };
        let x = match x {
            Val::T(t) => t.expand(&self.view, false),
            Val::Num(v) if name != "sum" => return Val::Num(v),
            Val::Num(v) => Tensor::full(&self.view, v, (self.kind, self.device)),
        };
        let kind = x.kind();
        Val::T(match name {
            "mean" => x.mean_dim(dims, true, kind),
            "sum" => x.sum_dim_intlist(dims, true, kind),
            "amax" => x.amax(dims, true),
            _ => x.amin(dims, true),
        })
    }

    fn call(&self, name: &str, mut v: Vec<Val>) -> Val {
        use Val::{Num, T};
        if v.iter().all(|x| matches!(x, Num(_))) {
            let args = v.iter().map(|x| Expr::Num(if let Num(n) = x { *n } else { f64::NAN })).collect();
            return Num(autoqat_expr::scalar::eval(&Expr::Call(name.into(), args), &|_| None).unwrap_or(f64::NAN));
        }
        let rest = v.split_off(1);
        let x = v.pop().unwrap_or(Num(f64::NAN));
        match (name, x, rest.as_slice()) {
            ("min" | "max", Num(c), [T(y)]) => T(if name == "min" { y.clamp_max(c) } else { y.clamp_min(c) }),
            ("min", T(x), [Num(c)]) => T(x.clamp_max(*c)),
            ("max", T(x), [Num(c)]) => T(x.clamp_min(*c)),
            ("min", T(x), [T(y)]) => T(x.minimum(y)),
            ("max", T(x), [T(y)]) => T(x.maximum(y)),
            ("where", c, [a, b]) => {
                let cond = match c {
                    T(t) => t.ne(0.0),
                    Num(n) => return if n != 0.0 { a.shallow() } else { b.shallow() },
                };
                let shape = cond.size();
                let like = match (a, b) {
                    (T(t), _) | (_, T(t)) => t.shallow_clone(),
                    _ => cond.to_kind(self.kind),
                };
                let out_shape = broadcast(&shape, &like.size());
                T(a.to_tensor(&like, &out_shape).where_self(&cond, &b.to_tensor(&like, &out_shape)))
            }
            ("clamp", T(x), [Num(lo), Num(hi)]) => T(x.clamp(*lo, *hi)),
            (f, T(x), []) => T(match f {
                "abs" => x.abs(),
                "sign" => x.sign(),
                "round" => x.round(),
                "floor" => x.floor(),
                "ceil" => x.ceil(),
                // Forward round(x), gradient 1: written as PyTorch users write it. Without a
                // gradient to carry it is plain round(x) (which keeps the sign of a zero).
                "round_ste" if x.requires_grad() => &x + (x.round() - &x).detach(),
                "round_ste" => x.round(),
                "detach" => x.detach(),
                "sqrt" => x.sqrt(),
                "exp" => x.exp(),
                "log" => x.log(),
                "relu" => x.relu(),
                "sigmoid" => x.sigmoid(),
                "tanh" => x.tanh(),
                "cos" => x.cos(),
                "sin" => x.sin(),
                _ => x * f64::NAN,
            }),
            _ => Num(f64::NAN),
        }
    }
}

fn flip(op: BinOp) -> BinOp {
    match op {
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        o => o,
    }
}

fn broadcast(a: &[i64], b: &[i64]) -> Vec<i64> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
            let y = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
            x.max(y)
        })
        .collect()
}

/// The outputs of a quantizer program on one grouped weight.
#[derive(Debug)]
pub struct ProgramOut {
    /// Codes in the grouped view `[a, b, c]`.
    pub code: Tensor,
    /// `scale` or `inv_scale`, `[a, b, 1]`.
    pub scale: Tensor,
    /// Which of the two `scale` is.
    pub form: ScaleForm,
}

/// Runs `program` on the grouped weight `g` (alpha: the learned scale, when the program
/// learns one); `alpha_init` is skipped.
pub fn run(program: &QuantProgram, g: &Tensor, alpha: Option<&Tensor>) -> ProgramOut {
    let mut env = Env::new(g);
    if let Some(a) = alpha {
        env.bind("alpha", Val::T(a.shallow_clone()));
    }
    for s in program.stmts.iter().filter(|s| s.name != "alpha_init") {
        let v = env.eval(&s.expr);
        env.bind(&s.name, v);
    }
    let view = g.size();
    let scale_shape = [view[0], view[1], 1];
    let out = |name: &str, shape: &[i64]| env.get(name).map_or_else(|| g.zeros_like(), |v| v.to_tensor(g, shape));
    let scale_name = match program.form {
        ScaleForm::Scale => "scale",
        ScaleForm::InvScale => "inv_scale",
    };
    ProgramOut { code: out("code", &view), scale: out(scale_name, &scale_shape), form: program.form }
}

/// The learned scale's starting value (`alpha_init`), `[a, b, 1]`, from the grouped weight.
pub fn alpha_init(program: &QuantProgram, g: &Tensor) -> Tensor {
    let mut env = Env::new(g);
    for s in program.stmts.iter().filter(|s| !s.uses_alpha) {
        let v = env.eval(&s.expr);
        let done = s.name == "alpha_init";
        env.bind(&s.name, v);
        if done {
            break;
        }
    }
    let view = g.size();
    env.get("alpha_init").map_or_else(|| g.ones_like(), |v| v.to_tensor(g, &[view[0], view[1], 1]))
}
