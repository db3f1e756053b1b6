//! `clusterctx master-ready`: run on every node once its boot has finished; only the master
//! acts, publishing `master_ready=yes` (sealed in a sealed cluster) so that waiting workers
//! go on.

use super::{
    address::same_address,
    config::RoleRequest,
    error::AgentError,
    plan::Plan,
    state::{Role, StateStore},
};
use crate::{
    client::{
        retry::{retry, Attempt, Schedule, Step},
        Created, Services,
    },
    protocol::{KEY_MASTER_IP, KEY_MASTER_READY},
};

/// What `master-ready` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// Published now (or found already published at the service).
    Published,
    /// Recorded as published by an earlier boot: nothing sent.
    AlreadyPublished,
    /// This node is not the master.
    NotMaster,
}

pub async fn run(plan: &Plan, store: &StateStore) -> Result<Announced, AgentError> {
    let (config, sealing) = (&plan.config, &plan.sealing);
    // A state recorded with another secret is no state: this master has not contextualized
    // with the secret it has now.
    let mut state = store.load(config.pin.expose(), sealing.fingerprint());
    let is_master = match config.role {
        RoleRequest::Worker => false,
        // Only an election this node won counts, and only if its run succeeded: announcing
        // readiness without a published master_ip would send workers after a key that never
        // comes.
        RoleRequest::Master | RoleRequest::Auto => {
            state.role == Some(Role::Master) && state.succeeded()
        }
    };
    if !is_master {
        if config.role == RoleRequest::Master {
            return Err(AgentError::NotContextualized);
        }
        tracing::info!("this node is not the cluster master: nothing to announce");
        return Ok(Announced::NotMaster);
    }
    if state.master_ready_published {
        tracing::info!("master_ready was already published for PIN {}", config.pin);
        return Ok(Announced::AlreadyPublished);
    }

    let services = Services::new(&config.service_urls, &config.client)
        .map_err(|err| AgentError::Config(err.into()))?;
    let mut schedule = Schedule::new(config.policy);
    let (services, pin) = (&services, &config.pin);
    let step = Step {
        what: "publishing master_ready",
        key: Some(KEY_MASTER_READY),
        url: &config.service_label,
    };
    let ours = state.published_address.as_deref();
    let text = sealing
        .seal(KEY_MASTER_READY, "yes")
        .map_err(AgentError::Seal)?;
    let text = text.as_str();
    let found = retry(&mut schedule, &step, |slot| {
        services.attempt(slot, move |client, _| async move {
            Ok::<_, crate::client::ClientError>(
                match client.create_key(pin, KEY_MASTER_READY, text).await? {
                    Created::Created => Attempt::Done(Found::Created),
                    // An earlier run of ours got there first (idempotent), unless another node
                    // believes it is master too, as a racy legacy create allows: then the first
                    // master_ip row says who is. Sealed, master_ready itself must also open:
                    // workers refuse one that does not.
                    Created::AlreadyExists => Attempt::Done(Found::Existing {
                        first_master_ip: client.first_value(pin, KEY_MASTER_IP).await?,
                        ready: match sealing.is_on() {
                            true => client.get_key(pin, KEY_MASTER_READY, None).await?,
                            false => None,
                        },
                    }),
                },
            )
        })
    })
    .await
    .map_err(|err| AgentError::from_service(err, pin))?;
    let taken_over = |key: &str, source| AgentError::PinTakenOver {
        pin: pin.clone(),
        key: key.to_string(),
        source,
    };
    match found {
        Found::Created if sealing.is_on() => tracing::info!(
            status = "done: published master_ready (sealed)",
            "published master_ready=yes (sealed)"
        ),
        Found::Created => tracing::info!(
            status = "done: published master_ready",
            "published master_ready=yes"
        ),
        Found::Existing {
            first_master_ip,
            ready,
        } => {
            if let Some(held) = first_master_ip {
                let held = sealing
                    .open(KEY_MASTER_IP, &held)
                    .map_err(|source| taken_over(KEY_MASTER_IP, source))?;
                let ours_too = ours
                    .and_then(|ours| ours.parse().ok())
                    .is_some_and(|ours| same_address(&held, ours));
                if !ours_too {
                    return Err(taken(held, ours));
                }
            }
            if let Some(ready) = ready {
                sealing
                    .open(KEY_MASTER_READY, &ready)
                    .map_err(|source| taken_over(KEY_MASTER_READY, source))?;
            }
            tracing::info!(
                status = "done: master_ready was already published",
                "master_ready was already published"
            );
        }
    }
    state.master_ready_published = true;
    store
        .save(&mut state)
        .map_err(|err| AgentError::State(err.into()))?;
    Ok(Announced::Published)
}

/// What the service held once `master_ready` was created.
enum Found {
    /// Nothing: created now.
    Created,
    /// It existed: the first `master_ip` row (who is master) and, in a sealed cluster, the
    /// held `master_ready` (it must open), as the service holds them.
    Existing {
        first_master_ip: Option<String>,
        ready: Option<String>,
    },
}

/// Another node's `master_ip` comes first: this node is not the master it was recorded as.
fn taken(held: String, ours: Option<&str>) -> AgentError {
    match ours.and_then(|ours| ours.parse().ok()) {
        Some(ours) => AgentError::PinTaken { held, ours },
        None => AgentError::NotContextualized,
    }
}
