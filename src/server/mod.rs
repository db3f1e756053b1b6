//! The PIN service (`clusterctx serve`). Being built: see issue 2.

use std::{net::SocketAddr, path::PathBuf};

/// Options of `clusterctx serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The durable store.
    #[arg(long, default_value = "/var/lib/clusterctx/pins.sqlite3")]
    pub db: PathBuf,
}

pub async fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("the PIN service is not built yet")
}
