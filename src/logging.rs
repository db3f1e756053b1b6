//! Logging setup: journald when our stderr already goes to the journal (we run under systemd),
//! plain stderr otherwise.
//!
//! Under journald we send structured records (priority, target) instead of text on stderr, so
//! `journalctl -p warning -u clusterctx-contextualize` works. On a terminal we print without
//! timestamps: a human running the agent by hand reads it as it happens, and when stderr is a
//! file the caller decides on timestamps.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// Sets the global subscriber. `verbosity` counts `-v` flags: 0 info, 1 debug, 2+ trace.
/// `RUST_LOG` overrides it for fine-grained filtering.
pub fn init(verbosity: u8) {
    let level = match verbosity {
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy()
        // The HTTP stack is chatty at debug; our own lines say what matters.
        .add_directive("hyper=warn".parse().expect("static directive"))
        .add_directive("rustls=warn".parse().expect("static directive"))
        .add_directive("reqwest=warn".parse().expect("static directive"));

    let journald = if stderr_is_journal() {
        tracing_journald::layer()
            .ok()
            .map(|layer| layer.with_syslog_identifier("clusterctx".to_string()))
    } else {
        None
    };

    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(crate::notify::layer());
    // try_init: tests and embedders may already have installed a subscriber.
    match journald {
        Some(layer) => {
            let _ = registry.with(layer).try_init();
        }
        None => {
            let _ = registry
                .with(
                    fmt::layer()
                        .with_writer(std::io::stderr)
                        // Colours only for a person at a terminal, not in files or pipes.
                        .with_ansi(std::io::stderr().is_terminal())
                        .without_time()
                        .with_target(false),
                )
                .try_init();
        }
    }
}

/// systemd sets `JOURNAL_STREAM=<dev>:<inode>` when it connects stderr to the journal; it only
/// counts if stderr is still that stream (not redirected by a wrapper script).
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<libc::dev_t>().ok() == Some(stat.st_dev)
        && ino.parse::<libc::ino_t>().ok() == Some(stat.st_ino)
}
