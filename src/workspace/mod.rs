//! Research workspaces: the files of each template and `init`, which writes them and makes the
//! first git commit. The smollm templates embed the repository root's own workspace files, so
//! the repository and a fresh `autoqat init` never drift apart.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The brief shown to the proposer (the repository's own program.md).
const PROGRAM: &str = include_str!("../../program.md");
/// The repository root's recipe (SmolLM-135M, ternary).
const SMOLLM_TRAIN: &str = include_str!("../../experiments/train.toml");
/// The repository root's harness settings.
const SMOLLM_SETTINGS: &str = include_str!("../../autoqat.toml");
const TINY_TRAIN: &str = include_str!("templates/tiny-demo.train.toml");
const TINY_SETTINGS: &str = include_str!("templates/tiny-demo.autoqat.toml");
const COMPRESS_PROGRAM: &str = include_str!("templates/compress.program.md");
const COMPRESS_SETTINGS: &str = include_str!("templates/compress.autoqat.toml");
const COMPRESS_RECIPE: &str = include_str!("templates/compress.toml");
const PYTHON_PROGRAM: &str = include_str!("templates/python-qat.program.md");
const PYTHON_SETTINGS: &str = include_str!("templates/python-qat.autoqat.toml");
const PYTHON_PREPARE: &str = include_str!("templates/python-qat.prepare.py");
const PYTHON_TRAIN: &str = include_str!("templates/python-qat.train.py");
/// The default checkpoint of the compression templates (the track's model family).
pub const QWEN_MODEL: &str = "Qwen/Qwen2.5-0.5B";
const GITIGNORE: &str =
    "# autoqat: rebuildable or large outputs\nresults.tsv\nruns/\nreport/\ndata/\nteacher\n.autoqat/\nSTOP\n";

/// Where `autoqat prepare` puts the train and eval text, relative to `experiments/`.
pub const TRAIN_TEXT: &str = "../data/train.txt";
/// See [`TRAIN_TEXT`].
pub const EVAL_TEXT: &str = "../data/eval.txt";

/// A workspace template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// Offline tiny Llama on a generated corpus (what `autoqat demo` uses).
    TinyDemo,
    /// SmolLM-135M to ternary (the repository root).
    SmollmTernary,
    /// SmolLM-135M to binary.
    SmollmBinary,
    /// The compression track, ternary budget (2.2125 bits/param), searched by the loop.
    QwenTernary,
    /// The compression track, binary budget (1.3125 bits/param).
    QwenBinary,
    /// The classic three files: program.md, a read-only prepare.py (model, data, budget,
    /// evaluation) and the mutable train.py (plain PyTorch + transformers ternary QAT).
    PythonQat,
    /// The compression track on the offline tiny teacher, ternary budget (what `autoqat demo
    /// --track compress` uses; not offered by `init`, whose `prepare` builds QAT workspaces).
    TinyCompress,
}

impl Template {
    /// Every template name, for help and errors.
    pub const NAMES: [&'static str; 6] =
        ["tiny-demo", "smollm-ternary", "smollm-binary", "qwen-ternary", "qwen-binary", "python-qat"];

    /// Parses a template name.
    pub fn parse(name: &str) -> anyhow::Result<Template> {
        match name {
            "tiny-demo" => Ok(Template::TinyDemo),
            "smollm-ternary" => Ok(Template::SmollmTernary),
            "smollm-binary" => Ok(Template::SmollmBinary),
            "qwen-ternary" => Ok(Template::QwenTernary),
            "qwen-binary" => Ok(Template::QwenBinary),
            "python-qat" => Ok(Template::PythonQat),
            other => anyhow::bail!("unknown template `{other}`; expected one of {}", Template::NAMES.join(", ")),
        }
    }
}

/// Sizes of the tiny-demo recipe.
#[derive(Debug, Clone, Copy)]
pub struct TinySizes {
    /// Optimizer steps per trial.
    pub steps: u32,
    /// Evaluate every this many steps.
    pub eval_every: u32,
    /// Trial wall-clock limit in seconds.
    pub timeout_s: u32,
    /// Training and eval sequence length.
    pub seq_len: u32,
    /// Sequences per step.
    pub batch: u32,
    /// Baseline runs (seeds 0, 1, ...) that measure the noise.
    pub baseline_repeats: u32,
}

impl Default for TinySizes {
    fn default() -> Self {
        TinySizes { steps: 30, eval_every: 10, timeout_s: 600, seq_len: 128, batch: 8, baseline_repeats: 3 }
    }
}

/// The `[[validator.fields]]` blocks of a schema's searchable keys, so a workspace's search
/// space is the schema's and is declared once.
fn search_space(schema: &autoqat_recipe::Schema) -> anyhow::Result<String> {
    let mut out = String::new();
    for f in schema.searchable() {
        let choices: Vec<toml::Value> =
            f.choices.iter().map(toml::Value::try_from).collect::<Result<_, _>>().context("a schema ladder")?;
        out.push_str(&format!(
            "\n[[validator.fields]]\nkey = {}\nchoices = {}\ndoc = {}\n",
            toml::Value::String(f.key.clone()),
            toml::Value::Array(choices),
            toml::Value::String(f.doc.clone())
        ));
        if let Some(c) = &f.active_when {
            let values: Vec<toml::Value> =
                c.values.iter().map(toml::Value::try_from).collect::<Result<_, _>>().context("a schema condition")?;
            out.push_str(&format!(
                "active_when = {{ key = {}, values = {} }}\n",
                toml::Value::String(c.key.clone()),
                toml::Value::Array(values)
            ));
        }
    }
    Ok(out)
}

/// The files of a template: (path relative to the workspace, contents).
pub fn files(template: Template, tiny: TinySizes) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut out = vec![(PathBuf::from(".gitignore"), GITIGNORE.to_string())];
    let mut recipe = PathBuf::from(autoqat_workspace::layout::RECIPE);
    let (program, settings, train) = match template {
        Template::PythonQat => return Ok(python_files(tiny)),
        Template::QwenTernary | Template::QwenBinary | Template::TinyCompress => {
            let (track, bpp) =
                if template == Template::QwenBinary { ("binary", "1.3125") } else { ("ternary", "2.2125") };
            recipe = PathBuf::from("experiments/compress.toml");
            let program = COMPRESS_PROGRAM.replace("{{track}}", track).replace("{{bpp}}", bpp);
            let mut settings = COMPRESS_SETTINGS
                .replace("{{tag}}", &format!("qwen-{track}"))
                .replace("{{search_space}}", &search_space(&autoqat_compress::recipe::schema())?);
            let (model, doc_tokens) = match template {
                Template::TinyCompress => ("teacher".to_string(), tiny.seq_len.to_string()),
                _ => (QWEN_MODEL.to_string(), "512".to_string()),
            };
            settings = settings.replace("{{model}}", &model).replace("{{doc_tokens}}", &doc_tokens);
            let mut text = COMPRESS_RECIPE.replace("{{track}}", track).replace("{{model}}", QWEN_MODEL);
            if template == Template::TinyCompress {
                // The demo's teacher: short documents and calibration sequences (one of the searched
                // lengths), a small calibration set.
                settings = replace_once(&settings, "tag = \"qwen-ternary\"", "tag = \"tiny-compress\"")?;
                settings = replace_once(&settings, "timeout_s = 7200", &format!("timeout_s = {}", tiny.timeout_s))?;
                for (from, to) in [
                    (format!("source = \"{QWEN_MODEL}\""), "source = \"../teacher\"".to_string()),
                    ("tokens = 8192".into(), "tokens = 4096".into()),
                    ("seq_len = 256".into(), "seq_len = 128".into()),
                    ("doc_tokens = 512".into(), format!("doc_tokens = {}", tiny.seq_len)),
                ] {
                    text = replace_once(&text, &from, &to)?;
                }
            }
            (program, settings, text)
        }
        Template::TinyDemo => (
            PROGRAM.to_string(),
            TINY_SETTINGS
                .replace("{{timeout_s}}", &tiny.timeout_s.to_string())
                .replace("{{baseline_repeats}}", &tiny.baseline_repeats.to_string())
                .replace("{{seq_len}}", &tiny.seq_len.to_string()),
            TINY_TRAIN
                .replace("{{steps}}", &tiny.steps.to_string())
                .replace("{{eval_every}}", &tiny.eval_every.to_string())
                .replace("{{seq_len}}", &tiny.seq_len.to_string())
                .replace("{{batch}}", &tiny.batch.to_string()),
        ),
        Template::SmollmTernary => (PROGRAM.to_string(), SMOLLM_SETTINGS.to_string(), smollm_train()?),
        Template::SmollmBinary => {
            let train = replace_once(&smollm_train()?, "method = \"ternary_absmean\"", "method = \"binary_absmean\"")?;
            let program = format!(
                "{PROGRAM}\n## This workspace: binary weights\n\nThe starting recipe quantizes to {{-1, +1}} \
                 (`binary_absmean`): q_zero stays 0 and the knobs that shape the zero state \
                 (deadzone threshold, deadzone recovery) matter less than the scale granularity, the \
                 learning rate and distillation.\n"
            );
            (program, SMOLLM_SETTINGS.replace("tag = \"smollm\"", "tag = \"smollm-binary\""), train)
        }
    };
    out.push(("program.md".into(), program));
    out.push((autoqat_workspace::layout::CONFIG.into(), settings));
    out.push((recipe, train));
    for (name, text) in prompts() {
        out.push((Path::new("prompts").join(name), text.to_string()));
    }
    Ok(out)
}

/// The python-qat workspace: sized like the tiny demo (its teacher is the default model), the
/// eval cut to the demo recipe's 16384 tokens.
fn python_files(tiny: TinySizes) -> Vec<(PathBuf, String)> {
    let fill = |text: &str| {
        text.replace("{{steps}}", &tiny.steps.to_string())
            .replace("{{eval_every}}", &tiny.eval_every.to_string())
            .replace("{{seq_len}}", &tiny.seq_len.to_string())
            .replace("{{batch}}", &tiny.batch.to_string())
            .replace("{{eval_max_tokens}}", "16384")
            .replace("{{timeout_s}}", &tiny.timeout_s.to_string())
            .replace("{{baseline_repeats}}", &tiny.baseline_repeats.to_string())
    };
    let mut out = vec![
        (PathBuf::from(".gitignore"), format!("{GITIGNORE}__pycache__/\n")),
        ("program.md".into(), PYTHON_PROGRAM.to_string()),
        (autoqat_workspace::layout::CONFIG.into(), fill(PYTHON_SETTINGS)),
        ("prepare.py".into(), fill(PYTHON_PREPARE)),
        ("train.py".into(), PYTHON_TRAIN.to_string()),
    ];
    for (name, text) in prompts() {
        out.push((Path::new("prompts").join(name), text.to_string()));
    }
    out
}

/// The prompt templates a workspace starts with: the repository's own `prompts/`.
fn prompts() -> Vec<(&'static str, &'static str)> {
    vec![
        ("system.md", include_str!("../../prompts/system.md")),
        ("propose.md", include_str!("../../prompts/propose.md")),
        ("repair.md", include_str!("../../prompts/repair.md")),
    ]
}

/// The repository's recipe with its data paths pointed at what `autoqat prepare` writes.
fn smollm_train() -> anyhow::Result<String> {
    let mut text = String::new();
    let mut seen = (false, false);
    for line in SMOLLM_TRAIN.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if key == "train_text" {
            text.push_str(&format!("train_text = \"{TRAIN_TEXT}\"\n"));
            seen.0 = true;
        } else if key == "eval_text" {
            text.push_str(&format!("eval_text = \"{EVAL_TEXT}\"\n"));
            seen.1 = true;
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    anyhow::ensure!(seen == (true, true), "built-in recipe lacks data.train_text or data.eval_text");
    Ok(text)
}

fn replace_once(text: &str, from: &str, to: &str) -> anyhow::Result<String> {
    anyhow::ensure!(text.matches(from).count() == 1, "built-in recipe does not contain `{from}` exactly once");
    Ok(text.replacen(from, to, 1))
}

/// Writes a template into `dir` (created if needed), refusing to overwrite any file, then
/// initialises a git repository at `dir` (unless `dir` already is one) and commits.
pub fn init(dir: &Path, template: Template, tiny: TinySizes) -> anyhow::Result<Vec<PathBuf>> {
    let files = files(template, tiny)?;
    for (rel, _) in &files {
        let path = dir.join(rel);
        anyhow::ensure!(
            !path.exists(),
            "{} already exists (hint: `autoqat init` only writes into a directory without these files; choose a new directory)",
            path.display()
        );
    }
    let mut written = Vec::new();
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(rel.clone());
    }
    commit_all(dir, &written, "autoqat init: workspace from template")?;
    Ok(written)
}

/// Commits `paths` (relative to `dir`) in the repository whose root is exactly `dir`, creating
/// one there when there is none (`Git::open_or_init`): `autoqat run` wants the workspace to be a
/// repository root.
pub fn commit_all(dir: &Path, paths: &[PathBuf], message: &str) -> anyhow::Result<git2::Oid> {
    let git = autoqat_research::git::Git::open_or_init(dir)?;
    git.commit_paths(paths, message).with_context(|| format!("cannot commit the workspace files in {}", dir.display()))
}
