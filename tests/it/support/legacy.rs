//! A legacy-like PIN service: the cernvm-online Django service's key handling, defects kept
//! on purpose (PROTOCOL.md part 1, "Known legacy defects"), so that the agent's `auto`
//! election can be tested against the race the real one allowed.
//!
//! - Creating a key checks for an existing one, then inserts, with no uniqueness in between:
//!   a pause between the two lets concurrent creates of one key all succeed.
//! - A GET of a key stored more than once answers 500 (Django's `MultipleObjectsReturned`).
//! - The keys list shows every row in creation order, and 200 `[]` for an unknown PIN.
//! - No self-identification header: agents must treat it as legacy.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};

#[derive(Default)]
struct Clusters {
    /// Rows by PIN, in creation order.
    rows: HashMap<String, Vec<(String, String)>>,
    /// Creates answered 201, by PIN and key.
    created: HashMap<(String, String), usize>,
}

struct Inner {
    clusters: Mutex<Clusters>,
    /// The pause between the existence check and the insert.
    race_window: Duration,
}

/// A running legacy-like service on a loopback port; stops when dropped.
pub struct LegacyService {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl LegacyService {
    pub async fn spawn(race_window: Duration) -> LegacyService {
        let inner = Arc::new(Inner {
            clusters: Mutex::default(),
            race_window,
        });
        let router = Router::new()
            .route("/api/v1/clusters/{pin}", get(cluster))
            .route("/api/v1/clusters/{pin}/keys", get(list).post(create))
            .route("/api/v1/clusters/{pin}/keys/{key}", get(item))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        LegacyService { addr, inner, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new cluster with PIN `pin`.
    pub fn add_pin(&self, pin: &str) {
        self.lock().rows.insert(pin.to_string(), Vec::new());
    }

    /// Stores a row without any check, as a lost race leaves it.
    pub fn insert(&self, pin: &str, key: &str, value: &str) {
        self.lock()
            .rows
            .get_mut(pin)
            .expect("a known PIN")
            .push((key.to_string(), value.to_string()));
    }

    /// How many creates of `key` answered 201.
    pub fn created(&self, pin: &str, key: &str) -> usize {
        self.lock()
            .created
            .get(&(pin.to_string(), key.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// The rows of `pin` in creation order.
    pub fn rows(&self, pin: &str) -> Vec<(String, String)> {
        self.lock().rows.get(pin).cloned().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clusters> {
        self.inner.clusters.lock().unwrap()
    }
}

impl Drop for LegacyService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not found."}))).into_response()
}

async fn cluster(State(inner): State<Arc<Inner>>, Path(pin): Path<String>) -> Response {
    if inner.clusters.lock().unwrap().rows.contains_key(&pin) {
        Json(json!({"pin": pin, "creation_time": "2026-01-01T00:00:00Z"})).into_response()
    } else {
        not_found()
    }
}

async fn list(State(inner): State<Arc<Inner>>, Path(pin): Path<String>) -> Json<Value> {
    let clusters = inner.clusters.lock().unwrap();
    let rows = clusters.rows.get(&pin).cloned().unwrap_or_default();
    Json(
        rows.into_iter()
            .map(|(key, value)| json!({"key": key, "value": value}))
            .collect(),
    )
}

async fn create(
    State(inner): State<Arc<Inner>>,
    Path(pin): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let field = |name: &str| body[name].as_str().map(|text| text.trim().to_string());
    let (Some(key), Some(value)) = (field("key"), field("value")) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"detail": "bad body"}))).into_response();
    };
    let exists = {
        let clusters = inner.clusters.lock().unwrap();
        let Some(rows) = clusters.rows.get(&pin) else {
            return not_found();
        };
        rows.iter().any(|(k, _)| *k == key)
    };
    if exists {
        return (
            StatusCode::CONFLICT,
            Json(json!({"detail": "Resource already exists, cannot be created again"})),
        )
            .into_response();
    }
    // The legacy defect: nothing stops another create of the same key in this gap.
    tokio::time::sleep(inner.race_window).await;
    let mut clusters = inner.clusters.lock().unwrap();
    clusters
        .rows
        .get_mut(&pin)
        .expect("clusters are never deleted here")
        .push((key.clone(), value.clone()));
    *clusters.created.entry((pin, key.clone())).or_default() += 1;
    (
        StatusCode::CREATED,
        Json(json!({"key": key, "value": value})),
    )
        .into_response()
}

async fn item(
    State(inner): State<Arc<Inner>>,
    Path((pin, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let values: Vec<String> = {
        let clusters = inner.clusters.lock().unwrap();
        let rows = clusters.rows.get(&pin).cloned().unwrap_or_default();
        rows.into_iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .collect()
    };
    let json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    match values.as_slice() {
        [] if json => not_found(),
        [] => (StatusCode::NOT_FOUND, "").into_response(),
        [value] if json => Json(json!({"key": key, "value": value})).into_response(),
        [value] => format!("{key}: {value}").into_response(),
        // Django's MultipleObjectsReturned, unhandled.
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "<h1>Server Error (500)</h1>",
        )
            .into_response(),
    }
}
