//! The real server on port 0, over sockets: long-poll, concurrent creates, the miss limit,
//! graceful shutdown, request time limits, the sweep and HTTPS.

use crate::support::server as server_support;
use crate::support::tls;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clusterctx::{
    protocol::{self, ErrorBody, KeyItem},
    server::{
        self,
        store::{faulty::FaultyStore, sqlite::SqliteStore, Store, StoreError},
        Config, ManualClock,
    },
};
use server_support::{create_cluster, delete_with_token, get_json, get_text, post_key};
use tls::make_certificate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap()
}

/// Waits until `n` long-polls are parked on the server.
async fn until_waiters(server: &server::Server, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.waiters() != n {
        assert!(
            Instant::now() < deadline,
            "{} waiters, not {n}",
            server.waiters()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends raw bytes on a fresh connection and reads the answer until the server closes or
/// `limit` passes.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8], limit: Duration) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer (and stop reading) before the whole request is written.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_poll_is_woken_by_a_create_from_another_connection() {
    let server = server::spawn(Config::default()).await.unwrap();
    let url = server.url();
    let (pin, _) = create_cluster(&client(), &url).await;
    let key_url = format!("{url}/api/v1/clusters/{pin}/keys/master_ip");

    // Two waiters on their own connections: one text, one JSON.
    let text_waiter = tokio::spawn({
        let key_url = key_url.clone();
        async move {
            let response = client()
                .get(format!("{key_url}?wait=30"))
                .send()
                .await
                .unwrap();
            (
                response.status(),
                response.text().await.unwrap(),
                Instant::now(),
            )
        }
    });
    let json_waiter = tokio::spawn({
        let key_url = key_url.clone();
        async move {
            let response = client()
                .get(format!("{key_url}?wait=30"))
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<KeyItem>().await.unwrap())
        }
    });
    until_waiters(&server, 2).await;
    // Parked, not answered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!text_waiter.is_finished());

    let written = Instant::now();
    assert_eq!(
        post_key(&client(), &url, &pin, "master_ip", "10.1.2.3").await,
        201
    );
    let (status, body, answered) = text_waiter.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "master_ip: 10.1.2.3");
    assert!(
        answered.duration_since(written) < Duration::from_millis(500),
        "woken after {:?}",
        answered.duration_since(written)
    );
    let (status, item) = json_waiter.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(item.value, "10.1.2.3");
    assert_eq!(server.waiters(), 0);

    // A key that exists answers at once even with a wait.
    let started = Instant::now();
    let again = client()
        .get(format!("{key_url}?wait=60"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    server.shutdown().await;
}

#[tokio::test]
async fn long_poll_times_out_to_404() {
    let server = server::spawn(Config::default()).await.unwrap();
    let url = server.url();
    let (pin, _) = create_cluster(&client(), &url).await;
    let key_url = format!("{url}/api/v1/clusters/{pin}/keys/master_ip?wait=1");

    let started = Instant::now();
    let response = client().get(&key_url).send().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 404);
    assert_eq!(response.text().await.unwrap(), "", "text-mode 404 is empty");
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
    let json = client()
        .get(&key_url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 404);
    assert!(json
        .json::<ErrorBody>()
        .await
        .unwrap()
        .error
        .contains("no such key"));
    assert_eq!(server.waiters(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn long_poll_on_unknown_or_expiring_pins_does_not_wait() {
    let server = server::spawn(Config {
        ttl: Duration::from_millis(1500),
        ..Config::default()
    })
    .await
    .unwrap();
    let url = server.url();

    let started = Instant::now();
    let unknown = client()
        .get(format!(
            "{url}/api/v1/clusters/aaaaaaaaaaaa/keys/master_ip?wait=30"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // "At once" against a 30 s wait: the margin is for a loaded machine, not a benchmark.
    assert!(started.elapsed() < Duration::from_secs(10));

    // The PIN expires during the wait: 410 at the moment of expiry, not after 30 s. Timed from
    // before the create: the PIN lives 1.5 s from a moment after that.
    let before_create = Instant::now();
    let (pin, _) = create_cluster(&client(), &url).await;
    let expiring = client()
        .get(format!(
            "{url}/api/v1/clusters/{pin}/keys/master_ip?wait=30"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(expiring.status(), 410);
    let elapsed = before_create.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_secs(10),
        "answered {elapsed:?} after the create began"
    );

    // Already expired: at once.
    let started = Instant::now();
    let expired = client()
        .get(format!(
            "{url}/api/v1/clusters/{pin}/keys/master_ip?wait=30"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 410);
    assert!(started.elapsed() < Duration::from_secs(10));
    server.shutdown().await;
}

#[tokio::test]
async fn deleting_the_cluster_releases_its_waiters() {
    let server = server::spawn(Config::default()).await.unwrap();
    let url = server.url();
    let (pin, token) = create_cluster(&client(), &url).await;
    let waiter = tokio::spawn({
        let url = format!("{url}/api/v1/clusters/{pin}/keys/master_ip?wait=30");
        async move { client().get(url).send().await.unwrap().status() }
    });
    until_waiters(&server, 1).await;
    let started = Instant::now();
    let cluster = format!("{url}/api/v1/clusters/{pin}");
    assert_eq!(delete_with_token(&client(), &cluster, &token).await, 204);
    assert_eq!(waiter.await.unwrap(), 404);
    assert!(started.elapsed() < Duration::from_secs(1));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_200_concurrent_creates_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let server = server::spawn(Config {
        db: Some(dir.path().join("pins.sqlite3")),
        ..Config::default()
    })
    .await
    .unwrap();
    let url = server.url();
    let (pin, _) = create_cluster(&client(), &url).await;

    // 200 requests in flight at once on one HTTP/1.1 client: 200 separate connections
    // (a connection carries one request at a time), all released together.
    let shared = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (url, pin, start, client) = (url.clone(), pin.clone(), start.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let value = format!("10.0.{}.{}", i / 256, i % 256);
            (
                post_key(&client, &url, &pin, "master_ip", &value).await,
                value,
            )
        }));
    }
    let mut created = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            (201, value) => created.push(value),
            (409, _) => conflicts += 1,
            (status, _) => panic!("unexpected status {status}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one 201");
    assert_eq!(conflicts, 199);
    let (_, stored) = get_text(
        &client(),
        &format!("{url}/api/v1/clusters/{pin}/keys/master_ip"),
    )
    .await;
    assert_eq!(stored, format!("master_ip: {}", created[0]));
    let listed: Vec<KeyItem> =
        get_json(&client(), &format!("{url}/api/v1/clusters/{pin}/keys")).await;
    assert_eq!(listed.len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn misses_on_unknown_pins_are_limited_per_client() {
    let server = server::spawn(Config {
        miss_burst: 5,
        miss_per_sec: 0.2,
        client_ip_header: Some("x-forwarded-for".parse().unwrap()),
        ..Config::default()
    })
    .await
    .unwrap();
    let url = server.url();
    let (pin, _) = create_cluster(&client(), &url).await;
    let miss = |client_ip: &'static str| {
        let url = format!("{url}/api/v1/clusters/zzzzzzzzzzzz/keys/master_ip");
        async move {
            client()
                .get(url)
                .header("x-forwarded-for", client_ip)
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..5 {
        assert_eq!(miss("192.0.2.1").await.status(), 404);
    }
    let limited = miss("192.0.2.1").await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    assert!(limited
        .json::<ErrorBody>()
        .await
        .unwrap()
        .error
        .contains("too many"));

    // While limited, its misses stay refused, but the PINs that exist are served: the
    // address may be a NAT that many clusters share.
    let real = client()
        .get(format!("{url}/api/v1/clusters/{pin}"))
        .header("x-forwarded-for", "192.0.2.1")
        .send()
        .await
        .unwrap();
    assert_eq!(real.status(), 200);
    assert_eq!(miss("192.0.2.1").await.status(), 429);
    // Other clients are not affected; hits never count.
    assert_eq!(miss("192.0.2.2").await.status(), 404);
    for _ in 0..20 {
        let hit = client()
            .get(format!("{url}/api/v1/clusters/{pin}"))
            .header("x-forwarded-for", "192.0.2.3")
            .send()
            .await
            .unwrap();
        assert_eq!(hit.status(), 200);
    }
    // Creating clusters is not a miss and not limited.
    create_cluster(&client(), &url).await;
    let (_, metrics) = get_text(&client(), &format!("{url}/metrics")).await;
    assert!(
        metrics.contains("\nclusterctx_rate_limited_total 2\n"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_parked_long_polls_at_once() {
    let server = server::spawn(Config::default()).await.unwrap();
    let url = server.url();
    let (pin, _) = create_cluster(&client(), &url).await;
    let waiter = tokio::spawn({
        let url = format!("{url}/api/v1/clusters/{pin}/keys/master_ip?wait=60");
        async move {
            let response = client().get(url).send().await.unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (response.status(), retry_after, Instant::now())
        }
    });
    until_waiters(&server, 1).await;
    let started = Instant::now();
    server.shutdown().await;
    let stopped = started.elapsed();
    let (status, retry_after, answered) = waiter.await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(answered.duration_since(started) < Duration::from_secs(2));
    assert!(
        stopped < Duration::from_secs(5),
        "shutdown took {stopped:?}"
    );
    assert!(
        client().get(format!("{url}/healthz")).send().await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn slow_requests_get_408() {
    let server = server::spawn(Config {
        request_timeout: Duration::from_secs(1),
        ..Config::default()
    })
    .await
    .unwrap();
    let (pin, _) = create_cluster(&client(), &server.url()).await;
    // Announces 100 bytes of body, sends one, then stalls.
    let request = format!(
        "POST /api/v1/clusters/{pin}/keys HTTP/1.1\r\nHost: test\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    let started = Instant::now();
    let answer = raw_exchange(server.addr(), request.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    server.shutdown().await;
}

#[tokio::test]
async fn chunked_bodies_beyond_the_limit_get_413() {
    let server = server::spawn(Config {
        max_body: 4096,
        ..Config::default()
    })
    .await
    .unwrap();
    let (pin, _) = create_cluster(&client(), &server.url()).await;
    let mut request = format!(
        "POST /api/v1/clusters/{pin}/keys HTTP/1.1\r\nHost: test\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..8 {
        request.extend_from_slice(format!("3e8\r\n{}\r\n", "x".repeat(1000)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(server.addr(), &request, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than 4096 bytes"), "{answer}");
    server.shutdown().await;
}

/// Waits until the server's `/metrics` holds every line of `lines`.
async fn until_metrics(url: &str, lines: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = get_text(&client(), &format!("{url}/metrics")).await;
        if lines.iter().all(|line| text.lines().any(|l| l == *line)) {
            return text;
        }
        assert!(Instant::now() < deadline, "never got {lines:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_sweep_reclaims_expired_pins() {
    // The PINs expire on a manual clock; the sweep itself runs on its real interval.
    let clock = ManualClock::starting_now();
    let config = Config {
        ttl: Duration::from_secs(3600),
        sweep_interval: Duration::from_millis(20),
        clock: clock.clock(),
        ..Config::default()
    };
    let server = server::spawn(Config {
        tombstone_for: Duration::from_secs(3600),
        ..config.clone()
    })
    .await
    .unwrap();
    let forgetting = server::spawn(Config {
        tombstone_for: Duration::ZERO,
        ..config
    })
    .await
    .unwrap();
    let mut pins = Vec::new();
    for server in [&server, &forgetting] {
        let (pin, _) = create_cluster(&client(), &server.url()).await;
        assert_eq!(
            post_key(&client(), &server.url(), &pin, "k", "v").await,
            201
        );
        pins.push(pin);
    }
    until_metrics(
        &server.url(),
        &["clusterctx_keys 1", "clusterctx_clusters 1"],
    )
    .await;
    clock.advance(Duration::from_secs(3600));
    until_metrics(&server.url(), &["clusterctx_sweep_emptied_total 1"]).await;
    until_metrics(&forgetting.url(), &["clusterctx_sweep_forgotten_total 1"]).await;

    // Kept as a tombstone: still 410, keys reclaimed.
    let gone = client()
        .get(format!("{}/api/v1/clusters/{}", server.url(), pins[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410);
    until_metrics(
        &server.url(),
        &["clusterctx_keys 0", "clusterctx_expired_clusters 1"],
    )
    .await;
    // Forgotten: unknown.
    let unknown = client()
        .get(format!("{}/api/v1/clusters/{}", forgetting.url(), pins[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    until_metrics(&forgetting.url(), &["clusterctx_expired_clusters 0"]).await;
    server.shutdown().await;
    forgetting.shutdown().await;
}

#[tokio::test]
async fn a_zero_sweep_interval_is_refused_at_start() {
    let err = server::spawn(Config {
        sweep_interval: Duration::ZERO,
        ..Config::default()
    })
    .await
    .err()
    .expect("a zero sweep interval");
    assert!(format!("{err:#}").contains("sweep interval"), "{err:#}");
}

#[tokio::test]
async fn https_with_a_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = tls::spawn_https(dir.path()).await;
    let url = server.url();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let tls_client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let health = tls_client
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), reqwest::Version::HTTP_2, "h2 by ALPN");
    assert_eq!(
        health.headers()[protocol::SERVICE_HEADER],
        protocol::service_header_value().as_str()
    );
    let (pin, _) = create_cluster(&tls_client, &url).await;
    assert_eq!(
        post_key(&tls_client, &url, &pin, "master_ip", "10.0.0.1").await,
        201
    );

    // Plain HTTP on the TLS port gets nowhere, and the server carries on.
    assert!(client()
        .get(format!("http://{}/healthz", server.addr()))
        .send()
        .await
        .is_err());
    assert_eq!(
        tls_client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.shutdown().await;

    // A key that does not match the certificate is refused at start with a reason.
    let (_, other_cert, _) = make_certificate(&dir.path().join("other"));
    let err = server::spawn(Config {
        tls_cert: Some(other_cert),
        tls_key: Some(dir.path().join("key.pem")),
        ..Config::default()
    })
    .await
    .err()
    .expect("mismatched key and certificate");
    assert!(
        format!("{err:#}").contains("do not fit together"),
        "{err:#}"
    );
}

/// The value of one counter or gauge in `/metrics`.
async fn metric(url: &str, name: &str) -> u64 {
    let (_, text) = get_text(&client(), &format!("{url}/metrics")).await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_wakes_only_the_waiters_of_its_key() {
    let server = server::spawn(Config::default()).await.unwrap();
    let url = server.url();
    let (pin, token) = create_cluster(&client(), &url).await;
    let wait_for = |key: &str| {
        let url = format!("{url}/api/v1/clusters/{pin}/keys/{key}?wait=30");
        tokio::spawn(async move {
            let response = client().get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    };
    let on_a = wait_for("a");
    until_waiters(&server, 1).await;
    // Writes of other keys of the same PIN: the change reports are made before the 201, so
    // a wrong wake-up would be counted by now.
    for i in 0..20 {
        assert_eq!(
            post_key(&client(), &url, &pin, &format!("b{i}"), "x").await,
            201
        );
    }
    assert_eq!(metric(&url, "clusterctx_longpoll_wakeups_total").await, 0);
    assert!(!on_a.is_finished());
    assert_eq!(post_key(&client(), &url, &pin, "a", "1").await, 201);
    assert_eq!(on_a.await.unwrap(), (200, "a: 1".to_string()));
    assert_eq!(metric(&url, "clusterctx_longpoll_wakeups_total").await, 1);

    // Deleting the cluster wakes every waiter of the PIN, whatever its key.
    let waiting = [wait_for("c"), wait_for("d")];
    until_waiters(&server, 2).await;
    let cluster = format!("{url}/api/v1/clusters/{pin}");
    assert_eq!(delete_with_token(&client(), &cluster, &token).await, 204);
    for waiter in waiting {
        assert_eq!(waiter.await.unwrap().0, 404);
    }
    assert_eq!(metric(&url, "clusterctx_longpoll_wakeups_total").await, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn only_a_get_with_a_valid_wait_gets_the_long_poll_budget() {
    let server = server::spawn(Config {
        request_timeout: Duration::from_secs(1),
        ..Config::default()
    })
    .await
    .unwrap();
    let (pin, token) = create_cluster(&client(), &server.url()).await;
    assert_eq!(
        post_key(&client(), &server.url(), &pin, "master_ip", "10.0.0.1").await,
        201
    );
    // A write with `?wait=60` and a body that stalls: cut at the plain time limit.
    for method in ["PUT", "PATCH", "POST"] {
        let path = match method {
            "POST" => format!("/api/v1/clusters/{pin}/keys?wait=60"),
            _ => format!("/api/v1/clusters/{pin}/keys/master_ip?wait=60"),
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        );
        let started = Instant::now();
        let answer = raw_exchange(server.addr(), request.as_bytes(), Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{method}: {answer}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{method} held {:?}",
            started.elapsed()
        );
    }
    // A long-poll gets its wait on top of the limit: 404 after 2 s, not 408 after 1 s.
    let started = Instant::now();
    let (status, _) = get_text(
        &client(),
        &format!("{}/api/v1/clusters/{pin}/keys/absent?wait=2", server.url()),
    )
    .await;
    assert_eq!(status, 404);
    assert!(started.elapsed() >= Duration::from_millis(1900));
    server.shutdown().await;
}

#[tokio::test]
async fn store_failures_are_answered_507_and_503_with_retry_after() {
    let store = Arc::new(FaultyStore::new(Arc::new(
        SqliteStore::open_in_memory().unwrap(),
    )));
    let server = server::spawn_with(Config::default(), Arc::clone(&store) as Arc<dyn Store>)
        .await
        .unwrap();
    let url = server.url();
    let (pin, _) = create_cluster(&client(), &url).await;
    let post = || {
        client()
            .post(format!("{url}/api/v1/clusters/{pin}/keys"))
            .json(&serde_json::json!({"key": "master_ip", "value": "10.0.0.1"}))
            .send()
    };
    store.fail_writes(1, StoreError::Full);
    let full = post().await.unwrap();
    assert_eq!(full.status(), 507);
    assert_eq!(full.headers()["retry-after"], "30");
    store.fail_writes(1, StoreError::Unavailable("the database went away".into()));
    let away = post().await.unwrap();
    assert_eq!(away.status(), 503);
    assert_eq!(away.headers()["retry-after"], "30");
    store.fail_reads(1, StoreError::Unavailable("the database went away".into()));
    let (status, _) = get_text(&client(), &format!("{url}/api/v1/clusters/{pin}")).await;
    assert_eq!(status, 503);
    // Nothing was written, and the store serves again.
    let (status, _) = get_text(
        &client(),
        &format!("{url}/api/v1/clusters/{pin}/keys/master_ip"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(post().await.unwrap().status(), 201);
    server.shutdown().await;
}
