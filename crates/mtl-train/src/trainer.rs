//! The training loop: task sampling, masked losses, AdamW with warmup/decay and global-norm
//! clipping, per-epoch validation, run directories with atomic checkpoints, resume, early
//! stopping and progress reporting.

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use mtl_data::{Encoded, Encoder, Example, MultitaskBatcher, plan_batches};
use mtl_model::{MultitaskTransformer, Task, write_atomic};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::{EvalReport, evaluate};
use crate::optim::{AdamW, AdamWConfig, LrScales, linear_warmup_decay};
use crate::parallel::{DataParallel, step_seed};
use crate::sampler::{Pick, SamplingStrategy, TaskSampler};

/// Weights of the per-task losses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossWeights {
    /// Weight of the classification loss.
    pub classification: f64,
    /// Weight of the NER loss.
    pub ner: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            classification: 1.0,
            ner: 1.0,
        }
    }
}

/// The validation number that picks the best checkpoint and drives early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SelectMetric {
    /// Mean of classification accuracy and entity F1.
    #[default]
    Combined,
    /// Classification accuracy.
    Accuracy,
    /// Entity-level F1 (seqeval default mode).
    EntityF1,
    /// Frame accuracy.
    FrameAccuracy,
    /// Sum of the validation losses (lower is better).
    Loss,
}

impl SelectMetric {
    fn score(self, r: &EvalReport) -> f64 {
        match self {
            SelectMetric::Combined => r.combined_score(),
            SelectMetric::Accuracy => r.classification.as_ref().map_or(0.0, |c| c.accuracy),
            SelectMetric::EntityF1 => r.ner.as_ref().map_or(0.0, |n| n.f1),
            SelectMetric::FrameAccuracy => r.frame_accuracy.unwrap_or(0.0),
            SelectMetric::Loss => {
                let c = r
                    .classification
                    .as_ref()
                    .and_then(|c| c.loss)
                    .unwrap_or(0.0);
                let n = r.ner.as_ref().and_then(|n| n.loss).unwrap_or(0.0);
                -(c + n)
            }
        }
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Plain lines, one per epoch.
    Plain,
    /// Nothing.
    Off,
}

/// Every training option. Defaults suit training a small model from scratch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training data (at least; see `min_steps`).
    pub epochs: usize,
    /// Train for at least this many optimizer steps: a corpus too small to give them in
    /// `epochs` passes gets more epochs (the learning-rate schedule spans them all). A recipe
    /// tuned on one corpus then transfers to smaller ones, which need more passes over their
    /// data; `patience` stops those that need fewer. `None`: exactly `epochs`.
    pub min_steps: Option<u64>,
    /// Training batch size.
    pub batch_size: usize,
    /// Evaluation batch size.
    pub eval_batch_size: usize,
    /// Peak learning rate (of the encoder, when `head_learning_rate` is set).
    pub learning_rate: f64,
    /// Peak learning rate of the heads (classifier, NER head, sentence-to-token map);
    /// `None`: `learning_rate`. Fine-tuning a pretrained encoder wants heads about ten times
    /// faster than the encoder (1e-3 against 1e-4).
    pub head_learning_rate: Option<f64>,
    /// Layer-wise learning-rate decay in `(0, 1]`: the top encoder layer trains at
    /// `learning_rate`, each layer below at `layer_lr_decay` times the one above, the
    /// embeddings at the lowest rate. `None`: one rate for the whole encoder.
    pub layer_lr_decay: Option<f64>,
    /// Keep the embedding tables (token, position, token type) fixed: no gradient is computed
    /// for them and AdamW skips them (for a 30522 x 384 vocabulary, a fifth of each step).
    pub freeze_embeddings: bool,
    /// AdamW updates only the embedding rows each batch used (rows and their moments stay
    /// as they are until a batch uses them; see [`AdamWConfig::lazy_embeddings`]): a
    /// vocabulary of 10,000+ words then costs a step little more than the rows it touched.
    pub lazy_embeddings: bool,
    /// Linear warmup steps, then linear decay to zero.
    pub warmup_steps: u64,
    /// Warmup as a fraction of all training steps, in `[0, 1)`; overrides `warmup_steps`.
    pub warmup_ratio: Option<f64>,
    /// AdamW weight decay (not on biases and LayerNorm).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// AdamW beta1.
    pub adam_beta1: f64,
    /// AdamW beta2.
    pub adam_beta2: f64,
    /// AdamW epsilon (PyTorch's 1e-8).
    pub adam_eps: f64,
    /// Word dropout: the probability that a training token (not a special token) is replaced
    /// by the unknown token, so the model learns what to do with words it has not seen.
    pub word_dropout: f64,
    /// Which task each batch trains.
    pub sampling: SamplingStrategy,
    /// Per-task loss weights.
    pub loss_weights: LossWeights,
    /// Seed of shuffling, task sampling, dropout and initialisation.
    pub seed: u64,
    /// Group examples of similar length into batches (less padding).
    pub bucketing: bool,
    /// Stop after this many epochs without improvement of `select_metric`.
    pub patience: Option<usize>,
    /// Metric that picks the best checkpoint.
    pub select_metric: SelectMetric,
    /// Progress display.
    pub progress: ProgressMode,
    /// Devices to train on, by name, for the binaries (`mtl train` parses them; [`fit`]
    /// takes the devices themselves): `["cpu", "cpu"]` trains two data-parallel replicas on
    /// the CPU, `["libtorch-cuda:0", "libtorch-cuda:1"]` one per GPU. `None`: `--device`.
    pub devices: Option<Vec<String>>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            min_steps: None,
            batch_size: 32,
            eval_batch_size: 128,
            learning_rate: 5e-4,
            head_learning_rate: None,
            layer_lr_decay: None,
            freeze_embeddings: false,
            lazy_embeddings: false,
            warmup_steps: 100,
            warmup_ratio: None,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            word_dropout: 0.0,
            sampling: SamplingStrategy::Joint,
            loss_weights: LossWeights::default(),
            seed: 42,
            bucketing: true,
            patience: None,
            select_metric: SelectMetric::Combined,
            progress: ProgressMode::Auto,
            devices: None,
        }
    }
}

impl TrainConfig {
    /// Epochs to train with `batches_per_epoch` steps each: `epochs`, or more to reach
    /// `min_steps`.
    pub fn epochs_for(&self, batches_per_epoch: u64) -> usize {
        let needed = self
            .min_steps
            .map_or(0, |m| m.div_ceil(batches_per_epoch.max(1)) as usize);
        self.epochs.max(needed)
    }

    fn validate(&self) -> Result<()> {
        let bad = |option, message: &str| {
            Err(Error::Option {
                option,
                message: message.into(),
            })
        };
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch_size", "must be positive");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate", "must be a positive number");
        }
        if let Some(lr) = self.head_learning_rate
            && !(lr.is_finite() && lr > 0.0)
        {
            return bad("head_learning_rate", "must be a positive number");
        }
        if let Some(d) = self.layer_lr_decay
            && !(d > 0.0 && d <= 1.0)
        {
            return bad("layer_lr_decay", "must be in (0, 1]");
        }
        if let Some(r) = self.warmup_ratio
            && !(0.0..1.0).contains(&r)
        {
            return bad("warmup_ratio", "must be in [0, 1)");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", "must be zero or positive");
        }
        if !(0.0..1.0).contains(&self.word_dropout) {
            return bad("word_dropout", "must be in [0, 1)");
        }
        if let SamplingStrategy::Temperature { temperature } = self.sampling
            && !(temperature.is_finite() && temperature > 0.0)
        {
            return bad("sampling.temperature", "must be positive");
        }
        Ok(())
    }
}

/// One epoch of the history (one line of `history.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's steps (weighted sum for joint steps).
    pub train_loss: f64,
    /// Mean classification training loss over the steps that trained it.
    pub train_loss_classification: Option<f64>,
    /// Mean NER training loss over the steps that trained it.
    pub train_loss_ner: Option<f64>,
    /// Validation classification loss.
    pub valid_loss_classification: Option<f64>,
    /// Validation NER loss.
    pub valid_loss_ner: Option<f64>,
    /// Validation classification accuracy.
    pub valid_accuracy: Option<f64>,
    /// Validation entity F1 (seqeval, default mode).
    pub valid_entity_f1: Option<f64>,
    /// Validation NER token accuracy without padding.
    pub valid_token_accuracy: Option<f64>,
    /// Validation frame accuracy.
    pub valid_frame_accuracy: Option<f64>,
    /// Value of the selection metric.
    pub score: Option<f64>,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// Steps per task this epoch: [classification, ner, joint].
    pub steps_per_task: [u64; 3],
    /// Wall time of the epoch (training and validation), seconds.
    pub seconds: f64,
    /// Full validation report.
    pub valid: Option<EvalReport>,
}

/// The per-epoch history a training returns, as the seed's `train_model`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// One record per finished epoch.
    pub epochs: Vec<EpochRecord>,
}

/// What [`fit`] returns.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The model after the last epoch, in evaluation mode on the plain device.
    pub model: MultitaskTransformer,
    /// The history.
    pub history: History,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    epochs_done: usize,
    step: u64,
    best_score: Option<f64>,
    bad_epochs: usize,
    history: History,
    config: TrainConfig,
    /// The validation data the best checkpoint was chosen on (absent in runs written before
    /// it was recorded).
    #[serde(default)]
    validation: Option<ValidationId>,
}

/// What identifies a validation set: its size and a fingerprint of its words, labels and tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ValidationId {
    examples: usize,
    fingerprint: u64,
}

impl ValidationId {
    /// FNV-1a over each example's words, label and tags (a stable hash, unlike std's).
    fn of(valid: &[Example]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes.iter().chain([0xff].iter()) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for e in valid {
            e.words.iter().for_each(|w| eat(w.as_bytes()));
            eat(e.label.as_deref().unwrap_or("\u{0}").as_bytes());
            for t in e.tags.iter().flatten() {
                eat(t.as_bytes());
            }
            eat(b"\n");
        }
        Self {
            examples: valid.len(),
            fingerprint: h,
        }
    }
}

/// File of the training config inside a run directory.
pub const TRAIN_CONFIG_FILE: &str = "train_config.json";
/// File of the history inside a run directory.
pub const HISTORY_FILE: &str = "history.jsonl";
/// Sub-directory with the last checkpoint (model, encoder, optimizer and trainer state).
pub const LAST_DIR: &str = "last";
/// Sub-directory with the best model (model and encoder).
pub const BEST_DIR: &str = "best";
const OPTIMIZER_FILE: &str = "optimizer.bin";
/// File of the trainer state (what `resume` needs besides the weights) in `last/`.
pub const STATE_FILE: &str = "trainer_state.json";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a complete model directory next to `dir` and swaps it in, so that `dir` always holds
/// either the previous complete checkpoint or the new one.
fn swap_in_dir(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let fresh = dir.with_extension("new");
    let old = dir.with_extension("old");
    if fresh.exists() {
        fs::remove_dir_all(&fresh).map_err(io(&fresh))?;
    }
    fs::create_dir_all(&fresh).map_err(io(&fresh))?;
    write(&fresh)?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    if dir.exists() {
        fs::rename(dir, &old).map_err(io(dir))?;
    }
    fs::rename(&fresh, dir).map_err(io(&fresh))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

/// Resolves a checkpoint directory, falling back to the `.old` copy a kill between the two
/// renames of a swap leaves behind.
pub fn checkpoint_dir(dir: &Path) -> PathBuf {
    let old = dir.with_extension("old");
    if !dir.exists() && old.exists() {
        old
    } else {
        dir.to_path_buf()
    }
}

/// Saves a model with its encoder (tokenizer and label maps) into `dir`.
pub fn save_model_dir(model: &MultitaskTransformer, encoder: &Encoder, dir: &Path) -> Result<()> {
    model.save_dir(dir)?;
    encoder.save(dir)?;
    Ok(())
}

/// Loads a model directory written by [`save_model_dir`] (or a run directory: its `best/`,
/// else its `last/`).
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<(MultitaskTransformer, Encoder)> {
    let dir = resolve_model_dir(dir);
    let model = MultitaskTransformer::load_dir(&dir, device)?;
    let encoder = Encoder::load(&dir)?;
    check_chars(&model, &encoder)?;
    Ok((model, encoder))
}

/// A run directory resolves to its best model, else its last; a model directory to itself.
pub fn resolve_model_dir(dir: &Path) -> PathBuf {
    for sub in [BEST_DIR, LAST_DIR] {
        let d = checkpoint_dir(&dir.join(sub));
        if d.join(mtl_model::io::CONFIG_FILE).exists() {
            return d;
        }
    }
    dir.to_path_buf()
}

struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
}

impl Progress {
    fn new(mode: ProgressMode, steps: u64, epoch: usize, epochs: usize) -> Self {
        let terminal = std::io::stderr().is_terminal();
        match mode {
            ProgressMode::Auto if terminal => {
                let bar = ProgressBar::new(steps);
                if let Ok(style) = ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(format!("{epoch}/{epochs}"));
                Self {
                    bar: Some(bar),
                    plain: false,
                }
            }
            ProgressMode::Off => Self {
                bar: None,
                plain: false,
            },
            _ => Self {
                bar: None,
                plain: true,
            },
        }
    }
    fn step(&self, loss: f64, lr: f64) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
        }
    }
    fn finish(&self, line: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.bar.is_some() || self.plain {
            eprintln!("{line}");
        }
    }
}

/// Checks that `encoder` fits `model`: every token id it can make has a row in the
/// embedding table, and it makes the character ids the model reads (both without, or both
/// with the same `max_chars` and `buckets`).
///
/// # Errors
///
/// [`Error::VocabMismatch`] or [`Error::CharMismatch`].
pub fn check_chars(model: &MultitaskTransformer, encoder: &Encoder) -> Result<()> {
    let vocab = encoder.text.vocab_size();
    let table = model.config().vocab_size;
    if vocab > table {
        return Err(Error::VocabMismatch {
            tokenizer: vocab,
            model: table,
        });
    }
    let reads = model
        .config()
        .char_features
        .as_ref()
        .map(|c| (c.max_chars, c.buckets));
    let makes = encoder.chars.map(|c| (c.max_chars, c.buckets as usize));
    if reads == makes {
        Ok(())
    } else {
        Err(Error::CharMismatch {
            model: reads,
            encoder: makes,
        })
    }
}

/// A copy of `e` whose word tokens are each replaced by `unk` with probability `p`.
fn word_dropout(e: &Encoded, unk: u32, p: f64, rng: &mut StdRng) -> Encoded {
    let mut out = e.clone();
    for (id, word) in out.ids.iter_mut().zip(&e.word_ids) {
        if word.is_some() && rng.random::<f64>() < p {
            *id = unk;
        }
    }
    out
}

fn labelled_counts(encoded: &[Encoded]) -> [usize; 2] {
    [
        encoded
            .iter()
            .filter(|e| e.has_label && e.label_target >= 0)
            .count(),
        encoded.iter().filter(|e| e.has_tags).count(),
    ]
}

/// Trains `model` on `train`, validating on `valid` after every epoch.
///
/// With `run_dir`, writes `train_config.json`, `history.jsonl`, `last/` (model, encoder,
/// optimizer and trainer state, for [`resume`]) and `best/` (by `config.select_metric`), every
/// file atomically.
///
/// `devices` are plain devices (training runs on their autodiff twins). The first is the main
/// device: it holds the model and the optimizer and validates. With more than one, training is
/// data-parallel: every step's batch is cut into one part per device (a device may be named
/// twice: two CPU replicas), each part runs forward and backward on its own thread, and the
/// summed gradients take one optimizer step. Losses are normalised by the whole batch, so the
/// run equals a one-device run with the same batch size, up to float rounding.
pub fn fit(
    model: MultitaskTransformer,
    encoder: &Encoder,
    train: &[Example],
    valid: Option<&[Example]>,
    config: &TrainConfig,
    run_dir: Option<&Path>,
    devices: &[Device],
) -> Result<TrainOutcome> {
    config.validate()?;
    let optimizer = AdamW::new(AdamWConfig {
        beta1: config.adam_beta1,
        beta2: config.adam_beta2,
        eps: config.adam_eps,
        weight_decay: config.weight_decay,
        lazy_embeddings: config.lazy_embeddings,
    });
    let state = TrainerState {
        epochs_done: 0,
        step: 0,
        best_score: None,
        bad_epochs: 0,
        history: History::default(),
        config: config.clone(),
        validation: valid.filter(|v| !v.is_empty()).map(ValidationId::of),
    };
    if let Some(dir) = run_dir {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let json = serde_json::to_vec_pretty(config).map_err(|e| Error::State {
            path: dir.join(TRAIN_CONFIG_FILE),
            message: e.to_string(),
        })?;
        write_atomic(&dir.join(TRAIN_CONFIG_FILE), &json).map_err(io(dir))?;
    }
    run_epochs(
        model, optimizer, state, encoder, train, valid, run_dir, devices,
    )
}

/// Continues the run in `run_dir` from its last checkpoint (model, optimizer, scheduler,
/// sampler and random state) up to `epochs` in total (`None`: the run's own setting), on
/// `devices` as [`fit`] trains (the devices may differ from the run's first part).
pub fn resume(
    run_dir: &Path,
    train: &[Example],
    valid: Option<&[Example]>,
    epochs: Option<usize>,
    devices: &[Device],
) -> Result<TrainOutcome> {
    let device = main_device(devices)?;
    let last = checkpoint_dir(&run_dir.join(LAST_DIR));
    let state_path = last.join(STATE_FILE);
    let text = fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let mut state: TrainerState = serde_json::from_str(&text).map_err(|e| Error::State {
        path: state_path.clone(),
        message: e.to_string(),
    })?;
    if let Some(epochs) = epochs {
        state.config.epochs = epochs;
    }
    // The best checkpoint was chosen on validation data: another set (or none) would compare
    // other numbers, or replace `best/` every epoch.
    let now = valid.filter(|v| !v.is_empty()).map(ValidationId::of);
    if state.best_score.is_some() && now != state.validation {
        let count = |v: Option<ValidationId>| v.map_or("no".into(), |v| v.examples.to_string());
        let then = state.validation;
        let same_size = matches!((then, now), (Some(a), Some(b)) if a.examples == b.examples);
        if then.is_some() || now.is_none() {
            return Err(Error::ValidationChanged {
                path: run_dir.to_path_buf(),
                then: count(then),
                now: if same_size {
                    format!("{} different", count(now))
                } else {
                    count(now)
                },
                consequence: if now.is_none() {
                    "replace best/ every epoch"
                } else {
                    "compare scores of different data"
                },
            });
        }
    }
    let (model, encoder) = load_model_dir(&last, device)?;
    let optimizer = AdamW::load(&last.join(OPTIMIZER_FILE), &device.clone().autodiff())?;
    run_epochs(
        model,
        optimizer,
        state,
        &encoder,
        train,
        valid,
        Some(run_dir),
        devices,
    )
}

fn main_device(devices: &[Device]) -> Result<&Device> {
    devices.first().ok_or_else(|| Error::Option {
        option: "devices",
        message: "name at least one device".into(),
    })
}

#[allow(clippy::too_many_arguments)]
fn run_epochs(
    model: MultitaskTransformer,
    mut optimizer: AdamW,
    mut state: TrainerState,
    encoder: &Encoder,
    train: &[Example],
    valid: Option<&[Example]>,
    run_dir: Option<&Path>,
    devices: &[Device],
) -> Result<TrainOutcome> {
    let config = state.config.clone();
    let device = main_device(devices)?;
    let ad_device = device.clone().autodiff();
    let parallel = DataParallel::new(devices)?;
    // Through the plain device: parameters must be leaves when autodiff tracks them.
    let mut model = model.valid().to_device(&ad_device).train();
    if config.freeze_embeddings {
        model = model.freeze_embeddings();
    }
    let scales = LrScales::new(
        config.learning_rate,
        config.head_learning_rate,
        config.layer_lr_decay,
        model.config().num_encoder_layers,
    );
    let (encoded, _) = encoder.encode_all(train)?;
    let counts = labelled_counts(&encoded);
    if counts == [0, 0] {
        return Err(Error::NoLabels);
    }
    let sampler = TaskSampler::new(config.sampling, counts);
    check_chars(&model, encoder)?;
    let batcher = MultitaskBatcher::for_encoder(encoder);
    let unk_for_dropout = if config.word_dropout > 0.0 {
        Some(encoder.text.unk_id().ok_or_else(|| Error::Option {
            option: "word_dropout",
            message: "the tokenizer has no unknown token ([UNK], <unk>)".into(),
        })?)
    } else {
        None
    };
    let lengths: Vec<usize> = encoded.iter().map(Encoded::len).collect();
    let batches_per_epoch = lengths.len().div_ceil(config.batch_size) as u64;
    let epochs = config.epochs_for(batches_per_epoch);
    if epochs > config.epochs {
        eprintln!(
            "{epochs} epochs instead of {}: min_steps {} at {batches_per_epoch} steps per epoch",
            config.epochs,
            config.min_steps.unwrap_or(0)
        );
    }
    let total_steps = batches_per_epoch * epochs as u64;
    let warmup_steps = config.warmup_ratio.map_or(config.warmup_steps, |r| {
        (r * total_steps as f64).round() as u64
    });
    let mut stopped_early = false;

    for epoch in state.epochs_done + 1..=epochs {
        let started = Instant::now();
        // Every epoch has its own seed: a resumed run replays exactly what an unbroken one does.
        let epoch_seed = config
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(epoch as u64);
        let mut rng = StdRng::seed_from_u64(epoch_seed);
        // A stream of its own, so word dropout leaves batches and task picks as they were.
        let mut word_rng = StdRng::seed_from_u64(epoch_seed ^ 0x5EED_D50F_0000_0001);
        for d in devices {
            d.clone().autodiff().seed(epoch_seed);
        }
        let plan = plan_batches(
            &lengths,
            config.batch_size,
            Some(&mut rng),
            config.bucketing,
        );
        let progress = Progress::new(config.progress, plan.len() as u64, epoch, epochs);
        let (mut sum, mut n) = (0.0f64, 0u64);
        let mut task_sums = [(0.0f64, 0u64); 2];
        let mut steps_per_task = [0u64; 3];
        let mut lr =
            linear_warmup_decay(config.learning_rate, state.step, warmup_steps, total_steps);
        for indices in plan {
            let items: Vec<&Encoded> = indices.iter().map(|&i| &encoded[i]).collect();
            let available = [
                items.iter().any(|e| e.has_label && e.label_target >= 0),
                items.iter().any(|e| e.has_tags),
            ];
            let Some(pick) = sampler.pick(state.step, available, &mut rng) else {
                continue;
            };
            let dropped: Vec<Encoded> = match unk_for_dropout {
                Some(unk) => items
                    .iter()
                    .map(|e| word_dropout(e, unk, config.word_dropout, &mut word_rng))
                    .collect(),
                None => Vec::new(),
            };
            let items: Vec<&Encoded> = if dropped.is_empty() {
                items
            } else {
                dropped.iter().collect()
            };
            let step = parallel.step(
                &model,
                &items,
                pick,
                config.loss_weights,
                step_seed(epoch_seed, state.step),
                &batcher,
            );
            match pick {
                Pick::One(Task::Classification) => steps_per_task[0] += 1,
                Pick::One(Task::Ner) => steps_per_task[1] += 1,
                Pick::Both => steps_per_task[2] += 1,
            }
            let w = config.loss_weights;
            let parts = step.losses;
            let grads = step.grads;
            for (i, part) in parts.iter().enumerate() {
                if let Some(v) = part {
                    if !v.is_finite() {
                        progress.finish("");
                        return Err(Error::NonFiniteLoss {
                            task: Task::ALL[i].name(),
                            value: *v,
                            epoch,
                            step: state.step,
                        });
                    }
                    task_sums[i].0 += *v as f64;
                    task_sums[i].1 += 1;
                }
            }
            let total =
                parts[0].unwrap_or(0.0) as f64 * w.classification * parts[0].is_some() as u8 as f64
                    + parts[1].unwrap_or(0.0) as f64 * w.ner * parts[1].is_some() as u8 as f64;
            sum += total;
            n += 1;
            lr = linear_warmup_decay(config.learning_rate, state.step, warmup_steps, total_steps);
            let (next, _) = optimizer.step_scaled(lr, model, grads, config.max_grad_norm, &scales);
            model = next;
            state.step += 1;
            progress.step(sum / n as f64, lr);
        }

        let eval_model = model.valid();
        let report = match valid {
            Some(v) if !v.is_empty() => {
                Some(evaluate(&eval_model, encoder, v, config.eval_batch_size, device)?.0)
            }
            _ => None,
        };
        let score = report.as_ref().map(|r| config.select_metric.score(r));
        let mean = |(s, c): (f64, u64)| (c > 0).then(|| s / c as f64);
        let record = EpochRecord {
            epoch,
            train_loss: if n > 0 { sum / n as f64 } else { 0.0 },
            train_loss_classification: mean(task_sums[0]),
            train_loss_ner: mean(task_sums[1]),
            valid_loss_classification: report
                .as_ref()
                .and_then(|r| r.classification.as_ref())
                .and_then(|c| c.loss),
            valid_loss_ner: report
                .as_ref()
                .and_then(|r| r.ner.as_ref())
                .and_then(|c| c.loss),
            valid_accuracy: report
                .as_ref()
                .and_then(|r| r.classification.as_ref())
                .map(|c| c.accuracy),
            valid_entity_f1: report.as_ref().and_then(|r| r.ner.as_ref()).map(|c| c.f1),
            valid_token_accuracy: report
                .as_ref()
                .and_then(|r| r.ner.as_ref())
                .map(|c| c.token_accuracy),
            valid_frame_accuracy: report.as_ref().and_then(|r| r.frame_accuracy),
            score,
            lr,
            step: state.step,
            steps_per_task,
            seconds: started.elapsed().as_secs_f64(),
            valid: report,
        };
        progress.finish(&epoch_line(&record, epochs));
        let improved = match (score, state.best_score) {
            (Some(s), Some(best)) => s > best,
            (Some(_), None) => true,
            (None, _) => true,
        };
        if improved {
            state.best_score = score.or(state.best_score);
            state.bad_epochs = 0;
        } else {
            state.bad_epochs += 1;
        }
        state.epochs_done = epoch;
        state.history.epochs.push(record);
        if let Some(dir) = run_dir {
            write_checkpoint(dir, &eval_model, encoder, &optimizer, &state, improved)?;
        }
        if let Some(patience) = config.patience
            && state.bad_epochs >= patience
            && epoch < epochs
        {
            eprintln!("early stopping: no improvement in {patience} epochs");
            stopped_early = true;
            break;
        }
    }
    Ok(TrainOutcome {
        model: model.valid(),
        history: state.history,
        stopped_early,
    })
}

fn write_checkpoint(
    dir: &Path,
    model: &MultitaskTransformer,
    encoder: &Encoder,
    optimizer: &AdamW,
    state: &TrainerState,
    best: bool,
) -> Result<()> {
    // `best/` before `last/`: the trainer state in `last/` is what a resume believes, so it
    // must never name a best checkpoint that a kill kept from being written. A kill between
    // the two swaps leaves `last/` one epoch behind, and the resumed run replays that epoch
    // (deterministically) and writes the same `best/` again.
    if best {
        swap_in_dir(&dir.join(BEST_DIR), |d| save_model_dir(model, encoder, d))?;
    }
    swap_in_dir(&dir.join(LAST_DIR), |d| {
        save_model_dir(model, encoder, d)?;
        optimizer.save(&d.join(OPTIMIZER_FILE))?;
        let json = serde_json::to_vec(state).map_err(|e| Error::State {
            path: d.join(STATE_FILE),
            message: e.to_string(),
        })?;
        write_atomic(&d.join(STATE_FILE), &json).map_err(io(d))
    })?;
    let mut lines = String::new();
    for record in &state.history.epochs {
        let line = serde_json::to_string(record).map_err(|e| Error::State {
            path: dir.join(HISTORY_FILE),
            message: e.to_string(),
        })?;
        lines.push_str(&line);
        lines.push('\n');
    }
    write_atomic(&dir.join(HISTORY_FILE), lines.as_bytes()).map_err(io(dir))
}

fn epoch_line(r: &EpochRecord, epochs: usize) -> String {
    let mut line = format!("epoch {}/{epochs} train_loss {:.4}", r.epoch, r.train_loss);
    let fields = [
        ("val_loss_cls", r.valid_loss_classification),
        ("val_loss_ner", r.valid_loss_ner),
        ("val_acc", r.valid_accuracy),
        ("val_f1", r.valid_entity_f1),
        ("val_frame", r.valid_frame_accuracy),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            line.push_str(&format!(" {name} {v:.4}"));
        }
    }
    line.push_str(&format!(" lr {:.2e} ({:.1}s)", r.lr, r.seconds));
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::GradientsParams;
    use burn::tensor::Tensor;

    fn encoded() -> Encoded {
        Encoded {
            ids: vec![101, 7, 8, 9, 10, 102],
            word_ids: vec![None, Some(0), Some(1), Some(1), Some(2), None],
            label_target: 0,
            tag_targets: vec![-100, 1, 2, -100, 0, -100],
            has_label: true,
            has_tags: true,
            truncated: false,
            chars: Vec::new(),
        }
    }

    #[test]
    fn word_dropout_replaces_word_tokens_only_at_its_rate() {
        let e = encoded();
        let mut rng = StdRng::seed_from_u64(1);
        let all = word_dropout(&e, 1, 0.999_999, &mut rng);
        assert_eq!(all.ids, vec![101, 1, 1, 1, 1, 102]);
        assert_eq!(
            (all.tag_targets.clone(), all.word_ids.clone()),
            (e.tag_targets.clone(), e.word_ids.clone())
        );
        assert_eq!(word_dropout(&e, 1, 0.0, &mut rng), e);
        let replaced: usize = (0..2000)
            .map(|_| {
                word_dropout(&e, 1, 0.25, &mut rng)
                    .ids
                    .iter()
                    .filter(|&&id| id == 1)
                    .count()
            })
            .sum();
        let rate = replaced as f64 / (2000.0 * 4.0);
        assert!((rate - 0.25).abs() < 0.02, "rate {rate}");
    }

    #[test]
    fn word_dropout_outside_its_range_is_refused() {
        for p in [-0.1, 1.0, f64::NAN] {
            let config = TrainConfig {
                word_dropout: p,
                ..TrainConfig::default()
            };
            assert!(config.validate().is_err(), "{p}");
        }
    }

    #[test]
    fn fine_tuning_options_outside_their_range_are_refused() {
        let cases = [
            TrainConfig {
                head_learning_rate: Some(0.0),
                ..TrainConfig::default()
            },
            TrainConfig {
                layer_lr_decay: Some(1.5),
                ..TrainConfig::default()
            },
            TrainConfig {
                layer_lr_decay: Some(0.0),
                ..TrainConfig::default()
            },
            TrainConfig {
                warmup_ratio: Some(1.0),
                ..TrainConfig::default()
            },
        ];
        for config in cases {
            assert!(
                matches!(config.validate(), Err(Error::Option { .. })),
                "{config:?}"
            );
        }
    }

    /// Frozen embeddings get no gradient (so AdamW skips them); every other parameter does.
    #[test]
    fn frozen_embeddings_get_no_gradient() {
        use burn::tensor::{Bool, Int, TensorData};
        use mtl_model::{MultitaskConfig, PositionalEncoding, SharedEncoder};
        let device = Device::flex().autodiff();
        let mut config = MultitaskConfig::new(20, 3, 4)
            .with_d_model(8)
            .with_nhead(2)
            .with_num_encoder_layers(1)
            .with_dim_feedforward(16)
            .with_positional_encoding(PositionalEncoding::Learned);
        config.type_vocab_size = 2;
        config.embedding_norm = true;
        let model = MultitaskTransformer::new(&config, &device)
            .expect("model")
            .train();
        let model = model.freeze_embeddings();
        let tokens =
            Tensor::<2, Int>::from_data(TensorData::new(vec![3i64, 4, 5, 6], [2, 2]), &device);
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![false; 4], [2, 2]), &device);
        let out = model.forward_joint(tokens, mask);
        let loss = out.classification.sum() + out.ner.sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let SharedEncoder::Transformer(encoder) = &model.encoder;
        assert!(grads.get::<2>(encoder.token_embedding.weight.id).is_none());
        let positions = encoder.position_embedding.as_ref().expect("learned");
        assert!(grads.get::<2>(positions.weight.id).is_none());
        let types = encoder.token_type_embedding.as_ref().expect("types");
        assert!(grads.get::<2>(types.weight.id).is_none());
        let norm = encoder.embedding_norm.as_ref().expect("norm");
        assert!(
            grads.get::<1>(norm.gamma.id).is_some(),
            "the embedding LayerNorm trains"
        );
        assert!(grads.get::<2>(encoder.layers[0].qkv.weight.id).is_some());
        assert!(grads.get::<2>(model.classifier.weight.id).is_some());
    }

    #[test]
    fn a_tokenizer_larger_than_the_embedding_table_is_refused() {
        use mtl_data::{TextEncoder, WordVocab, WordVocabConfig};
        let words: Vec<Example> = (0..30)
            .map(|i| Example::from_text(&format!("w{i}")))
            .collect();
        let vocab = WordVocab::build(&words, &WordVocabConfig::default());
        let encoder = Encoder::build(&words, TextEncoder::Word(vocab), 8).expect("encoder");
        let config = mtl_model::MultitaskConfig::new(10, 2, 2)
            .with_d_model(8)
            .with_nhead(2)
            .with_num_encoder_layers(1)
            .with_dim_feedforward(8);
        let model = MultitaskTransformer::new(&config, &Device::flex()).expect("model");
        let err = check_chars(&model, &encoder).expect_err("must be refused");
        assert!(
            matches!(err, Error::VocabMismatch { tokenizer, model: 10 } if tokenizer > 30),
            "{err}"
        );
    }

    #[test]
    fn min_steps_adds_epochs_for_small_corpora_only() {
        let config = TrainConfig {
            epochs: 4,
            min_steps: Some(1600),
            ..TrainConfig::default()
        };
        // SNIPS at batch 32: 409 steps an epoch, 4 epochs are enough.
        assert_eq!(config.epochs_for(409), 4);
        // A third of it: 137 steps an epoch, 12 epochs reach 1600 steps.
        assert_eq!(config.epochs_for(137), 12);
        assert_eq!(config.epochs_for(0), 1600);
        let plain = TrainConfig {
            epochs: 4,
            ..TrainConfig::default()
        };
        assert_eq!(plain.epochs_for(10), 4);
    }
}
