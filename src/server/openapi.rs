//! `/openapi.json`: the OpenAPI 3.1 description of every route the router answers, built from
//! the same route templates the router is built from ([`super::paths`], the web page's
//! routes) and the protocol's body shapes, so a route cannot be added without the document
//! (a test walks the router) and `docs/openapi.json` cannot go stale (a test compares it).
//! It describes the default service; `--emulate-legacy` changes error bodies to DRF's.

use axum::{http::header, response::IntoResponse, routing::get, Router};
use serde_json::{json, Map, Value};

use super::{
    paths::{
        ROUTE_CLUSTER, ROUTE_CLUSTERS, ROUTE_HEALTHZ, ROUTE_KEY, ROUTE_KEYS, ROUTE_MEMBER,
        ROUTE_MEMBERS, ROUTE_METRICS,
    },
    web::{ROUTE_PAGE, ROUTE_SCRIPT, ROUTE_STYLE},
};
use crate::protocol::{self, MAX_WAIT_SECS};

pub(crate) const ROUTE_OPENAPI: &str = "/openapi.json";

const JSON: &str = "application/json";
const TEXT: &str = "text/plain";

/// The document, pretty-printed with a final newline: what is served and what is committed.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("a JSON value serializes");
    text.push('\n');
    text
}

pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(
        ROUTE_OPENAPI,
        get(|| async { ([(header::CONTENT_TYPE, JSON)], document_text()).into_response() }),
    )
}

/// What a failure can answer: the error shape, or for the single-key route in text mode an
/// empty text body (404 only; every other failure there is JSON too).
fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": { JSON: { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
    })
}

fn text_or_json_404() -> Value {
    json!({
        "description": "No such PIN or key (text mode: an empty body)",
        "content": {
            TEXT: { "schema": { "type": "string", "maxLength": 0 } },
            JSON: { "schema": { "$ref": "#/components/schemas/ErrorBody" } }
        }
    })
}

fn json_body(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { JSON: { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

fn text_body(description: &str, media: &str) -> Value {
    json!({ "description": description, "content": { media: { "schema": { "type": "string" } } } })
}

fn item_text_or_json(description: &str) -> Value {
    json!({
        "description": description,
        "content": {
            TEXT: { "schema": { "type": "string" }, "example": "master_ip: 10.10.25.5\n" },
            JSON: { "schema": { "$ref": "#/components/schemas/KeyItem" } }
        }
    })
}

/// The statuses, by the layer or handler step that answers them.
#[derive(Clone, Copy, PartialEq)]
enum Fails {
    /// The time limit of every request.
    Timeout,
    /// The store: shutting down or failing (503), full (507).
    Store,
    Full,
    /// A PIN route: malformed path (400), unknown (404), expired (410), too many misses (429).
    Pin,
    /// A request body: malformed (400), too big (413), of a type we refuse (415).
    Body,
    /// The admin token: missing (401), wrong (403).
    Token,
    /// Content negotiation (406) and `?wait=`/key name checks (400).
    Negotiated,
}

fn responses(success: &[(&str, Value)], fails: &[Fails], text_404: bool) -> Value {
    let mut map = Map::new();
    for (status, response) in success {
        map.insert((*status).into(), response.clone());
    }
    let mut add = |status: &str, response: Value| {
        map.entry(status).or_insert(response);
    };
    let has = |f: Fails| fails.contains(&f);
    if has(Fails::Pin) {
        add("400", error("Malformed path"));
        if text_404 {
            add("404", text_or_json_404());
        } else {
            add("404", error("No such PIN or key"));
        }
        add("410", error("The PIN has expired"));
        add(
            "429",
            error("Too many misses from this client (see Retry-After)"),
        );
    }
    if has(Fails::Body) {
        add("400", error("Malformed body or invalid key or value"));
        add("413", error("Body larger than the limit"));
        add("415", error("Body of an unsupported media type"));
    }
    if has(Fails::Negotiated) {
        add("400", error("Invalid key name or ?wait="));
        add(
            "406",
            error("No acceptable rendering, or an unknown ?format="),
        );
    }
    if has(Fails::Token) {
        add("401", error("No admin token"));
        add("403", error("Wrong admin token"));
    }
    if has(Fails::Timeout) {
        add("408", error("The request took longer than the time limit"));
    }
    if has(Fails::Store) {
        add(
            "503",
            error("Shutting down, or the store failed (see Retry-After)"),
        );
    }
    if has(Fails::Full) {
        add("507", error("The store is full (see Retry-After)"));
    }
    Value::Object(map)
}

fn operation(id: &str, summary: &str, responses: Value) -> Value {
    json!({ "operationId": id, "summary": summary, "responses": responses })
}

fn with(mut operation: Value, field: &str, value: Value) -> Value {
    operation[field] = value;
    operation
}

fn item_body(required: &[&str]) -> Value {
    let schema = json!({
        "type": "object",
        "properties": {
            "key": key_name(),
            // Trimmed by the service: a value must hold more than white space.
            "value": { "type": "string", "pattern": "\\S", "maxLength": protocol::MAX_VALUE_LEN }
        },
        "required": required
    });
    json!({
        "required": !required.is_empty(),
        "content": {
            JSON: { "schema": schema },
            "application/x-www-form-urlencoded": { "schema": schema }
        }
    })
}

/// What [`protocol::validate_key_name`] accepts.
fn key_name() -> Value {
    json!({
        "type": "string",
        "pattern": format!("^[A-Za-z0-9_-]{{1,{}}}$", protocol::MAX_KEY_LEN)
    })
}

fn path_params(key: bool) -> Value {
    let mut params = vec![json!({
        "name": "pin", "in": "path", "required": true,
        "schema": { "type": "string" },
        "description": format!("{} lowercase letters and digits", protocol::PIN_LEN)
    })];
    if key {
        params.push(json!({
            "name": "key", "in": "path", "required": true, "schema": key_name()
        }));
    }
    Value::Array(params)
}

fn query_params(wait: bool) -> Value {
    let mut params = vec![json!({
        "name": "format", "in": "query", "required": false,
        "schema": { "type": "string", "enum": ["txt", "json"] },
        "description": "Overrides Accept: text or JSON"
    })];
    if wait {
        params.push(json!({
            "name": "wait", "in": "query", "required": false,
            "schema": { "type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECS },
            "description": "Long-poll: seconds to wait for a key that does not exist yet"
        }));
    }
    Value::Array(params)
}

fn bearer() -> Value {
    json!([{ "adminToken": [] }])
}

/// The whole document.
pub fn document() -> Value {
    use Fails::*;
    let mut paths = Map::new();
    paths.insert(
        ROUTE_CLUSTERS.into(),
        json!({ "post": operation(
            "createCluster",
            "Create a PIN; the answer holds its admin token, once",
            with(
                responses(
                    &[("201", json_body("The new cluster", "ClusterInfo"))],
                    &[Timeout, Store, Full],
                    false,
                ),
                "429",
                error("Too many PINs created from this client (see Retry-After)"),
            ),
        ) }),
    );
    paths.insert(
        ROUTE_CLUSTER.into(),
        json!({
            "parameters": path_params(false),
            "get": operation(
                "getCluster",
                "Describe a cluster",
                responses(&[("200", json_body("The cluster", "ClusterInfo"))], &[Timeout, Store, Pin], false),
            ),
            "delete": with(operation(
                "deleteCluster",
                "Delete a cluster and its keys",
                responses(&[("204", json!({ "description": "Deleted" }))], &[Timeout, Store, Pin, Token], false),
            ), "security", bearer()),
        }),
    );
    paths.insert(
        ROUTE_KEYS.into(),
        json!({
            "parameters": path_params(false),
            "get": operation(
                "listKeys",
                "List a cluster's keys",
                responses(&[("200", json!({
                    "description": "The keys",
                    "content": { JSON: { "schema": {
                        "type": "array", "items": { "$ref": "#/components/schemas/KeyItem" }
                    } } }
                }))], &[Timeout, Store, Pin], false),
            ),
            "post": with(operation(
                "createKey",
                "Create a key; an existing key is 409",
                with(with(responses(&[("201", json_body("The created key", "KeyItem"))], &[Timeout, Store, Full, Pin, Body], false),
                    "409", error("The key exists")),
                    "403", error("The cluster holds the maximum number of keys")),
            ), "requestBody", item_body(&["key", "value"])),
        }),
    );
    let key_answer = |what| {
        responses(
            &[("200", item_text_or_json(what))],
            &[Timeout, Store, Pin, Negotiated],
            true,
        )
    };
    let update = |id, summary, required: &[&str]| {
        let mut answer = responses(
            &[("200", item_text_or_json("The stored key"))],
            &[Timeout, Store, Full, Pin, Body, Negotiated, Token],
            true,
        );
        answer["403"] = error("Wrong admin token, or too many keys");
        let op = with(
            operation(id, summary, answer),
            "requestBody",
            item_body(required),
        );
        let op = with(op, "parameters", query_params(false));
        with(op, "security", bearer())
    };
    paths.insert(
        ROUTE_KEY.into(),
        json!({
            "parameters": path_params(true),
            "get": with(operation(
                "getKey",
                "Read a key, as text (the legacy default) or JSON; ?wait= long-polls",
                key_answer("The key"),
            ), "parameters", query_params(true)),
            "put": update("putKey", "Replace a key's value", &["value"]),
            "patch": update("patchKey", "Replace a key's value if one is given", &[]),
            "delete": with(operation(
                "deleteKey",
                "Delete a key",
                with(responses(&[("204", json!({ "description": "Deleted" }))], &[Timeout, Store, Pin, Token], false),
                    "400", error("Malformed path or invalid key name")),
            ), "security", bearer()),
        }),
    );
    let node_params = json!([
        { "name": "pin", "in": "path", "required": true, "schema": { "type": "string" },
          "description": format!("{} lowercase letters and digits", protocol::PIN_LEN) },
        { "name": "node", "in": "path", "required": true,
          "schema": { "type": "string", "pattern": format!("^[a-z0-9]{{{}}}$", protocol::NODE_LEN) } }
    ]);
    let member_list_params = json!([
        { "name": "format", "in": "query", "required": false,
          "schema": { "type": "string", "enum": ["txt", "json"] },
          "description": "Overrides Accept: text or JSON" },
        { "name": "wait", "in": "query", "required": false,
          "schema": { "type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECS },
          "description": "Long-poll: seconds to wait for `min` members" },
        { "name": "min", "in": "query", "required": false,
          "schema": { "type": "integer", "minimum": 0 },
          "description": "How many members the long-poll waits for" }
    ]);
    paths.insert(
        ROUTE_MEMBERS.into(),
        json!({
            "parameters": path_params(false),
            "get": with(operation(
                "listMembers",
                "The cluster's members in joining order; ?wait=&min= long-polls for min members",
                responses(&[("200", json!({
                    "description": "The members (as they stand when a long-poll's time is up)",
                    "content": {
                        JSON: { "schema": {
                            "type": "array", "items": { "$ref": "#/components/schemas/MemberItem" }
                        } },
                        TEXT: { "schema": { "type": "string" }, "example": "0123456789abcdef master 10.0.0.5\n" }
                    }
                }))], &[Timeout, Store, Pin, Negotiated], false),
            ), "parameters", member_list_params),
        }),
    );
    let registered = |description| {
        json!({
            "description": description,
            "content": { JSON: { "schema": { "$ref": "#/components/schemas/MemberRegistered" } } }
        })
    };
    paths.insert(
        ROUTE_MEMBER.into(),
        json!({
            "parameters": node_params,
            "put": with(operation(
                "putMember",
                "A node registers itself (no admin token); again after a reboot",
                with(responses(
                    &[("201", registered("Joined")), ("200", registered("Registered again"))],
                    &[Timeout, Store, Full, Pin, Body],
                    false,
                ), "403", error("The cluster holds the maximum number of members")),
            ), "requestBody", json!({
                "required": true,
                "content": { JSON: { "schema": {
                    "type": "object",
                    "properties": {
                        "address": { "type": "string", "description": "An IP address, or a sealed value (ccs1.)" },
                        "role": { "type": "string", "enum": ["master", "worker"] }
                    },
                    "required": ["address", "role"]
                } } }
            })),
            "delete": with(operation(
                "deleteMember",
                "Remove a member",
                responses(&[("204", json!({ "description": "Removed" }))], &[Timeout, Store, Pin, Token], false),
            ), "security", bearer()),
        }),
    );
    paths.insert(
        ROUTE_HEALTHZ.into(),
        json!({ "get": operation("healthz", "Readiness", json!({
            "200": text_body("Serving", TEXT),
            "408": error("The request took longer than the time limit"),
            "503": text_body("Not ready: shutting down, or the store (database) cannot be reached", TEXT)
        })) }),
    );
    paths.insert(
        ROUTE_METRICS.into(),
        json!({ "get": operation("metrics", "Prometheus metrics", responses(
            &[("200", text_body("Prometheus text format", TEXT))], &[Timeout, Store], false,
        )) }),
    );
    for (route, id, media) in [
        (ROUTE_PAGE, "webPage", "text/html"),
        (ROUTE_SCRIPT, "webScript", "text/javascript"),
        (ROUTE_STYLE, "webStyle", "text/css"),
    ] {
        paths.insert(
            route.into(),
            json!({ "get": operation(id, "The operator's web page", responses(
                &[("200", text_body("The asset", media))], &[Timeout], false,
            )) }),
        );
    }
    paths.insert(
        ROUTE_OPENAPI.into(),
        json!({ "get": operation("openapi", "This document", responses(
            &[("200", json!({ "description": "OpenAPI 3.1", "content": { JSON: { "schema": { "type": "object" } } } }))],
            &[Timeout],
            false,
        )) }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "clusterctx PIN service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The legacy CernVM cluster-pairing REST API with clusterctx's extensions (PROTOCOL.md parts 1 and 2)."
        },
        "paths": paths,
        "components": {
            "schemas": {
                "KeyItem": {
                    "type": "object",
                    "properties": { "key": { "type": "string" }, "value": { "type": "string" } },
                    "required": ["key", "value"]
                },
                "ClusterInfo": {
                    "type": "object",
                    "properties": {
                        "pin": { "type": "string" },
                        "creation_time": { "type": "string", "description": "RFC 3339" },
                        "expires_at": { "type": "string", "description": "RFC 3339" },
                        "admin_token": { "type": "string", "description": "Only in the answer to the creating POST" }
                    },
                    "required": ["pin", "creation_time"]
                },
                "MemberItem": {
                    "type": "object",
                    "properties": {
                        "node": { "type": "string" },
                        "role": { "type": "string", "enum": ["master", "worker"] },
                        "address": { "type": "string" },
                        "joined_at": { "type": "string", "description": "RFC 3339" },
                        "last_seen": { "type": "string", "description": "RFC 3339" }
                    },
                    "required": ["node", "role", "address", "joined_at", "last_seen"]
                },
                "MemberRegistered": {
                    "type": "object",
                    "properties": {
                        "node": { "type": "string" },
                        "role": { "type": "string", "enum": ["master", "worker"] },
                        "address": { "type": "string" }
                    },
                    "required": ["node", "role", "address"]
                },
                "ErrorBody": {
                    "type": "object",
                    "properties": { "error": { "type": "string" } },
                    "required": ["error"]
                }
            },
            "securitySchemes": { "adminToken": { "type": "http", "scheme": "bearer" } }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClusterInfo, ErrorBody, KeyItem};

    #[test]
    fn every_api_route_is_documented() {
        let document = document();
        for route in super::super::paths::ROUTES {
            assert!(document["paths"].get(route).is_some(), "{route}");
        }
    }

    /// The component schemas name exactly the fields the protocol types serialize.
    #[test]
    fn schemas_match_the_protocol_types() {
        let document = document();
        let fields = |value: Value| -> Vec<String> {
            let mut names: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
            names.sort();
            names
        };
        let examples = [
            (
                "ClusterInfo",
                serde_json::to_value(ClusterInfo {
                    pin: "x".into(),
                    creation_time: "x".into(),
                    expires_at: Some("x".into()),
                    admin_token: Some("x".into()),
                })
                .unwrap(),
            ),
            (
                "KeyItem",
                serde_json::to_value(KeyItem {
                    key: "x".into(),
                    value: "x".into(),
                })
                .unwrap(),
            ),
            (
                "ErrorBody",
                serde_json::to_value(ErrorBody { error: "x".into() }).unwrap(),
            ),
        ];
        for (name, example) in examples {
            let schema = &document["components"]["schemas"][name];
            assert_eq!(
                fields(schema["properties"].clone()),
                fields(example),
                "{name}"
            );
        }
    }
}
