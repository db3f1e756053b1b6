//! Manual commands for people and scripts: `clusterctx pin ...` and `clusterctx key ...`.

use std::{io::IsTerminal, path::PathBuf, time::Duration};

use anyhow::Context;

use crate::{
    client::{normalize_service_url, ClientOptions, Created, PinClient},
    secret::{AdminToken, Pin},
};

/// How to reach the service.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The PIN service URL.
    #[arg(long, env = "CLUSTERCTX_SERVICE", value_name = "URL")]
    pub service: String,
    /// Extra trusted CA certificates (PEM) for an https service.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ServiceArgs {
    fn client(&self) -> anyhow::Result<PinClient> {
        let (url, schemeless) = normalize_service_url(&self.service)?;
        if schemeless {
            tracing::warn!("no scheme in {}: using {url}", self.service);
        }
        Ok(PinClient::new(
            &url,
            &ClientOptions {
                ca_file: self.ca_file.clone(),
                ..ClientOptions::default()
            },
        )?)
    }
}

/// The admin token, for commands that change or delete.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The cluster's admin token (printed by `pin create`).
    #[arg(
        long,
        env = "CLUSTERCTX_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        value_parser = parse_token
    )]
    pub token: Option<AdminToken>,
}

/// PINs and tokens are wrapped as they are parsed, so that no `Debug` print of the command
/// line shows them.
fn parse_pin(text: &str) -> Result<Pin, std::convert::Infallible> {
    Ok(Pin::new(text))
}

fn parse_token(text: &str) -> Result<AdminToken, std::convert::Infallible> {
    Ok(AdminToken::new(text))
}

#[derive(Debug, clap::Subcommand)]
pub enum PinCommand {
    /// Create a cluster PIN. Prints the PIN alone on stdout (for scripts); the expiry and, on
    /// a terminal, the admin token go to stderr (use --token-file or --json to keep the token).
    Create {
        #[command(flatten)]
        service: ServiceArgs,
        /// Print the service's whole JSON answer on stdout instead.
        #[arg(long)]
        json: bool,
        /// Write the admin token to this file (mode 0600) instead of stderr.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// Show a PIN's creation and expiry times.
    Show {
        #[command(flatten)]
        service: ServiceArgs,
        #[arg(value_parser = parse_pin)]
        pin: Pin,
    },
    /// Delete a PIN and its keys.
    Delete {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        token: TokenArgs,
        #[arg(value_parser = parse_pin)]
        pin: Pin,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Print a key's value.
    Get {
        #[command(flatten)]
        service: ServiceArgs,
        #[arg(value_parser = parse_pin)]
        pin: Pin,
        key: String,
        /// Wait up to this many seconds for the key to appear (long-poll).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=60))]
        wait: Option<u64>,
    },
    /// Create a key (create-only: fails if it exists), or replace it with --replace.
    Set {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        token: TokenArgs,
        /// Replace an existing value (needs the admin token).
        #[arg(long)]
        replace: bool,
        #[arg(value_parser = parse_pin)]
        pin: Pin,
        key: String,
        value: String,
    },
    /// List a cluster's keys as `key: value` lines.
    List {
        #[command(flatten)]
        service: ServiceArgs,
        #[arg(value_parser = parse_pin)]
        pin: Pin,
    },
    /// Delete a key (needs the admin token).
    Delete {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        token: TokenArgs,
        #[arg(value_parser = parse_pin)]
        pin: Pin,
        key: String,
    },
}

pub async fn pin_command(command: &PinCommand) -> anyhow::Result<()> {
    match command {
        PinCommand::Create {
            service,
            json,
            token_file,
        } => {
            let info = service.client()?.create_cluster().await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&info)?);
                return Ok(());
            }
            println!("{}", info.pin);
            if let Some(expires_at) = &info.expires_at {
                eprintln!("expires at {expires_at}");
            }
            match (&info.admin_token, token_file) {
                (Some(token), Some(path)) => {
                    write_private(path, token)?;
                    eprintln!("admin token written to {}", path.display());
                }
                // On a terminal a person reads it; elsewhere stderr tends to end up in a log.
                (Some(token), None) if std::io::stderr().is_terminal() => {
                    eprintln!("admin token (needed to replace or delete keys; keep it): {token}")
                }
                (Some(_), None) => eprintln!(
                    "admin token not shown (stderr is not a terminal): use --token-file FILE \
                     or --json to keep it"
                ),
                (None, _) => eprintln!("this service issues no admin token (legacy)"),
            }
        }
        PinCommand::Show { service, pin } => {
            let info = service.client()?.cluster(pin).await?;
            println!("pin: {}", info.pin);
            println!("creation_time: {}", info.creation_time);
            if let Some(expires_at) = info.expires_at {
                println!("expires_at: {expires_at}");
            }
        }
        PinCommand::Delete {
            service,
            token,
            pin,
        } => {
            service
                .client()?
                .delete_cluster(pin, token.token.as_ref())
                .await?;
        }
    }
    Ok(())
}

pub async fn key_command(command: &KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Get {
            service,
            pin,
            key,
            wait,
        } => {
            let value = service
                .client()?
                .get_key(pin, key, wait.map(Duration::from_secs))
                .await?;
            match value {
                Some(value) => println!("{value}"),
                None => anyhow::bail!("no key {key} in this cluster"),
            }
        }
        KeyCommand::Set {
            service,
            token,
            replace,
            pin,
            key,
            value,
        } => {
            let client = service.client()?;
            if *replace {
                client
                    .put_key(pin, key, value, token.token.as_ref())
                    .await?;
            } else if client.create_key(pin, key, value).await? == Created::AlreadyExists {
                anyhow::bail!("key {key} exists already; use --replace (with the admin token)");
            }
        }
        KeyCommand::List { service, pin } => {
            for item in service.client()?.list_keys(pin).await? {
                println!("{}", crate::protocol::render_text(&item.key, &item.value));
            }
        }
        KeyCommand::Delete {
            service,
            token,
            pin,
            key,
        } => {
            service
                .client()?
                .delete_key(pin, key, token.token.as_ref())
                .await?;
        }
    }
    Ok(())
}

fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    writeln!(file, "{text}").with_context(|| format!("failed to write {}", path.display()))
}
