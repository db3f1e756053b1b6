//! The command line, defined once: `main.rs` parses it, and `clusterctx generate` renders the
//! man page and shell completions from the same definition so they cannot go stale.

use clap::{Parser, Subcommand};

use crate::{agent, manage};

#[derive(Debug, Parser)]
#[command(
    name = "clusterctx",
    version = crate::VERSION,
    about = "Cluster contextualization for CernVM: join a master and its workers at boot",
    long_about = "Cluster contextualization for CernVM.\n\n\
        At boot, a master publishes its address to a PIN service under the cluster's PIN; \
        workers wait for it and substitute it (and any other ###<NAME>_PLACEHOLDER###) into \
        their context files before the rest of the boot reads them. The same binary runs the \
        PIN service (`serve`) and offers manual commands for PINs and keys.",
    after_long_help = "The agent's commands (contextualize, master-ready, check) exit with a \
        code that says why they failed (65-78, the sysexits.h codes systemd names, and 79: a \
        value not sealed by this cluster): see clusterctx-contextualize(1) or `clusterctx \
        contextualize --help`."
)]
pub struct Cli {
    /// More output: -v for debug, -vv for trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the PIN service.
    #[cfg(feature = "server")]
    Serve(crate::server::Config),
    /// The boot step: read the ucernvm block, act as master or worker, fill placeholders.
    #[command(after_help = agent::error::exit_codes_help())]
    Contextualize(agent::ContextualizeArgs),
    /// On the master, once its boot has finished: publish master_ready=yes.
    #[command(after_help = agent::error::exit_codes_help())]
    MasterReady(agent::MasterReadyArgs),
    /// Say what `contextualize` would do with these files, without touching anything.
    #[command(after_help = agent::error::exit_codes_help())]
    Check(agent::CheckArgs),
    /// Create, show or delete cluster PINs.
    #[command(subcommand)]
    Pin(manage::PinCommand),
    /// Read and write the keys of a cluster.
    #[command(subcommand)]
    Key(manage::KeyCommand),
    /// List a cluster's members in joining order, and how many of its expected size joined.
    Members(manage::MembersArgs),
    /// Write the man page or shell completions (used by packaging).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[arg(value_enum)]
    pub what: Generated,
    /// Directory to write into.
    #[arg(long, default_value = ".")]
    pub out_dir: std::path::PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Generated {
    Man,
    Completions,
    /// `openapi.json`, the PIN service's API description (a build with the server only).
    Openapi,
}

/// Writes `clusterctx.1` (and one page per subcommand), the bash, zsh and fish completions, or
/// `openapi.json` into `args.out_dir`.
pub fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use clap::CommandFactory;

    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("failed to create {}", args.out_dir.display()))?;
    let command = Cli::command();
    match args.what {
        Generated::Man => clap_mangen::generate_to(command, &args.out_dir)
            .with_context(|| format!("failed to write man pages to {}", args.out_dir.display())),
        Generated::Completions => {
            let mut command = command;
            for shell in [
                clap_complete::Shell::Bash,
                clap_complete::Shell::Zsh,
                clap_complete::Shell::Fish,
            ] {
                clap_complete::generate_to(shell, &mut command, "clusterctx", &args.out_dir)
                    .with_context(|| format!("failed to write {shell} completions"))?;
            }
            Ok(())
        }
        Generated::Openapi => write_openapi(&args.out_dir),
    }
}

#[cfg(feature = "server")]
fn write_openapi(out_dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;

    let path = out_dir.join("openapi.json");
    std::fs::write(&path, crate::server::openapi::document_text())
        .with_context(|| format!("failed to write {}", path.display()))
}

#[cfg(not(feature = "server"))]
fn write_openapi(_out_dir: &std::path::Path) -> anyhow::Result<()> {
    anyhow::bail!("this clusterctx is built without the PIN service: no OpenAPI description")
}
