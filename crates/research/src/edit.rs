//! Applies a proposal's search/replace edits with every rejection the loop needs: paths
//! outside the mutable set (`../`, absolute, symlinks leaving the workspace), search text
//! absent or ambiguous, a result that fails the validator, an unfocused change, a repeat.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path};

use crate::answer::Proposal;
use crate::focus;
use crate::validate::Validator;

/// An accepted proposal: the new file contents and what changed.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Workspace-relative path and new content of each changed file.
    pub files: Vec<(String, String)>,
    /// The changed lines, for notes and prompts.
    pub diff: String,
    /// Fingerprint of `diff`.
    pub diff_key: String,
    /// Changed lines in total.
    pub changed_lines: usize,
}

/// What the edits are checked against.
pub struct EditRules<'a> {
    /// The workspace root.
    pub root: &'a Path,
    /// Files the proposer may edit.
    pub mutable_paths: &'a [String],
    /// Checks the first mutable path (the recipe).
    pub validator: &'a Validator,
    /// Most changed lines allowed.
    pub max_changed_lines: usize,
    /// Fingerprints of edits already tried.
    pub tried: &'a HashSet<String>,
}

/// Applies `p` to the current files; the error is one line quoting the reason.
pub fn apply(p: &Proposal, rules: &EditRules) -> Result<Applied, String> {
    let mut files: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (i, e) in p.edits.iter().enumerate() {
        let n = i + 1;
        let path = check_path(&e.path, rules).map_err(|m| format!("edit {n}: {m}"))?;
        if !files.contains_key(&path) {
            let full = rules.root.join(&path);
            let text =
                std::fs::read_to_string(&full).map_err(|err| format!("edit {n}: cannot read `{path}`: {err}"))?;
            files.insert(path.clone(), (text.clone(), text));
        }
        let (_, cur) = files.get_mut(&path).ok_or("internal: file vanished")?;
        if e.search.is_empty() {
            return Err(format!("edit {n}: `search` is empty; quote the exact lines to replace"));
        }
        match cur.matches(&e.search).count() {
            0 => return Err(format!("edit {n}: search text not found in `{path}`: {:?}", clip(&e.search))),
            1 => {}
            k => {
                return Err(format!(
                "edit {n}: search text occurs {k} times in `{path}`; include more surrounding lines so it is unique"
            ))
            }
        }
        *cur = cur.replacen(&e.search, &e.replace, 1);
    }
    check(files, rules)
}

/// The change from each file's old to new text (`path -> (old, new)`) held to the rules that
/// bind a proposal's: within the focus limit, the schema and not tried before.
pub fn check(files: BTreeMap<String, (String, String)>, rules: &EditRules) -> Result<Applied, String> {
    let mut diff = String::new();
    let mut changed = 0;
    for (path, (old, new)) in &files {
        changed += focus::changed_lines(old, new);
        diff.push_str(&focus::compact_diff(path, old, new));
    }
    if changed == 0 {
        return Err("the edits change nothing".into());
    }
    if changed > rules.max_changed_lines {
        return Err(format!(
            "the change touches {changed} lines; at most {} are allowed: propose one focused change",
            rules.max_changed_lines
        ));
    }
    for (path, (old, new)) in &files {
        if Some(path) == rules.mutable_paths.first() {
            rules.validator.check(old, new).map_err(|m| format!("`{path}` fails the schema: {m}"))?;
        }
    }
    let key = focus::diff_key(&diff);
    // With a schema, "tried" means the same recipe by meaning (values as parsed, defaults
    // included), whichever parent it came from; the same edit from a new best is a new recipe.
    // Without one, only the text of the change can be compared.
    let recipe = rules.mutable_paths.first().and_then(|p| files.get(p)).map(|(_, new)| new.as_str());
    let tried_as = rules.validator.tried_key(recipe, &key);
    if rules.tried.contains(&tried_as) {
        return Err(if tried_as == key {
            format!("this exact change was already tried:\n{diff}propose something different")
        } else if rules.validator.format() == crate::validate::Format::Python {
            format!("this code was already tried (the same program up to comments, layout and number notation, from this parent or another):\n{diff}propose something different")
        } else {
            format!("this recipe was already tried (the same values after parsing, defaults included, from this parent or another):\n{diff}propose something different")
        });
    }
    Ok(Applied {
        files: files.into_iter().filter(|(_, (o, n))| o != n).map(|(p, (_, n))| (p, n)).collect(),
        diff,
        diff_key: key,
        changed_lines: changed,
    })
}

/// Normalises `raw` and accepts it only if it is one of the mutable paths, inside the workspace.
fn check_path(raw: &str, rules: &EditRules) -> Result<String, String> {
    let p = Path::new(raw);
    if p.is_absolute() {
        return Err(format!("path `{raw}` is absolute; use a path relative to the workspace"));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().to_string()),
            Component::CurDir => {}
            _ => return Err(format!("path `{raw}` leaves the workspace (`..` is not allowed)")),
        }
    }
    let norm = parts.join("/");
    if !rules.mutable_paths.iter().any(|m| m == &norm) {
        return Err(format!("path `{raw}` is not mutable; only {} may be edited", rules.mutable_paths.join(", ")));
    }
    let root = rules.root.canonicalize().map_err(|e| format!("workspace: {e}"))?;
    let real = rules.root.join(&norm).canonicalize().map_err(|e| format!("`{norm}`: {e}"))?;
    if !real.starts_with(&root) {
        return Err(format!("path `{raw}` is a symlink that leaves the workspace"));
    }
    Ok(norm)
}

fn clip(s: &str) -> String {
    let mut c: String = s.chars().take(120).collect();
    if c.len() < s.len() {
        c.push('…');
    }
    c
}

/// TOML text of a JSON scalar.
fn toml_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => toml::Value::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

/// The exact `(search, replace)` that sets dotted `key` to `value` in `text`: the key's line
/// is rewritten, or a line is added under its section header when the key is absent.
pub fn line_edit(text: &str, key: &str, value: &serde_json::Value) -> Option<(String, String)> {
    let (section, leaf) = match key.rsplit_once('.') {
        Some((s, l)) => (s, l),
        None => ("", key),
    };
    let mut cur = String::new();
    let mut header: Option<&str> = None;
    let mut prev = "";
    for line in text.lines() {
        let before = std::mem::replace(&mut prev, line);
        let t = line.trim();
        if t.starts_with('[') && !t.starts_with("[[") {
            cur = t.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_string();
            if cur == section {
                header = Some(line);
            }
            continue;
        }
        if cur != section {
            continue;
        }
        let Some(rest) = t.strip_prefix(leaf) else { continue };
        if !rest.trim_start().starts_with('=') {
            continue;
        }
        let indent = &line[..line.len() - line.trim_start().len()];
        let comment = rest.find(" #").map(|i| &rest[i..]).unwrap_or("");
        let new_line = format!("{indent}{leaf} = {}{comment}", toml_value(value));
        // `lr = 0.1` also matches inside `warmup_lr = 0.1`: widen to the line before if needed.
        if text.matches(line).count() == 1 {
            return Some((line.to_string(), new_line));
        }
        let wide = format!("{before}\n{line}");
        if text.matches(&wide).count() == 1 {
            return Some((wide, format!("{before}\n{new_line}")));
        }
        return None;
    }
    let h = header?;
    if text.matches(h).count() != 1 {
        return None;
    }
    Some((h.to_string(), format!("{h}\n{leaf} = {}", toml_value(value))))
}
