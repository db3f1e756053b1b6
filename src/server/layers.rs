//! Per-request middleware: [`observe`] wraps every route (time limit, service header, metrics,
//! a log line without the path), [`limit_misses`] the routes that take a PIN,
//! [`limit_creations`] the creation of PINs, and [`emulate_legacy`] every route under
//! `--emulate-legacy`.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::{MatchedPath, Request, State},
    http::{header, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    error::{ApiError, LegacyBody, PinMiss},
    extract::{client_ip, parse_wait},
    metrics::UNMATCHED,
    negotiate::{accepts_json, negotiate},
    paths::{ROUTES, ROUTE_HEALTHZ, ROUTE_KEY, ROUTE_MEMBERS, ROUTE_METRICS},
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
    // A GET of one key or of the members with a valid wait, as the handler will read it: a
    // write, or a query that merely mentions `wait=`, gets the plain time limit (a slow body
    // is not a wait).
    let long_poll = (route == ROUTE_KEY || route == ROUTE_MEMBERS)
        && request.method() == Method::GET
        && !state.config.emulate_legacy;
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

/// Counts answers about unknown PINs against the client, and turns them into 429 once it has
/// missed too often. Only misses are refused: a request for a PIN that exists is answered
/// whatever its address missed before, because many clusters and users share one NAT
/// address, and a guesser, who only ever misses, is held back all the same.
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
    let response = next.run(request).await;
    if response.extensions().get::<PinMiss>().is_none() {
        return response;
    }
    let now = Instant::now();
    let allowed = state.limiter.check(client, now);
    state.limiter.record_miss(client, now);
    match allowed {
        Ok(()) => response,
        Err(retry_after) => {
            state.metrics.rate_limited();
            ApiError::TooManyRequests(retry_after.as_secs()).into_response()
        }
    }
}

/// `--emulate-legacy`: refuses what the legacy service's content negotiation refused (406,
/// or 404 for an unknown `?format=`) before the handler runs, and answers errors with the
/// legacy service's bodies.
pub(crate) async fn emulate_legacy(request: Request, next: Next) -> Response {
    let route = route_label(request.extensions().get::<MatchedPath>());
    let refused = match route {
        // Not legacy routes; an unknown one is a 404 before any negotiation, as in Django.
        ROUTE_HEALTHZ | ROUTE_METRICS | UNMATCHED => None,
        // Its renderer printed an empty body for anything but an item.
        ROUTE_KEY => negotiate(request.headers(), request.uri().query(), true)
            .err()
            .map(|err| err.render(true)),
        _ => accepts_json(request.headers(), request.uri().query())
            .err()
            .map(IntoResponse::into_response),
    };
    let mut response = match refused {
        Some(response) => response,
        None => next.run(request).await,
    };
    match response.extensions_mut().remove::<LegacyBody>() {
        Some(LegacyBody(Some(json))) => {
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.remove(header::CONTENT_LENGTH);
            *response.body_mut() = Body::from(json.to_string());
        }
        Some(LegacyBody(None)) => {
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            headers.remove(header::CONTENT_LENGTH);
            *response.body_mut() = Body::empty();
        }
        None => {}
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
