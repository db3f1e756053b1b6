//! Per-request middleware: [`observe`] wraps every route (time limit, service header, metrics,
//! a log line without the path), [`limit_misses`] the routes that take a PIN,
//! [`limit_creations`] the creation of PINs.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    error::{ApiError, PinMiss},
    extract::{client_ip, parse_wait},
    metrics::UNMATCHED,
    paths::{ROUTES, ROUTE_KEY},
    state::AppState,
};
use crate::protocol::SERVICE_HEADER;

/// Bounds the request's time (a long-poll, and only a long-poll, gets its wait on top), names
/// our service in a header, counts the answer by route template and logs it. The log line
/// names the route template, never the path: paths hold PINs.
pub(crate) async fn observe(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = route_label(request.extensions().get::<MatchedPath>());
    let method = request.method().clone();
    let mut budget = state.config.request_timeout;
    // A GET of one key with a valid wait, as the handler will read it: a write, or a query
    // that merely mentions `wait=`, gets the plain time limit (a slow body is not a wait).
    let long_poll =
        route == ROUTE_KEY && request.method() == Method::GET && !state.config.emulate_legacy;
    if long_poll {
        if let Ok(wait) = parse_wait(request.uri().query()) {
            // Saturating: `--request-timeout` is the operator's, and may be absurdly long.
            budget = budget.saturating_add(wait);
        }
    }
    let mut response = match tokio::time::timeout(budget, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    };
    if !state.config.emulate_legacy {
        response
            .headers_mut()
            .insert(SERVICE_HEADER, state.service_header.clone());
    }
    let status = response.status().as_u16();
    state.metrics.record(route, &method, status);
    tracing::debug!(
        "{method} {route} -> {status} in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    response
}

/// Refuses clients that missed too often with 429 before looking anything up, and counts
/// answers about unknown PINs against the client.
pub(crate) async fn limit_misses(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let client = client_ip(
        request.headers(),
        request.extensions(),
        state.config.client_ip_header.as_ref(),
    );
    if let Err(retry_after) = state.limiter.check(client, Instant::now()) {
        state.metrics.rate_limited();
        return ApiError::TooManyRequests(retry_after.as_secs()).into_response();
    }
    let response = next.run(request).await;
    if response.extensions().get::<PinMiss>().is_some() {
        state.limiter.record_miss(client, Instant::now());
    }
    response
}

/// Refuses a PIN creation with 429 when the client has spent its allowance, before anything is
/// stored. Only creations count: the PINs a client has answer it as ever.
pub(crate) async fn limit_creations(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let client = client_ip(
        request.headers(),
        request.extensions(),
        state.config.client_ip_header.as_ref(),
    );
    if let Err(retry_after) = state.creations.take(client, Instant::now()) {
        state.metrics.creation_limited();
        return ApiError::TooManyCreations(retry_after.as_secs()).into_response();
    }
    next.run(request).await
}

/// The route template without a trailing slash, as a `'static` label (no allocation per
/// request), or [`UNMATCHED`].
fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    let Some(matched) = matched else {
        return UNMATCHED;
    };
    let path = matched.as_str();
    let path = if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    ROUTES
        .iter()
        .copied()
        .find(|route| *route == path)
        .unwrap_or(UNMATCHED)
}
