//! The offline demo: a generated corpus, a BPE tokenizer trained on it, a tiny Llama teacher
//! pre-trained once and cached, then the research loop and the report.

pub mod corpus;
pub mod teacher;
pub mod tokenizer;

use std::path::Path;

use anyhow::Context;

/// Copies the cached teacher and its texts into a workspace (git-ignored `teacher/` and
/// `data/`), where the tiny-demo recipe expects them; a copy keeps the workspace valid when the
/// cache is cleared.
pub fn install_teacher(dir: &Path, t: &teacher::Teacher) -> anyhow::Result<()> {
    let copy = |from: &Path, to: &Path| -> anyhow::Result<()> {
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        Ok(())
    };
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        copy(&t.model_dir.join(f), &dir.join("teacher").join(f))?;
    }
    copy(&t.train_text, &dir.join("data/train.txt"))?;
    copy(&t.eval_text, &dir.join("data/eval.txt"))?;
    // As long as the eval text, so that both figures rest on as many tokens.
    let eval_bytes = std::fs::metadata(&t.eval_text)
        .with_context(|| format!("cannot read {}", t.eval_text.display()))?
        .len() as usize;
    let heldout = dir.join(autoqat_workspace::layout::HELDOUT_TEXT);
    std::fs::write(&heldout, corpus::heldout(eval_bytes))
        .with_context(|| format!("cannot write {}", heldout.display()))?;
    Ok(())
}
