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
    /// A file of a model or run directory disagrees with another one (an encoder file with
    /// the model's `config.json`, the optimizer state with the weights).
    #[error("{}: {what} is {found}, but {against} says {expected}", path.display())]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What disagrees.
        what: String,
        /// Its value in the file.
        found: String,
        /// The file it is checked against.
        against: String,
        /// The value there.
        expected: String,
    },
    /// Another process is writing the run directory.
    #[error(
        "{}: another process is writing this run directory (it holds {}); wait for it to \
         finish or stop it",
        path.display(),
        crate::rundir::LOCK_FILE
    )]
    Locked {
        /// The run directory.
        path: PathBuf,
    },
    /// A new run was asked for in the directory of an earlier one.
    #[error(
        "run directory {} already exists: pass --overwrite to replace it or --resume to \
         continue it",
        path.display()
    )]
    RunExists {
        /// The run directory.
        path: PathBuf,
    },
    /// A directory to replace is not a run directory.
    #[error("{} is not an mtl run directory; refusing to replace it", path.display())]
    NotARunDir {
        /// The directory.
        path: PathBuf,
    },
    /// A selection metric the validation data cannot give.
    #[error(
        "select_metric {metric}: the validation data has no {missing}, so it would score 0 \
         every epoch; pick another metric ({available})"
    )]
    MetricUnavailable {
        /// The metric.
        metric: &'static str,
        /// What the data lacks.
        missing: &'static str,
        /// The metrics the data can give.
        available: String,
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
