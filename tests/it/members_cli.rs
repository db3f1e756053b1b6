//! The operator's view of membership: `clusterctx members` and `clusterctx pin show` as the
//! binary, against real `clusterctx serve` processes; the operator commands' several URLs.

use crate::support::server::ServeProcess;

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use clusterctx::{
    client::{ClientOptions, PinClient},
    protocol::MemberItem,
    seal::{Sealer, MEMBER_ADDRESS_KEY},
    secret::{ClusterSecret, Pin},
};

const BIN: &str = env!("CARGO_BIN_EXE_clusterctx");

/// `clusterctx -v ARGS`: debug lines too, so that a test sees every line that could leak.
fn clusterctx(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("-v")
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .env_remove("CLUSTERCTX_SERVICE")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn service(dir: &tempfile::TempDir, name: &str, extra: &[&str]) -> ServeProcess {
    ServeProcess::start(&dir.path().join(format!("{name}.sqlite3")), extra)
}

/// A service of its own with one new PIN (the directory holds its database).
fn fresh() -> (tempfile::TempDir, ServeProcess, String) {
    let dir = tempfile::tempdir().unwrap();
    let service = service(&dir, "pins", &[]);
    let pin = create_pin(&service.url);
    (dir, service, pin)
}

fn create_pin(url: &str) -> String {
    let created = clusterctx(&["pin", "create", "--service", url]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    text(&created.stdout).trim().to_string()
}

/// A loopback URL nobody listens on: bound, then released.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn node(n: usize) -> String {
    format!("node{n:012}")
}

/// Registers `(node, address)` pairs in order, as agents do.
fn register(url: &str, pin: &str, members: &[(String, String)]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = PinClient::new(url, &ClientOptions::default()).unwrap();
        for (node, address) in members {
            let role = if node == &self::node(1) {
                "master"
            } else {
                "worker"
            };
            client
                .register_member(&Pin::new(pin), node, address, role)
                .await
                .unwrap()
                .expect("our service keeps members");
        }
    });
}

fn metric(url: &str, name: &str) -> Option<u64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = runtime.block_on(async {
        reqwest::get(format!("{url}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })?;
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} "))?.parse().ok())
}

/// The table's rows (header dropped) as their words.
fn rows(table: &str) -> Vec<Vec<String>> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("NODE "), "no header: {table}");
    lines
        .take_while(|line| line.starts_with("node"))
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn members_are_listed_in_joining_order_as_text_and_json() {
    let (_dir, service, pin) = fresh();
    let url = service.url.clone();
    let joined: Vec<(String, String)> = [(3, "127.0.0.3"), (1, "127.0.0.1"), (2, "fd00::2")]
        .map(|(n, address)| (node(n), address.to_string()))
        .into();
    register(&url, &pin, &joined);
    // Registering again keeps the place and updates the address.
    register(&url, &pin, &[(node(3), "127.0.0.33".to_string())]);

    let out = clusterctx(&["members", "--service", &url, &pin]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let listed = rows(&stdout);
    let expected = [
        (node(3), "worker", "127.0.0.33"),
        (node(1), "master", "127.0.0.1"),
        (node(2), "worker", "fd00::2"),
    ];
    assert_eq!(listed.len(), 3, "{stdout}");
    for (row, (node, role, address)) in listed.iter().zip(&expected) {
        assert_eq!(&row[..3], [node.as_str(), role, address], "{stdout}");
        assert_eq!(row.len(), 5, "joined_at and last_seen: {stdout}");
    }
    assert_eq!(listed[1][3], listed[1][4], "registered once");
    assert!(stdout.ends_with("\n3 members\n"), "{stdout}");
    assert!(!stdout.contains("joined"), "no size given: {stdout}");
    assert!(!stderr.contains(&pin), "the PIN leaked: {stderr}");

    let sized = clusterctx(&["members", "--service", &url, "--cluster-size", "10", &pin]);
    assert!(
        text(&sized.stdout).ends_with("\n3 members\n3 of 10 joined\n"),
        "{}",
        text(&sized.stdout)
    );

    let json = clusterctx(&[
        "members",
        "--service",
        &url,
        "--json",
        "--cluster-size",
        "2",
        &pin,
    ]);
    assert!(json.status.success(), "{}", text(&json.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(answer["count"], 3);
    assert_eq!(answer["cluster_size"], 2);
    let members: Vec<MemberItem> = serde_json::from_value(answer["members"].clone()).unwrap();
    let got: Vec<(String, String, String)> = members
        .iter()
        .map(|m| (m.node.clone(), m.role.clone(), m.address.clone()))
        .collect();
    let want: Vec<(String, String, String)> = expected
        .iter()
        .map(|(n, r, a)| (n.clone(), r.to_string(), a.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(members.iter().all(|m| m.joined_at.ends_with('Z')));

    // `pin show` lists them too, under its own lines.
    let show = clusterctx(&["pin", "show", "--service", &url, &pin]);
    let shown = text(&show.stdout);
    assert!(show.status.success(), "{}", text(&show.stderr));
    assert!(shown.starts_with(&format!("pin: {pin}\n")), "{shown}");
    let (head, table) = shown.split_once("members: 3\n").expect("a member count");
    assert!(head.contains("expires_at: "), "{shown}");
    let table: String = table
        .lines()
        .map(|l| l.trim_start().to_string() + "\n")
        .collect();
    assert_eq!(rows(&table), listed, "{shown}");

    let empty = create_pin(&url);
    let show = clusterctx(&["pin", "show", "--service", &url, &empty]);
    assert!(
        text(&show.stdout).ends_with("members: 0\n"),
        "{}",
        text(&show.stdout)
    );
    let none = clusterctx(&["members", "--service", &url, "--cluster-size", "1", &empty]);
    assert_eq!(
        text(&none.stdout),
        "NODE  ROLE  ADDRESS  JOINED_AT  LAST_SEEN\n0 members\n0 of 1 joined\n"
    );
}

#[test]
fn members_can_wait_for_the_expected_size() {
    let (_dir, service, pin) = fresh();
    let url = service.url.clone();
    let first: Vec<(String, String)> = (1..=3).map(|n| (node(n), format!("127.0.0.{n}"))).collect();
    register(&url, &pin, &first);

    // Too few by the end of the wait: the list as it stands, and a failure.
    let started = Instant::now();
    let short = clusterctx(&[
        "members",
        "--service",
        &url,
        "--cluster-size",
        "9",
        "--wait",
        "1",
        &pin,
    ]);
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited");
    assert_eq!(short.status.code(), Some(1));
    assert!(
        text(&short.stdout).ends_with("3 of 9 joined\n"),
        "{}",
        text(&short.stdout)
    );
    assert!(
        text(&short.stderr).contains("only 3 of 9 members joined within 1 s"),
        "{}",
        text(&short.stderr)
    );

    // Parked until the fourth registers.
    let waiting = Command::new(BIN)
        .args([
            "members",
            "--service",
            &url,
            "--cluster-size",
            "4",
            "--wait",
            "30",
            &pin,
        ])
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&url, "clusterctx_member_waiters") != Some(1) {
        assert!(Instant::now() < deadline, "the command never parked");
        std::thread::sleep(Duration::from_millis(20));
    }
    register(&url, &pin, &[(node(4), "127.0.0.4".to_string())]);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(rows(&text(&out.stdout)).len(), 4);
    assert!(text(&out.stdout).ends_with("\n4 members\n4 of 4 joined\n"));
}

#[test]
fn sealed_addresses_open_with_the_secret_file() {
    use std::os::unix::fs::PermissionsExt;

    let (dir, service, pin) = fresh();
    let url = service.url.clone();
    let secret = ClusterSecret::generate().unwrap();
    let sealer = Sealer::new(&secret, &Pin::new(&pin));
    let sealed = sealer.seal(MEMBER_ADDRESS_KEY, "10.6.6.6").unwrap();
    register(&url, &pin, &[(node(1), sealed.clone())]);
    let secret_file = |name: &str, secret: &ClusterSecret| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{}\n", secret.expose())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let with_secret = |file: &std::path::Path| {
        let file = file.to_str().unwrap();
        clusterctx(&["members", "--service", &url, "--secret-file", file, &pin])
    };

    let plain = clusterctx(&["members", "--service", &url, &pin]);
    assert_eq!(rows(&text(&plain.stdout))[0][2], sealed);
    let opened = with_secret(&secret_file("secret", &secret));
    assert!(opened.status.success(), "{}", text(&opened.stderr));
    assert_eq!(rows(&text(&opened.stdout))[0][2], "10.6.6.6");

    // Another cluster's secret does not open it.
    let refused = with_secret(&secret_file("other", &ClusterSecret::generate().unwrap()));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("not sealed by this cluster"),
        "{}",
        text(&refused.stderr)
    );
}

/// Each of `outs` failed with exit code 1 and `message`, its PIN redacted.
fn fail_alike(outs: &[&Output], message: &str, pin: &str) {
    for out in outs {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(message), "{err}");
        assert!(!err.contains(pin), "the PIN leaked: {err}");
    }
}

#[test]
fn unknown_expired_and_legacy_answer_as_the_other_operator_commands() {
    let dir = tempfile::tempdir().unwrap();
    let ours = service(&dir, "pins", &["--ttl", "1s"]);
    let legacy = service(&dir, "legacy", &["--emulate-legacy"]);

    // Unknown: the same message and exit code as `key list`.
    let unknown = "zzzzzzzzzzzz";
    let keys = clusterctx(&["key", "list", "--service", &ours.url, unknown]);
    let members = clusterctx(&["members", "--service", &ours.url, unknown]);
    let show = clusterctx(&["pin", "show", "--service", &ours.url, unknown]);
    fail_alike(
        &[&keys, &members, &show],
        "HTTP 404 Not Found: no cluster with this PIN",
        unknown,
    );

    // Expired (the service's PINs live 1 s here): 410 for all three.
    let pin = create_pin(&ours.url);
    let deadline = Instant::now() + Duration::from_secs(20);
    let keys = loop {
        let keys = clusterctx(&["key", "list", "--service", &ours.url, &pin]);
        if !keys.status.success() {
            break keys;
        }
        assert!(Instant::now() < deadline, "the PIN never expired");
        std::thread::sleep(Duration::from_millis(100));
    };
    let members = clusterctx(&["members", "--service", &ours.url, &pin]);
    let show = clusterctx(&["pin", "show", "--service", &ours.url, &pin]);
    fail_alike(&[&keys, &members, &show], "HTTP 410 Gone", &pin);

    // Legacy: no member list, said as such; `pin show` still shows the PIN.
    let pin = create_pin(&legacy.url);
    let members = clusterctx(&["members", "--service", &legacy.url, &pin]);
    let err = text(&members.stderr);
    assert_eq!(members.status.code(), Some(1), "{err}");
    assert!(err.contains("keeps no member list"), "{err}");
    assert!(members.stdout.is_empty());
    let show = clusterctx(&["pin", "show", "--service", &legacy.url, &pin]);
    assert!(show.status.success(), "{}", text(&show.stderr));
    assert!(
        text(&show.stdout).ends_with("members: not kept by this service\n"),
        "{}",
        text(&show.stdout)
    );
}

#[test]
fn operator_commands_move_on_from_a_dead_url() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(&dir, "pins", &[]);
    let url = service.url.clone();
    let dead = dead_url();
    let both = format!("{dead},{url}");

    // Comma list, repeated flags, --service-url, the environment: each reaches the live one.
    let created = clusterctx(&["pin", "create", "--service", &both]);
    let err = text(&created.stderr);
    assert!(created.status.success(), "{err}");
    assert!(
        err.contains(&format!("trying the next service URL, {url}")),
        "{err}"
    );
    let pin = text(&created.stdout).trim().to_string();
    register(&url, &pin, &[(node(1), "127.0.0.1".to_string())]);

    let set = clusterctx(&[
        "key",
        "set",
        "--service",
        &dead,
        "--service",
        &url,
        &pin,
        "greeting",
        "hello",
    ]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    let get = clusterctx(&[
        "key",
        "get",
        "--service-url",
        &dead,
        "--service-url",
        &url,
        "--wait",
        "2",
        &pin,
        "greeting",
    ]);
    assert_eq!(text(&get.stdout), "hello\n", "{}", text(&get.stderr));
    let members = Command::new(BIN)
        .args(["-v", "members", "--cluster-size", "1", &pin])
        .env("CLUSTERCTX_SERVICE", &both)
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    let err = text(&members.stderr);
    assert!(members.status.success(), "{err}");
    assert!(
        text(&members.stdout).ends_with("\n1 member\n1 of 1 joined\n"),
        "{}",
        text(&members.stdout)
    );
    assert!(
        err.contains(&format!("{url} answered; using it from now on")),
        "{err}"
    );
    assert!(!err.contains(&pin), "the PIN leaked: {err}");
    let show = clusterctx(&["pin", "show", "--service", &both, &pin]);
    assert!(
        text(&show.stdout).contains("members: 1\n"),
        "{}",
        text(&show.stderr)
    );

    // Every URL dead: the last one's error.
    let other_dead = dead_url();
    let none = clusterctx(&[
        "members",
        "--service",
        &format!("{dead},{other_dead}"),
        &pin,
    ]);
    let err = text(&none.stderr);
    assert_eq!(none.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("error: GET {other_dead}/")), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains(&pin), "the PIN leaked: {err}");

    // The delete goes through too, and the PIN is gone.
    let token_file = dir.path().join("token");
    let created = clusterctx(&[
        "pin",
        "create",
        "--service",
        &url,
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    let doomed = text(&created.stdout).trim().to_string();
    let token = std::fs::read_to_string(&token_file).unwrap();
    let delete = clusterctx(&[
        "pin",
        "delete",
        "--service",
        &both,
        "--token",
        token.trim(),
        &doomed,
    ]);
    assert!(delete.status.success(), "{}", text(&delete.stderr));
    let gone = clusterctx(&["pin", "show", "--service", &url, &doomed]);
    assert!(
        text(&gone.stderr).contains("HTTP 404"),
        "{}",
        text(&gone.stderr)
    );
}
