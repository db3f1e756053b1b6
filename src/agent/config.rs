//! The agent's settings: the ucernvm block of the context, overridden by the command line.

use std::{path::PathBuf, time::Duration};

use crate::{
    client::{
        failover::parse_service_urls, retry::RetryPolicy, ClientOptions, DEFAULT_REQUEST_TIMEOUT,
    },
    context::{legacy_bool, UcernvmBlock},
    secret::{ClusterSecret, Pin, CLUSTER_SECRET_KEY},
};

/// Where the legacy service lived; the default when the block names none.
pub const DEFAULT_SERVICE_URL: &str = "https://cernvm-online.cern.ch";

pub use crate::client::failover::MAX_SERVICE_URLS;

/// Keys the agent reads from the ucernvm block. The first three are the legacy ones.
pub mod keys {
    pub const PIN: &str = "cvm_cluster_pin";
    pub const MASTER: &str = "cvm_cluster_master";
    pub const SERVICE_URL: &str = "cvm_service_url";
    /// An address or an interface name to publish instead of the detected source address.
    pub const ADDRESS: &str = "cvm_cluster_address";
    /// Schedule overrides: number of tries and seconds between them.
    pub const TRIES: &str = "cvm_cluster_tries";
    pub const INTERVAL: &str = "cvm_cluster_interval";
    /// `no` lets workers fetch values without waiting for the master's `master_ready`.
    pub const WAIT_READY: &str = "cvm_cluster_wait_ready";
    /// A PEM bundle of extra trusted roots for an https service.
    pub const CA_FILE: &str = "cvm_cluster_ca_file";
    /// The cluster secret: sealing on (PROTOCOL.md part 4, "Sealed values").
    pub const SECRET: &str = super::CLUSTER_SECRET_KEY;
    /// The expected number of members, for the member placeholders.
    pub const SIZE: &str = "cvm_cluster_size";
    /// Where a secret given with `--secret-file` is named in messages.
    pub const SECRET_FILE: &str = "--secret-file";

    /// Every `cvm_cluster_*` key we know, to point out typos.
    pub const ALL: [&str; 10] = [
        PIN,
        SIZE,
        MASTER,
        SERVICE_URL,
        ADDRESS,
        TRIES,
        INTERVAL,
        WAIT_READY,
        CA_FILE,
        SECRET,
    ];
}

/// What this node is asked to be.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RoleRequest {
    Master,
    Worker,
    /// First-in election: whoever creates `master_ip` first is the master.
    Auto,
}

impl std::fmt::Display for RoleRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoleRequest::Master => "master",
            RoleRequest::Worker => "worker",
            RoleRequest::Auto => "auto (first in is master)",
        })
    }
}

impl RoleRequest {
    /// Legacy meaning of `cvm_cluster_master`: yes/true/1/on is the master, anything else or
    /// absent a worker. `auto` is ours.
    pub fn from_block_value(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("auto") => RoleRequest::Auto,
            Some(v) if legacy_bool(v) == Some(true) => RoleRequest::Master,
            _ => RoleRequest::Worker,
        }
    }
}

/// How the master's published address is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressChoice {
    /// The source address the kernel picks toward the PIN service.
    Detect,
    /// A literal address.
    Fixed(std::net::IpAddr),
    /// The first usable address of this interface.
    Interface(String),
}

impl AddressChoice {
    pub fn parse(value: &str) -> Self {
        let value = value.trim();
        match value.parse() {
            Ok(ip) => AddressChoice::Fixed(ip),
            Err(_) => AddressChoice::Interface(value.to_string()),
        }
    }
}

/// The settings the command line can give, each winning over the block. Defined once: these
/// fields are the agent's flags (`clap` flattens this struct into each agent subcommand), so a
/// new setting is one field here and one key in [`keys`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Number of tries (default 50, or cvm_cluster_tries).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub tries: Option<u32>,
    /// Seconds between tries, fractions allowed (default 30, or cvm_cluster_interval).
    #[arg(long, value_name = "SECS", value_parser = parse_interval)]
    pub interval: Option<Duration>,
    /// The PIN service URL (default: cvm_service_url, else https://cernvm-online.cern.ch).
    /// Repeat it (or give URL1,URL2) for replicas: a transient failure moves to the next.
    #[arg(long, value_name = "URL")]
    pub service_url: Vec<String>,
    /// Extra trusted CA certificates (PEM) for an https service (or cvm_cluster_ca_file).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The cluster PIN (default: cvm_cluster_pin).
    #[arg(long, value_name = "PIN", value_parser = parse_pin)]
    pub pin: Option<Pin>,
    /// This node's role (default: cvm_cluster_master: yes = master, auto = election).
    #[arg(long, value_enum)]
    pub role: Option<RoleRequest>,
    /// Address or interface name to publish as master_ip (default: cvm_cluster_address, else
    /// the source address toward the PIN service).
    #[arg(long, value_name = "ADDR|IFACE")]
    pub address: Option<String>,
    /// Workers fetch values without waiting for master_ready (or cvm_cluster_wait_ready=no).
    #[arg(long)]
    pub no_wait_ready: bool,
    /// Seconds one request may take before it counts as a timeout and is retried (default
    /// 20; a long-poll adds its wait).
    #[arg(long, value_name = "SECS", value_parser = parse_interval)]
    pub request_timeout: Option<Duration>,
    /// Seal what this node publishes and open what it reads with the cluster secret in FILE
    /// (mode 0600; or cvm_cluster_secret). A file, never a flag: a flag shows in `ps`.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Members to wait for before filling the member placeholders (or cvm_cluster_size).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_024))]
    pub cluster_size: Option<u32>,
}

/// `--pin`: wrapped at once so that no `Debug` print of the arguments shows it.
fn parse_pin(text: &str) -> Result<Pin, std::convert::Infallible> {
    Ok(Pin::new(text))
}

/// Everything a contextualization run needs to know, settled before any network traffic.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub pin: Pin,
    pub role: RoleRequest,
    /// Normalized base URLs of the PIN service, in the order given: replicas of one
    /// service, tried in turn on transient failures ([`crate::client::failover`]).
    pub service_urls: Vec<String>,
    /// The same as one comma-separated text, for log fields and messages.
    pub service_label: String,
    pub address: AddressChoice,
    pub policy: RetryPolicy,
    /// Workers wait for `master_ready` before fetching values (the legacy behaviour).
    pub wait_ready: bool,
    /// How to reach the service: CA bundle, request timeout.
    pub client: ClientOptions,
    /// The cluster secret, when the cluster is sealed. Shows nothing of itself in `Debug`.
    pub secret: Option<ClusterSecret>,
    /// The expected number of members (`cvm_cluster_size`), if given.
    pub cluster_size: Option<u32>,
    /// Non-fatal remarks for the log and for `clusterctx check`.
    pub warnings: Vec<String>,
}

/// A setting that cannot be used as given.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

impl AgentConfig {
    /// Builds the settings, or `Ok(None)` when there is no PIN: no cluster contextualization
    /// asked for, which is not an error.
    pub fn resolve(
        block: Option<&UcernvmBlock>,
        overrides: &Overrides,
    ) -> Result<Option<Self>, ConfigError> {
        let from_block = |key: &str| block.and_then(|b| b.get(key)).map(str::trim);
        let Some(pin) = overrides
            .pin
            .as_ref()
            .map(Pin::expose)
            .or_else(|| from_block(keys::PIN))
            .filter(|p| !p.is_empty())
        else {
            return Ok(None);
        };
        let mut warnings = Vec::new();

        let role = overrides
            .role
            .unwrap_or_else(|| RoleRequest::from_block_value(from_block(keys::MASTER)));

        // Every flag and the block's value may list several URLs separated by commas.
        let raw_urls: Vec<&str> = if overrides.service_url.is_empty() {
            vec![from_block(keys::SERVICE_URL).unwrap_or(DEFAULT_SERVICE_URL)]
        } else {
            overrides.service_url.iter().map(String::as_str).collect()
        };
        let (service_urls, url_warnings) = parse_service_urls(&raw_urls, keys::SERVICE_URL)
            .map_err(|e| ConfigError {
                key: keys::SERVICE_URL,
                message: e.to_string(),
            })?;
        warnings.extend(url_warnings);
        let service_label = service_urls.join(",");

        let address = overrides
            .address
            .as_deref()
            .or_else(|| from_block(keys::ADDRESS))
            .filter(|a| !a.is_empty())
            .map_or(AddressChoice::Detect, AddressChoice::parse);

        let tries = match overrides.tries {
            Some(tries) => tries,
            None => match from_block(keys::TRIES) {
                Some(text) => parse_tries(text)?,
                None => RetryPolicy::DEFAULT.tries,
            },
        };
        let interval = match overrides.interval {
            Some(interval) => interval,
            None => match from_block(keys::INTERVAL) {
                Some(text) => parse_interval(text).map_err(|message| ConfigError {
                    key: keys::INTERVAL,
                    message,
                })?,
                None => RetryPolicy::DEFAULT.interval,
            },
        };

        let wait_ready = if overrides.no_wait_ready {
            false
        } else {
            match from_block(keys::WAIT_READY) {
                None => true,
                Some(text) => legacy_bool(text).ok_or_else(|| ConfigError {
                    key: keys::WAIT_READY,
                    message: format!("{text:?} is not yes or no"),
                })?,
            }
        };

        let client = ClientOptions {
            ca_file: overrides
                .ca_file
                .clone()
                .or_else(|| from_block(keys::CA_FILE).map(PathBuf::from)),
            request_timeout: overrides.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
        };

        let secret = match &overrides.secret_file {
            Some(path) => Some(ClusterSecret::from_file(path).map_err(|err| ConfigError {
                key: keys::SECRET_FILE,
                message: error_chain(&err),
            })?),
            // Present but empty is a mistake, not "no sealing": refusing it fails closed.
            None => from_block(keys::SECRET)
                .map(|text| {
                    ClusterSecret::parse(text).map_err(|err| ConfigError {
                        key: keys::SECRET,
                        message: err.to_string(),
                    })
                })
                .transpose()?,
        };

        let cluster_size = match overrides.cluster_size {
            Some(size) => Some(size),
            None => from_block(keys::SIZE)
                .map(|text| match text.parse::<u32>() {
                    Ok(size) if (1..=1_024).contains(&size) => Ok(size),
                    _ => Err(ConfigError {
                        key: keys::SIZE,
                        message: format!("{text:?} is not a number of members between 1 and 1024"),
                    }),
                })
                .transpose()?,
        };

        Ok(Some(AgentConfig {
            pin: Pin::new(pin),
            cluster_size,
            role,
            service_urls,
            service_label,
            address,
            policy: RetryPolicy { tries, interval },
            wait_ready,
            client,
            secret,
            warnings,
        }))
    }
}

/// `err` and its causes as one line, for a [`ConfigError`]'s message.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn parse_tries(text: &str) -> Result<u32, ConfigError> {
    match text.parse::<u32>() {
        Ok(tries) if (1..=10_000).contains(&tries) => Ok(tries),
        _ => Err(ConfigError {
            key: keys::TRIES,
            message: format!("{text:?} is not a number of tries between 1 and 10000"),
        }),
    }
}

/// Seconds, fractions allowed (`0.5`), between 0.05 s and one hour.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if (0.05..=3600.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0.05 and 3600"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_master_values() {
        for yes in ["yes", "true", "True", "1", "on", " YES "] {
            assert_eq!(
                RoleRequest::from_block_value(Some(yes)),
                RoleRequest::Master
            );
        }
        for no in ["no", "0", "maybe", ""] {
            assert_eq!(RoleRequest::from_block_value(Some(no)), RoleRequest::Worker);
        }
        assert_eq!(RoleRequest::from_block_value(None), RoleRequest::Worker);
        assert_eq!(
            RoleRequest::from_block_value(Some("Auto")),
            RoleRequest::Auto
        );
    }

    #[test]
    fn no_pin_means_nothing_to_do() {
        assert!(AgentConfig::resolve(None, &Overrides::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn overrides_and_defaults() {
        let overrides = Overrides {
            pin: Some(Pin::new("enico1qq0oey")),
            tries: Some(3),
            interval: Some(Duration::from_secs(1)),
            ..Overrides::default()
        };
        let config = AgentConfig::resolve(None, &overrides).unwrap().unwrap();
        assert_eq!(config.service_urls, [DEFAULT_SERVICE_URL]);
        assert_eq!(config.role, RoleRequest::Worker);
        assert_eq!(config.policy.tries, 3);
        assert_eq!(config.address, AddressChoice::Detect);
        assert!(config.wait_ready);
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn the_cluster_secret_comes_from_the_block_or_a_file_and_is_checked() {
        use std::os::unix::fs::PermissionsExt;
        const SECRET: &str = "Zq3_xT8-vKp2LmN9wRb7sA";
        const OTHER: &str = "Zq3_xT8-vKp2LmN9wRb7sB";
        let block = |line: &str| {
            let text =
                format!("[ucernvm-begin]\ncvm_cluster_pin=enico1qq0oey\n{line}\n[ucernvm-end]\n");
            crate::context::ContextFile::from_bytes("user-data", text.into_bytes())
                .block()
                .unwrap()
                .unwrap()
        };
        let resolve = |block: &UcernvmBlock, overrides: &Overrides| {
            AgentConfig::resolve(Some(block), overrides).map(|c| c.unwrap().secret)
        };
        let plain = Overrides::default();

        let secret = resolve(&block(&format!("cvm_cluster_secret={SECRET}")), &plain).unwrap();
        assert_eq!(secret.unwrap().expose(), SECRET);
        assert!(resolve(&block(""), &plain).unwrap().is_none());

        for (line, says) in [
            ("cvm_cluster_secret=", "too short: 0 characters"),
            (
                "cvm_cluster_secret=Zq3_xT8-vKp2",
                "too short: 12 characters",
            ),
            ("cvm_cluster_secret=Zq3_xT8-vKp2LmN9wRb7s!", "character 22"),
        ] {
            let err = resolve(&block(line), &plain).unwrap_err();
            let text = err.to_string();
            assert_eq!(err.key, keys::SECRET);
            assert!(
                text.starts_with("cvm_cluster_secret: ") && text.contains(says),
                "{text}"
            );
            assert!(!text.contains("Zq3"), "{text}");
        }

        // The file wins over the block; one that others can read is refused.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{OTHER}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let from_file = Overrides {
            secret_file: Some(path.clone()),
            ..Overrides::default()
        };
        let with_block = block(&format!("cvm_cluster_secret={SECRET}"));
        let secret = resolve(&with_block, &from_file).unwrap().unwrap();
        assert_eq!(secret.expose(), OTHER);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = resolve(&with_block, &from_file).unwrap_err();
        assert_eq!(err.key, keys::SECRET_FILE);
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(!format!("{err} {err:?}").contains("Zq3"), "{err}");
    }

    #[test]
    fn several_service_urls_from_the_block_or_repeated_flags() {
        let block = |urls: &str| {
            let text = format!(
                "[ucernvm-begin]\ncvm_cluster_pin=enico1qq0oey\ncvm_service_url={urls}\n[ucernvm-end]\n"
            );
            crate::context::ContextFile::from_bytes("user-data", text.into_bytes())
                .block()
                .unwrap()
                .unwrap()
        };
        let plain = Overrides::default();
        let config = AgentConfig::resolve(
            Some(&block(
                "https://a.example/ , b.example:8000,https://a.example",
            )),
            &plain,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            config.service_urls,
            ["https://a.example", "http://b.example:8000"]
        );
        assert_eq!(
            config.service_label,
            "https://a.example,http://b.example:8000"
        );
        assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);

        // The flags win over the block, each may list several, and each is checked.
        let flags = Overrides {
            service_url: vec![
                "https://c.example".into(),
                "https://d.example,https://e.example".into(),
            ],
            ..Overrides::default()
        };
        let config = AgentConfig::resolve(Some(&block("https://a.example")), &flags)
            .unwrap()
            .unwrap();
        assert_eq!(
            config.service_urls,
            [
                "https://c.example",
                "https://d.example",
                "https://e.example"
            ]
        );
        for bad in [
            "https://a.example,,https://b.example",
            "https://a.example,ftp://b",
            "https://a.example,",
        ] {
            let err = AgentConfig::resolve(Some(&block(bad)), &plain).unwrap_err();
            assert_eq!(err.key, keys::SERVICE_URL, "{bad}: {err}");
        }
        let many = (0..=MAX_SERVICE_URLS)
            .map(|n| format!("https://r{n}.example"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(AgentConfig::resolve(Some(&block(&many)), &plain).is_err());
    }

    #[test]
    fn address_choice() {
        assert_eq!(
            AddressChoice::parse("10.0.0.5"),
            AddressChoice::Fixed("10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            AddressChoice::parse("fd00::5"),
            AddressChoice::Fixed("fd00::5".parse().unwrap())
        );
        assert_eq!(
            AddressChoice::parse("eth1"),
            AddressChoice::Interface("eth1".into())
        );
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("abc").is_err());
        assert!(parse_interval("NaN").is_err());
    }
}
