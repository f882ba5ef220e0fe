//! Apply a plan. Every step that creates something pushes its undo; if a step
//! fails, the undos run in reverse and every failure among them is reported.

use std::collections::HashMap;
use std::os::fd::AsFd;

use log::{debug, warn};

use crate::domain::error::{Error, Result};
use crate::domain::identity::{AttachmentId, SHARED_TAG};
use crate::domain::spec::IfName;
use crate::planning::attach::{Plan, Step};
use crate::planning::journal::Applied;
use crate::planning::ops::{Owner, Restore, Teardown};
use crate::sys::guest::Target;
use crate::sys::netlink::{Link, Netlink, NewLink};
use crate::sys::netns;
use crate::sys::netns_link;
use crate::sys::store::Store;

type Undo = Teardown;

mod addr;
mod bridge;
mod child;
mod dhcp;
mod host;
mod ovs;
mod phys;
mod rename;
mod shim;
mod teardown;

pub use teardown::{Cx, Done, teardown, would};

/// Hidden test hook: fail on purpose after step N (1-based), to prove rollback.
const FAIL_AFTER_ENV: &str = "PIPE_FAIL_AFTER";

const VLAN_FIX: &str = "load its module (modprobe 8021q), or drop @VLAN";

/// The hint for EOPNOTSUPP from a request that needs a kernel feature: `what`
/// names the feature, `fix` says what to do about it.
fn missing_feature(errno: i32, what: &str, fix: &str) -> Option<String> {
    (errno == 95).then(|| format!("this kernel has no {what} support; {fix}"))
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
            | Step::CreateOvsBridge { .. }
            | Step::OvsPort { .. }
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
        arp_notify: false,
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
    /// This run turned the container interface's arp_notify on when it tagged
    /// it: announcing IPv4 is then only the MAC re-set.
    arp_notify: bool,
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
            .tag_guest_link(idx, &tag, None)
            .await
            .map_err(|c| Error::kernel(format!("tagging {guest} in container {label}"), c))?;
        self.arp_notify = true;
        Ok(())
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

    /// Is the bridge that had index `index` gone (or replaced)?
    async fn bridge_gone(&self, name: &IfName, index: u32) -> bool {
        match self.host.link(name.as_str()).await {
            Ok(Some(b)) => b.index != index,
            Ok(None) => true,
            Err(_) => false,
        }
    }

    async fn read_guest_link(&mut self, name: &IfName) -> Result<()> {
        self.guest_link = Some(self.guest_link_named(name).await?);
        Ok(())
    }

    /// The container's link `name`, just created by this run.
    async fn guest_link_named(&self, name: &IfName) -> Result<Link> {
        let label = &self.target.label;
        self.guest
            .link(name.as_str())
            .await
            .map_err(|c| Error::kernel(format!("reading back {name} in container {label}"), c))?
            .ok_or_else(|| {
                Error::Refused(format!(
                    "{name} vanished from container {label} right after it was created"
                ))
            })
    }

    /// One step: dispatched to the place of its link kind (exec/bridge.rs,
    /// child.rs, phys.rs, addr.rs, dhcp.rs, host.rs).
    async fn step(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        debug!("step: {step}");
        match step {
            Step::LinkNetns { .. } => self.link_netns(step, undo).await,
            Step::CreateBridge { .. } => self.create_bridge(step, undo).await,
            Step::CreateOvsBridge { name } => {
                if ovs::create_bridge(name)? {
                    undo.push(Undo::OvsReleaseBridge { name: name.clone() });
                }
                Ok(())
            }
            Step::OvsPort { bridge, port, tag } => {
                ovs::add_port(bridge, port, *tag, self.id)?;
                undo.push(Undo::OvsDelPort {
                    port: port.clone(),
                    id: self.id.clone(),
                });
                Ok(())
            }
            Step::HostUp { .. } => self.host_up(step, undo).await,
            Step::CreateVeth { .. } => self.create_veth(step, undo).await,
            Step::CreateMacvlan { .. } => self.create_macvlan(step, undo).await,
            Step::CreateVlan { .. } => self.create_vlan(step, undo).await,
            Step::CreateIpvlan { .. } => self.create_ipvlan(step, undo).await,
            Step::MoveToGuest { .. } => self.move_to_guest(step, undo).await,
            Step::BridgeVlanFiltering { .. } => self.bridge_vlan_filtering(step, undo).await,
            Step::BridgeAccessPort { .. } => self.bridge_access_port(step, undo).await,
            Step::AddAddress { .. } => self.add_address(step, undo).await,
            Step::AddGatewayRoute { .. } => self.add_gateway_route(step, undo).await,
            Step::ReplaceDefault { .. } => self.replace_default(step, undo).await,
            Step::Adopt { .. } => self.adopt(step, undo).await,
            Step::DeleteAddress { .. } => self.delete_address(step, undo).await,
            Step::AcceptRaOff { .. } => self.accept_ra_off(step, undo).await,
            Step::Shape { .. } => self.shape(step, undo).await,
            Step::Dhcp { .. } => self.dhcp(step, undo).await,
            Step::EnsureShim { .. } => self.shim(step, undo).await,
            Step::ShimRoute { .. } => self.shim_route(step, undo).await,
            Step::ShimUnroute { .. } => self.shim_unroute(step).await,
            Step::Announce { .. } => self.announce(step, undo).await,
        }
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
    // A thread is in a container's namespace only inside netns::run_in, so
    // this thread's namespace is the host's.
    let own = std::fs::File::open("/proc/thread-self/ns/net")
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
