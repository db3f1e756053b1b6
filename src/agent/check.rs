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
    match config.service_urls.as_slice() {
        [one] => {
            let _ = writeln!(out, "PIN service: {one}");
        }
        several => {
            let _ = writeln!(
                out,
                "PIN services (in this order; a transient failure moves to the next):"
            );
            for url in several {
                let _ = writeln!(out, "  {url}");
            }
        }
    }
    let _ = writeln!(out, "role: {}", config.role);
    let _ = writeln!(
        out,
        "schedule: {} tries about {:.1}s apart (at most {:.0}s)",
        config.policy.tries,
        config.policy.interval.as_secs_f64(),
        config.policy.window().as_secs_f64()
    );
    let _ = writeln!(out, "sealing: {}", plan.sealing);
    match config.cluster_size {
        Some(size) => {
            let _ = writeln!(out, "expected cluster size: {size}");
        }
        None => {
            let _ = writeln!(out, "expected cluster size: not set");
        }
    }
    let waiting: Vec<String> = plan
        .member_files()
        .map(|f| f.path.display().to_string())
        .collect();
    if !waiting.is_empty() {
        let _ = writeln!(out, "files waiting for members: {}", waiting.join(", "));
    }
    let _ = writeln!(out, "would:");
    let _ = writeln!(
        out,
        "  register this node in the member list (our service only)"
    );
    let sealed = if plan.sealing.is_on() { ", sealed" } else { "" };
    if let Some(publish) = plan.role.publish() {
        let _ = writeln!(
            out,
            "  publish {} = {}{sealed}",
            publish.key,
            describe_address(&publish.address)
        );
    }
    let steps = plan.role.possible_steps();
    let first: BTreeSet<&str> = steps
        .iter()
        .flat_map(|(_, steps)| steps.first.iter().map(String::as_str))
        .collect();
    if !first.is_empty() {
        let first: Vec<&str> = first.into_iter().collect();
        let _ = writeln!(out, "  fetch {} first", first.join(", "));
    }
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
    if plan.sealing.is_on() {
        let _ = writeln!(
            out,
            "  refuse any value read that does not open with the cluster secret"
        );
    }
    if plan.wait_members {
        let _ = writeln!(
            out,
            "  wait for {} members, then fill the member placeholders",
            config.cluster_size.unwrap_or(1)
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agent::{config::Overrides, files::ContextSet},
        secret::ClusterSecret,
    };

    const SECRET: &str = "Zq3_xT8-vKp2LmN9wRb7sA";

    #[test]
    fn the_expected_size_and_the_files_waiting_for_members_are_shown() {
        let dir = tempfile::tempdir().unwrap();
        let (members, plain) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(
            &members,
            "[ucernvm-begin]\ncvm_cluster_pin=enico1qq0oey\ncvm_cluster_size=8\n[ucernvm-end]\n\
             w=###CLUSTER_WORKERS_PLACEHOLDER###\n",
        )
        .unwrap();
        std::fs::write(&plain, "ip=###MASTER_IP_PLACEHOLDER###\n").unwrap();
        let contexts = ContextSet::load(&[members.clone(), plain.clone()]).unwrap();
        let plan = Plan::build(&contexts, &Overrides::default())
            .unwrap()
            .unwrap();
        let text = report(&plan, None);
        assert!(text.contains("expected cluster size: 8"), "{text}");
        assert!(
            text.contains(&format!(
                "files waiting for members: {}\n",
                members.display()
            )),
            "{text}"
        );
        assert!(text.contains("wait for 8 members"), "{text}");
        assert!(!report_for("", &Overrides::default()).contains("files waiting"));
    }

    fn report_for(block_lines: &str, overrides: &Overrides) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user-data");
        let content = format!(
            "[ucernvm-begin]\ncvm_cluster_pin=enico1qq0oey\n{block_lines}[ucernvm-end]\nip=###MASTER_IP_PLACEHOLDER###\n"
        );
        std::fs::write(&path, content).unwrap();
        let contexts = ContextSet::load(&[path]).unwrap();
        let plan = Plan::build(&contexts, overrides).unwrap().unwrap();
        report(&plan, None)
    }

    #[test]
    fn sealing_on_is_said_with_the_fingerprint_never_the_secret() {
        let fingerprint = ClusterSecret::parse(SECRET).unwrap().fingerprint();
        let worker = report_for(
            &format!("cvm_cluster_secret={SECRET}\n"),
            &Overrides::default(),
        );
        assert!(
            worker.contains(&format!(
                "sealing: on (cluster secret fingerprint {fingerprint})\n"
            )),
            "{worker}"
        );
        assert!(
            worker.contains("  fetch master_ip first\n  wait for master_ready\n"),
            "{worker}"
        );
        assert!(
            worker.contains("refuse any value read that does not open"),
            "{worker}"
        );
        assert!(!worker.contains(SECRET), "{worker}");
        assert!(!worker.contains("unknown key"), "a known key: {worker}");

        let master = report_for(
            &format!("cvm_cluster_master=yes\ncvm_cluster_secret={SECRET}\n"),
            &Overrides::default(),
        );
        assert!(
            master.contains(
                "  publish master_ip = the source address toward the PIN service, sealed\n"
            ),
            "{master}"
        );
        assert!(!master.contains(SECRET), "{master}");
    }

    #[test]
    fn sealing_off_is_said_and_the_steps_are_as_before() {
        let worker = report_for("", &Overrides::default());
        assert!(worker.contains("sealing: off\n"), "{worker}");
        assert!(
            worker.contains("  wait for master_ready\n  fetch master_ip\n"),
            "{worker}"
        );
        assert!(!worker.contains("first"), "{worker}");
        assert!(!worker.contains("refuse"), "{worker}");
        let master = report_for("cvm_cluster_master=yes\n", &Overrides::default());
        assert!(
            master.contains("  publish master_ip = the source address toward the PIN service\n"),
            "{master}"
        );
    }
}
