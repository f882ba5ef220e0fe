//! Apply a plan. Every step that creates something pushes its undo; if a step
//! fails, the undos run in reverse and every failure among them is reported.

use std::collections::HashMap;
use std::os::fd::AsFd;

use log::{debug, warn};

use crate::domain::error::{Error, Result};
use crate::domain::identity::{AttachmentId, SHARED_TAG};
use crate::domain::spec::IfName;
use crate::planning::attach::{Plan, Step};
use crate::planning::ops::{Owner, Restore, Teardown};
use crate::sys::guest::Target;
use crate::sys::netlink::{Link, Netlink, NewLink};
use crate::sys::netns;
use crate::sys::store::Store;

type Undo = Teardown;

/// Hidden test hook: fail on purpose after step N (1-based), to prove rollback.
const FAIL_AFTER_ENV: &str = "PIPE_FAIL_AFTER";

const VLAN_FIX: &str = "load its module (modprobe 8021q), or drop @VLAN";

/// The hint for EOPNOTSUPP from a request that needs a kernel feature: `what`
/// names the feature, `fix` says what to do about it.
fn missing_feature(errno: i32, what: &str, fix: &str) -> Option<String> {
    (errno == 95).then(|| format!("this kernel has no {what} support; {fix}"))
}

/// What an applied plan left in the container.
#[derive(Debug)]
pub struct Applied {
    /// The container-side link as read back after creation.
    pub guest_link: Link,
    /// The DHCP lease pipe's own client obtained.
    pub leased: Option<crate::sys::dhcp::Lease>,
}

/// Does this step create or join a host link that others may share (a bridge,
/// a VLAN sub-interface, a parent brought up) or hang a link on one?
fn touches_shared(s: &Step) -> bool {
    matches!(
        s,
        Step::CreateBridge { .. }
            | Step::HostUp { .. }
            | Step::CreateVeth { .. }
            | Step::CreateMacvlan { .. }
            | Step::CreateVlan { .. }
            | Step::CreateIpvlan { .. }
            | Step::MoveToGuest { .. }
            | Step::BridgeVlanFiltering { .. }
            | Step::BridgeAccessPort { .. }
            | Step::EnsureShim { .. }
    )
}

/// Run an attach plan all-or-nothing: every step that creates something
/// pushes its undo (a [`Teardown`]); if a step fails, the undos run in reverse
/// through the same executor as detach and gc.
///
/// From the first to the last step that finds, creates or joins a shared host
/// link, the host-wide lock is held *shared*: attaches run side by side, while
/// a detach, gc or rollback that decides to delete a shared link (under the
/// lock held exclusive) waits until the new port or child is in place.
pub async fn apply(
    plan: &Plan,
    target: &Target,
    host: &Netlink,
    guest: &Netlink,
    store: &Store,
    id: &AttachmentId,
) -> Result<Applied> {
    let mut undo = Vec::new();
    let fail_after: Option<usize> = std::env::var(FAIL_AFTER_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let mut ex = Exec {
        target,
        host,
        guest,
        id,
        store,
        host_index: HashMap::new(),
        guest_link: None,
        adopted: false,
        leased: None,
    };
    let last_shared = plan.steps.iter().rposition(touches_shared);
    let mut shared = match last_shared {
        Some(_) => Some(store.shared_lock(false).map_err(|e| {
            Error::Refused(format!(
                "taking the shared-link lock in {}: {e}",
                store.path().display()
            ))
        })?),
        None => None,
    };
    for (i, step) in plan.steps.iter().enumerate() {
        let r = match ex.step(step, &mut undo).await {
            Ok(()) if fail_after == Some(i + 1) => Err(Error::Refused(format!(
                "failure injected after step {} ({FAIL_AFTER_ENV})",
                i + 1
            ))),
            r => r,
        };
        if Some(i) == last_shared {
            shared = None;
        }
        if let Err(cause) = r {
            drop(shared);
            let undo_failures = rollback(undo, target, host, guest, store).await;
            return Err(Error::RolledBack {
                cause: Box::new(cause),
                undo_failures,
            });
        }
    }
    drop(shared);
    match ex.guest_link {
        Some(guest_link) => Ok(Applied {
            guest_link,
            leased: ex.leased,
        }),
        None => {
            let undo_failures = rollback(undo, target, host, guest, store).await;
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
    id: &'a AttachmentId,
    store: &'a Store,
    /// Indexes of host links created by this run.
    host_index: HashMap<IfName, u32>,
    guest_link: Option<Link>,
    /// The container interface existed before this run (idempotent re-run).
    adopted: bool,
    leased: Option<crate::sys::dhcp::Lease>,
}

impl Exec<'_> {
    fn guest_index(&self) -> Result<u32> {
        self.guest_link
            .as_ref()
            .map(|l| l.index)
            .ok_or_else(|| Error::Refused("internal: no container interface yet".into()))
    }

    /// The index of a host link: known at plan time, or created by this run.
    fn parent_index(&self, name: &IfName, known: Option<u32>) -> Result<u32> {
        match known {
            Some(i) => Ok(i),
            None => self
                .host_index
                .get(name)
                .copied()
                .ok_or_else(|| Error::Refused(format!("internal: {name} has no index"))),
        }
    }

    /// A child link (macvlan, ipvlan) was just created in the container: read
    /// it back and give it pipe's ownership tag.
    async fn adopt_child(&mut self, guest: &IfName) -> Result<()> {
        self.read_guest_link(guest).await?;
        let idx = self.guest_index()?;
        let label = &self.target.label;
        let tag = self.id.tag();
        self.guest
            .set_alias(idx, &tag, None)
            .await
            .map_err(|c| Error::kernel(format!("tagging {guest} in container {label}"), c))
    }

    /// Create bridge `name` and tag it shared, or join it when another run
    /// created it first (EEXIST). Returns its index.
    async fn ensure_bridge(
        &mut self,
        name: &IfName,
        l: &NewLink<'_>,
        undo: &mut Vec<Undo>,
    ) -> Result<u32> {
        let created = match self.host.create_bridge(l).await {
            Ok(()) => true,
            Err(c) if c.errno == 17 => false,
            Err(c) => return Err(Error::kernel(format!("creating bridge {name}"), c)),
        };
        if created {
            undo.push(Undo::ReleaseShared {
                name: name.clone(),
                untagged: true,
                except: Some(self.id.clone()),
            });
        }
        let b = self
            .host
            .link(name.as_str())
            .await
            .map_err(|c| Error::kernel(format!("reading back bridge {name}"), c))?
            .ok_or_else(|| {
                Error::Refused(format!(
                    "bridge {name} vanished right after it was created; try again"
                ))
            })?;
        if !b.is_bridge() {
            return Err(Error::Refused(format!(
                "{name} appeared meanwhile and is not a bridge (it is a {}); choose another HOST_IF",
                b.kind.as_deref().unwrap_or("device")
            )));
        }
        if created {
            // Ownership tag: gc and detach remove only bridges pipe made.
            self.host
                .set_alias(b.index, SHARED_TAG, None)
                .await
                .map_err(|c| Error::kernel(format!("tagging bridge {name}"), c))?;
        } else {
            debug!("bridge {name} appeared meanwhile: joining it");
        }
        Ok(b.index)
    }

    /// Create the `--host-shim` macvlan `name` on `parent` (bridge mode, up,
    /// tagged shared), or join it when it exists and is one. Returns its index.
    async fn ensure_shim(
        &mut self,
        name: &IfName,
        parent: &IfName,
        parent_index: u32,
        undo: &mut Vec<Undo>,
    ) -> Result<u32> {
        let l = NewLink {
            name: name.as_str(),
            up: true,
            ..Default::default()
        };
        let created = match self
            .host
            .create_macvlan(&l, parent_index, crate::domain::spec::MacvlanMode::Bridge)
            .await
        {
            Ok(()) => true,
            Err(c) if c.errno == 17 => false,
            Err(c) => {
                return Err(Error::kernel(
                    format!("creating the host shim {name} (macvlan on {parent})"),
                    c,
                ));
            }
        };
        if created {
            undo.push(Undo::ReleaseShared {
                name: name.clone(),
                untagged: true,
                except: Some(self.id.clone()),
            });
        }
        let d = self
            .host
            .link_detail(name.as_str())
            .await
            .map_err(|c| Error::kernel(format!("reading back {name}"), c))?
            .ok_or_else(|| Error::Refused(format!("{name} vanished after creation; try again")))?;
        if d.link.kind.as_deref() != Some("macvlan") || d.parent != Some(parent_index) {
            return Err(Error::Refused(format!(
                "{name} exists and is not a macvlan on {parent} (it is a {}); remove it or rename it, pipe uses that name for the host shim",
                d.link.kind.as_deref().unwrap_or("device")
            )));
        }
        if created {
            self.host
                .set_alias(d.link.index, SHARED_TAG, None)
                .await
                .map_err(|c| Error::kernel(format!("tagging {name}"), c))?;
        } else if !d.link.up {
            self.host
                .set_up(d.link.index, true)
                .await
                .map_err(|c| Error::kernel(format!("bringing {name} up"), c))?;
        }
        Ok(d.link.index)
    }

    /// Is the bridge that had index `index` gone (or replaced)?
    async fn bridge_gone(&self, name: &IfName, index: u32) -> bool {
        match self.host.link(name.as_str()).await {
            Ok(Some(b)) => b.index != index,
            Ok(None) => true,
            Err(_) => false,
        }
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
                let name: crate::domain::identity::NetnsName =
                    name.clone().try_into().map_err(Error::Refused)?;
                if *replace_stale {
                    // Stale: a dangling symlink, or one pipe made for a namespace now gone.
                    let _ = std::fs::symlink_metadata(&path)
                        .ok()
                        .filter(|m| m.file_type().is_symlink())
                        .map(|_| std::fs::remove_file(&path));
                    let _ = self.store.unmark_netns(name.as_str());
                }
                netns::create_link(self.store, &name, &self.target.netns).map_err(|e| {
                    Error::Refused(format!(
                        "linking the namespace of {label} at {}: {e}; pass --no-netns-link to skip this",
                        path.display()
                    ))
                })?;
                undo.push(Undo::RemoveNetnsLink {
                    name,
                    ns: self.target.netns.id.into(),
                });
            }
            Step::CreateBridge { name } => {
                let l = NewLink {
                    name: name.as_str(),
                    up: true,
                    ..Default::default()
                };
                let index = self.ensure_bridge(name, &l, undo).await?;
                self.host_index.insert(name.clone(), index);
            }
            Step::HostUp { name, index } => {
                self.host.set_up(*index, true).await.map_err(|c| {
                    let e = Error::kernel(format!("bringing host interface {name} up"), c);
                    // ENETDOWN: a VLAN (or similar) device whose own lower device is down.
                    if e.errno() == Some(100) {
                        e.with_hint(format!(
                            "{name} cannot come up while the device under it is down; \
                             bring that one up first (ip -d link show {name} names it)"
                        ))
                    } else {
                        e
                    }
                })?;
                undo.push(Undo::HostDownIfUnused {
                    name: name.clone(),
                    index: *index,
                    except: Some(self.id.clone()),
                });
            }
            Step::CreateVeth {
                host,
                guest,
                bridge,
                bridge_index,
                mtu,
                host_mtu,
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
                    mtu: Some(*host_mtu),
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
                let mut r = self.host.create_veth(&h, &p).await;
                // The bridge was deleted under us (by someone else, between
                // observing it and taking the lock): create it again and join it.
                if let Err(c) = &r
                    && matches!(c.errno, 19 | 22)
                    && self.bridge_gone(bridge, master).await
                {
                    let b = NewLink {
                        name: bridge.as_str(),
                        up: true,
                        ..Default::default()
                    };
                    let master = self.ensure_bridge(bridge, &b, undo).await?;
                    r = self
                        .host
                        .create_veth(
                            &NewLink {
                                master: Some(master),
                                ..h
                            },
                            &p,
                        )
                        .await;
                }
                r.map_err(|c| {
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
                    e.with_hint_opt(hint)
                })?;
                undo.push(Undo::DeleteHostLink {
                    name: host.clone(),
                    owner: Owner::ThisRun,
                });
                self.read_guest_link(guest).await?;
                let idx = self.guest_index()?;
                // Both ends carry the ownership tag; the kernel ignores an alias
                // in RTM_NEWLINK, so it rides on the request that brings the peer up.
                let tag = self.id.tag();
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
                let parent_index = self.parent_index(parent, *parent_index)?;
                let l = NewLink {
                    name: guest.as_str(),
                    mtu: Some(*mtu),
                    mac: *mac,
                    up: true,
                    netns: Some(self.target.netns.fd.as_fd()),
                    ..Default::default()
                };
                self.host
                    .create_macvlan(&l, parent_index, *mode)
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
                        e.with_hint_opt(hint)
                    })?;
                undo.push(Undo::DeleteGuestLink {
                    name: guest.clone(),
                    owner: Owner::ThisRun,
                });
                self.adopt_child(guest).await?;
            }
            Step::CreateVlan {
                name,
                parent,
                parent_index,
                vid,
                mtu,
            } => {
                let l = NewLink {
                    name: name.as_str(),
                    mtu: Some(*mtu),
                    up: true,
                    ..Default::default()
                };
                let r = self.host.create_vlan(&l, *parent_index, vid.get()).await;
                // Another attach created the same sub-interface meanwhile: join it.
                if let Err(c) = &r
                    && c.errno == 17
                    && let Ok(Some(d)) = self.host.link_detail(name.as_str()).await
                    && d.vlan.map(|v| v.0) == Some(vid.get())
                    && d.parent == Some(*parent_index)
                {
                    debug!("{name} appeared meanwhile: joining it");
                    self.host_index.insert(name.clone(), d.link.index);
                    return Ok(());
                }
                r.map_err(|c| {
                        let hint = missing_feature(c.errno, "802.1Q VLAN", VLAN_FIX)
                            .or_else(|| match c.errno {
                                17 => Some(format!(
                                    "VLAN {vid} on {parent} exists already under another name or in another \
                                     namespace (ip -d link shows \"vlan id {vid}\"); give that device as HOST_IF without @{vid}"
                                )),
                                100 => Some(format!("{parent} is down; bring it up (ip link set {parent} up)")),
                                _ => None,
                            });
                        let e = Error::kernel(
                            format!("creating 802.1Q sub-interface {name} (VLAN {vid}) on {parent}"),
                            c,
                        );
                        e.with_hint_opt(hint)
                    })?;
                undo.push(Undo::ReleaseShared {
                    name: name.clone(),
                    untagged: true,
                    except: Some(self.id.clone()),
                });
                let v = self
                    .host
                    .link(name.as_str())
                    .await
                    .map_err(|c| Error::kernel(format!("reading back {name}"), c))?
                    .ok_or_else(|| Error::Refused(format!("{name} vanished after creation")))?;
                // Ownership tag: detach and gc remove it once no attachment uses it.
                self.host
                    .set_alias(v.index, SHARED_TAG, None)
                    .await
                    .map_err(|c| Error::kernel(format!("tagging {name}"), c))?;
                self.host_index.insert(name.clone(), v.index);
            }
            Step::CreateIpvlan {
                parent,
                parent_index,
                guest,
                mode,
                mtu,
            } => {
                let parent_index = self.parent_index(parent, *parent_index)?;
                let l = NewLink {
                    name: guest.as_str(),
                    mtu: Some(*mtu),
                    up: true,
                    netns: Some(self.target.netns.fd.as_fd()),
                    ..Default::default()
                };
                self.host
                    .create_ipvlan(&l, parent_index, *mode)
                    .await
                    .map_err(|c| {
                        let hint = missing_feature(
                            c.errno,
                            "ipvlan",
                            "load its module (modprobe ipvlan), or drop --ipvlan to use a macvlan",
                        )
                            .or_else(|| match c.errno {
                                16 => Some(format!(
                                    "{parent} already carries a macvlan or is a bridge port, and the kernel \
                                     allows no ipvlan there; drop --ipvlan to use a macvlan, or give another parent"
                                )),
                                22 => Some(format!(
                                    "the kernel refused these settings on {parent} (MTU {mtu}, mode {}); \
                                     an ipvlan needs an Ethernet parent that is not itself an ipvlan",
                                    mode.as_str()
                                )),
                                _ => None,
                            });
                        let e = Error::kernel(
                            format!(
                                "creating ipvlan {guest} (mode {}) on {parent} in container {label}",
                                mode.as_str()
                            ),
                            c,
                        );
                        e.with_hint_opt(hint)
                    })?;
                undo.push(Undo::DeleteGuestLink {
                    name: guest.clone(),
                    owner: Owner::ThisRun,
                });
                self.adopt_child(guest).await?;
            }
            Step::MoveToGuest {
                host,
                index,
                guest,
                mtu,
                mac,
                old_mtu,
                old_mac,
                old_alias,
                old_up,
            } => {
                let index = &self.parent_index(host, *index)?;
                self.host
                    .move_link(
                        *index,
                        self.target.netns.fd.as_fd(),
                        guest.as_str(),
                        Some(host.as_str()),
                        *mtu,
                        *mac,
                    )
                    .await
                    .map_err(|c| {
                        let hint = match c.errno {
                            22 => Some(format!(
                                "{host} cannot change namespace (loopback, bridges and some drivers are tied to theirs)"
                            )),
                            17 => Some(format!("{guest} exists in container {label}; choose another name with -i")),
                            _ => None,
                        };
                        let e = Error::kernel(
                            format!("moving {host} into container {label} as {guest}"),
                            c,
                        );
                        e.with_hint_opt(hint)
                    })?;
                undo.push(Undo::MoveBack {
                    guest: guest.clone(),
                    restore: Restore {
                        name: host.to_string(),
                        mtu: mtu.map(|_| *old_mtu),
                        mac: mac.and(*old_mac),
                        alias: old_alias.clone().unwrap_or_default(),
                        up: *old_up,
                    },
                });
                self.read_guest_link(guest).await?;
                let idx = self.guest_index()?;
                self.guest.set_up(idx, true).await.map_err(|c| {
                    Error::kernel(format!("bringing {guest} up in container {label}"), c)
                })?;
            }
            Step::BridgeVlanFiltering { bridge, index } => {
                let idx = self.parent_index(bridge, *index)?;
                self.host.set_vlan_filtering(idx, true).await.map_err(|c| {
                    let hint = missing_feature(
                        c.errno,
                        "bridge VLAN filtering",
                        "it needs a kernel built with CONFIG_BRIDGE_VLAN_FILTERING; or drop @VLAN",
                    );
                    let e =
                        Error::kernel(format!("turning on VLAN filtering on bridge {bridge}"), c);
                    e.with_hint_opt(hint)
                })?;
                // A bridge created by this run goes away whole on rollback.
                if index.is_some() {
                    undo.push(Undo::VlanFilteringOff(bridge.clone(), idx));
                }
            }
            Step::BridgeAccessPort {
                port,
                vid,
                drop_vid,
            } => {
                // No undo: the port is the veth created by this run.
                let idx = self
                    .host
                    .link(port.as_str())
                    .await
                    .map_err(|c| Error::kernel(format!("looking up {port}"), c))?
                    .ok_or_else(|| Error::Refused(format!("{port} vanished after creation")))?
                    .index;
                self.host
                    .bridge_vlan_add(idx, vid.get(), true)
                    .await
                    .map_err(|c| {
                        Error::kernel(
                            format!("making {port} an access port of VLAN {vid} (pvid untagged)"),
                            c,
                        )
                    })?;
                if let Some(d) = drop_vid {
                    match self.host.bridge_vlan_del(idx, *d).await {
                        // ENOENT: the port was not in that VLAN after all.
                        Err(c) if c.errno != 2 => {
                            return Err(Error::kernel(
                                format!("taking {port} out of the bridge's default VLAN {d}"),
                                c,
                            ));
                        }
                        _ => {}
                    }
                }
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
            Step::AcceptRaOff { ifname } => {
                crate::sys::netns::set_sysctl(
                    &self.target.netns,
                    &format!("net/ipv6/conf/{ifname}/accept_ra"),
                    "0",
                )
                .map_err(|e| {
                    Error::kernel(
                        format!(
                            "turning off router advertisements on {ifname} in container {label}"
                        ),
                        crate::domain::error::KernelCause::from_io(&e),
                    )
                })?;
            }
            Step::Shape {
                ifname,
                rate,
                burst,
                limit,
            } => {
                let idx = self.guest_index()?;
                self.guest
                    .set_tbf(idx, rate.bytes_per_sec, *burst, *limit)
                    .await
                    .map_err(|c| {
                        Error::kernel(
                            format!("shaping {ifname} in container {label} to {rate}"),
                            c,
                        )
                        .with_hint("the kernel needs the tbf qdisc (CONFIG_NET_SCH_TBF)")
                    })?;
            }
            Step::Dhcp {
                ifname,
                client,
                previous,
            } => {
                let idx = self.guest_index()?;
                let l = self
                    .guest_link
                    .clone()
                    .ok_or_else(|| Error::Refused("internal: no container interface yet".into()))?;
                if *client != crate::domain::spec::DhcpClient::Native {
                    return crate::sys::dhcp_ext::run(*client, self.target, ifname.as_str());
                }
                let mac = l.mac.ok_or_else(|| {
                    Error::Refused(format!("{ifname} has no MAC address; DHCP needs one"))
                })?;
                let sock = crate::sys::dhcp::socket_in(&self.target.netns, ifname.as_str())
                    .map_err(|e| {
                        Error::kernel(
                            format!("opening a DHCP socket on {ifname} in container {label}"),
                            crate::domain::error::KernelCause::from_io(&e),
                        )
                    })?;
                let hostname = crate::sys::dhcp_ext::hostname(&label);
                let lease = crate::sys::dhcp::obtain(&sock, mac, hostname.as_deref(), crate::sys::dhcp_ext::timeout())
                    .map_err(|e| {
                        Error::Refused(format!(
                            "DHCP on {ifname} in container {label}: {e}; check that a DHCP server serves that network, or give an address"
                        ))
                    })?;
                debug!("dhcp: lease {lease:?}");
                undo.push(Undo::ReleaseLease {
                    ifname: ifname.clone(),
                    mac,
                    lease: lease.clone(),
                });
                self.guest
                    .set_address_lifetime(idx, lease.net(), lease.lease_secs, lease.lease_secs)
                    .await
                    .map_err(|c| {
                        Error::kernel(
                            format!(
                                "adding leased {} to {ifname} in container {label}",
                                lease.net()
                            ),
                            c,
                        )
                    })?;
                if let Some(gw) = lease.router {
                    self.guest
                        .replace_default(std::net::IpAddr::V4(gw), idx)
                        .await
                        .map_err(|c| {
                            Error::kernel(
                                format!("setting the default route of container {label} via {gw} (from the lease)"),
                                c,
                            )
                        })?;
                    undo.push(match previous {
                        Some(r) => Undo::RestoreRoute(r.clone()),
                        None => Undo::DeleteDefault { v6: false },
                    });
                }
                if let Err(e) = crate::sys::announce::announce(
                    &self.target.netns,
                    idx,
                    mac,
                    std::net::IpAddr::V4(lease.addr),
                ) {
                    warn!("could not announce {} on {ifname}: {e}", lease.addr);
                }
                let st = crate::sys::dhcp::KeeperState {
                    label: label.clone(),
                    ifname: ifname.to_string(),
                    mac: mac.to_string(),
                    ns_path: self.target.netns.path.clone(),
                    ns_dev: self.target.netns.id.dev,
                    ns_ino: self.target.netns.id.ino,
                    hostname,
                    lease: lease.clone(),
                    bound_at: crate::sys::dhcp::now_unix(),
                    renewals: 0,
                };
                crate::sys::dhcp::start_keeper(&st).map_err(|e| {
                    Error::Refused(format!(
                        "starting the DHCP lease keeper for {ifname} in container {label}: {e}"
                    ))
                })?;
                undo.push(Undo::StopKeeper {
                    label: label.clone(),
                    ifname: ifname.clone(),
                });
                self.leased = Some(lease);
            }
            Step::EnsureShim {
                name,
                parent,
                parent_index,
            } => {
                let parent_index = match self.parent_index(parent, *parent_index) {
                    Ok(i) => i,
                    // A re-run: the parent exists and was not looked up by the plan.
                    Err(_) => {
                        self.host
                            .link(parent.as_str())
                            .await
                            .map_err(|c| Error::kernel(format!("looking up {parent}"), c))?
                            .ok_or_else(|| Error::Refused(format!("{parent} vanished")))?
                            .index
                    }
                };
                let index = self.ensure_shim(name, parent, parent_index, undo).await?;
                self.host_index.insert(name.clone(), index);
            }
            Step::ShimRoute { shim, dst } => {
                let idx = self.parent_index(shim, None)?;
                self.host.add_host_route(*dst, idx).await.map_err(|c| {
                    Error::kernel(format!("adding the host route to {dst} through {shim}"), c)
                })?;
                undo.push(Undo::DeleteHostRoute {
                    dst: *dst,
                    dev: shim.clone(),
                });
            }
            Step::ShimUnroute { shim, dst } => {
                // No undo: a rollback puts the address back, and a re-run puts the route back.
                let idx = self.parent_index(shim, None)?;
                match self.host.delete_host_route(*dst, idx).await {
                    Err(c) if !matches!(c.errno, 2 | 3) => {
                        return Err(Error::kernel(
                            format!("deleting the host route to {dst} through {shim}"),
                            c,
                        ));
                    }
                    _ => {}
                }
            }
            Step::Announce { ifname, addr } => {
                // A nudge, like pipework's `arping ... || true`: a failure to
                // send is logged, never a reason to undo a working attach.
                let l = self
                    .guest_link
                    .as_ref()
                    .ok_or_else(|| Error::Refused("internal: no container interface yet".into()))?;
                match l.mac {
                    // IPv4: let the kernel send it (no AF_PACKET socket to close);
                    // devices that cannot re-set their MAC fall back to a frame.
                    Some(mac)
                        if addr.is_ipv4()
                            && self.guest.kernel_arp_announce(l.index, mac).await.is_ok() => {}
                    Some(mac) => {
                        if let Err(e) =
                            crate::sys::announce::announce(&self.target.netns, l.index, mac, *addr)
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

/// Run the undos in reverse through the teardown executor; return a
/// description of each one that failed.
async fn rollback(
    undo: Vec<Undo>,
    target: &Target,
    host: &Netlink,
    guest: &Netlink,
    store: &Store,
) -> Vec<String> {
    let cx = Cx {
        host,
        guest: Some(guest),
        netns: Some(&target.netns),
        label: &target.label,
        store,
    };
    let ops: Vec<Teardown> = undo.into_iter().rev().collect();
    teardown(&ops, &cx).await.failed
}

/// Where a teardown runs: the host, and the container while it exists.
pub struct Cx<'a> {
    pub host: &'a Netlink,
    /// `None` once the container's namespace is gone: what was in it went along.
    pub guest: Option<&'a Netlink>,
    pub netns: Option<&'a netns::Netns>,
    /// How messages name the container.
    pub label: &'a str,
    pub store: &'a Store,
}

/// What a teardown did.
#[derive(Debug, Default)]
pub struct Done {
    /// What was removed or put back, for the report.
    pub removed: Vec<String>,
    /// What could not be undone, and why.
    pub failed: Vec<String>,
}

/// ENODEV/ENOENT/ESRCH: the object is gone already, which is what a teardown wants.
fn gone(errno: i32) -> bool {
    matches!(errno, 19 | 2 | 3)
}

/// The one teardown executor: run every operation in order, best effort.
/// A failure is recorded and the rest still runs; "already gone" is success.
pub async fn teardown(ops: &[Teardown], cx: &Cx<'_>) -> Done {
    let mut done = Done::default();
    for op in ops {
        debug!("teardown: {op}");
        match teardown_one(op, cx).await {
            Ok(Some(what)) => done.removed.push(what),
            Ok(None) => {}
            Err(e) => {
                warn!("could not undo {e}");
                done.failed.push(e);
            }
        }
    }
    done
}

type Outcome = std::result::Result<Option<String>, String>;

/// `--dry-run`: what this operation would remove, judged read-only with the
/// same proofs the executor checks (`None`: it would leave everything as is).
pub async fn would(op: &Teardown, cx: &Cx<'_>) -> Option<String> {
    match op {
        Teardown::RemoveRecord(id) => {
            Some(format!("record {}", cx.store.record_path(id).display()))
        }
        Teardown::RemoveNetnsLink { name, ns } => (cx.store.netns_mark(name.as_str()) == Some(*ns)
            && std::fs::symlink_metadata(netns::link_path(name.as_str())).is_ok())
        .then(|| format!("{}", netns::link_path(name.as_str()).display())),
        Teardown::DeleteHostLink { name, owner } => match cx.host.link(name.as_str()).await {
            Ok(Some(l)) if owner.allows(l.alias.as_deref()) => {
                Some(format!("host interface {name}"))
            }
            _ => None,
        },
        Teardown::DeleteGuestLink { name, owner } => match cx.guest?.link(name.as_str()).await {
            Ok(Some(l)) if owner.allows(l.alias.as_deref()) => Some(format!("interface {name}")),
            _ => None,
        },
        Teardown::ReleaseShared {
            name,
            untagged,
            except,
        } => {
            let l = cx.host.link(name.as_str()).await.ok()??;
            let ok = l.alias.as_deref() == Some(SHARED_TAG)
                || (*untagged && l.alias.as_deref().is_none_or(str::is_empty));
            if !ok || used_elsewhere(cx, name.as_str(), except, Some(l.index)).await != Ok(false) {
                return None;
            }
            Some(format!(
                "{} {name}",
                if l.is_bridge() {
                    "bridge"
                } else {
                    "host interface"
                }
            ))
        }
        Teardown::StopKeeper { .. } | Teardown::HostDownIfUnused { .. } => None,
        op => Some(op.to_string()),
    }
}

async fn teardown_one(op: &Teardown, cx: &Cx<'_>) -> Outcome {
    let host = cx.host;
    let label = cx.label;
    // Operations inside the container are moot once its namespace is gone.
    let Some(guest) = cx.guest else {
        return match op {
            Teardown::RestoreRoute(_)
            | Teardown::DeleteDefault { .. }
            | Teardown::DeleteAddress(..)
            | Teardown::AddAddress(..)
            | Teardown::DeleteGuestLink { .. }
            | Teardown::MoveBack { .. }
            | Teardown::ReleaseLease { .. } => Ok(None),
            _ => teardown_host(op, cx).await,
        };
    };
    let kernel = |what: String| {
        move |c: crate::domain::error::KernelCause| -> Outcome {
            if gone(c.errno) {
                Ok(None)
            } else {
                Err(format!("{what} ({c})"))
            }
        }
    };
    match op {
        Teardown::RestoreRoute(r) => guest
            .restore_route(r)
            .await
            .map(|()| Some("restored the previous default route".into()))
            .or_else(kernel(format!("the previous default route of {label}"))),
        Teardown::DeleteDefault { v6 } => guest
            .delete_default(*v6)
            .await
            .map(|()| None)
            .or_else(kernel(format!("the new default route of {label}"))),
        Teardown::DeleteAddress(i, a) => guest
            .delete_address(*i, *a)
            .await
            .map(|()| None)
            .or_else(kernel(format!("address {a} added in {label}"))),
        Teardown::AddAddress(i, a) => guest
            .add_address(*i, *a)
            .await
            .map(|()| None)
            .or_else(kernel(format!("address {a} removed in {label}"))),
        Teardown::ReleaseLease { ifname, mac, lease } => match cx.netns {
            Some(ns) => crate::sys::dhcp::socket_in(ns, ifname.as_str())
                .map_err(|e| e.to_string())
                .and_then(|s| crate::sys::dhcp::send_release(&s, *mac, lease))
                .map(|()| None)
                .map_err(|e| format!("the DHCP lease of {} ({e})", lease.addr)),
            None => Ok(None),
        },
        Teardown::DeleteGuestLink { name, owner } => {
            let l = match guest.link(name.as_str()).await {
                Ok(Some(l)) => l,
                Ok(None) => return Ok(None),
                Err(c) => return kernel(format!("looking up {name} in container {label}"))(c),
            };
            if !owner.allows(l.alias.as_deref()) {
                debug!(
                    "{name} in {label} carries another tag ({:?}): kept",
                    l.alias
                );
                return Ok(None);
            }
            guest
                .delete_link(l.index)
                .await
                .map(|()| Some(format!("interface {name}")))
                .or_else(kernel(format!("deleting {name} in container {label}")))
        }
        Teardown::MoveBack { guest: g, restore } => move_back(guest, host, g.as_str(), restore)
            .await
            .map(|()| {
                Some(format!(
                    "interface {g} (moved back to the host as {})",
                    restore.name
                ))
            })
            .or_else(kernel(format!(
                "moving {g} of container {label} back to the host as {}",
                restore.name
            ))),
        _ => teardown_host(op, cx).await,
    }
}

/// The operations on the host and on pipe's own state.
async fn teardown_host(op: &Teardown, cx: &Cx<'_>) -> Outcome {
    let host = cx.host;
    let kernel = |what: String| {
        move |c: crate::domain::error::KernelCause| -> Outcome {
            if gone(c.errno) {
                Ok(None)
            } else {
                Err(format!("{what} ({c})"))
            }
        }
    };
    match op {
        Teardown::StopKeeper { label, ifname } => {
            crate::sys::dhcp::stop_keeper(label, ifname.as_str(), std::time::Duration::from_secs(3))
                .then(|| "DHCP lease (released)".to_string())
                .map_or(Ok(None), |s| Ok(Some(s)))
        }
        Teardown::VlanFilteringOff(name, index) => host
            .set_vlan_filtering(*index, false)
            .await
            .map(|()| None)
            .or_else(kernel(format!(
                "turning VLAN filtering on bridge {name} off again"
            ))),
        Teardown::DeleteHostLink { name, owner } => {
            let l = match host.link(name.as_str()).await {
                Ok(Some(l)) => l,
                Ok(None) => return Ok(None),
                Err(c) => return kernel(format!("looking up host interface {name}"))(c),
            };
            if !owner.allows(l.alias.as_deref()) {
                debug!(
                    "host interface {name} carries another tag ({:?}): kept",
                    l.alias
                );
                return Ok(None);
            }
            host.delete_link(l.index)
                .await
                .map(|()| Some(format!("host interface {name}")))
                .or_else(kernel(format!("deleting host interface {name}")))
        }
        Teardown::ReleaseShared {
            name,
            untagged,
            except,
        } => release_shared(cx, name, *untagged, except.as_ref()).await,
        Teardown::HostDownIfUnused {
            name,
            index,
            except,
        } => {
            let _x = cx
                .store
                .shared_lock(true)
                .map_err(|e| format!("taking the shared-link lock: {e}"))?;
            if used_elsewhere(cx, name.as_str(), except, Some(*index)).await? {
                debug!("{name} is in use by another attachment: left up");
                return Ok(None);
            }
            host.set_up(*index, false)
                .await
                .map(|()| None)
                .or_else(kernel(format!("bringing {name} down again")))
        }
        Teardown::RemoveNetnsLink { name, ns } => {
            crate::sys::netns::remove_link(cx.store, name.as_str(), *ns)
                .map(|removed| {
                    removed.then(|| {
                        format!("{}", crate::sys::netns::link_path(name.as_str()).display())
                    })
                })
                .map_err(|e| {
                    format!(
                        "{}: {e}",
                        crate::sys::netns::link_path(name.as_str()).display()
                    )
                })
        }
        Teardown::DeleteHostRoute { dst, dev } => {
            let l = match host.link(dev.as_str()).await {
                Ok(Some(l)) => l,
                // The shim is gone and took its routes along.
                Ok(None) => return Ok(None),
                Err(c) => return kernel(format!("looking up {dev}"))(c),
            };
            host.delete_host_route(*dst, l.index)
                .await
                .map(|()| Some(format!("host route to {dst}")))
                .or_else(kernel(format!(
                    "deleting the host route to {dst} via {dev}"
                )))
        }
        Teardown::RemoveRecord(id) => cx
            .store
            .remove(id)
            .map(|()| None)
            .map_err(|e| format!("{}: {e}", cx.store.record_path(id).display())),
        // Container-side operations are handled by the caller.
        _ => Ok(None),
    }
}

/// Does anything but `except` use host link `name` (index `index`)? Another
/// record (pending or committed) naming it, a bridge port, or a child link on
/// the host. Called under the exclusive shared-link lock.
async fn used_elsewhere(
    cx: &Cx<'_>,
    name: &str,
    except: &Option<AttachmentId>,
    index: Option<u32>,
) -> std::result::Result<bool, String> {
    let dot = format!("{name}.");
    for r in cx.store.all().into_iter().flatten() {
        // Records of other host namespaces name other links that share a name.
        if Some(r.id()) == *except || !crate::sys::store::host_here(&r) {
            continue;
        }
        if r.uses_host_link(name) || r.host_if.as_str().starts_with(&dot) {
            return Ok(true);
        }
    }
    if let Some(i) = index {
        let links = cx
            .host
            .links()
            .await
            .map_err(|c| format!("listing host interfaces ({c})"))?;
        if links
            .iter()
            // A veth's IFLA_LINK is its peer, not a device stacked on it.
            .any(|l| {
                l.index != i
                    && (l.master == Some(i)
                        || (l.lower == Some(i) && l.kind.as_deref() != Some("veth")))
            })
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Delete a shared host link pipe created once nothing uses it, deciding
/// under the exclusive lock so no attach can be joining it at the same time.
async fn release_shared(
    cx: &Cx<'_>,
    name: &IfName,
    untagged: bool,
    except: Option<&AttachmentId>,
) -> Outcome {
    let _x = cx
        .store
        .shared_lock(true)
        .map_err(|e| format!("taking the shared-link lock: {e}"))?;
    let l = match cx.host.link(name.as_str()).await {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(None),
        Err(c) => return Err(format!("looking up {name} ({c})")),
    };
    let tagged = l.alias.as_deref() == Some(SHARED_TAG);
    let bare = l.alias.as_deref().is_none_or(str::is_empty);
    if !(tagged || (untagged && bare)) {
        debug!("{name} is not pipe's shared link ({:?}): kept", l.alias);
        return Ok(None);
    }
    if used_elsewhere(cx, name.as_str(), &except.cloned(), Some(l.index)).await? {
        debug!("{name} is still in use: kept");
        return Ok(None);
    }
    let what = if l.is_bridge() {
        "bridge"
    } else {
        "host interface"
    };
    match cx.host.delete_link(l.index).await {
        Ok(()) => Ok(Some(format!("{what} {name}"))),
        Err(c) if gone(c.errno) => Ok(None),
        Err(c) => Err(format!("deleting {what} {name} ({c})")),
    }
}

/// Move `name` from the container back into pipe's own (the host's) namespace
/// as it was: the undo of `--direct-phys`, and what `detach` does for it.
pub async fn move_back(
    guest: &Netlink,
    host: &Netlink,
    name: &str,
    r: &Restore,
) -> std::result::Result<(), crate::domain::error::KernelCause> {
    let l = guest
        .link(name)
        .await?
        .ok_or(crate::domain::error::KernelCause {
            errno: 19,
            detail: None,
        })?;
    // The main thread never leaves the host's namespace: /proc/self/ns/net is it.
    let own = std::fs::File::open("/proc/self/ns/net")
        .map_err(|e| crate::domain::error::KernelCause::from_io(&e))?;
    guest
        .move_link(l.index, own.as_fd(), &r.name, Some(&r.alias), r.mtu, r.mac)
        .await?;
    if r.up
        && let Some(h) = host.link(&r.name).await?
    {
        host.set_up(h.index, true).await?;
    }
    Ok(())
}
