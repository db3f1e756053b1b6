//! The service's error answers: one enum, one status per variant, a JSON [`ErrorBody`] for each.
//! Each answer also carries the body the legacy service gave for it (DRF's `{"detail": ...}`
//! or per-field lists), which `--emulate-legacy` sends instead (see `layers::emulate_legacy`).
//!
//! Every answer an agent may act on is sorted here (PROTOCOL.md part 2, "Errors sorted"): 4xx
//! for what can never succeed as sent, 408/429/503/507 for what may succeed later. None of them
//! carries a PIN or a token.

use axum::{
    http::{header, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Map, Value};

use super::store::Cap;
use crate::protocol::{ErrorBody, ItemError, MAX_KEY_LEN, MAX_VALUE_LEN};

/// Marks an answer about a PIN that the service does not know, so that the rate-limit layer
/// counts it as a miss without parsing bodies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PinMiss;

/// The body the legacy service sent for an error: JSON, or nothing (`None`: the single-key
/// route in text mode, whose renderer printed an empty string for anything but an item).
#[derive(Debug, Clone)]
pub(crate) struct LegacyBody(pub Option<Value>);

/// Why one field of a key/value body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    Required,
    Null,
    /// A boolean, an object or an array where text (or a number) belongs.
    NotText(&'static str),
    Invalid(ItemError),
}

impl FieldError {
    /// DRF's message for it.
    fn legacy_message(&self) -> String {
        match self {
            FieldError::Required => "This field is required.".into(),
            FieldError::Null => "This field may not be null.".into(),
            FieldError::NotText(_) => "Not a valid string.".into(),
            FieldError::Invalid(ItemError::EmptyKey | ItemError::EmptyValue) => {
                "This field may not be blank.".into()
            }
            FieldError::Invalid(ItemError::KeyTooLong) => {
                format!("Ensure this field has no more than {MAX_KEY_LEN} characters.")
            }
            FieldError::Invalid(ItemError::ValueTooLong) => {
                format!("Ensure this field has no more than {MAX_VALUE_LEN} characters.")
            }
            // The legacy service stored any key name (and could then not serve it: its key
            // route only matches these characters).
            FieldError::Invalid(ItemError::KeyCharacters) => {
                "Only A-Z, a-z, 0-9, '_' and '-' are allowed.".into()
            }
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldError::Required => f.write_str("missing"),
            FieldError::Null => f.write_str("must be text, not null"),
            FieldError::NotText(kind) => write!(f, "must be text (or a number), not {kind}"),
            FieldError::Invalid(ItemError::EmptyKey | ItemError::EmptyValue) => {
                f.write_str("blank (after trimming surrounding whitespace)")
            }
            FieldError::Invalid(err) => err.fmt(f),
        }
    }
}

/// `key: missing; value: blank ...`, with an example when a field is missing.
fn describe_fields(problems: &[(&'static str, FieldError)]) -> String {
    let mut text = problems
        .iter()
        .map(|(name, problem)| format!("field \"{name}\": {problem}"))
        .collect::<Vec<_>>()
        .join("; ");
    if problems.iter().any(|(_, p)| *p == FieldError::Required) {
        text.push_str(r#"; expected {"key": "master_ip", "value": "10.0.0.1"}"#);
    }
    text
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidItem(#[from] ItemError),
    #[error("{}", describe_fields(.0))]
    InvalidFields(Vec<(&'static str, FieldError)>),
    #[error("no cluster with this PIN")]
    UnknownPin,
    #[error("no such key in this cluster")]
    KeyNotFound,
    #[error("no such member")]
    MemberNotFound,
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
    #[error("this cluster already holds the maximum of {0} members")]
    TooManyMembers(u64),
    #[error("key already exists; replacing it needs PUT and the admin token")]
    KeyExists,
    #[error("method {0} not allowed on this route")]
    MethodNotAllowed(Method),
    #[error("none of the renderings asked for in Accept is offered; {0}")]
    NotAcceptable(String),
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
            ApiError::BadRequest(_) | ApiError::InvalidItem(_) | ApiError::InvalidFields(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::UnknownPin
            | ApiError::KeyNotFound
            | ApiError::MemberNotFound
            | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Expired => StatusCode::GONE,
            ApiError::MissingToken => StatusCode::UNAUTHORIZED,
            ApiError::WrongToken | ApiError::TooManyKeys(_) | ApiError::TooManyMembers(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::KeyExists => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
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
    /// shell agents capture the body with `$(curl -s ...)`). Every other error is JSON (the
    /// legacy service sent an empty body for those too: `--emulate-legacy` does).
    pub fn render(self, text_mode: bool) -> Response {
        if !text_mode {
            return self.into_response();
        }
        let mut response = if self.status() == StatusCode::NOT_FOUND {
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
            response
        } else {
            self.into_response()
        };
        response.extensions_mut().insert(LegacyBody(None));
        response
    }

    /// What the legacy service (DRF) answered in JSON for this failure.
    fn legacy_body(&self) -> Value {
        let detail = |text: &str| json!({ "detail": text });
        match self {
            ApiError::InvalidFields(problems) => {
                let mut fields = Map::new();
                for (name, problem) in problems {
                    fields.insert((*name).into(), json!([problem.legacy_message()]));
                }
                Value::Object(fields)
            }
            ApiError::InvalidItem(err) => {
                let name = match err {
                    ItemError::EmptyValue | ItemError::ValueTooLong => "value",
                    _ => "key",
                };
                json!({ name: [FieldError::Invalid(err.clone()).legacy_message()] })
            }
            ApiError::UnknownPin
            | ApiError::KeyNotFound
            | ApiError::MemberNotFound
            | ApiError::NoRoute
            | ApiError::Expired => detail("Not found."),
            ApiError::KeyExists => detail("Resource already exists, cannot be created again"),
            ApiError::MethodNotAllowed(method) => {
                detail(&format!("Method \"{method}\" not allowed."))
            }
            ApiError::NotAcceptable(_) => detail("Could not satisfy the request Accept header."),
            ApiError::TooManyRequests(secs) => detail(&format!(
                "Request was throttled. Expected available in {secs} seconds."
            )),
            ApiError::Internal => detail("A server error occurred."),
            other => detail(&other.to_string()),
        }
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
        response
            .extensions_mut()
            .insert(LegacyBody(Some(self.legacy_body())));
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
