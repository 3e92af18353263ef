//! Any OpenAI-compatible chat completions endpoint (OpenAI, DeepSeek, OpenRouter, vLLM,
//! llama.cpp, Ollama).

use serde_json::json;

use super::http::{Http, Secret};
use super::{cost, Proposer, ProposerError, Reply, Request};
use crate::settings::ProviderSettings;

/// The `openai` proposer.
pub struct OpenAi {
    http: Http,
    secret: Secret,
    url: String,
    settings: ProviderSettings,
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
            http: Http::new(s)?,
            secret: Secret::from_env(var)?,
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            settings: s.clone(),
        })
    }
}

impl Proposer for OpenAi {
    fn propose(&mut self, req: &Request) -> Result<Reply, ProposerError> {
        let body = json!({
            "model": self.settings.model,
            "messages": [
                {"role": "system", "content": req.system},
                {"role": "user", "content": req.user},
            ],
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        });
        let headers = [("authorization", format!("Bearer {}", self.secret.expose()))];
        let v = self.http.post_json(&self.url, &headers, &body, &self.secret)?;
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
        })
    }
}
