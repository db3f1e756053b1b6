//! What a legacy client sees (PROTOCOL.md part 4, "Legacy fidelity"): every row of the table
//! in issue 10, with the legacy Django service's answer as the expected value, through the
//! router in the default mode and under `--emulate-legacy`; and the miss limit behind a NAT.

use axum::{
    body::{to_bytes, Body},
    http::{Method, Request},
    Router,
};
use clusterctx::server::{self, AppState, Config};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::support::server::create_cluster;

/// A body the answer must have.
#[derive(Debug, Clone)]
enum Shape {
    /// Anything.
    Any,
    /// Exactly this text.
    Text(&'static str),
    /// This JSON.
    Json(Value),
    /// A JSON object with this field (our `{"error": ...}`).
    HasField(&'static str),
}

/// An answer: its status, its body, and the one item the PIN holds afterwards, if it must.
#[derive(Debug, Clone)]
struct Expect {
    status: u16,
    body: Shape,
    stored: Option<(&'static str, &'static str)>,
}

const fn answer(status: u16, body: Shape) -> Expect {
    Expect {
        status,
        body,
        stored: None,
    }
}

fn created(key: &'static str, value: &'static str) -> Expect {
    Expect {
        status: 201,
        body: Shape::Any,
        stored: Some((key, value)),
    }
}

/// Where a request goes: `{pin}` is a fresh PIN that holds `k: v`, `{gone}` a PIN that was
/// deleted, `{unknown}` one that never existed.
struct Row {
    what: &'static str,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    /// What the legacy service answered.
    legacy: Expect,
    /// What the default mode answers where it differs on purpose (PROTOCOL.md part 4).
    ours: Option<Expect>,
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn post(what: &'static str, body: &'static str, legacy: Expect, ours: Option<Expect>) -> Row {
    Row {
        what,
        method: Method::POST,
        path: "/api/v1/clusters/{pin}/keys",
        headers: &[JSON],
        body,
        legacy,
        ours,
    }
}

fn get(
    what: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    legacy: Expect,
    ours: Option<Expect>,
) -> Row {
    Row {
        what,
        method: Method::GET,
        path,
        headers,
        body: "",
        legacy,
        ours,
    }
}

fn field_errors(field: &str, message: &str) -> Shape {
    Shape::Json(json!({ field: [message] }))
}

const KEY: &str = "/api/v1/clusters/{pin}/keys/k";
const TEXT: Shape = Shape::Text("k: v");

fn table() -> Vec<Row> {
    let blank = "This field may not be blank.";
    let not_text = "Not a valid string.";
    let json_item = || Shape::Json(json!({"key": "k", "value": "v"}));
    let error = || Shape::HasField("error");
    vec![
        // Row 1: values trimmed.
        post(
            "value with spaces",
            r#"{"key": "a", "value": " 10.0.0.6 "}"#,
            created("a", "10.0.0.6"),
            None,
        ),
        post(
            "value with a newline",
            r#"{"key": "a", "value": "10.0.0.5\n"}"#,
            created("a", "10.0.0.5"),
            None,
        ),
        Row {
            what: "form value with spaces",
            headers: &[("content-type", "application/x-www-form-urlencoded")],
            ..post(
                "",
                "key=a&value=+10.0.0.6%20",
                created("a", "10.0.0.6"),
                None,
            )
        },
        // Row 2: blank values refused.
        post(
            "blank value",
            r#"{"key": "a", "value": "   "}"#,
            answer(400, field_errors("value", blank)),
            Some(answer(400, error())),
        ),
        // Row 3: keys trimmed.
        post(
            "key with spaces",
            r#"{"key": " master_ip ", "value": "10.0.0.1"}"#,
            created("master_ip", "10.0.0.1"),
            None,
        ),
        // Row 4: numbers as their text; other types refused.
        post(
            "integer value",
            r#"{"key": "a", "value": 5}"#,
            created("a", "5"),
            None,
        ),
        post(
            "decimal value",
            r#"{"key": "a", "value": 1.5}"#,
            created("a", "1.5"),
            None,
        ),
        post(
            "integer key",
            r#"{"key": 5, "value": "x"}"#,
            created("5", "x"),
            None,
        ),
        post(
            "boolean value",
            r#"{"key": "a", "value": true}"#,
            answer(400, field_errors("value", not_text)),
            Some(answer(400, error())),
        ),
        post(
            "object value",
            r#"{"key": "a", "value": {"x": 1}}"#,
            answer(400, field_errors("value", not_text)),
            Some(answer(400, error())),
        ),
        post(
            "array key",
            r#"{"key": ["a"], "value": "x"}"#,
            answer(400, field_errors("key", not_text)),
            Some(answer(400, error())),
        ),
        post(
            "null value",
            r#"{"key": "a", "value": null}"#,
            answer(400, field_errors("value", "This field may not be null.")),
            Some(answer(400, error())),
        ),
        // Row 5: q-values and the order of equally preferred types.
        get(
            "text/plain, application/json",
            KEY,
            &[("accept", "text/plain, application/json")],
            answer(200, TEXT),
            None,
        ),
        get(
            "application/json;q=0.1, text/plain",
            KEY,
            &[("accept", "application/json;q=0.1, text/plain")],
            answer(200, TEXT),
            None,
        ),
        get(
            "text/plain;q=1, application/json;q=0.001",
            KEY,
            &[("accept", "text/plain;q=1, application/json;q=0.001")],
            answer(200, TEXT),
            None,
        ),
        // Row 6: wildcards and ?format=.
        get(
            "application/*",
            KEY,
            &[("accept", "application/*")],
            answer(200, json_item()),
            None,
        ),
        get(
            "?format=json",
            "/api/v1/clusters/{pin}/keys/k?format=json",
            &[],
            answer(200, json_item()),
            None,
        ),
        get(
            "?format=txt",
            "/api/v1/clusters/{pin}/keys/k?format=txt",
            &[("accept", "*/*")],
            answer(200, TEXT),
            None,
        ),
        get("no Accept", KEY, &[], answer(200, TEXT), None),
        // Row 7: nothing acceptable. The legacy renderer printed an empty body.
        get(
            "text/html only",
            KEY,
            &[("accept", "text/html")],
            answer(406, Shape::Text("")),
            Some(answer(200, TEXT)),
        ),
        get(
            "application/xml only",
            KEY,
            &[("accept", "application/xml")],
            answer(406, Shape::Text("")),
            Some(answer(200, TEXT)),
        ),
        // Row 8: the keys list of an unknown or deleted PIN.
        get(
            "keys of an unknown PIN",
            "/api/v1/clusters/{unknown}/keys",
            &[],
            answer(200, Shape::Json(json!([]))),
            Some(answer(404, error())),
        ),
        get(
            "keys of a deleted PIN",
            "/api/v1/clusters/{gone}/keys",
            &[],
            answer(200, Shape::Json(json!([]))),
            Some(answer(404, error())),
        ),
        // Row 9: error bodies.
        get(
            "absent key as JSON",
            "/api/v1/clusters/{pin}/keys/absent",
            &[("accept", "application/json")],
            answer(404, Shape::Json(json!({"detail": "Not found."}))),
            Some(answer(404, error())),
        ),
        get(
            "absent key as text",
            "/api/v1/clusters/{pin}/keys/absent",
            &[],
            answer(404, Shape::Text("")),
            None,
        ),
        get(
            "unknown PIN",
            "/api/v1/clusters/{unknown}",
            &[],
            answer(404, Shape::Json(json!({"detail": "Not found."}))),
            Some(answer(404, error())),
        ),
        post(
            "existing key",
            r#"{"key": "k", "value": "other"}"#,
            answer(
                409,
                Shape::Json(json!({"detail": "Resource already exists, cannot be created again"})),
            ),
            Some(answer(409, error())),
        ),
        post(
            "missing fields",
            r#"{}"#,
            answer(
                400,
                Shape::Json(json!({
                    "key": ["This field is required."],
                    "value": ["This field is required."]
                })),
            ),
            Some(answer(400, error())),
        ),
        Row {
            what: "method not allowed",
            method: Method::PATCH,
            path: "/api/v1/clusters/{pin}/keys",
            headers: &[JSON],
            body: "{}",
            legacy: answer(
                405,
                Shape::Json(json!({"detail": "Method \"PATCH\" not allowed."})),
            ),
            ours: Some(answer(405, error())),
        },
        // Trailing slashes: the legacy routes had none.
        get(
            "trailing slash",
            "/api/v1/clusters/{pin}/keys/",
            &[],
            answer(404, Shape::Any),
            Some(answer(
                200,
                Shape::Json(json!([{"key": "k", "value": "v"}])),
            )),
        ),
    ]
}

/// A router in one mode, with the PINs the table's paths name.
struct Service {
    router: Router,
    pin: String,
    gone: String,
}

impl Service {
    async fn new(emulate_legacy: bool) -> Service {
        let router = server::app(
            AppState::open(Config {
                emulate_legacy,
                ..Config::default()
            })
            .unwrap(),
        );
        let mut service = Service {
            router,
            pin: String::new(),
            gone: String::new(),
        };
        service.pin = service.new_pin().await;
        let (status, _) = service
            .send(
                Method::POST,
                &format!("/api/v1/clusters/{}/keys", service.pin),
                &[JSON],
                r#"{"key": "k", "value": "v"}"#,
            )
            .await;
        assert_eq!(status, 201);
        service.gone = service.new_pin().await;
        let (status, _) = service
            .send(
                Method::DELETE,
                &service.cluster_path(&service.gone),
                &[],
                "",
            )
            .await;
        // Our default mode wants the admin token: delete it properly there.
        if status != 204 {
            assert!(!emulate_legacy, "{status}");
            service.gone = service.new_pin_deleted().await;
        }
        service
    }

    fn cluster_path(&self, pin: &str) -> String {
        format!("/api/v1/clusters/{pin}")
    }

    async fn create(&self) -> Value {
        let (status, body) = self.send(Method::POST, "/api/v1/clusters", &[], "").await;
        assert_eq!(status, 201);
        serde_json::from_slice(&body).unwrap()
    }

    async fn new_pin(&self) -> String {
        self.create().await["pin"].as_str().unwrap().to_string()
    }

    async fn new_pin_deleted(&self) -> String {
        let info = self.create().await;
        let pin = info["pin"].as_str().unwrap();
        let bearer = format!("Bearer {}", info["admin_token"].as_str().unwrap());
        let (status, _) = self
            .send(
                Method::DELETE,
                &self.cluster_path(pin),
                &[("authorization", &bearer)],
                "",
            )
            .await;
        assert_eq!(status, 204);
        pin.to_string()
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, body.to_vec())
    }

    /// Runs `row` against a PIN of its own (so rows cannot disturb each other) and says how
    /// the answer differs from `expected`, if it does.
    async fn check(&self, row: &Row, expected: &Expect) -> Result<(), String> {
        let pin = if row.method == Method::POST {
            let pin = self.new_pin().await;
            let (status, _) = self
                .send(
                    Method::POST,
                    &format!("/api/v1/clusters/{pin}/keys"),
                    &[JSON],
                    r#"{"key": "k", "value": "v"}"#,
                )
                .await;
            assert_eq!(status, 201);
            pin
        } else {
            self.pin.clone()
        };
        let path = row
            .path
            .replace("{pin}", &pin)
            .replace("{gone}", &self.gone)
            .replace("{unknown}", "zzzzzzzzzzzz");
        let (status, body) = self
            .send(row.method.clone(), &path, row.headers, row.body)
            .await;
        let text = String::from_utf8_lossy(&body).to_string();
        if status != expected.status {
            return Err(format!(
                "status {status} ({text:?}), expected {}",
                expected.status
            ));
        }
        let body_ok = match &expected.body {
            Shape::Any => true,
            Shape::Text(want) => text == *want,
            Shape::Json(want) => serde_json::from_slice::<Value>(&body).ok().as_ref() == Some(want),
            Shape::HasField(field) => serde_json::from_slice::<Value>(&body)
                .is_ok_and(|v| v.get(field).is_some_and(Value::is_string)),
        };
        if !body_ok {
            return Err(format!("body {text:?}, expected {:?}", expected.body));
        }
        if let Some((key, value)) = expected.stored {
            let (_, list) = self
                .send(
                    Method::GET,
                    &format!("/api/v1/clusters/{pin}/keys"),
                    &[],
                    "",
                )
                .await;
            let mut list: Vec<Value> = serde_json::from_slice(&list).unwrap();
            // Ours lists by key name, the legacy service in creation order: the order of
            // unique keys carries no meaning.
            list.sort_by_key(|item| item["key"].as_str().map(str::to_string));
            let mut want = vec![
                json!({"key": "k", "value": "v"}),
                json!({"key": key, "value": value}),
            ];
            want.sort_by_key(|item| item["key"].as_str().map(str::to_string));
            if list != want {
                return Err(format!("stored {list:?}, expected {want:?}"));
            }
        }
        Ok(())
    }
}

async fn run_table(emulate_legacy: bool) {
    let service = Service::new(emulate_legacy).await;
    let mut failures = Vec::new();
    let rows = table();
    for row in &rows {
        let expected = match (&row.ours, emulate_legacy) {
            (Some(ours), false) => ours,
            _ => &row.legacy,
        };
        if let Err(why) = service.check(row, expected).await {
            failures.push(format!("{}: {why}", row.what));
        }
    }
    assert!(
        failures.is_empty(),
        "emulate_legacy={emulate_legacy}: {} of {} rows differ:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn emulate_legacy_answers_every_row_as_legacy() {
    run_table(true).await;
}

#[tokio::test]
async fn default_mode_answers_the_first_rows_as_legacy_and_the_rest_as_documented() {
    run_table(false).await;
}

/// Many clusters behind one NAT share an address: a neighbour's misses must not lock them out.
#[tokio::test]
async fn a_client_that_tripped_the_miss_limit_still_reads_existing_pins() {
    let server = server::spawn(Config {
        miss_burst: 3,
        miss_per_sec: 0.01,
        ..Config::default()
    })
    .await
    .unwrap();
    let url = server.url();
    let http = reqwest::Client::new();
    let (pin, _) = create_cluster(&http, &url).await;
    let status = crate::support::server::post_key(&http, &url, &pin, "master_ip", "10.0.0.1").await;
    assert_eq!(status, 201);
    let unknown = format!("{url}/api/v1/clusters/zzzzzzzzzzzz/keys/master_ip");
    for _ in 0..3 {
        assert_eq!(http.get(&unknown).send().await.unwrap().status(), 404);
    }
    // The same address (the socket peer, 127.0.0.1) has tripped the limit.
    assert_eq!(http.get(&unknown).send().await.unwrap().status(), 429);
    let (status, body) = crate::support::server::get_text(
        &http,
        &format!("{url}/api/v1/clusters/{pin}/keys/master_ip"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "master_ip: 10.0.0.1"));
    let status = crate::support::server::post_key(&http, &url, &pin, "worker_1", "x").await;
    assert_eq!(status, 201);
    // And its misses stay refused.
    assert_eq!(http.get(&unknown).send().await.unwrap().status(), 429);
    server.shutdown().await;
}
