//! Several service URLs: the agent moves to the next URL on a transient failure, within the
//! same tries window, and stops at once on a permanent one. Against real `clusterctx serve`
//! processes, with the fault server where a fault must be scripted.

use crate::support::{
    self,
    faulty::{FaultServer, Reply},
    server::ServeProcess,
    Node, MASTER_CONTEXT, WORKER_CONTEXT,
};

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use clusterctx::{
    agent::{
        config::{Overrides, RoleRequest},
        error::code,
        AgentError,
    },
    client::retry::RetryPolicy,
    secret::Pin,
};

const BIN: &str = env!("CARGO_BIN_EXE_clusterctx");

/// A loopback URL nobody listens on: bound, then released.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn create_pin(url: &str) -> String {
    let created = Command::new(BIN)
        .args(["pin", "create", "--service", url])
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    String::from_utf8_lossy(&created.stdout).trim().to_string()
}

fn overrides(urls: &[&str], pin: &str, role: RoleRequest) -> Overrides {
    Overrides {
        pin: Some(Pin::new(pin)),
        service_url: urls.iter().map(|u| u.to_string()).collect(),
        interval: Some(Duration::from_millis(300)),
        ..support::fast("unused", role)
    }
}

#[test]
fn a_dead_first_url_still_forms_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServeProcess::start(&dir.path().join("pins.sqlite3"), &[]);
    let pin = create_pin(&service.url);
    let urls = format!("{},{}", dead_url(), service.url);
    let context = |role: &str| {
        format!(
            "[example_section]\nmy_master_ip=###MASTER_IP_PLACEHOLDER###\n\n[ucernvm-begin]\n\
             cvm_cluster_master={role}\ncvm_cluster_pin={pin}\ncvm_service_url={urls}\n\
             cvm_cluster_interval=0.2\ncvm_cluster_tries=50\n[ucernvm-end]\n"
        )
    };
    let run = |name: &str, args: &[&str]| {
        let file = dir.path().join(format!("{name}.txt"));
        if !file.exists() {
            let role = if name == "master" { "yes" } else { "no" };
            std::fs::write(&file, context(role)).unwrap();
        }
        let mut command = Command::new(BIN);
        command
            .args(args)
            .arg("--context")
            .arg(&file)
            .arg("--state-dir")
            .arg(dir.path().join(format!("{name}.state")))
            .env_remove("JOURNAL_STREAM")
            .stderr(Stdio::piped())
            .stdout(Stdio::piped());
        (file, command)
    };

    // `check` shows both URLs, in order.
    let (_, mut check) = run("master", &["check"]);
    let checked = check.output().unwrap();
    let shown = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{}", stderr(&checked));
    let first = urls.split(',').next().unwrap();
    let listed = format!("  {first}\n  {}\n", service.url);
    assert!(shown.contains(&listed), "{shown}");

    let workers: Vec<_> = ["worker0", "worker1"]
        .into_iter()
        .map(|name| {
            let (file, mut command) = run(name, &["contextualize"]);
            (file, command.spawn().unwrap())
        })
        .collect();
    let (master_file, mut master) = run("master", &["contextualize"]);
    let published = master.output().unwrap();
    assert!(published.status.success(), "{}", stderr(&published));
    let (_, mut ready) = run("master", &["master-ready"]);
    let ready = ready.output().unwrap();
    assert!(ready.status.success(), "{}", stderr(&ready));
    assert!(std::fs::read_to_string(&master_file)
        .unwrap()
        .contains("my_master_ip=127.0.0.1\n"));

    let mut logs = stderr(&published) + &stderr(&ready);
    for (file, child) in workers {
        let out = child.wait_with_output().unwrap();
        let log = stderr(&out);
        assert!(out.status.success(), "{log}");
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .contains("my_master_ip=127.0.0.1\n"));
        logs += &log;
    }
    // Each of the four processes (master-ready is one) says which URL failed and which
    // one answered.
    assert_eq!(
        logs.matches("trying the next service URL").count(),
        4,
        "{logs}"
    );
    assert_eq!(
        logs.matches(&format!("{} answered; using it from now on", service.url))
            .count(),
        4,
        "{logs}"
    );
    assert!(!logs.contains(&pin), "a log line carries the PIN:\n{logs}");
}

#[tokio::test]
async fn a_first_url_answering_503_moves_to_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServeProcess::start(&dir.path().join("pins.sqlite3"), &[]);
    let pin = create_pin(&service.url);
    let busy =
        FaultServer::start(|_, _| Reply::RetryAfter(503, r#"{"error": "restarting"}"#.into(), 1))
            .await;
    let (logs, _guard) = support::Logs::capture();
    let master = Node::new(MASTER_CONTEXT);
    support::contextualize(
        &master,
        &overrides(&[&busy.url(), &service.url], &pin, RoleRequest::Master),
    )
    .await
    .unwrap();
    assert_eq!(
        busy.requests().len(),
        1,
        "asked once, then stuck to the second"
    );
    let text = logs.text();
    assert!(text.contains("HTTP 503"), "{text}");
    // The 503 did not cost a slot: the second URL was asked within the same try (a count of
    // tries, not a timing, which a loaded machine would break).
    assert!(text.contains("(try 1/"), "{text}");
    assert!(!text.contains("(try 2/"), "a second try: {text}");
    assert!(
        text.contains(&format!("{} answered", service.url)),
        "{text}"
    );
}

#[tokio::test]
async fn a_permanent_error_on_the_first_url_does_not_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServeProcess::start(&dir.path().join("pins.sqlite3"), &[]);
    let pin = create_pin(&service.url);
    let unknown =
        FaultServer::start(|_, _| Reply::json(404, r#"{"error": "no such cluster"}"#)).await;
    let second = FaultServer::start(|_, _| Reply::json(500, "{}")).await;
    let worker = Node::new(WORKER_CONTEXT);
    let err = support::contextualize(
        &worker,
        &overrides(
            &[&unknown.url(), &second.url(), &service.url],
            &pin,
            RoleRequest::Worker,
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AgentError::PinUnknown { .. }), "{err:?}");
    assert_eq!(err.exit_code(), code::NOUSER);
    assert_eq!(unknown.requests().len(), 1);
    assert!(
        second.requests().is_empty(),
        "a 404 must not be asked again elsewhere"
    );
}

#[tokio::test]
async fn the_tries_window_bounds_the_whole_run_across_urls() {
    let first = FaultServer::start(|_, _| Reply::json(502, "{}")).await;
    let second = FaultServer::start(|_, _| Reply::Reset).await;
    let worker = Node::new(WORKER_CONTEXT);
    let settings = Overrides {
        tries: Some(4),
        ..overrides(
            &[&first.url(), &dead_url(), &second.url()],
            "enico1qq0oey",
            RoleRequest::Worker,
        )
    };
    let window = RetryPolicy {
        tries: 4,
        interval: Duration::from_millis(300),
    }
    .window();
    let started = Instant::now();
    let err = support::contextualize(&worker, &settings)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.exit_code(), code::UNAVAILABLE, "{err:?}");
    assert!(
        elapsed <= window + Duration::from_millis(200),
        "{elapsed:?} > {window:?}"
    );
    // Every try went to every URL, in order, and there were exactly `tries` of them.
    assert_eq!(first.requests().len(), 4);
    assert_eq!(second.requests().len(), 4);
}

#[tokio::test]
async fn a_long_poll_cut_on_one_url_goes_on_at_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServeProcess::start(&dir.path().join("pins.sqlite3"), &[]);
    let pin = create_pin(&service.url);
    // A replica that knows the PIN and then dies under every parked long-poll.
    let cluster = format!(r#"{{"pin": "{pin}", "creation_time": "2026-11-21T10:00:00Z"}}"#);
    let dying = FaultServer::start(move |request, _| {
        if request.target.contains("/keys/") {
            Reply::ResetAfter(Duration::from_millis(200))
        } else {
            Reply::Ours(200, cluster.clone())
        }
    })
    .await;
    let settings = Overrides {
        interval: Some(Duration::from_secs(5)),
        ..overrides(&[&dying.url(), &service.url], &pin, RoleRequest::Worker)
    };
    let worker = Node::new(WORKER_CONTEXT);
    let waiting = tokio::spawn(support::contextualize_files(
        worker.files.clone(),
        worker.state_dir(),
        settings,
    ));
    // Let the worker park on the dying URL and move on before the master publishes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let master = Node::new(MASTER_CONTEXT);
    let published = Instant::now();
    support::contextualize(
        &master,
        &overrides(&[&service.url], &pin, RoleRequest::Master),
    )
    .await
    .unwrap();
    support::master_ready(
        &master,
        &overrides(&[&service.url], &pin, RoleRequest::Master),
    )
    .await
    .unwrap();
    waiting.await.unwrap().unwrap();
    // Woken by the second URL's long-poll, not after a 5 s slot.
    assert!(
        published.elapsed() < Duration::from_secs(3),
        "{:?}",
        published.elapsed()
    );
    let waits: Vec<_> = dying
        .requests()
        .into_iter()
        .filter(|r| r.target.contains("?wait="))
        .collect();
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert!(worker.read(0).contains("127.0.0.1"), "{}", worker.read(0));
}
