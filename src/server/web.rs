//! The operator's web page (PROTOCOL.md part 4, "Operators"): create a PIN, copy its admin
//! token and ucernvm blocks, watch one cluster's keys. The page is static: HTML, CSS and plain
//! JavaScript compiled into the binary, talking to the service through the public REST API
//! only, so it needs nothing the API does not already offer.

use axum::{
    http::{header, HeaderName, HeaderValue},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

pub(crate) const ROUTE_PAGE: &str = "/";
pub(crate) const ROUTE_SCRIPT: &str = "/static/app.js";
pub(crate) const ROUTE_STYLE: &str = "/static/app.css";

const PAGE: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/app.css");

/// No inline script or style anywhere, no framing, no forms posting elsewhere: a page that
/// shows admin tokens must not run or embed anything but its own files.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The page and its assets; the state type is the caller's, the page needs none.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            ROUTE_PAGE,
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            ROUTE_SCRIPT,
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            ROUTE_STYLE,
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 7] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // The page shows admin tokens once; no cache, shared or private, may keep a copy. The
        // assets are small and change with the binary, so they are not cached either.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, body).into_response()
}
