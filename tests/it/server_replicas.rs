//! Several `clusterctx serve` processes on one throw-away PostgreSQL server: exactly one 201
//! across replicas, wakeups across them, a replica killed, the database restarted or down, a
//! replica started before its database.

use std::time::{Duration, Instant};

use crate::support::{
    postgres::Postgres,
    server::{create_cluster, delete_with_token, get_text, post_key, ServeProcess},
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

/// One counter or gauge of `url`'s /metrics (0 if absent).
async fn metric(client: &reqwest::Client, url: &str, name: &str) -> u64 {
    let (_, text) = get_text(client, &format!("{url}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Parked long-polls on `url`, read from its /metrics.
async fn parked(client: &reqwest::Client, url: &str) -> u64 {
    metric(client, url, "clusterctx_longpoll_waiters").await
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
async fn the_waiters_of_a_key_on_a_replica_share_one_read_per_wake() {
    let pg = Postgres::start();
    let servers = replicas(&pg, 2);
    let client = client();
    for server in &servers {
        wait_health(&client, &server.url, 200, Duration::from_secs(20)).await;
    }
    let (pin, token) = create_cluster(&client, &servers[0].url).await;
    const EACH: usize = 20;
    let mut waiting = Vec::new();
    for i in 0..2 * EACH {
        waiting.push(park(&client, &servers[i % 2].url, &pin, "master_ip", 30));
    }
    for server in &servers {
        wait_parked(&client, &server.url, EACH as u64).await;
    }
    // Written on replica 0: its own waiters are woken from the write, replica 1's by NOTIFY.
    assert_eq!(
        post_key(&client, &servers[0].url, &pin, "master_ip", "10.0.0.9").await,
        201
    );
    for waiter in waiting {
        let (status, body, _) = waiter.await.unwrap();
        assert_eq!((status, value(&body)), (200, "10.0.0.9"));
    }
    for server in &servers {
        assert_eq!(
            metric(&client, &server.url, "clusterctx_longpoll_wakeups_total").await,
            EACH as u64
        );
        assert_eq!(
            metric(&client, &server.url, "clusterctx_longpoll_rereads_total").await,
            1,
            "{EACH} woken waiters on {} made one store read",
            server.url
        );
    }
    // Deleting the cluster: every waiter of the PIN, on either replica, learns it from the
    // shared read (404), not from a read of its own.
    let mut waiting = Vec::new();
    for i in 0..2 * EACH {
        waiting.push(park(&client, &servers[i % 2].url, &pin, "worker_ip", 30));
    }
    for server in &servers {
        wait_parked(&client, &server.url, EACH as u64).await;
    }
    let cluster = format!("{}/api/v1/clusters/{pin}", servers[1].url);
    assert_eq!(delete_with_token(&client, &cluster, &token).await, 204);
    for waiter in waiting {
        assert_eq!(waiter.await.unwrap().0, 404);
    }
    for server in &servers {
        assert_eq!(
            metric(&client, &server.url, "clusterctx_longpoll_rereads_total").await,
            2
        );
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_hold_across_replicas_under_concurrent_writes() {
    let pg = Postgres::start();
    let url = pg.url();
    let servers: Vec<ServeProcess> = (0..3)
        .map(|_| {
            ServeProcess::start(
                std::path::Path::new(&url),
                &[
                    "--create-burst",
                    "0",
                    "--max-clusters",
                    "5",
                    "--max-keys",
                    "3",
                ],
            )
        })
        .collect();
    let client = client();
    // Clusters: 12 concurrent creates over three replicas, room for 5.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (client, url) = (client.clone(), servers[i % 3].url.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{url}/api/v1/clusters"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [201; 5].into_iter().chain([507; 7]).collect::<Vec<_>>()
    );
    // Keys of one cluster: 9 different keys at once, room for 3. The cluster cap is full,
    // so the cluster comes from the database.
    let pin = String::from_utf8(pg.psql("SELECT pin FROM clusters LIMIT 1").stdout).unwrap();
    let pin = pin.trim().to_string();
    let mut tasks = Vec::new();
    for i in 0..9 {
        let (client, url, pin) = (client.clone(), servers[i % 3].url.clone(), pin.clone());
        tasks.push(tokio::spawn(async move {
            post_key(&client, &url, &pin, &format!("k{i}"), "v").await
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [201; 3].into_iter().chain([403; 6]).collect::<Vec<_>>()
    );
    let count = pg.psql(&format!("SELECT count(*) FROM keys WHERE pin = '{pin}'"));
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "3");
    // The usage row the caps read is what the tables hold, after every refusal.
    let recount = pg.psql(
        "SELECT u.clusters = (SELECT count(*) FROM clusters) AND u.bytes =
             (SELECT sum(octet_length(pin) + 48) FROM clusters)
             + (SELECT coalesce(sum(octet_length(pin) + octet_length(key) + octet_length(value)), 0)
                FROM keys)
         FROM usage u",
    );
    assert_eq!(String::from_utf8_lossy(&recount.stdout).trim(), "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_is_verified() {
    use clusterctx::server::store::{postgres::PgStore, StoreError};
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::support::tls::make_certificate(certs.path());
    let pg = Postgres::start_tls(&cert, &key);
    let base = format!("postgres://postgres@localhost:{}/postgres", pg.port);
    // Verified against the test's CA: connects (the server takes TLS only).
    let store = PgStore::open(&format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    ))
    .unwrap();
    store.connect().await.expect("TLS with the right CA");
    // `require` verifies too: against the system's roots, which do not know the test CA.
    let store = PgStore::open(&format!("{base}?sslmode=require")).unwrap();
    let err = store.connect().await.expect_err("an unknown CA is refused");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    // And without TLS the server refuses us: the first connection did use TLS.
    let store = PgStore::open(&base).unwrap();
    assert!(store.connect().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_empties_then_forgets_expired_pins_across_replicas() {
    let pg = Postgres::start();
    let url = pg.url();
    let args = [
        "--create-burst",
        "0",
        "--ttl",
        "2s",
        "--sweep-interval",
        "200ms",
        "--tombstone-for",
        "2s",
    ];
    let servers: Vec<ServeProcess> = (0..3)
        .map(|_| ServeProcess::start(std::path::Path::new(&url), &args))
        .collect();
    let client = client();
    let (pin, _) = create_cluster(&client, &servers[0].url).await;
    let created = Instant::now();
    assert_eq!(
        post_key(&client, &servers[1].url, &pin, "k", "v").await,
        201
    );
    let sql = |q: &str| {
        String::from_utf8(pg.psql(q).stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    // Expired: 410 from every replica, then the keys are swept while the PIN stays a
    // tombstone.
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(created.elapsed())).await;
    for server in &servers {
        let (status, _) = get_text(&client, &format!("{}/api/v1/clusters/{pin}", server.url)).await;
        assert_eq!(status, 410);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while sql(&format!("SELECT count(*) FROM keys WHERE pin = '{pin}'")) != "0" {
        assert!(Instant::now() < deadline, "the keys were never swept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Forgotten after the tombstone time: 404, and the usage row counts nothing.
    let deadline = Instant::now() + Duration::from_secs(15);
    while sql("SELECT count(*) FROM clusters") != "0" {
        assert!(Instant::now() < deadline, "the PIN was never forgotten");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = get_text(
        &client,
        &format!("{}/api/v1/clusters/{pin}", servers[2].url),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(sql("SELECT clusters, bytes FROM usage"), "0|0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_replica_sweeps_while_another_holds_the_sweep_lock() {
    use clusterctx::server::store::postgres::SWEEP_LOCK;
    use std::io::{BufRead, Write};
    let pg = Postgres::start();
    let url = pg.url();
    let args = [
        "--create-burst",
        "0",
        "--ttl",
        "1s",
        "--sweep-interval",
        "100ms",
    ];
    let servers: Vec<ServeProcess> = (0..2)
        .map(|_| ServeProcess::start(std::path::Path::new(&url), &args))
        .collect();
    let client = client();
    let (pin, _) = create_cluster(&client, &servers[0].url).await;
    assert_eq!(
        post_key(&client, &servers[1].url, &pin, "k", "v").await,
        201
    );
    let keys = || {
        String::from_utf8(
            pg.psql(&format!("SELECT count(*) FROM keys WHERE pin = '{pin}'"))
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string()
    };

    // The lock held as a sweeping replica holds it, from a session of the test's own.
    let mut holder = pg.session();
    let mut stdin = holder.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(holder.stdout.take().unwrap());
    writeln!(
        stdin,
        "SELECT pg_advisory_lock({SWEEP_LOCK}); SELECT 'held';"
    )
    .unwrap();
    let mut line = String::new();
    while line.trim() != "held" {
        line.clear();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "psql ended");
    }
    // Expired after 1 s; 2 s more are 20 sweep intervals of each replica.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _) = get_text(
        &client,
        &format!("{}/api/v1/clusters/{pin}", servers[0].url),
    )
    .await;
    assert_eq!(status, 410);
    assert_eq!(keys(), "1", "a replica swept while the lock was held");

    // Released: the next replica to try sweeps.
    writeln!(stdin, "SELECT pg_advisory_unlock({SWEEP_LOCK});").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while keys() != "0" {
        assert!(Instant::now() < deadline, "the keys were never swept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stdin);
    holder.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_the_schema_once() {
    use clusterctx::server::store::postgres::{PgStore, SCHEMA_VERSION};
    let pg = Postgres::start();
    let stores: Vec<PgStore> = (0..4).map(|_| PgStore::open(&pg.url()).unwrap()).collect();
    let mut tasks = Vec::new();
    for store in stores {
        tasks.push(tokio::spawn(async move { store.connect().await }));
    }
    for task in tasks {
        task.await
            .unwrap()
            .expect("every replica finds the schema it needs");
    }
    let versions = pg.psql("SELECT version FROM schema_version");
    assert_eq!(
        String::from_utf8_lossy(&versions.stdout).trim(),
        SCHEMA_VERSION.to_string()
    );
    // A database written by a newer clusterctx is refused, not misread.
    assert!(pg
        .psql("UPDATE schema_version SET version = 99")
        .status
        .success());
    let err = PgStore::open(&pg.url())
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("newer clusterctx"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_is_never_logged() {
    let mut pg = Postgres::start();
    let secret = "pw-s3cret-not-in-logs";
    let url = format!(
        "postgres://postgres:{secret}@127.0.0.1:{}/postgres",
        pg.port
    );
    let mut serve = ServeProcess::start(std::path::Path::new(&url), &[]);
    let client = client();
    wait_health(&client, &serve.url, 200, Duration::from_secs(20)).await;
    let (pin, _) = create_cluster(&client, &serve.url).await;
    // Failures are logged with their causes: none of them may carry it either.
    pg.stop();
    assert_eq!(post_key(&client, &serve.url, &pin, "k", "v").await, 503);
    wait_health(&client, &serve.url, 503, Duration::from_secs(10)).await;
    serve.signal(libc::SIGTERM);
    serve.wait_exit(Duration::from_secs(20));
    let rest = serve.stderr_rest.recv().unwrap();
    assert!(
        serve.stderr_start.contains("postgres 127.0.0.1"),
        "{}",
        serve.stderr_start
    );
    assert!(rest.contains("store failed"), "{rest}");
    for text in [&serve.stderr_start, &rest] {
        assert!(!text.contains(secret), "{text}");
    }
}
