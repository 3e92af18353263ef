//! The Anthropic Messages API. With `provider.structured_output` other than `off`, the proposal
//! is asked for as the input of a forced `propose` tool whose `input_schema` is the proposal's
//! JSON Schema; a server that refuses tools is asked in free text for the rest of the run.

use autoqat_http::{Http, Secret};
use serde_json::json;

use super::openai::proposal_schema;
use super::{cost, Proposer, ProposerError, Reply, Request};
use crate::settings::ProviderSettings;

/// The tool the model is made to call; its input is the proposal.
const TOOL: &str = "propose";

/// How the answer's shape is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `tools` with the proposal schema and `tool_choice` forcing it.
    Tool,
    /// Free text; the answer parser finds the JSON in it.
    Text,
}

/// The `anthropic` proposer.
pub struct Anthropic {
    http: Http,
    secret: Secret,
    url: String,
    settings: ProviderSettings,
    /// Shapes still to try, best first; the first one the server accepted stays in front.
    shapes: Vec<Shape>,
}

impl Anthropic {
    /// Reads the key from `api_key_env` (default ANTHROPIC_API_KEY).
    pub fn new(s: &ProviderSettings) -> Result<Anthropic, ProposerError> {
        let var = if s.api_key_env.is_empty() { "ANTHROPIC_API_KEY" } else { &s.api_key_env };
        let base = if s.base_url.is_empty() { "https://api.anthropic.com" } else { &s.base_url };
        if s.model.is_empty() {
            return Err(ProposerError::Config("provider.model is empty; name the model to ask".into()));
        }
        Ok(Anthropic {
            http: Http::new(&s.http())?,
            secret: Secret::from_env(var)?,
            url: format!("{}/v1/messages", base.trim_end_matches('/')),
            settings: s.clone(),
            shapes: match s.structured_output.as_str() {
                "off" => vec![Shape::Text],
                // `json_schema` and `json_object` (OpenAI's dialect names) insist on the tool.
                "json_schema" | "json_object" => vec![Shape::Tool],
                _ => vec![Shape::Tool, Shape::Text],
            },
        })
    }
}

impl Proposer for Anthropic {
    fn propose(&mut self, req: &Request) -> Result<Reply, ProposerError> {
        let mut body = json!({
            "model": self.settings.model,
            "max_tokens": self.settings.max_tokens,
            "temperature": self.settings.temperature,
            "system": req.system,
            "messages": [{"role": "user", "content": req.user}],
        });
        let headers =
            [("x-api-key", self.secret.expose().to_string()), ("anthropic-version", "2023-06-01".to_string())];
        let v = self.http.post_json_shaped(
            &self.url,
            &headers,
            &mut body,
            &self.secret,
            &mut self.shapes,
            |body, shape| {
                let Some(m) = body.as_object_mut() else { return };
                match shape {
                    Shape::Tool => {
                        m.insert(
                            "tools".into(),
                            json!([{
                                "name": TOOL,
                                "description": "Propose one experiment: a one-line description, the rationale, \
                                                and search/replace edits of the mutable files.",
                                "input_schema": proposal_schema(),
                            }]),
                        );
                        m.insert("tool_choice".into(), json!({"type": "tool", "name": TOOL}));
                    }
                    Shape::Text => {
                        m.remove("tools");
                        m.remove("tool_choice");
                    }
                }
            },
        )?;
        let parts =
            v["content"].as_array().ok_or_else(|| ProposerError::Failed("the answer has no `content` array".into()))?;
        // The tool's input is the proposal; a server that answered in text anyway still counts.
        let text = match parts.iter().find(|p| p["type"] == "tool_use") {
            Some(p) => serde_json::to_string(&p["input"])
                .map_err(|e| ProposerError::Failed(format!("the tool_use input does not serialize: {e}")))?,
            None => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""),
        };
        let input = v["usage"]["input_tokens"].as_u64().unwrap_or(0);
        let output = v["usage"]["output_tokens"].as_u64().unwrap_or(0);
        Ok(Reply {
            text,
            input_tokens: input,
            output_tokens: output,
            cost_usd: cost(&self.settings, input, output),
            truncated: v["stop_reason"] == "max_tokens",
        })
    }
}
