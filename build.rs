//! Records the git commit for `clusterctx --version`.
use std::{path::PathBuf, process::Command};

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit =
        git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown commit".into());
    println!("cargo:rustc-env=CLUSTERCTX_GIT_COMMIT={commit}");
    // Rerun when this checkout's commit changes, and only then: not on a commit to another
    // branch or worktree (watching all of refs/heads relinked the release binary, minutes of
    // fat LTO, whenever any branch moved). A path that does not exist would make cargo rerun
    // the script on every build, so only existing ones are named.
    let mut watched = vec![PathBuf::from("build.rs")];
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        watched.push(head.into());
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        for path in [branch.as_str(), "packed-refs"] {
            if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                watched.push(p.into());
            }
        }
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
