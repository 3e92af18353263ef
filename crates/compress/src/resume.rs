//! What a compression keeps so that `autoqat compress --resume` continues a killed run instead
//! of starting over: in `<run>/resume/`, the recipe it was started with, the full-precision
//! score, the teacher's targets, the allocation, each distilled block's latents, and the
//! fine-tune's checkpoint (`autoqat_toolkit::checkpoint`). Every file is written whole (temporary, then
//! rename), so a kill leaves either the previous state or the new one. The directory is
//! removed once the artifact is packed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use autoqat_workspace::run::RESUME_DIR;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::Tensor;

use crate::error::{io_err, CompressError, Result};
use crate::recipe::CompressRecipe;

const RECIPE_FILE: &str = "recipe.json";

/// The resumable state of one run directory.
#[derive(Debug)]
pub struct ResumeState {
    dir: PathBuf,
}

impl ResumeState {
    /// Opens the state of `run_dir`. Without `resume`, any old state is discarded and the
    /// recipe recorded; with it, the state must exist and have been started by the same recipe.
    pub fn open(run_dir: &Path, recipe: &CompressRecipe, resume: bool) -> Result<Self> {
        let dir = run_dir.join(RESUME_DIR);
        let now = serde_json::to_value(recipe)
            .map_err(|e| CompressError::Resume(format!("cannot record the recipe: {e}")))?;
        let state = Self { dir };
        if !resume {
            if state.dir.exists() {
                std::fs::remove_dir_all(&state.dir).map_err(io_err(&state.dir))?;
            }
            std::fs::create_dir_all(&state.dir).map_err(io_err(&state.dir))?;
            state.save(RECIPE_FILE, &now)?;
            return Ok(state);
        }
        let Some(then) = state.load::<serde_json::Value>(RECIPE_FILE)? else {
            return Err(CompressError::Resume(format!(
                "nothing to resume in {} (hint: run without --resume)",
                run_dir.display()
            )));
        };
        if let Some(key) = first_difference(&then, &now, String::new()) {
            return Err(CompressError::Resume(format!(
                "the recipe changed since the run in {} started ({key} differs); resuming would mix two recipes (hint: restore it, or run without --resume to start over)",
                run_dir.display()
            )));
        }
        Ok(state)
    }

    /// The directory (the fine-tune keeps its checkpoint under it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A saved JSON value, None when it was never saved.
    pub fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                CompressError::Resume(format!("{}: {e} (hint: run without --resume to start over)", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CompressError::Io { path, err: e }),
        }
    }

    /// Saves a JSON value whole.
    pub fn save<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        Ok(autoqat_workspace::atomic::write_json(&self.dir.join(name), value)?)
    }

    /// Saved tensors, None when they were never saved.
    pub fn load_tensors(&self, name: &str) -> Result<Option<HashMap<String, Tensor>>> {
        let path = self.dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(Tensor::read_safetensors(&path)?.into_iter().collect()))
    }

    /// Saves tensors whole (a kill mid-write leaves no file under the name).
    pub fn save_tensors(&self, name: &str, tensors: &[(String, Tensor)]) -> Result<()> {
        Ok(autoqat_model::load::write_safetensors(tensors, &self.dir.join(name))?)
    }

    /// Removes the state: the run finished.
    pub fn finish(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir).map_err(io_err(&self.dir))
    }
}

/// The dotted key of the first leaf where two recipes differ.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: String) -> Option<String> {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let sub = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => first_difference(u, v, sub),
                    _ => Some(sub),
                }
            })
        }
        _ => (a != b).then_some(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_first_changed_key() {
        let a = serde_json::json!({"distill": {"steps": 20, "lr": 1e-4}, "model": {"source": "m"}});
        let b = serde_json::json!({"distill": {"steps": 50, "lr": 1e-4}, "model": {"source": "m"}});
        assert_eq!(first_difference(&a, &b, String::new()).as_deref(), Some("distill.steps"));
        assert_eq!(first_difference(&a, &a, String::new()), None);
    }
}
