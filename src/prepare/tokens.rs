//! The cached token file: a text encoded once with the model's tokenizer, stored as
//! little-endian u32 ids (`<text>.tokens`) with a JSON sidecar naming what it was made from, so
//! that a changed text or tokenizer is never served stale.

use std::path::{Path, PathBuf};

use anyhow::Context;
use autoqat_model::tokenizer::TextTokenizer;
use serde::{Deserialize, Serialize};

/// What a token file was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenMeta {
    /// FNV-1a of the text.
    pub text_hash: String,
    /// FNV-1a of tokenizer.json.
    pub tokenizer_hash: String,
    /// Number of ids in the file.
    pub tokens: usize,
    /// UTF-8 bytes of the text.
    pub bytes: usize,
}

/// A token file and whether this call wrote it.
#[derive(Debug, Clone, Serialize)]
pub struct TokenFile {
    /// The `.tokens` file.
    pub path: PathBuf,
    /// Its description.
    pub meta: TokenMeta,
    /// True when an up-to-date file was already there.
    pub cached: bool,
}

/// Stable 64-bit FNV-1a, as hex.
pub fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Encodes `text_path` with the tokenizer at `tokenizer_path` into `<text_path>.tokens`,
/// unless an up-to-date one exists.
pub fn ensure(text_path: &Path, tokenizer_path: &Path) -> anyhow::Result<TokenFile> {
    let text = std::fs::read_to_string(text_path).with_context(|| format!("cannot read {} as UTF-8 text", text_path.display()))?;
    anyhow::ensure!(!text.trim().is_empty(), "{} is empty", text_path.display());
    let tok_bytes = std::fs::read(tokenizer_path).with_context(|| format!("cannot read {}", tokenizer_path.display()))?;
    let path = PathBuf::from(format!("{}.tokens", text_path.display()));
    let meta_path = PathBuf::from(format!("{}.tokens.json", text_path.display()));
    let want_text = fnv1a(text.as_bytes());
    let want_tok = fnv1a(&tok_bytes);
    if let Ok(old) = std::fs::read_to_string(&meta_path) {
        if let Ok(meta) = serde_json::from_str::<TokenMeta>(&old) {
            let size_ok = std::fs::metadata(&path).map(|m| m.len() == meta.tokens as u64 * 4).unwrap_or(false);
            if meta.text_hash == want_text && meta.tokenizer_hash == want_tok && size_ok {
                return Ok(TokenFile { path, meta, cached: true });
            }
        }
    }
    let tok = TextTokenizer::from_path(tokenizer_path)?;
    let ids = tok.encode(&text)?;
    let mut buf = Vec::with_capacity(ids.len() * 4);
    for id in &ids {
        let id = u32::try_from(*id).context("token id does not fit u32")?;
        buf.extend_from_slice(&id.to_le_bytes());
    }
    std::fs::write(&path, &buf).with_context(|| format!("cannot write {}", path.display()))?;
    let meta = TokenMeta { text_hash: want_text, tokenizer_hash: want_tok, tokens: ids.len(), bytes: text.len() };
    std::fs::write(&meta_path, serde_json::to_string_pretty(&meta)?)?;
    Ok(TokenFile { path, meta, cached: false })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use anyhow::Context;

    /// Reads a token file back.
    fn read(path: &Path) -> anyhow::Result<Vec<u32>> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        anyhow::ensure!(bytes.len() % 4 == 0, "{} is truncated (not a multiple of 4 bytes)", path.display());
        Ok(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

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
        assert_eq!(read(&b.path).unwrap().len(), b.meta.tokens);
    }
}
