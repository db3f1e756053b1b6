//! The durable store: acknowledged writes survive a restart and a `kill -9` of a real
//! `clusterctx serve`; unusable store files are refused at start with a reason; SIGTERM drains.

use crate::support::server as server_support;

use std::time::{Duration, Instant};

use clusterctx::{
    protocol::{ClusterInfo, KeyItem},
    server::{self, Config},
};
use server_support::{
    create_cluster, delete_with_token, get_json, get_text, post_key, ServeProcess,
};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn everything_survives_a_restart_on_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        db: Some(dir.path().join("state/pins.sqlite3")),
        ..Config::default()
    };
    let first = server::spawn(config.clone()).await.unwrap();
    let url = first.url();
    let (pin, token) = create_cluster(&client(), &url).await;
    let info: ClusterInfo = get_json(&client(), &format!("{url}/api/v1/clusters/{pin}")).await;
    assert_eq!(
        post_key(&client(), &url, &pin, "master_ip", "10.0.0.1").await,
        201
    );
    assert_eq!(post_key(&client(), &url, &pin, "other", "x").await, 201);
    assert_eq!(post_key(&client(), &url, &pin, "gone", "y").await, 201);
    let replaced = client()
        .put(format!("{url}/api/v1/clusters/{pin}/keys/other"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"key": "other", "value": "z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    let gone = format!("{url}/api/v1/clusters/{pin}/keys/gone");
    assert_eq!(delete_with_token(&client(), &gone, &token).await, 204);
    let (doomed, doomed_token) = create_cluster(&client(), &url).await;
    let doomed_url = format!("{url}/api/v1/clusters/{doomed}");
    assert_eq!(
        delete_with_token(&client(), &doomed_url, &doomed_token).await,
        204
    );
    first.shutdown().await;

    let second = server::spawn(config).await.unwrap();
    let url = second.url();
    let shown: ClusterInfo = get_json(&client(), &format!("{url}/api/v1/clusters/{pin}")).await;
    assert_eq!(shown, info, "same creation and expiry times");
    let listed: Vec<KeyItem> =
        get_json(&client(), &format!("{url}/api/v1/clusters/{pin}/keys")).await;
    assert_eq!(
        listed,
        vec![
            KeyItem {
                key: "master_ip".into(),
                value: "10.0.0.1".into()
            },
            KeyItem {
                key: "other".into(),
                value: "z".into()
            },
        ]
    );
    assert_eq!(
        get_text(&client(), &format!("{url}/api/v1/clusters/{doomed}"))
            .await
            .0,
        404,
        "deleted stays deleted"
    );
    // The token still works after the restart (only its digest was stored), others do not.
    let other = format!("{url}/api/v1/clusters/{pin}/keys/other");
    assert_eq!(
        delete_with_token(&client(), &other, &doomed_token).await,
        403
    );
    assert_eq!(delete_with_token(&client(), &other, &token).await, 204);
    // Uniqueness holds across the restart.
    assert_eq!(
        post_key(&client(), &url, &pin, "master_ip", "10.0.0.2").await,
        409
    );
    second.shutdown().await;

    let raw = std::fs::read(dir.path().join("state/pins.sqlite3")).unwrap();
    assert!(
        !raw.windows(token.len()).any(|w| w == token.as_bytes()),
        "the admin token must not be stored in clear"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pins.sqlite3");
    let serve = ServeProcess::start(&db, &[]);
    let url = serve.url.clone();
    let (pin, _) = create_cluster(&client(), &url).await;
    // Writes acknowledged right before the kill, with no pause for any flush to happen.
    for i in 0..20 {
        assert_eq!(
            post_key(&client(), &url, &pin, &format!("k{i}"), &format!("v{i}")).await,
            201
        );
    }
    assert_eq!(
        post_key(&client(), &url, &pin, "master_ip", "10.9.8.7").await,
        201
    );
    serve.kill_9();

    let serve = ServeProcess::start(&db, &[]);
    let (status, body) = get_text(
        &client(),
        &format!("{}/api/v1/clusters/{pin}/keys/master_ip", serve.url),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "master_ip: 10.9.8.7"));
    let listed: Vec<KeyItem> = get_json(
        &client(),
        &format!("{}/api/v1/clusters/{pin}/keys", serve.url),
    )
    .await;
    assert_eq!(listed.len(), 21);
    serve.kill_9();
}

/// Group commit: many writes in flight share a commit, and each 201 still means on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_201_of_concurrent_writes_survives_kill_9_in_the_middle_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pins.sqlite3");
    let serve = ServeProcess::start(&db, &["--create-burst", "0"]);
    let url = serve.url.clone();
    let mut pins = Vec::new();
    for _ in 0..8 {
        pins.push(create_cluster(&client(), &url).await.0);
    }
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for task in 0..16 {
        let (url, pin, acknowledged) = (url.clone(), pins[task % 8].clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            let client = client();
            for i in 0..200 {
                let key = format!("t{task}k{i}");
                match client
                    .post(format!("{url}/api/v1/clusters/{pin}/keys"))
                    .json(&serde_json::json!({"key": key, "value": "v"}))
                    .send()
                    .await
                {
                    Ok(response) if response.status() == 201 => {
                        acknowledged.lock().unwrap().push((pin.clone(), key));
                    }
                    Ok(response) => panic!("{key}: {}", response.status()),
                    // The kill.
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill while the writers are busy: after 500 acknowledgements, or 20 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acknowledged.lock().unwrap().len() < 500 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    serve.kill_9();
    let mut finished = 0;
    for writer in writers {
        writer.await.unwrap();
        finished += 1;
    }
    assert_eq!(finished, 16);
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert!(
        acknowledged.len() >= 100,
        "only {} writes were acknowledged before the kill",
        acknowledged.len()
    );

    let serve = ServeProcess::start(&db, &[]);
    let mut stored = std::collections::HashSet::new();
    for pin in &pins {
        let listed: Vec<KeyItem> = get_json(
            &client(),
            &format!("{}/api/v1/clusters/{pin}/keys", serve.url),
        )
        .await;
        stored.extend(listed.into_iter().map(|item| (pin.clone(), item.key)));
    }
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|entry| !stored.contains(*entry))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    serve.kill_9();
}

#[test]
fn unusable_store_files_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.sqlite3");
    std::fs::write(&garbage, vec![0x5a; 16384]).unwrap();
    let not_writable = dir.path().join("a-file");
    std::fs::write(&not_writable, "").unwrap();
    let cases = [
        (garbage, "not a SQLite database"),
        // The parent "directory" is a file.
        (
            not_writable.join("pins.sqlite3"),
            "cannot create the directory",
        ),
    ];
    for (db, reason) in cases {
        let started = Instant::now();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_clusterctx"))
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{db:?} was accepted");
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("error:"), "{stderr}");
        assert!(stderr.contains(reason), "{db:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

#[tokio::test]
async fn a_second_server_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pins.sqlite3");
    let first = ServeProcess::start(&db, &[]);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_clusterctx"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env_remove("JOURNAL_STREAM")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("another clusterctx serve"), "{stderr}");
    // The first one is unharmed.
    assert_eq!(
        get_text(&client(), &format!("{}/healthz", first.url))
            .await
            .0,
        200
    );
    first.kill_9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_waiters_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pins.sqlite3");
    let mut serve = ServeProcess::start(&db, &[]);
    let url = serve.url.clone();
    let (pin, _) = create_cluster(&client(), &url).await;
    let waiter = tokio::spawn({
        let url = format!("{url}/api/v1/clusters/{pin}/keys/master_ip?wait=60");
        async move { client().get(url).send().await.unwrap().status().as_u16() }
    });
    // Wait until the long-poll is parked.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = get_text(&client(), &format!("{url}/metrics")).await.1;
        if metrics.contains("\nclusterctx_longpoll_waiters 1\n") {
            break;
        }
        assert!(Instant::now() < deadline, "the waiter never parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    serve.signal(libc::SIGTERM);
    assert_eq!(waiter.await.unwrap(), 503);
    let status = serve.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let log = serve.stderr_rest.recv().unwrap();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(!log.contains(&pin), "the log holds a whole PIN:\n{log}");

    // And the data is there for the next start.
    let serve = ServeProcess::start(&db, &[]);
    assert_eq!(
        get_text(&client(), &format!("{}/api/v1/clusters/{pin}", serve.url))
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("made/by/serve/pins.sqlite3");
    let existing_mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
    let serve = ServeProcess::start_with_umask("000", &db, &[]);
    // A write, so that the WAL holds something and the shared memory index exists.
    let (pin, _) = create_cluster(&client(), &serve.url).await;
    assert_eq!(post_key(&client(), &serve.url, &pin, "k", "v").await, 201);
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    for file in ["pins.sqlite3", "pins.sqlite3-wal"] {
        let path = db.with_file_name(file);
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    // In exclusive locking mode SQLite keeps the WAL index in memory; if a `-shm` file
    // appears one day, it must be private too.
    let shm = db.with_file_name("pins.sqlite3-shm");
    assert!(!shm.exists() || mode(&shm) == 0o600, "{}", shm.display());
    for created in ["made", "made/by", "made/by/serve"] {
        let path = dir.path().join(created);
        assert_eq!(mode(&path), 0o700, "{}", path.display());
    }
    // A directory that existed is the operator's: left as it was.
    assert_eq!(
        std::fs::metadata(dir.path()).unwrap().permissions().mode(),
        existing_mode
    );
    serve.kill_9();
}

#[tokio::test]
async fn zero_lifetimes_and_time_limits_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    for option in ["--ttl", "--request-timeout", "--sweep-interval"] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_clusterctx"))
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(dir.path().join("pins.sqlite3"))
            .args([option, "0s"])
            .env_remove("JOURNAL_STREAM")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{option}: {stderr}");
        assert!(
            stderr.contains(option) && stderr.contains("must be longer than zero"),
            "{option}: {stderr}"
        );
    }
    assert!(
        !dir.path().join("pins.sqlite3").exists(),
        "refused before the store is touched"
    );
    // The same rule for a configuration made in code.
    let err = server::spawn(Config {
        ttl: Duration::ZERO,
        ..Config::default()
    })
    .await
    .err()
    .expect("a zero TTL");
    assert!(format!("{err:#}").contains("--ttl"), "{err:#}");
}
