//! The client's failures, sorted into permanent and transient as PROTOCOL.md part 2 says.

use std::time::Duration;

use reqwest::{Method, StatusCode};

/// Whether a failed call can succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The network, a restarting server, overload: try again on the schedule.
    Transient,
    /// The request itself is wrong or refused (bad PIN, key taken, forbidden): retrying is
    /// pointless and only delays the boot.
    Permanent,
}

/// A failed call to the PIN service. `url` always has the PIN redacted.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{method} {url}: HTTP {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        /// The server's own error message, if it sent one we could read.
        detail: Option<String>,
        /// How soon the server said to come back (`Retry-After` in seconds), e.g. while it
        /// restarts; capped by the caller's own schedule.
        retry_after: Option<Duration>,
    },
    #[error("{method} {url}: {message}")]
    Transport {
        method: Method,
        url: String,
        message: String,
    },
    /// The server's certificate is not trusted: it will not become trusted by waiting.
    #[error("{method} {url}: TLS certificate not accepted: {message} (for a private CA, give its bundle with --ca-file or cvm_cluster_ca_file)")]
    Certificate {
        method: Method,
        url: String,
        message: String,
    },
    #[error("{method} {url}: unreadable answer: {message}")]
    Malformed {
        method: Method,
        url: String,
        message: String,
    },
    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },
}

impl ClientError {
    /// Sorted as PROTOCOL.md part 2 says: network faults, 408, 429 and 5xx are transient;
    /// every other status and every malformed answer is permanent.
    pub fn retry(&self) -> Retry {
        match self {
            ClientError::Transport { .. } => Retry::Transient,
            ClientError::Status { status, .. } => classify_status(*status),
            ClientError::Certificate { .. }
            | ClientError::Malformed { .. }
            | ClientError::Invalid { .. } => Retry::Permanent,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.retry() == Retry::Transient
    }

    /// The server's `Retry-After`, on an answer that had one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, when the server answered at all.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The retry decision for a status that is not the expected success.
pub fn classify_status(status: StatusCode) -> Retry {
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Retry::Transient
    } else {
        Retry::Permanent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sorted() {
        for transient in [408, 429, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(transient).unwrap();
            assert_eq!(classify_status(status), Retry::Transient, "{status}");
        }
        for permanent in [400, 401, 403, 404, 409, 410, 413] {
            let status = StatusCode::from_u16(permanent).unwrap();
            assert_eq!(classify_status(status), Retry::Permanent, "{status}");
        }
    }
}
