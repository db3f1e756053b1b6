//! Sealed clusters (PROTOCOL.md part 4, "Sealed values"): agents with a cluster secret against
//! the real service in-process, ours and `--emulate-legacy`. The cluster forms with the
//! addresses in clear in the files only; the service's answers and its database hold sealed
//! text; a value this cluster did not seal stops a master and fails workers at once; and no
//! log line of any of it holds the secret.

use crate::support;

use std::{
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    time::{Duration, Instant},
};

use clusterctx::{
    agent::{
        config::{Overrides, RoleRequest},
        contextualize::Finished,
        error::code,
        master_ready::Announced,
        state::{Outcome, Role},
        AgentError,
    },
    client::{ClientOptions, PinClient},
    seal::{is_sealed, OpenError},
    secret::{ClusterSecret, Pin},
    server::{self, Config, Server},
};
use support::{
    fast,
    server::{contains, database_bytes, get_text, post_key},
    Logs, Node, MASTER_CONTEXT, WORKER_CONTEXT,
};

/// The master's address in these tests: never to be found in clear at the service.
const ADDRESS: &str = "10.77.31.209";
/// What an intruder who knows the PIN publishes as `master_ip` before the real master.
const FORGED: &str = "10.66.6.66";
/// A master context whose own file has a placeholder, so "files untouched" means something.
const MASTER_WITH_PLACEHOLDER: &str = "[ucernvm-begin]\ncvm_cluster_master=yes\ncvm_cluster_pin=enico1qq0oey\n[ucernvm-end]\nme=###MASTER_IP_PLACEHOLDER###\n";

async fn cluster(config: Config) -> (Server, String) {
    let server = server::spawn(config).await.unwrap();
    let client = PinClient::new(&server.url(), &ClientOptions::default()).unwrap();
    let pin = client.create_cluster().await.unwrap().pin;
    (server, pin)
}

/// A fast schedule whose window (20 tries 0.5 s apart: about 10 s) is far longer than any
/// "at once" asserted below.
fn overrides(url: &str, pin: &str, role: RoleRequest) -> Overrides {
    Overrides {
        pin: Some(Pin::new(pin)),
        interval: Some(Duration::from_millis(500)),
        ..fast(url, role)
    }
}

/// `context` with `cvm_cluster_secret=<secret>` in its block.
fn with_secret(context: &str, secret: &ClusterSecret) -> String {
    context.replace(
        "[ucernvm-end]",
        &format!("cvm_cluster_secret={}\n[ucernvm-end]", secret.expose()),
    )
}

/// `secret` in a private file of `node`'s directory, for `--secret-file`.
fn secret_file(node: &Node, secret: &ClusterSecret) -> PathBuf {
    let path = node.dir.path().join("cluster-secret");
    std::fs::write(&path, format!("{}\n", secret.expose())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn spawn_node(
    node: &Node,
    overrides: Overrides,
) -> tokio::task::JoinHandle<Result<Finished, AgentError>> {
    tokio::spawn(support::contextualize_files(
        node.files.clone(),
        node.state_dir(),
        overrides,
    ))
}

fn role_of(finished: &Finished) -> Role {
    match finished {
        Finished::Contextualized { role } | Finished::AlreadyDone { role } => *role,
    }
}

/// The keys of `pin` as the service answers anyone who asks: text and JSON renderings.
async fn listed(url: &str, pin: &str) -> String {
    let client = reqwest::Client::new();
    let keys = format!("{url}/api/v1/clusters/{pin}/keys");
    let (status, text) = get_text(&client, &keys).await;
    assert_eq!(status, 200, "{text}");
    let json = client
        .get(&keys)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    format!("{text}\n{json}")
}

/// A worker context, sealed from the block, once its placeholder is filled with `ip`.
fn filled(context: &str, ip: &str) -> String {
    context.replace("###MASTER_IP_PLACEHOLDER###", ip)
}

#[tokio::test]
async fn a_sealed_cluster_forms_and_the_service_keeps_no_address() {
    let (logs, _capturing) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pins.sqlite3");
    let (server, pin) = cluster(Config {
        db: Some(db.clone()),
        ..Config::default()
    })
    .await;
    let url = server.url();
    let secret = ClusterSecret::generate().unwrap();

    // Two workers waiting before the master, the secret in their block; one after it, the
    // secret from a file.
    let worker_context = with_secret(WORKER_CONTEXT, &secret);
    let early: Vec<Node> = (0..2).map(|_| Node::new(&worker_context)).collect();
    let handles: Vec<_> = early
        .iter()
        .map(|node| spawn_node(node, overrides(&url, &pin, RoleRequest::Worker)))
        .collect();
    let master = Node::new(&with_secret(MASTER_CONTEXT, &secret));
    let mut m = overrides(&url, &pin, RoleRequest::Master);
    m.address = Some(ADDRESS.into());
    support::contextualize(&master, &m).await.unwrap();
    assert_eq!(
        support::master_ready(&master, &m).await.unwrap(),
        Announced::Published
    );
    let late = Node::new(WORKER_CONTEXT);
    let mut w = overrides(&url, &pin, RoleRequest::Worker);
    w.secret_file = Some(secret_file(&late, &secret));
    support::contextualize(&late, &w).await.unwrap();
    for handle in handles {
        assert_eq!(role_of(&handle.await.unwrap().unwrap()), Role::Worker);
    }

    let fingerprint = secret.fingerprint();
    for (node, context) in early
        .iter()
        .map(|node| (node, worker_context.as_str()))
        .chain([(&late, WORKER_CONTEXT)])
    {
        assert_eq!(
            node.read(0),
            filled(context, ADDRESS),
            "the address in clear"
        );
        let state = node.store().load(&pin, Some(&fingerprint));
        assert_eq!(
            state.values.get("master_ip").map(String::as_str),
            Some(ADDRESS)
        );
        let recorded = std::fs::read_to_string(node.store().path()).unwrap();
        assert!(recorded.contains(&fingerprint), "{recorded}");
        assert!(!recorded.contains(secret.expose()), "{recorded}");
    }

    // The service: sealed text in every answer, and nothing else in its file.
    let answers = listed(&url, &pin).await;
    assert!(
        answers.contains("master_ip") && answers.contains("ccs1."),
        "{answers}"
    );
    for clear in [ADDRESS, secret.expose()] {
        assert!(!answers.contains(clear), "{clear} in {answers}");
    }
    let client = PinClient::new(&url, &ClientOptions::default()).unwrap();
    let pin_ = Pin::new(pin.as_str());
    for key in ["master_ip", "master_ready"] {
        let text = client.get_key(&pin_, key, None).await.unwrap().unwrap();
        assert!(is_sealed(&text), "{key}: {text}");
    }
    server.shutdown().await;
    let stored = database_bytes(&db);
    assert!(contains(&stored, "ccs1."), "the sealed values are stored");
    for clear in [ADDRESS, secret.expose()] {
        assert!(!contains(&stored, clear), "{clear} in the database");
    }

    let log = logs.text();
    assert!(
        log.contains(&format!(
            "sealing: on (cluster secret fingerprint {fingerprint})"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("published master_ip={ADDRESS} (sealed)")),
        "{log}"
    );
    assert!(log.contains("published master_ready=yes (sealed)"), "{log}");
    // The secret nowhere; sealed text neither (not secret, but noise): opened values instead.
    logs.assert_none_contains(&[secret.expose(), "ccs1."]);
}

#[tokio::test]
async fn a_sealed_cluster_forms_against_a_legacy_service() {
    let (logs, _capturing) = Logs::capture();
    let (server, pin) = cluster(Config {
        emulate_legacy: true,
        open: true,
        ..Config::default()
    })
    .await;
    let url = server.url();
    let secret = ClusterSecret::generate().unwrap();
    let worker_context = with_secret(WORKER_CONTEXT, &secret);
    let workers: Vec<Node> = (0..2).map(|_| Node::new(&worker_context)).collect();
    let mut w = overrides(&url, &pin, RoleRequest::Worker);
    w.interval = Some(Duration::from_millis(200));
    let handles: Vec<_> = workers.iter().map(|n| spawn_node(n, w.clone())).collect();
    let master = Node::new(&with_secret(MASTER_CONTEXT, &secret));
    let mut m = overrides(&url, &pin, RoleRequest::Master);
    m.address = Some(ADDRESS.into());
    support::contextualize(&master, &m).await.unwrap();
    support::master_ready(&master, &m).await.unwrap();
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
    for worker in &workers {
        assert_eq!(worker.read(0), filled(&worker_context, ADDRESS));
    }
    let answers = listed(&url, &pin).await;
    assert!(
        answers.contains("master_ip") && answers.contains("ccs1."),
        "{answers}"
    );
    assert!(!answers.contains(ADDRESS), "{answers}");
    assert!(
        logs.text().contains("legacy"),
        "the service was seen as legacy"
    );
    logs.assert_none_contains(&[secret.expose()]);
}

#[tokio::test]
async fn a_sealed_election_has_one_master_and_every_node_its_address() {
    let (logs, _capturing) = Logs::capture();
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let secret = ClusterSecret::generate().unwrap();
    let context = with_secret(
        &MASTER_WITH_PLACEHOLDER.replace("cvm_cluster_master=yes", "cvm_cluster_master=auto"),
        &secret,
    );
    let nodes: Vec<Node> = (0..4).map(|_| Node::new(&context)).collect();
    let handles: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut o = overrides(&url, &pin, RoleRequest::Auto);
            o.address = Some(format!("10.1.0.{}", i + 1));
            o.no_wait_ready = true;
            spawn_node(node, o)
        })
        .collect();
    let mut masters = Vec::new();
    for (i, handle) in handles.into_iter().enumerate() {
        if role_of(&handle.await.unwrap().unwrap()) == Role::Master {
            masters.push(format!("10.1.0.{}", i + 1));
        }
    }
    assert_eq!(masters.len(), 1, "{masters:?}");
    for node in &nodes {
        assert_eq!(node.read(0), filled(&context, &masters[0]));
    }
    let answers = listed(&url, &pin).await;
    assert!(!answers.contains("10.1.0."), "{answers}");
    logs.assert_none_contains(&[secret.expose()]);
}

#[tokio::test]
async fn a_forged_plain_master_ip_stops_the_master_and_fails_the_workers_at_once() {
    let (logs, _capturing) = Logs::capture();
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let secret = ClusterSecret::generate().unwrap();
    let status = post_key(&reqwest::Client::new(), &url, &pin, "master_ip", FORGED).await;
    assert_eq!(status, 201);

    let worker_context = with_secret(WORKER_CONTEXT, &secret);
    let workers: Vec<Node> = (0..3).map(|_| Node::new(&worker_context)).collect();
    let started = Instant::now();
    let handles: Vec<_> = workers
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut o = overrides(&url, &pin, RoleRequest::Worker);
            // Waiting for master_ready or not, a forged master_ip is refused as soon as seen.
            o.no_wait_ready = i == 2;
            spawn_node(node, o)
        })
        .collect();

    let master_context = with_secret(MASTER_WITH_PLACEHOLDER, &secret);
    let auto_context = master_context.replace("cvm_cluster_master=yes", "cvm_cluster_master=auto");
    for (context, role) in [
        (&master_context, RoleRequest::Master),
        (&auto_context, RoleRequest::Auto),
    ] {
        let node = Node::new(context);
        let mut m = overrides(&url, &pin, role);
        m.address = Some(ADDRESS.into());
        let err = support::contextualize(&node, &m).await.unwrap_err();
        let AgentError::PinTakenOver { key, source, .. } = &err else {
            panic!("{role}: {err:?}");
        };
        assert_eq!(key, "master_ip");
        assert!(matches!(source, OpenError::NotSealed { .. }), "{source:?}");
        assert_eq!(err.exit_code(), code::NOTSEALED);
        assert_eq!(node.read(0), *context, "files untouched");
        let text = err.chain_text();
        assert!(text.contains("has been taken over"), "{text}");
        assert!(!text.contains(FORGED), "{text}");
        match node.store().load(&pin, Some(&secret.fingerprint())).outcome {
            Some(Outcome::Failed { error }) => assert!(error.contains("taken over"), "{error}"),
            other => panic!("{other:?}"),
        }
        // master-ready announces nothing for a cluster that never formed.
        let announced = support::master_ready(&node, &m).await;
        assert!(
            matches!(
                (&announced, role),
                (Err(AgentError::NotContextualized), RoleRequest::Master)
                    | (Ok(Announced::NotMaster), RoleRequest::Auto)
            ),
            "{role}: {announced:?}"
        );
    }
    let client = PinClient::new(&url, &ClientOptions::default()).unwrap();
    let master_ready = client
        .get_key(&Pin::new(pin.as_str()), "master_ready", None)
        .await
        .unwrap();
    assert_eq!(master_ready, None);

    for (worker, handle) in workers.iter().zip(handles) {
        let err = handle.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, AgentError::NotSealedByThisCluster { key, .. } if key == "master_ip"),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), code::NOTSEALED);
        assert!(!err.chain_text().contains(FORGED), "{}", err.chain_text());
        assert!(err.chain_text().contains("not sealed by this cluster"));
        assert_eq!(worker.read(0), worker_context, "file untouched");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "workers failed at once, not after the ~10 s window: {elapsed:?}"
    );
    assert!(logs.text().contains("waiting for master_ip"));
    logs.assert_none_contains(&[secret.expose(), FORGED]);
}

#[tokio::test]
async fn a_worker_with_another_secret_or_none_fails_at_once() {
    let (logs, _capturing) = Logs::capture();
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let secret = ClusterSecret::generate().unwrap();
    let master = Node::new(&with_secret(MASTER_CONTEXT, &secret));
    let m = overrides(&url, &pin, RoleRequest::Master);
    support::contextualize(&master, &m).await.unwrap();
    support::master_ready(&master, &m).await.unwrap();

    let other = ClusterSecret::generate().unwrap();
    let wrong = Node::new(&with_secret(WORKER_CONTEXT, &other));
    let err = support::contextualize(&wrong, &overrides(&url, &pin, RoleRequest::Worker))
        .await
        .unwrap_err();
    // Not retried: every step of the master and of this worker took its first try (a count,
    // not a timing, which a loaded machine would break).
    let text = logs.text();
    assert!(text.contains("(try 1/"), "{text}");
    assert!(!text.contains("(try 2/"), "retried: {text}");
    assert!(
        matches!(
            &err,
            AgentError::NotSealedByThisCluster {
                source: OpenError::DoesNotOpen { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), code::NOTSEALED);
    assert_eq!(
        wrong.read(0),
        with_secret(WORKER_CONTEXT, &other),
        "file untouched"
    );

    // Without a secret, the sealed text is no address: refused before any file is touched.
    let none = Node::new(WORKER_CONTEXT);
    let err = support::contextualize(&none, &overrides(&url, &pin, RoleRequest::Worker))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::UnsafeValue { key, .. } if key == "master_ip"),
        "{err:?}"
    );
    assert_eq!(none.read(0), WORKER_CONTEXT);
    logs.assert_none_contains(&[secret.expose(), other.expose()]);
}

#[tokio::test]
async fn a_rebooting_master_recognises_its_sealed_address_and_a_second_master_is_refused() {
    let (logs, _capturing) = Logs::capture();
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let secret = ClusterSecret::generate().unwrap();
    let context = with_secret(MASTER_WITH_PLACEHOLDER, &secret);
    let master = Node::new(&context);
    let mut m = overrides(&url, &pin, RoleRequest::Master);
    m.address = Some(ADDRESS.into());
    support::contextualize(&master, &m).await.unwrap();
    assert_eq!(master.read(0), filled(&context, ADDRESS));

    // A reboot that lost its state: the 409 holds our address, sealed with another nonce.
    std::fs::remove_dir_all(master.state_dir()).unwrap();
    let again = support::contextualize(&master, &m).await.unwrap();
    assert_eq!(again, Finished::Contextualized { role: Role::Master });
    assert!(
        logs.text().contains(&format!(
            "master_ip={ADDRESS} was already published by this node"
        )),
        "{}",
        logs.text()
    );

    // Same secret, another address: a second master of this cluster, shown opened (77).
    let second = Node::new(&context);
    let mut s = m.clone();
    s.address = Some("10.77.31.210".into());
    let err = support::contextualize(&second, &s).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::PinTaken { held, .. } if held == ADDRESS),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), code::NOPERM);
    assert_eq!(second.read(0), context);

    // Another secret: the address does not open, the PIN is taken over as far as it knows.
    let stranger = Node::new(&with_secret(
        MASTER_WITH_PLACEHOLDER,
        &ClusterSecret::generate().unwrap(),
    ));
    let err = support::contextualize(&stranger, &m).await.unwrap_err();
    assert!(matches!(err, AgentError::PinTakenOver { .. }), "{err:?}");
    logs.assert_none_contains(&[secret.expose()]);
}

/// The `clusterctx` binary as systemd runs it: the exit code and the message of a sealed
/// worker that meets a forged `master_ip`, `check` with sealing on, and a secret file others
/// can read.
#[tokio::test]
async fn the_binary_says_why_and_never_prints_the_secret() {
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let secret = ClusterSecret::generate().unwrap();
    assert_eq!(
        post_key(&reqwest::Client::new(), &url, &pin, "master_ip", FORGED).await,
        201
    );
    let block = format!(
        "[ucernvm-begin]\ncvm_cluster_pin={pin}\ncvm_service_url={url}\ncvm_cluster_interval=0.5\ncvm_cluster_tries=20\n[ucernvm-end]\nip=###MASTER_IP_PLACEHOLDER###\n"
    );
    let node = Node::new(&block);
    let file = secret_file(&node, &secret);
    let run = |command: &'static str, file: PathBuf| {
        let context = node.files[0].clone();
        let state = node.state_dir();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_clusterctx"))
                .arg(command)
                .arg("--context")
                .arg(context)
                .arg("--state-dir")
                .arg(state)
                .arg("--secret-file")
                .arg(file)
                .env("RUST_LOG", "trace")
                .env_remove("JOURNAL_STREAM")
                .output()
                .await
                .unwrap()
        }
    };

    let checked = run("check", file.clone()).await;
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{report}");
    assert!(
        report.contains(&format!(
            "sealing: on (cluster secret fingerprint {})",
            secret.fingerprint()
        )),
        "{report}"
    );
    assert!(!report.contains(secret.expose()), "{report}");

    let started = Instant::now();
    let out = run("contextualize", file.clone()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(i32::from(code::NOTSEALED)),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{stderr}");
    assert!(stderr.contains("not sealed by this cluster"), "{stderr}");
    assert_eq!(node.read(0), block);
    for line in stderr.lines() {
        assert!(!line.contains(secret.expose()), "{line}");
        assert!(!line.contains(FORGED), "{line}");
    }

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = run("contextualize", file).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(i32::from(code::CONFIG)), "{stderr}");
    assert!(
        stderr.contains("--secret-file") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(!stderr.contains(secret.expose()), "{stderr}");
    drop(server);
}
