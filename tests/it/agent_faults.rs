//! The agent against a scripted server: every fault ends as PROTOCOL.md part 2 says, and no
//! context file is changed when it should not be.

use crate::support;

use std::time::{Duration, Instant};

use clusterctx::{agent::address::AddressError, client::ClientError};

use clusterctx::agent::{
    config::RoleRequest, contextualize::Finished, error::code, state::Outcome, AgentError,
};
use support::{
    fast,
    faulty::{FaultServer, Reply, Request},
    Node, MASTER_CONTEXT, PIN, WORKER_CONTEXT,
};

const CLUSTER: &str = r#"{"pin": "enico1qq0oey", "creation_time": "2026-11-21T10:00:00Z"}"#;

fn key(key: &str, value: &str) -> Reply {
    Reply::Status(
        200,
        serde_json::json!({ "key": key, "value": value }).to_string(),
    )
}

/// A legacy-looking service where everything is in place, for faults to be layered on.
fn healthy(request: &Request, master_ip: &str) -> Reply {
    let cluster = format!("/api/v1/clusters/{PIN}");
    match (
        request.method.as_str(),
        request.target.split('?').next().unwrap(),
    ) {
        ("GET", path) if path == cluster => Reply::json(200, CLUSTER),
        // This server sends no service header: it is legacy, and a legacy master confirms
        // its create through the list.
        ("GET", path) if path == format!("{cluster}/keys") => Reply::json(
            200,
            &format!(
                r#"[{{"key": "master_ip", "value": "{master_ip}"}}, {{"key": "master_ready", "value": "yes"}}]"#
            ),
        ),
        ("GET", path) if path.ends_with("/keys/master_ready") => key("master_ready", "yes"),
        ("GET", path) if path.ends_with("/keys/master_ip") => key("master_ip", master_ip),
        _ => Reply::json(404, r#"{"detail": "Not found."}"#),
    }
}

fn assert_failed(node: &Node, needle: &str) {
    match node.state().outcome {
        Some(Outcome::Failed { error }) => {
            assert!(error.contains(needle), "{error:?} lacks {needle:?}")
        }
        other => panic!("expected a recorded failure, got {other:?}"),
    }
}

/// Runs a worker with `context` against `server`, expecting it to fail without touching its
/// context file; returns the node and the error.
async fn worker_fails_unchanged(server: &FaultServer, context: &str) -> (Node, AgentError) {
    let node = Node::new(context);
    let before = support::bytes(&node.files[0]);
    let err = support::contextualize(&node, &fast(&server.url(), RoleRequest::Worker))
        .await
        .unwrap_err();
    assert_eq!(support::bytes(&node.files[0]), before);
    (node, err)
}

#[tokio::test]
async fn a_burst_of_5xx_is_retried_then_succeeds() {
    let server = FaultServer::start(|request, n| {
        if n > 0 && n <= 4 {
            Reply::json(503, r#"{"error": "restarting"}"#)
        } else {
            healthy(request, "10.0.0.7")
        }
    })
    .await;
    let node = Node::new(WORKER_CONTEXT);
    let outcome = support::contextualize(&node, &fast(&server.url(), RoleRequest::Worker)).await;
    assert!(matches!(outcome.unwrap(), Finished::Contextualized { .. }));
    assert!(node.read(0).contains("my_master_ip=10.0.0.7\n"));
    assert!(server.requests().len() >= 7);
}

#[tokio::test]
async fn connection_resets_are_retried() {
    let server = FaultServer::start(|request, n| {
        if n % 2 == 0 {
            Reply::Reset
        } else {
            healthy(request, "10.0.0.8")
        }
    })
    .await;
    let node = Node::new(WORKER_CONTEXT);
    support::contextualize(&node, &fast(&server.url(), RoleRequest::Worker))
        .await
        .unwrap();
    assert!(node.read(0).contains("my_master_ip=10.0.0.8\n"));
}

#[tokio::test]
async fn a_hanging_server_times_out_and_is_retried() {
    let server = FaultServer::start(|request, n| {
        if n == 1 {
            Reply::Hang
        } else {
            healthy(request, "10.0.0.9")
        }
    })
    .await;
    let node = Node::new(WORKER_CONTEXT);
    let mut overrides = fast(&server.url(), RoleRequest::Worker);
    overrides.request_timeout = Some(Duration::from_millis(300));
    support::contextualize(&node, &overrides).await.unwrap();
    assert!(node.read(0).contains("my_master_ip=10.0.0.9\n"));
}

#[tokio::test]
async fn a_master_ip_with_a_newline_never_reaches_the_file() {
    let server = FaultServer::start(|request, _| healthy(request, "10.0.0.1\nrm -rf / #")).await;
    let (node, err) = worker_fails_unchanged(&server, WORKER_CONTEXT).await;
    assert!(
        matches!(&err, AgentError::UnsafeValue { key, .. } if key == "master_ip"),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), code::DATAERR);
    assert_failed(&node, "master_ip");
}

#[tokio::test]
async fn a_master_ip_with_shell_metacharacters_is_refused() {
    let server = FaultServer::start(|request, _| healthy(request, "10.0.0.1;reboot")).await;
    let (_, err) = worker_fails_unchanged(&server, WORKER_CONTEXT).await;
    assert!(matches!(err, AgentError::UnsafeValue { .. }), "{err:?}");
}

#[tokio::test]
async fn a_generic_value_with_a_control_character_is_refused() {
    let server = FaultServer::start(|request, _| {
        if request.target.ends_with("/keys/greeting") {
            key("greeting", "hello\u{1b}[2J")
        } else {
            healthy(request, "10.0.0.1")
        }
    })
    .await;
    let context = format!("{WORKER_CONTEXT}motd=###GREETING_PLACEHOLDER###\n");
    let (_, err) = worker_fails_unchanged(&server, &context).await;
    assert!(
        matches!(&err, AgentError::UnsafeValue { key, .. } if key == "greeting"),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unknown_pin_fails_at_once() {
    let server = FaultServer::start(|_, _| Reply::json(404, r#"{"detail": "Not found."}"#)).await;
    let started = Instant::now();
    let (_, err) = worker_fails_unchanged(&server, WORKER_CONTEXT).await;
    assert!(matches!(err, AgentError::PinUnknown { .. }), "{err:?}");
    assert_eq!(err.exit_code(), code::NOUSER);
    // The message names the PIN the way every log line does: by its first characters only.
    assert!(err.to_string().contains("PIN eni…"), "{err}");
    assert!(!err.chain_text().contains(PIN), "the PIN leaked: {err:?}");
    assert!(!format!("{err:?}").contains(PIN), "the PIN leaked: {err:?}");
    assert_eq!(
        server.requests().len(),
        1,
        "a permanent error is not retried"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_master_ip_held_by_another_master_fails_at_once() {
    let server = FaultServer::start(|request, _| match request.method.as_str() {
        "POST" => Reply::json(409, r#"{"error": "key exists"}"#),
        _ => healthy(request, "10.9.9.9"),
    })
    .await;
    let node = Node::new(MASTER_CONTEXT);
    let mut overrides = fast(&server.url(), RoleRequest::Master);
    overrides.address = Some("10.1.1.1".into());
    let err = support::contextualize(&node, &overrides).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::PinTaken { held, .. } if held == "10.9.9.9"),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), code::NOPERM);
    // check PIN, POST, GET of the list: nothing retried
    assert_eq!(server.requests().len(), 3);
    assert_failed(&node, "another master");
}

#[tokio::test]
async fn a_409_holding_our_own_address_is_a_republish() {
    let server = FaultServer::start(|request, _| match request.method.as_str() {
        "POST" => Reply::json(409, r#"{"error": "key exists"}"#),
        _ => healthy(request, "10.1.1.1"),
    })
    .await;
    let node = Node::new(MASTER_CONTEXT);
    let mut overrides = fast(&server.url(), RoleRequest::Master);
    overrides.address = Some("10.1.1.1".into());
    let outcome = support::contextualize(&node, &overrides).await.unwrap();
    assert!(matches!(outcome, Finished::Contextualized { .. }));
    let posted: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.body)
        .collect();
    assert_eq!(posted.len(), 1, "one create, no overwrite: {posted:?}");
    assert!(
        posted[0].contains("master_ip") && posted[0].contains("10.1.1.1"),
        "the create carries our key and address: {posted:?}"
    );
}

#[tokio::test]
async fn a_misspelt_interface_fails_at_once() {
    let server = FaultServer::start(|request, _| healthy(request, "10.0.0.1")).await;
    let node = Node::new(MASTER_CONTEXT);
    let mut overrides = fast(&server.url(), RoleRequest::Master);
    overrides.address = Some("etth0".into());
    overrides.interval = Some(Duration::from_secs(5));
    let started = Instant::now();
    let err = support::contextualize(&node, &overrides).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::Address(AddressError::NoSuchInterface { name }) if name == "etth0"),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), code::CONFIG);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_malformed_answer_is_permanent() {
    let server = FaultServer::start(|_, _| Reply::Status(200, "<html>proxy</html>".into())).await;
    let node = Node::new(WORKER_CONTEXT);
    let err = support::contextualize(&node, &fast(&server.url(), RoleRequest::Worker))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::BadAnswer(e) if matches!(**e, ClientError::Malformed { .. })),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), code::PROTOCOL);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let server = FaultServer::start(|_, _| {
        // Past the 8 MiB cap (the longest member list a service may send is about 4.7 MB).
        Reply::Status(200, format!("{{\"x\": \"{}\"}}", "a".repeat(9 << 20)))
    })
    .await;
    let node = Node::new(WORKER_CONTEXT);
    let err = support::contextualize(&node, &fast(&server.url(), RoleRequest::Worker))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::BadAnswer(e) if matches!(**e, ClientError::Malformed { .. })),
        "{err:?}"
    );
    assert!(format!("{err:?}").contains("larger than"), "{err:?}");
}

#[tokio::test]
async fn a_service_that_never_answers_well_is_given_up_within_the_window() {
    let server = FaultServer::start(|_, _| Reply::json(502, r#"{"error": "bad gateway"}"#)).await;
    let node = Node::new(WORKER_CONTEXT);
    let before = support::bytes(&node.files[0]);
    let mut overrides = fast(&server.url(), RoleRequest::Worker);
    overrides.tries = Some(5);
    let started = Instant::now();
    let err = support::contextualize(&node, &overrides).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, AgentError::Unreachable(_)), "{err:?}");
    assert_eq!(err.exit_code(), code::UNAVAILABLE);
    assert_eq!(server.requests().len(), 5);
    // 4 sleeps of 80-120 ms between 5 tries.
    assert!(elapsed >= Duration::from_millis(320), "{elapsed:?}");
    assert_eq!(support::bytes(&node.files[0]), before);
}

#[tokio::test]
async fn legacy_servers_are_polled_and_the_worker_waits_for_master_ready() {
    // master_ready appears only from the 6th request on: the worker must keep polling and
    // must not fetch master_ip before it.
    let server = FaultServer::start(|request, n| {
        if request.target.contains("/keys/master_ready") && n < 5 {
            Reply::json(404, r#"{"detail": "Not found."}"#)
        } else {
            healthy(request, "10.0.0.3")
        }
    })
    .await;
    let node = Node::new(WORKER_CONTEXT);
    support::contextualize(&node, &fast(&server.url(), RoleRequest::Worker))
        .await
        .unwrap();
    let targets: Vec<String> = server.requests().into_iter().map(|r| r.target).collect();
    let first_ip = targets
        .iter()
        .position(|t| t.contains("master_ip"))
        .unwrap();
    let ready = targets
        .iter()
        .rposition(|t| t.contains("master_ready"))
        .unwrap();
    assert!(ready < first_ip, "{targets:?}");
    assert!(
        targets.iter().all(|t| !t.contains("wait=")),
        "no long-poll against a legacy server: {targets:?}"
    );
}

/// Five tries 0.2 s apart: a window of at most 1.2 s (the slots' jitter is 0.8 to 1.2).
fn five_short_tries(server: &FaultServer) -> support::Overrides {
    let mut overrides = fast(&server.url(), RoleRequest::Worker);
    overrides.tries = Some(5);
    overrides.interval = Some(Duration::from_millis(200));
    overrides
}

#[tokio::test]
async fn retry_after_zero_does_not_burn_the_window() {
    let server = FaultServer::start(|_, _| Reply::RetryAfter(503, "{}".into(), 0)).await;
    let node = Node::new(WORKER_CONTEXT);
    let started = Instant::now();
    let err = support::contextualize(&node, &five_short_tries(&server))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("Retry-After: 0, 5 tries x 0.2 s: {elapsed:?}");
    assert_eq!(server.requests().len(), 5);
    // Four gaps, none shorter than the shortest slot the schedule allows (0.8 x 0.2 s).
    assert!(elapsed >= Duration::from_millis(640), "{elapsed:?}");
    assert!(matches!(err, AgentError::Unreachable(_)), "{err:?}");
}

#[tokio::test]
async fn a_dripping_answer_cannot_outlast_the_window() {
    let server = FaultServer::start(|_, _| Reply::Drip {
        every: Duration::from_millis(100),
    })
    .await;
    let node = Node::new(WORKER_CONTEXT);
    let overrides = five_short_tries(&server);
    let started = Instant::now();
    let err = support::contextualize(&node, &overrides).await.unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("dripping answer, 5 tries x 0.2 s, 2 s request timeout: {elapsed:?}");
    // The window (1.2 s) plus one request timeout (2 s) is the hard limit.
    assert!(elapsed <= Duration::from_millis(3200), "{elapsed:?}");
    assert!(matches!(err, AgentError::Unreachable(_)), "{err:?}");
}

#[tokio::test]
async fn a_state_directory_that_cannot_be_written_is_its_own_failure() {
    let server = FaultServer::start(|request, _| healthy(request, "10.0.0.4")).await;
    let node = Node::new(WORKER_CONTEXT);
    // A file where the state directory should be: it cannot be created.
    let blocked = node.dir.path().join("not-a-directory");
    std::fs::write(&blocked, "").unwrap();
    let err = support::contextualize_files(
        node.files.clone(),
        blocked,
        fast(&server.url(), RoleRequest::Worker),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AgentError::State(_)), "{err:?}");
    assert_eq!(err.exit_code(), code::CANTCREAT);
}
