//! `clusterctx contextualize`: the boot step.
//!
//! 1. Read the ucernvm block; no PIN means nothing to do.
//! 2. If the recorded state says this PIN already succeeded and every placeholder's value is
//!    known, refill any placeholders offline and stop (a reboot costs no network).
//! 3. Check the PIN at the service (an unknown or expired PIN fails at once) and learn whether
//!    the service is ours (long-poll, atomic create) or legacy.
//! 4. Master: publish `master_ip`. Auto: try to; whoever creates it first is the master.
//! 5. Worker: wait for `master_ready` (unless told not to), then every key a placeholder needs.
//! 6. Check every value, then rewrite the files atomically.
//!
//! All network steps share one schedule of tries, so the whole run never exceeds its window.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::Context;
use reqwest::StatusCode;

use super::{
    address,
    config::{AgentConfig, RoleRequest},
    files::ContextSet,
    state::{Outcome, Role, State, StateStore},
};
use crate::{
    client::{
        retry::{retry, Attempt, RetryError, Schedule},
        ClientError, Created, PinClient,
    },
    protocol::{KEY_MASTER_IP, KEY_MASTER_READY},
    secret::Pin,
};

/// How a run ended without error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// No PIN in the context (or no context at all).
    NothingToDo,
    /// Done earlier; at most placeholders were refilled from recorded values.
    AlreadyDone { role: Role },
    /// Done now.
    Contextualized { role: Role },
}

/// Runs the boot step and records its outcome in `store`.
pub async fn run(
    contexts: &ContextSet,
    config: &AgentConfig,
    store: &StateStore,
) -> anyhow::Result<Finished> {
    let mut state = store.load(config.pin.expose());
    let needed = contexts.placeholders();

    if let Some(role) = state.role.filter(|_| state.succeeded()) {
        if needed.iter().all(|key| state.values.contains_key(key)) {
            let refilled = contexts.substitute_all(&state.values)?;
            tracing::info!(
                "already contextualized as {role} for PIN {}; refilled {} file(s) from recorded values",
                config.pin,
                refilled.len()
            );
            return Ok(Finished::AlreadyDone { role });
        }
        tracing::info!("files reference keys not fetched before; contextualizing again");
    }

    let outcome = Run::new(config, &mut state)?
        .execute(contexts, needed)
        .await;
    state.outcome = Some(match &outcome {
        Ok(_) => Outcome::Success,
        Err(err) => Outcome::Failed {
            error: format!("{err:#}"),
        },
    });
    if let Err(save_error) = store.save(&mut state) {
        // The run's own error matters more; a state we could not save only means the next
        // boot redoes the work.
        tracing::error!("{save_error:#}");
        if outcome.is_ok() {
            return Err(save_error);
        }
    }
    outcome.map(|role| Finished::Contextualized { role })
}

/// One contextualization attempt's working set.
struct Run<'a> {
    config: &'a AgentConfig,
    state: &'a mut State,
    client: PinClient,
    schedule: Schedule,
}

/// Outcome of trying to create `master_ip` with our address.
enum Claim {
    /// We hold it (created now, or found our own address from an earlier boot).
    Ours,
    /// Someone else does.
    HeldBy(String),
}

impl<'a> Run<'a> {
    fn new(config: &'a AgentConfig, state: &'a mut State) -> anyhow::Result<Self> {
        let client = PinClient::new(&config.service_url, &config.client)?;
        Ok(Run {
            config,
            state,
            client,
            schedule: Schedule::new(config.policy),
        })
    }

    fn pin(&self) -> &Pin {
        &self.config.pin
    }

    /// `needed`: the keys the files' placeholders reference.
    async fn execute(
        &mut self,
        contexts: &ContextSet,
        mut needed: BTreeSet<String>,
    ) -> anyhow::Result<Role> {
        let policy = self.config.policy;
        tracing::info!(
            "joining cluster PIN {} at {} as {}: up to {} tries about {:.1}s apart",
            self.pin(),
            self.config.service_url,
            self.config.role,
            policy.tries,
            policy.interval.as_secs_f64()
        );
        self.check_pin().await?;

        let mut values = BTreeMap::new();
        let role = match self.config.role {
            RoleRequest::Worker => Role::Worker,
            RoleRequest::Master => {
                let ip = self.our_address().await?;
                match self.claim_master_ip(ip).await? {
                    Claim::Ours => {}
                    // The held value is the service's, not yet checked: escaped for the journal.
                    Claim::HeldBy(other) => anyhow::bail!(
                        "another master holds this PIN: master_ip is {}, not {ip}; \
                         was the same PIN given to two masters?",
                        other.escape_debug()
                    ),
                }
                values.insert(KEY_MASTER_IP.to_string(), ip.to_string());
                Role::Master
            }
            RoleRequest::Auto => {
                let ip = self.our_address().await?;
                match self.claim_master_ip(ip).await? {
                    Claim::Ours => {
                        tracing::info!("elected master: created master_ip={ip} first");
                        values.insert(KEY_MASTER_IP.to_string(), ip.to_string());
                        Role::Master
                    }
                    Claim::HeldBy(master) => {
                        tracing::info!(
                            "another node is master ({}); acting as worker",
                            master.escape_debug()
                        );
                        values.insert(KEY_MASTER_IP.to_string(), master);
                        Role::Worker
                    }
                }
            }
        };
        self.state.role = Some(role);
        if role == Role::Master {
            self.state.published_address = values.get(KEY_MASTER_IP).cloned();
        }

        if role == Role::Worker && self.config.wait_ready {
            self.wait_for(KEY_MASTER_READY).await?;
        }
        if role == Role::Worker {
            // The legacy agent always fetched it; we record it for `check` and reboots.
            needed.insert(KEY_MASTER_IP.to_string());
        }
        for key in needed {
            if let std::collections::btree_map::Entry::Vacant(slot) = values.entry(key) {
                let value = self.wait_for(slot.key()).await?;
                slot.insert(value);
            }
        }
        self.state.values = values;

        let rewritten = contexts.substitute_all(&self.state.values)?;
        tracing::info!(
            "contextualized as {role}: {} file(s) rewritten",
            rewritten.len()
        );
        self.state.files = rewritten;
        Ok(role)
    }

    /// Checks that the service knows the PIN, and learns what kind of service it is.
    async fn check_pin(&mut self) -> anyhow::Result<()> {
        let (client, pin) = (&self.client, &self.config.pin);
        retry(
            &mut self.schedule,
            "checking the cluster PIN",
            |_| async move { client.cluster(pin).await.map(|_| Attempt::Done(())) },
        )
        .await
        .map_err(|err| explain(err, &self.config.pin))?;
        match self.client.server_kind() {
            Some(kind) if !kind.is_legacy() => tracing::info!(
                "the PIN service is {} (long-poll: {}, atomic create: {})",
                kind.name.as_deref().unwrap_or("ours"),
                yes_no(kind.long_poll),
                yes_no(kind.atomic_create)
            ),
            _ => {
                tracing::info!("the PIN service is a legacy one: polling without long-poll");
                if self.config.role == RoleRequest::Auto {
                    tracing::warn!(
                        "auto election against a legacy PIN service is only as safe as its \
                         create, which is racy: two nodes booting at the same instant may both \
                         believe they are master"
                    );
                }
            }
        }
        Ok(())
    }

    async fn our_address(&mut self) -> anyhow::Result<IpAddr> {
        let (choice, url) = (&self.config.address, &self.config.service_url);
        let ip = retry(
            &mut self.schedule,
            "finding the address to publish",
            |_| async move { address::resolve(choice, url).await.map(Attempt::Done) },
        )
        .await
        .context("cannot find this node's address")?;
        tracing::info!("this node's address: {ip}");
        Ok(ip)
    }

    /// Creates `master_ip` = `ip`, create-only. A 409 holding our own address is success (a
    /// reboot republishing); any other holder is reported, not overwritten.
    async fn claim_master_ip(&mut self, ip: IpAddr) -> anyhow::Result<Claim> {
        let (client, pin) = (&self.client, &self.config.pin);
        let ours = ip.to_string();
        let ours = ours.as_str();
        retry(&mut self.schedule, "publishing master_ip", |_| async move {
            match client.create_key(pin, KEY_MASTER_IP, ours).await? {
                Created::Created => {
                    tracing::info!("published master_ip={ours}");
                    Ok::<_, ClientError>(Attempt::Done(Claim::Ours))
                }
                Created::AlreadyExists => match client.get_key(pin, KEY_MASTER_IP, None).await? {
                    Some(held) if same_address(&held, ip) => {
                        tracing::info!("master_ip={ours} was already published by this node");
                        Ok(Attempt::Done(Claim::Ours))
                    }
                    Some(held) => Ok(Attempt::Done(Claim::HeldBy(held))),
                    // Deleted between our POST and GET: try again.
                    None => Ok(Attempt::NotYet),
                },
            }
        })
        .await
        .map_err(|err| explain(err, &self.config.pin))
    }

    /// Waits for `key` to exist and returns its value: long-polls our service for about one
    /// slot per try, polls a legacy one once per slot.
    async fn wait_for(&mut self, key: &str) -> anyhow::Result<String> {
        let long_poll = self.client.server_kind().is_some_and(|k| k.long_poll);
        let (client, pin) = (&self.client, &self.config.pin);
        let what = format!("waiting for {key}");
        let value = retry(&mut self.schedule, &what, |slot| async move {
            let wait = long_poll.then_some(slot);
            Ok::<_, ClientError>(match client.get_key(pin, key, wait).await? {
                Some(value) => Attempt::Done(value),
                None => Attempt::NotYet,
            })
        })
        .await
        .map_err(|err| explain(err, &self.config.pin))?;
        tracing::info!("got {key}");
        Ok(value)
    }
}

/// Turns a retry failure into the message a person reading the journal needs.
pub(super) fn explain(err: RetryError<ClientError>, pin: &Pin) -> anyhow::Error {
    let hint = match &err {
        RetryError::Permanent(inner) => match inner.status() {
            Some(StatusCode::NOT_FOUND) => Some(format!(
                "the PIN service does not know PIN {pin}: mistyped, deleted or expired \
                 (PINs expire 24 hours after creation)"
            )),
            Some(StatusCode::GONE) => Some(format!("PIN {pin} has expired")),
            Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Some("the PIN service refused the request".to_string())
            }
            _ => None,
        },
        RetryError::GaveUp { .. } => Some(
            "gave up within the window so the boot can go on without cluster contextualization"
                .to_string(),
        ),
    };
    let err = anyhow::Error::new(err);
    match hint {
        Some(hint) => err.context(hint),
        None => err,
    }
}

fn same_address(text: &str, ip: IpAddr) -> bool {
    text.trim().parse::<IpAddr>().is_ok_and(|held| held == ip)
}

fn yes_no(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}
