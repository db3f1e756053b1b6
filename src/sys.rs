//! Process-wide OS settings, shared by the PIN service and the load tools in `examples/`.

/// Raises the soft limit on open files to the hard limit: every long-poll is a socket, and the
/// default soft limit of 1024 would cap a cluster at about a thousand waiting workers.
/// Returns the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= hard {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}
