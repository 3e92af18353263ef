//! Lexer and precedence-climbing parser: text to [`Expr`] and programs of assignments.

use crate::ExprError;

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl BinOp {
    /// Whether the operator compares (its result is 0 or 1).
    pub fn is_comparison(self) -> bool {
        !matches!(self, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div)
    }

    fn precedence(self) -> u8 {
        match self {
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne => 1,
            BinOp::Add | BinOp::Sub => 2,
            BinOp::Mul | BinOp::Div => 3,
        }
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A number literal.
    Num(f64),
    /// A name: an input (`w`, `step`), a bound name, or an axis (`row`) inside a reduction.
    Name(String),
    /// `-x`
    Neg(Box<Expr>),
    /// `a op b`
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `f(args)`
    Call(String, Vec<Expr>),
}

impl Expr {
    /// Whether `name` occurs anywhere in the expression.
    pub fn mentions(&self, name: &str) -> bool {
        match self {
            Expr::Num(_) => false,
            Expr::Name(n) => n == name,
            Expr::Neg(a) => a.mentions(name),
            Expr::Bin(_, a, b) => a.mentions(name) || b.mentions(name),
            Expr::Call(_, args) => args.iter().any(|a| a.mentions(name)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Op(BinOp),
    Minus,
    LParen,
    RParen,
    Comma,
    Assign,
    Sep,
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        let start = i;
        let two = |s: &str| text[i..].starts_with(s);
        let tok = match c {
            ' ' | '\t' | '\r' => {
                i += 1;
                continue;
            }
            '#' => {
                // A comment runs to the end of the line.
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            '\n' | ';' => Tok::Sep,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '+' => Tok::Op(BinOp::Add),
            '-' => Tok::Minus,
            '*' => Tok::Op(BinOp::Mul),
            '/' => Tok::Op(BinOp::Div),
            '<' if two("<=") => Tok::Op(BinOp::Le),
            '<' => Tok::Op(BinOp::Lt),
            '>' if two(">=") => Tok::Op(BinOp::Ge),
            '>' => Tok::Op(BinOp::Gt),
            '=' if two("==") => Tok::Op(BinOp::Eq),
            '=' => Tok::Assign,
            '!' if two("!=") => Tok::Op(BinOp::Ne),
            c if c.is_ascii_digit() || c == '.' => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                    j += 1;
                }
                if j < b.len() && (b[j] == b'e' || b[j] == b'E') {
                    let mut k = j + 1;
                    if k < b.len() && (b[k] == b'+' || b[k] == b'-') {
                        k += 1;
                    }
                    if k < b.len() && b[k].is_ascii_digit() {
                        j = k;
                        while j < b.len() && b[j].is_ascii_digit() {
                            j += 1;
                        }
                    }
                }
                let s = &text[i..j];
                let v: f64 = s.parse().map_err(|_| ExprError::at(i, format!("`{s}` is not a number")))?;
                out.push((start, Tok::Num(v)));
                i = j;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                out.push((start, Tok::Ident(text[i..j].to_string())));
                i = j;
                continue;
            }
            other => return Err(ExprError::at(i, format!("unexpected character `{other}`"))),
        };
        i += match tok {
            Tok::Op(BinOp::Le | BinOp::Ge | BinOp::Eq | BinOp::Ne) => 2,
            _ => 1,
        };
        out.push((start, tok));
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(o, _)| *o)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), ExprError> {
        let at = self.offset();
        match self.next() {
            Some(t) if t == want => Ok(()),
            _ => Err(ExprError::at(at, format!("expected {what}"))),
        }
    }

    fn expr(&mut self, min_prec: u8) -> Result<Expr, ExprError> {
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op(op)) => *op,
                Some(Tok::Minus) => BinOp::Sub,
                _ => break,
            };
            let prec = op.precedence();
            if prec < min_prec {
                break;
            }
            self.pos += 1;
            // Left-associative: `a - b - c` is `(a - b) - c`, as in Python and Rust.
            let rhs = self.expr(prec + 1)?;
            if op.is_comparison() && matches!(self.peek(), Some(Tok::Op(o)) if o.is_comparison()) {
                return Err(ExprError::at(self.offset(), "comparisons do not chain; use parentheses".into()));
            }
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.peek() == Some(&Tok::Minus) {
            self.pos += 1;
            let inner = self.unary()?;
            // A negative literal stays a literal, so `-1` in `clamp(x, -1, 1)` is a constant.
            return Ok(match inner {
                Expr::Num(v) => Expr::Num(-v),
                e => Expr::Neg(Box::new(e)),
            });
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, ExprError> {
        let at = self.offset();
        match self.next() {
            Some(Tok::Num(v)) => Ok(Expr::Num(v)),
            Some(Tok::LParen) => {
                let e = self.expr(0)?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(e)
            }
            Some(Tok::Ident(name)) => {
                if self.peek() != Some(&Tok::LParen) {
                    return Ok(Expr::Name(name));
                }
                self.pos += 1;
                let mut args = Vec::new();
                if self.peek() != Some(&Tok::RParen) {
                    loop {
                        args.push(self.expr(0)?);
                        if self.peek() == Some(&Tok::Comma) {
                            self.pos += 1;
                            continue;
                        }
                        break;
                    }
                }
                self.expect(Tok::RParen, &format!("`,` or `)` in the arguments of {name}(...)"))?;
                Ok(Expr::Call(name, args))
            }
            Some(_) => Err(ExprError::at(at, "expected a number, a name, `(` or `-`".into())),
            None => Err(ExprError::at(at, "the expression ends too early".into())),
        }
    }

    fn skip_seps(&mut self) {
        while self.peek() == Some(&Tok::Sep) {
            self.pos += 1;
        }
    }
}

/// Parses one expression (`;` and newlines are not allowed inside it).
pub fn parse_expr(text: &str) -> Result<Expr, ExprError> {
    let mut p = Parser { toks: lex(text)?, pos: 0, end: text.len() };
    p.skip_seps();
    if p.peek().is_none() {
        return Err(ExprError::at(0, "the expression is empty".into()));
    }
    let e = p.expr(0)?;
    p.skip_seps();
    if p.peek().is_some() {
        return Err(ExprError::at(p.offset(), "unexpected text after the expression".into()));
    }
    Ok(e)
}

/// Parses a program: `name = expr` statements separated by `;` or newlines.
pub fn parse_program(text: &str) -> Result<Vec<(String, Expr)>, ExprError> {
    let mut p = Parser { toks: lex(text)?, pos: 0, end: text.len() };
    let mut out = Vec::new();
    loop {
        p.skip_seps();
        let at = p.offset();
        let name = match p.next() {
            None => break,
            Some(Tok::Ident(n)) => n,
            Some(_) => return Err(ExprError::at(at, "expected `name = expression`".into())),
        };
        p.expect(Tok::Assign, &format!("`=` after `{name}` (a program is `name = expression` statements)"))?;
        let e = p.expr(0)?;
        match p.peek() {
            None | Some(Tok::Sep) => {}
            Some(_) => return Err(ExprError::at(p.offset(), format!("unexpected text after the value of `{name}`"))),
        }
        out.push((name, e));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_associativity_follow_arithmetic() {
        let e = parse_expr("1 - 2 - 3 * 4 / 5").unwrap();
        let s = crate::scalar::eval(&e, &|_| None).unwrap();
        assert_eq!(s, 1.0 - 2.0 - 3.0 * 4.0 / 5.0);
        let e = parse_expr("-(2 + 3) * 2e-1 < 0").unwrap();
        assert_eq!(crate::scalar::eval(&e, &|_| None).unwrap(), 1.0);
    }

    #[test]
    fn programs_split_on_semicolons_and_newlines_and_skip_comments() {
        let p = parse_program("a = 1 # one\n\nb = a + 1; c = b").unwrap();
        let names: Vec<_> = p.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn syntax_errors_point_at_the_column() {
        let e = parse_expr("clamp(w, -1 1)").unwrap_err().to_string();
        assert!(e.contains("column 13") && e.contains("`,` or `)`"), "{e}");
        assert!(parse_expr("a < b < c").unwrap_err().to_string().contains("do not chain"));
        assert!(parse_program("x + 1").unwrap_err().to_string().contains("`=` after `x`"));
        assert!(parse_expr("w @ 2").unwrap_err().to_string().contains("unexpected character `@`"));
    }
}
