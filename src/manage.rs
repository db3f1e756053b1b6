//! Manual commands for people and scripts: `clusterctx pin ...` and `clusterctx key ...`.

use std::{io::IsTerminal, path::PathBuf, time::Duration};

use anyhow::Context;

use crate::{
    client::{normalize_service_url, ClientOptions, Created, PinClient},
    seal::Sealer,
    secret::{AdminToken, ClusterSecret, Pin, CLUSTER_SECRET_KEY},
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

/// The cluster secret of a sealed cluster, from a file only: on the command line it would show
/// in `ps` and in shell histories.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretArgs {
    /// Seal (set) or open (get) the value with the cluster secret in FILE (mode 0600 or
    /// stricter; one trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
}

impl SecretArgs {
    fn sealer(&self, pin: &Pin) -> anyhow::Result<Option<Sealer>> {
        let Some(path) = &self.secret_file else {
            return Ok(None);
        };
        Ok(Some(Sealer::new(&ClusterSecret::from_file(path)?, pin)))
    }
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
        /// Also make a fresh cluster secret (sealed values: the service never sees it) and
        /// print it on stdout after the PIN, with ready-to-paste ucernvm blocks.
        #[arg(long)]
        secret: bool,
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
        #[command(flatten)]
        secret: SecretArgs,
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
        #[command(flatten)]
        secret: SecretArgs,
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
            secret,
        } => {
            // Made before the PIN, so that a broken random source wastes no PIN.
            let secret = secret.then(ClusterSecret::generate).transpose()?;
            let info = service.client()?.create_cluster().await?;
            if *json {
                let mut answer = serde_json::to_value(&info)?;
                if let Some(secret) = &secret {
                    answer["cluster_secret"] = secret.expose().into();
                }
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            println!("{}", info.pin);
            if let Some(secret) = &secret {
                let (url, _) = normalize_service_url(&service.service)?;
                println!("{}", secret.expose());
                print!("{}", ucernvm_blocks(&info.pin, secret, &url));
                eprintln!(
                    "cluster secret made here, never sent to the service: keep it with the \
                     blocks, it cannot be recovered"
                );
            }
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
            secret,
        } => {
            let sealer = secret.sealer(pin)?;
            let value = service
                .client()?
                .get_key(pin, key, wait.map(Duration::from_secs))
                .await?;
            match (value, sealer) {
                (Some(value), Some(sealer)) => println!("{}", sealer.open(key, &value)?),
                (Some(value), None) => println!("{value}"),
                (None, _) => anyhow::bail!("no key {key} in this cluster"),
            }
        }
        KeyCommand::Set {
            service,
            token,
            replace,
            pin,
            key,
            value,
            secret,
        } => {
            let client = service.client()?;
            let value = &match secret.sealer(pin)? {
                Some(sealer) => sealer.seal(key, value)?,
                None => value.clone(),
            };
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

/// The three ucernvm blocks of a sealed cluster: master, worker, and first-in election.
fn ucernvm_blocks(pin: &str, secret: &ClusterSecret, url: &str) -> String {
    let mut out = String::new();
    for (title, master) in [
        ("master", Some("yes")),
        ("worker", None),
        ("any node (the first in is the master)", Some("auto")),
    ] {
        out.push_str(&format!(
            "\n# {title}\n[ucernvm-begin]\ncvm_cluster_pin={pin}\n{CLUSTER_SECRET_KEY}={}\n",
            secret.expose()
        ));
        if let Some(master) = master {
            out.push_str(&format!("cvm_cluster_master={master}\n"));
        }
        out.push_str(&format!("cvm_service_url={url}\n[ucernvm-end]\n"));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_read_back_as_the_agent_reads_them() {
        let secret = ClusterSecret::generate().unwrap();
        let text = ucernvm_blocks("enico1qq0oey", &secret, "https://pins.example.org");
        let blocks: Vec<&str> = text.split("\n\n").collect();
        assert_eq!(blocks.len(), 3, "{text}");
        for (block, master) in blocks.iter().zip([Some("yes"), None, Some("auto")]) {
            let parsed = crate::context::ContextFile::from_bytes("block", block.as_bytes())
                .block()
                .expect("well-formed")
                .expect("a block");
            assert_eq!(parsed.get("cvm_cluster_pin"), Some("enico1qq0oey"));
            assert_eq!(parsed.get(CLUSTER_SECRET_KEY), Some(secret.expose()));
            assert_eq!(parsed.get("cvm_cluster_master"), master);
            assert_eq!(
                parsed.get("cvm_service_url"),
                Some("https://pins.example.org")
            );
        }
    }
}
