//! Whole clusters of in-process agents against the real PIN service on a real socket.

use crate::support;

use std::{
    net::IpAddr,
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
    secret::Pin,
    server::{self, Config, Server},
};
use support::{fast, Node, MASTER_CONTEXT, PIN, WORKER_CONTEXT};

/// A server with a fresh cluster. The PIN in the context files is overridden with it.
async fn cluster(config: Config) -> (Server, String) {
    let server = server::spawn(config).await.unwrap();
    let client = PinClient::new(&server.url(), &ClientOptions::default()).unwrap();
    let pin = client.create_cluster().await.unwrap().pin;
    (server, pin)
}

fn overrides(url: &str, pin: &str, role: RoleRequest) -> Overrides {
    Overrides {
        pin: Some(Pin::new(pin)),
        interval: Some(Duration::from_millis(500)),
        ..fast(url, role)
    }
}

fn role_of(finished: &Finished) -> Role {
    match finished {
        Finished::Contextualized { role } | Finished::AlreadyDone { role } => *role,
    }
}

#[tokio::test]
async fn master_then_workers() {
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let master = Node::new(MASTER_CONTEXT);
    let finished = support::contextualize(&master, &overrides(&url, &pin, RoleRequest::Master))
        .await
        .unwrap();
    assert_eq!(role_of(&finished), Role::Master);
    // Detected toward a loopback service: the loopback address.
    assert_eq!(
        master.store().load(&pin, None).published_address.as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        support::master_ready(&master, &overrides(&url, &pin, RoleRequest::Master))
            .await
            .unwrap(),
        Announced::Published
    );

    let workers: Vec<Node> = (0..3).map(|_| Node::new(WORKER_CONTEXT)).collect();
    let handles: Vec<_> = workers
        .iter()
        .map(|w| spawn_worker(w, overrides(&url, &pin, RoleRequest::Worker)))
        .collect();
    for handle in handles {
        assert_eq!(role_of(&handle.await.unwrap().unwrap()), Role::Worker);
    }
    for worker in &workers {
        let expected = WORKER_CONTEXT.replace("###MASTER_IP_PLACEHOLDER###", "127.0.0.1");
        assert_eq!(worker.read(0), expected, "only the placeholder changed");
        assert_eq!(
            worker
                .store()
                .load(&pin, None)
                .values
                .get("master_ip")
                .map(String::as_str),
            Some("127.0.0.1")
        );
    }
}

#[tokio::test]
async fn workers_started_before_the_master_wait_for_it() {
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let workers: Vec<Node> = (0..4).map(|_| Node::new(WORKER_CONTEXT)).collect();
    let handles: Vec<_> = workers
        .iter()
        .map(|w| spawn_worker(w, overrides(&url, &pin, RoleRequest::Worker)))
        .collect();

    // Let the workers start waiting, then boot the master.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        handles.iter().all(|h| !h.is_finished()),
        "workers must wait"
    );
    let master = Node::new(MASTER_CONTEXT);
    let mut master_overrides = overrides(&url, &pin, RoleRequest::Master);
    master_overrides.address = Some("10.20.30.40".into());
    support::contextualize(&master, &master_overrides)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        handles.iter().all(|h| !h.is_finished()),
        "workers wait for master_ready, not only master_ip"
    );
    support::master_ready(&master, &master_overrides)
        .await
        .unwrap();
    for handle in handles {
        assert_eq!(role_of(&handle.await.unwrap().unwrap()), Role::Worker);
    }
    for worker in &workers {
        assert!(worker.read(0).contains("my_master_ip=10.20.30.40\n"));
    }
    // With long-poll each worker needed a handful of requests, not one per 500 ms.
    assert_eq!(server.waiters(), 0);
}

#[tokio::test]
async fn auto_election_among_many_nodes_elects_exactly_one_master() {
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let context = WORKER_CONTEXT.replace(
        "[ucernvm-begin]\n",
        "[ucernvm-begin]\ncvm_cluster_master=auto\n",
    );
    let nodes: Vec<Node> = (0..24).map(|_| Node::new(&context)).collect();
    let handles: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (files, state) = (node.files.clone(), node.state_dir());
            let mut overrides = overrides(&url, &pin, RoleRequest::Auto);
            overrides.role = None; // from the block: auto
            overrides.address = Some(format!("10.0.0.{}", i + 1));
            tokio::spawn(async move {
                let finished =
                    support::contextualize_files(files.clone(), state.clone(), overrides.clone())
                        .await
                        .unwrap();
                if role_of(&finished) == Role::Master {
                    assert_eq!(
                        support::master_ready_files(files, state, overrides)
                            .await
                            .unwrap(),
                        Announced::Published
                    );
                }
                finished
            })
        })
        .collect();
    let mut masters = 0;
    for handle in handles {
        if role_of(&handle.await.unwrap()) == Role::Master {
            masters += 1;
        }
    }
    assert_eq!(masters, 1);

    let client = PinClient::new(&url, &ClientOptions::default()).unwrap();
    let master_ip = client
        .get_key(&Pin::new(pin.as_str()), "master_ip", None)
        .await
        .unwrap()
        .unwrap();
    for node in &nodes {
        // The master filled its own placeholder too.
        assert!(node
            .read(0)
            .contains(&format!("my_master_ip={master_ip}\n")));
    }
}

#[tokio::test]
async fn a_reboot_publishes_nothing_twice_and_needs_no_network() {
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let master = Node::new(&format!(
        "{MASTER_CONTEXT}self=###MASTER_IP_PLACEHOLDER###\n"
    ));
    let worker = Node::new(WORKER_CONTEXT);
    let m = overrides(&url, &pin, RoleRequest::Master);
    let w = overrides(&url, &pin, RoleRequest::Worker);
    support::contextualize(&master, &m).await.unwrap();
    support::master_ready(&master, &m).await.unwrap();
    support::contextualize(&worker, &w).await.unwrap();
    let files_after_boot = (master.read(0), worker.read(0));

    // Second boot with the service gone: state alone answers.
    server.shutdown().await;
    assert_eq!(
        support::contextualize(&master, &m).await.unwrap(),
        Finished::AlreadyDone { role: Role::Master }
    );
    assert_eq!(
        support::master_ready(&master, &m).await.unwrap(),
        Announced::AlreadyPublished
    );
    assert_eq!(
        support::contextualize(&worker, &w).await.unwrap(),
        Finished::AlreadyDone { role: Role::Worker }
    );
    assert_eq!((master.read(0), worker.read(0)), files_after_boot);
}

#[tokio::test]
async fn a_master_that_lost_its_state_republishes_idempotently() {
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let master = Node::new(MASTER_CONTEXT);
    let m = overrides(&url, &pin, RoleRequest::Master);
    support::contextualize(&master, &m).await.unwrap();
    std::fs::remove_dir_all(master.state_dir()).unwrap();
    // 409 with our own address: success, not "another master".
    assert_eq!(
        support::contextualize(&master, &m).await.unwrap(),
        Finished::Contextualized { role: Role::Master }
    );
    // A second master with another address is refused.
    let intruder = Node::new(MASTER_CONTEXT);
    let mut other = m.clone();
    other.address = Some("10.66.66.66".into());
    let err = support::contextualize(&intruder, &other).await.unwrap_err();
    assert!(matches!(err, AgentError::PinTaken { .. }), "{err:?}");
    assert!(matches!(
        intruder.store().load(&pin, None).outcome,
        Some(Outcome::Failed { .. })
    ));
    // Nor does the refused master announce readiness for a master_ip that is not its own.
    let err = support::master_ready(&intruder, &other).await.unwrap_err();
    assert!(matches!(err, AgentError::NotContextualized), "{err:?}");
    assert_eq!(err.exit_code(), code::TEMPFAIL);
}

#[tokio::test]
async fn ipv6_service_and_master() {
    let (server, pin) = cluster(Config {
        listen: "[::1]:0".parse().unwrap(),
        ..Config::default()
    })
    .await;
    let url = server.url();
    assert!(url.contains("[::1]"), "{url}");
    let master = Node::new(MASTER_CONTEXT);
    let worker = Node::new(WORKER_CONTEXT);
    support::contextualize(&master, &overrides(&url, &pin, RoleRequest::Master))
        .await
        .unwrap();
    support::master_ready(&master, &overrides(&url, &pin, RoleRequest::Master))
        .await
        .unwrap();
    support::contextualize(&worker, &overrides(&url, &pin, RoleRequest::Worker))
        .await
        .unwrap();
    let line = worker
        .read(0)
        .lines()
        .find(|l| l.starts_with("my_master_ip="))
        .unwrap()
        .to_string();
    let ip: IpAddr = line.trim_start_matches("my_master_ip=").parse().unwrap();
    assert_eq!(ip, "::1".parse::<IpAddr>().unwrap());
}

#[tokio::test]
async fn workers_wait_for_every_key_their_files_reference() {
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let worker = Node::with_files(&[
        ("user-data", WORKER_CONTEXT),
        (
            "cloud-config.txt",
            "#cloud-config\nruncmd:\n - echo ###MASTER_IP_PLACEHOLDER### ###Greeting_PLACEHOLDER### > /etc/x\n",
        ),
    ]);
    let mut w = overrides(&url, &pin, RoleRequest::Worker);
    w.no_wait_ready = true;
    let handle = spawn_worker(&worker, w);

    let client = PinClient::new(&url, &ClientOptions::default()).unwrap();
    let pin_ = Pin::new(pin.as_str());
    client
        .create_key(&pin_, "master_ip", "10.1.2.3")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!handle.is_finished(), "greeting is still missing");
    client
        .create_key(&pin_, "greeting", "hello-world")
        .await
        .unwrap();
    handle.await.unwrap().unwrap();
    assert!(worker.read(0).contains("my_master_ip=10.1.2.3\n"));
    assert_eq!(
        worker.read(1),
        "#cloud-config\nruncmd:\n - echo 10.1.2.3 hello-world > /etc/x\n"
    );
}

#[tokio::test]
async fn an_expired_pin_fails_at_once() {
    let (server, pin) = cluster(Config {
        ttl: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let worker = Node::new(WORKER_CONTEXT);
    let before = worker.read(0);
    let started = Instant::now();
    let mut w = overrides(&server.url(), &pin, RoleRequest::Worker);
    // A retry would sleep out a slot of at least 24 s first; a loaded machine is slow, not that slow.
    w.interval = Some(Duration::from_secs(30));
    let err = support::contextualize(&worker, &w).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20), "not retried");
    assert!(matches!(err, AgentError::PinExpired { .. }), "{err:?}");
    assert_eq!(worker.read(0), before);
}

#[tokio::test]
async fn an_unknown_pin_fails_at_once() {
    let server = server::spawn(Config::default()).await.unwrap();
    let worker = Node::new(WORKER_CONTEXT);
    let started = Instant::now();
    let mut w = overrides(&server.url(), PIN, RoleRequest::Worker);
    w.interval = Some(Duration::from_secs(30));
    let err = support::contextualize(&worker, &w).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20), "not retried");
    assert!(matches!(err, AgentError::PinUnknown { .. }), "{err:?}");
}

#[tokio::test]
async fn a_service_restart_while_workers_wait_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pins.sqlite3");
    let (server, pin) = cluster(Config {
        db: Some(db.clone()),
        ..Config::default()
    })
    .await;
    let addr = server.addr();
    let url = server.url();
    let worker = Node::new(WORKER_CONTEXT);
    let handle = spawn_worker(&worker, overrides(&url, &pin, RoleRequest::Worker));
    tokio::time::sleep(Duration::from_millis(600)).await;
    server.shutdown().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Same address, same file: the PIN survived.
    let server = server::spawn(Config {
        listen: addr,
        db: Some(db),
        ..Config::default()
    })
    .await
    .unwrap();
    let master = Node::new(MASTER_CONTEXT);
    let m = overrides(&url, &pin, RoleRequest::Master);
    support::contextualize(&master, &m).await.unwrap();
    support::master_ready(&master, &m).await.unwrap();
    handle.await.unwrap().unwrap();
    assert!(worker.read(0).contains("my_master_ip=127.0.0.1\n"));
    drop(server);
}

#[tokio::test]
async fn a_legacy_service_without_long_poll_still_forms_the_cluster() {
    let (server, pin) = cluster(Config {
        emulate_legacy: true,
        open: true,
        ..Config::default()
    })
    .await;
    let url = server.url();
    let client = PinClient::new(&url, &ClientOptions::default()).unwrap();
    let info = client.cluster(&Pin::new(pin.as_str())).await.unwrap();
    assert_eq!((info.expires_at, info.admin_token), (None, None));
    assert!(client.server_kind().unwrap().is_legacy());

    let mut w = overrides(&url, &pin, RoleRequest::Worker);
    w.interval = Some(Duration::from_millis(200));
    let workers: Vec<Node> = (0..3).map(|_| Node::new(WORKER_CONTEXT)).collect();
    let handles: Vec<_> = workers.iter().map(|n| spawn_worker(n, w.clone())).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let master = Node::new(MASTER_CONTEXT);
    let mut m = overrides(&url, &pin, RoleRequest::Master);
    m.address = Some("10.7.7.7".into());
    support::contextualize(&master, &m).await.unwrap();
    support::master_ready(&master, &m).await.unwrap();
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
    for worker in &workers {
        assert!(worker.read(0).contains("my_master_ip=10.7.7.7\n"));
    }
    assert_eq!(server.waiters(), 0, "nobody was parked: wait= is ignored");
}

#[tokio::test]
async fn https_with_a_private_ca_and_an_untrusted_certificate_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = support::tls::spawn_https(dir.path()).await;
    let url = server.url();
    let trusting = PinClient::new(
        &url,
        &ClientOptions {
            ca_file: Some(ca.clone()),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let pin = trusting.create_cluster().await.unwrap().pin;

    // Without the CA: refused as permanent, not retried for the whole window.
    let worker = Node::new(WORKER_CONTEXT);
    let mut w = overrides(&url, &pin, RoleRequest::Worker);
    w.interval = Some(Duration::from_secs(5));
    let started = Instant::now();
    let err = support::contextualize(&worker, &w).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "not retried");
    assert!(matches!(err, AgentError::Untrusted(_)), "{err:?}");

    // With it: the cluster forms.
    let master = Node::new(MASTER_CONTEXT);
    let mut m = overrides(&url, &pin, RoleRequest::Master);
    m.ca_file = Some(ca.clone());
    support::contextualize(&master, &m).await.unwrap();
    support::master_ready(&master, &m).await.unwrap();
    w.ca_file = Some(ca);
    w.interval = Some(Duration::from_millis(500));
    support::contextualize(&worker, &w).await.unwrap();
    assert!(worker.read(0).contains("my_master_ip=127.0.0.1\n"));
}

/// Starts a node's contextualization in the background.
fn spawn_worker(
    node: &Node,
    overrides: Overrides,
) -> tokio::task::JoinHandle<Result<Finished, AgentError>> {
    tokio::spawn(support::contextualize_files(
        node.files.clone(),
        node.state_dir(),
        overrides,
    ))
}
