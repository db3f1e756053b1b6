//! What bounds the service: the per-client creation limit (429), the caps on what the whole
//! store holds (507), and a full disk, which makes it read-only until space returns, across a
//! restart of a real `clusterctx serve`.

use crate::support::{disk::SmallDisk, server as server_support};

use std::{
    future::Future,
    net::IpAddr,
    time::{Duration, Instant},
};

use clusterctx::{
    protocol::ErrorBody,
    server::{self, Config, ManualClock},
};
use server_support::{create_cluster, delete_with_token, get_text, post_key, ServeProcess};

/// A client whose connections leave from `source`, a loopback address of its own.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn client() -> reqwest::Client {
    client_from("127.0.0.1")
}

/// Waits, up to `limit`, until `condition` holds; panics with `what` otherwise.
async fn wait_until<F: Future<Output = bool>>(
    limit: Duration,
    what: &str,
    condition: impl Fn() -> F,
) {
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of an unlabelled metric.
async fn metric(url: &str, name: &str) -> u64 {
    let (status, text) = get_text(&client(), &format!("{url}/metrics")).await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// POSTs a cluster; returns the status and the body.
async fn try_create(
    client: &reqwest::Client,
    url: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let response = client
        .post(format!("{url}/api/v1/clusters"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body)
        .unwrap_or_else(|err| panic!("not an error body ({err}): {body}"))
        .error
}

#[tokio::test]
async fn a_creation_flood_is_limited_for_the_flooder_only() {
    // The defaults: what a CI system making a cluster a minute lives with.
    let config = Config::default();
    let burst = config.create_burst;
    let server = server::spawn(config).await.unwrap();
    let url = server.url();
    let flooder = client_from("127.0.0.2");

    let (own_pin, _) = create_cluster(&flooder, &url).await;
    let mut created = 1;
    let refused = loop {
        let (status, headers, body) = try_create(&flooder, &url).await;
        match status {
            201 => created += 1,
            429 => break (headers, body),
            other => panic!("creation answered {other}: {body}"),
        }
        assert!(created <= 2 * burst, "{created} creations and no 429");
    };
    // The burst, and at most one more refilled while it ran (one every 10 s).
    assert!((burst..=burst + 1).contains(&created), "{created} created");
    let retry_after: u64 = refused.0["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "Retry-After {retry_after}");
    let message = error_of(&refused.1);
    assert!(message.contains("too many PINs created"), "{message}");
    assert_eq!(try_create(&flooder, &url).await.0, 429);

    // Another client creates as ever.
    let (other_pin, _) = create_cluster(&client_from("127.0.0.3"), &url).await;
    assert_eq!(post_key(&client(), &url, &other_pin, "k", "v").await, 201);
    // The flooder's own PIN still takes keys and answers reads, from the flooder's address.
    assert_eq!(
        post_key(&flooder, &url, &own_pin, "master_ip", "10.0.0.1").await,
        201
    );
    let (status, body) = get_text(
        &flooder,
        &format!("{url}/api/v1/clusters/{own_pin}/keys/master_ip"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "master_ip: 10.0.0.1"));
    assert_eq!(metric(&url, "clusterctx_creations_limited_total").await, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn storage_caps_refuse_with_507_until_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    // A cluster row is its 12-character PIN and 48 bytes; a key row its PIN, name and value.
    let config = Config {
        db: Some(dir.path().join("pins.sqlite3")),
        max_clusters: 2,
        max_stored_bytes: 2 * 60 + 200,
        ttl: Duration::from_secs(3600),
        tombstone_for: Duration::ZERO,
        sweep_interval: Duration::from_millis(20),
        clock: clock.clock(),
        ..Config::default()
    };
    let server = server::spawn(config.clone()).await.unwrap();
    let url = server.url();
    let (a, _) = create_cluster(&client(), &url).await;
    let (b, b_token) = create_cluster(&client(), &url).await;
    let (status, headers, body) = try_create(&client(), &url).await;
    assert_eq!(status, 507, "{body}");
    assert!(headers.contains_key("retry-after"));
    let message = error_of(&body);
    assert!(
        message.contains("maximum of 2 clusters") && message.contains("nothing was written"),
        "{message}"
    );
    let b_url = format!("{url}/api/v1/clusters/{b}");
    assert_eq!(delete_with_token(&client(), &b_url, &b_token).await, 204);
    let (b, _) = create_cluster(&client(), &url).await;

    // 120 bytes of clusters; this key takes 12 + 1 + 150 = 163 of the 200 left.
    let long = "x".repeat(150);
    assert_eq!(post_key(&client(), &url, &a, "k", &long).await, 201);
    let too_much = client()
        .post(format!("{url}/api/v1/clusters/{b}/keys"))
        .json(&serde_json::json!({"key": "j", "value": "y".repeat(30)}))
        .send()
        .await
        .unwrap();
    assert_eq!(too_much.status(), 507);
    let message = too_much.json::<ErrorBody>().await.unwrap().error;
    assert!(message.contains("maximum of 320 bytes"), "{message}");
    assert_eq!(metric(&url, "clusterctx_stored_clusters").await, 2);
    assert_eq!(metric(&url, "clusterctx_stored_bytes").await, 120 + 163);
    server.shutdown().await;

    // The same counts, and the same caps, after a restart on the same file.
    let server = server::spawn(config).await.unwrap();
    let url = server.url();
    assert_eq!(metric(&url, "clusterctx_stored_clusters").await, 2);
    assert_eq!(metric(&url, "clusterctx_stored_bytes").await, 120 + 163);
    assert_eq!(try_create(&client(), &url).await.0, 507);
    assert_eq!(
        post_key(&client(), &url, &b, "j", &"y".repeat(30)).await,
        507
    );
    let (_, text) = get_text(&client(), &format!("{url}/metrics")).await;
    assert!(
        text.contains("\nclusterctx_storage_cap_refusals_total{cap=\"clusters\"} 1\n")
            && text.contains("\nclusterctx_storage_cap_refusals_total{cap=\"bytes\"} 1\n"),
        "{text}"
    );
    assert_eq!(post_key(&client(), &url, &b, "j", "small").await, 201);

    // Expiry and the sweep free everything: both caps admit again.
    clock.advance(Duration::from_secs(3600));
    wait_until(
        Duration::from_secs(10),
        "the sweep forgets both clusters",
        || {
            let url = url.clone();
            async move { metric(&url, "clusterctx_stored_clusters").await == 0 }
        },
    )
    .await;
    assert_eq!(metric(&url, "clusterctx_stored_bytes").await, 0);
    let (c, _) = create_cluster(&client(), &url).await;
    assert_eq!(post_key(&client(), &url, &c, "k", &long).await, 201);
    server.shutdown().await;
}

#[tokio::test]
async fn a_full_disk_makes_the_service_read_only_until_space_returns() {
    let Some(disk) = SmallDisk::mount("1m") else {
        return;
    };
    let db = disk.path().join("pins.sqlite3");
    let mut serve = ServeProcess::start(&db, &[]);
    let (pin, _) = create_cluster(&client(), &serve.url).await;
    assert_eq!(
        post_key(&client(), &serve.url, &pin, "master_ip", "10.0.0.1").await,
        201
    );

    // While running: the disk fills, writes are refused, space returns, writes are taken.
    let filler = disk.fill("filler");
    let mut written = 0;
    while post_key(&client(), &serve.url, &pin, &format!("k{written}"), "v").await == 201 {
        written += 1;
        assert!(written < 100, "{written} writes taken on a full disk");
    }
    assert_eq!(metric(&serve.url, "clusterctx_store_read_only").await, 1);
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        post_key(&client(), &serve.url, &pin, "after", "v").await,
        201
    );
    assert_eq!(metric(&serve.url, "clusterctx_store_read_only").await, 0);
    serve.signal(libc::SIGTERM);
    assert!(serve.wait_exit(Duration::from_secs(10)).success());
    let log = serve.stderr_rest.recv().unwrap();
    assert_eq!(log.matches("serving reads only").count(), 1, "{log}");
    assert_eq!(log.matches("takes writes again").count(), 1, "{log}");
    drop(serve);

    // A restart on a full disk: it starts, and serves what it has.
    let filler = disk.fill("filler");
    let mut serve = ServeProcess::start(&db, &[]);
    assert!(
        serve.stderr_start.contains("serving reads only"),
        "{}",
        serve.stderr_start
    );
    let key_url = format!("{}/api/v1/clusters/{pin}/keys/master_ip", serve.url);
    let (status, body) = get_text(&client(), &key_url).await;
    assert_eq!((status, body.as_str()), (200, "master_ip: 10.0.0.1"));
    let refused = client()
        .post(format!("{}/api/v1/clusters/{pin}/keys", serve.url))
        .json(&serde_json::json!({"key": "late", "value": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 507);
    let message = refused.json::<ErrorBody>().await.unwrap().error;
    assert!(message.contains("disk is full"), "{message}");
    assert_eq!(try_create(&client(), &serve.url).await.0, 507);
    assert_eq!(metric(&serve.url, "clusterctx_store_read_only").await, 1);

    // Space returns: writes are taken again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        post_key(&client(), &serve.url, &pin, "late", "x").await,
        201
    );
    assert_eq!(metric(&serve.url, "clusterctx_store_read_only").await, 0);
    create_cluster(&client(), &serve.url).await;
    serve.signal(libc::SIGTERM);
    assert!(serve.wait_exit(Duration::from_secs(10)).success());
    let log = serve.stderr_rest.recv().unwrap();
    assert_eq!(log.matches("serving reads only").count(), 0, "{log}");
    assert_eq!(log.matches("takes writes again").count(), 1, "{log}");
}
