//! `autoqat prepare`'s side of the token cache (its format and freshness rule belong to
//! `autoqat_workspace::tokens`): the model's tokenizer fills it.

use std::path::Path;

use anyhow::Context;
use autoqat_model::tokenizer::TextTokenizer;

pub use autoqat_workspace::tokens::TokenFile;

/// Encodes `text_path` with the tokenizer at `tokenizer_path` into the workspace's token cache
/// (`<text_path>.tokens`), unless an up-to-date one exists.
pub fn ensure(text_path: &Path, tokenizer_path: &Path) -> anyhow::Result<TokenFile> {
    let text = std::fs::read_to_string(text_path)
        .with_context(|| format!("cannot read {} as UTF-8 text", text_path.display()))?;
    anyhow::ensure!(!text.trim().is_empty(), "{} is empty", text_path.display());
    let tok_bytes =
        std::fs::read(tokenizer_path).with_context(|| format!("cannot read {}", tokenizer_path.display()))?;
    let encode = |t: &str| -> anyhow::Result<Vec<u32>> {
        let tok = TextTokenizer::from_bytes(&tok_bytes, tokenizer_path)?;
        tok.encode(t)?.into_iter().map(|id| u32::try_from(id).context("token id does not fit u32")).collect()
    };
    Ok(autoqat_workspace::tokens::ensure(text_path, &text, &tok_bytes, encode)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stale_token_file_is_rebuilt_when_the_text_changes() {
        let dir = tempfile::tempdir().unwrap();
        let text = crate::demo::corpus::generate(9, 20_000);
        let tok = dir.path().join("tokenizer.json");
        crate::demo::tokenizer::train(&text, 300, &tok).unwrap();
        let t = dir.path().join("t.txt");
        std::fs::write(&t, &text).unwrap();
        let a = super::ensure(&t, &tok).unwrap();
        assert!(!a.cached);
        assert!(super::ensure(&t, &tok).unwrap().cached);
        std::fs::write(&t, &text[..10_000]).unwrap();
        let b = super::ensure(&t, &tok).unwrap();
        assert!(!b.cached && b.meta.tokens < a.meta.tokens);
        assert_eq!(autoqat_workspace::tokens::read_ids(&b.path).unwrap().len(), b.meta.tokens);
    }
}
