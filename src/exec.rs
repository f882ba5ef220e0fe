//! Apply a plan. Every step that creates something pushes its undo; if a step
//! fails, the undos run in reverse and every failure among them is reported.

use std::collections::HashMap;
use std::os::fd::AsFd;

use log::{debug, warn};

use crate::error::{Error, Result};
use crate::guest::Target;
use crate::netlink::{Link, Netlink, NewLink, Route};
use crate::netns;
use crate::plan::{Plan, Step};
use crate::spec::IfName;

/// Hidden test hook: fail on purpose after step N (1-based), to prove rollback.
const FAIL_AFTER_ENV: &str = "PIPE_FAIL_AFTER";

#[derive(Debug)]
enum Undo {
    RemoveNetnsLink(String),
    DeleteHostLink(IfName),
    DeleteGuestLink(IfName),
    HostDown(IfName, u32),
    RestoreRoute(Route),
    DeleteDefault {
        v6: bool,
    },
    /// On an adopted (pre-existing) link: take back an address we added.
    DeleteAddress(u32, ipnetwork::IpNetwork),
    /// On an adopted link: put back an address we removed.
    AddAddress(u32, ipnetwork::IpNetwork),
}

/// What an applied plan left in the container.
#[derive(Debug)]
pub struct Applied {
    /// The container-side link as read back after creation.
    pub guest_link: Link,
}

pub async fn apply(
    plan: &Plan,
    target: &Target,
    host: &Netlink,
    guest: &Netlink,
) -> Result<Applied> {
    let mut undo = Vec::new();
    let fail_after: Option<usize> = std::env::var(FAIL_AFTER_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let mut ex = Exec {
        target,
        host,
        guest,
        host_index: HashMap::new(),
        guest_link: None,
        adopted: false,
    };
    for (i, step) in plan.steps.iter().enumerate() {
        let r = match ex.step(step, &mut undo).await {
            Ok(()) if fail_after == Some(i + 1) => Err(Error::Refused(format!(
                "failure injected after step {} ({FAIL_AFTER_ENV})",
                i + 1
            ))),
            r => r,
        };
        if let Err(cause) = r {
            let undo_failures = rollback(undo, target, host, guest).await;
            return Err(Error::RolledBack {
                cause: Box::new(cause),
                undo_failures,
            });
        }
    }
    match ex.guest_link {
        Some(guest_link) => Ok(Applied { guest_link }),
        None => {
            let undo_failures = rollback(undo, target, host, guest).await;
            Err(Error::RolledBack {
                cause: Box::new(Error::Refused("the plan created no interface".into())),
                undo_failures,
            })
        }
    }
}

struct Exec<'a> {
    target: &'a Target,
    host: &'a Netlink,
    guest: &'a Netlink,
    /// Indexes of host links created by this run.
    host_index: HashMap<IfName, u32>,
    guest_link: Option<Link>,
    /// The container interface existed before this run (idempotent re-run).
    adopted: bool,
}

impl Exec<'_> {
    fn guest_index(&self) -> Result<u32> {
        self.guest_link
            .as_ref()
            .map(|l| l.index)
            .ok_or_else(|| Error::Refused("internal: no container interface yet".into()))
    }

    async fn read_guest_link(&mut self, name: &IfName) -> Result<()> {
        let label = &self.target.label;
        let l = self
            .guest
            .link(name.as_str())
            .await
            .map_err(|c| Error::kernel(format!("reading back {name} in container {label}"), c))?
            .ok_or_else(|| {
                Error::Refused(format!(
                    "{name} vanished from container {label} right after it was created"
                ))
            })?;
        self.guest_link = Some(l);
        Ok(())
    }

    async fn step(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        debug!("step: {step}");
        let label = self.target.label.clone();
        match step {
            Step::LinkNetns {
                name,
                replace_stale,
            } => {
                let path = netns::link_path(name);
                if *replace_stale {
                    netns::remove_link(name).map_err(|e| {
                        Error::Refused(format!("removing stale {}: {e}", path.display()))
                    })?;
                }
                netns::create_link(name, &self.target.netns).map_err(|e| {
                    Error::Refused(format!(
                        "linking the namespace of {label} at {}: {e}; pass --no-netns-link to skip this",
                        path.display()
                    ))
                })?;
                undo.push(Undo::RemoveNetnsLink(name.clone()));
            }
            Step::CreateBridge { name } => {
                let l = NewLink {
                    name: name.as_str(),
                    up: true,
                    ..Default::default()
                };
                self.host
                    .create_bridge(&l)
                    .await
                    .map_err(|c| Error::kernel(format!("creating bridge {name}"), c))?;
                undo.push(Undo::DeleteHostLink(name.clone()));
                let b = self
                    .host
                    .link(name.as_str())
                    .await
                    .map_err(|c| Error::kernel(format!("reading back bridge {name}"), c))?
                    .ok_or_else(|| {
                        Error::Refused(format!("bridge {name} vanished after creation"))
                    })?;
                // Ownership tag: gc and detach remove only bridges pipe made.
                self.host
                    .set_alias(b.index, crate::state::SHARED_TAG, None)
                    .await
                    .map_err(|c| Error::kernel(format!("tagging bridge {name}"), c))?;
                self.host_index.insert(name.clone(), b.index);
            }
            Step::HostUp { name, index } => {
                self.host
                    .set_up(*index, true)
                    .await
                    .map_err(|c| Error::kernel(format!("bringing host interface {name} up"), c))?;
                undo.push(Undo::HostDown(name.clone(), *index));
            }
            Step::CreateVeth {
                host,
                guest,
                bridge,
                bridge_index,
                mtu,
                mac,
            } => {
                let master = match bridge_index {
                    Some(i) => *i,
                    None => *self.host_index.get(bridge).ok_or_else(|| {
                        Error::Refused(format!("internal: bridge {bridge} has no index"))
                    })?,
                };
                let h = NewLink {
                    name: host.as_str(),
                    mtu: Some(*mtu),
                    up: true,
                    master: Some(master),
                    ..Default::default()
                };
                let p = NewLink {
                    name: guest.as_str(),
                    mtu: Some(*mtu),
                    mac: *mac,
                    // The peer cannot be created up: it is configured before its
                    // other end exists, and veth_open() refuses with ENOTCONN.
                    up: false,
                    netns: Some(self.target.netns.fd.as_fd()),
                    ..Default::default()
                };
                self.host.create_veth(&h, &p).await.map_err(|c| {
                    let hint = match c.errno {
                        17 => Some(format!(
                            "{host} or {guest} exists already; choose other names with -l / -i"
                        )),
                        _ => None,
                    };
                    let e = Error::kernel(
                        format!(
                            "creating veth {host} (host, in bridge {bridge}) / {guest} (container {label})"
                        ),
                        c,
                    );
                    match hint {
                        Some(h) => e.with_hint(h),
                        None => e,
                    }
                })?;
                undo.push(Undo::DeleteHostLink(host.clone()));
                self.read_guest_link(guest).await?;
                let idx = self.guest_index()?;
                // Both ends carry the ownership tag; the kernel ignores an alias
                // in RTM_NEWLINK, so it rides on the request that brings the peer up.
                let tag = crate::state::tag(&label, guest.as_str());
                self.guest
                    .set_alias(idx, &tag, Some(true))
                    .await
                    .map_err(|c| {
                        Error::kernel(format!("bringing {guest} up in container {label}"), c)
                    })?;
                self.host
                    .set_alias_named(host.as_str(), &tag)
                    .await
                    .map_err(|c| Error::kernel(format!("tagging host interface {host}"), c))?;
            }
            Step::CreateMacvlan {
                parent,
                parent_index,
                guest,
                mode,
                mtu,
                mac,
            } => {
                let l = NewLink {
                    name: guest.as_str(),
                    mtu: Some(*mtu),
                    mac: *mac,
                    up: true,
                    netns: Some(self.target.netns.fd.as_fd()),
                    ..Default::default()
                };
                self.host
                    .create_macvlan(&l, *parent_index, *mode)
                    .await
                    .map_err(|c| {
                        let hint = match c.errno {
                            16 => Some(format!(
                                "{parent} cannot take a macvlan now (is it a bridge port, or does it carry an ipvlan?); \
                                 attach to its bridge instead"
                            )),
                            22 => Some(format!(
                                "the kernel refused these settings on {parent} (MTU {mtu}, mode {})",
                                mode.as_str()
                            )),
                            _ => None,
                        };
                        let e = Error::kernel(
                            format!("creating macvlan {guest} on {parent} in container {label}"),
                            c,
                        );
                        match hint {
                            Some(h) => e.with_hint(h),
                            None => e,
                        }
                    })?;
                undo.push(Undo::DeleteGuestLink(guest.clone()));
                self.read_guest_link(guest).await?;
                let idx = self.guest_index()?;
                let tag = crate::state::tag(&label, guest.as_str());
                self.guest.set_alias(idx, &tag, None).await.map_err(|c| {
                    Error::kernel(format!("tagging {guest} in container {label}"), c)
                })?;
            }
            Step::AddAddress { ifname, addr } => {
                // No undo on a link created by this run: it takes its addresses along.
                let idx = self.guest_index()?;
                self.guest.add_address(idx, *addr).await.map_err(|c| {
                    Error::kernel(format!("adding {addr} to {ifname} in container {label}"), c)
                })?;
                if self.adopted {
                    undo.push(Undo::DeleteAddress(idx, *addr));
                }
            }
            Step::AddGatewayRoute { ifname, gateway } => {
                let idx = self.guest_index()?;
                self.guest.add_host_route(*gateway, idx).await.map_err(|c| {
                    Error::kernel(
                        format!("adding a route to gateway {gateway} on {ifname} in container {label}"),
                        c,
                    )
                })?;
            }
            Step::ReplaceDefault {
                ifname,
                gateway,
                previous,
            } => {
                let idx = self.guest_index()?;
                self.guest.replace_default(*gateway, idx).await.map_err(|c| {
                    Error::kernel(
                        format!("setting the default route of container {label} via {gateway} on {ifname}"),
                        c,
                    )
                    .with_hint("check that the gateway is a router's address on that link")
                })?;
                undo.push(match previous {
                    Some(r) => Undo::RestoreRoute(r.clone()),
                    None => Undo::DeleteDefault {
                        v6: gateway.is_ipv6(),
                    },
                });
            }
            Step::Adopt { link } => {
                self.guest_link = Some(link.clone());
                self.adopted = true;
            }
            Step::DeleteAddress { ifname, addr } => {
                let idx = self.guest_index()?;
                self.guest.delete_address(idx, *addr).await.map_err(|c| {
                    Error::kernel(
                        format!("removing {addr} from {ifname} in container {label}"),
                        c,
                    )
                })?;
                undo.push(Undo::AddAddress(idx, *addr));
            }
            Step::Announce { ifname, addr } => {
                // A nudge, like pipework's `arping ... || true`: a failure to
                // send is logged, never a reason to undo a working attach.
                let l = self
                    .guest_link
                    .as_ref()
                    .ok_or_else(|| Error::Refused("internal: no container interface yet".into()))?;
                match l.mac {
                    Some(mac) => {
                        if let Err(e) =
                            crate::announce::announce(&self.target.netns, l.index, mac, *addr)
                        {
                            warn!(
                                "could not announce {addr} on {ifname} in container {label}: {e}"
                            );
                        }
                    }
                    None => debug!("{ifname} has no MAC; nothing to announce"),
                }
            }
        }
        Ok(())
    }
}

/// Run the undos in reverse; return a description of each one that failed.
async fn rollback(
    undo: Vec<Undo>,
    target: &Target,
    host: &Netlink,
    guest: &Netlink,
) -> Vec<String> {
    let mut fails = Vec::new();
    for u in undo.into_iter().rev() {
        debug!("undo: {u:?}");
        let r: std::result::Result<(), String> = match &u {
            Undo::RemoveNetnsLink(name) => netns::remove_link(name)
                .map_err(|e| format!("{}: {e}", netns::link_path(name).display())),
            Undo::DeleteHostLink(name) => host
                .delete_link_named(name.as_str())
                .await
                .map_err(|c| format!("host interface {name} ({c})")),
            Undo::DeleteGuestLink(name) => guest
                .delete_link_named(name.as_str())
                .await
                .map_err(|c| format!("{name} in container {} ({c})", target.label)),
            Undo::HostDown(name, index) => host
                .set_up(*index, false)
                .await
                .map_err(|c| format!("bring {name} down again ({c})")),
            Undo::RestoreRoute(r) => guest
                .restore_route(r)
                .await
                .map_err(|c| format!("the previous default route of {} ({c})", target.label)),
            Undo::DeleteDefault { v6 } => guest
                .delete_default(*v6)
                .await
                .map_err(|c| format!("the new default route of {} ({c})", target.label)),
            Undo::DeleteAddress(i, a) => guest
                .delete_address(*i, *a)
                .await
                .map_err(|c| format!("address {a} added in {} ({c})", target.label)),
            Undo::AddAddress(i, a) => guest
                .add_address(*i, *a)
                .await
                .map_err(|c| format!("address {a} removed in {} ({c})", target.label)),
        };
        if let Err(e) = r {
            warn!("rollback: could not undo {e}");
            fails.push(e);
        }
    }
    fails
}
