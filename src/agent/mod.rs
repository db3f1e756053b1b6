//! The boot steps.

#[derive(Debug, clap::Args)]
pub struct ContextualizeArgs {}
#[derive(Debug, clap::Args)]
pub struct MasterReadyArgs {}
#[derive(Debug, clap::Args)]
pub struct CheckArgs {}
