//! The router in-process (no socket): every route and status of the legacy API, the text and
//! JSON renderings, admin tokens, expiry at read time, and bad input answered with a JSON 4xx.

use std::{sync::Arc, time::Duration};

use axum::{
    body::{to_bytes, Body},
    http::{header, HeaderMap, Method, Request, StatusCode},
    Router,
};
use clusterctx::{
    protocol::{self, ClusterInfo, ErrorBody, KeyItem},
    server::{self, AppState, Config, ManualClock},
};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tower::ServiceExt;

use crate::support::stores::{both_stores, Backend, Db};

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not the expected JSON ({e}): {:?}", self.text()))
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// A JSON error with a message, and never a 5xx.
    fn assert_error(&self, status: u16, needle: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert!(self.content_type().starts_with("application/json"));
        let error: ErrorBody = self.json();
        assert!(
            error.error.to_lowercase().contains(&needle.to_lowercase()),
            "{:?} does not mention {needle:?}",
            error.error
        );
    }
}

struct Api {
    router: Router,
    /// Keeps the database server of the PostgreSQL variant up.
    _db: Db,
}

impl Api {
    fn new(backend: Backend, config: Config) -> Api {
        let db = backend.open();
        Api {
            router: server::app(AppState::with_store(config, Arc::clone(&db.store))),
            _db: db,
        }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert_eq!(
            headers
                .get(protocol::SERVICE_HEADER)
                .map(|v| v.to_str().unwrap().to_string()),
            Some(protocol::service_header_value()),
            "every answer names the service"
        );
        Answer {
            status,
            headers,
            body: body.to_vec(),
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Method::GET, uri, &[], Body::empty()).await
    }

    async fn get_json(&self, uri: &str) -> Answer {
        self.send(
            Method::GET,
            uri,
            &[("accept", "application/json")],
            Body::empty(),
        )
        .await
    }

    async fn post_json(&self, uri: &str, body: &str) -> Answer {
        self.send(
            Method::POST,
            uri,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    /// DELETE with an `Authorization` header (`Bearer <token>`).
    async fn delete_as(&self, uri: &str, authorization: &str) -> Answer {
        self.send(
            Method::DELETE,
            uri,
            &[("authorization", authorization)],
            Body::empty(),
        )
        .await
    }

    async fn create_cluster(&self) -> ClusterInfo {
        let answer = self
            .send(Method::POST, "/api/v1/clusters", &[], Body::empty())
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
        answer.json()
    }

    async fn create_key(&self, pin: &str, key: &str, value: &str) -> Answer {
        let body = serde_json::json!({"key": key, "value": value}).to_string();
        self.post_json(&format!("/api/v1/clusters/{pin}/keys"), &body)
            .await
    }
}

fn parse_time(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
}

both_stores! {
    async fn creating_a_cluster_gives_pin_times_and_token(backend: Backend) {
        let api = Api::new(backend, Config::default());
        let answer = api
            .send(Method::POST, "/api/v1/clusters", &[], Body::empty())
            .await;
        assert_eq!(answer.status, StatusCode::CREATED);
        assert!(answer.content_type().starts_with("application/json"));
        assert_eq!(answer.headers["cache-control"], "no-store");
        let raw: serde_json::Value = answer.json();
        let fields: Vec<_> = raw.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            fields,
            ["admin_token", "creation_time", "expires_at", "pin"],
            "exactly the documented fields"
        );
        let info: ClusterInfo = answer.json();
        assert!(protocol::is_valid_pin(&info.pin), "{}", info.pin);
        let created = parse_time(&info.creation_time);
        let expires = parse_time(info.expires_at.as_deref().unwrap());
        assert_eq!(expires - created, time::Duration::hours(24));
        assert!((OffsetDateTime::now_utc() - created).abs() < time::Duration::seconds(5));
        assert_eq!(info.admin_token.as_ref().unwrap().len(), 43);

        // With a trailing slash, as Django clients send it; a body is ignored.
        let again = api
            .send(Method::POST, "/api/v1/clusters/", &[], "ignored")
            .await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert_ne!(again.json::<ClusterInfo>().pin, info.pin);
    }

    async fn cluster_show_and_delete(backend: Backend) {
        let api = Api::new(backend, Config::default());
        let info = api.create_cluster().await;
        let token = info.admin_token.clone().unwrap();
        let path = format!("/api/v1/clusters/{}", info.pin);

        let shown = api.get(&path).await;
        assert_eq!(shown.status, StatusCode::OK);
        let shown: ClusterInfo = shown.json();
        assert_eq!(shown.pin, info.pin);
        assert_eq!(shown.creation_time, info.creation_time);
        assert_eq!(shown.expires_at, info.expires_at);
        assert_eq!(shown.admin_token, None, "the token is only given once");
        assert_eq!(api.get(&format!("{path}/")).await.status, StatusCode::OK);

        api.get("/api/v1/clusters/aaaaaaaaaaaa")
            .await
            .assert_error(404, "no cluster");
        api.get("/api/v1/clusters/NOT-A-PIN")
            .await
            .assert_error(404, "no cluster");

        api.create_key(&info.pin, "master_ip", "10.0.0.1").await;
        api.send(Method::DELETE, &path, &[], Body::empty())
            .await
            .assert_error(401, "authorization");
        api.delete_as(&path, "Bearer wrong")
            .await
            .assert_error(403, "token");
        let bearer = format!("Bearer {token}");
        let deleted = api.delete_as(&path, &bearer).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert!(deleted.body.is_empty());
        api.get(&path).await.assert_error(404, "no cluster");
        assert_eq!(
            api.get(&format!("{path}/keys/master_ip")).await.status,
            StatusCode::NOT_FOUND,
            "keys go with the cluster"
        );
        api.delete_as(&path, &bearer)
            .await
            .assert_error(404, "no cluster");
    }

    async fn keys_create_list_conflict(backend: Backend) {
        let api = Api::new(backend, Config::default());
        let pin = api.create_cluster().await.pin;
        let keys = format!("/api/v1/clusters/{pin}/keys");

        let empty = api.get(&keys).await;
        assert_eq!(empty.status, StatusCode::OK);
        assert_eq!(empty.text(), "[]");

        let created = api.create_key(&pin, "master_ip", "10.10.25.5").await;
        assert_eq!(created.status, StatusCode::CREATED);
        assert_eq!(
            created.json::<KeyItem>(),
            KeyItem {
                key: "master_ip".into(),
                value: "10.10.25.5".into()
            }
        );
        api.create_key(&pin, "master_ip", "10.10.25.6")
            .await
            .assert_error(409, "already exists");
        let slash = api
            .post_json(&format!("{keys}/"), r#"{"key": "a-b_C9", "value": "é"}"#)
            .await;
        assert_eq!(slash.status, StatusCode::CREATED);

        let listed: Vec<KeyItem> = api.get(&keys).await.json();
        assert_eq!(
            listed,
            vec![
                KeyItem {
                    key: "a-b_C9".into(),
                    value: "é".into()
                },
                KeyItem {
                    key: "master_ip".into(),
                    value: "10.10.25.5".into()
                },
            ]
        );
        api.get("/api/v1/clusters/aaaaaaaaaaaa/keys")
            .await
            .assert_error(404, "no cluster");
        api.create_key("aaaaaaaaaaaa", "k", "v")
            .await
            .assert_error(404, "no cluster");
    }

    async fn single_key_renders_text_by_default_and_json_on_request(backend: Backend) {
        let api = Api::new(backend, Config::default());
        let pin = api.create_cluster().await.pin;
        api.create_key(&pin, "master_ip", "10.10.25.5").await;
        let path = format!("/api/v1/clusters/{pin}/keys/master_ip");

        for accept in [
            None,
            Some("*/*"),
            Some("text/plain"),
            Some("text/*, */*;q=0.1"),
        ] {
            let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept", *a)).collect();
            let answer = api.send(Method::GET, &path, &headers, Body::empty()).await;
            assert_eq!(answer.status, StatusCode::OK, "{accept:?}");
            assert_eq!(answer.text(), "master_ip: 10.10.25.5", "{accept:?}");
            assert!(
                answer.content_type().starts_with("text/plain"),
                "{accept:?}"
            );
        }
        for accept in [
            "application/json",
            "application/json; charset=utf-8",
            "text/html, application/json",
        ] {
            let answer = api
                .send(Method::GET, &path, &[("accept", accept)], Body::empty())
                .await;
            assert_eq!(answer.status, StatusCode::OK);
            assert!(
                answer.content_type().starts_with("application/json"),
                "{accept}"
            );
            assert_eq!(
                answer.json::<KeyItem>(),
                KeyItem {
                    key: "master_ip".into(),
                    value: "10.10.25.5".into()
                }
            );
        }
        assert_eq!(
            api.get(&format!("{path}/")).await.text(),
            "master_ip: 10.10.25.5"
        );

        // 404 in text mode: empty body, as legacy shell agents expect; JSON mode explains.
        let missing = format!("/api/v1/clusters/{pin}/keys/master_ready");
        let text_404 = api.get(&missing).await;
        assert_eq!(text_404.status, StatusCode::NOT_FOUND);
        assert!(text_404.body.is_empty(), "{:?}", text_404.text());
        api.get_json(&missing)
            .await
            .assert_error(404, "no such key");
        let unknown_pin = api
            .get("/api/v1/clusters/aaaaaaaaaaaa/keys/master_ip")
            .await;
        assert_eq!(unknown_pin.status, StatusCode::NOT_FOUND);
        assert!(unknown_pin.body.is_empty());
        let zero_wait = api.get(&format!("{missing}?wait=0")).await;
        assert_eq!(zero_wait.status, StatusCode::NOT_FOUND);
    }

    async fn replacing_and_deleting_keys_needs_the_admin_token(backend: Backend) {
        let api = Api::new(backend, Config::default());
        let info = api.create_cluster().await;
        let pin = info.pin;
        let bearer = format!("Bearer {}", info.admin_token.unwrap());
        api.create_key(&pin, "master_ip", "10.0.0.1").await;
        let path = format!("/api/v1/clusters/{pin}/keys/master_ip");
        let json = ("content-type", "application/json");
        let new_value = r#"{"key": "master_ip", "value": "10.0.0.2"}"#;

        for method in [Method::PUT, Method::PATCH] {
            api.send(method.clone(), &path, &[json], new_value)
                .await
                .assert_error(401, "authorization");
            api.send(
                method.clone(),
                &path,
                &[json, ("authorization", "Bearer nottheone")],
                new_value,
            )
            .await
            .assert_error(403, "token");
        }
        api.send(Method::DELETE, &path, &[], Body::empty())
            .await
            .assert_error(401, "authorization");
        assert_eq!(
            api.get(&path).await.text(),
            "master_ip: 10.0.0.1",
            "unchanged"
        );

        let put = api
            .send(
                Method::PUT,
                &path,
                &[json, ("authorization", &bearer)],
                new_value,
            )
            .await;
        assert_eq!(put.status, StatusCode::OK);
        assert_eq!(put.text(), "master_ip: 10.0.0.2");
        let patched = api
            .send(
                Method::PATCH,
                &path,
                &[
                    json,
                    ("authorization", &bearer),
                    ("accept", "application/json"),
                ],
                r#"{"value": "10.0.0.3"}"#,
            )
            .await;
        assert_eq!(patched.status, StatusCode::OK);
        assert_eq!(patched.json::<KeyItem>().value, "10.0.0.3");
        let empty_patch = api
            .send(
                Method::PATCH,
                &path,
                &[("authorization", &bearer)],
                Body::empty(),
            )
            .await;
        assert_eq!(empty_patch.status, StatusCode::OK);
        assert_eq!(empty_patch.text(), "master_ip: 10.0.0.3");

        api.send(
            Method::PUT,
            &path,
            &[json, ("authorization", &bearer)],
            r#"{"key": "other", "value": "x"}"#,
        )
        .await
        .assert_error(400, "differs");
        api.send(
            Method::PUT,
            &path,
            &[json, ("authorization", &bearer)],
            r#"{"key": "master_ip"}"#,
        )
        .await
        .assert_error(400, "field \"value\": missing");
        let absent = format!("/api/v1/clusters/{pin}/keys/absent");
        api.send(
            Method::PUT,
            &absent,
            &[
                json,
                ("authorization", &bearer),
                ("accept", "application/json"),
            ],
            r#"{"value": "x"}"#,
        )
        .await
        .assert_error(404, "no such key");

        let deleted = api.delete_as(&path, &bearer).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert_eq!(api.get(&path).await.status, StatusCode::NOT_FOUND);
        api.delete_as(&path, &bearer)
            .await
            .assert_error(404, "no such key");
        // Re-creating a deleted key is a plain create again.
        assert_eq!(
            api.create_key(&pin, "master_ip", "10.0.0.9").await.status,
            StatusCode::CREATED
        );
    }

    async fn open_mode_skips_the_token(backend: Backend) {
        let api = Api::new(backend, Config {
            open: true,
            ..Config::default()
        });
        let pin = api.create_cluster().await.pin;
        api.create_key(&pin, "master_ip", "10.0.0.1").await;
        let path = format!("/api/v1/clusters/{pin}/keys/master_ip");
        let put = api
            .send(
                Method::PUT,
                &path,
                &[("content-type", "application/json")],
                r#"{"key": "master_ip", "value": "10.0.0.2"}"#,
            )
            .await;
        assert_eq!(put.status, StatusCode::OK);
        assert_eq!(
            api.send(Method::DELETE, &path, &[], Body::empty())
                .await
                .status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            api.send(
                Method::DELETE,
                &format!("/api/v1/clusters/{pin}"),
                &[],
                Body::empty()
            )
            .await
            .status,
            StatusCode::NO_CONTENT
        );
    }

    async fn expired_pins_are_gone_at_read_time(backend: Backend) {
        // No sweep runs here (the router alone has no background task): expiry is decided when
        // reading, from the configured clock.
        let clock = ManualClock::starting_now();
        let api = Api::new(backend, Config {
            ttl: Duration::from_secs(3600),
            clock: clock.clock(),
            ..Config::default()
        });
        let info = api.create_cluster().await;
        let pin = info.pin;
        let bearer = format!("Bearer {}", info.admin_token.unwrap());
        api.create_key(&pin, "master_ip", "10.0.0.1").await;
        let key = format!("/api/v1/clusters/{pin}/keys/master_ip");
        clock.advance(Duration::from_millis(3_599_999));
        assert_eq!(
            api.get(&key).await.status,
            StatusCode::OK,
            "alive to the last ms"
        );

        clock.advance(Duration::from_millis(1));
        api.get(&format!("/api/v1/clusters/{pin}"))
            .await
            .assert_error(410, "expired");
        api.get(&format!("/api/v1/clusters/{pin}/keys"))
            .await
            .assert_error(410, "expired");
        api.get(&key).await.assert_error(410, "expired");
        api.get_json(&format!("{key}?wait=30"))
            .await
            .assert_error(410, "expired");
        api.create_key(&pin, "other", "x")
            .await
            .assert_error(410, "expired");
        api.delete_as(&format!("/api/v1/clusters/{pin}"), &bearer)
            .await
            .assert_error(410, "expired");
    }

    async fn form_encoded_and_untyped_bodies_are_accepted(backend: Backend) {
        let api = Api::new(backend, Config::default());
        let pin = api.create_cluster().await.pin;
        let keys = format!("/api/v1/clusters/{pin}/keys");
        let form = api
            .send(
                Method::POST,
                &keys,
                &[("content-type", "application/x-www-form-urlencoded")],
                "key=from_form&value=a+b%2Fc",
            )
            .await;
        assert_eq!(form.status, StatusCode::CREATED, "{}", form.text());
        assert_eq!(form.json::<KeyItem>().value, "a b/c");
        let untyped = api
            .send(
                Method::POST,
                &keys,
                &[],
                r#"{"key": "untyped", "value": "1"}"#,
            )
            .await;
        assert_eq!(untyped.status, StatusCode::CREATED, "{}", untyped.text());
        // `curl -d '{...}'` without -H: form content type, JSON body.
        let curl_default = api
            .send(
                Method::POST,
                &keys,
                &[("content-type", "application/x-www-form-urlencoded")],
                r#"{"key": "curl_default", "value": "1"}"#,
            )
            .await;
        assert_eq!(
            curl_default.status,
            StatusCode::CREATED,
            "{}",
            curl_default.text()
        );
    }

    async fn bad_input_gets_a_clear_json_4xx(backend: Backend) {
        let api = Api::new(backend, Config {
            max_body: 4096,
            ..Config::default()
        });
        let pin = api.create_cluster().await.pin;
        let keys = format!("/api/v1/clusters/{pin}/keys");

        let cases: &[(&[u8], u16, &str)] = &[
            (b"{\"key\": \"k\", \"value\": ", 400, "not valid JSON"),
            (b"not json at all", 400, "not valid JSON"),
            (
                b"",
                400,
                "field \"key\": missing; field \"value\": missing; expected",
            ),
            (b"[\"key\", \"value\"]", 400, "JSON object"),
            (b"\"master_ip\"", 400, "JSON object"),
            (b"{\"value\": \"v\"}", 400, "field \"key\": missing"),
            (b"{\"key\": \"k\"}", 400, "field \"value\": missing"),
            (
                b"{\"key\": \"k\", \"value\": true}",
                400,
                "must be text (or a number), not a boolean",
            ),
            (
                b"{\"key\": \"k\", \"value\": {\"a\": 1}}",
                400,
                "not an object",
            ),
            (b"{\"key\": \"k\", \"value\": [1]}", 400, "not an array"),
            (b"{\"key\": \"k\", \"value\": null}", 400, "not null"),
            (
                b"{\"key\": \"a b\", \"value\": \"v\"}",
                400,
                "may only contain",
            ),
            (
                b"{\"key\": \"k/../x\", \"value\": \"v\"}",
                400,
                "may only contain",
            ),
            (
                b"{\"key\": \"\", \"value\": \"v\"}",
                400,
                "field \"key\": blank",
            ),
            (
                b"{\"key\": \"k\", \"value\": \"\"}",
                400,
                "field \"value\": blank",
            ),
            (
                b"{\"key\": \"k\", \"value\": \" \\t\\n\"}",
                400,
                "field \"value\": blank",
            ),
            (b"{\"key\": \"k\", \"value\": \"\xff\xfe\"}", 400, "UTF-8"),
        ];
        for (body, status, needle) in cases {
            let answer = api
                .send(
                    Method::POST,
                    &keys,
                    &[("content-type", "application/json")],
                    body.to_vec(),
                )
                .await;
            answer.assert_error(*status, needle);
        }
        let long_key = serde_json::json!({"key": "k".repeat(101), "value": "v"}).to_string();
        api.post_json(&keys, &long_key)
            .await
            .assert_error(400, "longer than 100");
        let long_value = serde_json::json!({"key": "k", "value": "v".repeat(1001)}).to_string();
        api.post_json(&keys, &long_value)
            .await
            .assert_error(400, "longer than 1000");
        let max_value = serde_json::json!({"key": "k", "value": "é".repeat(1000)}).to_string();
        assert_eq!(
            api.post_json(&keys, &max_value).await.status,
            StatusCode::CREATED
        );
        api.send(
            Method::POST,
            &keys,
            &[("content-type", "application/x-www-form-urlencoded")],
            "key=k2&value=%C3%28",
        )
        .await
        .assert_error(400, "UTF-8");
        api.send(
            Method::POST,
            &keys,
            &[("content-type", "multipart/form-data; boundary=x")],
            "--x--",
        )
        .await
        .assert_error(415, "multipart");

        // A huge body.
        let huge = format!(r#"{{"key": "k", "value": "{}"}}"#, "v".repeat(10_000));
        api.post_json(&keys, &huge)
            .await
            .assert_error(413, "larger than 4096");
        // Chunked uploads without a length are covered over a real socket in server_live.rs.

        // Unknown methods and routes.
        let not_allowed = api.send(Method::PUT, &keys, &[], Body::empty()).await;
        not_allowed.assert_error(405, "not allowed");
        let allow = not_allowed.headers["allow"].to_str().unwrap();
        assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
        api.send(Method::GET, "/api/v1/clusters", &[], Body::empty())
            .await
            .assert_error(405, "not allowed");
        api.send(
            Method::from_bytes(b"BREW").unwrap(),
            &keys,
            &[],
            Body::empty(),
        )
        .await
        .assert_error(405, "not allowed");
        api.get("/api/v2/whatever")
            .await
            .assert_error(404, "no such route");

        // Bad long-poll waits and key names in the path.
        let key = format!("{keys}/master_ip");
        for wait in [
            "61",
            "60.5",
            "-1",
            "abc",
            "",
            "1.2345",
            ".5",
            "99999999999999999999999",
        ] {
            api.get(&format!("{key}?wait={wait}"))
                .await
                .assert_error(400, "wait must be");
        }
        api.get(&format!("{keys}/bad%20key"))
            .await
            .assert_error(400, "may only contain");
        api.get(&format!("{keys}/{}", "k".repeat(101)))
            .await
            .assert_error(400, "longer than 100");
        api.get(&format!("{keys}/%FF%FE"))
            .await
            .assert_error(400, "malformed path");
    }

    async fn healthz_and_metrics(backend: Backend) {
        let api = Api::new(backend, Config::default());
        let health = api.get("/healthz").await;
        assert_eq!(health.status, StatusCode::OK);
        assert_eq!(health.text(), "ok\n");

        let pin = api.create_cluster().await.pin;
        api.create_key(&pin, "master_ip", "10.0.0.1").await;
        api.get(&format!("/api/v1/clusters/{pin}/keys/master_ip"))
            .await;
        api.get(&format!("/api/v1/clusters/{pin}/keys/master_ip/"))
            .await;
        api.get(&format!("/api/v1/clusters/{pin}/keys/nope")).await;
        api.get("/nowhere").await;

        let metrics = api.get("/metrics").await;
        assert_eq!(metrics.status, StatusCode::OK);
        assert!(metrics
            .content_type()
            .starts_with("text/plain; version=0.0.4"));
        let text = metrics.text();
        for line in [
            "clusterctx_http_requests_total{route=\"/api/v1/clusters\",method=\"POST\",status=\"201\"} 1",
            "clusterctx_http_requests_total{route=\"/api/v1/clusters/{pin}/keys\",method=\"POST\",status=\"201\"} 1",
            "clusterctx_http_requests_total{route=\"/api/v1/clusters/{pin}/keys/{key}\",method=\"GET\",status=\"200\"} 2",
            "clusterctx_http_requests_total{route=\"/api/v1/clusters/{pin}/keys/{key}\",method=\"GET\",status=\"404\"} 1",
            "clusterctx_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
            "clusterctx_longpoll_waiters 0",
            "clusterctx_clusters 1",
            "clusterctx_keys 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains(&pin), "a PIN leaked into the metrics");
    }
}

#[tokio::test]
async fn state_can_be_shared_by_two_routers() {
    // What other tests rely on: `AppState` is an `Arc` and `app` takes a clone.
    let state: Arc<AppState> = AppState::open(Config::default()).unwrap();
    let a = server::app(Arc::clone(&state));
    let b = server::app(state);
    let created = a
        .oneshot(
            Request::post("/api/v1/clusters")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = to_bytes(created.into_body(), usize::MAX).await.unwrap();
    let info: ClusterInfo = serde_json::from_slice(&body).unwrap();
    let shown = b
        .oneshot(
            Request::get(format!("/api/v1/clusters/{}", info.pin))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(shown.status(), StatusCode::OK);
}
