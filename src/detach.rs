//! `pipe detach GUEST [-i IFNAME]`: undo an attach, guided by its state record
//! and the ownership tags; and the shared teardown that `gc` and `watch` use
//! for attachments whose container is gone.
//!
//! Observe, plan (pure: [`plan`]), then act; teardown goes on past a failed
//! step and reports every failure together.

use std::fmt;
use std::time::Duration;

use log::{debug, warn};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::netlink::{Link, Netlink, Route};
use crate::netns;
use crate::spec::{GuestRef, IfName};
use crate::state::{self, Record, SHARED_TAG, is_tag};

/// What the operator asked.
#[derive(Clone, Debug)]
pub struct DetachSpec {
    pub guest: GuestRef,
    pub ifname: IfName,
    pub force: bool,
    pub timeout: Duration,
}

/// One teardown step.
#[derive(Clone, Debug)]
pub enum DStep {
    /// Put back the default route the attach replaced (ours is still current).
    RestoreDefault {
        route: Route,
    },
    /// Delete the container interface (a veth takes its host end along).
    DeleteGuestLink {
        name: String,
    },
    /// Move a `--direct-phys` interface back to the host under its old name
    /// (the alias the attach gave it), clearing that alias.
    MoveBackToHost {
        name: String,
        host_name: String,
    },
    /// Delete a host link left over (the host end of a veth whose peer is gone).
    DeleteHostLink {
        name: String,
    },
    /// Delete a bridge pipe created, if no port is left when we get there.
    DeleteBridgeIfUnused {
        name: String,
    },
    /// Delete another shared host link pipe created (an 802.1Q sub-interface)
    /// that no other attachment uses.
    DeleteShared {
        name: String,
    },
    RemoveNetnsLink {
        name: String,
    },
    RemoveRecord {
        label: String,
        ifname: String,
    },
}

impl fmt::Display for DStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DStep::RestoreDefault { route } => write!(
                f,
                "ip route replace default{} (the route the attach replaced)",
                route
                    .gateway()
                    .map(|g| format!(" via {g}"))
                    .unwrap_or_default()
            ),
            DStep::DeleteGuestLink { name } => write!(f, "ip link del {name} (in the container)"),
            DStep::MoveBackToHost { name, host_name } => write!(
                f,
                "ip link set {name} netns HOST name {host_name} alias \"\" (from the container)"
            ),
            DStep::DeleteHostLink { name } | DStep::DeleteShared { name } => {
                write!(f, "ip link del {name}")
            }
            DStep::DeleteBridgeIfUnused { name } => {
                write!(f, "ip link del {name} (if no port is left)")
            }
            DStep::RemoveNetnsLink { name } => write!(f, "ip netns delete {name}"),
            DStep::RemoveRecord { label, ifname } => {
                write!(f, "rm {}", state::path(label, ifname).display())
            }
        }
    }
}

/// Everything the teardown plan depends on, read before any change.
#[derive(Clone, Debug, Default)]
pub struct DetachFacts {
    pub label: String,
    pub ifname: String,
    /// The container interface; `None` if it (or the container) is gone.
    pub link: Option<Link>,
    pub record: Option<Record>,
    /// Current default routes (IPv4, IPv6) in the container.
    pub defaults: [Option<Route>; 2],
    /// A host link by the record's host-side name that still exists.
    pub host_leftover: Option<String>,
    /// The bridge the veth is in, if pipe created it (tagged) and no other record uses it.
    pub bridge_to_drop: Option<String>,
    /// Other shared host links pipe created (VLAN sub-interfaces) that no other record uses.
    pub shared_to_drop: Vec<String>,
    /// The /var/run/netns name to drop: pipe made it and no other record of this container is left.
    pub netns_to_drop: Option<String>,
    pub force: bool,
}

/// Pure: the teardown steps, or why not.
pub fn plan(f: &DetachFacts) -> Result<Vec<DStep>> {
    let (label, ifname) = (&f.label, &f.ifname);
    let mut steps = Vec::new();
    match &f.link {
        None if f.record.is_none() => {
            return Err(Error::Refused(format!(
                "container {label} has no interface {ifname} and pipe has no record of it; nothing to detach"
            )));
        }
        None => {}
        Some(l) => {
            if f.record.is_none() && !is_tag(l.alias.as_deref()) && !f.force {
                return Err(Error::Refused(format!(
                    "interface {ifname} of container {label} was not made by pipe (no record, no pipe: alias); \
                     pass --force to delete it anyway"
                )));
            }
            if let Some(r) = &f.record {
                for (i, cur) in f.defaults.iter().enumerate() {
                    let ours = cur.as_ref().is_some_and(|c| c.oif() == Some(l.index));
                    let prev = r
                        .previous_route(i == 1)
                        .flatten()
                        .and_then(|b| Route::from_bytes(&b));
                    if ours && let Some(route) = prev {
                        steps.push(DStep::RestoreDefault { route });
                    }
                }
            }
            // A moved-in host interface goes back; anything else pipe made is deleted.
            match &f.record {
                Some(r) if r.kind == "phys" => steps.push(DStep::MoveBackToHost {
                    name: l.name.clone(),
                    host_name: l
                        .alias
                        .clone()
                        .filter(|a| !a.is_empty() && !is_tag(Some(a)))
                        .unwrap_or_else(|| r.host_if.clone()),
                }),
                _ => steps.push(DStep::DeleteGuestLink {
                    name: l.name.clone(),
                }),
            }
        }
    }
    if let Some(h) = &f.host_leftover {
        steps.push(DStep::DeleteHostLink { name: h.clone() });
    }
    if let Some(b) = &f.bridge_to_drop {
        steps.push(DStep::DeleteBridgeIfUnused { name: b.clone() });
    }
    for n in &f.shared_to_drop {
        steps.push(DStep::DeleteShared { name: n.clone() });
    }
    if let Some(n) = &f.netns_to_drop {
        steps.push(DStep::RemoveNetnsLink { name: n.clone() });
    }
    if f.record.is_some() {
        steps.push(DStep::RemoveRecord {
            label: label.clone(),
            ifname: ifname.clone(),
        });
    }
    Ok(steps)
}

/// What `detach` prints.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub container: String,
    pub ifname: String,
    pub removed: Vec<String>,
}

pub async fn detach(d: &DetachSpec, dry_run: bool) -> Result<Outcome> {
    let host =
        Netlink::current().map_err(|c| Error::kernel("opening a netlink socket on the host", c))?;
    let ifname = d.ifname.as_str();
    let target = match crate::guest::resolve(&d.guest, d.timeout).await {
        Ok(t) => Some(t),
        Err(e) => {
            // The container is gone: what is left is on the host, and on record.
            if load(&d.guest.to_string(), ifname)?.is_none() {
                return Err(e);
            }
            debug!(
                "detach: {} does not resolve ({e}); cleaning up from its record",
                d.guest
            );
            None
        }
    };
    let (label, guest) = match &target {
        Some(t) => {
            let sock = netns::socket_in(&t.netns).map_err(|e| {
                Error::kernel(
                    format!("entering the network namespace of {}", t.label),
                    crate::error::KernelCause::from_io(&e),
                )
            })?;
            let g = Netlink::from_socket(sock)
                .map_err(|c| Error::kernel("opening a netlink socket in the container", c))?;
            (t.label.clone(), Some(g))
        }
        None => (d.guest.to_string(), None),
    };
    let link_name = target.as_ref().and_then(|t| t.link_name.clone());
    let mut f = observe(&label, ifname, guest.as_ref(), &host, link_name).await?;
    f.force = d.force;
    let steps = plan(&f)?;
    if dry_run {
        for s in &steps {
            println!("{s}");
        }
        return Ok(Outcome {
            container: label,
            ifname: ifname.to_string(),
            removed: Vec::new(),
        });
    }
    // A DHCP lease keeper releases its lease and exits before the link goes.
    let released = crate::dhcp::stop_keeper(&label, ifname, std::time::Duration::from_secs(3));
    let mut removed = apply(&steps, guest.as_ref(), &host).await?;
    if released {
        removed.push("DHCP lease (released)".into());
    }
    Ok(Outcome {
        container: label,
        ifname: ifname.to_string(),
        removed,
    })
}

fn load(label: &str, ifname: &str) -> Result<Option<Record>> {
    state::load(label, ifname).map_err(|e| {
        Error::Refused(format!(
            "cannot read pipe's record {}: {e}; remove it if it is damaged",
            state::path(label, ifname).display()
        ))
    })
}

/// Read what the teardown depends on. `guest` is `None` when the container is gone.
pub async fn observe(
    label: &str,
    ifname: &str,
    guest: Option<&Netlink>,
    host: &Netlink,
    netns_name: Option<String>,
) -> Result<DetachFacts> {
    let record = load(label, ifname)?;
    let mut f = DetachFacts {
        label: label.to_string(),
        ifname: ifname.to_string(),
        record: record.clone(),
        ..Default::default()
    };
    let kerr = |what: String| move |c| Error::kernel(what, c);
    if let Some(g) = guest {
        f.link = g
            .link(ifname)
            .await
            .map_err(kerr(format!("looking up {ifname} in container {label}")))?;
        if f.link.is_some() && record.is_some() {
            for (i, v6) in [false, true].into_iter().enumerate() {
                f.defaults[i] = g
                    .default_route(v6, 0)
                    .await
                    .map_err(kerr(format!("reading the default route of {label}")))?;
            }
        }
    }
    // The host end of the veth, when the container end is already gone.
    let host_veth = match &record {
        Some(r) => r.host_ifname.clone(),
        None => None,
    };
    let mut bridge: Option<Link> = None;
    if let Some(hv) = &host_veth {
        let l = host
            .link(hv)
            .await
            .map_err(kerr(format!("looking up host interface {hv}")))?;
        if let Some(l) = l {
            if let Some(m) = l.master {
                bridge = host
                    .link_by_index(m)
                    .await
                    .map_err(kerr(format!("looking up the bridge of {hv}")))?;
            }
            if f.link.is_none() && is_tag(l.alias.as_deref()) {
                f.host_leftover = Some(l.name.clone());
            }
        }
    }
    if bridge.is_none()
        && let Some(r) = &record
        && r.kind == "veth"
    {
        bridge = host
            .link(&r.host_if)
            .await
            .map_err(kerr(format!("looking up bridge {}", r.host_if)))?;
    }
    let others: Vec<Record> = state::all()
        .into_iter()
        .flatten()
        .filter(|o| !(o.label == label && o.ifname == ifname))
        .collect();
    if let Some(b) = bridge
        && b.is_bridge()
        && b.alias.as_deref() == Some(SHARED_TAG)
        && !others.iter().any(|o| o.host_if == b.name)
    {
        f.bridge_to_drop = Some(b.name);
    }
    // VLAN sub-interfaces: this record's own (proof enough), or one another
    // attach made (tagged); in both cases only when no other record uses it.
    if let Some(r) = &record {
        let mut cands: Vec<&String> = r.created_shared.iter().collect();
        if !cands.contains(&&r.host_if) {
            cands.push(&r.host_if);
        }
        for n in cands {
            if f.bridge_to_drop.as_ref() == Some(n) || others.iter().any(|o| &o.host_if == n) {
                continue;
            }
            let Some(l) = host
                .link(n)
                .await
                .map_err(kerr(format!("looking up host interface {n}")))?
            else {
                continue;
            };
            let ours = r.created_shared.contains(n) || l.alias.as_deref() == Some(SHARED_TAG);
            if ours && !l.is_bridge() {
                f.shared_to_drop.push(n.clone());
            }
        }
    }
    let name = netns_name.or_else(|| record.as_ref().and_then(|r| r.netns_link.clone()));
    if let Some(n) = name
        && netns::created_by_pipe(&n)
        && !others.iter().any(|o| o.label == label)
    {
        f.netns_to_drop = Some(n);
    }
    Ok(f)
}

/// Run the steps; go on past failures and report them all at the end.
pub async fn apply(
    steps: &[DStep],
    guest: Option<&Netlink>,
    host: &Netlink,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut fails = Vec::new();
    for s in steps {
        debug!("detach: {s}");
        let r: std::result::Result<Option<String>, String> = match s {
            DStep::RestoreDefault { route } => match guest {
                Some(g) => g
                    .restore_route(route)
                    .await
                    .map(|()| Some("restored the previous default route".into()))
                    .map_err(|c| format!("restoring the previous default route ({c})")),
                None => Ok(None),
            },
            DStep::DeleteGuestLink { name } => match guest {
                Some(g) => g
                    .delete_link_named(name)
                    .await
                    .map(|()| Some(format!("interface {name}")))
                    .or_else(|c| {
                        if c.errno == 19 {
                            Ok(None)
                        } else {
                            Err(format!("deleting {name} ({c})"))
                        }
                    }),
                None => Ok(None),
            },
            DStep::MoveBackToHost { name, host_name } => match guest {
                Some(g) => crate::exec::move_back(
                    g,
                    host,
                    name,
                    &crate::exec::Restore {
                        name: host_name.clone(),
                        mtu: None,
                        mac: None,
                        alias: String::new(),
                        up: false,
                    },
                )
                .await
                .map(|()| {
                    Some(format!(
                        "interface {name} (moved back to the host as {host_name})"
                    ))
                })
                .map_err(|c| format!("moving {name} back to the host as {host_name} ({c})")),
                None => Ok(None),
            },
            DStep::DeleteBridgeIfUnused { name } => drop_bridge_if_unused(host, name).await,
            // Gone already (ENODEV, e.g. with its namespace) is what we wanted.
            DStep::DeleteHostLink { name } | DStep::DeleteShared { name } => host
                .delete_link_named(name)
                .await
                .map(|()| Some(format!("host interface {name}")))
                .or_else(|c| {
                    if c.errno == 19 {
                        Ok(None)
                    } else {
                        Err(format!("deleting host interface {name} ({c})"))
                    }
                }),
            DStep::RemoveNetnsLink { name } => netns::remove_link(name)
                .map(|()| Some(format!("{}", netns::link_path(name).display())))
                .map_err(|e| format!("{}: {e}", netns::link_path(name).display())),
            DStep::RemoveRecord { label, ifname } => state::remove(label, ifname)
                .map(|()| None)
                .map_err(|e| format!("{}: {e}", state::path(label, ifname).display())),
        };
        match r {
            Ok(Some(what)) => done.push(what),
            Ok(None) => {}
            Err(e) => {
                warn!("detach: {e}");
                fails.push(e);
            }
        }
    }
    if fails.is_empty() {
        Ok(done)
    } else {
        Err(Error::Refused(format!(
            "detach could not finish: {}{}",
            fails.join("; "),
            if done.is_empty() {
                String::new()
            } else {
                format!(" (removed: {})", done.join(", "))
            }
        )))
    }
}

/// Delete a pipe-made bridge that has no port left.
pub async fn drop_bridge_if_unused(
    host: &Netlink,
    name: &str,
) -> std::result::Result<Option<String>, String> {
    let b = match host.link(name).await {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(c) => return Err(format!("looking up bridge {name} ({c})")),
    };
    if !b.is_bridge() || b.alias.as_deref() != Some(SHARED_TAG) {
        return Ok(None);
    }
    let ports = host
        .ports_of(b.index)
        .await
        .map_err(|c| format!("listing the ports of {name} ({c})"))?;
    if !ports.is_empty() {
        debug!("bridge {name} still has {} port(s): kept", ports.len());
        return Ok(None);
    }
    host.delete_link(b.index)
        .await
        .map(|()| Some(format!("bridge {name}")))
        .map_err(|c| format!("deleting bridge {name} ({c})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(name: &str, alias: Option<&str>) -> Link {
        Link {
            index: 4,
            name: name.into(),
            kind: Some("veth".into()),
            mtu: 1500,
            up: true,
            mac: None,
            master: None,
            alias: alias.map(Into::into),
        }
    }

    #[test]
    fn foreign_interface_needs_force() {
        let mut f = DetachFacts {
            label: "web".into(),
            ifname: "eth1".into(),
            link: Some(l("eth1", None)),
            ..Default::default()
        };
        let e = plan(&f).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        f.force = true;
        let s = plan(&f).unwrap();
        assert!(matches!(&s[..], [DStep::DeleteGuestLink { .. }]), "{s:?}");
        // A pipe tag is enough without a record.
        f.force = false;
        f.link = Some(l("eth1", Some("pipe:web:eth1")));
        assert!(plan(&f).is_ok());
    }

    #[test]
    fn shared_links_go_after_the_interface_that_uses_them() {
        let f = DetachFacts {
            label: "web".into(),
            ifname: "eth1".into(),
            link: Some(l("eth1", Some("pipe:web:eth1"))),
            shared_to_drop: vec!["eth0.100".into()],
            ..Default::default()
        };
        let s = plan(&f).unwrap();
        assert!(
            matches!(&s[..], [DStep::DeleteGuestLink { .. }, DStep::DeleteShared { name }] if name == "eth0.100"),
            "{s:?}"
        );
    }

    #[test]
    fn nothing_to_detach() {
        let f = DetachFacts {
            label: "web".into(),
            ifname: "eth1".into(),
            ..Default::default()
        };
        let e = plan(&f).unwrap_err();
        assert!(e.to_string().contains("nothing to detach"), "{e}");
    }
}
