//! Python source as the loop reads it (`[validator] kind = "python"`): a small tokenizer that
//! keeps what the interpreter runs and drops what it ignores (comments, blank lines, line
//! continuations, the width of indentation, docstrings, the quote style of a string, the
//! notation of a number), so that a change with no effect runs no trial; the top-level
//! UPPER_CASE constants of a file (`LR = 1e-3`), which the builtin search edits; and the line
//! edit that sets one.

use std::collections::BTreeMap;

use serde_json::Value;

/// One token that matters to the interpreter, in a canonical form.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// An identifier or keyword.
    Name(String),
    /// An integer literal, as its decimal value (`0x10`, `1_6` and `16` read the same).
    Int(String),
    /// A float literal, as the bits of its value (`1e-3` and `0.001` read the same).
    Float(u64),
    /// An imaginary literal, as written (lowercased, without underscores).
    Imag(String),
    /// A string literal: its prefix (lowercase, sorted, without `u`), a colon, its body as
    /// written between the quotes (`'a'` and `"a"` read the same).
    Str(String),
    /// An operator or delimiter.
    Op(String),
}

/// One logical line: its indentation level (0 = top level), tokens, and first physical line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Depth in the stack of indentation widths.
    pub level: usize,
    /// Its tokens.
    pub toks: Vec<Tok>,
    /// 1-based physical line where it starts.
    pub lineno: usize,
}

/// The logical lines of `src` that the interpreter runs (comments, blank lines and docstring
/// statements left out); an error names the line of an unterminated string, an unbalanced
/// bracket or an inconsistent dedent.
pub fn lines(src: &str) -> Result<Vec<Line>, String> {
    let c: Vec<char> = src.chars().collect();
    let n = c.len();
    let (mut i, mut lineno) = (0usize, 1usize);
    let mut out: Vec<Line> = Vec::new();
    let mut indents = vec![0usize];
    let mut cur: Option<Line> = None;
    let mut brackets: Vec<(char, usize)> = Vec::new();
    let finish = |cur: &mut Option<Line>, out: &mut Vec<Line>| {
        if let Some(l) = cur.take() {
            // A statement made of plain string literals only (a docstring) runs nothing; an
            // f-string may call something.
            let inert = |t: &Tok| matches!(t, Tok::Str(s) if !s.split(':').next().unwrap_or("").contains(['f', 't']));
            if !l.toks.iter().all(inert) {
                out.push(l);
            }
        }
    };
    while i < n {
        if cur.is_none() && brackets.is_empty() {
            // The start of a logical line: its indentation, unless it is blank or a comment.
            let (mut col, mut j) = (0usize, i);
            while j < n && matches!(c[j], ' ' | '\t' | '\x0c') {
                col = if c[j] == '\t' { col + 8 - col % 8 } else { col + 1 };
                j += 1;
            }
            if j >= n {
                break;
            }
            if matches!(c[j], '\n' | '\r' | '#') || (c[j] == '\\' && j + 1 < n && c[j + 1] == '\n') {
                while j < n && c[j] != '\n' {
                    j += 1;
                }
                i = j + 1;
                lineno += 1;
                continue;
            }
            let top = *indents.last().unwrap_or(&0);
            if col > top {
                indents.push(col);
            } else {
                while col < *indents.last().unwrap_or(&0) {
                    indents.pop();
                }
                if col != *indents.last().unwrap_or(&0) {
                    return Err(format!("line {lineno}: the indentation matches no outer level"));
                }
            }
            cur = Some(Line { level: indents.len() - 1, toks: Vec::new(), lineno });
            i = j;
            continue;
        }
        let ch = c[i];
        let push = |cur: &mut Option<Line>, t: Tok| {
            if let Some(l) = cur.as_mut() {
                l.toks.push(t);
            }
        };
        match ch {
            ' ' | '\t' | '\x0c' | '\r' => i += 1,
            '#' => {
                while i < n && c[i] != '\n' {
                    i += 1;
                }
            }
            '\\' if i + 1 < n && (c[i + 1] == '\n' || (c[i + 1] == '\r' && i + 2 < n && c[i + 2] == '\n')) => {
                i += if c[i + 1] == '\n' { 2 } else { 3 };
                lineno += 1;
            }
            '\n' => {
                i += 1;
                lineno += 1;
                if brackets.is_empty() {
                    finish(&mut cur, &mut out);
                }
            }
            '(' | '[' | '{' => {
                brackets.push((ch, lineno));
                push(&mut cur, Tok::Op(ch.to_string()));
                i += 1;
            }
            ')' | ']' | '}' => {
                let open = match ch {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match brackets.pop() {
                    Some((o, _)) if o == open => {}
                    _ => return Err(format!("line {lineno}: `{ch}` closes no `{open}`")),
                }
                push(&mut cur, Tok::Op(ch.to_string()));
                i += 1;
            }
            '\'' | '"' => {
                let (t, next, lines) = string(&c, i, i, lineno)?;
                push(&mut cur, t);
                i = next;
                lineno += lines;
            }
            d if d.is_ascii_digit() || (d == '.' && i + 1 < n && c[i + 1].is_ascii_digit()) => {
                let (t, next) = number(&c, i);
                push(&mut cur, t);
                i = next;
            }
            a if a == '_' || a.is_alphabetic() => {
                let mut j = i;
                while j < n && (c[j] == '_' || c[j].is_alphanumeric()) {
                    j += 1;
                }
                let word: String = c[i..j].iter().collect();
                let prefix = word.to_ascii_lowercase();
                if j < n
                    && matches!(c[j], '\'' | '"')
                    && ["r", "u", "b", "f", "br", "rb", "fr", "rf", "t", "tr", "rt"].contains(&prefix.as_str())
                {
                    let (t, next, lines) = string(&c, i, j, lineno)?;
                    push(&mut cur, t);
                    i = next;
                    lineno += lines;
                } else {
                    push(&mut cur, Tok::Name(word));
                    i = j;
                }
            }
            _ => {
                const OPS: [&str; 23] = [
                    "**=", "//=", ">>=", "<<=", "...", "->", ":=", "==", "!=", "<=", ">=", "**", "//", "<<", ">>",
                    "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=",
                ];
                let rest: String = c[i..n.min(i + 3)].iter().collect();
                let op = OPS.iter().find(|o| rest.starts_with(**o)).map(|o| o.to_string()).unwrap_or(ch.to_string());
                i += op.chars().count();
                push(&mut cur, Tok::Op(op));
            }
        }
    }
    if let Some((open, at)) = brackets.last() {
        return Err(format!("line {at}: `{open}` is never closed"));
    }
    finish(&mut cur, &mut out);
    Ok(out)
}

/// The string literal whose prefix starts at `start` and whose quote is at `q`: the token, the
/// index after it, and the newlines it spans.
fn string(c: &[char], start: usize, q: usize, lineno: usize) -> Result<(Tok, usize, usize), String> {
    let quote = c[q];
    let triple = q + 2 < c.len() && c[q + 1] == quote && c[q + 2] == quote;
    let open = if triple { 3 } else { 1 };
    let (mut j, mut lines) = (q + open, 0usize);
    loop {
        if j >= c.len() {
            return Err(format!("line {lineno}: the string is never closed"));
        }
        match c[j] {
            '\\' => {
                if c.get(j + 1) == Some(&'\n') {
                    lines += 1;
                }
                j += 2;
                continue;
            }
            '\n' if !triple => return Err(format!("line {lineno}: the string is never closed")),
            '\n' => lines += 1,
            ch if ch == quote && (!triple || (c.get(j + 1) == Some(&quote) && c.get(j + 2) == Some(&quote))) => break,
            _ => {}
        }
        j += 1;
    }
    let mut prefix: Vec<char> = c[start..q].iter().map(|p| p.to_ascii_lowercase()).filter(|p| *p != 'u').collect();
    prefix.sort_unstable();
    let body: String = c[q + open..j].iter().collect();
    Ok((Tok::Str(format!("{}:{body}", prefix.iter().collect::<String>())), j + open, lines))
}

/// The number literal at `i`, canonical, and the index after it.
fn number(c: &[char], i: usize) -> (Tok, usize) {
    let n = c.len();
    let mut j = i;
    let radix = if c[i] == '0' && i + 1 < n { matches!(c[i + 1], 'x' | 'X' | 'o' | 'O' | 'b' | 'B') } else { false };
    if radix {
        j += 2;
        while j < n && (c[j].is_ascii_alphanumeric() || c[j] == '_') {
            j += 1;
        }
        let text: String = c[i + 2..j].iter().filter(|d| **d != '_').collect();
        let base = match c[i + 1].to_ascii_lowercase() {
            'x' => 16,
            'o' => 8,
            _ => 2,
        };
        let value = u128::from_str_radix(&text, base).map(|v| v.to_string()).unwrap_or(text);
        return (Tok::Int(value), j);
    }
    let digits = |j: &mut usize| {
        while *j < n && (c[*j].is_ascii_digit() || c[*j] == '_') {
            *j += 1;
        }
    };
    digits(&mut j);
    let mut float = false;
    if j < n && c[j] == '.' {
        float = true;
        j += 1;
        digits(&mut j);
    }
    if j < n && matches!(c[j], 'e' | 'E') {
        let sign = usize::from(j + 1 < n && matches!(c[j + 1], '+' | '-'));
        if j + 1 + sign < n && c[j + 1 + sign].is_ascii_digit() {
            float = true;
            j += 1 + sign;
            digits(&mut j);
        }
    }
    let text: String = c[i..j].iter().filter(|d| **d != '_').collect();
    if j < n && matches!(c[j], 'j' | 'J') {
        return (Tok::Imag(text.to_ascii_lowercase()), j + 1);
    }
    if float {
        return (Tok::Float(text.parse::<f64>().map(f64::to_bits).unwrap_or(0)), j);
    }
    let trimmed = text.trim_start_matches('0');
    (Tok::Int(if trimmed.is_empty() { "0".into() } else { trimmed.into() }), j)
}

/// A fingerprint of what `src` runs: equal for two sources that differ only in comments,
/// blank lines, continuations, indentation width, docstrings, quote style or number notation.
pub fn code_key(src: &str) -> Option<String> {
    let text: String = lines(src)
        .ok()?
        .iter()
        .map(|l| {
            let toks: Vec<String> = l.toks.iter().map(|t| format!("{t:?}")).collect();
            format!("{}|{}\n", l.level, toks.join(" "))
        })
        .collect();
    Some(format!("code:{}", autoqat_workspace::hash::fnv1a_hex(text.as_bytes())))
}

/// Whether two sources run the same program (see [`code_key`]); `false` when either does not
/// tokenize.
pub fn same_code(a: &str, b: &str) -> bool {
    match (lines(a), lines(b)) {
        (Ok(x), Ok(y)) => x.iter().map(|l| (l.level, &l.toks)).eq(y.iter().map(|l| (l.level, &l.toks))),
        _ => false,
    }
}

/// Whether `name` reads as a constant: `UPPER_CASE`, digits and underscores.
pub fn is_constant(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && name.chars().any(|c| c.is_ascii_uppercase())
}

/// The literal value of a constant's right-hand side, as JSON.
fn literal(toks: &[Tok]) -> Option<Value> {
    let (neg, t) = match toks {
        [Tok::Op(m), t] if m == "-" => (true, t),
        [t] => (false, t),
        _ => return None,
    };
    let sign = if neg { -1.0 } else { 1.0 };
    match t {
        Tok::Int(s) => s.parse::<i64>().ok().map(|v| Value::from(if neg { -v } else { v })),
        Tok::Float(bits) => serde_json::Number::from_f64(sign * f64::from_bits(*bits)).map(Value::Number),
        Tok::Str(s) if !neg && s.starts_with(':') => Some(Value::String(s[1..].to_string())),
        Tok::Name(n) if !neg => match n.as_str() {
            "True" => Some(Value::Bool(true)),
            "False" => Some(Value::Bool(false)),
            "None" => Some(Value::Null),
            _ => None,
        },
        _ => None,
    }
}

/// The top-level constants of `src`: every `NAME = literal` at indentation level 0 whose name
/// is UPPER_CASE and whose value is a number, a plain string, a bool or None (the last
/// assignment of a name wins, as when the file runs). `None` when `src` does not tokenize.
pub fn constants(src: &str) -> Option<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for l in lines(src).ok()?.iter().filter(|l| l.level == 0) {
        let [Tok::Name(name), Tok::Op(eq), rhs @ ..] = l.toks.as_slice() else { continue };
        if eq != "=" || !is_constant(name) {
            continue;
        }
        match literal(rhs) {
            Some(v) => out.insert(name.clone(), v),
            // Reassigned to something else: no longer a constant the search can read.
            None => out.remove(name),
        };
    }
    Some(out)
}

/// `v` written as a Python literal.
fn python_literal(v: &Value) -> String {
    match v {
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::String(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        other => other.to_string(),
    }
}

/// The exact `(search, replace)` that sets the top-level constant `key` to `value` in `src`:
/// its line `KEY = old  # comment` becomes `KEY = new  # comment`. `None` when the file has no
/// such single-line constant, or more than one.
pub fn line_edit(src: &str, key: &str, value: &Value) -> Option<(String, String)> {
    let defs: Vec<&str> = src
        .lines()
        .filter(|l| {
            l.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('=') && !r.trim_start().starts_with("=="))
        })
        .collect();
    let [line] = defs.as_slice() else { return None };
    let rest = &line[key.len()..];
    let eq = rest.find('=')?;
    let after = &rest[eq + 1..];
    let value_start = key.len() + eq + 1 + (after.len() - after.trim_start().len());
    // The old literal ends where its single token ends: a string's closing quote, else space or `#`.
    let tail = &line[value_start..];
    let end = match tail.chars().next()? {
        q @ ('"' | '\'') => tail[1..].find(q).map(|k| k + 2)?,
        _ => tail.find(|ch: char| ch.is_whitespace() || ch == '#').unwrap_or(tail.len()),
    };
    constants(line)?.get(key)?;
    let new_line = format!("{}{}{}", &line[..value_start], python_literal(value), &tail[end..]);
    // The line, unique in the file: at the start of the file, or after a newline.
    if src.matches(*line).count() == 1 {
        return Some((line.to_string(), new_line));
    }
    let wide = format!("\n{line}");
    (src.matches(&wide).count() == 1).then(|| (wide, format!("\n{new_line}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "\"\"\"Doc.\"\"\"\nimport math\n\nLR = 1e-3  # peak\nSTEPS = 100\nNAME = 'x'\nUSE = True\n\n\ndef f(x):\n    # a comment\n    return (x +\n            LR) * 2\n";

    #[test]
    fn layout_comments_docstrings_and_notation_are_not_changes() {
        let same = [
            SRC.replace("# peak", "# the peak learning rate"),
            SRC.replace("LR = 1e-3", "LR = 0.001"),
            SRC.replace("    return (x +\n            LR) * 2", "  return (x + LR) * 2"),
            SRC.replace("    # a comment\n", "\n\n"),
            SRC.replace("\"\"\"Doc.\"\"\"", "'''Another doc.'''"),
            SRC.replace("'x'", "\"x\""),
            SRC.replace("STEPS = 100", "STEPS = 1_00"),
            SRC.replace("* 2", "* \\\n 2"),
        ];
        for s in &same {
            assert!(same_code(SRC, s), "{s}");
            assert_eq!(code_key(SRC), code_key(s));
        }
        let different = [
            SRC.replace("LR = 1e-3", "LR = 2e-3"),
            SRC.replace("* 2", "* 3"),
            SRC.replace("'x'", "'y'"),
            SRC.replace("STEPS = 100", "STEPS = 100.0"),
            SRC.replace("    return (x +\n            LR) * 2", "    return (x +\n            LR) * 2\n    x = 1"),
            SRC.replace("    # a comment\n", "    '''a string, not a comment'''\n    print('#')\n"),
            SRC.replace("    # a comment\n", "    f'{print(x)}'\n"),
        ];
        for d in &different {
            assert!(!same_code(SRC, d), "{d}");
        }
        // Dedenting a line moves it out of the function: a change.
        assert!(!same_code("def f():\n    a = 1\n    b = 2\n", "def f():\n    a = 1\nb = 2\n"));
    }

    #[test]
    fn python_validator_fields_name_constants() {
        let toml = |key: &str| {
            format!("[run]\nmutable_paths = [\"train.py\"]\n[validator]\nkind = \"python\"\n[[validator.fields]]\nkey = \"{key}\"\nchoices = [1, 2]\n")
        };
        let path = std::path::Path::new("autoqat.toml");
        assert!(crate::settings::Settings::parse(&toml("LR_2"), path).is_ok());
        let e = crate::settings::Settings::parse(&toml("optim.lr"), path).unwrap_err().to_string();
        assert!(e.contains("`optim.lr` is not a constant name") && e.contains("train.py"), "{e}");
    }

    #[test]
    fn broken_source_is_an_error_naming_the_line() {
        assert!(lines("x = (1,\n2\n").unwrap_err().contains("line 1"));
        assert!(lines("x = 'abc\n").unwrap_err().contains("never closed"));
        assert!(lines("x = 1)\n").unwrap_err().contains("closes no"));
        assert!(lines("if x:\n    a\n  b\n").unwrap_err().contains("line 3"));
    }

    #[test]
    fn constants_are_read_and_set_in_place() {
        let c = constants(SRC).unwrap();
        assert_eq!(c["LR"], serde_json::json!(0.001));
        assert_eq!(c["STEPS"], serde_json::json!(100));
        assert_eq!(c["NAME"], serde_json::json!("x"));
        assert_eq!(c["USE"], serde_json::json!(true));
        assert!(!c.contains_key("x"));
        let (s, r) = line_edit(SRC, "LR", &serde_json::json!(0.003)).unwrap();
        assert_eq!((s.as_str(), r.as_str()), ("LR = 1e-3  # peak", "LR = 0.003  # peak"));
        let (s, r) = line_edit(SRC, "NAME", &serde_json::json!("y")).unwrap();
        assert_eq!((s.as_str(), r.as_str()), ("NAME = 'x'", "NAME = \"y\""));
        let (_, r) = line_edit(SRC, "USE", &serde_json::json!(false)).unwrap();
        assert_eq!(r, "USE = False");
        assert!(line_edit(SRC, "MISSING", &serde_json::json!(1)).is_none());
        // `LR = 0.1` inside `MIN_LR = 0.1`: the edit is widened to the line start.
        let two = "MIN_LR = 0.1\nLR = 0.1\n";
        let (s, r) = line_edit(two, "LR", &serde_json::json!(0.2)).unwrap();
        assert_eq!((s.as_str(), r.as_str()), ("\nLR = 0.1", "\nLR = 0.2"));
        assert_eq!(constants(&two.replacen(&s, &r, 1)).unwrap()["MIN_LR"], serde_json::json!(0.1));
    }
}
