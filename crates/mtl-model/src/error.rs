//! Errors of `mtl-model`.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// An invalid [`MultitaskConfig`](crate::MultitaskConfig).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// A position offset without a learned position table.
    #[error("position_offset ({offset}) needs learned positions")]
    PositionOffset {
        /// The offset given.
        offset: usize,
    },
    /// A size that must be positive is zero.
    #[error("{field} must be greater than zero")]
    Zero {
        /// The offending field.
        field: &'static str,
    },
    /// `d_model` is not a multiple of `nhead`.
    #[error("d_model ({d_model}) must be divisible by nhead ({nhead})")]
    HeadsDoNotDivide {
        /// Model width.
        d_model: usize,
        /// Number of heads.
        nhead: usize,
    },
    /// Sinusoidal positions interleave sine and cosine.
    #[error("sinusoidal positions need an even d_model, got {d_model}")]
    OddSinusoidal {
        /// Model width.
        d_model: usize,
    },
    /// Dropout outside `[0, 1)`.
    #[error("dropout must be in [0, 1), got {dropout}")]
    Dropout {
        /// The value given.
        dropout: f64,
    },
    /// Non-positive LayerNorm epsilon.
    #[error("layer_norm_eps must be positive, got {eps}")]
    LayerNormEps {
        /// The value given.
        eps: f64,
    },
    /// Too few character ids.
    #[error(
        "char_features.buckets must be at least 2 (the padding id and one character), got {buckets}"
    )]
    CharBuckets {
        /// The value given.
        buckets: usize,
    },
    /// The character convolution's window is even.
    #[error("char_features.kernel_size must be odd, got {kernel_size}")]
    CharKernel {
        /// The value given.
        kernel_size: usize,
    },
    /// The padding token is outside the vocabulary.
    #[error("pad_token_id ({pad_token_id}) must be below vocab_size ({vocab_size})")]
    PadOutOfVocab {
        /// The padding id.
        pad_token_id: usize,
        /// The vocabulary size.
        vocab_size: usize,
    },
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid model configuration")]
    Config(#[from] ConfigError),
    /// The token and padding-mask tensors differ in shape.
    #[error("tokens have shape {tokens:?} but the padding mask has shape {mask:?}")]
    MaskShape {
        /// `[batch, seq]` of the tokens.
        tokens: [usize; 2],
        /// `[batch, seq]` of the mask.
        mask: [usize; 2],
    },
    /// Character ids missing, unexpected, or of the wrong shape.
    #[error("character ids have shape {chars:?}; expected {expected:?} ([batch, seq, max_chars])")]
    CharShape {
        /// The shape given (`None`: no character ids given).
        chars: Option<[usize; 3]>,
        /// The shape the model reads (`None`: the model has no character features).
        expected: Option<[usize; 3]>,
    },
    /// The batch is longer than the position table.
    #[error("sequence length {seq} exceeds max_seq_length {max}")]
    TooLong {
        /// Length of the batch.
        seq: usize,
        /// The model's `max_seq_length`.
        max: usize,
    },
    /// A token id outside the vocabulary (packed inference checks every id).
    #[error(
        "sequence {sequence}, token {position}: id {id} is outside the vocabulary of {vocab_size}"
    )]
    TokenId {
        /// Index of the sequence in the batch.
        sequence: usize,
        /// Position of the token in its sequence.
        position: usize,
        /// The id.
        id: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// A packed sequence with the wrong number of character ids: `tokens * max_chars` for a
    /// model with character features, none for other models.
    #[error("sequence {sequence}: {given} character ids given, the model reads {expected}")]
    PackedChars {
        /// Index of the sequence in the batch.
        sequence: usize,
        /// Number of character ids given.
        given: usize,
        /// Number the model reads.
        expected: usize,
    },
    /// A character id outside the model's hash buckets.
    #[error("sequence {sequence}: character id {id} is outside the {buckets} buckets")]
    CharId {
        /// Index of the sequence in the batch.
        sequence: usize,
        /// The id.
        id: u32,
        /// The model's number of buckets.
        buckets: usize,
    },
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A config file is not valid JSON for this version.
    #[error("{}: not a model config of this version of mtl", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A model directory written by another version of mtl.
    #[error("{}: model format version {found:?}, this mtl reads version {expected}", path.display())]
    FormatVersion {
        /// The config file.
        path: PathBuf,
        /// The version found (`None`: no version field).
        found: Option<u32>,
        /// The version this build reads.
        expected: u32,
    },
    /// A HuggingFace checkpoint that cannot be imported (or exported).
    #[error(transparent)]
    Pretrained(#[from] crate::hf::PretrainedError),
    /// A weights file is unreadable, truncated, or does not match its config.
    #[error("{}: cannot load the weights ({message}); is it complete, and does it belong to this config?", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// What Burn reported.
        message: String,
    },
}
