//! Shared HTTP for the API proposers: per-request timeout, retries with exponential backoff on
//! 429 (honouring Retry-After), 5xx, transport errors and unreadable bodies. The API key is
//! held in a `Secret` that never prints and is scrubbed from any error text.

use std::time::Duration;

use super::ProposerError;
use crate::settings::ProviderSettings;

/// An API key: Debug and Display never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Reads the key from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Secret, ProposerError> {
        if var.is_empty() {
            return Err(ProposerError::Config(
                "provider.api_key_env is empty; name the environment variable that holds the key".into(),
            ));
        }
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_string())),
            _ => Err(ProposerError::Config(format!(
                "environment variable {var} is not set; export your API key there (it is never written to disk)"
            ))),
        }
    }

    /// A key held by the caller (read from a keyring, or made up by a test).
    pub fn new(key: impl Into<String>) -> Secret {
        Secret(key.into().trim().to_string())
    }

    /// The key, for a request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A blocking client with retries.
pub struct Http {
    client: reqwest::blocking::Client,
    max_retries: u32,
    backoff: Duration,
    max_backoff: Duration,
    timeout: Duration,
}

impl Http {
    /// A client with the settings' timeout and retry policy.
    pub fn new(s: &ProviderSettings) -> Result<Http, ProposerError> {
        let timeout = Duration::from_secs_f64(s.timeout_s.max(0.001));
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ProposerError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Http {
            client,
            max_retries: s.max_retries,
            backoff: Duration::from_secs_f64(s.backoff_s.max(0.0)),
            max_backoff: Duration::from_secs_f64(s.max_backoff_s.max(0.0)),
            timeout,
        })
    }

    /// POSTs `body` in the first answer shape the server accepts: `apply` writes `shapes[0]`
    /// into the body, and a refusal of it ([`ProposerError::FormatRefused`]) drops it and tries
    /// the next, so the shape the server took stays in front for the rest of the run.
    pub fn post_json_shaped<S: Copy + std::fmt::Debug>(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &mut serde_json::Value,
        secret: &Secret,
        shapes: &mut Vec<S>,
        apply: impl Fn(&mut serde_json::Value, S),
    ) -> Result<serde_json::Value, ProposerError> {
        loop {
            let shape = shapes[0];
            apply(body, shape);
            match self.post_json(url, headers, body, secret) {
                Ok(v) => return Ok(v),
                Err(ProposerError::FormatRefused(m)) if shapes.len() > 1 => {
                    tracing::info!("the server refused the answer shape {shape:?}; trying the next ({m})");
                    shapes.remove(0);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// POSTs `body` as JSON and returns the parsed JSON answer, retrying what may pass.
    pub fn post_json(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &serde_json::Value,
        secret: &Secret,
    ) -> Result<serde_json::Value, ProposerError> {
        let mut attempt = 0u32;
        loop {
            let mut wait = self.backoff.saturating_mul(1u32 << attempt.min(16)).min(self.max_backoff);
            let mut req = self.client.post(url).json(body);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let err = match req.send() {
                Ok(resp) => {
                    let status = resp.status();
                    if let Some(ra) = retry_after(&resp) {
                        wait = ra.min(self.max_backoff);
                    }
                    let text = resp.text();
                    if status.is_success() {
                        match text {
                            // A body that stalls part-way fails while it is read, not as JSON.
                            Err(e) => format!(
                                "the response body stopped arriving (no complete answer within the request timeout of {:.0} s: {e})",
                                self.timeout.as_secs_f64()
                            ),
                            Ok(t) => match serde_json::from_str::<serde_json::Value>(&t) {
                                Ok(v) => return Ok(v),
                                Err(e) => format!("the response body is not valid JSON ({e})"),
                            },
                        }
                    } else {
                        let snippet: String = text.unwrap_or_default().chars().take(300).collect();
                        let msg = format!("HTTP {status}: {}", snippet.trim());
                        if status.as_u16() == 400 && is_context_error(&snippet) {
                            return Err(ProposerError::ContextTooLong(secret.scrub(&msg)));
                        }
                        let retryable = status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408;
                        if refuses_format(&snippet, retryable) {
                            return Err(ProposerError::FormatRefused(secret.scrub(&msg)));
                        }
                        if !retryable {
                            return Err(ProposerError::Failed(secret.scrub(&msg)));
                        }
                        msg
                    }
                }
                Err(e) if e.is_timeout() => format!("no answer within the request timeout ({e})"),
                Err(e) => format!("request failed: {e}"),
            };
            if attempt >= self.max_retries {
                return Err(ProposerError::Failed(
                    secret.scrub(&format!("{url}: giving up after {} attempts: {err}", attempt + 1)),
                ));
            }
            // This client serves the proposer and the KD teacher alike: name the server, not a role.
            tracing::warn!("request to {url} failed ({}); retrying in {:.1} s", secret.scrub(&err), wait.as_secs_f64());
            std::thread::sleep(wait);
            attempt += 1;
        }
    }
}

/// Whether an error body says the prompt is longer than the context, in the words the common
/// servers use: OpenAI (`context_length_exceeded`, "maximum context length"), vLLM ("maximum
/// context length", "is longer than the model"), llama.cpp ("exceed_context_size_error",
/// "exceeds the available context size"), Anthropic ("prompt is too long").
fn is_context_error(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    [
        "context_length_exceeded",
        "maximum context length",
        "context size",
        "context window",
        "exceed_context_size",
        "prompt is too long",
        "is longer than the model",
    ]
    .iter()
    .any(|p| b.contains(p))
}

/// Whether an error body refuses how the request asked for the answer's shape: OpenAI's
/// `response_format`, or Anthropic's `tools`/`tool_choice`. Not transient, whatever the status:
/// llama-cpp-python answers a `json_schema` it does not speak with a 500 that names
/// `response_format`; a client error that names `json_schema` or a tool counts too.
fn refuses_format(body: &str, retryable: bool) -> bool {
    if retryable {
        return body.contains("response_format");
    }
    let b = body.to_ascii_lowercase();
    b.contains("response_format") || b.contains("json_schema") || b.contains("tool")
}

/// Retry-After in seconds (the HTTP-date form is treated as absent).
fn retry_after(resp: &reqwest::blocking::Response) -> Option<Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?;
    v.trim().parse::<f64>().ok().filter(|s| *s >= 0.0).map(Duration::from_secs_f64)
}
