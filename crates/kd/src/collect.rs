//! `autoqat kd collect`: ask the teacher each prompt, project its positions, and write them as
//! Parquet shards. A re-run skips the prompts the index lists; a kill loses at most the shard
//! being written (never a torn one: shards and the index are renamed into place).

use std::path::{Path, PathBuf};

use autoqat_model::TextTokenizer;
use autoqat_traces::{PromptEntry, ShardEntry, TraceIndex, TraceRow};

use crate::error::{io_err, KdError, Result};
use crate::project::{project, Projector};
use crate::teacher::Teacher;

/// Everything `collect` needs besides the teacher.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// The prompts, by index.
    pub prompts: Vec<String>,
    /// The trace directory.
    pub out: PathBuf,
    /// Top-K asked of the teacher.
    pub top_k: usize,
    /// Longest answer in tokens.
    pub max_tokens: usize,
    /// The prompt template (`{prompt}` is replaced).
    pub template: String,
    /// Prompts per shard.
    pub prompts_per_shard: usize,
}

/// Reads a prompts file: JSON Lines with a `prompt` (or `text`) field, or one prompt per
/// non-empty line.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut prompts = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if !jsonl {
            prompts.push(line.to_string());
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| KdError::Config(format!("{}:{}: not JSON ({e})", path.display(), n + 1)))?;
        let p = v["prompt"].as_str().or(v["text"].as_str()).ok_or_else(|| {
            KdError::Config(format!("{}:{}: no string field `prompt` or `text`", path.display(), n + 1))
        })?;
        prompts.push(p.to_string());
    }
    if prompts.is_empty() {
        return Err(KdError::Config(format!("{} holds no prompts", path.display())));
    }
    Ok(prompts)
}

/// Opens (or starts) the index of `opts.out`, refusing one made by another collection or from
/// a prompts file edited since (prompts are keyed by their text at their position), forgetting
/// shards deleted by hand so that their prompts are asked again, and removing what a killed run
/// may have left (partial files, shards no prompt names).
fn open_index(opts: &CollectOptions, teacher: &str, tok_hash: &str) -> Result<TraceIndex> {
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let fresh =
        TraceIndex::new(teacher.to_string(), opts.top_k, opts.max_tokens, opts.template.clone(), tok_hash.to_string());
    let index = match TraceIndex::load(&opts.out)? {
        None => fresh,
        Some(old) => {
            let same = old.teacher == fresh.teacher
                && old.top_k == fresh.top_k
                && old.max_tokens == fresh.max_tokens
                && old.template_hash == fresh.template_hash
                && old.tokenizer_hash == fresh.tokenizer_hash;
            if !same {
                return Err(KdError::Config(format!(
                    "{} holds traces from another collection ({} top-k {} max-tokens {} tokenizer {}); collect into a new --out, or repeat that collection's flags to resume it",
                    opts.out.display(),
                    old.teacher,
                    old.top_k,
                    old.max_tokens,
                    old.tokenizer_hash
                )));
            }
            old
        }
    };
    let mut index = index;
    for entry in &index.prompts {
        let now = usize::try_from(entry.idx).ok().and_then(|i| opts.prompts.get(i));
        if now != Some(&entry.text) {
            return Err(KdError::Config(format!(
                "the prompts file changed since {} was collected: prompt {} was {:?}, now {} (hint: restore the file or only append to it, or collect into a new --out)",
                opts.out.display(),
                entry.idx,
                clip(&entry.text),
                now.map_or("absent".to_string(), |t| format!("{:?}", clip(t)))
            )));
        }
    }
    let missing = index.drop_missing(&opts.out);
    for file in &missing {
        eprintln!("warning: {} is missing from {}; its prompts are collected again", file, opts.out.display());
    }
    if !missing.is_empty() {
        index.save(&opts.out)?;
    }
    let listed: std::collections::HashSet<String> = index.shards.iter().map(|s| s.file.clone()).collect();
    for entry in std::fs::read_dir(&opts.out).map_err(io_err(&opts.out))? {
        let entry = entry.map_err(io_err(&opts.out))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `.tmp`: a shard being written when the collector died (`.partial` from older versions).
        let stale = name.ends_with(".tmp")
            || name.ends_with(".partial")
            || (name.starts_with("shard-") && !listed.contains(&name));
        if stale {
            std::fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
        }
    }
    Ok(index)
}

/// The first 60 characters of a prompt, for a message.
fn clip(text: &str) -> String {
    let mut out: String = text.chars().take(60).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Collects every prompt not yet in the index; `on_prompt` sees each finished prompt.
pub fn collect(
    teacher: &mut dyn Teacher,
    student_tok: &TextTokenizer,
    tok_hash: &str,
    opts: &CollectOptions,
    on_prompt: &mut dyn FnMut(&PromptEntry, &TraceIndex),
) -> Result<TraceIndex> {
    if opts.top_k == 0 || opts.top_k > 20 {
        return Err(KdError::Config(format!("--top-k {} is outside 1..=20 (the OpenAI API's limit)", opts.top_k)));
    }
    if !opts.template.contains("{prompt}") {
        return Err(KdError::Config(format!("the template `{}` has no {{prompt}} placeholder", opts.template)));
    }
    let mut index = open_index(opts, &teacher.describe(), tok_hash)?;
    let done = index.done();
    let todo: Vec<usize> = (0..opts.prompts.len()).filter(|i| !done.contains(&(*i as i64))).collect();
    // A teacher with the student's own tokenizer needs no projection: its ids are the student's.
    let by_id = teacher.tokenizer_hash().as_deref() == Some(tok_hash);
    let mut proj = Projector::new(student_tok, by_id);
    for chunk in todo.chunks(opts.prompts_per_shard.max(1)) {
        let shard = index.next_shard_name();
        let mut rows: Vec<TraceRow> = Vec::new();
        let mut entries = Vec::new();
        let mut stats = autoqat_traces::TraceStats::default();
        for &i in chunk {
            let text = &opts.prompts[i];
            let answer = teacher.answer(&opts.template.replace("{prompt}", text), opts.max_tokens, opts.top_k)?;
            let mut invalid = 0;
            for (step, pos) in answer.positions.iter().enumerate() {
                let p = project(pos, &mut proj, opts.top_k, i as i64, step as i32, &index.template_hash, tok_hash);
                let valid = p.row.is_valid();
                invalid += usize::from(!valid);
                stats.add(valid, p.other_mass, p.coverage);
                stats.clamped += usize::from(p.clamped);
                stats.duplicates += p.duplicates;
                stats.truncated += p.truncated;
                rows.push(p.row);
            }
            entries.push(PromptEntry {
                idx: i as i64,
                text: text.clone(),
                shard: shard.clone(),
                positions: answer.positions.len(),
                invalid,
            });
        }
        autoqat_traces::write_shard(&opts.out.join(&shard), &rows)?;
        index.stats.absorb(&stats);
        index.shards.push(ShardEntry { file: shard, rows: rows.len(), stats });
        index.prompts.extend(entries.iter().cloned());
        index.save(&opts.out)?;
        for e in &entries {
            on_prompt(e, &index);
        }
    }
    Ok(index)
}
