//! Manual commands: `clusterctx pin ...` and `clusterctx key ...`.

#[derive(Debug, clap::Subcommand)]
pub enum PinCommand {}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {}
