//! The operator's web page through the whole router, in-process: its headers, its assets, and
//! an HTML that a strict Content-Security-Policy can run.

use axum::{
    body::{to_bytes, Body},
    http::{header, HeaderMap, Request, StatusCode},
};
use clusterctx::{
    protocol::SERVICE_HEADER,
    server::{self, AppState, Config},
};
use tower::ServiceExt;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

async fn get(path: &str) -> (StatusCode, HeaderMap, String) {
    let app = server::app(AppState::open(Config::default()).unwrap());
    let response = app
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

fn assert_strict(path: &str, headers: &HeaderMap) {
    assert_eq!(header(headers, "content-security-policy"), CSP, "{path}");
    assert_eq!(header(headers, "x-frame-options"), "DENY", "{path}");
    assert_eq!(
        header(headers, "x-content-type-options"),
        "nosniff",
        "{path}"
    );
    assert_eq!(header(headers, "referrer-policy"), "no-referrer", "{path}");
    assert_eq!(header(headers, "cache-control"), "no-store", "{path}");
    assert!(headers.contains_key(SERVICE_HEADER), "{path}");
}

/// Every `<name ...>` opening tag of `html`: where it starts, and its text.
fn tags<'a>(html: &'a str, name: &str) -> Vec<(usize, &'a str)> {
    let open = format!("<{name}");
    html.match_indices(&open)
        .map(|(at, _)| at)
        .filter(|at| html[at + open.len()..].starts_with(|c: char| c == '>' || c.is_whitespace()))
        .map(|at| (at, &html[at..at + html[at..].find('>').unwrap() + 1]))
        .collect()
}

#[tokio::test]
async fn the_page_answers_with_strict_headers() {
    let (status, headers, html) = get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, header::CONTENT_TYPE.as_str()),
        "text/html; charset=utf-8"
    );
    assert_strict("/", &headers);
    assert!(html.starts_with("<!doctype html>"));
    assert!(
        html.contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#)
    );
}

#[tokio::test]
async fn the_page_has_no_inline_script_or_style() {
    let (_, _, html) = get("/").await;
    let lower = html.to_ascii_lowercase();
    let scripts = tags(&lower, "script");
    assert!(!scripts.is_empty(), "the page loads its script");
    for (at, tag) in scripts {
        assert!(tag.contains(" src=\"/static/"), "{tag}");
        assert!(
            lower[at + tag.len()..].starts_with("</script>"),
            "a script with a body: {}",
            &lower[at..]
        );
    }
    assert!(tags(&lower, "style").is_empty(), "a <style> element");
    assert!(!lower.contains(" style="), "a style= attribute");
    // Inline event handlers are inline script too.
    for tag in lower.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap();
        for attribute in tag.split_whitespace().skip(1) {
            assert!(!attribute.starts_with("on"), "an inline handler: <{tag}>");
        }
    }
    assert!(!lower.contains("javascript:"), "a javascript: URL");
}

#[tokio::test]
async fn the_assets_the_page_names_answer_with_their_types() {
    let (_, _, html) = get("/").await;
    let expected = [
        ("/static/app.js", "text/javascript; charset=utf-8"),
        ("/static/app.css", "text/css; charset=utf-8"),
    ];
    for (path, content_type) in expected {
        assert!(
            html.contains(&format!("\"{path}\"")),
            "the page names {path}"
        );
        let (status, headers, body) = get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(header(&headers, "content-type"), content_type, "{path}");
        assert_strict(path, &headers);
        assert!(!body.is_empty(), "{path}");
    }
    let (status, _, _) = get("/static/nothing.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
