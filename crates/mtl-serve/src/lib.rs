//! `mtl-serve`: the HTTP layer of `mtl serve`, kept out of the library crates.
//!
//! [`serve`] answers on a bound listener until SIGTERM or SIGINT ([`serve_until`]: until any
//! future): `POST /v1/predict` (and `/v1/models/{name}/predict`) returns, inside
//! `{"predictions": [...]}`, the JSON objects `mtl predict` prints
//! ([`TextPrediction::to_json`](mtl::train::texts::TextPrediction::to_json), one home for
//! both). Handlers parse and validate, and encode the texts; one batching worker thread per
//! model owns the model and joins concurrent requests into batches ([`batch`]), answering
//! each through a oneshot channel. Every error is `{"error": {"code", "message"}}` with a
//! status from one table ([`ErrorCode::status`]). Also `/health`, `/ready`, `/v1/models`,
//! `/metrics` (Prometheus), `/openapi.json` and `/`, a page to try the model in a browser.
//!
//! ```
//! use mtl_serve::Limits;
//! let limits = Limits::default();
//! assert_eq!(limits.max_batch_tokens, 8192);
//! assert_eq!(limits.max_body_bytes, 1 << 20);
//! ```
#![deny(missing_docs)]

mod api;
pub mod batch;
pub mod client;
mod error;
pub mod metrics;
#[cfg(test)]
mod testing;

use std::future::Future;
use std::net::TcpListener;
use std::time::Duration;

use mtl::data::Encoder;
use mtl::model::MultitaskTransformer;
use mtl::prelude::Device;
use mtl::train::InferenceEngine;
use mtl::train::texts::Predictor;
use serde_json::{Value, json};

pub use error::{ApiError, Error, ErrorCode, Result};

/// Request and batching limits. Each is a flag of `mtl serve` with this default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most tokens in one inference batch.
    pub max_batch_tokens: usize,
    /// Most texts in one inference batch.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for others.
    pub max_wait: Duration,
    /// Most texts in one request (413 beyond).
    pub max_client_batch: usize,
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most prediction requests in flight (429 beyond).
    pub max_concurrent: usize,
    /// Texts over the model's limit are cut and marked `"truncated": true` (else 422).
    pub truncate: bool,
}

impl Limits {
    /// Default of [`Limits::max_batch_tokens`].
    pub const MAX_BATCH_TOKENS: usize = 8192;
    /// Default of [`Limits::max_batch_size`].
    pub const MAX_BATCH_SIZE: usize = 256;
    /// Default of [`Limits::max_wait`], in milliseconds.
    pub const MAX_WAIT_MS: u64 = 2;
    /// Default of [`Limits::max_client_batch`].
    pub const MAX_CLIENT_BATCH: usize = 64;
    /// Default of [`Limits::max_body_bytes`] (1 MiB).
    pub const MAX_BODY_BYTES: usize = 1 << 20;
    /// Default of [`Limits::max_concurrent`].
    pub const MAX_CONCURRENT: usize = 512;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_tokens: Self::MAX_BATCH_TOKENS,
            max_batch_size: Self::MAX_BATCH_SIZE,
            max_wait: Duration::from_millis(Self::MAX_WAIT_MS),
            max_client_batch: Self::MAX_CLIENT_BATCH,
            max_body_bytes: Self::MAX_BODY_BYTES,
            max_concurrent: Self::MAX_CONCURRENT,
            truncate: true,
        }
    }
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Request and batching limits.
    pub limits: Limits,
    /// With a key, every route but `/health` and the page `/` needs
    /// `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// How long, after SIGTERM or SIGINT, requests in flight may take to finish.
    pub shutdown_timeout: Duration,
    /// Sentence labels in `top_k` when a request does not say (as `mtl predict --top-k`).
    pub top_k: usize,
}

impl ServeConfig {
    /// Default of [`ServeConfig::shutdown_timeout`], in seconds.
    pub const SHUTDOWN_TIMEOUT_S: u64 = 30;
    /// Default of [`ServeConfig::top_k`].
    pub const TOP_K: u32 = 3;
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            api_key: None,
            shutdown_timeout: Duration::from_secs(Self::SHUTDOWN_TIMEOUT_S),
            top_k: Self::TOP_K as usize,
        }
    }
}

/// A model to serve: its name in routes, the model prepared for its engine, its encoder and
/// what `GET /v1/models` says about it.
#[derive(Debug)]
pub struct ServedModel {
    /// The name in `/v1/models/{name}/predict`.
    pub name: String,
    predictor: Predictor,
    encoder: Encoder,
    info: Value,
}

impl ServedModel {
    /// Prepares `model` (in evaluation mode, on `device`) for `engine`; on the packed engine
    /// the Burn model is dropped once its weights are copied.
    pub fn new(
        name: impl Into<String>,
        model: MultitaskTransformer,
        encoder: Encoder,
        engine: InferenceEngine,
        device: &Device,
    ) -> Self {
        let name = name.into();
        let labels: Vec<&str> = (0..encoder.labels.len())
            .filter_map(|i| encoder.labels.name(i))
            .collect();
        let tags: Vec<&str> = (0..encoder.tags.len())
            .filter_map(|i| encoder.tags.name(i))
            .collect();
        let engine_name = match engine {
            InferenceEngine::Packed => "packed",
            InferenceEngine::Burn => "burn",
        };
        let info = json!({
            "name": name,
            "labels": labels,
            "tags": tags,
            "config": serde_json::to_value(model.config()).unwrap_or(Value::Null),
            "max_seq_length": encoder.max_seq_length,
            "engine": engine_name,
            "device": format!("{device:?}"),
            "version": env!("CARGO_PKG_VERSION"),
        });
        let predictor = Predictor::new(model, engine, device);
        Self {
            name,
            predictor,
            encoder,
            info,
        }
    }
}

/// Serves `models` (the first one also at `/v1/predict`) on `listener` until SIGTERM or
/// SIGINT, then stops accepting, lets requests in flight finish within
/// [`ServeConfig::shutdown_timeout`] and returns.
///
/// # Errors
/// No model or two of one name, the runtime or a worker thread cannot start, the listener
/// fails, or requests were still running when the shutdown timeout ran out.
pub fn serve(listener: TcpListener, config: ServeConfig, models: Vec<ServedModel>) -> Result<()> {
    serve_until(listener, config, models, api::signals())
}

/// [`serve`] until `shutdown` completes instead of a signal.
///
/// # Errors
/// As [`serve`].
pub fn serve_until(
    listener: TcpListener,
    config: ServeConfig,
    models: Vec<ServedModel>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    api::run(listener, config, models, shutdown)
}
