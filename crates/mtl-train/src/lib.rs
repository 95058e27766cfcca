//! `mtl-train`: losses, metrics, task sampling and the training loop of mtl.
//!
//! - [`loss`]: cross-entropy with PyTorch's `ignore_index = -100`;
//! - [`optim`]: AdamW (PyTorch semantics, no decay on biases/LayerNorm), global-norm clipping,
//!   linear warmup/decay;
//! - [`sampler`]: which task each batch trains (`random`, `proportional`, `temperature`,
//!   `round-robin`, `joint`);
//! - [`metrics`]: seqeval-exact entity scores, classification reports, frame accuracy;
//! - [`eval`]: batched prediction and evaluation;
//! - [`texts`]: predictions for raw texts, as `mtl predict` prints them and `mtl serve` returns
//!   them;
//! - [`decode`]: tags from the NER head, argmax or IOB2-constrained Viterbi;
//! - [`parallel`]: data-parallel steps over several devices or CPU replicas;
//! - [`trainer`]: the loop, resume, early stopping, progress;
//! - [`rundir`]: run directories: layout, atomic checkpoint swaps, recovery, lock, consistency
//!   checks of model directories;
//! - [`seed_api`]: the seed's `MultitaskDataset` and `train_model`.
#![deny(missing_docs)]

pub mod decode;
pub mod error;
pub mod eval;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod rundir;
pub mod sampler;
pub mod seed_api;
pub mod texts;
pub mod trainer;

pub use decode::TagDecoding;
pub use error::{Error, Result};
pub use eval::{
    EvalReport, Forward, InferenceEngine, PredictOptions, Prediction, TaskLosses, embed, evaluate,
    evaluate_with, predict, predict_with,
};
pub use parallel::DataParallel;
pub use rundir::{RunDir, check_model_dir};
pub use sampler::SamplingStrategy;
pub use seed_api::{MultitaskDataset, train_model};
pub use trainer::{
    EpochRecord, History, LossWeights, SelectMetric, TrainConfig, TrainOutcome, check_chars, fit,
    fit_in, load_model_dir, resume, resume_in, save_model_dir,
};
