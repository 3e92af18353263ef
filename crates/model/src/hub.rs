//! Resolves a model source to a local directory: a local path wins; otherwise a hub id
//! (`org/name`) is taken from the Hugging Face cache, or downloaded through `hf-hub` when online.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// The files a model directory needs besides its weights.
const META_FILES: [&str; 2] = ["config.json", "tokenizer.json"];

/// Returns a local directory holding `config.json` and the weights of `source`.
pub fn resolve_model_dir(source: &str) -> Result<PathBuf> {
    let path = Path::new(source);
    if path.is_dir() {
        if !path.join("config.json").is_file() {
            return Err(ModelError::Config {
                path: path.join("config.json"),
                msg: "not found (hint: pass a Hugging Face model directory)".into(),
            });
        }
        return Ok(path.to_path_buf());
    }
    if !looks_like_hub_id(source) {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            err: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such model directory (and not a hub id org/name)",
            ),
        });
    }
    if let Some(dir) = from_cache(source) {
        return Ok(dir);
    }
    download(source)
}

/// `org/name` with no path-like parts.
fn looks_like_hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && *p != "." && *p != "..") && !s.starts_with('.')
}

/// The cached snapshot directory when config.json and the weights are all there.
fn from_cache(repo: &str) -> Option<PathBuf> {
    let cache = hf_hub::Cache::from_env().model(repo.to_string());
    let config = cache.get("config.json")?;
    let dir = config.parent()?.to_path_buf();
    if let Some(single) = cache.get("model.safetensors") {
        return single.parent().map(|_| dir);
    }
    let index = cache.get("model.safetensors.index.json")?;
    let shards = shard_names(&index).ok()?;
    shards.iter().all(|s| cache.get(s).is_some()).then_some(dir)
}

fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|err| ModelError::Io { path: index.to_path_buf(), err })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::CorruptWeights { path: index.to_path_buf(), msg: e.to_string() })?;
    let mut names: Vec<String> = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .map(|m| m.values().filter_map(|f| f.as_str().map(String::from)).collect())
        .unwrap_or_default();
    names.sort();
    names.dedup();
    Ok(names)
}

fn download(repo: &str) -> Result<PathBuf> {
    let hub_err = |msg: String| ModelError::Hub { repo: repo.to_string(), msg };
    let api =
        hf_hub::api::sync::ApiBuilder::from_env().with_progress(false).build().map_err(|e| hub_err(e.to_string()))?;
    let r = api.model(repo.to_string());
    let config =
        r.get("config.json").map_err(|e| hub_err(format!("{e} (offline? the model is not in the local cache)")))?;
    for f in META_FILES.iter().skip(1) {
        // A tokenizer is optional for loading the weights; fetch it when the repo has one.
        let _ = r.get(f);
    }
    match r.get("model.safetensors") {
        Ok(_) => {}
        Err(_) => {
            let index =
                r.get("model.safetensors.index.json").map_err(|e| hub_err(format!("no safetensors weights: {e}")))?;
            for shard in shard_names(&index)? {
                r.get(&shard).map_err(|e| hub_err(e.to_string()))?;
            }
        }
    }
    config.parent().map(Path::to_path_buf).ok_or_else(|| hub_err("cache path has no parent".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_recognized() {
        assert!(looks_like_hub_id("HuggingFaceTB/SmolLM-135M"));
        assert!(!looks_like_hub_id("./model"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("model"));
    }
}
