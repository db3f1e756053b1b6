//! Why an agent run failed, and the exit code that tells systemd (and `systemctl status`).
//!
//! The codes are the BSD `sysexits.h` ones, which systemd knows by name
//! (`status=75/TEMPFAIL`), so a unit's failure says its cause without the journal. They stay
//! clear of 1 (an unexpected failure) and 2 (a wrong command line, as clap exits). One code is
//! our own, 79 right after them: a value at the service that this cluster did not seal, which
//! no `sysexits.h` class means and which deserves an alert of its own (someone who knows the
//! PIN is interfering, or a node runs with another secret).
//! [`EXIT_CODES`] is the table that `--help`, the man page and the README show.

use std::net::IpAddr;

use reqwest::StatusCode;

use super::address::AddressError;
use crate::{
    client::{retry::RetryError, ClientError},
    context::ValueError,
    seal::{OpenError, SealError},
    secret::Pin,
};

/// A failure whose own message and causes are already written (a file error with its path,
/// a setting with its key): kept whole, sorted into a class by the variant it is put in.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// The exit codes, named as `sysexits.h` and systemd name them.
pub mod code {
    /// Something this table does not sort: a bug, or a failure of the OS itself.
    pub const FAILURE: u8 = 1;
    pub const DATAERR: u8 = 65;
    pub const NOINPUT: u8 = 66;
    pub const NOUSER: u8 = 67;
    pub const UNAVAILABLE: u8 = 69;
    pub const CANTCREAT: u8 = 73;
    pub const TEMPFAIL: u8 = 75;
    pub const PROTOCOL: u8 = 76;
    pub const NOPERM: u8 = 77;
    pub const CONFIG: u8 = 78;
    /// Ours, not `sysexits.h`: a value at the service was not sealed by this cluster.
    pub const NOTSEALED: u8 = 79;
    /// Ours: files need member placeholders and the service keeps no member list.
    pub const NOMEMBERS: u8 = 80;
}

/// One row of the exit code table.
pub struct ExitCodeRow {
    pub code: u8,
    /// What happened.
    pub meaning: &'static str,
    /// Whether running the unit again later can succeed without anyone changing anything.
    pub retry_helps: bool,
}

/// Every code the agent's commands exit with, for `--help`, the man page and the README.
pub const EXIT_CODES: &[ExitCodeRow] = &[
    ExitCodeRow {
        code: 0,
        meaning: "done, or nothing to do (no context file, no cvm_cluster_pin, not the master)",
        retry_helps: false,
    },
    ExitCodeRow {
        code: code::FAILURE,
        meaning: "an unexpected failure; the message says what",
        retry_helps: true,
    },
    ExitCodeRow {
        code: 2,
        meaning: "the command line is wrong",
        retry_helps: false,
    },
    ExitCodeRow {
        code: code::DATAERR,
        meaning: "DATAERR: a value from the service was refused as unsafe for a context file",
        retry_helps: false,
    },
    ExitCodeRow {
        code: code::NOINPUT,
        meaning: "NOINPUT: a context file is unreadable or malformed",
        retry_helps: false,
    },
    ExitCodeRow {
        code: code::NOUSER,
        meaning: "NOUSER: the PIN service does not know the PIN, or it has expired",
        retry_helps: false,
    },
    ExitCodeRow {
        code: code::UNAVAILABLE,
        meaning: "UNAVAILABLE: the service was unreachable or failing until the window closed",
        retry_helps: true,
    },
    ExitCodeRow {
        code: code::CANTCREAT,
        meaning: "CANTCREAT: a context file or the state file cannot be written",
        retry_helps: false,
    },
    ExitCodeRow {
        code: code::TEMPFAIL,
        meaning: "TEMPFAIL: the window closed waiting for a key; master-ready: not contextualized",
        retry_helps: true,
    },
    ExitCodeRow {
        code: code::PROTOCOL,
        meaning: "PROTOCOL: the service refused the request or answered something unusable",
        retry_helps: false,
    },
    ExitCodeRow {
        code: code::NOPERM,
        meaning: "NOPERM: another master holds the PIN (master_ip is someone else's)",
        retry_helps: false,
    },
    ExitCodeRow {
        code: code::CONFIG,
        meaning: "CONFIG: a wrong setting, CA file, interface name or secret; an untrusted TLS certificate",
        retry_helps: false,
    },
    ExitCodeRow {
        code: code::NOTSEALED,
        meaning: "NOTSEALED: a value was not sealed by this cluster; on a master: the PIN is taken over",
        retry_helps: false,
    },
    ExitCodeRow {
        code: code::NOMEMBERS,
        meaning: "NOMEMBERS: files use member placeholders but the PIN service has no member list (legacy)",
        retry_helps: false,
    },
];

/// The table as the `after_help` of the agent's subcommands (and so their man pages).
pub fn exit_codes_help() -> String {
    let mut text = String::from(
        "Exit codes (\"again\": running the unit again later can succeed as it is):\n",
    );
    for row in EXIT_CODES {
        let again = if row.retry_helps { " (again)" } else { "" };
        text.push_str(&format!("  {:>3}  {}{again}\n", row.code, row.meaning));
    }
    text
}

/// Why a run failed. Each variant is one class of [`EXIT_CODES`].
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A setting that cannot be used: in the block, on the command line, the CA file, the
    /// service URL.
    #[error(transparent)]
    Config(Cause),
    /// The address to publish cannot be found and waiting will not change that (an interface
    /// name that matches nothing).
    #[error("cannot find this node's address")]
    Address(#[source] AddressError),
    /// The service's TLS certificate is refused: a CA bundle is missing, not time.
    #[error(transparent)]
    Untrusted(Box<ClientError>),
    /// A context file cannot be read, or its block is malformed.
    #[error(transparent)]
    ContextFile(Cause),
    /// A context file cannot be rewritten.
    #[error(transparent)]
    ContextWrite(Cause),
    /// The state file cannot be written.
    #[error(transparent)]
    State(Cause),
    #[error(
        "the PIN service does not know PIN {pin}: mistyped, deleted or expired \
         (PINs expire 24 hours after creation)"
    )]
    PinUnknown {
        pin: Pin,
        #[source]
        source: Box<ClientError>,
    },
    #[error("PIN {pin} has expired")]
    PinExpired {
        pin: Pin,
        #[source]
        source: Box<ClientError>,
    },
    /// `master_ip` holds another address than ours. `held` is the service's text, not yet
    /// checked: shown escaped.
    #[error(
        "another master holds this PIN: master_ip is {}, not {ours}; was the same PIN given \
         to two masters?",
        held.escape_debug()
    )]
    PinTaken { held: String, ours: IpAddr },
    /// A value the service gave would change the meaning of a file.
    #[error("refusing to write the value of {key} into a file")]
    UnsafeValue {
        key: String,
        #[source]
        source: ValueError,
    },
    /// 401 or 403.
    #[error("the PIN service refused the request")]
    Refused(#[source] Box<ClientError>),
    /// Any other permanent answer: an unexpected status, an unreadable or oversized body.
    #[error(transparent)]
    BadAnswer(Box<ClientError>),
    /// The tries or the window ran out with the service failing (network, 5xx, timeouts, an
    /// answer still coming when the window closed).
    #[error("gave up within the window so the boot can go on without cluster contextualization")]
    Unreachable(#[source] Cause),
    /// The tries or the window ran out while the service answered "not yet".
    #[error("gave up within the window so the boot can go on without cluster contextualization")]
    WindowClosed(#[source] Cause),
    /// With sealing on, a value read from the service does not open: a plain value, one sealed
    /// with another secret, or a changed one. Never retried: no later read can change a
    /// create-only key.
    #[error(
        "refusing {key}: its value was not sealed by this cluster (forged by someone who knows \
         the PIN, or published by a node with another cluster secret or none)"
    )]
    NotSealedByThisCluster {
        key: String,
        #[source]
        source: OpenError,
    },
    /// With sealing on, a key this master must create (`master_ip`, `master_ready`) is held by
    /// a value that does not open: someone else created it first, and nothing of this cluster
    /// can replace it.
    #[error(
        "PIN {pin} has been taken over: {key} is held by a value this cluster did not seal; \
         stopping without touching any file (make a new PIN, or give this node the secret \
         of its cluster)"
    )]
    PinTakenOver {
        pin: Pin,
        key: String,
        #[source]
        source: OpenError,
    },
    /// A value could not be sealed (the system random source failed).
    #[error("cannot seal a value to publish")]
    Seal(#[source] SealError),
    /// `master-ready` on a master whose contextualization has not succeeded: announcing
    /// readiness would send workers after a `master_ip` that never comes.
    #[error(
        "not announcing master_ready: contextualization has not succeeded on this master \
         (see the clusterctx-contextualize journal)"
    )]
    NotContextualized,
    /// Files use member placeholders, and the service (a legacy one) has no members route.
    #[error(
        "{files} use(s) member placeholders, but the PIN service keeps no member list (a \
         legacy service): point cvm_service_url at a clusterctx service, or drop the \
         ###CLUSTER_*_PLACEHOLDER### placeholders"
    )]
    NoMembersRoute { files: String },
    /// The window closed before `cvm_cluster_size` members registered.
    #[error(
        "only {registered} of cvm_cluster_size={size} members registered within the window; \
         no file was rewritten"
    )]
    SizeNotReached {
        registered: usize,
        size: u32,
        #[source]
        source: Cause,
    },
}

impl AgentError {
    /// The process exit code for this failure (see [`EXIT_CODES`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Config(_) | AgentError::Address(_) | AgentError::Untrusted(_) => {
                code::CONFIG
            }
            AgentError::ContextFile(_) => code::NOINPUT,
            AgentError::ContextWrite(_) | AgentError::State(_) => code::CANTCREAT,
            AgentError::PinUnknown { .. } | AgentError::PinExpired { .. } => code::NOUSER,
            AgentError::PinTaken { .. } => code::NOPERM,
            AgentError::UnsafeValue { .. } => code::DATAERR,
            AgentError::Refused(_) | AgentError::BadAnswer(_) => code::PROTOCOL,
            AgentError::Unreachable(_) => code::UNAVAILABLE,
            AgentError::WindowClosed(_)
            | AgentError::NotContextualized
            | AgentError::SizeNotReached { .. } => code::TEMPFAIL,
            AgentError::NoMembersRoute { .. } => code::NOMEMBERS,
            AgentError::NotSealedByThisCluster { .. } | AgentError::PinTakenOver { .. } => {
                code::NOTSEALED
            }
            AgentError::Seal(_) => code::FAILURE,
        }
    }

    /// A retried talk with the service that failed, sorted by why. `pin` is for the message
    /// (redacted).
    pub fn from_service(err: RetryError<ClientError>, pin: &Pin) -> Self {
        match err {
            RetryError::Permanent(err) => AgentError::from_answer(err, pin),
            gave_up => AgentError::gave_up(gave_up),
        }
    }

    /// Finding our own address failed.
    pub fn from_address(err: RetryError<AddressError>) -> Self {
        match err {
            RetryError::Permanent(err) => AgentError::Address(err),
            gave_up => AgentError::gave_up(gave_up),
        }
    }

    fn gave_up<E>(err: RetryError<E>) -> Self
    where
        E: crate::client::retry::Retryable + Send + Sync + 'static,
    {
        let failing = matches!(
            &err,
            RetryError::GaveUp { last: Some(_), .. } | RetryError::GaveUp { cut_off: true, .. }
        );
        if failing {
            AgentError::Unreachable(Box::new(err))
        } else {
            AgentError::WindowClosed(Box::new(err))
        }
    }

    /// A permanent fault of one call. (Client errors are boxed: they are large, and a run's
    /// result should not be.)
    fn from_answer(err: ClientError, pin: &Pin) -> Self {
        let pin = pin.clone();
        let class = match &err {
            ClientError::Status { status, .. } => match *status {
                StatusCode::NOT_FOUND => Answer::PinUnknown,
                StatusCode::GONE => Answer::PinExpired,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Answer::Refused,
                _ => Answer::Bad,
            },
            ClientError::Certificate { .. } => Answer::Untrusted,
            ClientError::Invalid { .. } => Answer::Invalid,
            ClientError::Malformed { .. } | ClientError::Transport { .. } => Answer::Bad,
        };
        let source = Box::new(err);
        match class {
            Answer::PinUnknown => AgentError::PinUnknown { pin, source },
            Answer::PinExpired => AgentError::PinExpired { pin, source },
            Answer::Refused => AgentError::Refused(source),
            Answer::Untrusted => AgentError::Untrusted(source),
            Answer::Invalid => AgentError::Config(source),
            Answer::Bad => AgentError::BadAnswer(source),
        }
    }

    /// The message and its causes on one line (`a: b: c`), as the state file records it.
    pub fn chain_text(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// How a permanent answer is sorted, before the error moves into its variant.
enum Answer {
    PinUnknown,
    PinExpired,
    Refused,
    Untrusted,
    Invalid,
    Bad,
}

impl From<super::config::ConfigError> for AgentError {
    fn from(err: super::config::ConfigError) -> Self {
        AgentError::Config(Box::new(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_in_the_table_once() {
        let codes: Vec<u8> = EXIT_CODES.iter().map(|row| row.code).collect();
        let mut unique = codes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), codes.len(), "{codes:?}");
        let errors = [
            AgentError::Config("x".into()),
            AgentError::ContextFile("x".into()),
            AgentError::ContextWrite("x".into()),
            AgentError::State("x".into()),
            AgentError::PinTaken {
                held: "10.0.0.2".into(),
                ours: "10.0.0.1".parse().unwrap(),
            },
            AgentError::Unreachable("x".into()),
            AgentError::WindowClosed("x".into()),
            AgentError::NotContextualized,
            AgentError::NoMembersRoute {
                files: "user-data".into(),
            },
            AgentError::SizeNotReached {
                registered: 3,
                size: 8,
                source: "x".into(),
            },
            AgentError::NotSealedByThisCluster {
                key: "master_ip".into(),
                source: OpenError::NotSealed {
                    key: "master_ip".into(),
                },
            },
            AgentError::PinTakenOver {
                pin: Pin::new("enico1qq0oey"),
                key: "master_ip".into(),
                source: OpenError::NotSealed {
                    key: "master_ip".into(),
                },
            },
        ];
        for err in &errors {
            assert!(codes.contains(&err.exit_code()), "{err:?}");
            assert!(![0, 2].contains(&err.exit_code()), "{err:?}");
        }
        let help = exit_codes_help();
        for row in EXIT_CODES {
            assert!(help.contains(&format!("{:>3}  {}", row.code, row.meaning)));
        }
    }

    #[test]
    fn values_not_sealed_by_this_cluster_have_their_own_code() {
        let source = || OpenError::DoesNotOpen {
            key: "master_ip".into(),
        };
        let refused = AgentError::NotSealedByThisCluster {
            key: "master_ip".into(),
            source: source(),
        };
        let taken = AgentError::PinTakenOver {
            pin: Pin::new("enico1qq0oey"),
            key: "master_ip".into(),
            source: source(),
        };
        let other_master = AgentError::PinTaken {
            held: "10.0.0.2".into(),
            ours: "10.0.0.1".parse().unwrap(),
        };
        assert_eq!(refused.exit_code(), code::NOTSEALED);
        assert_eq!(taken.exit_code(), code::NOTSEALED);
        assert_ne!(other_master.exit_code(), code::NOTSEALED);
        assert!(refused
            .chain_text()
            .contains("was not sealed by this cluster"));
        assert!(taken.chain_text().contains("has been taken over"));
        assert!(!taken.chain_text().contains("enico1qq0oey"));
    }

    #[test]
    fn statuses_are_sorted_into_classes() {
        let pin = Pin::new("enico1qq0oey");
        let status = |code: u16| ClientError::Status {
            method: reqwest::Method::GET,
            url: "http://x/api/v1/clusters/eni…".into(),
            status: StatusCode::from_u16(code).unwrap(),
            detail: None,
            retry_after: None,
        };
        let class = |code: u16| {
            AgentError::from_service(RetryError::Permanent(status(code)), &pin).exit_code()
        };
        assert_eq!(class(404), code::NOUSER);
        assert_eq!(class(410), code::NOUSER);
        assert_eq!(class(403), code::PROTOCOL);
        assert_eq!(class(400), code::PROTOCOL);
        let unknown = AgentError::from_service(RetryError::Permanent(status(404)), &pin);
        assert!(matches!(unknown, AgentError::PinUnknown { .. }));
        assert!(!unknown.chain_text().contains(pin.expose()));
    }
}
