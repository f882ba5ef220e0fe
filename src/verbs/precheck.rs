//! Checks before planning that read the container and explain, and notes the
//! operator should see. Read-only.

use crate::domain::error::{Error, Result};
use crate::domain::spec::AttachSpec;
use crate::planning::attach::Facts;
use crate::sys::guest::Target;
use crate::sys::netns;
use crate::sys::netns_link::LinkState;

/// Refuse an IPv6 attach into a namespace where new interfaces get IPv6
/// disabled (`docker run --net=none` sets `disable_ipv6=1`): the kernel would
/// answer "Permission denied" to the address, which reads as a privilege
/// problem. pipe does not turn IPv6 on by itself: the container's creator
/// chose that setting, and the fix is theirs to make (see the message).
pub fn ipv6_enabled(spec: &AttachSpec, target: &Target) -> Result<()> {
    let Some(a) = spec.addr.all().into_iter().find(|a| a.is_ipv6()) else {
        return Ok(());
    };
    // A new interface copies net.ipv6.conf.default; writing `all` sets it too.
    let v = netns::run_in(&target.netns, || {
        std::fs::read_to_string("/proc/sys/net/ipv6/conf/default/disable_ipv6")
    });
    match v {
        Ok(v) if v.trim() == "1" => Err(Error::Refused(disabled_message(
            &target.label,
            &target.netns.path.display().to_string(),
            &a.to_string(),
        ))),
        // No IPv6 in this kernel, or unreadable: the kernel's answer will say.
        _ => Ok(()),
    }
}

pub fn disabled_message(label: &str, ns_path: &str, addr: &str) -> String {
    format!(
        "IPv6 is disabled in container {label} (net.ipv6.conf.default.disable_ipv6=1, as docker run sets it \
         for containers without an IPv6 network), so {addr} cannot be added; start the container with \
         --sysctl net.ipv6.conf.all.disable_ipv6=0, or enable it for new interfaces with \
         nsenter --net={ns_path} sysctl -w net.ipv6.conf.default.disable_ipv6=0 and run pipe again"
    )
}

/// Things to tell the operator about an attach that goes ahead.
pub fn notes(_spec: &AttachSpec, facts: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    // A first attach refuses this case (plan); a re-run keeps the link.
    if facts.guest_ifname_taken.is_some()
        && let Some((name, LinkState::Other)) = &facts.netns_link
    {
        out.push(format!(
            "{}/{name} links to another live network namespace, not to this container, so \
             `ip netns exec {name}` reaches that one; pipe did not make that link and keeps it \
             (remove it with ip netns delete {name} if it is stale, then run pipe again)",
            netns::NETNS_RUN_DIR
        ));
    }
    out
}
