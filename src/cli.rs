//! The subcommand enum; its doc comments are the help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Autonomous research harness for ternary and binary QAT of small language models.
#[derive(Debug, Parser)]
#[command(
    name = "autoqat",
    version,
    about,
    long_about = None,
    after_help = "Exit codes: 0 success, 1 error, 2 usage, 3 bad input (config, recipe, missing file), 4 the trial ran and failed, 130 interrupted."
)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand of `autoqat`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the libtorch version, the devices seen and where libtorch was found.
    Doctor(DoctorArgs),
    /// Score a model's perplexity on a text file.
    Eval(EvalArgs),
    /// Run one quantization-aware-training trial from a recipe.
    Trial(TrialArgs),
    /// Compress a checkpoint into a binary/ternary artifact under a bits/param budget.
    Compress(CompressArgs),
    /// Size against perplexity over compression runs: the frontier and the track's traps.
    Frontier(FrontierArgs),
    /// The distillation-traces track: teacher baseline, trace collection, efficiency report.
    #[command(subcommand)]
    Kd(KdCommand),
    /// Forward a large packed ternary model at A8 then A4 without holding it dense.
    Dryrun(DryrunArgs),
    /// CPU decode speed of a model: prefill and greedy decode tokens/s, weight bytes and
    /// memory, on the packed low-bit kernels or the dense libtorch reference.
    BenchDecode(BenchDecodeArgs),
    /// Run the research loop until a stop condition.
    Run(RunArgs),
    /// Print results.tsv, or rebuild it from git alone.
    Results(ResultsArgs),
    /// Show every experiment: status, metrics and diff, for review.
    Log(LogArgs),
    /// Write the Markdown report and the plot of the run.
    Report(ReportArgs),
    /// Show the live run: current experiment, trial progress, best so far.
    Status(StatusArgs),
    /// Scaffold a research workspace.
    Init(InitArgs),
    /// Fetch (or take local) model, train text and eval text, and cache tokens.
    Prepare(PrepareArgs),
    /// The whole loop offline in minutes: corpus, tokenizer, teacher, experiments, report.
    Demo(DemoArgs),
    /// Run the Python of python-qat trials ($AUTOQAT_PYTHON, else the .venv autoqat was built
    /// against, else python3), e.g. `autoqat python train.py --run-dir runs/manual`.
    Python(PythonArgs),
}

/// Arguments of `autoqat python`.
#[derive(Debug, Args)]
pub struct PythonArgs {
    /// Passed to the interpreter as they are.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}

/// Arguments of `autoqat doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub json: JsonArg,
}

/// Arguments of `autoqat eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Hugging Face model directory, hub id, or an exported autoqat model directory.
    #[arg(long)]
    pub model: String,
    /// UTF-8 text file to score.
    #[arg(long)]
    pub text: PathBuf,
    /// Context length of each window (default: the model's max positions, at most 1024).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Stride between windows (default: ctx, i.e. disjoint windows).
    #[arg(long)]
    pub stride: Option<usize>,
    /// Windows (or documents) per forward pass (default: 1 for windows, 8 for documents).
    #[arg(long)]
    pub batch: Option<usize>,
    /// windows: the HF guide's sliding windows over the whole text; docs: the compression
    /// track's validator (each non-blank line a document, truncated, right-padded batches).
    #[arg(long, value_enum, default_value = "windows")]
    pub protocol: Protocol,
    /// docs: tokens kept from the start of each document.
    #[arg(long, default_value_t = 512)]
    pub doc_tokens: usize,
    /// docs: score at most this many documents (0 = all).
    #[arg(long, default_value_t = 0)]
    pub max_docs: usize,
    /// tokenizer.json (or a directory holding one, or a model's hub id) to score with instead
    /// of the model's: the track's reference tokenizer, or the tokenizer of an artifact that
    /// ships none.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// auto, cpu, cuda, cuda:N or mps.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Read decoder layers in one at a time as the pass reaches them (memory of one layer,
    /// not the model; an artifact is unpacked to dense shards in the temporary directory first).
    #[arg(long)]
    pub offload: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Arguments of `autoqat bench-decode`.
#[derive(Debug, Args)]
pub struct BenchDecodeArgs {
    /// A Hugging Face checkpoint directory, a packed export of `autoqat trial` (it has a
    /// quant.json), or a compression artifact of `autoqat compress` (directory or .zip).
    pub model: String,
    /// CPU threads, for the packed kernels and for libtorch alike.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// auto: the packed low-bit kernels when the model has packed weights; dense: the weights
    /// dequantized to f32 and multiplied by libtorch (the reference).
    #[arg(long, value_enum, default_value = "auto")]
    pub kernel: KernelChoice,
    /// How the packed kernels take their inputs: f32 (exact) or int8 (per token for a student,
    /// per 128-value block for an artifact). Default: what the model's own quantizer implies
    /// (int8 for a student trained with 8-bit per-token activations, else f32).
    #[arg(long, value_enum)]
    pub acts: Option<ActsChoice>,
    /// Prompt length in tokens (the text is repeated or cut to this length).
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Greedy decoding steps after the prompt (one token each, with the KV cache).
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// tokenizer.json (or a directory holding one) instead of the model's. Without any
    /// tokenizer the prompt is fixed synthetic token ids.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// UTF-8 text whose tokens make the prompt (default: a fixed built-in paragraph).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// cpu (the packed kernels run on the CPU only; the dense path may use another device).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Run each one-token step of a kernel model as libtorch ops between the products, instead
    /// of the host step on plain buffers (the default where the model has one): what the host
    /// step gains, measured.
    #[arg(long)]
    pub libtorch_step: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

/// `autoqat bench-decode --kernel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelChoice {
    /// The packed kernels when the model has packed weights, else dense.
    Auto,
    /// Dequantized f32 weights through libtorch.
    Dense,
}

/// `autoqat bench-decode --acts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ActsChoice {
    /// Exact f32 inputs.
    F32,
    /// int8 inputs with absmax scales.
    Int8,
}

/// How `autoqat eval` cuts the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Sliding windows over the whole text (--ctx, --stride).
    Windows,
    /// One document per non-blank line (--doc-tokens, --max-docs).
    Docs,
}

/// Arguments of `autoqat compress`.
#[derive(Debug, Args)]
pub struct CompressArgs {
    /// The compression recipe.
    #[arg(long, default_value = "experiments/compress.toml")]
    pub config: PathBuf,
    /// Output directory (default: runs/compress-<timestamp>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Only validate the recipe and exit.
    #[arg(long)]
    pub check: bool,
    /// Print the recipe schema (keys, types, ranges, defaults, search ladders) as JSON and exit.
    #[arg(long)]
    pub schema: bool,
    /// Continue a killed run in --run-dir from what it saved (same recipe only).
    #[arg(long, requires = "run_dir")]
    pub resume: bool,
    /// Skip reloading the zip in a fresh process and scoring it again.
    #[arg(long)]
    pub no_verify: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `autoqat kd ...`.
#[derive(Debug, Subcommand)]
pub enum KdCommand {
    /// Time the teacher's deterministic answers to a prompts file (teacher_baseline.json).
    Baseline(KdBaselineArgs),
    /// Collect Top-K+Other traces projected to the student tokenizer, as Parquet shards.
    Collect(KdCollectArgs),
    /// Quality, packed memory and decode speed of a student against the teacher: QEI.
    Report(KdReportArgs),
}

/// How to reach the teacher (shared by `kd baseline` and `kd collect`).
#[derive(Debug, Args)]
pub struct TeacherArgs {
    /// `openai:<model>` (any OpenAI-compatible endpoint) or `local:<hf-dir>`.
    #[arg(long)]
    pub teacher: String,
    /// Base URL of the OpenAI-compatible API.
    #[arg(long, default_value = "https://api.openai.com/v1")]
    pub base_url: String,
    /// Environment variable that holds the API key (the key itself is never written anywhere).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout_s: f64,
    /// Retries on 429, 5xx and transport errors (with backoff, honouring Retry-After).
    #[arg(long, default_value_t = 4)]
    pub max_retries: u32,
    /// At most one request per this many seconds (a client-side rate limit).
    #[arg(long, default_value_t = 0.0)]
    pub min_interval_s: f64,
    /// The prompts: one per line, or JSON Lines with a `prompt` field (.jsonl).
    #[arg(long)]
    pub prompts: PathBuf,
    /// Longest answer in tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Device of a local teacher.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Prompt template; `{prompt}` is replaced by each prompt (e.g. a chat template).
    #[arg(long, default_value = "{prompt}")]
    pub template: String,
}

/// Arguments of `autoqat kd baseline`.
#[derive(Debug, Args)]
pub struct KdBaselineArgs {
    #[command(flatten)]
    pub teacher: TeacherArgs,
    /// Where the baseline goes.
    #[arg(long, default_value = "teacher_baseline.json")]
    pub out: PathBuf,
}

/// Arguments of `autoqat kd collect`.
#[derive(Debug, Args)]
pub struct KdCollectArgs {
    #[command(flatten)]
    pub teacher: TeacherArgs,
    /// The trace directory (created; a re-run resumes it).
    #[arg(long)]
    pub out: PathBuf,
    /// Teacher alternatives per position (1..=20).
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    /// The student's tokenizer.json or model directory (default: a local teacher's).
    #[arg(long)]
    pub student_tokenizer: Option<PathBuf>,
    /// Prompts per Parquet shard.
    #[arg(long, default_value_t = 64)]
    pub prompts_per_shard: usize,
}

/// Arguments of `autoqat kd report`.
#[derive(Debug, Args)]
pub struct KdReportArgs {
    /// The student's packed export (`<run>/export` of a trial).
    #[arg(long)]
    pub student: PathBuf,
    /// Held-out traces (collected from prompts the student did not train on).
    #[arg(long)]
    pub traces: PathBuf,
    /// The teacher's baseline (`autoqat kd baseline`).
    #[arg(long, default_value = "teacher_baseline.json")]
    pub baseline: PathBuf,
    /// The teacher's weight bytes, when the baseline does not know them (an API teacher):
    /// parameters times bytes per parameter (`16e9` or `16000000000`).
    #[arg(long, value_parser = parse_byte_count)]
    pub teacher_bytes: Option<u64>,
    /// Where the report goes.
    #[arg(long, default_value = "kd_report.json")]
    pub out: PathBuf,
    /// Compute device.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Decode the student on the packed kernels (auto, CPU only) or on its dequantized f32 copy
    /// through libtorch (dense).
    #[arg(long, default_value = "auto", value_parser = ["auto", "dense"])]
    pub kernel: String,
    /// Threads of the packed kernels.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `autoqat dryrun`.
#[derive(Debug, Args)]
pub struct DryrunArgs {
    /// `7b`, `1b`, `tiny`, or `hidden,layers,heads,head_dim,intermediate,vocab`.
    #[arg(long, default_value = "7b")]
    pub shape: String,
    /// Tokens in the forward pass.
    #[arg(long, default_value_t = 16)]
    pub seq: i64,
    /// Seed of the random packed weights and tokens.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Write the measurements here as JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the measurements as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `autoqat frontier`.
#[derive(Debug, Args)]
pub struct FrontierArgs {
    /// Compression run directories (default: runs/* of the current directory).
    pub runs: Vec<PathBuf>,
    /// The reference tokenizer.json (or its directory): runs scored with another are flagged.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Where frontier.png goes.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Print every run as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `autoqat trial`.
#[derive(Debug, Args)]
pub struct TrialArgs {
    /// The recipe.
    #[arg(long, default_value = autoqat_workspace::layout::RECIPE)]
    pub config: PathBuf,
    /// Output directory (default: runs/<timestamp>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue from the last checkpoint in --run-dir.
    #[arg(long)]
    pub resume: bool,
    /// Print the recipe schema as JSON and exit.
    #[arg(long)]
    pub schema: bool,
    /// Only validate the recipe and exit.
    #[arg(long)]
    pub check: bool,
    /// Print machine-readable JSON lines instead of progress.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `autoqat run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub tag: TagArg,
    /// Stop after this many experiments (the baseline counts).
    #[arg(long)]
    pub max_experiments: Option<u32>,
    /// Stop after this many wall-clock hours.
    #[arg(long)]
    pub hours: Option<f64>,
    /// Stop once the proposer has cost this many US dollars.
    #[arg(long)]
    pub max_cost: Option<f64>,
    /// openai, anthropic, command or builtin (default: from autoqat.toml).
    #[arg(long)]
    pub provider: Option<String>,
    /// Trials in flight at once, each in its own git worktree and on its own device (default:
    /// executor.workers in autoqat.toml, else 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,
    /// Where trials run: local (this machine) or slurm (sbatch jobs; default: executor.kind).
    #[arg(long, value_parser = ["local", "slurm"])]
    pub executor: Option<String>,
    /// Resume the run of --tag after an interruption.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub workspace: WorkspaceArg,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Arguments of `autoqat results`.
#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// Rewrite results.tsv from git notes alone.
    #[arg(long)]
    pub rebuild: bool,
    #[command(flatten)]
    pub tag: TagArg,
    #[command(flatten)]
    pub workspace: WorkspaceArg,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Arguments of `autoqat log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    #[command(flatten)]
    pub tag: TagArg,
    #[command(flatten)]
    pub workspace: WorkspaceArg,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Arguments of `autoqat report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub tag: TagArg,
    #[command(flatten)]
    pub workspace: WorkspaceArg,
    /// Output directory for report.md and progress.png (default: <workspace>/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Arguments of `autoqat status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub workspace: WorkspaceArg,
    #[command(flatten)]
    pub json: JsonArg,
    /// Follow the run until it stops (a progress bar on a terminal, lines otherwise).
    #[arg(long)]
    pub watch: bool,
}

/// Arguments of `autoqat init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// tiny-demo, smollm-ternary, smollm-binary, qwen-ternary, qwen-binary (the compression
    /// track) or python-qat (program.md, a read-only prepare.py and the mutable train.py: plain
    /// PyTorch + transformers ternary QAT, run with `autoqat python`).
    #[arg(long, default_value = "smollm-ternary")]
    pub template: String,
    /// Directory to create (default: the current directory).
    pub dir: Option<PathBuf>,
}

/// Arguments of `autoqat prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub workspace: WorkspaceArg,
    /// Model: hub id or local directory (default: from the recipe).
    #[arg(long)]
    pub model: Option<String>,
    /// Local train text instead of the Hub data set.
    #[arg(long)]
    pub train_text: Option<PathBuf>,
    /// Local eval text instead of the Hub data set.
    #[arg(long)]
    pub eval_text: Option<PathBuf>,
    /// Local held-out text (data/heldout.txt) instead of WikiText-2's validation split.
    #[arg(long)]
    pub heldout_text: Option<PathBuf>,
}

/// Arguments of `autoqat demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Workspace directory to create or reuse.
    #[arg(long, default_value = "autoqat-demo")]
    pub dir: PathBuf,
    /// Number of experiments after the baseline [default: 20 for the tiny QAT demo, where the
    /// search needs them to stack its gains; 8 with --track compress or --real, whose trials
    /// are slower]
    #[arg(long)]
    pub experiments: Option<u32>,
    /// Smaller corpus, teacher and trials (for tests).
    #[arg(long)]
    pub quick: bool,
    /// Use the real SmolLM-135M template instead of the offline tiny model.
    #[arg(long)]
    pub real: bool,
    /// qat: the loop over QAT trials; compress: the loop over compressions of the same tiny
    /// teacher into a ternary-budget artifact, then the size/PPL frontier.
    #[arg(long, value_enum, default_value = "qat", conflicts_with = "real")]
    pub track: DemoTrack,
}

impl DemoArgs {
    /// The experiments to run after the baseline (`--experiments`, else the path's default).
    pub fn experiments(&self) -> u32 {
        let tiny_qat = !self.real && self.track == DemoTrack::Qat;
        self.experiments.unwrap_or(if tiny_qat { 20 } else { 8 })
    }
}

/// Which workflow `autoqat demo` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoTrack {
    /// QAT trials (`autoqat trial`).
    Qat,
    /// Compression trials (`autoqat compress`).
    Compress,
}

/// Sets up `tracing`: `-v` flags pick the level unless RUST_LOG is set.
pub fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Colour only on a terminal: redirected logs (files, CI) get plain text, not escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .without_time()
        .try_init();
}

/// `--workspace DIR`, declared once for every command that works in a workspace; derefs to
/// the directory.
#[derive(Debug, Clone, Args)]
pub struct WorkspaceArg {
    /// Workspace directory.
    #[arg(long = "workspace", default_value = ".")]
    pub dir: PathBuf,
}

impl std::ops::Deref for WorkspaceArg {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.dir
    }
}

/// `--tag TAG`, declared once: which run (branch `autoqat/<tag>`) a command reads or writes.
#[derive(Debug, Clone, Args)]
pub struct TagArg {
    /// Run tag: the branch is autoqat/<tag> (default: the checked-out autoqat/<tag> branch, or
    /// `run.tag` of autoqat.toml for a new run).
    #[arg(long = "tag", value_name = "TAG")]
    pub name: Option<String>,
}

impl std::ops::Deref for TagArg {
    type Target = Option<String>;
    fn deref(&self) -> &Option<String> {
        &self.name
    }
}

/// `--json`, declared once: machine-readable output (one JSON object, or JSON lines for a
/// command that streams events).
#[derive(Debug, Clone, Copy, Args)]
pub struct JsonArg {
    /// Print machine-readable JSON (JSON lines for commands that stream).
    #[arg(long = "json")]
    pub on: bool,
}

/// A byte count written as an integer or in scientific notation (`16e9`).
fn parse_byte_count(s: &str) -> Result<u64, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x < 1.8e19 => Ok(x as u64),
        _ => Err(format!("`{s}` is not a whole number of bytes (e.g. 16000000000 or 16e9)")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_counts_take_scientific_notation() {
        assert_eq!(super::parse_byte_count("16e9"), Ok(16_000_000_000));
        assert_eq!(super::parse_byte_count("16000000000"), Ok(16_000_000_000));
        assert!(super::parse_byte_count("1.5").unwrap_err().contains("whole number"));
        assert!(super::parse_byte_count("-3e3").is_err());
    }
}
