//! The real data sets from the Hugging Face Hub: TinyStories (a plain-text file in the dataset
//! repo, through `hf-hub` and its cache) and WikiText-2 raw test (rows from the Hub's dataset
//! viewer API, since the repo itself holds only parquet).

use std::path::PathBuf;

use anyhow::Context;

/// Dataset repo of the training text.
pub const TINYSTORIES_REPO: &str = "roneneldan/TinyStories";
/// The file used for training: the GPT-4 validation split (about 22 MB), large enough for a
/// QAT fine-tune and small enough to fetch in seconds.
pub const TINYSTORIES_FILE: &str = "TinyStoriesV2-GPT4-valid.txt";
/// Dataset of the evaluation text.
pub const WIKITEXT_DATASET: &str = "Salesforce/wikitext";
/// Its configuration: the raw (untokenized) WikiText-2.
pub const WIKITEXT_CONFIG: &str = "wikitext-2-raw-v1";

/// Downloads (or takes from the Hub cache) the TinyStories text file.
pub fn tinystories() -> anyhow::Result<PathBuf> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .context("cannot set up the Hugging Face Hub client")?;
    api.dataset(TINYSTORIES_REPO.to_string()).get(TINYSTORIES_FILE).with_context(|| {
        format!("cannot download {TINYSTORIES_FILE} from {TINYSTORIES_REPO} (offline? hint: pass --train-text FILE)")
    })
}

/// A WikiText-2 raw split (`test` scores trials, `validation` is the held-out split) as one
/// text, rows joined with "\n\n" as in the Hugging Face perplexity guide.
pub fn wikitext2(split: &str) -> anyhow::Result<String> {
    let base = std::env::var("HF_DATASETS_SERVER").unwrap_or_else(|_| "https://datasets-server.huggingface.co".into());
    let agent = ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(60)).build();
    let mut texts: Vec<String> = Vec::new();
    let mut total = usize::MAX;
    while texts.len() < total {
        let url = format!(
            "{base}/rows?dataset={}&config={WIKITEXT_CONFIG}&split={split}&offset={}&length=100",
            WIKITEXT_DATASET.replace('/', "%2F"),
            texts.len()
        );
        let page: serde_json::Value = fetch_json(&agent, &url)
            .context("cannot fetch WikiText-2 from the Hub (offline? hint: pass --eval-text FILE)")?;
        total = page["num_rows_total"].as_u64().context("dataset viewer answer lacks num_rows_total")? as usize;
        let rows = page["rows"].as_array().context("dataset viewer answer lacks rows")?;
        anyhow::ensure!(
            !rows.is_empty() || texts.len() >= total,
            "dataset viewer returned no rows at offset {}",
            texts.len()
        );
        for r in rows {
            texts.push(r["row"]["text"].as_str().unwrap_or("").to_string());
        }
    }
    Ok(texts.join("\n\n"))
}

/// GET with a few retries on rate limits and server errors.
fn fetch_json(agent: &ureq::Agent, url: &str) -> anyhow::Result<serde_json::Value> {
    let mut wait = std::time::Duration::from_secs(2);
    for attempt in 0..5 {
        match agent.get(url).call() {
            Ok(resp) => return Ok(resp.into_json()?),
            Err(ureq::Error::Status(code, _)) if (code == 429 || code >= 500) && attempt < 4 => {
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("gave up after retries")
}
