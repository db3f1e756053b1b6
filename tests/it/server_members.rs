//! Cluster membership over real sockets: registration and re-registration, the joining order,
//! the `min`/`wait` long-poll woken from another connection, the member cap, bad node names
//! and addresses, the admin token on delete (each on both stores), and members across restarts
//! and a schema migration (SQLite).

use crate::support::{
    server::{create_cluster, get_text},
    stores::{both_stores, Backend, Db},
};

use std::time::{Duration, Instant};

use clusterctx::{
    protocol::{ClusterInfo, MemberItem},
    server::{
        self,
        store::{cluster_bytes, member_bytes},
        Config, ManualClock,
    },
};

/// A server on a fresh store of `backend`, and what keeps that store's database up.
async fn spawn(backend: Backend, config: Config) -> (server::Server, Db) {
    let db = backend.open();
    let server = server::spawn_with(config, std::sync::Arc::clone(&db.store))
        .await
        .unwrap();
    (server, db)
}

const NODES: [&str; 3] = ["node0000000000aa", "node0000000000bb", "node0000000000cc"];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Registers `node` from a fresh connection; returns the status.
async fn register(url: &str, pin: &str, node: &str, address: &str, role: &str) -> u16 {
    client()
        .put(format!("{url}/api/v1/clusters/{pin}/members/{node}"))
        .json(&serde_json::json!({"address": address, "role": role}))
        .send()
        .await
        .expect("PUT member")
        .status()
        .as_u16()
}

async fn members(url: &str, pin: &str, query: &str) -> (u16, Vec<MemberItem>) {
    let response = client()
        .get(format!("{url}/api/v1/clusters/{pin}/members{query}"))
        .send()
        .await
        .expect("GET members");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or_default())
}

fn nodes(list: &[MemberItem]) -> Vec<&str> {
    list.iter().map(|m| m.node.as_str()).collect()
}

/// The value of one counter or gauge in `/metrics`.
async fn metric(url: &str, name: &str) -> u64 {
    let (_, text) = get_text(&client(), &format!("{url}/metrics")).await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Waits until `n` long-polls are parked on a member list.
async fn until_member_waiters(url: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(url, "clusterctx_member_waiters").await != n {
        assert!(Instant::now() < deadline, "never {n} member waiters");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

both_stores! {
    async fn members_join_in_order_and_registering_again_keeps_the_place(backend: Backend) {
        let clock = ManualClock::starting_now();
        let (server, _db) = spawn(backend, Config {
            clock: clock.clock(),
            ..Config::default()
        }).await;
        let url = server.url();
        let (pin, _) = create_cluster(&client(), &url).await;
        assert_eq!(
            register(&url, &pin, NODES[0], "10.0.0.1", "master").await,
            201
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            register(&url, &pin, NODES[1], "10.0.0.2", "worker").await,
            201
        );
        assert_eq!(register(&url, &pin, NODES[2], "::1", "worker").await, 201);
        let (_, before) = members(&url, &pin, "").await;
        clock.advance(Duration::from_secs(5));
        // A reboot: the first node again, with a new address.
        assert_eq!(
            register(&url, &pin, NODES[0], "10.0.0.9", "master").await,
            200
        );

        let (status, list) = members(&url, &pin, "").await;
        assert_eq!(status, 200);
        assert_eq!(nodes(&list), NODES);
        assert_eq!(list[0].address, "10.0.0.9");
        assert_eq!(list[0].role, "master");
        assert_eq!(list[0].joined_at, before[0].joined_at, "joined_at is kept");
        let parse = |t: &str| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
        };
        assert_eq!(
            parse(&list[0].last_seen) - parse(&list[0].joined_at),
            time::Duration::seconds(6)
        );
        assert_eq!(list[2].address, "::1");
        assert_eq!(metric(&url, "clusterctx_members_registered_total").await, 3);
        assert_eq!(metric(&url, "clusterctx_members").await, 3);

        // The same list as text, one line per member.
        let text = client()
            .get(format!("{url}/api/v1/clusters/{pin}/members"))
            .header("accept", "text/plain")
            .send()
            .await
            .unwrap();
        assert!(text.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(
            text.text().await.unwrap(),
            format!(
                "{} master 10.0.0.9\n{} worker 10.0.0.2\n{} worker ::1\n",
                NODES[0], NODES[1], NODES[2]
            )
        );

        // The store-wide byte count (what `--max-stored-bytes` is checked against) follows a
        // re-registration that changes the address's length.
        assert_eq!(register(&url, &pin, NODES[1], "10.0.0.222", "worker").await, 200);
        let expected = cluster_bytes(&pin)
            + member_bytes(&pin, NODES[0], "10.0.0.9")
            + member_bytes(&pin, NODES[1], "10.0.0.222")
            + member_bytes(&pin, NODES[2], "::1");
        assert_eq!(metric(&url, "clusterctx_stored_bytes").await, expected);
        server.shutdown().await;
    }

    async fn a_long_poll_for_n_members_is_woken_by_a_registration_elsewhere(backend: Backend) {
        let (server, _db) = spawn(backend, Config::default()).await;
        let url = server.url();
        let (pin, token) = create_cluster(&client(), &url).await;
        assert_eq!(
            register(&url, &pin, NODES[0], "10.0.0.1", "master").await,
            201
        );
        let waiter = tokio::spawn({
            let (url, pin) = (url.clone(), pin.clone());
            async move {
                let list = members(&url, &pin, "?wait=30&min=2").await;
                (list, Instant::now())
            }
        });
        until_member_waiters(&url, 1).await;
        // A key write concerns key waiters only: the member waiter stays parked.
        assert_eq!(
            crate::support::server::post_key(&client(), &url, &pin, "master_ip", "10.0.0.1").await,
            201
        );
        let registered = Instant::now();
        assert_eq!(
            register(&url, &pin, NODES[1], "10.0.0.2", "worker").await,
            201
        );
        let ((status, list), answered) = waiter.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(nodes(&list), &NODES[..2]);
        assert!(
            answered.duration_since(registered) < Duration::from_secs(5),
            "woken by the registration, not by the end of the wait"
        );
        assert_eq!(metric(&url, "clusterctx_member_waiters").await, 0);

        // Enough members already: no wait at all.
        let (status, list) = members(&url, &pin, "?wait=30&min=2").await;
        assert_eq!((status, list.len()), (200, 2));

        // A waiter on a cluster that is deleted meanwhile answers 404 at once.
        let waiter = tokio::spawn({
            let (url, pin) = (url.clone(), pin.clone());
            async move { members(&url, &pin, "?wait=30&min=5").await.0 }
        });
        until_member_waiters(&url, 1).await;
        let cluster_url = format!("{url}/api/v1/clusters/{pin}");
        let deleted = crate::support::server::delete_with_token(&client(), &cluster_url, &token).await;
        assert_eq!(deleted, 204);
        assert_eq!(waiter.await.unwrap(), 404);
        server.shutdown().await;
    }

    async fn an_emulated_legacy_service_has_no_members(backend: Backend) {
        let (server, _db) = spawn(backend, Config {
            emulate_legacy: true,
            ..Config::default()
        }).await;
        let url = server.url();
        // The legacy answer has no admin token.
        let created = client()
            .post(format!("{url}/api/v1/clusters"))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let pin = created.json::<ClusterInfo>().await.unwrap().pin;
        assert_eq!(
            register(&url, &pin, NODES[0], "10.0.0.1", "master").await,
            404
        );
        assert_eq!(members(&url, &pin, "").await.0, 404);
        server.shutdown().await;
    }

    async fn a_long_poll_that_runs_out_answers_the_list_as_it_stands(backend: Backend) {
        let (server, _db) = spawn(backend, Config::default()).await;
        let url = server.url();
        let (pin, _) = create_cluster(&client(), &url).await;
        assert_eq!(
            register(&url, &pin, NODES[0], "10.0.0.1", "master").await,
            201
        );
        let started = Instant::now();
        let (status, list) = members(&url, &pin, "?wait=0.4&min=3").await;
        let waited = started.elapsed();
        assert_eq!(status, 200);
        assert_eq!(nodes(&list), &NODES[..1]);
        assert!(waited >= Duration::from_millis(400), "{waited:?}");
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        // Bad query values are refused before any wait.
        assert_eq!(members(&url, &pin, "?wait=30&min=x").await.0, 400);
        assert_eq!(members(&url, &pin, "?wait=999&min=3").await.0, 400);
        server.shutdown().await;
    }

    async fn the_member_cap_refuses_newcomers_but_not_known_nodes(backend: Backend) {
        let (server, _db) = spawn(backend, Config {
            max_members: 2,
            ..Config::default()
        }).await;
        let url = server.url();
        let (pin, _) = create_cluster(&client(), &url).await;
        assert_eq!(
            register(&url, &pin, NODES[0], "10.0.0.1", "master").await,
            201
        );
        assert_eq!(
            register(&url, &pin, NODES[1], "10.0.0.2", "worker").await,
            201
        );
        let refused = client()
            .put(format!("{url}/api/v1/clusters/{pin}/members/{}", NODES[2]))
            .json(&serde_json::json!({"address": "10.0.0.3", "role": "worker"}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403);
        let body = refused.text().await.unwrap();
        assert!(body.contains("maximum of 2 members"), "{body}");
        assert_eq!(
            register(&url, &pin, NODES[1], "10.0.0.4", "worker").await,
            200
        );
        let (_, list) = members(&url, &pin, "").await;
        assert_eq!(nodes(&list), &NODES[..2]);
        server.shutdown().await;
    }

    async fn bad_node_names_addresses_and_roles_are_refused(backend: Backend) {
        let (server, _db) = spawn(backend, Config::default()).await;
        let url = server.url();
        let (pin, _) = create_cluster(&client(), &url).await;
        for node in [
            "short",
            "NODE0000000000AA",
            "node0000000000aa0",
            "node00000000000-",
        ] {
            assert_eq!(
                register(&url, &pin, node, "10.0.0.1", "worker").await,
                400,
                "{node}"
            );
        }
        for address in ["", "10.0.0", "host.example.org", "10.0.0.1:22", "ccs1.!!!!"] {
            assert_eq!(
                register(&url, &pin, NODES[0], address, "worker").await,
                400,
                "{address:?}"
            );
        }
        assert_eq!(
            register(&url, &pin, NODES[0], "10.0.0.1", "boss").await,
            400
        );
        let no_json = client()
            .put(format!("{url}/api/v1/clusters/{pin}/members/{}", NODES[0]))
            .body("address=10.0.0.1")
            .send()
            .await
            .unwrap();
        assert_eq!(no_json.status(), 400);
        assert!(
            members(&url, &pin, "").await.1.is_empty(),
            "nothing was stored"
        );
        // An unknown PIN answers as the key list does.
        assert_eq!(
            register(&url, "zzzzzzzzzzzz", NODES[0], "10.0.0.1", "worker").await,
            404
        );
        assert_eq!(members(&url, "zzzzzzzzzzzz", "").await.0, 404);
        server.shutdown().await;
    }

    async fn deleting_a_member_needs_the_admin_token(backend: Backend) {
        let (server, _db) = spawn(backend, Config::default()).await;
        let url = server.url();
        let (pin, token) = create_cluster(&client(), &url).await;
        assert_eq!(
            register(&url, &pin, NODES[0], "10.0.0.1", "master").await,
            201
        );
        let member_url = format!("{url}/api/v1/clusters/{pin}/members/{}", NODES[0]);
        let delete = |token: Option<&str>| {
            let request = client().delete(&member_url);
            let request = match token {
                Some(token) => request.bearer_auth(token),
                None => request,
            };
            async move { request.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(delete(None).await, 401);
        assert_eq!(delete(Some("not-the-token")).await, 403);
        assert_eq!(members(&url, &pin, "").await.1.len(), 1);
        assert_eq!(delete(Some(&token)).await, 204);
        assert_eq!(delete(Some(&token)).await, 404);
        assert!(members(&url, &pin, "").await.1.is_empty());
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_survive_a_restart_and_a_version_1_store_gains_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pins.sqlite3");
    {
        // A store written by a clusterctx of schema version 1.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE clusters (pin TEXT PRIMARY KEY NOT NULL, created_ms INTEGER NOT NULL,
                 expires_ms INTEGER NOT NULL, token_hash BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE keys (pin TEXT NOT NULL REFERENCES clusters(pin) ON DELETE CASCADE,
                 key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (pin, key)) WITHOUT ROWID;
             CREATE INDEX clusters_by_expiry ON clusters (expires_ms);
             INSERT INTO clusters VALUES ('enico1qq0oey', 0, 9000000000000, zeroblob(32));
             INSERT INTO keys VALUES ('enico1qq0oey', 'master_ip', '10.0.0.1');
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let config = || Config {
        db: Some(db.clone()),
        ..Config::default()
    };
    let server = server::spawn(config()).await.unwrap();
    let url = server.url();
    let pin = "enico1qq0oey";
    let (status, value) = get_text(
        &client(),
        &format!("{url}/api/v1/clusters/{pin}/keys/master_ip"),
    )
    .await;
    assert_eq!((status, value.as_str()), (200, "master_ip: 10.0.0.1"));
    for (node, address) in [(NODES[2], "10.0.0.3"), (NODES[0], "10.0.0.1")] {
        assert_eq!(register(&url, pin, node, address, "worker").await, 201);
    }
    server.shutdown().await;

    let server = server::spawn(config()).await.unwrap();
    let url = server.url();
    let (_, list) = members(&url, pin, "").await;
    assert_eq!(nodes(&list), [NODES[2], NODES[0]]);
    assert_eq!(
        register(&url, pin, NODES[2], "10.0.0.3", "worker").await,
        200
    );
    server.shutdown().await;
}
