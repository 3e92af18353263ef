//! The model's `tokenizer.json`, loaded with the `tokenizers` crate.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// A loaded tokenizer and where it came from.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("path", &self.path).finish()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (a file, or a model directory containing it).
    pub fn from_path(path: &Path) -> Result<Self> {
        let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
        if !file.is_file() {
            return Err(ModelError::Tokenizer { path: file, msg: "not found".into() });
        }
        let inner = tokenizers::Tokenizer::from_file(&file)
            .map_err(|e| ModelError::Tokenizer { path: file.clone(), msg: e.to_string() })?;
        Ok(Self { inner, path: file })
    }

    /// Loads a tokenizer from the bytes of a `tokenizer.json`; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| ModelError::Tokenizer { path: origin.to_path_buf(), msg: e.to_string() })?;
        Ok(Self { inner, path: origin.to_path_buf() })
    }

    /// The `tokenizer.json` this was read from (or the origin named by `from_bytes`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encodes a whole text to ids, with the tokenizer's special tokens (as `tokenizer(text)` in
    /// transformers).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode_fast(text, true)
            .map_err(|e| ModelError::Tokenizer { path: self.path.clone(), msg: e.to_string() })?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
