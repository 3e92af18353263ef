//! Teachers: an OpenAI-compatible chat-completions endpoint (through `autoqat-http`, the client
//! the research loop's proposers use too, so retries, Retry-After, timeouts and key scrubbing
//! are the same code), or a local Hugging Face checkpoint decoded greedily with tch, so the
//! whole track runs offline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autoqat_http::{Http, HttpSettings, Secret};
use autoqat_model::{greedy_decode, load_causal_lm, stop_ids, LoadedModel, PlainBuilder, TextTokenizer};
use serde_json::json;
use tch::{Device, Kind};

use crate::error::{KdError, Result};
use crate::project::TeacherPosition;

/// One deterministic answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The answer text.
    pub text: String,
    /// Per generated token: bytes and log-probabilities (empty when not asked for).
    pub positions: Vec<TeacherPosition>,
    /// Prompt tokens as the teacher counts them.
    pub prompt_tokens: u64,
    /// Generated tokens as the teacher counts them.
    pub completion_tokens: u64,
    /// Seconds from request to full answer.
    pub latency_s: f64,
}

/// Something that answers prompts greedily.
pub trait Teacher {
    /// A description for indexes and reports (never a key).
    fn describe(&self) -> String;
    /// Answers `prompt` with at most `max_tokens` tokens, with the `top_k` alternatives of each
    /// position (0: no log-probabilities).
    fn answer(&mut self, prompt: &str, max_tokens: usize, top_k: usize) -> Result<Answer>;
    /// The hash of the teacher's `tokenizer.json` when it is known and the teacher reports token
    /// ids (a local checkpoint): positions then map by id onto a student with the same hash.
    fn tokenizer_hash(&self) -> Option<String> {
        None
    }
}

/// How to reach a teacher, parsed from `openai:<model>` or `local:<dir>`.
#[derive(Debug, Clone, PartialEq)]
pub enum TeacherSpec {
    /// An OpenAI-compatible endpoint serving `model`.
    OpenAi {
        /// Model name sent to the API.
        model: String,
    },
    /// A local checkpoint directory.
    Local(PathBuf),
}

impl std::str::FromStr for TeacherSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once(':') {
            Some(("openai", m)) if !m.is_empty() => Ok(TeacherSpec::OpenAi { model: m.to_string() }),
            Some(("local", d)) if !d.is_empty() => Ok(TeacherSpec::Local(PathBuf::from(d))),
            _ => Err(format!("`{s}` is not a teacher; use openai:<model> (with --base-url) or local:<hf-dir>")),
        }
    }
}

/// Where and how to reach an OpenAI-compatible teacher.
#[derive(Debug, Clone, Default)]
pub struct OpenAiSettings {
    /// Model name sent to the API.
    pub model: String,
    /// Base URL; empty: `https://api.openai.com/v1`.
    pub base_url: String,
    /// Name of the environment variable that holds the API key (never the key itself); empty:
    /// `OPENAI_API_KEY`.
    pub api_key_env: String,
    /// The client's timeout and retry policy.
    pub http: HttpSettings,
}

/// The OpenAI-compatible teacher.
pub struct OpenAiTeacher {
    http: Http,
    secret: Secret,
    url: String,
    model: String,
    min_interval: Duration,
    last: Option<Instant>,
}

impl OpenAiTeacher {
    /// A client for `settings.model` at `settings.base_url`, the key read from
    /// `settings.api_key_env`, at most one request per `min_interval_s`.
    pub fn new(settings: &OpenAiSettings, min_interval_s: f64) -> Result<Self> {
        let var = if settings.api_key_env.is_empty() { "OPENAI_API_KEY" } else { &settings.api_key_env };
        let secret = Secret::from_env(var)?;
        Self::with_secret(settings, secret, min_interval_s)
    }

    /// As [`OpenAiTeacher::new`] with the key given rather than read from the environment.
    pub fn with_secret(settings: &OpenAiSettings, secret: Secret, min_interval_s: f64) -> Result<Self> {
        let base = if settings.base_url.is_empty() { "https://api.openai.com/v1" } else { &settings.base_url };
        Ok(OpenAiTeacher {
            http: Http::new(&settings.http)?,
            secret,
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            model: settings.model.clone(),
            min_interval: Duration::from_secs_f64(min_interval_s.max(0.0)),
            last: None,
        })
    }
}

/// Bytes of one logprobs entry: its `bytes` array when the server sends one (exact, even for a
/// piece of a multi-byte character), else its `token` text (where a server that lost the bytes
/// writes U+FFFD, which the projection treats as unmappable).
fn entry_bytes(v: &serde_json::Value) -> Option<Vec<u8>> {
    if let Some(arr) = v["bytes"].as_array() {
        return arr.iter().map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect();
    }
    v["token"].as_str().map(|s| s.as_bytes().to_vec())
}

/// Log-probabilities above this are not rounding of 0 but a broken server.
const POSITIVE_LOGPROB: f64 = 1e-6;

/// The log-probability of one entry, refusing a positive one (a server that returns those
/// sends numbers that are not log-probabilities, and every row built on them would be wrong).
fn entry_logprob(v: &serde_json::Value, server: &str) -> Option<Result<f64>> {
    let lp = v["logprob"].as_f64()?;
    Some(if lp > POSITIVE_LOGPROB {
        Err(KdError::Teacher(format!(
            "the teacher at {server} returned a positive log-probability ({lp}) for token {:?}; log-probabilities are at most 0, so its logprobs cannot be used (check the server or its version)",
            v["token"].as_str().unwrap_or("?")
        )))
    } else {
        Ok(lp.min(0.0))
    })
}

/// The positions of `choices[0].logprobs.content`, as `server` sent them.
fn parse_positions(v: &serde_json::Value, server: &str) -> Result<Vec<TeacherPosition>> {
    let bad = |what: &str| {
        KdError::Teacher(format!(
            "the answer's logprobs are malformed ({what}); does the server support logprobs/top_logprobs?"
        ))
    };
    let Some(content) = v["choices"][0]["logprobs"]["content"].as_array() else {
        return Err(bad("no choices[0].logprobs.content"));
    };
    content
        .iter()
        .map(|e| {
            let sample = entry_bytes(e).ok_or_else(|| bad("an entry without token or bytes"))?;
            let sample_logprob = entry_logprob(e, server).ok_or_else(|| bad("an entry without logprob"))??;
            let top = e["top_logprobs"]
                .as_array()
                .ok_or_else(|| bad("an entry without top_logprobs"))?
                .iter()
                .map(|t| {
                    let bytes = entry_bytes(t).ok_or_else(|| bad("a top_logprobs entry without token"))?;
                    let lp = entry_logprob(t, server).ok_or_else(|| bad("a top_logprobs entry without logprob"))??;
                    Ok((bytes, lp))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(TeacherPosition { sample, sample_logprob, top, ids: None })
        })
        .collect()
}

impl Teacher for OpenAiTeacher {
    fn describe(&self) -> String {
        format!("openai:{} @ {}", self.model, self.url)
    }

    fn answer(&mut self, prompt: &str, max_tokens: usize, top_k: usize) -> Result<Answer> {
        if let Some(last) = self.last {
            let since = last.elapsed();
            if since < self.min_interval {
                std::thread::sleep(self.min_interval - since);
            }
        }
        self.last = Some(Instant::now());
        let mut body = json!({
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "max_tokens": max_tokens,
        });
        if top_k > 0 {
            body["logprobs"] = json!(true);
            body["top_logprobs"] = json!(top_k);
        }
        let headers = [("authorization", format!("Bearer {}", self.secret.expose()))];
        let start = Instant::now();
        let v = self.http.post_json(&self.url, &headers, &body, &self.secret)?;
        let latency_s = start.elapsed().as_secs_f64();
        let text = v["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| KdError::Teacher("the answer has no choices[0].message.content".into()))?
            .to_string();
        let positions = if top_k > 0 { parse_positions(&v, &self.url)? } else { Vec::new() };
        // A server may echo the request (its Authorization header included) into its answer:
        // nothing of the key may reach a trace or a report.
        let (text, positions) = scrub_answer(&self.secret, text, positions);
        Ok(Answer {
            text,
            prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
            completion_tokens: v["usage"]["completion_tokens"].as_u64().unwrap_or(positions.len() as u64),
            positions,
            latency_s,
        })
    }
}

/// `text` and `positions` with the key removed: from the text, from every token, and from every
/// run of consecutive sampled tokens that spells it (each of those tokens is blanked, so the
/// projection marks them unmappable).
fn scrub_answer(secret: &Secret, text: String, mut positions: Vec<TeacherPosition>) -> (String, Vec<TeacherPosition>) {
    let key = secret.expose().as_bytes();
    if key.len() < 4 {
        return (text, positions);
    }
    let joined: Vec<u8> = positions.iter().flat_map(|p| p.sample.iter().copied()).collect();
    let mut hit = vec![false; joined.len()];
    for start in 0..joined.len().saturating_sub(key.len() - 1) {
        if joined[start..].starts_with(key) {
            hit[start..start + key.len()].iter_mut().for_each(|h| *h = true);
        }
    }
    let mut at = 0;
    let redacted = b"[redacted]".to_vec();
    let scrub_bytes = |b: &[u8]| secret.scrub(&String::from_utf8_lossy(b)).into_bytes();
    for p in &mut positions {
        let span = at..at + p.sample.len();
        at = span.end;
        if hit[span].iter().any(|&h| h) {
            p.sample.clone_from(&redacted);
            p.top.clear();
        } else if p.sample.windows(key.len()).any(|w| w == key) {
            p.sample = scrub_bytes(&p.sample);
        }
        for (bytes, _) in &mut p.top {
            if bytes.windows(key.len()).any(|w| w == key) {
                *bytes = scrub_bytes(bytes);
            }
        }
    }
    (secret.scrub(&text), positions)
}

/// A local checkpoint answering with greedy decoding.
pub struct LocalTeacher {
    loaded: LoadedModel,
    tok: TextTokenizer,
    tok_hash: Option<String>,
    bytes: Vec<Vec<u8>>,
    stop: Vec<i64>,
    device: Device,
}

impl LocalTeacher {
    /// Loads `dir` (full precision) on `device`.
    pub fn new(dir: &Path, device: Device) -> Result<Self> {
        let loaded = load_causal_lm(&dir.to_string_lossy(), device, Kind::Float, &PlainBuilder)?;
        let tok = TextTokenizer::from_path(&loaded.dir)?;
        let stop = stop_ids(&loaded.dir);
        let bytes = token_bytes_table(&tok);
        let tok_hash = autoqat_traces::tokenizer_hash(&loaded.dir).ok();
        Ok(LocalTeacher { loaded, tok, tok_hash, bytes, stop, device })
    }

    /// The teacher's tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tok
    }

    /// The bytes of token `id` (ids beyond the tokenizer, which a padded embedding can
    /// produce, have none).
    fn token(&self, id: i64) -> Vec<u8> {
        usize::try_from(id).ok().and_then(|i| self.bytes.get(i)).cloned().unwrap_or_default()
    }
}

/// The GPT-2 byte-level alphabet: byte -> the char a byte-level BPE writes for it.
pub(crate) fn byte_level_char(b: u8) -> char {
    let printable = (b'!'..=b'~').contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    if printable {
        return char::from(b);
    }
    // Unprintable bytes take the code points from 256 upwards, in byte order.
    let rank = (0..b)
        .filter(|&x| !((b'!'..=b'~').contains(&x) || (0xa1..=0xac).contains(&x) || (0xae..=0xff).contains(&x)))
        .count();
    char::from_u32(256 + rank as u32).unwrap_or('\u{fffd}')
}

/// The exact bytes of every token id of `tok`, index = id: through the byte-level alphabet
/// when a token is written in it (so a piece of a multi-byte character keeps its bytes), its
/// literal text for an added token, else its decoded text. A decode step looks its tokens up
/// here instead of asking the tokenizer, whose added-token map is rebuilt on every call.
pub fn token_bytes_table(tok: &TextTokenizer) -> Vec<Vec<u8>> {
    let inner = tok.inner();
    let added: std::collections::HashMap<u32, String> =
        inner.get_added_tokens_decoder().into_iter().map(|(id, t)| (id, t.content)).collect();
    let inverse: std::collections::HashMap<char, u8> = (0..=255u8).map(|b| (byte_level_char(b), b)).collect();
    (0..tok.vocab_size() as u32)
        .map(|id| {
            if let Some(content) = added.get(&id) {
                return content.clone().into_bytes();
            }
            let byte_level =
                inner.id_to_token(id).and_then(|piece| piece.chars().map(|c| inverse.get(&c).copied()).collect());
            byte_level.unwrap_or_else(|| inner.decode(&[id], false).unwrap_or_default().into_bytes())
        })
        .collect()
}

impl Teacher for LocalTeacher {
    fn describe(&self) -> String {
        format!("local:{}", self.loaded.dir.display())
    }

    fn tokenizer_hash(&self) -> Option<String> {
        self.tok_hash.clone()
    }

    fn answer(&mut self, prompt: &str, max_tokens: usize, top_k: usize) -> Result<Answer> {
        let ids = self.tok.encode(prompt)?;
        let out = greedy_decode(&self.loaded.model, &ids, max_tokens, &self.stop, top_k, self.device)?;
        let generated: Vec<u32> = out.steps.iter().map(|s| s.id as u32).collect();
        let text = self.tok.inner().decode(&generated, true).unwrap_or_default();
        let positions = if top_k == 0 {
            Vec::new()
        } else {
            out.steps
                .iter()
                .map(|s| TeacherPosition {
                    sample: self.token(s.id),
                    sample_logprob: s.logprob,
                    top: s.top.iter().map(|&(i, lp)| (self.token(i), lp)).collect(),
                    ids: Some((s.id, s.top.iter().map(|&(i, _)| i).collect())),
                })
                .collect()
        };
        Ok(Answer {
            text,
            positions,
            prompt_tokens: ids.len() as u64,
            completion_tokens: out.steps.len() as u64,
            latency_s: out.total_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_level_alphabet_is_a_bijection_with_gpt2_landmarks() {
        let chars: std::collections::HashSet<char> = (0..=255u8).map(byte_level_char).collect();
        assert_eq!(chars.len(), 256);
        assert_eq!(byte_level_char(b' '), 'Ġ');
        assert_eq!(byte_level_char(b'\n'), 'Ċ');
        assert_eq!(byte_level_char(b'a'), 'a');
    }

    #[test]
    fn teacher_specs_parse_or_say_how() {
        assert_eq!(
            "openai:gpt-4o-mini".parse::<TeacherSpec>(),
            Ok(TeacherSpec::OpenAi { model: "gpt-4o-mini".into() })
        );
        assert_eq!("local:/m".parse::<TeacherSpec>(), Ok(TeacherSpec::Local("/m".into())));
        assert!("gpt".parse::<TeacherSpec>().unwrap_err().contains("openai:<model>"));
    }
}
