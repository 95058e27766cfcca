//! `mtl-train`: losses, metrics, task sampling and the training loop of mtl.
#![deny(missing_docs)]

pub mod metrics;
