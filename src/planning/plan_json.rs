//! `--dry-run --json`: the plan as one JSON object, the ordered operations
//! with the command each one stands for.

use crate::planning::attach::Plan;

/// The operation's name: the step's variant (`CreateVeth`, `AddAddress`, ...).
fn op_name(step: &crate::planning::attach::Step) -> String {
    let d = format!("{step:?}");
    d.split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or("")
        .to_string()
}

pub fn value(plan: &Plan, container: &str) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = plan
        .steps
        .iter()
        .map(|s| {
            serde_json::json!({
                "op": op_name(s),
                "command": s.render(&plan.ns),
            })
        })
        .collect();
    serde_json::json!({
        "dry_run": true,
        "container": container,
        "ifname": plan.ifname.to_string(),
        "kind": plan.kind,
        "host_if": plan.host_if.to_string(),
        "host_ifname": plan.host_ifname.as_ref().map(|n| n.to_string()),
        "steps": steps,
    })
}

pub fn render(plan: &Plan, container: &str) -> String {
    value(plan, container).to_string()
}
