//! `mtl`: train, evaluate and serve joint sentence-classification + NER models.

mod commands;
mod config;
mod inputs;
mod plot;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc reuses freed tensor buffers; glibc would mmap and unmap each large one, paying
/// page faults on every step (measured with `cargo xtask bench`, see the README and
/// `mtl::alloc`).
#[global_allocator]
static GLOBAL: mtl::alloc::MiMalloc = mtl::alloc::MiMalloc;

/// Multitask Transformers for sentence classification and NER / slot filling.
#[derive(Debug, Parser)]
#[command(name = "mtl", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a joint model; writes a run directory (checkpoints, history, metrics, curve).
    Train(TrainArgs),
    /// Evaluate a trained model on labelled data; prints one JSON object.
    Eval(EvalArgs),
    /// Predict labels and entities for texts (arguments, or one per line on stdin); JSON lines.
    Predict(PredictArgs),
    /// Score predicted tags against gold tags (`mtl eval --predictions` files, or CoNLL gold
    /// and predicted files), as seqeval does; `_` (no gold tags) sentences are skipped.
    Score(ScoreArgs),
    /// Sentence vectors (mean of the encoder output over real tokens); JSON lines.
    Embed(EmbedArgs),
    /// Write a fine-tuned pretrained encoder back in HuggingFace layout.
    Export(ExportArgs),
    /// Serve models over HTTP (JSON predictions, dynamic batching, metrics, a page at /).
    Serve(ServeArgs),
}

/// Data location and format, shared by `train` and `eval`.
#[derive(Debug, Args)]
struct DataArgs {
    /// A JointBERT directory (train/ dev/ test/), a CoNLL file or a JSONL file.
    #[arg(long)]
    data: PathBuf,
    /// jointbert, conll or jsonl (detected from the path when absent).
    #[arg(long)]
    format: Option<String>,
}

#[derive(Debug, Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Validation data (default: the dev split of --data).
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Run directory to create.
    #[arg(long)]
    out: PathBuf,
    /// TOML file with model and training options (see configs/example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Fine-tune the encoder of this HuggingFace checkpoint directory (config.json,
    /// model.safetensors or pytorch_model.bin, tokenizer.json); overrides [model] pretrained.
    #[arg(long)]
    pretrained: Option<PathBuf>,
    /// Number of epochs (overrides the config, and its min_steps).
    #[arg(long)]
    epochs: Option<usize>,
    /// Random seed (overrides the config).
    #[arg(long)]
    seed: Option<u64>,
    /// Learning rate (overrides the config).
    #[arg(long)]
    lr: Option<f64>,
    /// Batch size (overrides the config).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Task sampling: random, proportional, temperature or temperature:T, round-robin, joint.
    #[arg(long)]
    sampling: Option<String>,
    /// Device: cpu, wgpu, libtorch, libtorch-cuda (or libtorch-cuda:N). On the CPU, one
    /// data-parallel replica per core (at most one per 8 examples of a batch).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Data-parallel training on these devices, comma-separated (cpu,cpu or
    /// libtorch-cuda:0,libtorch-cuda:1); overrides --device and [train] devices.
    #[arg(long, value_name = "LIST")]
    devices: Option<String>,
    /// Replace an existing run directory.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Show plain progress lines instead of a bar.
    #[arg(long)]
    plain: bool,
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// A run directory (its best model) or a model directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Split of a dataset directory (JointBERT train/ dev/ test/, or train/dev/test files);
    /// default test. `dev` also finds `valid` and `validation`.
    #[arg(long)]
    split: Option<String>,
    /// Write predictions here, in CoNLL columns (word, gold tag, predicted tag).
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Device: cpu, wgpu, libtorch, libtorch-cuda (or libtorch-cuda:N).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Inference engine: auto (packed on cpu, burn elsewhere), packed (the model's weights in
    /// host memory, run on real tokens only; CPU) or burn (the Burn model on --device).
    #[arg(long, default_value = "auto")]
    engine: String,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// How tags are read off the NER head: iob2 (the best valid IOB2 sequence, Viterbi) or
    /// argmax (each word's best tag on its own).
    #[arg(long, default_value = "iob2")]
    decoding: String,
}

#[derive(Debug, Args)]
struct PredictArgs {
    /// A run directory (its best model) or a model directory.
    #[arg(long)]
    model: PathBuf,
    /// Texts to label; without any, one text per line is read from stdin.
    texts: Vec<String>,
    /// Number of sentence labels in `top_k` (at least 1).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    top_k: u32,
    /// Device: cpu, wgpu, libtorch, libtorch-cuda (or libtorch-cuda:N).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Inference engine: auto (packed on cpu, burn elsewhere), packed (the model's weights in
    /// host memory, run on real tokens only; CPU) or burn (the Burn model on --device).
    #[arg(long, default_value = "auto")]
    engine: String,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// How tags are read off the NER head: iob2 (the best valid IOB2 sequence, Viterbi) or
    /// argmax (each word's best tag on its own).
    #[arg(long, default_value = "iob2")]
    decoding: String,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["model", "pretrained"])))]
struct EmbedArgs {
    /// A run directory (its best model) or a model directory.
    #[arg(long)]
    model: Option<PathBuf>,
    /// A HuggingFace checkpoint directory (config.json, weights, tokenizer.json).
    #[arg(long)]
    pretrained: Option<PathBuf>,
    /// Texts to embed; without any, one text per line is read from stdin.
    texts: Vec<String>,
    /// Scale every vector to unit length (for cosine similarity by dot product).
    #[arg(long)]
    normalize: bool,
    /// Longest input in tokens, special tokens included (default: the model's limit, at most
    /// 512); longer texts are truncated.
    #[arg(long)]
    max_length: Option<usize>,
    /// Device: cpu, wgpu, libtorch, libtorch-cuda (or libtorch-cuda:N).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// A run directory (its best model) or a model directory, fine-tuned from a pretrained
    /// checkpoint.
    #[arg(long)]
    model: PathBuf,
    /// Output layout: hf (config.json, model.safetensors with the heads as extra `mtl.*`
    /// tensors, tokenizer.json, labels.json, tags.json).
    #[arg(long, default_value = "hf")]
    format: String,
    /// Directory to write (created; existing files of the same names are replaced).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// A run directory (its best model) or a model directory, as `RUN_DIR` (named after the
    /// directory) or `NAME=RUN_DIR`. Repeat to serve several models at
    /// /v1/models/NAME/predict; the first also answers /v1/predict.
    #[arg(long = "model", required = true, value_name = "[NAME=]RUN_DIR")]
    models: Vec<String>,
    /// Address to listen on (loopback by default; another address without --api-key is
    /// warned about).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port, logged as `listening`).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Device: cpu, wgpu, libtorch, libtorch-cuda (or libtorch-cuda:N).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Inference engine: auto (packed on cpu, burn elsewhere), packed or burn.
    #[arg(long, default_value = "auto")]
    engine: String,
    /// Most tokens in one inference batch (a larger request runs as a batch of its own).
    #[arg(long, default_value_t = mtl_serve::Limits::MAX_BATCH_TOKENS)]
    max_batch_tokens: usize,
    /// Most texts in one inference batch.
    #[arg(long, default_value_t = mtl_serve::Limits::MAX_BATCH_SIZE)]
    max_batch_size: usize,
    /// How long (ms) the first request of a batch waits for others to join it.
    #[arg(long, default_value_t = mtl_serve::Limits::MAX_WAIT_MS)]
    max_wait_ms: u64,
    /// Most texts in one request (413 beyond).
    #[arg(long, default_value_t = mtl_serve::Limits::MAX_CLIENT_BATCH)]
    max_client_batch: usize,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = mtl_serve::Limits::MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Most prediction requests in flight (429 with Retry-After beyond).
    #[arg(long, default_value_t = mtl_serve::Limits::MAX_CONCURRENT)]
    max_concurrent: usize,
    /// Answer 422 for a text longer than the model's limit, instead of cutting it and
    /// marking it `"truncated": true`.
    #[arg(long)]
    no_truncate: bool,
    /// Require `Authorization: Bearer KEY` on every route but /health and the page /
    /// (default: the environment variable MTL_API_KEY, if set).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Seconds that requests in flight get to finish after SIGTERM or SIGINT.
    #[arg(long, default_value_t = mtl_serve::ServeConfig::SHUTDOWN_TIMEOUT_S)]
    shutdown_timeout: u64,
    /// Sentence labels in `top_k` when a request does not give `top_k`.
    #[arg(long, default_value_t = mtl_serve::ServeConfig::TOP_K, value_parser = clap::value_parser!(u32).range(1..))]
    top_k: u32,
    /// Log lines on stderr: json or text.
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Least important log level shown: error, warn, info, debug (every request) or trace.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["predictions", "gold"])))]
struct ScoreArgs {
    /// A file written by `mtl eval --predictions` (word, gold tag, predicted tag): gold and
    /// predicted tags from its columns 2 and 3.
    #[arg(long, conflicts_with_all = ["gold", "pred"])]
    predictions: Option<PathBuf>,
    /// Gold file: CoNLL columns, blank line between sentences (tag in the last column unless
    /// --gold-column says otherwise).
    #[arg(long, requires = "pred")]
    gold: Option<PathBuf>,
    /// Predicted file, same layout (tag in the last column unless --pred-column says
    /// otherwise).
    #[arg(long, requires = "gold")]
    pred: Option<PathBuf>,
    /// Column of the gold tag, from 1 (default: 2 with --predictions, else the last).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    gold_column: Option<u32>,
    /// Column of the predicted tag, from 1 (default: 3 with --predictions, else the last).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pred_column: Option<u32>,
    /// iob2 or iobes.
    #[arg(long, default_value = "iob2")]
    scheme: String,
    /// default (conlleval) or strict.
    #[arg(long, default_value = "default")]
    mode: String,
}

fn main() -> ExitCode {
    mtl::alloc::keep_freed_memory();
    mtl::model::denormals::flush_to_zero();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => commands::train(a),
        Command::Eval(a) => commands::eval(a),
        Command::Predict(a) => commands::predict(a),
        Command::Score(a) => commands::score(a),
        Command::Embed(a) => commands::embed(a),
        Command::Export(a) => commands::export(a),
        Command::Serve(a) => serve::serve(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
