//! Proposers: who suggests the next edit. `openai` and `anthropic` speak HTTP APIs (through
//! `autoqat-http`'s client), `command` runs a program (prompt on stdin, answer on stdout),
//! `builtin` searches the schema's values.

pub mod anthropic;
pub mod builtin;
pub mod command;
pub mod openai;
pub mod tpe;

use std::collections::{BTreeMap, HashSet};

use autoqat_recipe::Schema;
use serde_json::Value;

use crate::results::{Record, Status};
use crate::settings::ProviderSettings;

/// Why a proposer gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProposerError {
    /// Settings or environment are wrong (missing key, bad URL); retrying will not help.
    #[error("{0}")]
    Config(String),
    /// The service failed after all retries.
    #[error("{0}")]
    Failed(String),
    /// The builtin search has nothing left to try.
    #[error("{0}")]
    Exhausted(String),
    /// The server refused the prompt as longer than the model's context (HTTP 400 with a
    /// context-length message, which is kept: it usually names both token counts). A shorter
    /// prompt may pass; the same one never will.
    #[error("{0}")]
    ContextTooLong(String),
    /// The server refused how the request asked for the answer's shape (`response_format`,
    /// Anthropic's `tools`): it speaks another dialect, or none; the same request without it,
    /// or in another dialect, may pass.
    #[error("{0}")]
    FormatRefused(String),
}

// Each kind of HTTP failure is the proposer failure of the same name.
impl From<autoqat_http::HttpError> for ProposerError {
    fn from(e: autoqat_http::HttpError) -> Self {
        use autoqat_http::HttpError as H;
        match e {
            H::Config(m) => ProposerError::Config(m),
            H::Failed(m) => ProposerError::Failed(m),
            H::ContextTooLong(m) => ProposerError::ContextTooLong(m),
            H::FormatRefused(m) => ProposerError::FormatRefused(m),
        }
    }
}

/// What the proposer sees besides the prompt text (the builtin one uses only this).
pub struct Context<'a> {
    /// The recipe schema, when a validator declares one.
    pub schema: Option<&'a Schema>,
    /// How the recipe is read and edited (TOML keys, or a Python file's constants).
    pub format: crate::validate::Format,
    /// Workspace-relative path of the recipe.
    pub recipe_path: &'a str,
    /// Current recipe text (the best so far).
    pub recipe: &'a str,
    /// Finished experiments, by exp.
    pub records: &'a [Record],
    /// Fingerprints of edits already tried.
    pub tried: &'a HashSet<String>,
    /// Every finished experiment read through the schema (empty without one).
    pub observations: &'a [Observation],
    /// The focus limit: most changed lines one proposal may have.
    pub max_changed_lines: usize,
}

/// One finished experiment as a search sees it: what its recipe meant and how it scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Experiment number.
    pub exp: u32,
    /// Outcome.
    pub status: Status,
    /// Its eval PPL (the mean with the second seed's when confirmed); for a pruned trial the
    /// last point of its eval curve; `None` when it failed.
    pub ppl: Option<f64>,
    /// Every key of its recipe, defaults filled in ([`crate::validate::recipe_values`]).
    pub values: BTreeMap<String, Value>,
    /// The keys whose values differ from its parent's recipe, with their new values.
    pub changed: Vec<(String, Value)>,
    /// Recorded as a near miss.
    pub near_miss: bool,
}

/// One request: the rendered prompt and its context.
pub struct Request<'a> {
    /// System prompt.
    pub system: String,
    /// User prompt.
    pub user: String,
    /// Set in the repair round: the reason the previous answer was rejected.
    pub repair: Option<String>,
    /// Structured context.
    pub ctx: Context<'a>,
}

/// An answer and what it cost.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// The raw answer text.
    pub text: String,
    /// Input tokens billed.
    pub input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
    /// US dollars.
    pub cost_usd: f64,
    /// The answer stopped at `provider.max_tokens`, not at its end.
    pub truncated: bool,
}

/// Something that proposes edits.
pub trait Proposer {
    /// Asks for one proposal.
    fn propose(&mut self, req: &Request) -> Result<Reply, ProposerError>;
}

/// Builds the proposer named by `settings.kind`.
pub fn make(settings: &ProviderSettings) -> Result<Box<dyn Proposer>, ProposerError> {
    match settings.kind.as_str() {
        "openai" => Ok(Box::new(openai::OpenAi::new(settings)?)),
        "anthropic" => Ok(Box::new(anthropic::Anthropic::new(settings)?)),
        "command" => Ok(Box::new(command::CommandProposer::new(settings)?)),
        "builtin" => Ok(Box::new(builtin::Builtin::new(settings.seed))),
        other => Err(ProposerError::Config(format!(
            "unknown provider `{other}`; expected openai, anthropic, command or builtin"
        ))),
    }
}

/// US dollars for a token count at the configured prices.
pub fn cost(settings: &ProviderSettings, input: u64, output: u64) -> f64 {
    (input as f64 * settings.price_in_per_mtok + output as f64 * settings.price_out_per_mtok) / 1e6
}
