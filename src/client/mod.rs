//! The HTTP client for the PIN service, legacy or ours.
//!
//! Every call goes out through one request helper and answers with a [`ClientError`]
//! ([`error`]) that says whether trying again can help ([`ClientError::is_transient`]): the
//! agent retries transient faults on its schedule ([`retry`]) and stops at once on permanent
//! ones. URLs in errors and logs carry the PIN redacted.
//!
//! The client learns what kind of server it talks to from the first answer: ours names itself
//! in [`protocol::SERVICE_HEADER`]; a legacy Django service does not.

pub mod error;
pub mod failover;
pub mod retry;

pub use error::{classify_status, ClientError, Retry};
pub use failover::Services;

use std::{path::Path, sync::OnceLock, time::Duration};

use reqwest::{header, Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::{
    protocol::{self, ClusterInfo, ErrorBody, KeyItem, MemberItem, MemberRegistration},
    secret::{AdminToken, Pin},
};

/// Connection set-up may take a while on a booting network, but a peer that does not even
/// accept within this time is better retried on the schedule than waited for.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default budget for a plain request's answer. A long-poll adds its wait on top.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Answers larger than this are not from a PIN service. The longest it sends is a member list:
/// [`protocol::MAX_MEMBERS`] sealed addresses of up to 1000 characters are about 4.7 MB.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// What answered: our service (with the features it announced) or a legacy one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKind {
    /// `clusterctx/<version>` when it is ours, `None` for a legacy server.
    pub name: Option<String>,
    pub long_poll: bool,
    pub atomic_create: bool,
}

impl ServerKind {
    fn from_header(value: Option<&header::HeaderValue>) -> Self {
        let Some(text) = value.and_then(|v| v.to_str().ok()) else {
            return ServerKind {
                name: None,
                long_poll: false,
                atomic_create: false,
            };
        };
        let mut words = text.split_whitespace();
        let name = words.next().map(str::to_string);
        let features: Vec<&str> = words.collect();
        ServerKind {
            name,
            long_poll: features.contains(&protocol::FEATURE_LONG_POLL),
            atomic_create: features.contains(&protocol::FEATURE_ATOMIC_CREATE),
        }
    }

    pub fn is_legacy(&self) -> bool {
        self.name.is_none()
    }
}

/// Result of creating a key that may already exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// 201: we stored it.
    Created,
    /// 409: the key was there already; the caller decides whether that is fine.
    AlreadyExists,
}

/// Options for building a [`PinClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Extra PEM bundle of trusted roots, on top of the system's (CernVM ships its own).
    pub ca_file: Option<std::path::PathBuf>,
    /// How long one request may take before it counts as a (transient) timeout; a long-poll
    /// adds its wait on top. Connecting has its own, shorter limit.
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ca_file: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// A client bound to one PIN service.
#[derive(Debug)]
pub struct PinClient {
    http: reqwest::Client,
    /// Scheme, host, port and optional path prefix, without a trailing slash.
    base: String,
    /// Learnt from the first answer; later answers come from the same deployment.
    kind: OnceLock<ServerKind>,
    request_timeout: Duration,
}

/// Turns a `cvm_service_url` into a base URL. The legacy agent handed the value to curl, which
/// treats a scheme-less value as plain http; we do the same, and say so (`true` in the result)
/// so the caller can warn.
pub fn normalize_service_url(raw: &str) -> Result<(String, bool), ClientError> {
    let raw = raw.trim();
    let invalid = |message: String| ClientError::Invalid {
        what: "service URL",
        message,
    };
    if raw.is_empty() {
        return Err(invalid("empty".into()));
    }
    let (url, schemeless) = if raw.contains("://") {
        (raw.to_string(), false)
    } else {
        (format!("http://{raw}"), true)
    };
    let parsed = reqwest::Url::parse(&url).map_err(|e| invalid(format!("{raw:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "{raw:?}: only http and https are supported"
        )));
    }
    if parsed.host_str().is_none() {
        return Err(invalid(format!("{raw:?}: no host")));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(format!(
            "{raw:?}: must not carry a query or fragment"
        )));
    }
    Ok((url.trim_end_matches('/').to_string(), schemeless))
}

impl PinClient {
    /// `base_url` must already be normalized (see [`normalize_service_url`]).
    pub fn new(base_url: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(options.request_timeout))
            .timeout(options.request_timeout)
            .user_agent(concat!("clusterctx/", env!("CARGO_PKG_VERSION")))
            // A redirect could carry the PIN to another host; the service never redirects.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(false);
        if base_url.starts_with("http://") {
            // Loading the system's roots is most of a worker's CPU time at boot; plain http
            // never uses them.
            builder = builder.tls_built_in_root_certs(false);
        }
        if let Some(path) = &options.ca_file {
            for cert in load_ca_file(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| ClientError::Invalid {
            what: "HTTP client set-up",
            message: e.to_string(),
        })?;
        Ok(PinClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            kind: OnceLock::new(),
            request_timeout: options.request_timeout,
        })
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// What kind of server answered so far, if any did.
    pub fn server_kind(&self) -> Option<&ServerKind> {
        self.kind.get()
    }

    /// `POST /api/v1/clusters`: a new PIN (and, from our service, its admin token).
    pub async fn create_cluster(&self) -> Result<ClusterInfo, ClientError> {
        let url = format!("{}{}", self.base, protocol::API_PREFIX);
        let answer = self.send(Method::POST, &url, None, |r| r).await?;
        answer.expect(StatusCode::CREATED)?.json()
    }

    /// `GET /api/v1/clusters/<pin>`.
    pub async fn cluster(&self, pin: &Pin) -> Result<ClusterInfo, ClientError> {
        let url = self.cluster_url(pin)?;
        let answer = self.send(Method::GET, &url, Some(pin), |r| r).await?;
        answer.expect(StatusCode::OK)?.json()
    }

    /// `DELETE /api/v1/clusters/<pin>`.
    pub async fn delete_cluster(
        &self,
        pin: &Pin,
        token: Option<&AdminToken>,
    ) -> Result<(), ClientError> {
        let url = self.cluster_url(pin)?;
        let answer = self
            .send(Method::DELETE, &url, Some(pin), |r| with_token(r, token))
            .await?;
        answer.expect(StatusCode::NO_CONTENT).map(drop)
    }

    /// `GET /api/v1/clusters/<pin>/keys`.
    pub async fn list_keys(&self, pin: &Pin) -> Result<Vec<KeyItem>, ClientError> {
        let url = format!("{}/keys", self.cluster_url(pin)?);
        let answer = self.send(Method::GET, &url, Some(pin), |r| r).await?;
        answer.expect(StatusCode::OK)?.json()
    }

    /// The value of the first row named `key` in the keys list; `Ok(None)` when there is none.
    /// A legacy service's create is check-then-insert, so concurrent creates of one key may
    /// all succeed (and its GET of that key then answers 500); its list keeps every row in
    /// creation order, so the first row is the one every node can agree on.
    pub async fn first_value(&self, pin: &Pin, key: &str) -> Result<Option<String>, ClientError> {
        let items = self.list_keys(pin).await?;
        Ok(items
            .into_iter()
            .find(|item| item.key == key)
            .map(|item| item.value))
    }

    /// `GET /api/v1/clusters/<pin>/keys/<key>`, as JSON. `Ok(None)` when the key is absent
    /// (404). With `wait`, asks our service to hold the request until the key exists; a legacy
    /// server ignores the parameter and answers at once.
    pub async fn get_key(
        &self,
        pin: &Pin,
        key: &str,
        wait: Option<Duration>,
    ) -> Result<Option<String>, ClientError> {
        let answer = self.long_poll(self.key_url(pin, key)?, pin, wait).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let url = answer.url.clone();
        let item: KeyItem = answer.expect(StatusCode::OK)?.json()?;
        if item.key != key {
            return Err(ClientError::Malformed {
                method: Method::GET,
                url,
                message: format!("asked for key {key:?}, got {:?}", item.key),
            });
        }
        Ok(Some(item.value))
    }

    /// `POST /api/v1/clusters/<pin>/keys`: create-only. 409 is reported as
    /// [`Created::AlreadyExists`], not as an error, because whether it is one depends on the
    /// stored value.
    pub async fn create_key(
        &self,
        pin: &Pin,
        key: &str,
        value: &str,
    ) -> Result<Created, ClientError> {
        let url = format!("{}/keys", self.cluster_url(pin)?);
        check_key_name(key)?;
        check_value(value)?;
        let item = KeyItem {
            key: key.to_string(),
            value: value.to_string(),
        };
        let answer = self
            .send(Method::POST, &url, Some(pin), |r| r.json(&item))
            .await?;
        if answer.status == StatusCode::CONFLICT {
            return Ok(Created::AlreadyExists);
        }
        answer.expect(StatusCode::CREATED).map(|_| Created::Created)
    }

    /// `PUT /api/v1/clusters/<pin>/keys/<key>`: replace a value (needs the admin token on our
    /// service unless it runs in open mode).
    pub async fn put_key(
        &self,
        pin: &Pin,
        key: &str,
        value: &str,
        token: Option<&AdminToken>,
    ) -> Result<(), ClientError> {
        let url = self.key_url(pin, key)?;
        check_value(value)?;
        let item = KeyItem {
            key: key.to_string(),
            value: value.to_string(),
        };
        let answer = self
            .send(Method::PUT, &url, Some(pin), |r| {
                with_token(r, token).json(&item)
            })
            .await?;
        answer.expect(StatusCode::OK).map(drop)
    }

    /// `DELETE /api/v1/clusters/<pin>/keys/<key>`.
    pub async fn delete_key(
        &self,
        pin: &Pin,
        key: &str,
        token: Option<&AdminToken>,
    ) -> Result<(), ClientError> {
        let url = self.key_url(pin, key)?;
        let answer = self
            .send(Method::DELETE, &url, Some(pin), |r| with_token(r, token))
            .await?;
        answer.expect(StatusCode::NO_CONTENT).map(drop)
    }

    /// `PUT /api/v1/clusters/<pin>/members/<node>`. `Ok(None)`: the route is absent (404, a
    /// legacy service); `Ok(Some(true))` the node joined now (201), `Some(false)` it was
    /// registered already (200).
    pub async fn register_member(
        &self,
        pin: &Pin,
        node: &str,
        address: &str,
        role: &str,
    ) -> Result<Option<bool>, ClientError> {
        let url = format!("{}/members/{node}", self.cluster_url(pin)?);
        let body = MemberRegistration {
            address: address.to_string(),
            role: role.to_string(),
        };
        let answer = self
            .send(Method::PUT, &url, Some(pin), |r| r.json(&body))
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::CREATED => Ok(Some(true)),
            _ => answer.expect(StatusCode::OK).map(|_| Some(false)),
        }
    }

    /// `GET /api/v1/clusters/<pin>/members`, in joining order; with `min`, long-polls up to
    /// `wait` for at least that many (the answer may still hold fewer: the caller counts).
    pub async fn members(
        &self,
        pin: &Pin,
        min: Option<usize>,
        wait: Option<Duration>,
    ) -> Result<Vec<MemberItem>, ClientError> {
        let mut url = format!("{}/members", self.cluster_url(pin)?);
        // Without a wait there is nothing to hold the request for.
        let wait = match (min, wait) {
            (Some(min), Some(wait)) => {
                url.push_str(&format!("?min={min}"));
                Some(wait)
            }
            _ => None,
        };
        let answer = self.long_poll(url, pin, wait).await?;
        answer.expect(StatusCode::OK)?.json()
    }

    /// A GET of JSON that our service may hold up to `wait` (a legacy server ignores the
    /// parameter and answers at once). `url` may carry a query already; the request's own
    /// timeout grows by the wait.
    async fn long_poll(
        &self,
        mut url: String,
        pin: &Pin,
        wait: Option<Duration>,
    ) -> Result<Answer, ClientError> {
        let mut request_timeout = self.request_timeout;
        if let Some(wait) = wait {
            // Milliseconds, so a long-poll can last exactly the caller's retry slot: a worker
            // is then always listening, never sleeping between two long-polls.
            let wait = wait.min(Duration::from_secs(protocol::MAX_WAIT_SECS));
            if wait.as_millis() > 0 {
                let separator = if url.contains('?') { '&' } else { '?' };
                url.push_str(&format!("{separator}wait={:.3}", wait.as_secs_f64()));
                request_timeout += wait;
            }
        }
        self.send(Method::GET, &url, Some(pin), |r| {
            r.header(header::ACCEPT, "application/json")
                .timeout(request_timeout)
        })
        .await
    }

    fn cluster_url(&self, pin: &Pin) -> Result<String, ClientError> {
        check_pin(pin)?;
        Ok(format!(
            "{}{}/{}",
            self.base,
            protocol::API_PREFIX,
            pin.expose()
        ))
    }

    fn key_url(&self, pin: &Pin, key: &str) -> Result<String, ClientError> {
        check_key_name(key)?;
        Ok(format!("{}/keys/{key}", self.cluster_url(pin)?))
    }

    /// The one way a request goes out: `method` to `url`, with whatever `build` adds (headers,
    /// body, timeout). Reads the whole answer (bounded), turning transport faults into
    /// [`ClientError::Transport`] (or [`ClientError::Certificate`]) with the PIN redacted.
    async fn send(
        &self,
        method: Method,
        url: &str,
        pin: Option<&Pin>,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Answer, ClientError> {
        let request = build(self.http.request(method.clone(), url));
        let shown_url = match pin {
            Some(pin) => redacted_url(url, pin),
            None => url.to_string(),
        };
        let transport = |err: reqwest::Error| {
            let message = describe_transport_error(&err, pin);
            if rejected_certificate(&err) {
                ClientError::Certificate {
                    method: method.clone(),
                    url: shown_url.clone(),
                    message,
                }
            } else {
                ClientError::Transport {
                    method: method.clone(),
                    url: shown_url.clone(),
                    message,
                }
            }
        };
        let mut response = request.send().await.map_err(transport)?;
        let _ = self.kind.get_or_init(|| {
            ServerKind::from_header(response.headers().get(protocol::SERVICE_HEADER))
        });
        let status = response.status();
        // Only the delta-seconds form: the service sends it, and an HTTP date would need a
        // trustworthy clock, which a booting VM may not have yet.
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ClientError::Malformed {
                    method,
                    url: shown_url,
                    message: format!("answer larger than {MAX_BODY} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            method,
            url: shown_url,
            pin: pin.cloned(),
            status,
            retry_after,
            body,
        })
    }
}

/// An answer read in full.
struct Answer {
    method: Method,
    /// Redacted.
    url: String,
    /// To redact the server's own messages, which may quote it.
    pin: Option<Pin>,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Answer {
    /// The answer if it has the expected status, else the status as an error with the
    /// server's message (JSON `error` from ours, `detail` from Django).
    fn expect(self, expected: StatusCode) -> Result<Self, ClientError> {
        if self.status == expected {
            return Ok(self);
        }
        Err(ClientError::Status {
            method: self.method,
            url: self.url,
            status: self.status,
            detail: error_detail(&self.body).map(|detail| match &self.pin {
                Some(pin) => crate::secret::redact_in(&detail, pin.expose()),
                None => detail,
            }),
            retry_after: self.retry_after,
        })
    }

    fn json<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Malformed {
            method: self.method,
            url: self.url,
            message: e.to_string(),
        })
    }
}

/// The server's explanation from an error body, cut short and stripped of control
/// characters: it ends up in the journal.
fn error_detail(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Django {
        detail: String,
    }
    let text = if let Ok(ours) = serde_json::from_slice::<ErrorBody>(body) {
        ours.error
    } else if let Ok(django) = serde_json::from_slice::<Django>(body) {
        django.detail
    } else {
        return None;
    };
    let clean: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    (!clean.is_empty()).then_some(clean)
}

fn redacted_url(url: &str, pin: &Pin) -> String {
    crate::secret::redact_in(url, pin.expose())
}

/// reqwest's own message plus its causes (which hold the useful part, e.g. "connection
/// refused"), with the PIN redacted from any URL it quotes.
fn describe_transport_error(err: &reqwest::Error, pin: Option<&Pin>) -> String {
    let mut message = if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    match pin {
        Some(pin) => crate::secret::redact_in(&message, pin.expose()),
        None => message,
    }
}

/// Whether the TLS handshake failed because the server's certificate was refused (untrusted,
/// expired, wrong name), as opposed to a handshake cut short by a restarting server.
fn rejected_certificate(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(mut cause) = source {
        // io::Error hides what it wraps from `source()` (it answers the inner error's
        // source), and the connector wraps rustls's error in two of them.
        while let Some(inner) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            cause = inner;
        }
        if matches!(
            cause.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        ) {
            return true;
        }
        source = cause.source();
    }
    false
}

fn with_token(
    request: reqwest::RequestBuilder,
    token: Option<&AdminToken>,
) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token.expose()),
        None => request,
    }
}

/// A PIN goes into a URL path: refuse anything that could change the path's meaning. The
/// service only issues `[a-z0-9]{12}`, but we accept other alphanumeric PINs a legacy
/// deployment may have issued.
fn check_pin(pin: &Pin) -> Result<(), ClientError> {
    let text = pin.expose();
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ClientError::Invalid {
            what: "cluster PIN",
            message: format!("{pin} must be 1 to 64 letters and digits"),
        });
    }
    Ok(())
}

fn check_key_name(key: &str) -> Result<(), ClientError> {
    protocol::validate_key_name(key).map_err(|e| ClientError::Invalid {
        what: "key name",
        message: e.to_string(),
    })
}

fn check_value(value: &str) -> Result<(), ClientError> {
    protocol::validate_value(value).map_err(|e| ClientError::Invalid {
        what: "value",
        message: e.to_string(),
    })
}

fn load_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let invalid = |message: String| ClientError::Invalid {
        what: "CA file",
        message: format!("{}: {message}", path.display()),
    };
    let pem = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("no certificates found".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_member_list_fits_an_answer() {
        let member = MemberItem {
            node: "0123456789abcdef".into(),
            role: "worker".into(),
            address: "s".repeat(protocol::MAX_VALUE_LEN),
            joined_at: "2026-12-02T17:13:31.123456789Z".into(),
            last_seen: "2026-12-02T17:13:31.123456789Z".into(),
        };
        let list = vec![member; protocol::MAX_MEMBERS as usize];
        let json = serde_json::to_vec(&list).unwrap().len();
        assert!(json <= MAX_BODY, "{json} bytes");
    }

    #[test]
    fn service_url_normalization() {
        assert_eq!(
            normalize_service_url("https://cernvm-online.cern.ch/").unwrap(),
            ("https://cernvm-online.cern.ch".to_string(), false)
        );
        assert_eq!(
            normalize_service_url("my-service.example.com:8000").unwrap(),
            ("http://my-service.example.com:8000".to_string(), true)
        );
        assert_eq!(
            normalize_service_url("http://[fd00::1]:8080").unwrap(),
            ("http://[fd00::1]:8080".to_string(), false)
        );
        assert!(normalize_service_url("").is_err());
        assert!(normalize_service_url("ftp://x").is_err());
        assert!(normalize_service_url("http://x/?a=b").is_err());
    }

    #[test]
    fn server_kind_from_header() {
        let ours = header::HeaderValue::from_static("clusterctx/0.1.0 long-poll atomic-create");
        let kind = ServerKind::from_header(Some(&ours));
        assert_eq!(kind.name.as_deref(), Some("clusterctx/0.1.0"));
        assert!(kind.long_poll && kind.atomic_create && !kind.is_legacy());
        let legacy = ServerKind::from_header(None);
        assert!(legacy.is_legacy() && !legacy.long_poll);
    }

    #[test]
    fn pins_that_would_change_the_path_are_refused() {
        assert!(check_pin(&Pin::new("enico1qq0oey")).is_ok());
        for bad in ["", "../etc", "a/b", "a?b", "a b", "é"] {
            assert!(check_pin(&Pin::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_details_are_cleaned() {
        assert_eq!(
            error_detail(br#"{"error":"key exists\n"}"#).as_deref(),
            Some("key exists")
        );
        assert_eq!(
            error_detail(br#"{"detail":"Not found."}"#).as_deref(),
            Some("Not found.")
        );
        assert_eq!(error_detail(b"<html>"), None);
    }
}
