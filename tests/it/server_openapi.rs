//! `/openapi.json`: served over a real socket exactly as committed in `docs/openapi.json`, and
//! true to the router: every documented operation is answered, every other method is 405.

use axum::{
    body::{to_bytes, Body},
    http::{Method, Request, StatusCode},
};
use clusterctx::server::{self, openapi, AppState, Config};
use serde_json::Value;
use tower::ServiceExt;

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    let server = server::spawn(Config::default()).await.unwrap();
    let response = reqwest::get(format!("{}/openapi.json", server.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "content type"
    );
    let served = response.text().await.unwrap();
    assert!(
        served == committed,
        "docs/openapi.json is stale: run `make openapi`"
    );
    assert_eq!(served, openapi::document_text());
}

/// `{pin}` and `{key}` filled with names of the right form that the store does not hold.
fn concrete(template: &str) -> String {
    template
        .replace("{pin}", "abcdefgh2345")
        .replace("{key}", "master_ip")
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_no_other() {
    let document = openapi::document();
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 10, "{:?}", paths.keys());
    let app = server::app(AppState::open(Config::default()).unwrap());
    for (template, item) in paths {
        for method in METHODS {
            let documented = item.get(method.as_str().to_ascii_lowercase()).is_some();
            let response = app
                .clone()
                .oneshot(
                    Request::builder()
                        .method(method.clone())
                        .uri(concrete(template))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = response.status();
            let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
            let error = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_default();
            if documented {
                assert_ne!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {template}"
                );
                assert_ne!(error, "no such route", "{method} {template}");
                let documented_statuses = item[method.as_str().to_ascii_lowercase()]["responses"]
                    .as_object()
                    .unwrap();
                assert!(
                    documented_statuses.contains_key(status.as_str()),
                    "{method} {template} answered an undocumented {status}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {template}"
                );
            }
        }
    }
}
