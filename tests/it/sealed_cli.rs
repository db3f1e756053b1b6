//! Sealed values through the operator commands: `pin create --secret`, `key set` and
//! `key get --secret-file`, as the `clusterctx` binary against a real `clusterctx serve`
//! process, and what the service kept: its answers and its database file.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use clusterctx::{
    seal::Sealer,
    secret::{ClusterSecret, Pin},
};

use crate::support::server::{contains, database_bytes, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_clusterctx");

/// Values that must never be found in clear anywhere the service can see.
const ADDRESS: &str = "10.77.31.209";
const CANARY: &str = "geneva-canary-7d1f";

fn clusterctx(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn secret_file(dir: &Path, name: &str, secret: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn operators_seal_and_open_values_the_service_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pins.sqlite3");
    let mut service = ServeProcess::start(&db, &[]);
    let url = service.url.clone();

    let created = clusterctx(&["pin", "create", "--service", &url, "--secret"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let out = text(&created.stdout);
    let mut lines = out.lines();
    let pin = lines.next().unwrap().to_string();
    let secret = lines.next().unwrap().to_string();
    assert_eq!(pin.len(), 12, "{out}");
    ClusterSecret::parse(&secret).expect("a valid secret on the second line");
    assert_eq!(
        out.matches(&format!("cvm_cluster_secret={secret}\n"))
            .count(),
        3,
        "{out}"
    );
    assert_eq!(out.matches(&format!("cvm_cluster_pin={pin}\n")).count(), 3);
    assert_eq!(out.matches(&format!("cvm_service_url={url}\n")).count(), 3);
    assert!(out.contains("cvm_cluster_master=yes\n"), "{out}");
    assert!(out.contains("cvm_cluster_master=auto\n"), "{out}");
    assert!(!text(&created.stderr).contains(&secret));
    let json = clusterctx(&["pin", "create", "--service", &url, "--secret", "--json"]);
    let answer: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let other_secret = answer["cluster_secret"].as_str().expect("cluster_secret");
    ClusterSecret::parse(other_secret).expect("a valid secret in the JSON answer");
    assert_ne!(other_secret, secret, "every cluster gets its own secret");
    assert!(answer["pin"].as_str().is_some_and(|p| p != pin));

    let good = secret_file(dir.path(), "secret", &secret, 0o600);
    let good = good.to_str().unwrap();

    // Sealed by the command, and sealed by hand (as an agent would) then stored as is.
    let set = clusterctx(&[
        "key",
        "set",
        "--service",
        &url,
        "--secret-file",
        good,
        &pin,
        "master_ip",
        ADDRESS,
    ]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    let by_hand = Sealer::new(
        &ClusterSecret::parse(&secret).unwrap(),
        &Pin::new(pin.as_str()),
    )
    .seal("site", CANARY)
    .unwrap();
    let set = clusterctx(&["key", "set", "--service", &url, &pin, "site", &by_hand]);
    assert!(set.status.success(), "{}", text(&set.stderr));

    for (key, value) in [("master_ip", ADDRESS), ("site", CANARY)] {
        let got = clusterctx(&[
            "key",
            "get",
            "--service",
            &url,
            "--secret-file",
            good,
            &pin,
            key,
        ]);
        assert!(got.status.success(), "{}", text(&got.stderr));
        assert_eq!(text(&got.stdout), format!("{value}\n"));
    }

    // What the service answers: sealed text only.
    let raw = clusterctx(&["key", "get", "--service", &url, &pin, "master_ip"]);
    assert!(
        text(&raw.stdout).starts_with("ccs1."),
        "{}",
        text(&raw.stdout)
    );
    let listed = clusterctx(&["key", "list", "--service", &url, &pin]);
    let listed = text(&listed.stdout);
    assert!(listed.contains("master_ip: ccs1."), "{listed}");
    assert!(listed.contains(&format!("site: {by_hand}")), "{listed}");
    for clear in [ADDRESS, CANARY, secret.as_str()] {
        assert!(!listed.contains(clear), "{clear} in {listed}");
    }

    // Values that do not open: another secret, a plain value, a value moved to another key.
    let other = ClusterSecret::generate().unwrap();
    let wrong = secret_file(dir.path(), "wrong", other.expose(), 0o600);
    let moved = clusterctx(&["key", "set", "--service", &url, &pin, "moved", &by_hand]);
    assert!(moved.status.success());
    let plain = clusterctx(&["key", "set", "--service", &url, &pin, "plain", "10.6.6.6"]);
    assert!(plain.status.success());
    for (file, key, expected) in [
        (&wrong, "master_ip", "was not sealed by this cluster"),
        (
            &dir.path().join("secret"),
            "moved",
            "was not sealed by this cluster",
        ),
        (&dir.path().join("secret"), "plain", "is not sealed"),
    ] {
        let got = clusterctx(&[
            "key",
            "get",
            "--service",
            &url,
            "--secret-file",
            file.to_str().unwrap(),
            &pin,
            key,
        ]);
        let err = text(&got.stderr);
        assert_eq!(got.status.code(), Some(1), "{err}");
        assert!(err.contains(expected), "{err}");
        assert!(err.contains(key), "{err}");
        assert!(got.stdout.is_empty());
        for clear in [ADDRESS, CANARY, "10.6.6.6", secret.as_str(), other.expose()] {
            assert!(!err.contains(clear), "{clear} in {err}");
        }
    }

    // A secret file others can read is refused before anything is sent.
    let loose = secret_file(dir.path(), "loose", &secret, 0o644);
    let got = clusterctx(&[
        "key",
        "get",
        "--service",
        &url,
        "--secret-file",
        loose.to_str().unwrap(),
        &pin,
        "master_ip",
    ]);
    let err = text(&got.stderr);
    assert_eq!(got.status.code(), Some(1), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains(&secret), "{err}");

    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(10)).success());
    let log = service.stderr_rest.recv().unwrap();
    let stored = database_bytes(&db);
    assert!(contains(&stored, &by_hand), "the sealed value is stored");
    assert!(
        contains(&stored, "10.6.6.6"),
        "the plain value is stored in clear"
    );
    for clear in [ADDRESS, CANARY, secret.as_str()] {
        assert!(!contains(&stored, clear), "{clear} in the database");
        assert!(!log.contains(clear), "{clear} in the service log:\n{log}");
    }
}
