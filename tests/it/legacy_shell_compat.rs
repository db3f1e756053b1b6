//! A legacy shell agent (curl, the same headers, the same `sed`/`awk` parsing of
//! `master_ip: <ip>`) against our service, unchanged: PROTOCOL.md part 1.

use std::{path::PathBuf, process::Command, time::Duration};

use clusterctx::{
    protocol::ClusterInfo,
    server::{self, Config},
};

fn curl_available() {
    match Command::new("curl").arg("--version").output() {
        Ok(output) if output.status.success() => {}
        _ => panic!(
            "the legacy compatibility test drives the service with the curl binary, which is \
             missing: install it (apt-get install curl)"
        ),
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/legacy_shell_agent.sh")
}

/// Runs a shell pipeline with `$URL` and `$PIN` set; returns its stdout.
fn sh(url: &str, pin: &str, command: &str) -> String {
    let output = Command::new("bash")
        .args(["-c", command])
        .env("URL", url)
        .env("PIN", pin)
        .output()
        .expect("bash");
    assert!(
        output.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A new PIN, also from `--emulate-legacy` (which gives no admin token).
async fn new_pin(url: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{url}/api/v1/clusters"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<ClusterInfo>().await.unwrap().pin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_curl_calls_work_unchanged() {
    curl_available();
    let dir = tempfile::tempdir().unwrap();
    let server = server::spawn(Config {
        db: Some(dir.path().join("pins.sqlite3")),
        ..Config::default()
    })
    .await
    .unwrap();
    let url = server.url();
    let pin = new_pin(&url).await;

    let url2 = url.clone();
    let pin2 = pin.clone();
    let results = tokio::task::spawn_blocking(move || {
        let (url, pin) = (url2, pin2);
        // A worker that asks before the master published gets 404 with an empty body.
        let early = sh(&url, &pin, "curl -s $URL/api/v1/clusters/$PIN/keys/master_ip");
        let early_code = sh(
            &url,
            &pin,
            "curl -s -o /dev/null -w '%{http_code}' $URL/api/v1/clusters/$PIN/keys/master_ip",
        );
        // The master's exact call.
        let post = sh(
            &url,
            &pin,
            r#"curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d '{"key": "master_ip", "value": "10.1.2.3"}' $URL/api/v1/clusters/$PIN/keys"#,
        );
        let again = sh(
            &url,
            &pin,
            r#"curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d '{"key": "master_ip", "value": "10.1.2.3"}' $URL/api/v1/clusters/$PIN/keys"#,
        );
        // The worker's call and the two parsings legacy scripts used.
        let raw = sh(&url, &pin, "curl -s $URL/api/v1/clusters/$PIN/keys/master_ip");
        let by_sed = sh(
            &url,
            &pin,
            "curl -s $URL/api/v1/clusters/$PIN/keys/master_ip | sed 's/^master_ip: //'",
        );
        let by_awk = sh(
            &url,
            &pin,
            "curl -s $URL/api/v1/clusters/$PIN/keys/master_ip | awk '{print $2}'",
        );
        let in_subst = sh(
            &url,
            &pin,
            "IP=$(curl -s $URL/api/v1/clusters/$PIN/keys/master_ip | sed 's/^master_ip: //'); \
             echo 'server ###MASTER_IP_PLACEHOLDER###' | sed \"s/###MASTER_IP_PLACEHOLDER###/$IP/\"",
        );
        (early, early_code, post, again, raw, by_sed, by_awk, in_subst)
    })
    .await
    .unwrap();
    let (early, early_code, post, again, raw, by_sed, by_awk, in_subst) = results;
    assert_eq!(early, "", "a legacy 404 has an empty body");
    assert_eq!(early_code, "404");
    assert_eq!(post, "201");
    assert_eq!(again, "409");
    assert_eq!(raw, "master_ip: 10.1.2.3");
    assert_eq!(by_sed.trim_end(), "10.1.2.3");
    assert_eq!(by_awk.trim_end(), "10.1.2.3");
    assert_eq!(in_subst, "server 10.1.2.3\n");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_master_and_worker_scripts_pair_up() {
    let master = format!(
        "bash {} master \"$URL\" \"$PIN\" 10.1.2.3",
        script().display()
    );
    pair_up(Config::default(), &master).await;
}

/// The legacy service trimmed values, and legacy workers rely on it: a stray space would end
/// up in their files (or make their `sed` and `awk` parsings disagree).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_value_with_surrounding_whitespace_reaches_legacy_workers_trimmed() {
    for emulate_legacy in [false, true] {
        let config = Config {
            emulate_legacy,
            ..Config::default()
        };
        // The legacy master's exact calls, with the address as a sloppy `ifconfig` parsing
        // leaves it (the script's word splitting would drop the spaces).
        let master = format!(
            "{} && {}",
            legacy_post(r#"{"key": "master_ip", "value": " 10.1.2.3 \n"}"#),
            legacy_post(r#"{"key": "master_ready", "value": "yes"}"#)
        );
        pair_up(config, &master).await;
    }
}

/// The legacy master's POST of `body` as a shell command, failing unless the answer is 201.
fn legacy_post(body: &str) -> String {
    format!(
        r#"test "$(curl -s -o /dev/null -w '%{{http_code}}' -X POST -H 'Content-Type: application/json' -d '{body}' $URL/api/v1/clusters/$PIN/keys)" = 201"#
    )
}

/// A legacy worker that started first, and `master` (a shell command with `$URL` and `$PIN`
/// set) publishing 10.1.2.3 for it: the worker's file must get exactly that address.
async fn pair_up(config: Config, master: &str) {
    curl_available();
    let dir = tempfile::tempdir().unwrap();
    let server = server::spawn(config).await.unwrap();
    let url = server.url();
    let pin = new_pin(&url).await;
    let context = dir.path().join("user-data");
    std::fs::write(
        &context,
        "[amiconfig]\nplugins=cernvm\n[cernvm]\nmaster=###MASTER_IP_PLACEHOLDER###\n\
         condor_host=###MASTER_IP_PLACEHOLDER###:9618\n",
    )
    .unwrap();

    // The worker starts first and polls (404s) until the master has published.
    let worker = tokio::process::Command::new("bash")
        .arg(script())
        .args(["worker", &url, &pin])
        .arg(&context)
        .output();
    let worker = tokio::spawn(worker);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let master = tokio::process::Command::new("bash")
        .args(["-c", master])
        .env("URL", &url)
        .env("PIN", &pin)
        .output()
        .await
        .unwrap();
    assert!(
        master.status.success(),
        "master: {}",
        String::from_utf8_lossy(&master.stderr)
    );
    let worker = worker.await.unwrap().unwrap();
    assert!(
        worker.status.success(),
        "worker: {}",
        String::from_utf8_lossy(&worker.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&context).unwrap(),
        "[amiconfig]\nplugins=cernvm\n[cernvm]\nmaster=10.1.2.3\ncondor_host=10.1.2.3:9618\n"
    );
    server.shutdown().await;
}
