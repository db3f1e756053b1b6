//! `clusterctx master-ready`: run on every node once its boot has finished; only the master
//! acts, publishing `master_ready=yes` so that waiting workers go on.

use super::{
    config::{AgentConfig, RoleRequest},
    error::AgentError,
    state::{Role, StateStore},
};
use crate::{
    client::{
        retry::{retry, Attempt, Schedule, Step},
        Created, PinClient,
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

pub async fn run(config: &AgentConfig, store: &StateStore) -> Result<Announced, AgentError> {
    let mut state = store.load(config.pin.expose());
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

    let client = PinClient::new(&config.service_url, &config.client)
        .map_err(|err| AgentError::Config(err.into()))?;
    let mut schedule = Schedule::new(config.policy);
    let (client, pin) = (&client, &config.pin);
    let step = Step {
        what: "publishing master_ready",
        key: Some(KEY_MASTER_READY),
        url: &config.service_url,
    };
    let ours = state.published_address.as_deref();
    let held = retry(&mut schedule, &step, |_| async move {
        match client.create_key(pin, KEY_MASTER_READY, "yes").await? {
            Created::Created => tracing::info!("published master_ready=yes"),
            // An earlier run of ours got there first (idempotent), unless another node
            // believes it is master too, as a racy legacy create allows: then the first
            // master_ip row says who is.
            Created::AlreadyExists => {
                let held = client.first_value(pin, KEY_MASTER_IP).await?;
                if let Some(held) = held.filter(|held| Some(held.as_str()) != ours) {
                    return Ok(Attempt::Done(Some(held)));
                }
                tracing::info!("master_ready was already published");
            }
        }
        Ok::<_, crate::client::ClientError>(Attempt::Done(None))
    })
    .await
    .map_err(|err| AgentError::from_service(err, pin))?;
    if let Some(held) = held {
        return Err(taken(held, ours));
    }
    state.master_ready_published = true;
    store
        .save(&mut state)
        .map_err(|err| AgentError::State(err.into()))?;
    Ok(Announced::Published)
}

/// Another node's `master_ip` comes first: this node is not the master it was recorded as.
fn taken(held: String, ours: Option<&str>) -> AgentError {
    match ours.and_then(|ours| ours.parse().ok()) {
        Some(ours) => AgentError::PinTaken { held, ours },
        None => AgentError::NotContextualized,
    }
}
