//! What a successful attach prints: one line, or one JSON object.

use serde::Serialize;

use crate::domain::spec::AttachSpec;
use crate::planning::attach::Plan;
use crate::planning::journal::Applied;
use crate::sys::guest::Target;

#[derive(Debug, Serialize)]
pub struct Report {
    pub container: String,
    pub ifname: String,
    pub mac: Option<String>,
    /// The first address (see `addresses` for all of them).
    pub address: Option<String>,
    /// Every address given (dual stack: both), or the leased one.
    pub addresses: Vec<String>,
    pub gateway: Option<String>,
    /// Every gateway (at most one per family).
    pub gateways: Vec<String>,
    /// "veth", "macvlan", "ipvlan", "vlan" (an 802.1Q device made in the
    /// container by --direct-phys) or "phys" (a host interface moved in).
    pub kind: &'static str,
    /// The bridge, the macvlan/ipvlan parent (`HOST_IF.VID` with a VLAN), or the moved interface.
    pub host_if: String,
    /// The 802.1Q VLAN id, when one was asked for.
    pub vlan: Option<u16>,
    /// The host end of a veth.
    pub host_ifname: Option<String>,
    /// The /var/run/netns name, when linked.
    pub netns: Option<String>,
    /// A re-run that found the attachment as asked and changed nothing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub already_attached: bool,
}

impl Report {
    pub fn new(spec: &AttachSpec, target: &Target, plan: &Plan, applied: &Applied) -> Report {
        Report {
            container: target.label.clone(),
            ifname: plan.ifname.to_string(),
            mac: applied.guest_link.mac.map(|m| m.to_string()),
            address: spec
                .addr
                .addr
                .map(|a| a.to_string())
                .or(applied.leased.as_ref().map(|l| l.net().to_string())),
            addresses: {
                let a: Vec<String> = spec.addr.all().iter().map(|a| a.to_string()).collect();
                if a.is_empty() {
                    applied.leased.iter().map(|l| l.net().to_string()).collect()
                } else {
                    a
                }
            },
            gateways: {
                let g: Vec<String> = spec.addr.gateways().iter().map(|g| g.to_string()).collect();
                if g.is_empty() {
                    applied
                        .leased
                        .iter()
                        .filter_map(|l| l.router)
                        .map(|g| g.to_string())
                        .collect()
                } else {
                    g
                }
            },
            gateway: spec.addr.gateway.map(|g| g.to_string()).or(applied
                .leased
                .as_ref()
                .and_then(|l| l.router)
                .map(|g| g.to_string())),
            kind: plan.kind,
            host_if: plan.host_if.to_string(),
            vlan: spec.vlan.map(|v| v.get()),
            host_ifname: plan.host_ifname.as_ref().map(|n| n.to_string()),
            netns: target.link_name.clone().filter(|_| spec.netns_link),
            already_attached: false,
        }
    }

    pub fn line(&self) -> String {
        let mut s = format!(
            "{} {} mac {} addr {}",
            self.container,
            self.ifname,
            self.mac.as_deref().unwrap_or("-"),
            if self.addresses.is_empty() {
                "none".to_string()
            } else {
                self.addresses.join(",")
            },
        );
        if !self.gateways.is_empty() {
            s.push_str(&format!(" via {}", self.gateways.join(",")));
        }
        match &self.host_ifname {
            Some(h) => s.push_str(&format!(" host {h} on bridge {}", self.host_if)),
            None if self.kind == "phys" => s.push_str(&format!(" moved from {}", self.host_if)),
            None => s.push_str(&format!(" {} on {}", self.kind, self.host_if)),
        }
        if let Some(v) = self.vlan {
            s.push_str(&format!(" vlan {v}"));
        }
        if self.already_attached {
            s.push_str(" (already attached)");
        }
        s
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}
