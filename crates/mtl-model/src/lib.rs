//! `mtl-model`: the multitask Transformer of mtl, independent of any backend.
//!
//! A shared Transformer encoder (token embeddings, sinusoidal or learned positions, post- or
//! pre-norm layers) under two heads: sentence classification on the pooled encoder output and
//! per-token NER tagging. The model returns logits; losses live in `mtl-train`. Every forward
//! takes a padding mask in Burn's convention: **`true` marks padding**.
//!
//! ```
//! use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
//! use mtl_model::{MultitaskConfig, MultitaskTransformer, Task, TaskLogits};
//!
//! let device = Device::flex();
//! let config = MultitaskConfig::new(100, 3, 5)
//!     .with_d_model(16).with_nhead(2).with_num_encoder_layers(1).with_dim_feedforward(32);
//! let model = MultitaskTransformer::new(&config, &device)?;
//! let tokens = Tensor::<2, Int>::from_data(TensorData::new(vec![5i64, 6, 7, 0], [1, 4]), &device);
//! let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![false, false, false, true], [1, 4]), &device);
//! let TaskLogits::Ner(logits) = model.forward(tokens, mask, Task::Ner) else { unreachable!() };
//! assert_eq!(logits.dims(), [1, 4, 5]);
//! # Ok::<(), mtl_model::Error>(())
//! ```
#![deny(missing_docs)]

pub mod chars;
pub mod config;
pub mod denormals;
pub mod dropout;
pub mod encoder;
pub mod error;
pub mod hf;
pub mod io;
pub mod math;
pub mod model;
pub mod packed;

pub use chars::CharCnn;
pub use config::{
    Activation, CharFeatures, MultitaskConfig, NormPosition, Pooling, PositionalEncoding,
};
pub use encoder::{EncoderLayer, Packing, TransformerEncoder, sinusoidal_table};
pub use error::{ConfigError, Error, Result};
pub use hf::{HfConfig, ImportReport, PretrainedError, PretrainedOrigin};
pub use io::{SavedModel, load_config, save_config, write_atomic};
pub use model::{MultitaskOutput, MultitaskTransformer, SharedEncoder, Task, TaskLogits};
pub use packed::{PackedInput, PackedModel, PackedOutput};

#[cfg(test)]
mod tests;

/// Whether `device` is Burn's pure-Rust CPU backend (flex), whose tensors live in host memory:
/// there mtl draws dropout masks and runs optimizer updates on the host. Autodiff does not
/// matter (an autodiff flex device equals the plain one).
#[cfg(feature = "flex")]
pub fn is_cpu_backend(device: &burn::tensor::Device) -> bool {
    *device == burn::tensor::Device::flex()
}

/// Whether `device` is Burn's pure-Rust CPU backend (never, without the `flex` feature).
#[cfg(not(feature = "flex"))]
pub fn is_cpu_backend(_device: &burn::tensor::Device) -> bool {
    false
}
