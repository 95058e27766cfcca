//! The training loop: task sampling, masked losses, AdamW with warmup/decay and global-norm
//! clipping, per-epoch validation, run directories with atomic checkpoints, resume, early
//! stopping and progress reporting.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use mtl_data::{Encoded, Encoder, Example, MultitaskBatcher, plan_batches};
use mtl_model::{MultitaskTransformer, Task};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::{EvalReport, InferenceEngine, PredictOptions, evaluate_with};
use crate::optim::{AdamW, AdamWConfig, LrScales, linear_warmup_decay};
use crate::parallel::{DataParallel, step_seed, token_rows};
use crate::rundir::{
    CheckpointWriter, OPTIMIZER_FILE, RunDir, STATE_FILE, TrainerState, ValidationId,
    check_optimizer, write_history, write_train_config,
};
use crate::sampler::{Pick, SamplingStrategy, TaskSampler};

// Run-directory handling lives in `crate::rundir`; these names stay here for existing callers.
pub use crate::rundir::{
    BEST_DIR, HISTORY_FILE, LAST_DIR, TRAIN_CONFIG_FILE, check_chars, checkpoint_dir,
    load_model_dir, resolve_model_dir, save_model_dir,
};

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
    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            SelectMetric::Combined => "combined",
            SelectMetric::Accuracy => "accuracy",
            SelectMetric::EntityF1 => "entity_f1",
            SelectMetric::FrameAccuracy => "frame_accuracy",
            SelectMetric::Loss => "loss",
        }
    }

    /// Checks that validation data with sentence labels (`labels`) and tags (`tags`) can give
    /// this metric: accuracy needs labels, entity F1 tags, frame accuracy both.
    ///
    /// # Errors
    ///
    /// [`Error::MetricUnavailable`] naming what the data lacks and the metrics it can give.
    pub fn check(self, labels: bool, tags: bool) -> Result<()> {
        let missing = match self {
            SelectMetric::Accuracy if !labels => Some("sentence labels"),
            SelectMetric::EntityF1 if !tags => Some("tags"),
            SelectMetric::FrameAccuracy if !(labels && tags) => Some("sentence labels and tags"),
            SelectMetric::Combined | SelectMetric::Loss if !(labels || tags) => {
                Some("sentence labels or tags")
            }
            _ => None,
        };
        let Some(missing) = missing else {
            return Ok(());
        };
        let available: Vec<&str> = [
            (SelectMetric::Combined, labels || tags),
            (SelectMetric::Accuracy, labels),
            (SelectMetric::EntityF1, tags),
            (SelectMetric::FrameAccuracy, labels && tags),
            (SelectMetric::Loss, labels || tags),
        ]
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(m, _)| m.name())
        .collect();
        Err(Error::MetricUnavailable {
            metric: self.name(),
            missing,
            available: if available.is_empty() {
                "none: give validation data with labels or tags".into()
            } else {
                available.join(", ")
            },
        })
    }

    /// [`check`](Self::check) for validation examples (none, or an empty set: nothing to
    /// check, no best epoch is chosen on them).
    ///
    /// # Errors
    ///
    /// [`Error::MetricUnavailable`].
    pub fn check_data(self, valid: Option<&[Example]>) -> Result<()> {
        match valid {
            Some(v) if !v.is_empty() => self.check(
                v.iter().any(|e| e.label.is_some()),
                v.iter().any(|e| e.tags.is_some()),
            ),
            _ => Ok(()),
        }
    }

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

    /// Checks every option's range.
    ///
    /// # Errors
    ///
    /// [`Error::Option`] naming the option.
    pub fn validate(&self) -> Result<()> {
        let bad = |option, message: &str| {
            Err(Error::Option {
                option,
                message: message.into(),
            })
        };
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be positive");
        }
        if self.eval_batch_size == 0 {
            return bad("eval_batch_size", "must be positive");
        }
        if !(0.0..1.0).contains(&self.adam_beta1) || !(0.0..1.0).contains(&self.adam_beta2) {
            return bad("adam_beta1/adam_beta2", "must be in [0, 1)");
        }
        if !(self.adam_eps.is_finite() && self.adam_eps > 0.0) {
            return bad("adam_eps", "must be a positive number");
        }
        if let Some(n) = self.max_grad_norm
            && !(n.is_finite() && n > 0.0)
        {
            return bad("max_grad_norm", "must be a positive number");
        }
        let w = self.loss_weights;
        if !(w.classification.is_finite()
            && w.ner.is_finite()
            && w.classification >= 0.0
            && w.ner >= 0.0)
        {
            return bad("loss_weights", "must be zero or positive numbers");
        }
        if self.patience == Some(0) {
            return bad("patience", "must be at least 1");
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
    /// Mean training loss over the epoch's steps (weighted sum for joint steps); `None` for an
    /// epoch in which no step was taken.
    pub train_loss: Option<f64>,
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
    /// The epoch whose model `best/` holds (the first of equal scores; the last epoch when
    /// there is no validation data); `None` before any epoch.
    pub best_epoch: Option<usize>,
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
/// file atomically, holding the directory's lock ([`RunDir::create`]): an earlier run in
/// `run_dir` is replaced once the first checkpoint is written; any other non-empty directory
/// is refused.
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
    config.select_metric.check_data(valid)?;
    let mut run = run_dir.map(|d| RunDir::create(d, true)).transpose()?;
    fit_in(
        model,
        encoder,
        train,
        valid,
        config,
        run.as_mut(),
        None,
        devices,
    )
}

/// [`fit`] into a run directory the caller opened (and may have written other files into),
/// stopping after epoch `stop_after` when given (the schedule still spans the whole run;
/// [`resume`] continues it, and the two parts equal an unbroken run to the bit).
#[allow(clippy::too_many_arguments)]
pub fn fit_in(
    model: MultitaskTransformer,
    encoder: &Encoder,
    train: &[Example],
    valid: Option<&[Example]>,
    config: &TrainConfig,
    run: Option<&mut RunDir>,
    stop_after: Option<usize>,
    devices: &[Device],
) -> Result<TrainOutcome> {
    config.validate()?;
    config.select_metric.check_data(valid)?;
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
        best_epoch: None,
        bad_epochs: 0,
        history: History::default(),
        config: config.clone(),
        validation: valid.filter(|v| !v.is_empty()).map(ValidationId::of),
    };
    if let Some(run) = &run {
        write_train_config(run.path(), config)?;
    }
    run_epochs(
        model, optimizer, state, encoder, train, valid, run, stop_after, devices,
    )
}

/// Continues the run in `run_dir` from its last checkpoint (model, optimizer, scheduler,
/// sampler and random state) up to `epochs` in total (`None`: the run's own setting), on
/// `devices` as [`fit`] trains (the devices may differ from the run's first part).
///
/// With the run's own number of epochs, the resumed run equals an unbroken one to the bit.
/// Another number re-plans the learning-rate schedule (warmup and linear decay) over the new
/// total from the step reached: the run then equals no unbroken run.
pub fn resume(
    run_dir: &Path,
    train: &[Example],
    valid: Option<&[Example]>,
    epochs: Option<usize>,
    devices: &[Device],
) -> Result<TrainOutcome> {
    let mut run = RunDir::open(run_dir)?;
    resume_in(&mut run, train, valid, epochs, None, devices)
}

/// [`resume`] in a run directory the caller opened, stopping after epoch `stop_after` when
/// given.
pub fn resume_in(
    run: &mut RunDir,
    train: &[Example],
    valid: Option<&[Example]>,
    epochs: Option<usize>,
    stop_after: Option<usize>,
    devices: &[Device],
) -> Result<TrainOutcome> {
    let device = main_device(devices)?;
    let run_dir = run.path().to_path_buf();
    let last = run_dir.join(LAST_DIR);
    let mut state = TrainerState::read(&last.join(STATE_FILE))?;
    if let Some(epochs) = epochs
        && epochs != state.config.epochs
    {
        if epochs == 0 {
            return Err(Error::Option {
                option: "epochs",
                message: "must be at least 1".into(),
            });
        }
        eprintln!(
            "{epochs} epochs instead of the run's {}: the learning-rate schedule is re-planned \
             over {epochs} epochs from step {}",
            state.config.epochs, state.step
        );
        state.config.epochs = epochs;
        state.config.min_steps = None;
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
                path: run_dir.clone(),
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
    state.config.select_metric.check_data(valid)?;
    let (model, encoder) = load_model_dir(&last, device)?;
    let optimizer_path = last.join(OPTIMIZER_FILE);
    let optimizer = AdamW::load(&optimizer_path, &device.clone().autodiff())?;
    check_optimizer(&optimizer, &model, &optimizer_path)?;
    // A kill after `last/` but before `history.jsonl` left the history one epoch behind.
    write_history(&run_dir, &state.history)?;
    run_epochs(
        model,
        optimizer,
        state,
        &encoder,
        train,
        valid,
        Some(run),
        stop_after,
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
    mut run: Option<&mut RunDir>,
    stop_after: Option<usize>,
    devices: &[Device],
) -> Result<TrainOutcome> {
    let config = state.config.clone();
    let device = main_device(devices)?;
    let ad_device = device.clone().autodiff();
    let parallel = DataParallel::new(devices)?;
    // Exact, and much cheaper on the CPU: a batch touches a few hundred of the table's rows.
    optimizer.defer_token_rows();
    // On the CPU, where the update is deferred by rows, the backward pass computes the
    // gradient of those rows only (elsewhere the optimizer would make it whole again).
    let cut_token_table = mtl_model::is_cpu_backend(device);
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
    let mut checkpoints = CheckpointWriter::default();

    let last_epoch = stop_after.map_or(epochs, |s| s.min(epochs));
    for epoch in state.epochs_done + 1..=last_epoch {
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
            checkpoints.check()?;
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
            // The token-embedding rows this batch reads, brought up to date (see
            // `AdamW::defer_token_rows`).
            model = optimizer.catch_up(model, Some(&token_rows(&items, batcher.pad_id)));
            let step = parallel.step(
                &model,
                &items,
                pick,
                config.loss_weights,
                step_seed(epoch_seed, state.step),
                &batcher,
                cut_token_table,
            );
            match pick {
                Pick::One(Task::Classification) => steps_per_task[0] += 1,
                Pick::One(Task::Ner) => steps_per_task[1] += 1,
                Pick::Both => steps_per_task[2] += 1,
            }
            let w = config.loss_weights;
            let parts = step.losses;
            let grads = step.parts;
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
            let (next, _) = optimizer.step_scaled(
                lr,
                model,
                grads,
                step.token_rows.as_deref(),
                config.max_grad_norm,
                &scales,
            );
            model = next;
            state.step += 1;
            progress.step(sum / n as f64, lr);
        }

        model = optimizer.catch_up(model, None);
        let eval_model = model.valid();
        // The engine `mtl eval` picks, so the score that chooses the best epoch is the one
        // the run's model is later evaluated with (on the CPU, the faster packed path).
        let report = match valid {
            Some(v) if !v.is_empty() => {
                let options = PredictOptions::new(config.eval_batch_size)
                    .with_engine(InferenceEngine::auto(device));
                Some(evaluate_with(&eval_model, encoder, v, &options, device)?.0)
            }
            _ => None,
        };
        let score = report.as_ref().map(|r| config.select_metric.score(r));
        let mean = |(s, c): (f64, u64)| (c > 0).then(|| s / c as f64);
        let record = EpochRecord {
            epoch,
            train_loss: (n > 0).then(|| sum / n as f64),
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
            state.best_epoch = Some(epoch);
            state.bad_epochs = 0;
        } else {
            state.bad_epochs += 1;
        }
        state.epochs_done = epoch;
        state.history.epochs.push(record);
        if let Some(run) = run.as_deref_mut() {
            checkpoints.start(
                run.path(),
                &eval_model,
                encoder,
                &optimizer,
                &state,
                improved,
            )?;
            // An earlier run in its place is replaced only now that this one has a model.
            if run.replacing() {
                checkpoints.wait()?;
                run.commit()?;
            }
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
    checkpoints.wait()?;
    Ok(TrainOutcome {
        model: model.valid(),
        history: state.history,
        stopped_early,
        best_epoch: state.best_epoch,
    })
}

fn epoch_line(r: &EpochRecord, epochs: usize) -> String {
    let mut line = match r.train_loss {
        Some(loss) => format!("epoch {}/{epochs} train_loss {loss:.4}", r.epoch),
        None => format!("epoch {}/{epochs} no training step", r.epoch),
    };
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
        let tokens = encoder.text.vocab_size().to_string();
        assert!(
            matches!(&err, Error::Inconsistent { path, found, expected, .. }
                if path.ends_with("vocab.json") && *found == tokens && expected == "10"),
            "{err}"
        );
        assert!(encoder.text.vocab_size() > 30);
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
