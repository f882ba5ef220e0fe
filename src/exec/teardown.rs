//! The one teardown executor: an attach's rollback, detach, gc, crash
//! recovery and the death path of `pipe watch` all run their operations
//! (`planning::ops::Teardown`) here, best effort, with the same proofs of
//! ownership; `--dry-run` judges them read-only with the same proofs.

use super::*;

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

/// A kernel refusal as an outcome: "already gone" is done, anything else
/// names what failed.
fn kernel(what: String) -> impl FnOnce(crate::domain::error::KernelCause) -> Outcome {
    move |c| {
        if gone(c.errno) {
            Ok(None)
        } else {
            Err(format!("{what} ({c})"))
        }
    }
}

/// Delete link `name` of `nl` (described as `what` in messages, `removed`
/// once gone) only if its tag is one `owner` allows.
async fn delete_owned(
    nl: &Netlink,
    name: &IfName,
    owner: &Owner,
    what: String,
    removed: String,
) -> Outcome {
    let l = match nl.link(name.as_str()).await {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(None),
        Err(c) => return kernel(format!("looking up {what}"))(c),
    };
    if !owner.allows(l.alias.as_deref()) {
        debug!("{what} carries another tag ({:?}): kept", l.alias);
        return Ok(None);
    }
    nl.delete_link(l.index)
        .await
        .map(|()| Some(removed))
        .or_else(kernel(format!("deleting {what}")))
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
        Teardown::OvsDelPort { port, id } => super::ovs::would_del_port(port, id),
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
            delete_owned(
                guest,
                name,
                owner,
                format!("{name} in container {label}"),
                format!("interface {name}"),
            )
            .await
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
            let what = format!("host interface {name}");
            delete_owned(host, name, owner, what.clone(), what).await
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
            // Only other attachments count: the kernel's own links stacked on
            // it say nothing (bringing a parent up brings its 802.1Q children
            // up with it), and whatever hung on it was down with it before.
            if used_elsewhere(cx, name.as_str(), except, None).await? {
                debug!("{name} is in use by another attachment: left up");
                return Ok(None);
            }
            host.set_up(*index, false)
                .await
                .map(|()| None)
                .or_else(kernel(format!("bringing {name} down again")))
        }
        Teardown::RemoveNetnsLink { name, ns } => {
            crate::sys::netns_link::remove_link(cx.store, name.as_str(), *ns)
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
        Teardown::OvsDelPort { port, id } => super::ovs::del_port(port, id),
        Teardown::OvsReleaseBridge { name } => super::ovs::release_bridge(name),
        Teardown::RemoveRecord(id) => cx
            .store
            .remove(id)
            .map(|()| None)
            .map_err(|e| format!("{}: {e}", cx.store.record_path(id).display())),
        // Container-side operations are handled by the caller.
        _ => Ok(None),
    }
}

/// Does anything but `except` use host link `name`? Another record (pending or
/// committed) naming it or a link stacked on it; with `index`, also a bridge
/// port or a child link on the host. Called under the exclusive shared-link lock.
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
