//! The PIN service with its in-memory store, for the benchmark suite (`contrib/bench/run`):
//! the baseline that `clusterctx serve` (always durable) is compared with. Everything else is
//! `clusterctx serve`: the same router, accept loop, logging and defaults, except the creation
//! limit and the storage caps, which are off as they are for `serve` in the suite: the load
//! creates clusters from one address as fast as it can.
//!
//! ```sh
//! cargo run --release --example bench_serve -- --listen 127.0.0.1:18081
//! ```
//!
//! Serves until SIGTERM or Ctrl-C, or until `--max-secs` have passed (benchmarks stop by
//! themselves, even when the script driving them dies).

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::Parser;
use clusterctx::server::{self, Config};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Parser)]
struct Args {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:18081")]
    listen: SocketAddr,
    /// Stop by itself after this many seconds.
    #[arg(long, default_value_t = 1800)]
    max_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    clusterctx::logging::init(0);
    clusterctx::sys::raise_fd_limit().context("cannot raise the open files limit")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let server = server::spawn(Config {
        listen: args.listen,
        db: None,
        create_burst: 0,
        max_clusters: 0,
        max_stored_bytes: 0,
        ..Config::default()
    })
    .await?;
    tracing::info!(
        "bench_serve (in-memory store) listening on {}",
        server.url()
    );
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = tokio::time::sleep(Duration::from_secs(args.max_secs)) => {
            tracing::warn!("stopping after --max-secs {}", args.max_secs);
        }
    }
    server.shutdown().await;
    Ok(())
}
