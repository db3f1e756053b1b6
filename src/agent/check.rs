//! `clusterctx check` (and `contextualize --dry-run`): the [`Plan`] as a report, and what is
//! wrong with the files, without network traffic or writes.

use std::{collections::BTreeSet, fmt::Write as _, path::Path};

use super::{
    config::AddressChoice,
    plan::{Concern, Plan},
    state::{Outcome, State},
};

/// The report for `plan`; `recorded` is the state file and what it holds, when it holds an
/// outcome for this PIN.
pub fn report(plan: &Plan, recorded: Option<(&Path, &State)>) -> String {
    let config = &plan.config;
    let mut out = String::new();
    let _ = writeln!(out, "context files:");
    for file in &plan.files {
        let keys: Vec<&str> = file.keys.iter().map(String::as_str).collect();
        let shown = if keys.is_empty() {
            "no placeholders".to_string()
        } else {
            format!("placeholders for {}", keys.join(", "))
        };
        let _ = writeln!(
            out,
            "  {} ({}): {shown}",
            file.path.display(),
            file.structure
        );
    }
    if let Some(location) = &plan.block {
        let _ = writeln!(out, "ucernvm block: {location}");
    }
    for warning in plan.warnings.iter().filter(|w| w.about == Concern::Files) {
        let _ = writeln!(out, "warning: {warning}");
    }
    let _ = writeln!(out, "cluster PIN: {}", config.pin);
    let _ = writeln!(out, "PIN service: {}", config.service_url);
    let _ = writeln!(out, "role: {}", config.role);
    let _ = writeln!(
        out,
        "schedule: {} tries about {:.1}s apart (at most {:.0}s)",
        config.policy.tries,
        config.policy.interval.as_secs_f64(),
        config.policy.window().as_secs_f64()
    );
    let _ = writeln!(out, "would:");
    if let Some(publish) = plan.role.publish() {
        let _ = writeln!(
            out,
            "  publish {} = {}",
            publish.key,
            describe_address(&publish.address)
        );
    }
    let steps = plan.role.possible_steps();
    if steps.iter().any(|(_, steps)| steps.wait_ready) {
        let _ = writeln!(out, "  wait for master_ready");
    }
    let fetched: BTreeSet<&str> = steps
        .iter()
        .flat_map(|(_, steps)| steps.fetch.iter().map(String::as_str))
        .collect();
    if !fetched.is_empty() {
        let fetched: Vec<&str> = fetched.into_iter().collect();
        let _ = writeln!(out, "  fetch {}", fetched.join(", "));
    }
    let _ = writeln!(
        out,
        "  fill placeholders in {} file(s)",
        plan.files_to_fill().count()
    );
    if let Some((path, state)) = recorded {
        if let Some(outcome) = &state.outcome {
            let shown = match outcome {
                Outcome::Success => format!(
                    "succeeded as {}",
                    state.role.map_or("?".to_string(), |r| r.to_string())
                ),
                Outcome::Failed { error } => format!("failed: {error}"),
            };
            let _ = writeln!(out, "recorded outcome in {}: {shown}", path.display());
        }
    }
    for warning in plan
        .warnings
        .iter()
        .filter(|w| w.about == Concern::Settings)
    {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

fn describe_address(choice: &AddressChoice) -> String {
    match choice {
        AddressChoice::Detect => "the source address toward the PIN service".to_string(),
        AddressChoice::Fixed(ip) => ip.to_string(),
        AddressChoice::Interface(name) => format!("the address of interface {name}"),
    }
}
