//! The token cache: a text encoded once with a tokenizer, stored beside it as little-endian
//! u32 ids (`<text>.tokens`) with a JSON sidecar (`<text>.tokens.json`) naming the text and
//! tokenizer it was made from, so that a changed text or tokenizer is never served stale.
//! `autoqat prepare` fills it; every trial reads it instead of tokenizing again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result, WorkspaceError};
use crate::hash::fnv1a_hex;

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

/// A token file and whether this call found it up to date.
#[derive(Debug, Clone, Serialize)]
pub struct TokenFile {
    /// The `.tokens` file.
    pub path: PathBuf,
    /// Its description.
    pub meta: TokenMeta,
    /// True when an up-to-date file was already there.
    pub cached: bool,
}

/// `<text>.tokens` and `<text>.tokens.json`.
pub fn paths(text_path: &Path) -> (PathBuf, PathBuf) {
    (
        PathBuf::from(format!("{}.tokens", text_path.display())),
        PathBuf::from(format!("{}.tokens.json", text_path.display())),
    )
}

/// The ids of `text` (read from `text_path`) under the tokenizer whose `tokenizer.json` bytes
/// are `tokenizer_json`: from the cache when it matches both, else from `encode`, stored for
/// the next caller. A cache that cannot be written is not an error (a read-only data dir).
pub fn ensure<E: std::fmt::Display>(
    text_path: &Path,
    text: &str,
    tokenizer_json: &[u8],
    encode: impl FnOnce(&str) -> std::result::Result<Vec<u32>, E>,
) -> Result<TokenFile> {
    let (path, meta_path) = paths(text_path);
    let (text_hash, tokenizer_hash) = (fnv1a_hex(text.as_bytes()), fnv1a_hex(tokenizer_json));
    if let Some(meta) = fresh_meta(&path, &meta_path, &text_hash, &tokenizer_hash) {
        return Ok(TokenFile { path, meta, cached: true });
    }
    let ids = encode(text)
        .map_err(|e| WorkspaceError::Format { path: text_path.to_path_buf(), msg: format!("cannot tokenize: {e}") })?;
    let meta = TokenMeta { text_hash, tokenizer_hash, tokens: ids.len(), bytes: text.len() };
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    // Ids first, sidecar last: a sidecar never describes a file that is not all there.
    let stored = crate::atomic::write(&path, &bytes).and_then(|()| crate::atomic::write_json(&meta_path, &meta));
    if let Err(e) = stored {
        warn_not_stored(&e);
    }
    Ok(TokenFile { path, meta, cached: false })
}

/// The cached ids of `text` under the tokenizer whose `tokenizer.json` bytes are
/// `tokenizer_json`, when `autoqat prepare` left an up-to-date cache; never writes (a trial
/// must not write beside a shared, read-only text).
pub fn lookup(text_path: &Path, text: &str, tokenizer_json: &[u8]) -> Option<Vec<u32>> {
    let (path, meta_path) = paths(text_path);
    fresh_meta(&path, &meta_path, &fnv1a_hex(text.as_bytes()), &fnv1a_hex(tokenizer_json))?;
    read_ids(&path).ok()
}

/// The sidecar of a cache made from a text and a tokenizer with these hashes, whose ids file
/// has the size the sidecar says (the ids themselves are not read).
fn fresh_meta(path: &Path, meta_path: &Path, text_hash: &str, tokenizer_hash: &str) -> Option<TokenMeta> {
    let meta: TokenMeta = serde_json::from_str(&std::fs::read_to_string(meta_path).ok()?).ok()?;
    let size_ok = std::fs::metadata(path).is_ok_and(|m| m.len() == meta.tokens as u64 * 4);
    (size_ok && meta.text_hash == text_hash && meta.tokenizer_hash == tokenizer_hash).then_some(meta)
}

/// Reads a token file's ids (checked against its length).
pub fn read_ids(path: &Path) -> Result<Vec<u32>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    if bytes.len() % 4 != 0 {
        return Err(WorkspaceError::Format {
            path: path.to_path_buf(),
            msg: "truncated (not a multiple of 4 bytes); delete it and rerun `autoqat prepare`".into(),
        });
    }
    Ok(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// This crate logs nothing itself; a cache that could not be stored only costs the next
/// caller a re-encode, so it is reported on stderr once and otherwise ignored.
fn warn_not_stored(e: &WorkspaceError) {
    eprintln!("warning: token cache not written ({e}); the text will be tokenized again next time");
}

#[cfg(test)]
mod tests {
    #[test]
    fn cache_is_reused_and_rebuilt_when_text_or_tokenizer_changes() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t.txt");
        let calls = std::cell::Cell::new(0);
        let enc = |s: &str| -> Result<Vec<u32>, String> {
            calls.set(calls.get() + 1);
            Ok(s.bytes().map(u32::from).collect())
        };
        let a = super::ensure(&t, "hello", b"tok1", enc).unwrap();
        assert!(!a.cached);
        let b = super::ensure(&t, "hello", b"tok1", enc).unwrap();
        assert!(b.cached && calls.get() == 1);
        assert_eq!(super::read_ids(&b.path).unwrap(), b"hello".map(u32::from), "the cache holds the encoded ids");
        assert!(!super::ensure(&t, "hello!", b"tok1", enc).unwrap().cached);
        assert!(!super::ensure(&t, "hello!", b"tok2", enc).unwrap().cached);
        assert_eq!(super::read_ids(&super::paths(&t).0).unwrap().len(), 6);
        assert_eq!(super::lookup(&t, "hello!", b"tok2").unwrap().len(), 6);
        assert!(super::lookup(&t, "hello", b"tok2").is_none() && super::lookup(&t, "hello!", b"tok1").is_none());
        assert_eq!(calls.get(), 3);
    }
}
