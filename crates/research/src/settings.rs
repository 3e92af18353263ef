//! `autoqat.toml`: harness settings (provider, trial command, metric, mutable paths, budgets,
//! noise and pruning policy). Unknown keys are errors so that a typo is not silently ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ResearchError, Result};

/// All harness settings of one workspace.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Loop settings.
    pub run: RunSettings,
    /// How a trial is run and read.
    pub trial: TrialSettings,
    /// Which proposer answers and what it costs.
    pub provider: ProviderSettings,
    /// Keep policy under noise.
    pub noise: NoiseSettings,
    /// Early stopping of clearly worse trials.
    pub prune: PruneSettings,
    /// Which validator checks the mutable file.
    pub validator: ValidatorSettings,
    /// Scoring the best recipe on a held-out text, apart from selection.
    pub heldout: HeldoutSettings,
    /// Where trials run and how many at once.
    pub executor: ExecutorSettings,
}

/// Where trials run (`[executor]`): `local` runs `workers` trials at once on this machine, each
/// in its own git worktree and on its own device; `slurm` hands each trial to `sbatch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorSettings {
    /// `local` or `slurm`.
    pub kind: String,
    /// Trials in flight at once (1: one at a time, in the workspace itself).
    pub workers: u32,
    /// Local: the device of each worker, as `CUDA_VISIBLE_DEVICES` values (worker i gets
    /// entry i mod len). Empty: one GPU each when the machine has enough, else a CPU share.
    pub devices: Vec<String>,
    /// Local on CPU: threads per trial (`OMP_NUM_THREADS`); 0 = the cores split evenly.
    pub threads: u32,
    /// The Slurm executor's job settings.
    pub slurm: SlurmSettings,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        ExecutorSettings {
            kind: "local".into(),
            workers: 1,
            devices: Vec::new(),
            threads: 0,
            slurm: SlurmSettings::default(),
        }
    }
}

/// How a trial becomes a Slurm job (`[executor.slurm]`). The workspace must be on a file
/// system the compute nodes share: a job runs in its worktree and writes its run dir there.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmSettings {
    /// `--partition` (empty: the cluster's default).
    pub partition: String,
    /// `--account` (empty: none).
    pub account: String,
    /// `--gres`, e.g. `gpu:1` (empty: none).
    pub gres: String,
    /// `--time` (empty: the trial timeout plus a minute).
    pub time: String,
    /// More `#SBATCH` lines, written as given (e.g. `--mem=32G`, `--constraint=a100`).
    pub extra: Vec<String>,
    /// How often `squeue` is asked, in seconds.
    pub poll_s: f64,
    /// Give up (status `timeout`, `scancel`) on a job still waiting in the queue after this
    /// many seconds; 0 = wait as long as it takes.
    pub max_queue_s: f64,
}

impl Default for SlurmSettings {
    fn default() -> Self {
        SlurmSettings {
            partition: String::new(),
            account: String::new(),
            gres: String::new(),
            time: String::new(),
            extra: Vec::new(),
            poll_s: 5.0,
            max_queue_s: 0.0,
        }
    }
}

/// The held-out split (`[heldout]`): a text the trial never reads, scored once for the best
/// recipe when the run stops (and for each keep with `keeps = true`). Keep/discard and the
/// proposer never see these figures; the report shows them beside the search PPL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeldoutSettings {
    /// Command that scores an experiment's output on the held-out text (`{run_dir}` and
    /// `{exp}` are replaced; a leading `autoqat` is this executable); empty = no held-out split.
    pub command: String,
    /// Regex with one capture group for the PPL in the command's output.
    pub metric_regex: String,
    /// Also score each keep when it is kept (the best at the end is always scored).
    pub keeps: bool,
    /// Wall-clock limit of one scoring, in seconds.
    pub timeout_s: f64,
}

impl Default for HeldoutSettings {
    fn default() -> Self {
        HeldoutSettings {
            command: String::new(),
            metric_regex: r#""eval_ppl"\s*:\s*([0-9.eE+-]+)"#.into(),
            keeps: false,
            timeout_s: 1800.0,
        }
    }
}

/// Loop settings (`[run]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    /// Default run tag: the branch is `autoqat/<tag>`.
    pub tag: String,
    /// Files the proposer may edit, relative to the workspace.
    pub mutable_paths: Vec<String>,
    /// The research brief shown to the proposer.
    pub program: String,
    /// Directory of the prompt templates (system.md, propose.md, repair.md).
    pub prompts_dir: String,
    /// Most changed lines one experiment may have (counted with `similar`).
    pub max_changed_lines: usize,
    /// Stop after this many invalid answers in a row.
    pub max_invalid_streak: u32,
    /// Stop after this many experiments (the baseline counts).
    pub max_experiments: Option<u32>,
    /// Stop after this many wall-clock hours.
    pub hours: Option<f64>,
    /// Stop once the proposer has cost this many US dollars.
    pub max_cost_usd: Option<f64>,
    /// Stop when this file exists (relative to the workspace); it is removed on stop.
    pub stop_file: String,
    /// Recent results rows shown in the prompt.
    pub recent_rows: usize,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            tag: "default".into(),
            mutable_paths: vec![autoqat_workspace::layout::RECIPE.into()],
            program: "program.md".into(),
            prompts_dir: "prompts".into(),
            max_changed_lines: 8,
            max_invalid_streak: 5,
            max_experiments: None,
            hours: None,
            max_cost_usd: None,
            stop_file: autoqat_workspace::layout::STOP_FILE.into(),
            recent_rows: 15,
        }
    }
}

/// How a trial runs (`[trial]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrialSettings {
    /// Command line run by `sh -c`; `{exp}` becomes the experiment number, `{run_dir}` its
    /// output directory. A leading `autoqat` is replaced by the running executable.
    pub command: String,
    /// Wall-clock limit in seconds; the whole process group is killed after it.
    pub timeout_s: f64,
    /// Where a trial writes its outputs; `{exp}` and `{tag}` are replaced.
    pub run_dir: String,
    /// Regex with one capture group for eval_ppl in the trial log, for foreign trials that
    /// write no summary.json. With it, summary.json is still preferred when present.
    pub metric_regex: Option<String>,
    /// Name of the metric the regex captures (reported as eval_ppl; lower is better).
    pub metric_name: String,
    /// Recipe key that holds the seed (for second-seed confirmation and baseline repeats).
    pub seed_key: Option<String>,
}

impl Default for TrialSettings {
    fn default() -> Self {
        TrialSettings {
            command: "autoqat trial --config experiments/train.toml --run-dir {run_dir}".into(),
            timeout_s: 3600.0,
            run_dir: autoqat_workspace::layout::RUN_DIR_TEMPLATE.into(),
            metric_regex: None,
            metric_name: "eval_ppl".into(),
            seed_key: Some("optim.seed".into()),
        }
    }
}

/// Which proposer answers (`[provider]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderSettings {
    /// openai, anthropic, command or builtin.
    pub kind: String,
    /// Model name sent to the API.
    pub model: String,
    /// Base URL, e.g. `https://api.openai.com/v1` or `https://api.anthropic.com`.
    pub base_url: String,
    /// Name of the environment variable that holds the API key (never the key itself).
    pub api_key_env: String,
    /// Per-request timeout in seconds.
    pub timeout_s: f64,
    /// Retries on 429, 5xx and transport errors.
    pub max_retries: u32,
    /// First backoff in seconds; doubled on each retry unless Retry-After says otherwise.
    pub backoff_s: f64,
    /// Longest wait honoured from a Retry-After header, in seconds.
    pub max_backoff_s: f64,
    /// Largest answer in tokens.
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: f64,
    /// Ask for the proposal's JSON shape. For `openai`, `auto` tries OpenAI's `json_schema`,
    /// then the `json_object`-with-schema dialect (llama-cpp-python), then plain text, keeping
    /// the first the server accepts; `json_schema`, `json_object` or `off` fix one. For
    /// `anthropic`, `auto` forces a `propose` tool whose input schema is the proposal's and
    /// falls back to plain text for the rest of the run if the server refuses tools (HTTP 400);
    /// `json_schema` or `json_object` insist on the tool, `off` sends none.
    pub structured_output: String,
    /// US dollars per million input tokens.
    pub price_in_per_mtok: f64,
    /// US dollars per million output tokens.
    pub price_out_per_mtok: f64,
    /// For `command`: the program line run by `sh -c`, prompt on stdin, answer on stdout.
    pub command: String,
    /// Seed of the builtin proposer's tie-breaking.
    pub seed: u64,
}

impl ProviderSettings {
    /// The HTTP client's timeout and retry policy of these settings.
    pub fn http(&self) -> autoqat_http::HttpSettings {
        autoqat_http::HttpSettings {
            timeout_s: self.timeout_s,
            max_retries: self.max_retries,
            backoff_s: self.backoff_s,
            max_backoff_s: self.max_backoff_s,
        }
    }
}

impl Default for ProviderSettings {
    fn default() -> Self {
        ProviderSettings {
            kind: "builtin".into(),
            model: String::new(),
            base_url: String::new(),
            api_key_env: String::new(),
            timeout_s: 120.0,
            max_retries: 4,
            backoff_s: 2.0,
            max_backoff_s: 120.0,
            max_tokens: 2048,
            temperature: 0.7,
            structured_output: "auto".into(),
            price_in_per_mtok: 0.0,
            price_out_per_mtok: 0.0,
            command: String::new(),
            seed: 0,
        }
    }
}

/// Keep policy under noise (`[noise]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseSettings {
    /// Keep only if `eval_ppl < best * (1 - min_rel_improvement)`.
    pub min_rel_improvement: f64,
    /// Re-run every would-be keep with another seed; keep only if that also beats the bar.
    pub confirm_seed: bool,
    /// With the noise measured (`baseline_repeats` > 1), a would-be keep that beats the best by
    /// less than this many σ is re-run with another seed before it is kept (0 = never).
    pub confirm_sigmas: f64,
    /// How many times the baseline is run (with different seeds) to measure noise.
    pub baseline_repeats: u32,
    /// A discard within this many σ of the best (within this many `min_rel_improvement`
    /// margins while σ is unknown) is recorded as a near miss; the builtin search may combine two.
    pub near_miss_sigmas: f64,
}

impl Default for NoiseSettings {
    fn default() -> Self {
        NoiseSettings {
            min_rel_improvement: 0.002,
            confirm_seed: false,
            confirm_sigmas: 2.0,
            baseline_repeats: 1,
            near_miss_sigmas: 2.0,
        }
    }
}

/// Early stopping (`[prune]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneSettings {
    /// Compare the live steps.tsv with the best run's.
    pub enabled: bool,
    /// Stop when `eval_ppl > best_at_step * (1 + margin)`.
    pub margin: f64,
    /// Ignore evals before this step (early evals are noisy).
    pub min_step: u64,
    /// How often steps.tsv is re-read, in seconds.
    pub poll_s: f64,
}

impl Default for PruneSettings {
    fn default() -> Self {
        PruneSettings { enabled: true, margin: 0.25, min_step: 1, poll_s: 1.0 }
    }
}

/// Which validator checks the mutable file (`[validator]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidatorSettings {
    /// `autoqat` (the recipe schema), `toml` (the fields below), `python` (the fields are
    /// top-level constants of a Python file; a change that runs the same code is refused), or
    /// `none` (foreign trials).
    pub kind: String,
    /// For `toml` and `python`: the keys the builtin proposer may change and their values.
    pub fields: Vec<FieldSetting>,
    /// Domain priors on the schema's keys (any kind but `none`), replacing those the schema
    /// declares: the builtin search polls ranked keys first.
    pub priors: Vec<PriorSetting>,
}

impl Default for ValidatorSettings {
    fn default() -> Self {
        ValidatorSettings { kind: "autoqat".into(), fields: Vec::new(), priors: Vec::new() }
    }
}

/// One `[[validator.priors]]` entry: a key, its rank in the poll order, and its source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorSetting {
    /// Dotted key (or constant name) of the schema.
    pub key: String,
    /// 1 is polled first; equal ranks tie.
    pub rank: u32,
    /// Where the expectation comes from.
    pub source: String,
}

/// One searchable key for the `toml` validator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSetting {
    /// Dotted key, e.g. `optim.lr`.
    pub key: String,
    /// Allowed values (also what the builtin proposer tries).
    pub choices: Vec<toml::Value>,
    /// One line on what it does.
    #[serde(default)]
    pub doc: String,
    /// The key matters only while another key has one of some values, e.g.
    /// `active_when = { key = "distill.enabled", values = [true] }`: a change to it is refused
    /// (and never proposed by the builtin search) while it cannot have an effect.
    #[serde(default)]
    pub active_when: Option<ActiveWhen>,
}

/// `active_when` of a validator field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveWhen {
    /// Dotted key of the switch.
    pub key: String,
    /// Its values under which the field has an effect.
    pub values: Vec<toml::Value>,
}

impl Settings {
    /// Reads `<workspace>/autoqat.toml`; a missing file means all defaults.
    pub fn load(workspace: &Path) -> Result<Settings> {
        let path = autoqat_workspace::Layout::new(workspace).config();
        if !path.exists() {
            return Ok(Settings::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| ResearchError::io(&path, e))?;
        Settings::parse(&text, &path)
    }

    /// Parses settings text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Settings> {
        let s: Settings = toml::from_str(text).map_err(|e| ResearchError::Settings {
            path: path.into(),
            msg: autoqat_recipe::toml_error_line(text, &e),
        })?;
        s.check(path)?;
        Ok(s)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Err(ResearchError::Settings { path: path.into(), msg });
        if self.run.mutable_paths.is_empty() {
            return bad("run.mutable_paths is empty; name the file the proposer may edit".into());
        }
        if !["openai", "anthropic", "command", "builtin"].contains(&self.provider.kind.as_str()) {
            return bad(format!(
                "provider.kind = {:?}; expected openai, anthropic, command or builtin",
                self.provider.kind
            ));
        }
        if !["auto", "json_schema", "json_object", "off"].contains(&self.provider.structured_output.as_str()) {
            return bad(format!(
                "provider.structured_output = {:?}; expected auto, json_schema, json_object or off",
                self.provider.structured_output
            ));
        }
        if !["autoqat", "toml", "python", "none"].contains(&self.validator.kind.as_str()) {
            return bad(format!("validator.kind = {:?}; expected autoqat, toml, python or none", self.validator.kind));
        }
        if self.validator.kind == "python" {
            if let Some(f) = self.validator.fields.iter().find(|f| !crate::python::is_constant(&f.key)) {
                return bad(format!(
                    "validator.fields key `{}` is not a constant name; with kind = \"python\" each key names a top-level UPPER_CASE constant of {}",
                    f.key,
                    self.run.mutable_paths[0]
                ));
            }
        }
        if !self.validator.priors.is_empty() {
            if let Err(e) = crate::validate::Validator::with_priors(self) {
                return bad(format!("validator.priors: {e}"));
            }
        }
        if !(self.noise.min_rel_improvement >= 0.0 && self.noise.min_rel_improvement < 1.0) {
            return bad("noise.min_rel_improvement must be in [0, 1)".into());
        }
        if !["local", "slurm"].contains(&self.executor.kind.as_str()) {
            return bad(format!("executor.kind = {:?}; expected local or slurm", self.executor.kind));
        }
        if self.executor.workers == 0 {
            return bad("executor.workers must be at least 1".into());
        }
        let poll_positive = self.executor.slurm.poll_s > 0.0;
        if !poll_positive || self.executor.slurm.max_queue_s < 0.0 {
            return bad("executor.slurm.poll_s must be positive and max_queue_s at least 0".into());
        }
        if let Some(l) = self.executor.slurm.extra.iter().find(|l| l.contains('\n') || !l.trim_start().starts_with('-'))
        {
            return bad(format!(
                "executor.slurm.extra line {l:?} is not one sbatch option; write options such as \"--mem=32G\""
            ));
        }
        if self.trial.timeout_s <= 0.0 {
            return bad("trial.timeout_s must be positive".into());
        }
        if let Some(re) = &self.trial.metric_regex {
            if let Err(e) = regex::Regex::new(re) {
                return bad(format!("trial.metric_regex does not compile: {e}"));
            }
        }
        if !self.heldout.command.trim().is_empty() {
            match regex::Regex::new(&self.heldout.metric_regex) {
                Err(e) => return bad(format!("heldout.metric_regex does not compile: {e}")),
                Ok(re) if re.captures_len() < 2 => {
                    return bad("heldout.metric_regex needs one capture group around the PPL".into())
                }
                Ok(_) => {}
            }
            if self.heldout.timeout_s <= 0.0 {
                return bad("heldout.timeout_s must be positive".into());
            }
        }
        Ok(())
    }

    /// Fills `{tag}` in `trial.run_dir` with the run's tag (a template without it is shared by
    /// every tag of the workspace).
    pub fn for_tag(&mut self, tag: &str) {
        self.trial.run_dir = self.trial.run_dir.replace("{tag}", tag);
    }

    /// The run directory of experiment `exp`, relative to the workspace.
    pub fn run_dir(&self, exp: u32) -> PathBuf {
        autoqat_workspace::layout::run_dir(&self.trial.run_dir, exp)
    }
}
