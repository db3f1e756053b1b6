//! Several `clusterctx serve` processes on one throw-away PostgreSQL server: exactly one 201
//! across replicas, wakeups across them, a replica killed, the database restarted or down, a
//! replica started before its database.

use std::time::{Duration, Instant};

use crate::support::{
    postgres::Postgres,
    server::{create_cluster, get_text, post_key, ServeProcess},
};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The value of a `key: value` text answer.
fn value(body: &str) -> &str {
    body.trim().split_once(": ").map_or(body.trim(), |(_, v)| v)
}

fn replicas(pg: &Postgres, n: usize) -> Vec<ServeProcess> {
    let url = pg.url();
    (0..n)
        .map(|_| ServeProcess::start(std::path::Path::new(&url), &["--create-burst", "0"]))
        .collect()
}

/// Waits until `url`/healthz answers `status`, up to `limit`.
async fn wait_health(client: &reqwest::Client, url: &str, status: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let got = client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if got.as_ref().ok() == Some(&status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz of {url} did not answer {status} within {limit:?} (last {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs a key, retrying while the answer is 503 (as agents do), up to `limit`.
async fn post_until_done(
    client: &reqwest::Client,
    url: &str,
    pin: &str,
    key: &str,
    value: &str,
    limit: Duration,
) -> u16 {
    let deadline = Instant::now() + limit;
    loop {
        let status = post_key(client, url, pin, key, value).await;
        if status != 503 || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn park(
    client: &reqwest::Client,
    url: &str,
    pin: &str,
    key: &str,
    wait: u32,
) -> tokio::task::JoinHandle<(u16, String, Instant)> {
    let (client, uri) = (
        client.clone(),
        format!("{url}/api/v1/clusters/{pin}/keys/{key}?wait={wait}"),
    );
    tokio::spawn(async move {
        let (status, body) = get_text(&client, &uri).await;
        (status, body, Instant::now())
    })
}

/// Parked long-polls on `url`, read from its /metrics.
async fn parked(client: &reqwest::Client, url: &str) -> u64 {
    let (_, text) = get_text(client, &format!("{url}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix("clusterctx_longpoll_waiters "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_parked(client: &reqwest::Client, url: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while parked(client, url).await < n {
        assert!(Instant::now() < deadline, "waiters did not park on {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_over_three_replicas_give_exactly_one_201() {
    let pg = Postgres::start();
    let servers = replicas(&pg, 3);
    let client = client();
    let (pin, _) = create_cluster(&client, &servers[0].url).await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (client, url, pin) = (client.clone(), servers[i % 3].url.clone(), pin.clone());
        tasks.push(tokio::spawn(async move {
            (
                i,
                post_key(&client, &url, &pin, "master_ip", &format!("10.0.0.{i}")).await,
            )
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (i, status) = task.await.unwrap();
        match status {
            201 => winners.push(i),
            409 => {}
            other => panic!("create {i} answered {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one 201: {winners:?}");
    for server in &servers {
        let (status, body) = get_text(
            &client,
            &format!("{}/api/v1/clusters/{pin}/keys/master_ip", server.url),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(value(&body), format!("10.0.0.{}", winners[0]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_replica_is_woken_by_a_write_on_another() {
    let pg = Postgres::start();
    let servers = replicas(&pg, 3);
    let client = client();
    for server in &servers {
        wait_health(&client, &server.url, 200, Duration::from_secs(20)).await;
    }
    let (pin, _) = create_cluster(&client, &servers[1].url).await;
    let waiter = park(&client, &servers[0].url, &pin, "master_ip", 30);
    wait_parked(&client, &servers[0].url, 1).await;
    let sent = Instant::now();
    assert_eq!(
        post_key(&client, &servers[2].url, &pin, "master_ip", "10.0.0.7").await,
        201
    );
    let (status, body, answered) = waiter.await.unwrap();
    assert_eq!((status, value(&body)), (200, "10.0.0.7"));
    let took = answered - sent;
    assert!(took < Duration::from_secs(1), "woken after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_replica_loses_nothing_for_waiters_on_the_others() {
    let pg = Postgres::start();
    let mut servers = replicas(&pg, 3);
    let client = client();
    for server in &servers {
        wait_health(&client, &server.url, 200, Duration::from_secs(20)).await;
    }
    let (pin, _) = create_cluster(&client, &servers[0].url).await;
    let on_a = park(&client, &servers[0].url, &pin, "master_ip", 30);
    let on_b = park(&client, &servers[1].url, &pin, "master_ip", 30);
    let late_on_b = park(&client, &servers[1].url, &pin, "after", 30);
    wait_parked(&client, &servers[0].url, 1).await;
    wait_parked(&client, &servers[1].url, 2).await;
    // C acknowledges a write, then dies without a chance to flush anything.
    assert_eq!(
        post_key(&client, &servers[2].url, &pin, "master_ip", "10.0.0.9").await,
        201
    );
    servers.pop().unwrap().kill_9();
    for waiter in [on_a, on_b] {
        let (status, body, _) = waiter.await.unwrap();
        assert_eq!((status, value(&body)), (200, "10.0.0.9"));
    }
    // The survivors go on: a write on A wakes B.
    assert_eq!(
        post_key(&client, &servers[0].url, &pin, "after", "1").await,
        201
    );
    let (status, body, _) = late_on_b.await.unwrap();
    assert_eq!((status, value(&body)), (200, "1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_of_postgres_parked_waiters_get_the_value() {
    let mut pg = Postgres::start();
    let servers = replicas(&pg, 2);
    let client = client();
    for server in &servers {
        wait_health(&client, &server.url, 200, Duration::from_secs(20)).await;
    }
    let (pin, _) = create_cluster(&client, &servers[0].url).await;
    let before = park(&client, &servers[0].url, &pin, "during", 60);
    let after = park(&client, &servers[0].url, &pin, "after", 60);
    wait_parked(&client, &servers[0].url, 2).await;
    // A write that notifies nobody (straight into the table, behind the service's back):
    // only a re-check can find it, and the waiter has no reason to make one yet.
    let sql = format!("INSERT INTO keys VALUES ('{pin}', 'during', '10.0.0.3')");
    assert!(pg.psql(&sql).status.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!before.is_finished(), "nothing told the waiter");
    // The restart drops every connection; the notification connection comes back and makes
    // every waiter look again.
    pg.stop();
    pg.start_again();
    let (status, body, _) = before.await.unwrap();
    assert_eq!(
        (status, value(&body)),
        (200, "10.0.0.3"),
        "re-checked after the reconnect"
    );
    // And a create through the other replica wakes the rest, once it has reconnected.
    wait_health(&client, &servers[1].url, 200, Duration::from_secs(30)).await;
    let status = post_until_done(
        &client,
        &servers[1].url,
        &pin,
        "after",
        "10.0.0.4",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body, _) = after.await.unwrap();
    assert_eq!((status, value(&body)), (200, "10.0.0.4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_down_answers_503_and_the_replica_recovers_by_itself() {
    let mut pg = Postgres::start();
    let servers = replicas(&pg, 1);
    let url = &servers[0].url;
    let client = client();
    wait_health(&client, url, 200, Duration::from_secs(20)).await;
    let (pin, _) = create_cluster(&client, url).await;
    assert_eq!(post_key(&client, url, &pin, "k", "1").await, 201);
    pg.stop();
    let response = client
        .get(format!("{url}/api/v1/clusters/{pin}/keys/k"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(post_key(&client, url, &pin, "j", "1").await, 503);
    wait_health(&client, url, 503, Duration::from_secs(10)).await;
    pg.start_again();
    wait_health(&client, url, 200, Duration::from_secs(30)).await;
    let (status, body) = get_text(&client, &format!("{url}/api/v1/clusters/{pin}/keys/k")).await;
    assert_eq!((status, value(&body)), (200, "1"));
    // The refused write left nothing.
    let (status, _) = get_text(&client, &format!("{url}/api/v1/clusters/{pin}/keys/j")).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_started_before_its_database_comes_ready_when_it_is() {
    let mut pg = Postgres::start();
    pg.stop();
    let servers = replicas(&pg, 1);
    let url = &servers[0].url;
    let client = client();
    wait_health(&client, url, 503, Duration::from_secs(10)).await;
    assert_eq!(
        client
            .post(format!("{url}/api/v1/clusters"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    pg.start_again();
    wait_health(&client, url, 200, Duration::from_secs(30)).await;
    let (pin, _) = create_cluster(&client, url).await;
    assert_eq!(post_key(&client, url, &pin, "k", "1").await, 201);
    assert!(
        pg.psql("SELECT version FROM schema_version")
            .stdout
            .starts_with(b"1"),
        "the schema was created when the database came up"
    );
}
