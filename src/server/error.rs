//! The service's error answers: one enum, one status per variant, a JSON [`ErrorBody`] for each.
//!
//! Every answer an agent may act on is sorted here (PROTOCOL.md part 2, "Errors sorted"): 4xx
//! for what can never succeed as sent, 408/429/503/507 for what may succeed later. None of them
//! carries a PIN or a token.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

use super::store::Cap;
use crate::protocol::{ErrorBody, ItemError};

/// Marks an answer about a PIN that the service does not know, so that the rate-limit layer
/// counts it as a miss without parsing bodies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PinMiss;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidItem(#[from] ItemError),
    #[error("no cluster with this PIN")]
    UnknownPin,
    #[error("no such key in this cluster")]
    KeyNotFound,
    #[error("no such route")]
    NoRoute,
    #[error("this PIN has expired")]
    Expired,
    #[error("this needs 'Authorization: Bearer <admin_token>' (the token given when the PIN was created)")]
    MissingToken,
    #[error("the admin token does not belong to this PIN")]
    WrongToken,
    #[error("this cluster already holds the maximum of {0} keys")]
    TooManyKeys(usize),
    #[error("key already exists; replacing it needs PUT and the admin token")]
    KeyExists,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many requests for unknown PINs from this address; retry in {0} s")]
    TooManyRequests(u64),
    #[error("too many PINs created from this address; retry in {0} s")]
    TooManyCreations(u64),
    #[error("the request took too long")]
    Timeout,
    #[error("the service is restarting; retry")]
    ShuttingDown,
    #[error("the service's disk is full, so it only reads: nothing was written; retry later")]
    StorageFull,
    #[error("{0}: nothing was written; retry once clusters are deleted or expire")]
    StorageCap(Cap),
    #[error("the store failed; nothing was written: {0}")]
    StoreFailed(String),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidItem(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownPin | ApiError::KeyNotFound | ApiError::NoRoute => {
                StatusCode::NOT_FOUND
            }
            ApiError::Expired => StatusCode::GONE,
            ApiError::MissingToken => StatusCode::UNAUTHORIZED,
            ApiError::WrongToken | ApiError::TooManyKeys(_) => StatusCode::FORBIDDEN,
            ApiError::KeyExists => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(_) | ApiError::TooManyCreations(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::ShuttingDown | ApiError::StoreFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::StorageFull | ApiError::StorageCap(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer in the rendering the client asked for. Text mode exists only on the
    /// single-key route; there a 404 has an empty body, as the legacy service sent it (legacy
    /// shell agents capture the body with `$(curl -s ...)`). Every other error is JSON.
    pub fn render(self, text_mode: bool) -> Response {
        if text_mode && self.status() == StatusCode::NOT_FOUND {
            let miss = matches!(self, ApiError::UnknownPin);
            let mut response = (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "",
            )
                .into_response();
            if miss {
                response.extensions_mut().insert(PinMiss);
            }
            return response;
        }
        self.into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::UnknownPin => {
                response.extensions_mut().insert(PinMiss);
            }
            ApiError::MissingToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"clusterctx\""),
                );
            }
            ApiError::TooManyRequests(secs) | ApiError::TooManyCreations(secs) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            ApiError::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                // The next request should find the restarted server on a new connection.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::StoreFailed(_) | ApiError::StorageFull | ApiError::StorageCap(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            }
            _ => {}
        }
        response
    }
}
