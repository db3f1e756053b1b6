//! `clusterctx contextualize`: the boot step, executing a [`Plan`].
//!
//! 1. Read the ucernvm block; no PIN means nothing to do (the plan is `None`).
//! 2. If the recorded state says this PIN already succeeded and every placeholder's value is
//!    known, refill any placeholders offline and stop (a reboot costs no network).
//! 3. Check the PIN at the service (an unknown or expired PIN fails at once) and learn whether
//!    the service is ours (long-poll, atomic create) or legacy.
//! 4. Master: publish `master_ip`. Auto: try to; whoever creates it first is the master.
//! 5. Then the steps the plan gives the role: a worker waits for `master_ready` (unless told
//!    not to), then for every key a placeholder needs.
//! 6. Check every value, then rewrite the files atomically.
//!
//! In a sealed cluster every value goes through [`Plan::sealing`]: sealed on its way to the
//! service, opened on its way back, before any check. A value that does not open is refused
//! at once (a master says the PIN has been taken over); it is never logged, and neither is the
//! secret: logs show the opened values where an unsealed run shows the values.
//!
//! All network steps share one schedule of tries, so the whole run never exceeds its window.

use std::{collections::BTreeMap, net::IpAddr};

use reqwest::StatusCode;

use super::{
    address,
    config::{AddressChoice, RoleRequest},
    error::AgentError,
    files::ContextSet,
    plan::{Plan, Publish, RolePlan, Steps},
    state::{Outcome, Role, State, StateStore},
};
use crate::{
    client::{
        retry::{retry, Attempt, RetryPolicy, Schedule, Step},
        ClientError, Created, Services,
    },
    context::check_value,
    protocol::KEY_MASTER_READY,
};

/// How a run ended without error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// Done earlier; at most placeholders were refilled from recorded values.
    AlreadyDone { role: Role },
    /// Done now.
    Contextualized { role: Role },
}

/// Executes `plan` on `contexts` (the files it was made from) and records the outcome in
/// `store`.
pub async fn run(
    plan: &Plan,
    contexts: &ContextSet,
    store: &StateStore,
) -> Result<Finished, AgentError> {
    plan.log_warnings();
    let config = &plan.config;
    let mut state = store.load(config.pin.expose(), plan.sealing.fingerprint());
    let needed = plan.placeholders();

    if let Some(role) = state.role.filter(|_| state.succeeded()) {
        if needed.iter().all(|key| state.values.contains_key(key)) {
            let refilled = fill(contexts, &state.values)?;
            // Registering logs progress of its own: the unit's last word (`systemctl status`)
            // must still be this run's outcome, so it comes after.
            reregister(plan, &mut state, store, role).await;
            tracing::info!(
                status = %format!("done: already contextualized as {role}, {} file(s) refilled", refilled.len()),
                "already contextualized as {role} for PIN {}; refilled {} file(s) from recorded values",
                config.pin,
                refilled.len()
            );
            return Ok(Finished::AlreadyDone { role });
        }
        tracing::info!("files reference keys not fetched before; contextualizing again");
    }

    let outcome = match Run::new(plan, &mut state, store) {
        Ok(mut run) => run.execute(contexts).await,
        Err(err) => Err(err),
    };
    state.outcome = Some(match &outcome {
        Ok(_) => Outcome::Success,
        Err(err) => Outcome::Failed {
            error: err.chain_text(),
        },
    });
    if let Err(save_error) = store.save(&mut state) {
        // The run's own error matters more; a state we could not save only means the next
        // boot redoes the work.
        tracing::error!("{save_error:#}");
        if outcome.is_ok() {
            return Err(AgentError::State(save_error.into()));
        }
    }
    outcome.map(|role| Finished::Contextualized { role })
}

/// The budget of a reboot's re-registration: one short try, so that a service that is down
/// delays an already contextualized boot by seconds, not by the tries window.
const REREGISTER_POLICY: RetryPolicy = RetryPolicy {
    tries: 1,
    interval: std::time::Duration::from_secs(5),
};

/// A reboot of a node already contextualized: registers it again (200) with its current
/// address, so that the member list shows it alive where it is now. Best effort: the files are
/// filled, so a failure is logged and the boot goes on.
async fn reregister(plan: &Plan, state: &mut State, store: &StateStore, role: Role) {
    let mut run = match Run::new(plan, state, store) {
        Ok(run) => run,
        Err(err) => {
            tracing::warn!("not registering again: {err}");
            return;
        }
    };
    run.schedule = Schedule::new(REREGISTER_POLICY);
    // Not `values`: the current address is found again, not the one recorded.
    let result = match run.check_pin().await {
        Ok(()) => run.register(role, &BTreeMap::new()).await,
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        tracing::warn!("could not register this node again after the reboot: {err}");
    }
}

/// Checks every value, then fills the files: a value that would change a file's meaning
/// stops the run before the first file is touched.
fn fill(
    contexts: &ContextSet,
    values: &BTreeMap<String, String>,
) -> Result<BTreeMap<std::path::PathBuf, usize>, AgentError> {
    for (key, value) in values {
        check_value(key, value).map_err(|source| AgentError::UnsafeValue {
            key: key.clone(),
            source,
        })?;
    }
    contexts
        .substitute_all(values)
        .map_err(|err| AgentError::ContextWrite(err.into()))
}

/// One contextualization attempt's working set.
struct Run<'a> {
    plan: &'a Plan,
    state: &'a mut State,
    /// Where the node's id lives (its member name is derived from it).
    store: &'a StateStore,
    /// The service's URLs; each try fails over among them.
    services: Services,
    schedule: Schedule,
}

/// Outcome of trying to create the published key with our address.
enum Claim {
    /// We hold it (created now, or found our own address from an earlier boot).
    Ours,
    /// Someone else does: the value, opened if sealing is on.
    HeldBy(String),
    /// Sealing is on and the value does not open: nobody of this cluster holds it.
    Foreign(crate::seal::OpenError),
}

impl<'a> Run<'a> {
    fn new(
        plan: &'a Plan,
        state: &'a mut State,
        store: &'a StateStore,
    ) -> Result<Self, AgentError> {
        let config = &plan.config;
        let services = Services::new(&config.service_urls, &config.client)
            .map_err(|err| AgentError::Config(err.into()))?;
        Ok(Run {
            plan,
            state,
            store,
            services,
            schedule: Schedule::new(config.policy),
        })
    }

    /// A step against the service of this run. Borrows the plan, not the run, so that the
    /// run's schedule stays free to be advanced.
    fn step<'s>(&self, what: &'s str, key: Option<&'s str>) -> Step<'s>
    where
        'a: 's,
    {
        Step {
            what,
            key,
            url: &self.plan.config.service_label,
        }
    }

    async fn execute(&mut self, contexts: &ContextSet) -> Result<Role, AgentError> {
        let config = &self.plan.config;
        let policy = config.policy;
        tracing::info!(
            tries = policy.tries,
            url = config.service_label,
            "joining cluster PIN {} at {} as {}: up to {} tries about {:.1}s apart",
            config.pin,
            config.service_urls.join(" or "),
            config.role,
            policy.tries,
            policy.interval.as_secs_f64()
        );
        if self.plan.sealing.is_on() {
            tracing::info!("sealing: {}", self.plan.sealing);
        }
        self.check_pin().await?;

        let mut values = BTreeMap::new();
        let plan = self.plan;
        let (role, steps): (Role, &Steps) = match &plan.role {
            RolePlan::Worker { then } => (Role::Worker, then),
            RolePlan::Master { publish, then } => {
                let ip = self.our_address(&publish.address).await?;
                match self.claim(publish, ip).await? {
                    Claim::Ours => {}
                    Claim::HeldBy(held) => return Err(AgentError::PinTaken { held, ours: ip }),
                    Claim::Foreign(source) => return Err(self.taken_over(publish.key, source)),
                }
                values.insert(publish.key.to_string(), ip.to_string());
                (Role::Master, then)
            }
            RolePlan::Elect {
                publish,
                if_elected,
                if_not,
            } => {
                let ip = self.our_address(&publish.address).await?;
                match self.claim(publish, ip).await? {
                    Claim::Ours => {
                        tracing::info!("elected master: created {}={ip} first", publish.key);
                        values.insert(publish.key.to_string(), ip.to_string());
                        (Role::Master, if_elected)
                    }
                    Claim::HeldBy(master) => {
                        tracing::info!(
                            "another node is master ({}); acting as worker",
                            master.escape_debug()
                        );
                        values.insert(publish.key.to_string(), master);
                        (Role::Worker, if_not)
                    }
                    Claim::Foreign(source) => return Err(self.taken_over(publish.key, source)),
                }
            }
        };
        self.state.role = Some(role);
        // Before any wait: a master waiting for N members must find its workers registered.
        let registered = self.register(role, &values).await?;
        if role == Role::Master {
            self.state.published_address = plan
                .role
                .publish()
                .and_then(|publish| values.get(publish.key))
                .cloned();
        }

        for key in &steps.first {
            if !values.contains_key(key) {
                let value = self.wait_for(key).await?;
                values.insert(key.clone(), value);
            }
        }
        if steps.wait_ready {
            self.wait_for(KEY_MASTER_READY).await?;
        }
        for key in &steps.fetch {
            if !values.contains_key(key) {
                let value = self.wait_for(key).await?;
                values.insert(key.clone(), value);
            }
        }
        if plan.wait_members {
            if !registered {
                return Err(AgentError::NoMembersRoute {
                    files: plan
                        .member_files()
                        .map(|f| f.path.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            values.extend(self.wait_members().await?);
        }
        self.state.values = values;

        let rewritten = fill(contexts, &self.state.values)?;
        tracing::info!(
            status = %format!("done: {} file(s) filled as {role}", rewritten.len()),
            "contextualized as {role}: {} file(s) rewritten",
            rewritten.len()
        );
        self.state.files = rewritten;
        Ok(role)
    }

    /// Registers this node in the member list with its address (the one it published as
    /// master, else found as a master's is; sealed when sealing is on). `Ok(false)`: the
    /// service keeps no member list (legacy), logged once.
    async fn register(
        &mut self,
        role: Role,
        values: &BTreeMap<String, String>,
    ) -> Result<bool, AgentError> {
        if self
            .services
            .server_kind()
            .map_or(true, |kind| kind.is_legacy())
        {
            tracing::info!("the PIN service is a legacy one: no member list, not registering");
            return Ok(false);
        }
        let config = &self.plan.config;
        let address = match (role, values.get(crate::protocol::KEY_MASTER_IP)) {
            (Role::Master, Some(ip)) => ip.parse::<IpAddr>().ok(),
            _ => None,
        };
        let address = match address {
            Some(ip) => ip,
            None => self.our_address(&config.address).await?,
        };
        let node = super::node::node_name(self.store.dir(), &config.pin)
            .map_err(|err| AgentError::State(err.into()))?;
        let text = self
            .plan
            .sealing
            .seal(crate::seal::MEMBER_ADDRESS_KEY, &address.to_string())
            .map_err(AgentError::Seal)?;
        let step = self.step("registering this node", None);
        let (services, pin, node, text) =
            (&self.services, &config.pin, node.as_str(), text.as_str());
        let role_text = role.to_string();
        let role_text = role_text.as_str();
        let joined = retry(&mut self.schedule, &step, |slot| {
            services.attempt(slot, move |client, _| async move {
                client
                    .register_member(pin, node, text, role_text)
                    .await
                    .map(Attempt::Done)
            })
        })
        .await
        .map_err(|err| AgentError::from_service(err, pin))?;
        match joined {
            None => {
                tracing::info!("the PIN service has no member list: not registering");
                Ok(false)
            }
            Some(new) => {
                let how = if new { "joined" } else { "registered again" };
                tracing::info!("node {node} {how} the member list as {role} at {address}");
                Ok(true)
            }
        }
    }

    /// Waits for `cvm_cluster_size` members (long-poll `min`), then the member placeholders'
    /// values: every address (master first, then joining order), the workers', the size.
    async fn wait_members(&mut self) -> Result<BTreeMap<String, String>, AgentError> {
        use super::plan::member_keys;
        let size = self.plan.config.cluster_size.unwrap_or(1);
        let min = usize::try_from(size).unwrap_or(usize::MAX);
        let step = self.step("waiting for the cluster's members", None);
        let (services, pin) = (&self.services, &self.plan.config.pin);
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let seen = &seen;
        let members = retry(&mut self.schedule, &step, |slot| {
            services.attempt(slot, move |client, left| async move {
                let members = client.members(pin, Some(min), Some(left)).await?;
                seen.store(members.len(), std::sync::atomic::Ordering::Relaxed);
                Ok::<_, ClientError>(if members.len() >= min {
                    Attempt::Done(members)
                } else {
                    Attempt::NotYet
                })
            })
        })
        .await
        .map_err(|err| match AgentError::from_service(err, pin) {
            AgentError::WindowClosed(source) => AgentError::SizeNotReached {
                registered: seen.load(std::sync::atomic::Ordering::Relaxed),
                size,
                source,
            },
            other => other,
        })?;
        // The first N to join make the list: a later joiner changes nothing.
        let mut master = Vec::new();
        let mut workers = Vec::new();
        for member in members.iter().take(min) {
            let address = self
                .plan
                .sealing
                .open(crate::seal::MEMBER_ADDRESS_KEY, &member.address)
                .map_err(|source| AgentError::NotSealedByThisCluster {
                    key: format!("the address of member {}", member.node),
                    source,
                })?;
            if member.role == "master" {
                master.push(address);
            } else {
                workers.push(address);
            }
        }
        tracing::info!(
            "{} members registered: {} master(s), {} worker(s)",
            members.len(),
            master.len(),
            workers.len()
        );
        let all: Vec<String> = master.iter().chain(workers.iter()).cloned().collect();
        Ok(BTreeMap::from([
            (member_keys::MEMBERS.to_string(), all.join(",")),
            (member_keys::WORKERS.to_string(), workers.join(",")),
            (member_keys::SIZE.to_string(), size.to_string()),
        ]))
    }

    /// Checks that the service knows the PIN, and learns what kind of service it is.
    async fn check_pin(&mut self) -> Result<(), AgentError> {
        let step = self.step("checking the cluster PIN", None);
        let (services, pin) = (&self.services, &self.plan.config.pin);
        retry(&mut self.schedule, &step, |slot| async move {
            services
                .attempt(slot, |client, _| async move {
                    client.cluster(pin).await.map(|_| Attempt::Done(()))
                })
                .await
        })
        .await
        .map_err(|err| AgentError::from_service(err, pin))?;
        let url = self.services.current_url();
        match self.services.server_kind() {
            Some(kind) if !kind.is_legacy() => tracing::info!(
                url,
                "the PIN service at {url} is {} (long-poll: {}, atomic create: {})",
                kind.name.as_deref().unwrap_or("ours"),
                yes_no(kind.long_poll),
                yes_no(kind.atomic_create)
            ),
            _ => {
                tracing::info!(
                    url,
                    "the PIN service at {url} is a legacy one: polling without long-poll"
                );
                if self.plan.config.role == RoleRequest::Auto {
                    tracing::info!(
                        "auto election against a legacy PIN service: its create is racy, so \
                         the first master_ip row of its keys list decides who is master"
                    );
                }
            }
        }
        Ok(())
    }

    async fn our_address(&mut self, choice: &AddressChoice) -> Result<IpAddr, AgentError> {
        // Toward the URL that answered the PIN check: a dead first URL may have no route.
        let url = self.services.current_url();
        let step = Step {
            what: "finding the address to publish",
            key: None,
            url,
        };
        let ip = retry(&mut self.schedule, &step, |_| async move {
            address::resolve(choice, url).await.map(Attempt::Done)
        })
        .await
        .map_err(AgentError::from_address)?;
        tracing::info!("this node's address: {ip}");
        Ok(ip)
    }

    /// Creates `publish.key` = `ip` (sealed if sealing is on), create-only. A 409 holding our
    /// own address is success (a reboot republishing: in a sealed cluster, recognised by
    /// opening it, since every seal has its own nonce); any other holder is reported, not
    /// overwritten. Against a legacy service a 201 proves nothing (its create races): the
    /// first row of the key in its list decides, for every node alike.
    async fn claim(&mut self, publish: &Publish, ip: IpAddr) -> Result<Claim, AgentError> {
        let key = publish.key;
        let what = format!("publishing {key}");
        let step = self.step(&what, Some(key));
        let (services, pin, sealing) = (&self.services, &self.plan.config.pin, &self.plan.sealing);
        let legacy = self
            .services
            .server_kind()
            .map_or(true, |kind| kind.is_legacy());
        let ours = ip.to_string();
        // Sealed once for every try: a retried create carries the same text, so a create that
        // succeeded unseen comes back as our own value.
        let text = sealing.seal(key, &ours).map_err(AgentError::Seal)?;
        let (ours, text) = (ours.as_str(), text.as_str());
        let sealed = if sealing.is_on() { " (sealed)" } else { "" };
        // A create that timed out on one URL may have committed: the next URL then answers
        // 409 with our own text, which counts as ours below.
        retry(&mut self.schedule, &step, |slot| {
            services.attempt(slot, move |client, _| async move {
                let created = client.create_key(pin, key, text).await?;
                let held = if legacy {
                    client.first_value(pin, key).await?
                } else if created == Created::Created {
                    tracing::info!(key, "published {key}={ours}{sealed}");
                    return Ok::<_, ClientError>(Attempt::Done(Claim::Ours));
                } else {
                    client.get_key(pin, key, None).await?
                };
                // Deleted between our POST and the look: try again.
                let Some(held) = held else {
                    return Ok(Attempt::NotYet);
                };
                Ok(Attempt::Done(match sealing.open(key, &held) {
                    Ok(held) if address::same_address(&held, ip) => {
                        match created {
                            Created::Created => {
                                tracing::info!(key, "published {key}={ours}{sealed}")
                            }
                            Created::AlreadyExists => {
                                tracing::info!(
                                    key,
                                    "{key}={ours} was already published by this node"
                                )
                            }
                        }
                        Claim::Ours
                    }
                    Ok(held) => {
                        if created == Created::Created {
                            tracing::warn!(
                                key,
                                "the legacy service let another node create {key} too; its first \
                             row ({}) wins",
                                held.escape_debug()
                            );
                        }
                        Claim::HeldBy(held)
                    }
                    Err(err) => Claim::Foreign(err),
                }))
            })
        })
        .await
        .map_err(|err| AgentError::from_service(err, pin))
    }

    fn taken_over(&self, key: &str, source: crate::seal::OpenError) -> AgentError {
        AgentError::PinTakenOver {
            pin: self.plan.config.pin.clone(),
            key: key.to_string(),
            source,
        }
    }

    /// Waits for `key` to exist and returns its value, opened if sealing is on: long-polls our
    /// service for about one slot per try, polls a legacy one once per slot. A value that
    /// does not open fails at once: the key is create-only, so waiting cannot change it.
    async fn wait_for(&mut self, key: &str) -> Result<String, AgentError> {
        let long_poll = self.services.server_kind().is_some_and(|k| k.long_poll);
        let legacy = self
            .services
            .server_kind()
            .map_or(true, |kind| kind.is_legacy());
        let what = format!("waiting for {key}");
        let step = self.step(&what, Some(key));
        let (services, pin) = (&self.services, &self.plan.config.pin);
        // A long-poll cut short on one URL (its replica died) goes on at the next one with
        // what is left of the slot.
        let value = retry(&mut self.schedule, &step, |slot| {
            services.attempt(slot, move |client, left| async move {
                let wait = long_poll.then_some(left);
                let found = match client.get_key(pin, key, wait).await {
                    // A legacy service answers 500 for a key that its racy create stored twice;
                    // the first row of its list is the one the nodes agreed on.
                    Err(ClientError::Status { status, .. })
                        if legacy && status == StatusCode::INTERNAL_SERVER_ERROR =>
                    {
                        client.first_value(pin, key).await?
                    }
                    other => other?,
                };
                Ok::<_, ClientError>(match found {
                    Some(value) => Attempt::Done(value),
                    None => Attempt::NotYet,
                })
            })
        })
        .await
        .map_err(|err| AgentError::from_service(err, pin))?;
        let value = self.plan.sealing.open(key, &value).map_err(|source| {
            AgentError::NotSealedByThisCluster {
                key: key.to_string(),
                source,
            }
        })?;
        tracing::info!(key, "got {key}");
        Ok(value)
    }
}

fn yes_no(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}
