//! Evaluation on plain numbers (the lambda schedule): the same f64 operations in the same
//! order as the builtin schedules, so a builtin written as an expression gives the same bits.

use crate::parse::{BinOp, Expr};

/// `1 / (1 + e^-x)`, written as the builtin sigmoid schedule computes it.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Evaluates `e` with `lookup` giving each name; `None` for a name that is not there (the
/// checker has already refused those).
pub fn eval(e: &Expr, lookup: &dyn Fn(&str) -> Option<f64>) -> Option<f64> {
    Some(match e {
        Expr::Num(v) => *v,
        Expr::Name(n) => lookup(n)?,
        Expr::Neg(a) => -eval(a, lookup)?,
        Expr::Bin(op, a, b) => {
            let (a, b) = (eval(a, lookup)?, eval(b, lookup)?);
            let t = |c: bool| if c { 1.0 } else { 0.0 };
            match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => a / b,
                BinOp::Lt => t(a < b),
                BinOp::Le => t(a <= b),
                BinOp::Gt => t(a > b),
                BinOp::Ge => t(a >= b),
                BinOp::Eq => t(a == b),
                BinOp::Ne => t(a != b),
            }
        }
        Expr::Call(name, args) => {
            let v = args.iter().map(|a| eval(a, lookup)).collect::<Option<Vec<f64>>>()?;
            let x = v[0];
            match name.as_str() {
                "abs" => x.abs(),
                "sign" => {
                    if x > 0.0 {
                        1.0
                    } else if x < 0.0 {
                        -1.0
                    } else {
                        0.0
                    }
                }
                "round" | "round_ste" => x.round_ties_even(),
                "floor" => x.floor(),
                "ceil" => x.ceil(),
                "detach" => x,
                "sqrt" => x.sqrt(),
                "exp" => x.exp(),
                "log" => x.ln(),
                "relu" => x.max(0.0),
                "sigmoid" => sigmoid(x),
                "tanh" => x.tanh(),
                "cos" => x.cos(),
                "sin" => x.sin(),
                "min" => x.min(v[1]),
                "max" => x.max(v[1]),
                "clamp" => x.max(v[1]).min(v[2]),
                "where" => {
                    if x != 0.0 {
                        v[1]
                    } else {
                        v[2]
                    }
                }
                _ => return None,
            }
        }
    })
}
