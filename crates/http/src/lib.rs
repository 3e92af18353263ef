//! autoqat-http: the one HTTP client of autoqat, shared by the research loop's API proposers
//! (`autoqat-research`) and the distillation-traces track's API teacher (`autoqat-kd`):
//! per-request timeout, retries with exponential backoff on 429 (honouring Retry-After), 5xx,
//! transport errors and unreadable bodies. The API key is held in a [`Secret`] that never
//! prints (Debug shows `Secret([redacted])`, there is no Display) and is scrubbed from any
//! error or log text.
//!
//! It knows nothing of either caller: [`HttpSettings`] holds only the client's timeout and retry
//! policy (each caller converts its own settings at its edge), and [`HttpError`] converts into
//! the caller's error.

use std::time::Duration;

/// Why a request gave no answer. Every message has been scrubbed of the key.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Settings or environment are wrong (missing key, a client that cannot be built);
    /// retrying will not help.
    #[error("{0}")]
    Config(String),
    /// The service failed after all retries, or refused the request outright.
    #[error("{0}")]
    Failed(String),
    /// The server refused the prompt as longer than the model's context (HTTP 400 with a
    /// context-length message, which is kept: it usually names both token counts).
    #[error("{0}")]
    ContextTooLong(String),
    /// The server refused how the request asked for the answer's shape (`response_format`,
    /// Anthropic's `tools`): the same request without it, or in another dialect, may pass.
    #[error("{0}")]
    FormatRefused(String),
}

/// The client's timeout and retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Per-request timeout in seconds.
    pub timeout_s: f64,
    /// Retries on 429, 408, 5xx, transport errors and unreadable bodies.
    pub max_retries: u32,
    /// First backoff in seconds; doubled on each retry unless Retry-After says otherwise.
    pub backoff_s: f64,
    /// Longest wait (backoff or Retry-After) in seconds.
    pub max_backoff_s: f64,
}

impl Default for HttpSettings {
    /// The research loop's `[provider]` defaults: 120 s, 4 retries, 2 s doubling up to 120 s.
    fn default() -> Self {
        HttpSettings { timeout_s: 120.0, max_retries: 4, backoff_s: 2.0, max_backoff_s: 120.0 }
    }
}

/// An API key: Debug and Display never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Reads the key from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Secret, HttpError> {
        if var.is_empty() {
            return Err(HttpError::Config(
                "provider.api_key_env is empty; name the environment variable that holds the key".into(),
            ));
        }
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_string())),
            _ => Err(HttpError::Config(format!(
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
    pub fn new(s: &HttpSettings) -> Result<Http, HttpError> {
        let timeout = Duration::from_secs_f64(s.timeout_s.max(0.001));
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| HttpError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Http {
            client,
            max_retries: s.max_retries,
            backoff: Duration::from_secs_f64(s.backoff_s.max(0.0)),
            max_backoff: Duration::from_secs_f64(s.max_backoff_s.max(0.0)),
            timeout,
        })
    }

    /// POSTs `body` in the first answer shape the server accepts: `apply` writes `shapes[0]`
    /// into the body, and a refusal of it ([`HttpError::FormatRefused`]) drops it and tries
    /// the next, so the shape the server took stays in front for the rest of the run.
    pub fn post_json_shaped<S: Copy + std::fmt::Debug>(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &mut serde_json::Value,
        secret: &Secret,
        shapes: &mut Vec<S>,
        apply: impl Fn(&mut serde_json::Value, S),
    ) -> Result<serde_json::Value, HttpError> {
        loop {
            let shape = shapes[0];
            apply(body, shape);
            match self.post_json(url, headers, body, secret) {
                Ok(v) => return Ok(v),
                Err(HttpError::FormatRefused(m)) if shapes.len() > 1 => {
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
    ) -> Result<serde_json::Value, HttpError> {
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
                            return Err(HttpError::ContextTooLong(secret.scrub(&msg)));
                        }
                        let retryable = status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408;
                        if refuses_format(&snippet, retryable) {
                            return Err(HttpError::FormatRefused(secret.scrub(&msg)));
                        }
                        if !retryable {
                            return Err(HttpError::Failed(secret.scrub(&msg)));
                        }
                        msg
                    }
                }
                Err(e) if e.is_timeout() => format!("no answer within the request timeout ({e})"),
                Err(e) => format!("request failed: {e}"),
            };
            if attempt >= self.max_retries {
                return Err(HttpError::Failed(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    const KEY: &str = "sk-test-0123456789ABCDEF";

    /// A server on localhost answering each connection with the next of `replies` (status line
    /// and body), then closing it. Returns its URL.
    fn serve(replies: Vec<(&'static str, String)>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/x", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for (status, body) in replies {
                let Ok((stream, _)) = listener.accept() else { return };
                let mut reader = BufReader::new(stream);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut req_body = vec![0u8; len];
                let _ = reader.read_exact(&mut req_body);
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    fn quick(max_retries: u32) -> HttpSettings {
        HttpSettings { timeout_s: 10.0, max_retries, backoff_s: 0.01, max_backoff_s: 0.05 }
    }

    #[test]
    fn a_secret_never_prints_and_is_scrubbed() {
        let s = Secret::new(format!("  {KEY}\n"));
        assert_eq!(s.expose(), KEY, "the key is trimmed");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(Secret([redacted]))");
        assert_eq!(s.scrub(&format!("Bearer {KEY}, again {KEY}")), "Bearer [redacted], again [redacted]");
        // A key too short to be one is not scrubbed (it would blank ordinary text).
        assert_eq!(Secret::new("abc").scrub("abcabc"), "abcabc");
    }

    #[test]
    fn a_missing_key_names_the_variable_never_a_value() {
        let var = "AUTOQAT_HTTP_TEST_SURELY_UNSET_VAR";
        let e = Secret::from_env(var).unwrap_err();
        assert!(matches!(e, HttpError::Config(_)));
        assert!(e.to_string().contains(var), "{e}");
        assert!(matches!(Secret::from_env(""), Err(HttpError::Config(_))));
    }

    #[test]
    fn a_server_error_is_retried_then_the_answer_is_returned() {
        let url = serve(vec![("500 Internal Server Error", "{}".into()), ("200 OK", r#"{"ok": 1}"#.into())]);
        let http = Http::new(&quick(2)).unwrap();
        let v = http.post_json(&url, &[], &serde_json::json!({"q": 1}), &Secret::new(KEY)).unwrap();
        assert_eq!(v["ok"], 1);
    }

    #[test]
    fn retries_run_out_with_a_clear_error_without_the_key() {
        let echo = format!(r#"{{"error": "bad gateway for Bearer {KEY}"}}"#);
        let url = serve(vec![("502 Bad Gateway", echo.clone()), ("502 Bad Gateway", echo)]);
        let http = Http::new(&quick(1)).unwrap();
        let e = http.post_json(&url, &[], &serde_json::json!({}), &Secret::new(KEY)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, HttpError::Failed(_)), "{e:?}");
        assert!(msg.contains("giving up after 2 attempts") && msg.contains("502"), "{msg}");
        assert!(!msg.contains(KEY) && msg.contains("[redacted]"), "{msg}");
        assert!(!format!("{e:?}").contains(KEY));
    }

    #[test]
    fn client_errors_fail_fast_and_are_classified() {
        let url = serve(vec![("401 Unauthorized", format!(r#"{{"error": "invalid key {KEY}"}}"#))]);
        let http = Http::new(&quick(3)).unwrap();
        let e = http.post_json(&url, &[], &serde_json::json!({}), &Secret::new(KEY)).unwrap_err();
        assert!(matches!(e, HttpError::Failed(_)) && !e.to_string().contains(KEY), "{e:?}");

        let url = serve(vec![(
            "400 Bad Request",
            r#"{"error": {"code": "context_length_exceeded", "message": "maximum context length is 8192"}}"#.into(),
        )]);
        let e = http.post_json(&url, &[], &serde_json::json!({}), &Secret::new(KEY)).unwrap_err();
        assert!(matches!(e, HttpError::ContextTooLong(_)), "{e:?}");
    }

    #[test]
    fn a_refused_shape_falls_back_to_the_next_and_stays_there() {
        let url = serve(vec![
            ("400 Bad Request", r#"{"error": "unknown field response_format"}"#.into()),
            ("200 OK", r#"{"ok": 2}"#.into()),
        ]);
        let http = Http::new(&quick(0)).unwrap();
        let mut shapes = vec![1u8, 2u8];
        let mut body = serde_json::json!({});
        let v = http
            .post_json_shaped(&url, &[], &mut body, &Secret::new(KEY), &mut shapes, |b, s| b["shape"] = s.into())
            .unwrap();
        assert_eq!(v["ok"], 2);
        assert_eq!(shapes, vec![2u8]);
        assert_eq!(body["shape"], 2);
    }

    #[test]
    fn error_bodies_are_read_in_the_common_servers_words() {
        assert!(is_context_error("This model's maximum context length is 4096 tokens"));
        assert!(is_context_error(r#"{"type":"exceed_context_size_error"}"#));
        assert!(is_context_error("prompt is too long: 300000 tokens"));
        assert!(!is_context_error("rate limited"));
        assert!(refuses_format("response_format is not supported", true));
        assert!(!refuses_format("json_schema", true), "a transient error naming json_schema is retried");
        assert!(refuses_format("tools are not supported", false));
        assert!(!refuses_format("invalid api key", false));
    }
}
