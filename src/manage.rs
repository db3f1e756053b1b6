//! Manual commands for people and scripts: `clusterctx pin ...`, `clusterctx key ...` and
//! `clusterctx members`.

use std::{cell::Cell, io::IsTerminal, path::PathBuf, time::Duration};

use anyhow::Context;

use crate::{
    client::{
        failover::parse_service_urls, ClientError, ClientOptions, Created, Services,
        DEFAULT_REQUEST_TIMEOUT,
    },
    protocol::MemberItem,
    seal::{Sealer, MEMBER_ADDRESS_KEY},
    secret::{AdminToken, ClusterSecret, Pin, CLUSTER_SECRET_KEY},
};

/// The slot of a call that does not wait: it only bounds what a long-poll would be given.
const ONE_TRY: Duration = DEFAULT_REQUEST_TIMEOUT;

/// How to reach the service.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The PIN service URL. Repeat it (or give URL1,URL2) for replicas of one service: a
    /// transient failure (refused, timed out, 5xx) moves on to the next.
    #[arg(
        long,
        visible_alias = "service-url",
        env = "CLUSTERCTX_SERVICE",
        value_name = "URL",
        required = true
    )]
    pub service: Vec<String>,
    /// Extra trusted CA certificates (PEM) for an https service.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ServiceArgs {
    /// The normalized URLs, in order, each once (remarks logged as warnings).
    fn urls(&self) -> anyhow::Result<Vec<String>> {
        let raw: Vec<&str> = self.service.iter().map(String::as_str).collect();
        let (urls, warnings) = parse_service_urls(&raw, "--service")?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        Ok(urls)
    }

    fn services(&self) -> anyhow::Result<Services> {
        Ok(Services::new(
            &self.urls()?,
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
    /// Show a PIN's creation and expiry times, and its members in joining order.
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
            let services = service.services()?;
            // A create that timed out may have committed on that URL: the next one then
            // makes another PIN, and the first expires unused.
            let info = services
                .attempt(ONE_TRY, |client, _| client.create_cluster())
                .await?;
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
                println!("{}", secret.expose());
                print!(
                    "{}",
                    ucernvm_blocks(&info.pin, secret, &service.urls()?.join(","))
                );
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
            let services = service.services()?;
            let info = services
                .attempt(ONE_TRY, |client, _| client.cluster(pin))
                .await?;
            println!("pin: {}", info.pin);
            println!("creation_time: {}", info.creation_time);
            if let Some(expires_at) = info.expires_at {
                println!("expires_at: {expires_at}");
            }
            match fetch_members(&services, pin, None, None).await? {
                Some(members) => {
                    println!("members: {}", members.len());
                    if !members.is_empty() {
                        print!("{}", members_table(&members, "  "));
                    }
                }
                None => println!("members: not kept by this service"),
            }
        }
        PinCommand::Delete {
            service,
            token,
            pin,
        } => {
            let token = token.token.as_ref();
            service
                .services()?
                .attempt(ONE_TRY, |client, _| client.delete_cluster(pin, token))
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
            let wait = wait.map(Duration::from_secs);
            let value = service
                .services()?
                .attempt(wait.unwrap_or(ONE_TRY), |client, left| {
                    client.get_key(pin, key, wait.map(|_| left))
                })
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
            let services = service.services()?;
            let token = token.token.as_ref();
            // Sealed once: a create repeated on the next URL then sends the same text.
            let value = &match secret.sealer(pin)? {
                Some(sealer) => sealer.seal(key, value)?,
                None => value.clone(),
            };
            if *replace {
                services
                    .attempt(ONE_TRY, |client, _| client.put_key(pin, key, value, token))
                    .await?;
                return Ok(());
            }
            let calls = Cell::new(0);
            let created = services
                .attempt(ONE_TRY, |client, _| {
                    calls.set(calls.get() + 1);
                    client.create_key(pin, key, value)
                })
                .await?;
            if created == Created::AlreadyExists {
                // After a failover the 409 may be our own create, committed by the URL that
                // timed out: the same text is ours.
                let ours = calls.get() > 1
                    && services
                        .attempt(ONE_TRY, |client, _| client.get_key(pin, key, None))
                        .await?
                        .as_deref()
                        == Some(value.as_str());
                if !ours {
                    anyhow::bail!("key {key} exists already; use --replace (with the admin token)");
                }
            }
        }
        KeyCommand::List { service, pin } => {
            let services = service.services()?;
            let items = services
                .attempt(ONE_TRY, |client, _| client.list_keys(pin))
                .await?;
            for item in items {
                println!("{}", crate::protocol::render_text(&item.key, &item.value));
            }
        }
        KeyCommand::Delete {
            service,
            token,
            pin,
            key,
        } => {
            let token = token.token.as_ref();
            service
                .services()?
                .attempt(ONE_TRY, |client, _| client.delete_key(pin, key, token))
                .await?;
        }
    }
    Ok(())
}

/// `clusterctx members PIN`.
#[derive(Debug, clap::Args)]
pub struct MembersArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Print JSON (`count`, `cluster_size`, `members`) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// The cluster's expected size: also say how many of it have joined ("7 of 10 joined").
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cluster_size: Option<u32>,
    /// Wait up to this many seconds for --cluster-size members (long-poll); fail if fewer
    /// joined by then (the list as it stands is printed either way).
    #[arg(
        long,
        value_name = "SECS",
        requires = "cluster_size",
        value_parser = clap::value_parser!(u64).range(0..=60)
    )]
    pub wait: Option<u64>,
    #[command(flatten)]
    pub secret: SecretArgs,
    #[arg(value_parser = parse_pin)]
    pub pin: Pin,
}

pub async fn members_command(args: &MembersArgs) -> anyhow::Result<()> {
    let services = args.service.services()?;
    let sealer = args.secret.sealer(&args.pin)?;
    let size = args.cluster_size;
    let wait = args.wait.map(Duration::from_secs);
    let Some(mut members) = fetch_members(&services, &args.pin, size, wait).await? else {
        anyhow::bail!("{}", no_member_list(&services));
    };
    if let Some(sealer) = &sealer {
        open_addresses(&mut members, sealer)?;
    }
    if args.json {
        let answer = serde_json::json!({
            "count": members.len(),
            "cluster_size": size,
            "members": members,
        });
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", members_table(&members, ""));
        println!("{}", joined_summary(members.len(), size));
    }
    if let (Some(size), Some(wait)) = (size, args.wait) {
        if members.len() < size as usize {
            anyhow::bail!(
                "only {} of {size} members joined within {wait} s",
                members.len()
            );
        }
    }
    Ok(())
}

/// The members in joining order; `Ok(None)` when the service keeps no member list (a legacy
/// one, or ours from before membership: a 404 without our error message). With `size` and
/// `wait`, long-polls until that many have joined.
async fn fetch_members(
    services: &Services,
    pin: &Pin,
    size: Option<u32>,
    wait: Option<Duration>,
) -> anyhow::Result<Option<Vec<MemberItem>>> {
    let min = size.map(|size| size as usize);
    let answer = services
        .attempt(wait.unwrap_or(ONE_TRY), |client, left| {
            client.members(pin, min, wait.map(|_| left))
        })
        .await;
    match answer {
        Ok(members) => Ok(Some(members)),
        Err(ClientError::Status { status, detail, .. })
            if status == reqwest::StatusCode::NOT_FOUND
                && (detail.is_none() || services.server_kind().is_some_and(|k| k.is_legacy())) =>
        {
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

fn no_member_list(services: &Services) -> String {
    format!(
        "the PIN service at {} keeps no member list (a legacy service, or a clusterctx from \
         before membership)",
        services.current_url()
    )
}

/// Sealed addresses opened in place; a plain one is left as the service holds it.
fn open_addresses(members: &mut [MemberItem], sealer: &Sealer) -> anyhow::Result<()> {
    for member in members {
        if crate::seal::is_sealed(&member.address) {
            member.address = sealer
                .open(MEMBER_ADDRESS_KEY, &member.address)
                .with_context(|| format!("the address of member {}", member.node))?;
        }
    }
    Ok(())
}

/// A header and one line per member, columns aligned, each line after `indent`.
fn members_table(members: &[MemberItem], indent: &str) -> String {
    let header = ["NODE", "ROLE", "ADDRESS", "JOINED_AT", "LAST_SEEN"];
    let rows: Vec<[&str; 5]> = members
        .iter()
        .map(|m| {
            [
                m.node.as_str(),
                m.role.as_str(),
                m.address.as_str(),
                m.joined_at.as_str(),
                m.last_seen.as_str(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        out.push_str(indent);
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// "7 members", and with an expected size "7 of 10 joined" on a second line.
fn joined_summary(count: usize, size: Option<u32>) -> String {
    let plural = if count == 1 { "" } else { "s" };
    let mut line = format!("{count} member{plural}");
    if let Some(size) = size {
        line.push_str(&format!("\n{count} of {size} joined"));
        if count > size as usize {
            line.push_str(&format!(" (the first {size} fill the member lists)"));
        }
    }
    line
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
