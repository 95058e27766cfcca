//! Routes, handlers and middleware, and the server's run loop.

use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mtl::data::Encoder;
use mtl::train::TagDecoding;
use mtl::train::texts::PreparedText;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, oneshot};

use crate::batch::{BatchLimits, Engine, Job, run_worker};
use crate::error::{ApiError, Error, ErrorCode, Result};
use crate::metrics::{Metrics, ModelMetrics};
use crate::{Limits, ServeConfig, ServedModel};

/// The page at `/`: HTML, CSS and JavaScript in one file, no external assets.
pub const PAGE_HTML: &str = include_str!("page.html");
/// The OpenAPI 3.1 description at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// A model as the handlers see it: its queue, encoder, readiness and metrics.
struct ModelHandle {
    name: String,
    encoder: Arc<Encoder>,
    info: Value,
    /// Taken (closing the queue) when the server has stopped.
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    ready: Arc<AtomicBool>,
    metrics: Arc<ModelMetrics>,
}

/// What every handler shares.
struct AppState {
    models: Vec<ModelHandle>,
    limits: Limits,
    top_k: usize,
    /// SHA-256 of the API key, compared in constant time.
    key_digest: Option<[u8; 32]>,
    permits: Arc<Semaphore>,
    metrics: Metrics,
}

type Shared = Arc<AppState>;

/// Timings a prediction adds to its response, for the timing headers.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    queue: Duration,
    inference: Duration,
}

fn millis(d: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!("{:.3}", d.as_secs_f64() * 1e3))
        .unwrap_or(HeaderValue::from_static("0"))
}

/// SIGTERM or SIGINT.
pub(crate) async fn signals() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
        () = term => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}

/// Starts the workers and the runtime and serves until `shutdown`.
pub(crate) fn run(
    listener: TcpListener,
    config: ServeConfig,
    models: Vec<ServedModel>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if models.is_empty() {
        return Err(Error::NoModel);
    }
    for (i, m) in models.iter().enumerate() {
        if models[..i].iter().any(|o| o.name == m.name) {
            return Err(Error::DuplicateModel(m.name.clone()));
        }
    }
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let listen_error = |source| Error::Listen {
        addr: addr.clone(),
        source,
    };
    listener.set_nonblocking(true).map_err(listen_error)?;
    let batch_limits = BatchLimits {
        max_batch_tokens: config.limits.max_batch_tokens.max(1),
        max_batch_size: config.limits.max_batch_size.max(1),
        max_wait: config.limits.max_wait,
    };
    let mut handles = Vec::new();
    let mut workers = Vec::new();
    for model in models {
        let (tx, rx) = mpsc::channel::<Job>();
        let encoder = Arc::new(model.encoder);
        let ready = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(ModelMetrics::default());
        let engine = Engine {
            predictor: model.predictor,
            encoder: encoder.clone(),
        };
        let (name, worker_ready, worker_metrics) =
            (model.name.clone(), ready.clone(), metrics.clone());
        let denormals = mtl::model::denormals::inherit();
        let worker = std::thread::Builder::new()
            .name(format!("batch-{}", model.name))
            .spawn(move || {
                denormals(0);
                warm_up(&name, &engine);
                worker_ready.store(true, Ordering::Release);
                run_worker(&engine, &rx, &batch_limits, &worker_metrics);
            })
            .map_err(|source| Error::Worker {
                model: model.name.clone(),
                source,
            })?;
        workers.push(worker);
        handles.push(ModelHandle {
            name: model.name,
            encoder,
            info: model.info,
            queue: Mutex::new(Some(tx)),
            ready,
            metrics,
        });
    }
    let state = Arc::new(AppState {
        models: handles,
        limits: config.limits,
        top_k: config.top_k.max(1),
        key_digest: config
            .api_key
            .as_deref()
            .map(|k| Sha256::digest(k.as_bytes()).into()),
        permits: Arc::new(Semaphore::new(config.limits.max_concurrent)),
        metrics: Metrics::default(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("http")
        .build()
        .map_err(Error::Runtime)?;
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(listen_error)?;
        tracing::info!(%addr, models = state.models.len(), "listening");
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let server =
            axum::serve(listener, router(state.clone())).with_graceful_shutdown(async move {
                shutdown.await;
                let _ = started_tx.send(());
            });
        let timeout = config.shutdown_timeout;
        let deadline = async move {
            if started_rx.await.is_ok() {
                tokio::time::sleep(timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            served = server => served.map_err(listen_error),
            () = deadline => {
                let left = state.limits.max_concurrent - state.permits.available_permits();
                Err(Error::ShutdownTimeout(left))
            }
        }
    });
    // Closing the queues ends the workers once they have answered what they hold.
    for handle in &state.models {
        if let Ok(mut queue) = handle.queue.lock() {
            queue.take();
        }
    }
    if result.is_ok() {
        for worker in workers {
            let _ = worker.join();
        }
        tracing::info!("stopped");
    }
    // Requests abandoned by the timeout are dropped with the runtime, without waiting.
    runtime.shutdown_background();
    result
}

/// Runs one prediction so that the first request does not pay for cold caches.
fn warm_up(name: &str, engine: &Engine) {
    let started = Instant::now();
    let texts = PreparedText::new(&engine.encoder, "warm up the model")
        .map(|t| vec![t; 8])
        .map_err(|e| e.to_string());
    let options = mtl::train::PredictOptions::new(8);
    match texts.and_then(|t| {
        engine
            .predictor
            .predict_texts(&engine.encoder, t, &options)
            .map_err(|e| e.to_string())
    }) {
        Ok(_) => tracing::info!(
            model = name,
            ms = started.elapsed().as_millis() as u64,
            "model ready"
        ),
        // The model stays usable; real requests will say what fails.
        Err(error) => tracing::error!(model = name, %error, "warm-up failed"),
    }
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/models", get(list_models))
        .route("/v1/predict", post(predict_default))
        .route("/v1/models/{name}/predict", post(predict_named))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .with_state(state)
}

/// Times every request, adds the timing headers, counts it in the metrics and logs it.
async fn track(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let method = request.method().clone();
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut response = next.run(request).await;
    state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    let total = started.elapsed();
    let timing = response
        .extensions()
        .get::<Timing>()
        .copied()
        .unwrap_or_default();
    let headers = response.headers_mut();
    headers.insert("x-queue-time", millis(timing.queue));
    headers.insert("x-inference-time", millis(timing.inference));
    headers.insert("x-total-time", millis(total));
    let status = response.status().as_u16();
    state.metrics.record(&route, status, total);
    let ms = (total.as_secs_f64() * 1e6).round() / 1e3;
    if status == 500 {
        tracing::warn!(%method, route, status, ms, "request failed");
    } else {
        tracing::debug!(%method, route, status, ms, "request");
    }
    response
}

/// With an API key, every route but `/health` and `/` needs `Authorization: Bearer KEY`.
async fn authorize(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.key_digest
        && !matches!(request.uri().path(), "/health" | "/")
    {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .map(|key| <[u8; 32]>::from(Sha256::digest(key)));
        let ok = given.is_some_and(|g| bool::from(g.ct_eq(expected)));
        if !ok {
            return ApiError::new(
                ErrorCode::Unauthorized,
                "this server needs an API key: send the header Authorization: Bearer KEY",
            )
            .into_response();
        }
    }
    next.run(request).await
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE_HTML,
    )
        .into_response()
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(state): State<Shared>) -> Response {
    let waiting: Vec<&str> = state
        .models
        .iter()
        .filter(|m| !m.ready.load(Ordering::Acquire))
        .map(|m| m.name.as_str())
        .collect();
    if waiting.is_empty() {
        axum::Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("warming up: {}", waiting.join(", ")),
        )
        .into_response()
    }
}

async fn metrics(State(state): State<Shared>) -> Response {
    let body = state.metrics.render(
        state
            .models
            .iter()
            .map(|m| (m.name.as_str(), m.metrics.as_ref())),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn list_models(State(state): State<Shared>) -> Response {
    let models: Vec<Value> = state
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut info = m.info.clone();
            info["ready"] = json!(m.ready.load(Ordering::Acquire));
            info["default"] = json!(i == 0);
            info
        })
        .collect();
    axum::Json(json!({ "models": models })).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such route: see GET /openapi.json for the routes",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take that method: see GET /openapi.json",
    )
}

/// The body of a prediction request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    text: Option<String>,
    texts: Option<Vec<String>>,
    top_k: Option<u64>,
    decoding: Option<String>,
}

async fn predict_default(
    State(state): State<Shared>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    respond(predict(&state, 0, body).await)
}

async fn predict_named(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    let Some(index) = state.models.iter().position(|m| m.name == name) else {
        let names: Vec<&str> = state.models.iter().map(|m| m.name.as_str()).collect();
        return ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no model named {name:?}: this server has {}",
                names.join(", ")
            ),
        )
        .into_response();
    };
    respond(predict(&state, index, body).await)
}

fn respond(result: std::result::Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Reads and checks the request, queues its texts for the model's worker and answers.
async fn predict(
    state: &AppState,
    index: usize,
    body: std::result::Result<Bytes, BytesRejection>,
) -> std::result::Result<Response, ApiError> {
    let model = &state.models[index];
    let Ok(_permit) = state.permits.try_acquire() else {
        return Err(ApiError::new(
            ErrorCode::TooManyRequests,
            format!(
                "more than {} requests in flight: retry later",
                state.limits.max_concurrent
            ),
        ));
    };
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the body is larger than {} bytes",
                    state.limits.max_body_bytes
                ),
            )
        } else {
            ApiError::new(ErrorCode::BadRequest, rejection.body_text())
        }
    })?;
    let request = parse_request(&body)?;
    let (texts, top_k, decoding) = check_request(request, &state.limits, state.top_k)?;
    if !model.ready.load(Ordering::Acquire) {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("model {} is warming up", model.name),
        ));
    }
    let mut prepared = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let p = PreparedText::new(&model.encoder, text).map_err(|e| {
            ApiError::new(
                ErrorCode::Unprocessable,
                format!("text {i} cannot be encoded: {e}"),
            )
        })?;
        if !p.has_words() {
            return Err(ApiError::new(
                ErrorCode::Unprocessable,
                format!("text {i} is empty: every text needs at least one word"),
            ));
        }
        if p.truncated() && !state.limits.truncate {
            return Err(ApiError::new(
                ErrorCode::Unprocessable,
                format!(
                    "text {i} is longer than the model's {} tokens (the server runs with \
                     --no-truncate)",
                    model.encoder.max_seq_length
                ),
            ));
        }
        prepared.push(p);
    }
    let (reply, answer) = oneshot::channel();
    let job = Job {
        texts: prepared,
        top_k,
        decoding,
        enqueued: Instant::now(),
        reply,
    };
    let sent = model
        .queue
        .lock()
        .ok()
        .and_then(|q| q.as_ref().map(|q| q.send(job).is_ok()))
        .unwrap_or(false);
    if !sent {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the server is shutting down",
        ));
    }
    model.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    let output = answer
        .await
        .map_err(|_| ApiError::new(ErrorCode::Internal, "inference failed: the worker stopped"))?
        .map_err(|message| ApiError::new(ErrorCode::Internal, message))?;
    let mut body = Vec::with_capacity(256 * output.predictions.len());
    body.extend_from_slice(b"{\"predictions\":[");
    for (i, p) in output.predictions.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &p.to_json())
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    }
    body.extend_from_slice(b"]}");
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.extensions_mut().insert(Timing {
        queue: output.queue_time,
        inference: output.inference_time,
    });
    Ok(response)
}

fn parse_request(body: &[u8]) -> std::result::Result<PredictRequest, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_data() {
            "wrong fields or types"
        } else {
            "malformed JSON"
        };
        ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "{what}: {e}; expected {{\"texts\": [\"...\"]}} or {{\"text\": \"...\"}}, \
                 optional \"top_k\" and \"decoding\""
            ),
        )
    })
}

/// The texts, `top_k` and decoding of a well-formed request, or why it cannot be served.
fn check_request(
    request: PredictRequest,
    limits: &Limits,
    default_top_k: usize,
) -> std::result::Result<(Vec<String>, usize, TagDecoding), ApiError> {
    let unprocessable = |m: String| ApiError::new(ErrorCode::Unprocessable, m);
    let texts = match (request.text, request.texts) {
        (Some(text), None) => vec![text],
        (None, Some(texts)) => texts,
        (Some(_), Some(_)) => {
            return Err(unprocessable(
                "give \"text\" or \"texts\", not both".to_string(),
            ));
        }
        (None, None) => {
            return Err(unprocessable(
                "no text: give {\"texts\": [\"...\"]} or {\"text\": \"...\"}".to_string(),
            ));
        }
    };
    if texts.is_empty() {
        return Err(unprocessable("\"texts\" is empty".to_string()));
    }
    if texts.len() > limits.max_client_batch {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "{} texts in one request; at most {} (--max-client-batch)",
                texts.len(),
                limits.max_client_batch
            ),
        ));
    }
    let top_k = match request.top_k {
        None => default_top_k,
        Some(0) => return Err(unprocessable("\"top_k\" must be at least 1".to_string())),
        Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
    };
    let decoding = match request.decoding.as_deref() {
        None => TagDecoding::default(),
        Some(name) => name
            .parse::<TagDecoding>()
            .map_err(|e| unprocessable(format!("\"decoding\": {e}")))?,
    };
    Ok((texts, top_k, decoding))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str) -> std::result::Result<(Vec<String>, usize, TagDecoding), ApiError> {
        check_request(parse_request(body.as_bytes())?, &Limits::default(), 3)
    }

    fn code(body: &str) -> ErrorCode {
        check(body).expect_err("an error").code
    }

    #[test]
    fn requests_are_read_and_checked() {
        let (texts, k, d) = check(r#"{"text": "play jazz"}"#).expect("valid");
        assert_eq!(
            (texts, k, d),
            (vec!["play jazz".to_string()], 3, TagDecoding::Iob2)
        );
        let (texts, k, d) =
            check(r#"{"texts": ["a", "b"], "top_k": 1, "decoding": "argmax"}"#).expect("valid");
        assert_eq!((texts.len(), k, d), (2, 1, TagDecoding::Argmax));
        assert_eq!(code("{"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"texts": "a"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"txt": "a"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"texts": [1]}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"texts": []}"#), ErrorCode::Unprocessable);
        assert_eq!(code(r#"{}"#), ErrorCode::Unprocessable);
        assert_eq!(
            code(r#"{"text": "a", "texts": ["b"]}"#),
            ErrorCode::Unprocessable
        );
        assert_eq!(
            code(r#"{"text": "a", "top_k": 0}"#),
            ErrorCode::Unprocessable
        );
        assert_eq!(code(r#"{"text": "a", "top_k": -1}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"text": "a", "decoding": "crf"}"#),
            ErrorCode::Unprocessable
        );
        let many = format!("{{\"texts\": [{}]}}", vec!["\"a\""; 65].join(","));
        assert_eq!(code(&many), ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn timing_values_are_milliseconds() {
        assert_eq!(millis(Duration::from_micros(1500)), "1.500");
    }
}
