//! `autoqat prepare`: puts the model, the train text and the eval text where the workspace's
//! recipe expects them, and caches their tokens. Online it fetches SmolLM-135M, TinyStories and
//! WikiText-2 from the Hub; offline it takes local paths. In a tiny-demo workspace it builds
//! (or reuses) the cached tiny teacher and its corpus instead.

pub mod hub_data;
pub mod tokens;

use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::demo::teacher::{self, TeacherSpec};

/// What the user passed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Workspace directory.
    pub workspace: PathBuf,
    /// Model hub id or local directory, replacing the recipe's.
    pub model: Option<String>,
    /// Local training text.
    pub train_text: Option<PathBuf>,
    /// Local evaluation text.
    pub eval_text: Option<PathBuf>,
    /// Local held-out text.
    pub heldout_text: Option<PathBuf>,
}

/// Where everything ended up (also written to `data/prepare.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    /// The model source the recipe uses.
    pub model_source: String,
    /// Its local directory.
    pub model_dir: PathBuf,
    /// The training text.
    pub train_text: PathBuf,
    /// The evaluation text.
    pub eval_text: PathBuf,
    /// Its cached tokens.
    pub train_tokens: tokens::TokenFile,
    /// Its cached tokens.
    pub eval_tokens: tokens::TokenFile,
    /// True when the recipe's model.source was rewritten and committed.
    pub recipe_changed: bool,
}

const RECIPE: &str = autoqat_workspace::layout::RECIPE;
/// The tiny-demo recipe's model source.
const TINY_TEACHER: &str = "../teacher";

/// Runs the preparation; `log` receives progress lines.
pub fn prepare(opts: &Options, log: &mut dyn FnMut(&str)) -> anyhow::Result<Prepared> {
    let ws = &opts.workspace;
    let recipe_path = ws.join(RECIPE);
    if !recipe_path.exists() && ws.join(PYTHON_PREPARE).is_file() {
        return prepare_python(opts, log);
    }
    let text = std::fs::read_to_string(&recipe_path)
        .with_context(|| format!("cannot read {} (hint: run `autoqat init` first)", recipe_path.display()))?;
    let recipe = autoqat_recipe::parse(&text).with_context(|| format!("in {}", recipe_path.display()))?;
    let exp_dir = recipe_path.parent().unwrap_or(Path::new("."));
    let train_target = inside(ws, &exp_dir.join(&recipe.data.train_text));
    let eval_target = inside(ws, &exp_dir.join(&recipe.data.eval_text));

    let mut recipe_changed = false;
    let (model_source, model_dir) = if recipe.model.source == TINY_TEACHER && opts.model.is_none() {
        let t = teacher::get_or_build(&teacher::cache_dir(), &TeacherSpec::standard(), log)?;
        crate::demo::install_teacher(ws, &t)?;
        // The generated corpus is the default text of a tiny-demo workspace.
        for (given, target, generated) in
            [(&opts.train_text, &train_target, &t.train_text), (&opts.eval_text, &eval_target, &t.eval_text)]
        {
            if given.is_none() {
                place(generated, target.as_deref(), log)?;
            }
        }
        (TINY_TEACHER.to_string(), ws.join("teacher"))
    } else {
        let source = opts.model.clone().unwrap_or_else(|| recipe.model.source.clone());
        log(&format!("model: resolving {source}"));
        let local = exp_dir.join(&source);
        let lookup = if local.is_dir() { local.to_string_lossy().into_owned() } else { source.clone() };
        let dir = autoqat_model::hub::resolve_model_dir(&lookup)
            .with_context(|| format!("cannot get the model {source} (offline? hint: pass --model LOCAL_HF_DIR)"))?;
        if source != recipe.model.source {
            let value = if Path::new(&source).is_dir() { abs(Path::new(&source)) } else { source.clone() };
            set_model_source(ws, &recipe_path, &text, &value)?;
            log(&format!("recipe: model.source = {value:?} (committed)"));
            recipe_changed = true;
        }
        (source, dir)
    };

    let train_text = fetch_text(opts.train_text.as_deref(), train_target.as_deref(), "train", log, || {
        hub_data::tinystories()
            .and_then(|p| std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display())))
    })?;
    let eval_text =
        fetch_text(opts.eval_text.as_deref(), eval_target.as_deref(), "eval", log, || hub_data::wikitext2("test"))?;

    // The held-out split only feeds the report, so a text that cannot be had is said, not fatal.
    // The tiny demo's was written with its teacher; a local eval text means working offline,
    // where only a local held-out text is taken.
    let heldout = ws.join(autoqat_workspace::layout::HELDOUT_TEXT);
    if opts.heldout_text.is_none() && opts.eval_text.is_some() && !heldout.is_file() {
        log("held-out text: none (pass --heldout-text FILE to score the best recipe on one)");
    } else if let Err(e) =
        fetch_text(opts.heldout_text.as_deref(), Some(&heldout), "heldout", log, || hub_data::wikitext2("validation"))
    {
        log(&format!("held-out text: not prepared ({e:#}); pass --heldout-text FILE to score the best on one"));
    }

    let tokenizer = model_dir.join("tokenizer.json");
    let train_tokens = tokens::ensure(&train_text, &tokenizer)?;
    let eval_tokens = tokens::ensure(&eval_text, &tokenizer)?;
    for (name, t) in [("train", &train_tokens), ("eval", &eval_tokens)] {
        log(&format!(
            "{name} tokens: {} ({} bytes){} -> {}",
            t.meta.tokens,
            t.meta.bytes,
            if t.cached { ", cached" } else { "" },
            t.path.display()
        ));
    }
    let out = Prepared { model_source, model_dir, train_text, eval_text, train_tokens, eval_tokens, recipe_changed };
    let data = ws.join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("prepare.json"), serde_json::to_string_pretty(&out)?)?;
    Ok(out)
}

/// The python-qat layout's model directory and texts (what its prepare.py reads).
const PYTHON_PREPARE: &str = "prepare.py";

/// A python-qat workspace (no recipe, a `prepare.py`): the model in `teacher/` and the texts in
/// `data/`, where its prepare.py reads them. Without `--model`, the demo's cached tiny teacher
/// and corpus (built once, offline); with it, `teacher` links to that directory.
fn prepare_python(opts: &Options, log: &mut dyn FnMut(&str)) -> anyhow::Result<Prepared> {
    let ws = &opts.workspace;
    let teacher_dir = ws.join("teacher");
    let (model_source, model_dir) = match &opts.model {
        None => {
            let t = teacher::get_or_build(&teacher::cache_dir(), &TeacherSpec::standard(), log)?;
            crate::demo::install_teacher(ws, &t)?;
            log(&format!("model: the demo's tiny teacher -> {}", teacher_dir.display()));
            ("teacher".to_string(), teacher_dir.clone())
        }
        Some(source) => {
            log(&format!("model: resolving {source}"));
            let dir = autoqat_model::hub::resolve_model_dir(source)
                .with_context(|| format!("cannot get the model {source} (offline? hint: pass --model LOCAL_HF_DIR)"))?;
            let dir = dir.canonicalize().unwrap_or(dir);
            match std::fs::read_link(&teacher_dir) {
                Ok(old) if old == dir => {}
                Ok(_) => std::fs::remove_file(&teacher_dir)?,
                Err(_) if teacher_dir.exists() => anyhow::bail!(
                    "{} exists and is not a link (hint: remove it to use --model {source})",
                    teacher_dir.display()
                ),
                Err(_) => {}
            }
            if !teacher_dir.exists() {
                std::os::unix::fs::symlink(&dir, &teacher_dir)
                    .with_context(|| format!("cannot link {} to {}", teacher_dir.display(), dir.display()))?;
            }
            log(&format!("model: {} -> {}", teacher_dir.display(), dir.display()));
            (source.clone(), dir)
        }
    };
    let data = ws.join("data");
    let train_text = fetch_text(opts.train_text.as_deref(), Some(&data.join("train.txt")), "train", log, || {
        hub_data::tinystories()
            .and_then(|p| std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display())))
    })?;
    let eval_text = fetch_text(opts.eval_text.as_deref(), Some(&data.join("eval.txt")), "eval", log, || {
        hub_data::wikitext2("test")
    })?;
    let heldout = ws.join(autoqat_workspace::layout::HELDOUT_TEXT);
    if let Some(h) = &opts.heldout_text {
        place(h, Some(&heldout), log)?;
    } else if !heldout.is_file() {
        log("held-out text: none (pass --heldout-text FILE to score the best experiment on one)");
    }
    let tokenizer = model_dir.join("tokenizer.json");
    let train_tokens = tokens::ensure(&train_text, &tokenizer)?;
    let eval_tokens = tokens::ensure(&eval_text, &tokenizer)?;
    let out =
        Prepared { model_source, model_dir, train_text, eval_text, train_tokens, eval_tokens, recipe_changed: false };
    std::fs::write(data.join("prepare.json"), serde_json::to_string_pretty(&out)?)?;
    Ok(out)
}

/// `path` when it stays inside the workspace (a recipe may point elsewhere, e.g. at shared test
/// data; that is used as is but never written).
fn inside(ws: &Path, path: &Path) -> Option<PathBuf> {
    let mut depth: i64 = 0;
    let rel = path.strip_prefix(ws).ok()?;
    for c in rel.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    Some(path.to_path_buf())
}

/// Copies `from` to `target` unless the contents are already there.
fn place(from: &Path, target: Option<&Path>, log: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
    let Some(target) = target else {
        anyhow::bail!("the recipe's data path points outside the workspace; cannot write {}", from.display());
    };
    if std::fs::read(target).ok() == std::fs::read(from).ok() && target.exists() {
        return Ok(());
    }
    if let Some(p) = target.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::copy(from, target).with_context(|| format!("cannot copy {} to {}", from.display(), target.display()))?;
    log(&format!("{} -> {}", from.display(), target.display()));
    Ok(())
}

/// The text for one role: a given local file (copied to the recipe's path), the file already at
/// the recipe's path, or a download.
fn fetch_text(
    given: Option<&Path>,
    target: Option<&Path>,
    role: &str,
    log: &mut dyn FnMut(&str),
    download: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<PathBuf> {
    let flag = format!("--{role}-text");
    if let Some(given) = given {
        anyhow::ensure!(given.is_file(), "{flag} {}: no such file", given.display());
        let target = target.with_context(|| {
            format!("the recipe's data.{role}_text points outside the workspace; point it at ../data/{role}.txt to use {flag}")
        })?;
        place(given, Some(target), log)?;
        return Ok(target.to_path_buf());
    }
    match target {
        Some(t) if t.is_file() => {
            log(&format!("{role} text: {} (already there)", t.display()));
            Ok(t.to_path_buf())
        }
        Some(t) => {
            log(&format!("{role} text: downloading"));
            let text = download()?;
            if let Some(p) = t.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::write(t, text).with_context(|| format!("cannot write {}", t.display()))?;
            Ok(t.to_path_buf())
        }
        None => {
            anyhow::bail!("the recipe's data.{role}_text is outside the workspace and missing (hint: pass {flag} FILE)")
        }
    }
}

fn abs(p: &Path) -> String {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf()).to_string_lossy().into_owned()
}

/// Rewrites `[model] source` in the recipe and commits the change, so the run starts clean.
fn set_model_source(ws: &Path, recipe_path: &Path, text: &str, value: &str) -> anyhow::Result<()> {
    let mut in_model = false;
    let mut done = false;
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_model = t == "[model]";
        }
        if in_model && !done && t.split('=').next().map(str::trim) == Some("source") {
            out.push_str(&format!("source = {}\n", toml::Value::String(value.to_string())));
            done = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    anyhow::ensure!(done, "{} has no [model] source line to update", recipe_path.display());
    autoqat_recipe::parse(&out).context("the updated recipe does not parse")?;
    std::fs::write(recipe_path, out).with_context(|| format!("cannot write {}", recipe_path.display()))?;
    crate::workspace::commit_all(ws, &[PathBuf::from(RECIPE)], "autoqat prepare: set model.source")?;
    Ok(())
}
