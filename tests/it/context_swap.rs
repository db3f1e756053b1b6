//! The root agent against a local user who swaps its context files while it waits (issue 16):
//! the context files are read at the start and rewritten after the wait for the master, and
//! whatever the path has become by then must not receive the write.
//!
//! These run as root with a real unprivileged user (`nobody`) as the attacker, a child
//! process with its own uid, between the real [`ContextSet::load`] and
//! [`ContextSet::substitute_all`]; they are skipped otherwise. The refusals that need no
//! second user (FIFO, symlink, writable directory, swap by the agent's own user) are unit tests
//! in `src/context/held.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use clusterctx::agent::files::ContextSet;
use clusterctx::context::ContextError;
use nix::unistd::{chown, geteuid, User};

use crate::support::WORKER_CONTEXT;

const SECRET: &[u8] = b"root:only:secret\n";

/// The unprivileged user, when the tests can act as root on its behalf.
fn attacker() -> Option<User> {
    if !geteuid().is_root() {
        eprintln!("skipped: needs root to run a second, unprivileged user");
        return None;
    }
    match User::from_name("nobody") {
        Ok(Some(user)) => Some(user),
        _ => {
            eprintln!("skipped: no user nobody");
            None
        }
    }
}

/// Runs `script` with `sh` as `user` in `dir`, to completion.
fn attack(user: &User, dir: &Path, script: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .status()
        .unwrap();
    assert!(status.success(), "the attack itself failed: {script}");
}

/// A scene under a fresh directory that `nobody` may traverse.
fn scene() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
    (dir, base)
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// What must not change about a file: bytes, owner, mode, inode.
fn snapshot(path: &Path) -> (Vec<u8>, u32, u32, u32, u64) {
    let meta = fs::symlink_metadata(path).unwrap();
    assert!(meta.is_file(), "{} is not a regular file", path.display());
    (
        fs::read(path).unwrap(),
        meta.uid(),
        meta.gid(),
        meta.mode(),
        meta.ino(),
    )
}

fn master_ip() -> BTreeMap<String, String> {
    BTreeMap::from([("master_ip".to_string(), "10.0.0.5".to_string())])
}

fn context_error(err: &anyhow::Error) -> &ContextError {
    err.chain()
        .find_map(|e| e.downcast_ref::<ContextError>())
        .unwrap_or_else(|| panic!("not a context error: {err:#}"))
}

#[test]
fn a_file_swapped_for_a_symlink_while_waiting_is_not_written_through() {
    let Some(user) = attacker() else { return };
    let (_dir, base) = scene();
    let secret = base.join("secret");
    write(&secret, SECRET, 0o600);
    // A sticky shared directory (like /tmp): allowed, since nobody can remove another's file
    // there, but nobody may replace its own.
    let shared = base.join("shared");
    mkdir(&shared, 0o1777);
    let file = shared.join("user-data");
    write(&file, WORKER_CONTEXT.as_bytes(), 0o644);
    chown(&file, Some(user.uid), Some(user.gid)).unwrap();
    let before = snapshot(&secret);

    let contexts = ContextSet::load(std::slice::from_ref(&file)).unwrap();
    attack(
        &user,
        &shared,
        &format!("rm user-data && ln -s {} user-data", secret.display()),
    );
    let err = contexts.substitute_all(&master_ip()).unwrap_err();

    assert!(
        matches!(context_error(&err), ContextError::Swapped { path, .. } if *path == file),
        "{err:#}"
    );
    let message = format!("{err:#}");
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("replaced by a symbolic link"), "{message}");
    assert_eq!(snapshot(&secret), before);
    assert!(fs::symlink_metadata(&file).unwrap().is_symlink());
}

#[test]
fn a_directory_swapped_for_a_symlink_while_waiting_is_not_written_into() {
    let Some(user) = attacker() else { return };
    let (_dir, base) = scene();
    // The attacker owns the grandparent only: the context file's own directory is root's.
    let grandparent = base.join("home");
    mkdir(&grandparent, 0o755);
    chown(&grandparent, Some(user.uid), Some(user.gid)).unwrap();
    let parent = grandparent.join("context");
    mkdir(&parent, 0o755);
    let file = parent.join("user-data");
    write(&file, WORKER_CONTEXT.as_bytes(), 0o644);
    let elsewhere = base.join("etc");
    mkdir(&elsewhere, 0o755);
    let secret = elsewhere.join("user-data");
    write(&secret, SECRET, 0o600);
    let secret_before = snapshot(&secret);
    let file_before = snapshot(&file);

    let contexts = ContextSet::load(std::slice::from_ref(&file)).unwrap();
    attack(
        &user,
        &grandparent,
        &format!(
            "mv context context.old && ln -s {} context",
            elsewhere.display()
        ),
    );
    let err = contexts.substitute_all(&master_ip()).unwrap_err();

    assert!(
        matches!(context_error(&err), ContextError::Swapped { path, .. } if *path == file),
        "{err:#}"
    );
    let message = format!("{err:#}");
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("now leads somewhere else"), "{message}");
    assert_eq!(snapshot(&secret), secret_before);
    assert_eq!(
        snapshot(&grandparent.join("context.old/user-data")),
        file_before
    );
    let names: Vec<_> = fs::read_dir(grandparent.join("context.old"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["user-data"], "a temporary file was left");
}

#[test]
fn a_directory_another_user_can_write_is_refused_before_anything_is_read() {
    let Some(user) = attacker() else { return };
    let (_dir, base) = scene();
    let theirs = base.join("theirs");
    mkdir(&theirs, 0o755);
    chown(&theirs, Some(user.uid), Some(user.gid)).unwrap();
    let open = base.join("open");
    mkdir(&open, 0o777);
    let group = base.join("group");
    mkdir(&group, 0o775);
    chown(&group, None, Some(user.gid)).unwrap();

    for (dir, why) in [
        (&theirs, format!("is owned by uid {}", user.uid)),
        (&open, "mode 0777".to_string()),
        (&group, "mode 0775".to_string()),
    ] {
        let file = dir.join("user-data");
        write(&file, WORKER_CONTEXT.as_bytes(), 0o644);
        let before = snapshot(&file);
        let err = ContextSet::load(std::slice::from_ref(&file)).unwrap_err();
        assert!(
            matches!(context_error(&err), ContextError::UnsafeDirectory { path, .. } if *path == file),
            "{err:#}"
        );
        let message = format!("{err:#}");
        assert!(message.contains(&why), "{message}");
        assert!(message.contains(&file.display().to_string()), "{message}");
        // The attacker may do as it likes now: there is no ContextSet to write anything.
        attack(&user, dir, "ln -sf /etc/shadow shadow-link");
        assert_eq!(snapshot(&file), before);
    }
}
