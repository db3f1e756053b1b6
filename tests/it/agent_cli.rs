//! The `clusterctx` binary as systemd and people run it: exit codes, messages, and a whole
//! cluster of processes against a real `clusterctx serve` process.

#[cfg(feature = "server")]
use crate::support::server as server_support;

#[cfg(feature = "server")]
use std::process::Stdio;
use std::process::{Command, Output};

#[cfg(feature = "server")]
use server_support::ServeProcess;

const BIN: &str = env!("CARGO_BIN_EXE_clusterctx");

const WORKER: &str = "[example_section]\nmy_master_ip=###MASTER_IP_PLACEHOLDER###\n\n[ucernvm-begin]\ncvm_cluster_pin=PIN\ncvm_service_url=URL\ncvm_cluster_interval=0.2\ncvm_cluster_tries=50\n[ucernvm-end]\n";
#[cfg(feature = "server")]
const MASTER: &str = "[ucernvm-begin]\ncvm_cluster_master=yes\ncvm_cluster_pin=PIN\ncvm_service_url=URL\n[ucernvm-end]\n";

fn clusterctx(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn no_pin_is_nothing_to_do_and_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("user-data");
    std::fs::write(&file, "#cloud-config\nruncmd: [true]\n").unwrap();
    let state = dir.path().join("state");
    let out = clusterctx(&[
        "contextualize",
        "--context",
        file.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("no cluster contextualization"));
    assert!(
        !state.exists(),
        "nothing recorded when there is nothing to do"
    );
}

#[test]
fn a_broken_block_names_file_and_line_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker.txt");
    let content =
        "a=###MASTER_IP_PLACEHOLDER###\n\n[ucernvm-begin]\ncvm_cluster_pin=enico1qq0oey\n";
    std::fs::write(&file, content).unwrap();
    let out = clusterctx(&["contextualize", "--context", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("worker.txt:3"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), content);
}

#[test]
fn a_missing_context_file_is_an_error() {
    let out = clusterctx(&["contextualize", "--context", "/nonexistent/user-data"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/user-data"));
}

#[test]
fn check_reports_without_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker.txt");
    let content = WORKER
        .replace("PIN", "enico1qq0oey")
        .replace("URL", "pins.example.org:8000")
        .replace("[ucernvm-end]", "cvm_cluster_mastr=yes\n[ucernvm-end]")
        + "x=###GREETING_PLACEHOLDER###\n";
    std::fs::write(&file, &content).unwrap();
    let out = clusterctx(&["check", "--context", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    assert!(
        report.contains("placeholders for greeting, master_ip"),
        "{report}"
    );
    assert!(report.contains("role: worker"), "{report}");
    assert!(report.contains("http://pins.example.org:8000"), "{report}");
    assert!(report.contains("no scheme"), "{report}");
    assert!(report.contains("wait for master_ready"), "{report}");
    assert!(
        report.contains("worker.txt:9: unknown key cvm_cluster_mastr"),
        "{report}"
    );
    assert!(!report.contains("enico1qq0oey"), "the PIN leaked: {report}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), content);
    // --dry-run is the same report.
    let dry = clusterctx(&[
        "contextualize",
        "--dry-run",
        "--context",
        file.to_str().unwrap(),
    ]);
    assert_eq!(stdout(&dry), report);
}

#[cfg(feature = "server")]
#[test]
fn a_cluster_of_processes_against_a_service_process() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServeProcess::start(&dir.path().join("pins.sqlite3"), &[]);
    let created = clusterctx(&["pin", "create", "--service", &service.url]);
    assert!(created.status.success(), "{}", stderr(&created));
    let pin = stdout(&created).trim().to_string();
    assert_eq!(pin.len(), 12, "{pin:?}");
    // Not a terminal: the token stays out of what may be a log.
    assert!(stderr(&created).contains("admin token not shown"));

    let write = |name: &str, template: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            template.replace("PIN", &pin).replace("URL", &service.url),
        )
        .unwrap();
        path
    };
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let file = write(&format!("worker{i}.txt"), WORKER);
            let child = Command::new(BIN)
                .args(["contextualize", "--context"])
                .arg(&file)
                .arg("--state-dir")
                .arg(dir.path().join(format!("worker{i}.state")))
                .env_remove("JOURNAL_STREAM")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (file, child)
        })
        .collect();

    let master = write("master.txt", MASTER);
    let master_state = dir.path().join("master.state");
    let common = [
        "--context",
        master.to_str().unwrap(),
        "--state-dir",
        master_state.to_str().unwrap(),
    ];
    let published = clusterctx(&[&["contextualize"], &common[..]].concat());
    assert!(published.status.success(), "{}", stderr(&published));
    let ready = clusterctx(&[&["master-ready"], &common[..]].concat());
    assert!(ready.status.success(), "{}", stderr(&ready));

    let mut logs = stderr(&published) + &stderr(&ready);
    for (file, child) in workers {
        let out = child.wait_with_output().unwrap();
        let log = stderr(&out);
        assert!(out.status.success(), "{log}");
        assert!(
            log.contains("waiting for master_ready (try 2/50)") || log.contains("got master_ready"),
            "{log}"
        );
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .contains("my_master_ip=127.0.0.1\n"));
        logs += &log;
    }
    assert!(
        !logs.contains(&pin),
        "a log line carries the whole PIN:\n{logs}"
    );

    let keys = clusterctx(&["key", "list", "--service", &service.url, &pin]);
    assert_eq!(
        stdout(&keys),
        "master_ip: 127.0.0.1\nmaster_ready: yes\n",
        "{}",
        stderr(&keys)
    );
}
