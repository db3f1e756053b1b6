//! `clusterctx check` (and `contextualize --dry-run`): what the agent would do with these
//! files, and what is wrong with them, without network traffic or writes.

use std::fmt::Write as _;

use super::{
    config::{self, AddressChoice, RoleRequest},
    state::Outcome,
    AgentArgs,
};
use crate::protocol::KEY_MASTER_IP;

/// Prints the report on stdout. Fails (non-zero exit) when the files or settings have a
/// problem that would make `contextualize` fail.
pub fn run(args: &AgentArgs) -> anyhow::Result<()> {
    let Some((contexts, config)) = args.load()? else {
        println!("nothing to do: no context file with a cvm_cluster_pin");
        return Ok(());
    };
    let mut out = String::new();
    let _ = writeln!(out, "context files:");
    let by_file = contexts.describe();
    for (path, structure, keys) in &by_file {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let shown = if keys.is_empty() {
            "no placeholders".to_string()
        } else {
            format!("placeholders for {}", keys.join(", "))
        };
        let _ = writeln!(out, "  {} ({structure}): {shown}", path.display());
    }
    if let Some((_, block)) = contexts.block()? {
        let _ = writeln!(out, "ucernvm block: {}", block.location());
        for entry in block.entries() {
            if entry.key.starts_with("cvm_cluster_")
                && !config::keys::ALL.contains(&entry.key.as_str())
            {
                let _ = writeln!(
                    out,
                    "warning: {}: unknown key {} (a typo?)",
                    entry.location, entry.key
                );
            }
        }
        for warning in block.warnings() {
            let _ = writeln!(out, "warning: {warning}");
        }
    }
    for warning in contexts.warnings() {
        let _ = writeln!(out, "warning: {warning}");
    }
    let _ = writeln!(out, "cluster PIN: {}", config.pin);
    let _ = writeln!(out, "PIN service: {}", config.service_url);
    let _ = writeln!(out, "role: {}", config.role);
    let address = match &config.address {
        AddressChoice::Detect => "the source address toward the PIN service".to_string(),
        AddressChoice::Fixed(ip) => ip.to_string(),
        AddressChoice::Interface(name) => format!("the address of interface {name}"),
    };
    let _ = writeln!(
        out,
        "schedule: {} tries about {:.1}s apart (at most {:.0}s)",
        config.policy.tries,
        config.policy.interval.as_secs_f64(),
        config.policy.window().as_secs_f64()
    );
    let mut keys = contexts.placeholders();
    let _ = writeln!(out, "would:");
    if config.role != RoleRequest::Worker {
        let _ = writeln!(out, "  publish master_ip = {address}");
    }
    if config.role != RoleRequest::Master {
        keys.insert(KEY_MASTER_IP.to_string());
        if config.wait_ready {
            let _ = writeln!(out, "  wait for master_ready");
        }
    }
    if !keys.is_empty() {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let _ = writeln!(out, "  fetch {}", keys.join(", "));
    }
    let to_fill = by_file
        .iter()
        .filter(|(_, _, keys)| !keys.is_empty())
        .count();
    let _ = writeln!(out, "  fill placeholders in {to_fill} file(s)");
    let state = args.store().load(config.pin.expose());
    if let Some(outcome) = &state.outcome {
        let shown = match outcome {
            Outcome::Success => format!(
                "succeeded as {}",
                state.role.map_or("?".to_string(), |r| r.to_string())
            ),
            Outcome::Failed { error } => format!("failed: {error}"),
        };
        let _ = writeln!(
            out,
            "recorded outcome in {}: {shown}",
            args.store().path().display()
        );
    }
    for warning in &config.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    print!("{out}");
    Ok(())
}
