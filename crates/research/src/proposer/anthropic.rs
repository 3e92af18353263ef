//! The Anthropic Messages API.

use serde_json::json;

use super::http::{Http, Secret};
use super::{cost, Proposer, ProposerError, Reply, Request};
use crate::settings::ProviderSettings;

/// The `anthropic` proposer.
pub struct Anthropic {
    http: Http,
    secret: Secret,
    url: String,
    settings: ProviderSettings,
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
            http: Http::new(s)?,
            secret: Secret::from_env(var)?,
            url: format!("{}/v1/messages", base.trim_end_matches('/')),
            settings: s.clone(),
        })
    }
}

impl Proposer for Anthropic {
    fn propose(&mut self, req: &Request) -> Result<Reply, ProposerError> {
        let body = json!({
            "model": self.settings.model,
            "max_tokens": self.settings.max_tokens,
            "temperature": self.settings.temperature,
            "system": req.system,
            "messages": [{"role": "user", "content": req.user}],
        });
        let headers =
            [("x-api-key", self.secret.expose().to_string()), ("anthropic-version", "2023-06-01".to_string())];
        let v = self.http.post_json(&self.url, &headers, &body, &self.secret)?;
        let parts =
            v["content"].as_array().ok_or_else(|| ProposerError::Failed("the answer has no `content` array".into()))?;
        let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("");
        let input = v["usage"]["input_tokens"].as_u64().unwrap_or(0);
        let output = v["usage"]["output_tokens"].as_u64().unwrap_or(0);
        Ok(Reply { text, input_tokens: input, output_tokens: output, cost_usd: cost(&self.settings, input, output) })
    }
}
