//! `clusterctx`: parse the command line, set up logging, dispatch, map the outcome to an exit
//! code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use clusterctx::cli::{Cli, Command};

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
        Ok(code) => code,
        Err(err) => {
            // zincati style: the error, then its causes one per line.
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!(" -> {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        #[cfg(feature = "server")]
        Command::Serve(args) => clusterctx::server::run(args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Contextualize(args) => clusterctx::agent::contextualize_command(&args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::MasterReady(args) => clusterctx::agent::master_ready_command(&args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Check(args) => {
            clusterctx::agent::check::run(&args.agent).map(|()| ExitCode::SUCCESS)
        }
        Command::Pin(command) => clusterctx::manage::pin_command(&command)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Key(command) => clusterctx::manage::key_command(&command)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Generate(args) => clusterctx::cli::generate(&args).map(|()| ExitCode::SUCCESS),
    }
}
