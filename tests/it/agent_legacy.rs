//! The agent against a legacy-like service whose create races (`support::legacy`): `auto`
//! still ends with one master that every node follows (PROTOCOL.md part 4).

use crate::support::{self, legacy::LegacyService, Node, WORKER_CONTEXT};

use std::{sync::Arc, time::Duration};

use clusterctx::{
    agent::{
        config::{Overrides, RoleRequest},
        contextualize::Finished,
        master_ready::Announced,
        state::Role,
        AgentError,
    },
    secret::Pin,
};
use tokio::sync::Barrier;

const NODES: usize = 5;
const ROUNDS: usize = 25;
/// Long enough that nodes released together all pass the check before any inserts.
const RACE_WINDOW: Duration = Duration::from_millis(40);

fn overrides(url: &str, pin: &str, role: RoleRequest, address: &str) -> Overrides {
    Overrides {
        pin: Some(Pin::new(pin)),
        address: Some(address.into()),
        ..support::fast(url, role)
    }
}

fn role_of(finished: &Finished) -> Role {
    match finished {
        Finished::Contextualized { role } | Finished::AlreadyDone { role } => *role,
    }
}

/// A PIN of the legacy form, different per round.
fn pin(round: usize) -> String {
    format!("legacy{round:06}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_against_a_racy_legacy_service_elects_one_master_every_round() {
    let service = LegacyService::spawn(RACE_WINDOW).await;
    let url = service.url();
    let context = WORKER_CONTEXT.replace(
        "[ucernvm-begin]\n",
        "[ucernvm-begin]\ncvm_cluster_master=auto\n",
    );
    let mut created_per_round = Vec::new();
    for round in 0..ROUNDS {
        let pin = pin(round);
        service.add_pin(&pin);
        let nodes: Vec<Node> = (0..NODES).map(|_| Node::new(&context)).collect();
        let barrier = Arc::new(Barrier::new(NODES));
        let handles: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let (files, state) = (node.files.clone(), node.state_dir());
                let mut overrides =
                    overrides(&url, &pin, RoleRequest::Auto, &format!("10.0.0.{}", i + 1));
                overrides.role = None; // from the block: auto
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    let finished = support::contextualize_files(
                        files.clone(),
                        state.clone(),
                        overrides.clone(),
                    )
                    .await?;
                    if role_of(&finished) == Role::Master {
                        support::master_ready_files(files, state, overrides).await?;
                    }
                    Ok::<_, AgentError>(role_of(&finished))
                })
            })
            .collect();
        let mut roles = Vec::new();
        for handle in handles {
            roles.push(handle.await.unwrap().unwrap_or_else(|err| {
                panic!("round {round}: a node failed: {}", err.chain_text())
            }));
        }
        let masters: Vec<usize> = (0..NODES).filter(|&i| roles[i] == Role::Master).collect();
        assert_eq!(masters.len(), 1, "round {round}: roles {roles:?}");
        let master_ip = format!("10.0.0.{}", masters[0] + 1);
        let rows = service.rows(&pin);
        let first = rows.iter().find(|(key, _)| key == "master_ip").unwrap();
        assert_eq!(
            first.1, master_ip,
            "round {round}: the first row is the master's"
        );
        for (i, node) in nodes.iter().enumerate() {
            assert!(
                node.read(0)
                    .contains(&format!("my_master_ip={master_ip}\n")),
                "round {round}, node {i}: {}",
                node.read(0)
            );
        }
        created_per_round.push(service.created(&pin, "master_ip"));
    }
    eprintln!("{ROUNDS} rounds of {NODES} auto nodes; creates of master_ip that got 201, per round: {created_per_round:?}");
    // The test proves something only if the race happened.
    assert!(
        created_per_round.iter().filter(|&&n| n > 1).count() >= ROUNDS / 2,
        "the legacy race rarely happened: {created_per_round:?}"
    );
}

#[tokio::test]
async fn a_worker_reads_a_duplicated_master_ip_from_the_keys_list() {
    let service = LegacyService::spawn(Duration::ZERO).await;
    let url = service.url();
    let pin = pin(900);
    service.add_pin(&pin);
    service.insert(&pin, "master_ip", "10.0.0.7");
    service.insert(&pin, "master_ip", "10.0.0.8");
    service.insert(&pin, "master_ready", "yes");
    let worker = Node::new(WORKER_CONTEXT);
    let finished = support::contextualize(
        &worker,
        &overrides(&url, &pin, RoleRequest::Worker, "10.0.0.9"),
    )
    .await
    .unwrap();
    assert_eq!(role_of(&finished), Role::Worker);
    assert!(worker.read(0).contains("my_master_ip=10.0.0.7\n"));
}

#[tokio::test]
async fn a_master_whose_master_ip_is_not_first_does_not_report_ready() {
    let service = LegacyService::spawn(Duration::ZERO).await;
    let url = service.url();
    let pin = pin(901);
    service.add_pin(&pin);
    let context = WORKER_CONTEXT.replace(
        "[ucernvm-begin]\n",
        "[ucernvm-begin]\ncvm_cluster_master=yes\n",
    );
    let master = Node::new(&context);
    let ours = overrides(&url, &pin, RoleRequest::Master, "10.0.0.1");
    support::contextualize(&master, &ours).await.unwrap();
    assert_eq!(
        support::master_ready(&master, &ours).await.unwrap(),
        Announced::Published
    );

    // A second master on another node went through the same racy create; its master_ip row
    // came second, and master_ready was there already.
    let pin = pin_with_rows(&service, 902, &["10.0.0.1", "10.0.0.2"]);
    service.insert(&pin, "master_ready", "yes");
    let late = Node::new(&context);
    let theirs = overrides(&url, &pin, RoleRequest::Master, "10.0.0.2");
    let err = support::contextualize(&late, &theirs).await.unwrap_err();
    assert!(
        matches!(err, AgentError::PinTaken { .. }),
        "{}",
        err.chain_text()
    );
    // Recorded as master by an older agent whose create raced: master_ready's 409 is no
    // proof of anything, the first row is.
    let mut state = late.store().load(&pin, None);
    state.role = Some(Role::Master);
    state.published_address = Some("10.0.0.2".into());
    state.outcome = Some(clusterctx::agent::state::Outcome::Success);
    late.store().save(&mut state).unwrap();
    let err = support::master_ready(&late, &theirs).await.unwrap_err();
    assert!(
        matches!(err, AgentError::PinTaken { .. }),
        "{}",
        err.chain_text()
    );
}

fn pin_with_rows(service: &LegacyService, round: usize, master_ips: &[&str]) -> String {
    let pin = pin(round);
    service.add_pin(&pin);
    for ip in master_ips {
        service.insert(&pin, "master_ip", ip);
    }
    pin
}
