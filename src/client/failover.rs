//! Several URLs of one PIN service (replicas, or several load balancers in front of them).
//!
//! One try of the agent's schedule goes to the URL that answered last; a transient failure
//! there (refused, timed out, 5xx, 429) moves on to the next URL within the same try, with
//! what is left of the try's slot. Only when every URL failed does the try count as failed.
//! A permanent answer (404, 410, 4xx) ends the try at once: the URLs share one database, so
//! another replica would say the same.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        OnceLock,
    },
    time::Duration,
};

use tokio::time::Instant;

use super::{normalize_service_url, ClientError, ClientOptions, PinClient, ServerKind};

/// More URLs than this is a mistake (each one can cost a connect timeout per try).
pub const MAX_SERVICE_URLS: usize = 8;

/// The normalized URLs of `raw` (each item may list several, separated by commas), in order,
/// each once, and the remarks for the log (`setting` names where they came from). The agent's
/// settings and the operator commands read URL lists the same way.
pub fn parse_service_urls(
    raw: &[&str],
    setting: &str,
) -> Result<(Vec<String>, Vec<String>), ClientError> {
    let mut urls: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    for raw_url in raw.iter().flat_map(|raw| raw.split(',')) {
        let raw_url = raw_url.trim();
        let (url, schemeless) = normalize_service_url(raw_url)?;
        if schemeless {
            warnings.push(format!(
                "{setting}={raw_url} has no scheme; using plain http as the legacy agent did ({url})"
            ));
        }
        if urls.contains(&url) {
            warnings.push(format!("{setting}: {url} is listed twice; trying it once"));
            continue;
        }
        urls.push(url);
    }
    if urls.len() > MAX_SERVICE_URLS {
        return Err(ClientError::Invalid {
            what: "service URL",
            message: format!("{} URLs; at most {MAX_SERVICE_URLS} are tried", urls.len()),
        });
    }
    Ok((urls, warnings))
}

/// The clients of one service, tried in order from the one that answered last.
#[derive(Debug)]
pub struct Services {
    clients: Vec<PinClient>,
    /// Index of the URL that answered last (its answer may have been an error status).
    current: AtomicUsize,
    /// What the service is, learnt from the first answer of any URL: the URLs are one
    /// deployment, so this is decided once per run, not per URL.
    kind: OnceLock<ServerKind>,
    /// A URL of the other kind was reported once already.
    mixed_warned: AtomicBool,
}

impl Services {
    /// `urls` must be normalized (see [`super::normalize_service_url`]) and not empty. Each
    /// client is built alone, so each URL gets the same TLS checks as a single one.
    pub fn new(urls: &[String], options: &ClientOptions) -> Result<Self, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::Invalid {
                what: "service URL",
                message: "none given".into(),
            });
        }
        let clients = urls
            .iter()
            .map(|url| PinClient::new(url, options))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Services {
            clients,
            current: AtomicUsize::new(0),
            kind: OnceLock::new(),
            mixed_warned: AtomicBool::new(false),
        })
    }

    /// The URL that answered last (the first one until any answered).
    pub fn current_url(&self) -> &str {
        self.clients[self.current.load(Ordering::Relaxed)].base_url()
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// What kind of service answered first, if any did.
    pub fn server_kind(&self) -> Option<&ServerKind> {
        self.kind.get()
    }

    /// One try: `call` on the current URL, then on the next ones while the failure is
    /// transient. `call` gets the client and what is left of `slot` (a long-poll waits that
    /// long, so the try as a whole still lasts about one slot). Returns the first success or
    /// permanent error, else the last URL's transient error.
    pub async fn attempt<'c, T, F, Fut>(
        &'c self,
        slot: Duration,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(&'c PinClient, Duration) -> Fut,
        Fut: Future<Output = Result<T, ClientError>> + 'c,
    {
        let started = Instant::now();
        let count = self.clients.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut turn = 0;
        loop {
            let index = (first + turn) % count;
            let client = &self.clients[index];
            let left = slot.saturating_sub(started.elapsed());
            let result = call(client, left).await;
            let answered = !matches!(&result, Err(err) if err.is_transient());
            self.learn(client);
            if answered || turn + 1 == count {
                if answered && index != first {
                    self.current.store(index, Ordering::Relaxed);
                    tracing::info!(
                        url = client.base_url(),
                        "{} answered; using it from now on",
                        client.base_url()
                    );
                }
                return result;
            }
            if let Err(err) = &result {
                let next = self.clients[(index + 1) % count].base_url();
                tracing::warn!(
                    url = client.base_url(),
                    "{err}; trying the next service URL, {next}"
                );
            }
            turn += 1;
        }
    }

    /// Keeps the first kind seen; says so if a later URL is another kind of service.
    fn learn(&self, client: &PinClient) {
        let Some(seen) = client.server_kind() else {
            return;
        };
        let kind = self.kind.get_or_init(|| seen.clone());
        if kind.is_legacy() != seen.is_legacy() && !self.mixed_warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                url = client.base_url(),
                "{} is {} but the first URL that answered was {}; the URLs should be replicas \
                 of one service: this run keeps treating it as {}",
                client.base_url(),
                describe(seen),
                describe(kind),
                describe(kind)
            );
        }
    }
}

fn describe(kind: &ServerKind) -> &'static str {
    if kind.is_legacy() {
        "a legacy service"
    } else {
        "ours"
    }
}
