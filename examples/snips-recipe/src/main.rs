//! A recipe for SNIPS-shaped data (joint intent classification and slot filling), written
//! against the library API.
//!
//! The main route is the command line: `mtl train --config configs/snips.toml`. This example
//! shows the same steps in code, for programs that embed mtl:
//!
//! 1. read the `train`, `dev` and `test` splits of a JointBERT directory
//!    ([`mtl::data::read_splits`]);
//! 2. build a word-level encoder (lower-cased [`WordVocab`], every training word kept) and the
//!    intent and slot label maps ([`Encoder::build`]), giving every word its character ids
//!    ([`CharSpec`]);
//! 3. build a [`MultitaskTransformer`] (d_model 128, 4 heads, 2 layers, feed-forward 512,
//!    dropout 0.1, a character CNN over each word);
//! 4. train with joint sampling (both heads on every batch) into a run directory
//!    ([`mtl::train::fit`]), validating on `dev` after every epoch;
//! 5. evaluate on `test` ([`mtl::train::evaluate`]): intent accuracy, slot F1 (seqeval,
//!    entity level) and frame accuracy (intent and every slot right).
//!
//! ```text
//! cargo run --release -p example-snips-recipe -- [DATA_DIR] [--epochs N] [--run-dir DIR] [--overwrite]
//! ```
//!
//! `DATA_DIR` defaults to `../shared/data/snips` beside the workspace (read in place), `N` to 3
//! and `DIR` to `runs/snips-example` in the workspace. An existing run directory is never
//! replaced unless `--overwrite` is given.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use mtl::data::{CharSpec, Encoder, Format, ReadOptions, TextEncoder, WordVocab, WordVocabConfig};
use mtl::model::CharFeatures;
use mtl::prelude::*;
use mtl::train::trainer::TRAIN_CONFIG_FILE;
use mtl::train::{SamplingStrategy, TrainConfig};

/// The workspace root (two levels above this crate).
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

const USAGE: &str =
    "usage: example-snips-recipe [DATA_DIR] [--epochs N] [--run-dir DIR] [--overwrite]";

/// Command-line options.
#[derive(Debug)]
struct Args {
    data: PathBuf,
    epochs: usize,
    run_dir: PathBuf,
    overwrite: bool,
}

impl Args {
    fn parse() -> Result<Self> {
        let workspace = Path::new(WORKSPACE)
            .canonicalize()
            .unwrap_or_else(|_| PathBuf::from(WORKSPACE));
        let mut args = Args {
            data: workspace.join("../shared/data/snips"),
            epochs: 3,
            run_dir: workspace.join("runs/snips-example"),
            overwrite: false,
        };
        let mut data = None;
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                "--epochs" => {
                    let value = it.next().context("--epochs needs a number")?;
                    args.epochs = value.parse().ok().filter(|&n| n > 0).with_context(|| {
                        format!("--epochs {value:?}: expected a positive integer")
                    })?;
                }
                "--run-dir" => {
                    args.run_dir = it.next().context("--run-dir needs a directory")?.into();
                }
                "--overwrite" => args.overwrite = true,
                flag if flag.starts_with('-') => bail!("unknown option {flag}\n{USAGE}"),
                path if data.is_none() => data = Some(PathBuf::from(path)),
                extra => bail!("unexpected argument {extra:?}\n{USAGE}"),
            }
        }
        if let Some(data) = data {
            args.data = data;
        }
        Ok(args)
    }
}

fn main() -> Result<()> {
    // Denormal results written as zero on this thread and Rayon's pool: on Intel CPUs
    // training over denormals runs at half the rate or less (`mtl::model::denormals`).
    mtl::model::denormals::flush_to_zero();
    let args = Args::parse()?;

    // 1. Data, read in place.
    if !args.data.is_dir() {
        eprintln!(
            "error: SNIPS data not found at {}\n\
             expected a JointBERT directory with train/, dev/ and test/, each holding seq.in, \
             seq.out and label; pass its path as the first argument.\n{USAGE}",
            args.data.display()
        );
        std::process::exit(2);
    }
    let data = args
        .data
        .canonicalize()
        .unwrap_or_else(|_| args.data.clone());
    // Refuse before any work; `fit` replaces the old run only after its first checkpoint.
    if args.run_dir.exists() {
        if !args.overwrite {
            bail!(
                "run directory {} already exists; pass --overwrite to replace it or --run-dir \
                 to pick another",
                args.run_dir.display()
            );
        }
        // Only ever replace what a training wrote.
        if !args.run_dir.join(TRAIN_CONFIG_FILE).is_file() {
            bail!(
                "{} is not a run directory (no {TRAIN_CONFIG_FILE}); refusing to replace it",
                args.run_dir.display()
            );
        }
    }
    let (splits, report) =
        mtl::data::read_splits(&data, Some(Format::JointBert), &ReadOptions::default())
            .with_context(|| format!("reading {}", data.display()))?;
    println!("read {}: {report}", data.display());
    for warning in report.warnings.iter().take(5) {
        println!("  warning: {warning}");
    }
    let train = splits.train;
    let dev = splits.dev;
    let test = splits
        .test
        .with_context(|| format!("{} has no test/ split", data.display()))?;
    println!(
        "train {} / dev {} / test {} sentences",
        train.len(),
        dev.as_ref().map_or(0, Vec::len),
        test.len()
    );

    // 2. Word-level tokenizer and label maps, from the training split only.
    let max_seq_length = 64;
    let vocab = WordVocab::build(
        &train,
        &WordVocabConfig {
            lowercase: true,
            min_freq: 1,
            max_size: None,
        },
    );
    // Character ids of every word, for the model's character CNN: words never seen in
    // training (names, numbers) still get a useful vector.
    let chars = CharSpec::default();
    let encoder = Encoder::build(&train, TextEncoder::Word(vocab), max_seq_length)?
        .with_chars(Some(chars))?;
    println!(
        "vocabulary {} words, {} intents, {} slot tags",
        encoder.text.vocab_size(),
        encoder.labels.len(),
        encoder.tags.len()
    );
    let (_, test_encoding) = encoder.encode_all(&test)?;
    if test_encoding.unknown_labels + test_encoding.unknown_tags + test_encoding.truncated > 0 {
        println!(
            "test: {} unknown intents, {} unknown slot tags, {} truncated (scored as errors)",
            test_encoding.unknown_labels, test_encoding.unknown_tags, test_encoding.truncated
        );
    }

    // 3. The model.
    let model_config = MultitaskConfig::new(
        encoder.text.vocab_size(),
        encoder.labels.len(),
        encoder.tags.len(),
    )
    .with_d_model(128)
    .with_nhead(4)
    .with_num_encoder_layers(2)
    .with_dim_feedforward(512)
    .with_dropout(0.1)
    .with_max_seq_length(max_seq_length)
    .with_pad_token_id(encoder.text.pad_id() as usize)
    .with_char_features(Some(CharFeatures {
        max_chars: chars.max_chars,
        buckets: chars.buckets as usize,
        ..CharFeatures::default()
    }));
    let train_config = TrainConfig {
        epochs: args.epochs,
        sampling: SamplingStrategy::Joint,
        ..TrainConfig::default()
    };
    let device = Device::flex();
    device.seed(train_config.seed);
    let model = MultitaskTransformer::new(&model_config, &device)?;

    // 4. Train. `fit` replaces an earlier run in the directory only once this one has written
    // its first checkpoint (it trains beside it until then), so a failure keeps the old run.
    println!(
        "training {} epochs (batch {}, lr {}, joint sampling) into {}",
        train_config.epochs,
        train_config.batch_size,
        train_config.learning_rate,
        args.run_dir.display()
    );
    let started = Instant::now();
    let outcome = mtl::train::fit(
        model,
        &encoder,
        &train,
        dev.as_deref(),
        &train_config,
        Some(&args.run_dir),
        std::slice::from_ref(&device),
    )?;
    println!("trained in {:.0} s", started.elapsed().as_secs_f64());

    // 5. Test scores of the last epoch's model (the best one by dev score is in `best/`).
    let (report, _) = mtl::train::evaluate(
        &outcome.model,
        &encoder,
        &test,
        train_config.eval_batch_size,
        &device,
    )?;
    let intent = report.classification.as_ref().map_or(0.0, |c| c.accuracy);
    let slots = report.ner.as_ref().map_or(0.0, |n| n.f1);
    let frame = report.frame_accuracy.unwrap_or(0.0);
    println!("test ({} sentences):", report.examples);
    println!("  intent accuracy {:.2}%", 100.0 * intent);
    println!("  slot F1         {:.2}%", 100.0 * slots);
    println!("  frame accuracy  {:.2}%", 100.0 * frame);
    println!("run directory: {}", args.run_dir.display());
    Ok(())
}
