//! Parses a proposer's answer: a JSON object `{"description","rationale","edits":[...]}`,
//! also when it is wrapped in prose or a code fence.

use serde::{Deserialize, Serialize};

/// One search/replace edit of a mutable file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    /// Workspace-relative path of a mutable file.
    pub path: String,
    /// Exact text to find (must occur exactly once).
    pub search: String,
    /// Text to put in its place.
    pub replace: String,
}

/// A parsed proposal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Proposal {
    /// One line: what changes.
    pub description: String,
    /// Why it should help.
    #[serde(default)]
    pub rationale: String,
    /// The edits, applied in order.
    pub edits: Vec<Edit>,
}

/// Finds and parses the proposal JSON in `text`; the error says why none was found.
pub fn parse(text: &str) -> Result<Proposal, String> {
    let mut last_err = None;
    for candidate in candidates(text) {
        // llama.cpp's JSON grammar lets raw newlines and tabs into strings, which JSON forbids:
        // a small model's schema-shaped answer would otherwise fail on a line break.
        let escaped = escape_raw_controls(candidate);
        let candidate = escaped.as_str();
        match serde_json::from_str::<Proposal>(candidate) {
            Ok(p) => return check(p),
            Err(e) => {
                // A JSON object of the wrong shape is a more useful error than a syntax error;
                // prose that merely contains no JSON gives neither.
                let shaped = serde_json::from_str::<serde_json::Value>(candidate).is_ok();
                if shaped || (last_err.is_none() && candidate.starts_with('{')) {
                    last_err = Some(e.to_string());
                }
            }
        }
    }
    Err(match last_err {
        Some(e) => format!("the answer's JSON does not parse as a proposal: {e}"),
        None => "the answer contains no JSON object (expected {\"description\", \"rationale\", \"edits\"})".into(),
    })
}

fn check(mut p: Proposal) -> Result<Proposal, String> {
    // Proposer text reaches terminals, commit messages, results.tsv and the report: no escape
    // sequence or control character of it may act on any of them.
    p.description = crate::results::one_line(&printable(&p.description));
    p.rationale = printable(&p.rationale);
    if p.description.trim().is_empty() {
        return Err("`description` is empty".into());
    }
    if p.edits.is_empty() {
        return Err("`edits` is empty: propose exactly one focused change".into());
    }
    Ok(p)
}

/// Substrings that may hold the JSON: the whole text, fenced blocks, then balanced objects.
fn candidates(text: &str) -> Vec<&str> {
    let mut out = vec![text.trim()];
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let body_start = after.find('\n').map(|i| i + 1).unwrap_or(0);
        let body = &after[body_start..];
        match body.find("```") {
            Some(end) => {
                out.push(body[..end].trim());
                rest = &body[end + 3..];
            }
            None => break,
        }
    }
    for (i, _) in text.match_indices('{') {
        if let Some(len) = balanced(&text[i..]) {
            out.push(&text[i..i + len]);
        }
    }
    out
}

/// `s` with control characters inside JSON strings written as escapes (`\n`, `\t`, `\u0001`).
fn escape_raw_controls(s: &str) -> String {
    let (mut out, mut in_str, mut esc) = (String::with_capacity(s.len()), false, false);
    for c in s.chars() {
        match (in_str, esc, c) {
            (true, true, _) => esc = false,
            (true, false, '\\') => esc = true,
            (true, false, '"') | (false, _, '"') => in_str = !in_str,
            (true, false, c) if c.is_control() => {
                match c {
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c => out.push_str(&format!("\\u{:04x}", c as u32)),
                }
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Length of the balanced `{...}` at the start of `s`, skipping braces inside strings.
fn balanced(s: &str) -> Option<usize> {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for (i, c) in s.char_indices() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => depth += 1,
            '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// `text` without terminal escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ST`,
/// two-character `ESC x`) and without control characters other than newline and tab.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.next() {
                Some('[') => {
                    // Parameters and intermediates, up to the final byte (@ to ~).
                    for n in chars.by_ref() {
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(n) = chars.next() {
                        if n == '\u{7}' || (n == '\u{1b}' && chars.peek() == Some(&'\\')) {
                            if n == '\u{1b}' {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        if c == '\n' || c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod printable_tests {
    use super::*;

    #[test]
    fn escape_sequences_and_control_characters_are_dropped_before_anything_prints_them() {
        let answer = "{\"description\": \"\\u001b[31mred\\u001b[0m lr\\u0007 \\u001b]0;title\\u0007up\\r\", \"rationale\": \"a\\nb\\u001b[2J\", \"edits\": [{\"path\": \"x\", \"search\": \"a\", \"replace\": \"b\"}]}";
        let p = parse(answer).unwrap();
        assert_eq!(p.description, "red lr up");
        assert_eq!(p.rationale, "a\nb");
        assert_eq!(printable("plain \u{e9}t\u{e9}\tok"), "plain \u{e9}t\u{e9}\tok");
    }

    #[test]
    fn raw_line_breaks_inside_strings_read_as_the_characters_they_are() {
        // What llama.cpp's JSON grammar lets a small model write: a real line break and a tab
        // inside string values (JSON wants them escaped). A brace inside a string stays text.
        let answer = "{\"description\": \"lr up\", \"rationale\": \"first line\nsecond}\tline\", \"edits\": [{\"path\": \"x\", \"search\": \"[optim]\nlr = 0.001\", \"replace\": \"[optim]\nlr = 0.002\"}]}";
        assert!(serde_json::from_str::<serde_json::Value>(answer).is_err(), "the input is not strict JSON");
        let p = parse(answer).unwrap();
        assert_eq!(p.rationale, "first line\nsecond}\tline");
        assert_eq!(p.edits[0].search, "[optim]\nlr = 0.001");
        assert_eq!(p.edits[0].replace, "[optim]\nlr = 0.002");
    }
}
