//! Errors: what a request gets back ([`ApiError`], one status table in [`ErrorCode::status`])
//! and what stops the server from starting or running ([`Error`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Why the server could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening socket could not be opened or served.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime could not be built.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// A batching worker thread could not be started.
    #[error("cannot start the batching worker of model {model}")]
    Worker {
        /// The model.
        model: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Two models were given the same name.
    #[error("two models are named {0:?}: give each --model NAME=RUN_DIR its own name")]
    DuplicateModel(String),
    /// No model was given.
    #[error("no model to serve")]
    NoModel,
    /// Requests were still running when the shutdown timeout ran out.
    #[error("the shutdown timeout ran out with requests in flight ({0})")]
    ShutdownTimeout(usize),
}

/// The stable error codes of the JSON error body `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed JSON, wrong types, unknown fields.
    BadRequest,
    /// No or a wrong API key.
    Unauthorized,
    /// No such route or model.
    NotFound,
    /// The route exists, not for this method.
    MethodNotAllowed,
    /// Body over `--max-body-bytes`, or more texts than `--max-client-batch`.
    PayloadTooLarge,
    /// Well-formed but unusable: no texts, an empty text, a text over the model's limit under
    /// `--no-truncate`, a bad `top_k` or `decoding`.
    Unprocessable,
    /// More than `--max-concurrent` requests in flight.
    TooManyRequests,
    /// Inference failed for the batch the request was in.
    Internal,
    /// The model is still warming up, or the server is shutting down.
    Unavailable,
}

impl ErrorCode {
    /// The one mapping from code to HTTP status and the code's name in the body.
    pub fn status(self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Unprocessable => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            Self::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "inference_failed"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

/// An error answer: a code and a message for the person who sent the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The code (and through it the status).
    pub code: ErrorCode,
    /// What went wrong, in words.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.code.status();
        let body = json!({"error": {"code": code, "message": self.message}});
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self.code {
            ErrorCode::TooManyRequests | ErrorCode::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ErrorCode::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_name_and_an_error_status() {
        let all = [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::PayloadTooLarge,
            ErrorCode::Unprocessable,
            ErrorCode::TooManyRequests,
            ErrorCode::Internal,
            ErrorCode::Unavailable,
        ];
        let mut names: Vec<&str> = all.iter().map(|c| c.status().1).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for code in all {
            let status = code.status().0;
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code:?}"
            );
        }
        assert_eq!(
            ErrorCode::Internal.status().0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn retry_after_on_429() {
        let r = ApiError::new(ErrorCode::TooManyRequests, "busy").into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
