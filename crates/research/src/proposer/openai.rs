//! Any OpenAI-compatible chat completions endpoint (OpenAI, DeepSeek, OpenRouter, vLLM,
//! llama.cpp, Ollama).

use autoqat_http::{Http, Secret};
use serde_json::json;

use super::{cost, Proposer, ProposerError, Reply, Request};
use crate::settings::ProviderSettings;

/// How the answer's shape is asked for; servers differ in the dialect they accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// OpenAI's `{"type": "json_schema", "json_schema": {...}}` (OpenAI, vLLM, llama.cpp's server).
    JsonSchema,
    /// `{"type": "json_object", "schema": {...}}` (llama-cpp-python, which refuses `json_schema`).
    JsonObject,
    /// Free text; the answer parser finds the JSON in it.
    Text,
}

/// The proposal's JSON Schema (what `answer::parse` reads); the `anthropic` proposer sends it too.
pub(super) fn proposal_schema() -> serde_json::Value {
    let text = json!({"type": "string"});
    json!({
        "type": "object",
        "properties": {
            "description": text,
            "rationale": text,
            "edits": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"path": text, "search": text, "replace": text},
                    "required": ["path", "search", "replace"]
                }
            }
        },
        "required": ["description", "rationale", "edits"]
    })
}

/// The `openai` proposer.
pub struct OpenAi {
    http: Http,
    secret: Secret,
    url: String,
    settings: ProviderSettings,
    /// Dialects still to try, best first; the first one the server accepted stays in front.
    shapes: Vec<Shape>,
}

impl OpenAi {
    /// Reads the key from `api_key_env` (default OPENAI_API_KEY).
    pub fn new(s: &ProviderSettings) -> Result<OpenAi, ProposerError> {
        let var = if s.api_key_env.is_empty() { "OPENAI_API_KEY" } else { &s.api_key_env };
        let base = if s.base_url.is_empty() { "https://api.openai.com/v1" } else { &s.base_url };
        if s.model.is_empty() {
            return Err(ProposerError::Config("provider.model is empty; name the model to ask".into()));
        }
        Ok(OpenAi {
            http: Http::new(&s.http())?,
            secret: Secret::from_env(var)?,
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            settings: s.clone(),
            shapes: match s.structured_output.as_str() {
                "json_schema" => vec![Shape::JsonSchema],
                "json_object" => vec![Shape::JsonObject],
                "off" => vec![Shape::Text],
                _ => vec![Shape::JsonSchema, Shape::JsonObject, Shape::Text],
            },
        })
    }
}

impl Proposer for OpenAi {
    fn propose(&mut self, req: &Request) -> Result<Reply, ProposerError> {
        let mut body = json!({
            "model": self.settings.model,
            "messages": [
                {"role": "system", "content": req.system},
                {"role": "user", "content": req.user},
            ],
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        });
        let headers = [("authorization", format!("Bearer {}", self.secret.expose()))];
        let v = self.http.post_json_shaped(
            &self.url,
            &headers,
            &mut body,
            &self.secret,
            &mut self.shapes,
            |body, shape| match shape {
                Shape::JsonSchema => {
                    body["response_format"] =
                        json!({"type": "json_schema", "json_schema": {"name": "proposal", "schema": proposal_schema()}})
                }
                Shape::JsonObject => {
                    body["response_format"] = json!({"type": "json_object", "schema": proposal_schema()})
                }
                Shape::Text => {
                    if let Some(m) = body.as_object_mut() {
                        m.remove("response_format");
                    }
                }
            },
        )?;
        let text = v["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| ProposerError::Failed("the answer has no choices[0].message.content".into()))?;
        let input = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        let output = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
        Ok(Reply {
            text: text.to_string(),
            input_tokens: input,
            output_tokens: output,
            cost_usd: cost(&self.settings, input, output),
            truncated: v["choices"][0]["finish_reason"] == "length",
        })
    }
}
