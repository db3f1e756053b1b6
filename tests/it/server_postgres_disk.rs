//! The PostgreSQL store on a full disk: its tables live in a tablespace on a small tmpfs (the
//! WAL stays on the big disk, so PostgreSQL itself keeps running), the disk fills, and the
//! service answers 507 for writes while everything acknowledged stays readable.

use std::time::Duration;

use crate::support::{
    disk::SmallDisk,
    postgres::Postgres,
    server::{create_cluster, get_text, post_key, ServeProcess},
};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tablespace_answers_507_and_keeps_what_was_acknowledged() {
    let Some(disk) = SmallDisk::mount("2m") else {
        return;
    };
    let pg = Postgres::start();
    let chown = std::process::Command::new("chown")
        .arg("postgres:")
        .arg(disk.path())
        .status()
        .unwrap();
    assert!(chown.success());
    // Every table and index the service creates goes to the small disk.
    for sql in [
        format!(
            "CREATE TABLESPACE small LOCATION '{}'",
            disk.path().display()
        ),
        "ALTER DATABASE postgres SET default_tablespace = small".to_string(),
    ] {
        let out = pg.psql(&sql);
        assert!(out.status.success(), "{sql}: {out:?}");
    }
    let serve = ServeProcess::start(std::path::Path::new(&pg.url()), &[]);
    let client = client();
    let (pin, _) = create_cluster(&client, &serve.url).await;
    assert_eq!(
        post_key(&client, &serve.url, &pin, "master_ip", "10.0.0.1").await,
        201
    );
    let tables = pg.psql(
        "SELECT count(*) FROM pg_tables WHERE tablespace = 'small' AND schemaname = 'public'",
    );
    assert_ne!(
        String::from_utf8_lossy(&tables.stdout).trim(),
        "0",
        "the service's tables are not on the small disk"
    );

    // Full: rows still fit in pages already allocated, so write until one needs a new page.
    let filler = disk.fill("filler");
    let big = "v".repeat(1000);
    let mut taken = Vec::new();
    let refused = loop {
        let key = format!("k{}", taken.len());
        match post_key(&client, &serve.url, &pin, &key, &big).await {
            201 => taken.push(key),
            status => break (key, status),
        }
        assert!(
            taken.len() < 900,
            "{} writes taken on a full disk",
            taken.len()
        );
    };
    eprintln!(
        "{} writes taken on the full disk before the first refusal",
        taken.len()
    );
    assert_eq!(refused.1, 507, "the write that needed space");
    let keys_url = format!("{}/api/v1/clusters/{pin}/keys", serve.url);
    let (status, body) = get_text(&client, &format!("{keys_url}/master_ip")).await;
    assert_eq!((status, body.as_str()), (200, "master_ip: 10.0.0.1"));
    for key in &taken {
        let (status, body) = get_text(&client, &format!("{keys_url}/{key}")).await;
        assert_eq!((status, body), (200, format!("{key}: {big}")), "{key}");
    }
    let (status, _) = get_text(&client, &format!("{keys_url}/{}", refused.0)).await;
    assert_eq!(status, 404, "a refused write left a row");

    // Space returns: writes are taken again without a restart.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        post_key(&client, &serve.url, &pin, &refused.0, &big).await,
        201
    );
    let (status, _) = get_text(&client, &format!("{keys_url}/{}", refused.0)).await;
    assert_eq!(status, 200);
}
