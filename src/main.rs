//! `clusterctx`: parse the command line, set up logging, dispatch, map the outcome to an exit
//! code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use clusterctx::{
    agent::{error::code, AgentError},
    cli::{Cli, Command},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    clusterctx::logging::init(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // zincati style: the error, then its causes one per line.
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!(" -> {cause}");
            }
            // The unit's status line keeps the cause once the run is over.
            clusterctx::notify::status(&format!("failed: {err}"));
            // The agent's failures say their class in the code (see `clusterctx contextualize
            // --help`); anything else is a plain failure.
            ExitCode::from(
                err.downcast_ref::<AgentError>()
                    .map_or(code::FAILURE, AgentError::exit_code),
            )
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    use clusterctx::{agent, manage};
    match command {
        #[cfg(feature = "server")]
        Command::Serve(args) => clusterctx::server::run(args).await,
        Command::Contextualize(args) => Ok(agent::contextualize_command(&args).await?),
        Command::MasterReady(args) => Ok(agent::master_ready_command(&args).await?),
        Command::Check(args) => Ok(agent::check_command(&args.agent)?),
        Command::Pin(command) => manage::pin_command(&command).await,
        Command::Key(command) => manage::key_command(&command).await,
        Command::Members(args) => manage::members_command(&args).await,
        Command::Generate(args) => clusterctx::cli::generate(&args),
    }
}
