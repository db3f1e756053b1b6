//! The router and its handlers: the legacy REST API (PROTOCOL.md part 1) with our extensions
//! (part 2), `/healthz` and `/metrics`.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, DefaultBodyLimit, RawQuery, State},
    http::{header, HeaderMap, Method, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post, MethodRouter},
    Json, Router,
};

use super::{
    auth,
    error::{ApiError, PinMiss},
    extract::{parse_item, parse_min, parse_wait, read_body, ApiPath},
    layers,
    negotiate::{negotiate, negotiate_list, Rendering},
    openapi,
    paths::{
        ROUTE_CLUSTER, ROUTE_CLUSTERS, ROUTE_HEALTHZ, ROUTE_KEY, ROUTE_KEYS, ROUTE_MEMBER,
        ROUTE_MEMBERS, ROUTE_METRICS,
    },
    state::{AppState, KeyState},
    store::{Registered, Role},
    web,
};
use crate::{
    protocol::{self, ClusterInfo, KeyItem, MemberItem, MemberRegistration},
    secret::redact,
};

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

type AppRouter = Router<Arc<AppState>>;

/// The whole service as a router, for a server or for `tower::ServiceExt::oneshot` in tests.
pub fn app(state: Arc<AppState>) -> Router {
    let legacy = state.config.emulate_legacy;
    let both = |router, path, methods| both(router, path, methods, !legacy);
    // The PIN routes count misses per client and refuse clients that have too many.
    let pin_routes = AppRouter::new();
    let pin_routes = both(
        pin_routes,
        ROUTE_CLUSTER,
        get(get_cluster).delete(delete_cluster),
    );
    let pin_routes = both(pin_routes, ROUTE_KEYS, get(list_keys).post(create_key));
    let pin_routes = both(
        pin_routes,
        ROUTE_KEY,
        get(get_key)
            .put(put_key)
            .patch(patch_key)
            .delete(delete_key),
    );
    // Ours: the legacy service had no members, and a legacy client must see it so.
    let pin_routes = if legacy {
        pin_routes
    } else {
        let pin_routes = both(pin_routes, ROUTE_MEMBERS, get(list_members));
        both(
            pin_routes,
            ROUTE_MEMBER,
            axum::routing::put(put_member).delete(delete_member),
        )
    };
    let pin_routes = pin_routes.route_layer(middleware::from_fn_with_state(
        Arc::clone(&state),
        layers::limit_misses,
    ));

    let create = post(create_cluster).route_layer(middleware::from_fn_with_state(
        Arc::clone(&state),
        layers::limit_creations,
    ));
    let mut router = both(AppRouter::new(), ROUTE_CLUSTERS, create)
        .route(ROUTE_HEALTHZ, get(healthz))
        .route(ROUTE_METRICS, get(metrics))
        .merge(pin_routes)
        .merge(web::router())
        .merge(openapi::router())
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|method: Method| async { ApiError::MethodNotAllowed(method) })
        .layer(DefaultBodyLimit::max(state.config.max_body));
    if legacy {
        router = router.layer(middleware::from_fn(layers::emulate_legacy));
    }
    let router = router.layer(middleware::from_fn_with_state(
        Arc::clone(&state),
        layers::observe,
    ));
    router.with_state(state)
}

/// Clients often add a trailing slash; both spellings reach the same handler unless
/// `slash` is false (the legacy service's routes had none: it answered 404 to one).
fn both(
    router: AppRouter,
    path: &str,
    methods: MethodRouter<Arc<AppState>>,
    slash: bool,
) -> AppRouter {
    if slash {
        router
            .route(path, methods.clone())
            .route(&format!("{path}/"), methods)
    } else {
        router.route(path, methods)
    }
}

async fn create_cluster(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let mut info = state.create_cluster().await?;
    tracing::info!("cluster {} created", redact(&info.pin));
    if state.config.emulate_legacy {
        info = legacy_shape(info);
    }
    // The answer holds the admin token: no cache may keep it.
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(info),
    )
        .into_response())
}

async fn get_cluster(
    State(state): State<Arc<AppState>>,
    ApiPath(pin): ApiPath<String>,
) -> Result<Json<ClusterInfo>, ApiError> {
    let info = state.cluster_info(&pin).await?;
    Ok(Json(if state.config.emulate_legacy {
        legacy_shape(info)
    } else {
        info
    }))
}

/// The legacy service answered `pin` and `creation_time` only.
fn legacy_shape(info: ClusterInfo) -> ClusterInfo {
    ClusterInfo {
        expires_at: None,
        admin_token: None,
        ..info
    }
}

async fn delete_cluster(
    State(state): State<Arc<AppState>>,
    ApiPath(pin): ApiPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = auth::bearer(&headers).map(str::to_string);
    state.delete_cluster(&pin, token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The legacy service listed its key table filtered by PIN: an unknown or deleted PIN was an
/// empty list, not a 404. Emulated, that answer still counts as a miss.
async fn list_keys(
    State(state): State<Arc<AppState>>,
    ApiPath(pin): ApiPath<String>,
) -> Result<Response, ApiError> {
    match state.list_keys(&pin).await {
        Ok(items) => Ok(Json(items).into_response()),
        Err(ApiError::UnknownPin | ApiError::Expired) if state.config.emulate_legacy => {
            let mut response = Json(Vec::<KeyItem>::new()).into_response();
            response.extensions_mut().insert(PinMiss);
            Ok(response)
        }
        Err(err) => Err(err),
    }
}

async fn create_key(
    State(state): State<Arc<AppState>>,
    ApiPath(pin): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body, state.config.max_body)?;
    let input = parse_item(&headers, &body, &["key", "value"])?;
    // `parse_item` refuses a body without them.
    let (Some(key), Some(value)) = (input.key, input.value) else {
        return Err(ApiError::Internal);
    };
    state.create_key(&pin, key.clone(), value.clone()).await?;
    Ok((StatusCode::CREATED, Json(KeyItem { key, value })).into_response())
}

/// The single-key route answers in the rendering asked for, errors included (a text-mode 404
/// has an empty body).
async fn get_key(
    State(state): State<Arc<AppState>>,
    ApiPath((pin, key)): ApiPath<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let json = match negotiate(&headers, query.as_deref(), state.config.emulate_legacy) {
        Ok(rendering) => rendering == Rendering::Json,
        Err(err) => return err.render(true),
    };
    // Not held while parked: thousands of long-polls would keep their headers for nothing.
    drop(headers);
    match read_key(&state, &pin, &key, query.as_deref()).await {
        Ok(value) => render_item(key, value, json),
        Err(err) => err.render(!json),
    }
}

async fn read_key(
    state: &AppState,
    pin: &str,
    key: &str,
    query: Option<&str>,
) -> Result<String, ApiError> {
    protocol::validate_key_name(key)?;
    // The legacy service ignored unknown query parameters, `wait` included.
    let wait = if state.config.emulate_legacy {
        Duration::ZERO
    } else {
        parse_wait(query)?
    };
    match state.lookup_key(pin, key).await? {
        KeyState::Found(value) => Ok(value),
        KeyState::Absent { .. } if wait.is_zero() => Err(ApiError::KeyNotFound),
        KeyState::Absent { expires_ms } => state.wait_for_key(pin, key, wait, expires_ms).await,
    }
}

async fn put_key(
    State(state): State<Arc<AppState>>,
    ApiPath((pin, key)): ApiPath<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    update(state, pin, key, query, headers, body, false).await
}

async fn patch_key(
    State(state): State<Arc<AppState>>,
    ApiPath((pin, key)): ApiPath<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    update(state, pin, key, query, headers, body, true).await
}

/// PUT and PATCH: the value in the body replaces the stored one. The body may repeat the key
/// (DRF clients send the whole item) but not name another. A PATCH without a value changes
/// nothing. Rendered like a GET of the same route.
async fn update(
    state: Arc<AppState>,
    pin: String,
    key: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    partial: bool,
) -> Response {
    let json = match negotiate(&headers, query.as_deref(), state.config.emulate_legacy) {
        Ok(rendering) => rendering == Rendering::Json,
        Err(err) => return err.render(true),
    };
    let outcome = async {
        protocol::validate_key_name(&key)?;
        let body = read_body(body, state.config.max_body)?;
        let required: &[&str] = if partial { &[] } else { &["value"] };
        let input = if partial && body.iter().all(u8::is_ascii_whitespace) {
            Default::default()
        } else {
            parse_item(&headers, &body, required)?
        };
        if input.key.as_ref().is_some_and(|named| *named != key) {
            return Err(ApiError::BadRequest(
                "the key in the body differs from the key in the path".into(),
            ));
        }
        let value = input.value;
        let token = auth::bearer(&headers).map(str::to_string);
        state.update_key(&pin, key.clone(), value, token).await
    }
    .await;
    match outcome {
        Ok(value) => render_item(key, value, json),
        Err(err) => err.render(!json),
    }
}

async fn delete_key(
    State(state): State<Arc<AppState>>,
    ApiPath((pin, key)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    protocol::validate_key_name(&key)?;
    let token = auth::bearer(&headers).map(str::to_string);
    state.delete_key(&pin, key, token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT .../members/<node>`: a node registers itself, without the admin token. 201 when it
/// joins, 200 when it registers again.
async fn put_member(
    State(state): State<Arc<AppState>>,
    ApiPath((pin, node)): ApiPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_node(&node)?;
    let body = read_body(body, state.config.max_body)?;
    let input: MemberRegistration = serde_json::from_slice(&body).map_err(|err| {
        ApiError::BadRequest(format!(
            "the body must be JSON {{\"address\": ..., \"role\": \"master\" or \"worker\"}}: {err}"
        ))
    })?;
    let role = Role::parse(&input.role)
        .ok_or_else(|| ApiError::BadRequest("role must be \"master\" or \"worker\"".into()))?;
    if !protocol::is_valid_member_address(&input.address) {
        return Err(ApiError::BadRequest(
            "address must be an IP address or a sealed value (ccs1.<base64url>)".into(),
        ));
    }
    let status = match state
        .register_member(&pin, node.clone(), role, input.address.clone())
        .await?
    {
        Registered::Joined => StatusCode::CREATED,
        Registered::Updated => StatusCode::OK,
    };
    let answer = serde_json::json!({ "node": node, "role": input.role, "address": input.address });
    Ok((status, Json(answer)).into_response())
}

/// `GET .../members`, in joining order: JSON unless text is preferred; `?wait=S&min=N`
/// long-polls for N members and answers the list as it stands when the wait is over.
async fn list_members(
    State(state): State<Arc<AppState>>,
    ApiPath(pin): ApiPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let json = negotiate_list(&headers, query.as_deref())? == Rendering::Json;
    // Not held while parked, as on the single-key route.
    drop(headers);
    let wait = parse_wait(query.as_deref())?;
    let min = parse_min(query.as_deref())?;
    let members = state.wait_for_members(&pin, min, wait).await?;
    Ok(if json {
        Json(members).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, TEXT_PLAIN)],
            render_members(&members),
        )
            .into_response()
    })
}

/// One `<node> <role> <address>` line per member.
fn render_members(members: &[MemberItem]) -> String {
    members
        .iter()
        .map(|m| format!("{} {} {}\n", m.node, m.role, m.address))
        .collect()
}

async fn delete_member(
    State(state): State<Arc<AppState>>,
    ApiPath((pin, node)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    check_node(&node)?;
    let token = auth::bearer(&headers).map(str::to_string);
    state.delete_member(&pin, node, token).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn check_node(node: &str) -> Result<(), ApiError> {
    if protocol::is_valid_node(node) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "a node name is {} characters of a-z and 0-9",
            protocol::NODE_LEN
        )))
    }
}

/// `master_ip: 10.10.25.5` as text (the legacy default), or `{"key", "value"}` as JSON.
fn render_item(key: String, value: String, json: bool) -> Response {
    if json {
        Json(KeyItem { key, value }).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, TEXT_PLAIN)],
            protocol::render_text(&key, &value),
        )
            .into_response()
    }
}

/// Readiness for load balancers and systemd watchers: 503 while draining, so a balancer stops
/// sending new work before the process exits, and while the store cannot serve (a database
/// that cannot be reached), so it sends the work to another replica.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let unavailable = |why: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::CONTENT_TYPE, TEXT_PLAIN),
                (header::RETRY_AFTER, "1"),
            ],
            why,
        )
            .into_response()
    };
    if state.is_shutting_down() {
        return unavailable("shutting down\n".into());
    }
    match state.store_ready().await {
        Ok(()) => ([(header::CONTENT_TYPE, TEXT_PLAIN)], "ok\n").into_response(),
        Err(err) => unavailable(format!("not ready: the store is unavailable: {err}\n")),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let inventory = state.inventory().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state
            .metrics
            .render(inventory, state.wakeups(), state.rereads()),
    )
        .into_response())
}
