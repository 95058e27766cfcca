//! Errors of `mtl-train`.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of training and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Data could not be read or encoded.
    #[error(transparent)]
    Data(#[from] mtl_data::Error),
    /// The model could not be built, saved or loaded.
    #[error(transparent)]
    Model(#[from] mtl_model::Error),
    /// Metrics could not be computed.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A saved training state is unreadable.
    #[error("{}: invalid training state: {message}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The loss became NaN or infinite; the last good checkpoint is kept.
    #[error(
        "the {task} loss became {value} at epoch {epoch}, step {step}; training stopped (the last good checkpoint is kept); try a lower learning rate"
    )]
    NonFiniteLoss {
        /// Task whose loss diverged.
        task: &'static str,
        /// The loss value.
        value: f32,
        /// Epoch (1-based).
        epoch: usize,
        /// Global optimizer step.
        step: u64,
    },
    /// The model and the encoder disagree on character ids.
    #[error(
        "the model reads character ids {model:?} but the encoder makes {encoder:?} ((max_chars, buckets); None: no character ids)"
    )]
    CharMismatch {
        /// What the model reads.
        model: Option<(usize, usize)>,
        /// What the encoder makes.
        encoder: Option<(usize, usize)>,
    },
    /// The tokenizer makes ids the model's embedding table has no row for.
    #[error(
        "the tokenizer has {tokenizer} token ids but the model's embedding table only {model} rows"
    )]
    VocabMismatch {
        /// Ids the tokenizer makes.
        tokenizer: usize,
        /// Rows of the embedding table.
        model: usize,
    },
    /// The training data holds no labels for any task.
    #[error("the training data has neither sentence labels nor tags")]
    NoLabels,
    /// A resume given other validation data than the run chose its best checkpoint on.
    #[error(
        "{}: the run chose its best checkpoint on {then} validation examples; resuming with \
         {now} would {consequence}: resume with the run's validation data",
        path.display()
    )]
    ValidationChanged {
        /// The run directory.
        path: std::path::PathBuf,
        /// Validation examples when the run was written (`"these"` counts when equal).
        then: String,
        /// Validation examples now.
        now: String,
        /// What would go wrong.
        consequence: &'static str,
    },
    /// An invalid training option.
    #[error("invalid training option {option}: {message}")]
    Option {
        /// The option.
        option: &'static str,
        /// What is wrong.
        message: String,
    },
}
