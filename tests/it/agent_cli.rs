//! The `clusterctx` binary as systemd and people run it: exit codes, messages, and a whole
//! cluster of processes against a real `clusterctx serve` process.

#[cfg(feature = "server")]
use crate::support::server as server_support;

#[cfg(feature = "server")]
use std::process::Stdio;
use std::process::{Command, Output};

#[cfg(feature = "server")]
use server_support::ServeProcess;

use clusterctx::agent::error::{code, EXIT_CODES};

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
    assert_eq!(out.status.code(), Some(i32::from(code::NOINPUT)));
    let err = stderr(&out);
    assert!(err.contains("worker.txt:3"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), content);
}

#[test]
fn a_missing_context_file_is_an_error() {
    let out = clusterctx(&["contextualize", "--context", "/nonexistent/user-data"]);
    assert_eq!(out.status.code(), Some(i32::from(code::NOINPUT)));
    assert!(stderr(&out).contains("/nonexistent/user-data"));
}

#[test]
fn a_bad_setting_exits_with_the_config_code() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("user-data");
    std::fs::write(
        &file,
        "[ucernvm-begin]\ncvm_cluster_pin=enico1qq0oey\ncvm_cluster_tries=many\n[ucernvm-end]\n",
    )
    .unwrap();
    for command in ["contextualize", "check", "master-ready"] {
        let out = clusterctx(&[command, "--context", file.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(i32::from(code::CONFIG)),
            "{command}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn an_unreachable_service_exits_with_the_unavailable_code() {
    // A port nobody listens on: every try is refused, the window closes.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("user-data");
    let content = WORKER
        .replace("PIN", "enico1qq0oey")
        .replace("URL", &format!("http://127.0.0.1:{port}"))
        .replace("[ucernvm-end]", "cvm_cluster_mastr=yes\n[ucernvm-end]");
    std::fs::write(&file, &content).unwrap();
    let state = dir.path().join("state");
    let out = clusterctx(&[
        "contextualize",
        "--context",
        file.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--tries",
        "2",
        "--interval",
        "0.1",
    ]);
    let log = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(i32::from(code::UNAVAILABLE)),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), content);
    // What `check` warns about reaches the boot journal too.
    assert!(
        log.contains("WARN") && log.contains("unknown key cvm_cluster_mastr"),
        "{log}"
    );
    assert!(log.contains("try=2 tries=2"), "{log}");
}

#[test]
fn the_exit_codes_are_in_the_help() {
    for command in ["contextualize", "master-ready", "check"] {
        let help = stdout(&clusterctx(&[command, "--help"]));
        for row in EXIT_CODES {
            assert!(
                help.contains(&format!("{:>3}  {}", row.code, row.meaning)),
                "{command} --help lacks {}: {help}",
                row.code
            );
        }
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for row in EXIT_CODES {
        let again = if row.retry_helps { "yes" } else { "no" };
        let line = readme
            .lines()
            .find(|l| l.starts_with(&format!("| {} |", row.code)))
            .unwrap_or_else(|| panic!("README.md's exit codes lack {}", row.code));
        assert!(
            row.code == 0 || line.ends_with(&format!("| {again} |")) || line.contains("| no:"),
            "README.md says otherwise about {}: {line}",
            row.code
        );
    }
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
        // The same as fields, for `journalctl` filters (printed as `name=value` on stderr).
        let waiting = log
            .lines()
            .find(|l| l.contains("waiting for master_ready (try 1/50)"))
            .unwrap_or_else(|| panic!("no first try logged: {log}"));
        for field in ["try=1", "tries=50", "key=\"master_ready\"", "url="] {
            assert!(waiting.contains(field), "{field} missing: {waiting}");
        }
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

#[test]
fn no_debug_print_shows_a_pin_or_token() {
    use clap::Parser;
    use clusterctx::{
        agent::{files::ContextSet, state::State, Plan},
        cli::{Cli, Command},
    };

    const SECRET_PIN: &str = "zq7kx3m9w2pa";
    const TOKEN: &str = "tok3n-0123456789abcdef";
    const CLUSTER_SECRET: &str = "Zq3_xT8-vKp2LmN9wRb7sA";
    let command_lines: [&[&str]; 6] = [
        &["contextualize", "--pin", SECRET_PIN],
        &["check", "--pin", SECRET_PIN],
        &[
            "pin",
            "delete",
            "--service",
            "http://x",
            "--token",
            TOKEN,
            SECRET_PIN,
        ],
        &[
            "key",
            "get",
            "--service",
            "http://x",
            SECRET_PIN,
            "master_ip",
        ],
        &[
            "key",
            "set",
            "--service",
            "http://x",
            "--token",
            TOKEN,
            SECRET_PIN,
            "k",
            "v",
        ],
        &[
            "key",
            "delete",
            "--service",
            "http://x",
            "--token",
            TOKEN,
            SECRET_PIN,
            "k",
        ],
    ];
    let mut printed = Vec::new();
    for args in command_lines {
        let cli = Cli::try_parse_from([&["clusterctx"], args].concat()).unwrap();
        if let Command::Contextualize(args) = &cli.command {
            // The settings and the plan made from them hold the PIN too, and the secret.
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("user-data");
            let block = format!(
                "[ucernvm-begin]\ncvm_cluster_pin={SECRET_PIN}\n\
                 cvm_cluster_secret={CLUSTER_SECRET}\n[ucernvm-end]\n"
            );
            std::fs::write(&file, block + "x=###MASTER_IP_PLACEHOLDER###\n").unwrap();
            let contexts = ContextSet::load(&[file]).unwrap();
            let plan = Plan::build(&contexts, &args.agent.overrides)
                .unwrap()
                .unwrap();
            assert!(plan.sealing.is_on());
            printed.push(format!("{plan:?}"));
            let files = format!("{contexts:?}");
            assert!(!files.contains(SECRET_PIN), "the PIN leaked: {files}");
        }
        printed.push(format!("{cli:?}"));
    }
    printed.push(format!("{:?}", State::new(SECRET_PIN, Some("0123abcd"))));
    for text in &printed {
        assert!(!text.contains(SECRET_PIN), "the PIN leaked: {text}");
        assert!(!text.contains(CLUSTER_SECRET), "the secret leaked: {text}");
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
        // Not vacuous: each print does show the PIN, redacted.
        assert!(text.contains("zq7…"), "{text}");
    }
}

/// Datagrams on a notify socket of the test's own, as systemd would receive them.
#[cfg(feature = "server")]
struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
    seen: Vec<String>,
}

#[cfg(feature = "server")]
impl NotifySocket {
    fn bind(path: std::path::PathBuf) -> NotifySocket {
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        NotifySocket {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    /// Reads until a message contains `wanted`, within `limit`; returns it.
    fn wait_for(&mut self, wanted: &str, limit: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        if let Some(found) = self.seen.iter().find(|m| m.contains(wanted)) {
            return found.clone();
        }
        let mut buffer = [0u8; 4096];
        while std::time::Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buffer) {
                let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                self.seen.push(message.clone());
                if message.contains(wanted) {
                    return message;
                }
            }
        }
        panic!("no status {wanted:?} within {limit:?}; got {:?}", self.seen);
    }

    /// Every message sent so far (the sender has exited): the last is the unit's last word.
    fn drain(&mut self) -> &[String] {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buffer) {
            self.seen
                .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
        &self.seen
    }
}

#[cfg(feature = "server")]
#[test]
fn progress_reaches_systemds_notify_socket() {
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let mut service = ServeProcess::start(&dir.path().join("pins.sqlite3"), &[]);
    let created = clusterctx(&["pin", "create", "--service", &service.url]);
    assert!(created.status.success(), "{}", stderr(&created));
    let pin = stdout(&created).lines().next().unwrap().to_string();

    let worker_file = dir.path().join("worker.txt");
    std::fs::write(
        &worker_file,
        WORKER.replace("PIN", &pin).replace("URL", &service.url),
    )
    .unwrap();
    let mut worker_status = NotifySocket::bind(dir.path().join("worker.sock"));
    let mut worker = Command::new(BIN)
        .args(["contextualize", "--context"])
        .arg(&worker_file)
        .arg("--state-dir")
        .arg(dir.path().join("worker-state"))
        .env_remove("JOURNAL_STREAM")
        .env("NOTIFY_SOCKET", &worker_status.path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = worker_status.wait_for("waiting for master_ready", Duration::from_secs(20));
    assert!(
        waiting.starts_with("STATUS=waiting for master_ready (try 1/50) at http://127.0.0.1:"),
        "{waiting}"
    );
    assert!(!waiting.contains(&pin), "the PIN leaked: {waiting}");

    let master_file = dir.path().join("master.txt");
    std::fs::write(
        &master_file,
        MASTER.replace("PIN", &pin).replace("URL", &service.url),
    )
    .unwrap();
    let mut master_status = NotifySocket::bind(dir.path().join("master.sock"));
    for step in ["contextualize", "master-ready"] {
        let out = Command::new(BIN)
            .args([step, "--context"])
            .arg(&master_file)
            .arg("--state-dir")
            .arg(dir.path().join("master-state"))
            .env_remove("JOURNAL_STREAM")
            .env("NOTIFY_SOCKET", &master_status.path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{step}: {}", stderr(&out));
    }
    master_status.wait_for(
        "STATUS=done: 0 file(s) filled as master",
        Duration::from_secs(5),
    );
    master_status.wait_for(
        "STATUS=done: published master_ready",
        Duration::from_secs(5),
    );
    worker_status.wait_for(
        "STATUS=done: 1 file(s) filled as worker",
        Duration::from_secs(20),
    );
    assert!(worker.wait().unwrap().success());

    // A reboot: files refilled from the state, the node registered again; the last status is
    // still the outcome, not the registration's progress.
    let mut reboot_status = NotifySocket::bind(dir.path().join("reboot.sock"));
    let out = Command::new(BIN)
        .args(["contextualize", "--context"])
        .arg(&worker_file)
        .arg("--state-dir")
        .arg(dir.path().join("worker-state"))
        .env_remove("JOURNAL_STREAM")
        .env("NOTIFY_SOCKET", &reboot_status.path)
        .output()
        .unwrap();
    assert!(out.status.success(), "reboot: {}", stderr(&out));
    let seen = reboot_status.drain();
    assert!(
        seen.iter().any(|m| m.contains("registering this node")),
        "the reboot registered again: {seen:?}"
    );
    assert!(
        seen.last()
            .is_some_and(|m| m.starts_with("STATUS=done: already contextualized as worker")),
        "{seen:?}"
    );

    // A run that fails leaves its cause as the unit's last status.
    service.signal(libc::SIGTERM);
    service.wait_exit(Duration::from_secs(10));
    let mut failed_status = NotifySocket::bind(dir.path().join("failed.sock"));
    let out = Command::new(BIN)
        .args(["contextualize", "--context"])
        .arg(&worker_file)
        .arg("--state-dir")
        .arg(dir.path().join("failed-state"))
        .args(["--tries", "2", "--interval", "0.1"])
        .env_remove("JOURNAL_STREAM")
        .env("NOTIFY_SOCKET", &failed_status.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(i32::from(code::UNAVAILABLE)));
    failed_status.wait_for("STATUS=failed: ", Duration::from_secs(5));
}
