//! Membership on the agent's side: registration, waiting for `cvm_cluster_size` members and the
//! member placeholders, against the real PIN service on a real socket.

use crate::support;

use std::time::Duration;

use clusterctx::{
    agent::{config::RoleRequest, error::code, AgentError},
    client::{ClientOptions, PinClient},
    secret::Pin,
    server::{self, Config, Server},
};
use support::{fast, Node};

async fn cluster(config: Config) -> (Server, String) {
    let server = server::spawn(config).await.unwrap();
    let client = PinClient::new(&server.url(), &ClientOptions::default()).unwrap();
    let pin = client.create_cluster().await.unwrap().pin;
    (server, pin)
}

fn context(master: bool, address: &str, size: u32, body: &str) -> String {
    let role = if master {
        "cvm_cluster_master=yes\n"
    } else {
        ""
    };
    format!(
        "[ucernvm-begin]\ncvm_cluster_pin=enico1qq0oey\n{role}cvm_cluster_size={size}\n\
         cvm_cluster_address={address}\n[ucernvm-end]\n{body}"
    )
}

const MASTER_BODY: &str =
    "members=###CLUSTER_MEMBERS_PLACEHOLDER###\nsize=###CLUSTER_SIZE_PLACEHOLDER###\n";
const WORKER_BODY: &str =
    "master=###MASTER_IP_PLACEHOLDER###\nworkers=###CLUSTER_WORKERS_PLACEHOLDER###\n";

fn overrides(url: &str, pin: &str, role: RoleRequest) -> clusterctx::agent::config::Overrides {
    clusterctx::agent::config::Overrides {
        pin: Some(Pin::new(pin)),
        tries: Some(40),
        interval: Some(Duration::from_millis(250)),
        ..fast(url, role)
    }
}

fn worker(i: u8) -> Node {
    Node::new(&context(
        false,
        &format!("127.0.0.{}", i + 1),
        8,
        WORKER_BODY,
    ))
}

async fn member_addresses(url: &str, pin: &str) -> Vec<(String, String)> {
    let client = PinClient::new(url, &ClientOptions::default()).unwrap();
    client
        .members(&Pin::new(pin), None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.node, m.address))
        .collect()
}

#[tokio::test]
async fn one_master_and_seven_workers_fill_the_member_lists() {
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let workers: Vec<Node> = (1..=7).map(worker).collect();
    let mut tasks = Vec::new();
    for node in &workers {
        let (files, dir) = (node.files.clone(), node.state_dir());
        let o = overrides(&url, &pin, RoleRequest::Worker);
        tasks.push(tokio::spawn(support::contextualize_files(files, dir, o)));
    }
    let master = Node::new(&context(true, "127.0.0.1", 8, MASTER_BODY));
    let master_overrides = overrides(&url, &pin, RoleRequest::Master);
    support::contextualize(&master, &master_overrides)
        .await
        .unwrap();
    support::master_ready(&master, &master_overrides)
        .await
        .unwrap();
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let listed = member_addresses(&url, &pin).await;
    assert_eq!(listed.len(), 8, "{listed:?}");
    let joined: Vec<&str> = listed.iter().map(|(_, a)| a.as_str()).collect();
    let mut expected = vec!["127.0.0.1"];
    expected.extend(joined.iter().copied().filter(|a| *a != "127.0.0.1"));
    let mut all: Vec<&str> = expected.clone();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=8).map(|i| format!("127.0.0.{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        master.read(0).split_once("[ucernvm-end]\n").unwrap().1,
        format!("members={}\nsize=8\n", expected.join(","))
    );
    let worker_list = expected[1..].join(",");
    for node in &workers {
        assert_eq!(
            node.read(0).split_once("[ucernvm-end]\n").unwrap().1,
            format!("master=127.0.0.1\nworkers={worker_list}\n")
        );
    }
    let filled: Vec<String> = workers.iter().map(|n| n.read(0)).collect();
    let master_file = master.read(0);

    // A late ninth node is listed, and changes no filled file, even across their reboots.
    let ninth = worker(8);
    support::contextualize(&ninth, &overrides(&url, &pin, RoleRequest::Worker))
        .await
        .unwrap();
    assert_eq!(member_addresses(&url, &pin).await.len(), 9);
    assert_eq!(
        ninth.read(0).split_once("[ucernvm-end]\n").unwrap().1,
        format!("master=127.0.0.1\nworkers={worker_list}\n"),
        "the first eight make the list"
    );
    assert_eq!(master.read(0), master_file);

    // A worker whose state is gone but whose node id is kept reboots: one member, still.
    std::fs::remove_file(workers[0].store().path()).unwrap();
    support::contextualize(&workers[0], &overrides(&url, &pin, RoleRequest::Worker))
        .await
        .unwrap();
    let again = member_addresses(&url, &pin).await;
    assert_eq!(again.len(), 9, "{again:?}");
    assert_eq!(again[..8], listed[..], "the joining order is kept");
    assert_eq!(workers[0].read(0), filled[0]);

    // A worker rebooting with its state kept and a new address: registered again (still one
    // member, same place) with the address it has now; its files keep what they were filled
    // with.
    let moved = clusterctx::agent::config::Overrides {
        address: Some("127.0.0.42".into()),
        ..overrides(&url, &pin, RoleRequest::Worker)
    };
    let rebooted = support::contextualize(&workers[1], &moved).await.unwrap();
    assert!(
        matches!(
            rebooted,
            clusterctx::agent::contextualize::Finished::AlreadyDone { .. }
        ),
        "{rebooted:?}"
    );
    let after = member_addresses(&url, &pin).await;
    assert_eq!(after.len(), 9, "{after:?}");
    let place = after
        .iter()
        .position(|(_, address)| address == "127.0.0.42")
        .expect("registered again with its new address");
    assert_eq!(
        after[place].0, listed[place].0,
        "the same node, in its place"
    );
    assert_eq!(listed[place].1, "127.0.0.3", "the worker that rebooted");
    assert_eq!(workers[1].read(0), filled[1]);

    // The state file keeps what was filled.
    let state = master.store().load(&pin, None);
    assert_eq!(
        state.values.get("cluster_members").map(String::as_str),
        Some(expected.join(",").as_str())
    );
}

#[tokio::test]
async fn a_size_never_reached_closes_the_window_and_touches_no_file() {
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let master = Node::new(&context(true, "127.0.0.1", 3, MASTER_BODY));
    let before = master.read(0);
    let o = clusterctx::agent::config::Overrides {
        tries: Some(4),
        interval: Some(Duration::from_millis(200)),
        ..overrides(&url, &pin, RoleRequest::Master)
    };
    let err = support::contextualize(&master, &o).await.unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::SizeNotReached {
                registered: 1,
                size: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), code::TEMPFAIL);
    assert!(
        err.to_string().contains("only 1 of cvm_cluster_size=3"),
        "{err}"
    );
    assert_eq!(master.read(0), before);
    assert_eq!(member_addresses(&url, &pin).await.len(), 1);
}

#[tokio::test]
async fn a_node_without_member_placeholders_registers_and_never_waits() {
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let master = Node::new(&context(
        true,
        "127.0.0.1",
        50,
        "x=###MASTER_IP_PLACEHOLDER###\n",
    ));
    let o = clusterctx::agent::config::Overrides {
        tries: Some(2),
        ..overrides(&url, &pin, RoleRequest::Master)
    };
    support::contextualize(&master, &o).await.unwrap();
    assert!(master.read(0).ends_with("x=127.0.0.1\n"));
    assert_eq!(member_addresses(&url, &pin).await.len(), 1);
}

#[tokio::test]
async fn a_legacy_service_skips_registration_and_member_files_fail_with_their_code() {
    let (server, pin) = cluster(Config {
        emulate_legacy: true,
        ..Config::default()
    })
    .await;
    let url = server.url();
    let plain = Node::new(&context(
        true,
        "127.0.0.1",
        2,
        "x=###MASTER_IP_PLACEHOLDER###\n",
    ));
    support::contextualize(&plain, &overrides(&url, &pin, RoleRequest::Master))
        .await
        .unwrap();
    assert!(plain.read(0).ends_with("x=127.0.0.1\n"));

    let worker = Node::new(&context(false, "127.0.0.2", 2, WORKER_BODY));
    let before = worker.read(0);
    let o = clusterctx::agent::config::Overrides {
        no_wait_ready: true,
        ..overrides(&url, &pin, RoleRequest::Worker)
    };
    let err = support::contextualize(&worker, &o).await.unwrap_err();
    assert_eq!(err.exit_code(), code::NOMEMBERS, "{err:?}");
    assert!(err.to_string().contains("keeps no member list"), "{err}");
    assert_eq!(worker.read(0), before);
}

#[tokio::test]
async fn a_cluster_of_one_fills_an_empty_worker_list() {
    let (server, pin) = cluster(Config::default()).await;
    let url = server.url();
    let master = Node::new(&context(
        true,
        "127.0.0.1",
        1,
        "members=###CLUSTER_MEMBERS_PLACEHOLDER###\nworkers=###CLUSTER_WORKERS_PLACEHOLDER###\n",
    ));
    support::contextualize(&master, &overrides(&url, &pin, RoleRequest::Master))
        .await
        .unwrap();
    assert_eq!(
        master.read(0).split_once("[ucernvm-end]\n").unwrap().1,
        "members=127.0.0.1\nworkers=\n"
    );
}
