//! `mtl`: multitask Transformers for sentence classification and named-entity recognition /
//! slot filling, with one shared encoder, on the Burn deep-learning framework.
//!
//! This crate is a thin facade over the three library crates:
//!
//! - [`model`] (`mtl-model`): the [`MultitaskTransformer`](model::MultitaskTransformer) and its
//!   configuration, save and load;
//! - [`data`] (`mtl-data`): readers (JointBERT, CoNLL, JSONL), tokenizers, label alignment,
//!   padding masks and batching;
//! - [`train`] (`mtl-train`): losses, metrics, task sampling and the training loop.
//!
//! # Feature flags
//!
//! | feature | default | what it enables |
//! |---|---|---|
//! | `flex` | yes | Burn's pure-Rust CPU backend (`Device::flex()`), with SIMD and rayon |
//! | `tch` | no | Burn's libtorch backend (`Device::libtorch()`, `Device::libtorch_cuda(0)`); needs libtorch 2.9.0 |
//! | `wgpu` | no | Burn's wgpu backend (Vulkan/Metal/DX12, or Mesa's software Vulkan driver) |
//! | `mimalloc` | no | [`alloc`]: mimalloc as a global allocator that keeps freed memory (the binaries use it) |
//!
//! Several backend features can be on at once; the device is chosen at run time.
//!
//! ```
//! use mtl::prelude::*;
//!
//! let device = Device::flex();
//! let config = MultitaskConfig::new(1000, 3, 5).with_d_model(32).with_nhead(2)
//!     .with_num_encoder_layers(1).with_dim_feedforward(64);
//! let model = MultitaskTransformer::new(&config, &device)?;
//! assert_eq!(model.config().num_classes, 3);
//! # Ok::<(), mtl::model::Error>(())
//! ```
#![deny(missing_docs)]

pub use burn;

#[cfg(feature = "mimalloc")]
pub mod alloc;
pub mod device;
pub use mtl_data as data;
pub use mtl_model as model;
pub use mtl_train as train;

/// The names most programs need.
pub mod prelude {
    pub use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
    pub use mtl_model::{MultitaskConfig, MultitaskOutput, MultitaskTransformer, Task, TaskLogits};
}
