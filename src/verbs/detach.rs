//! `pipe detach GUEST [-i IFNAME]`, crash recovery and collection: planners
//! that turn an attachment's record and what the kernel shows into teardown
//! operations for the one executor (`exec::teardown`).
//!
//! Observe, plan (pure: [`plan`]), then act; teardown goes on past a failed
//! step and reports every failure together. Nothing is deleted without proof
//! that it belongs to exactly this attachment: its tag, or (for a run that was
//! killed before it could tag) the journal.

use std::time::Duration;

use log::debug;
use serde::Serialize;

use crate::domain::error::{Error, Result};
use crate::domain::identity::{AttachmentId, Created, Kind, Record};
use crate::domain::spec::{GuestRef, IfName};
use crate::exec::{self, Cx};
use crate::planning::ops::{Owner, Restore, Teardown};
use crate::sys::netlink::{Link, Netlink, Route};
use crate::sys::netns;
use crate::sys::store::{Alive, Store};

/// What the operator asked.
#[derive(Clone, Debug)]
pub struct DetachSpec {
    pub guest: GuestRef,
    pub ifname: IfName,
    pub force: bool,
    pub timeout: Duration,
}

/// Why an attachment is torn down: each has its own proof of ownership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// `pipe detach` (`force`: also an interface pipe did not make).
    Detach { force: bool },
    /// The journal of a run that died half-way: remove what it names.
    Recover,
    /// The namespace is gone (gc, `pipe watch` on a container's death).
    Collect,
}

/// Everything the teardown plan depends on, read before any change.
#[derive(Clone, Debug)]
pub struct Facts {
    pub id: AttachmentId,
    /// How messages name the container.
    pub label: String,
    /// The container interface; `None` if it (or the container) is gone.
    pub link: Option<Link>,
    pub record: Option<Record>,
    /// Current default routes (IPv4, IPv6) in the container.
    pub defaults: [Option<Route>; 2],
    /// Another record of the same namespace uses its /var/run/netns link.
    pub netns_shared: bool,
}

/// Pure: the teardown operations, or why not.
pub fn plan(f: &Facts, why: Why) -> Result<Vec<Teardown>> {
    let (label, ifname, id) = (&f.label, &f.id.ifname, &f.id);
    let force = matches!(why, Why::Detach { force: true });
    let mut ops = Vec::new();
    let guest_owner = match why {
        Why::Recover => Owner::Journaled(id.clone()),
        _ if force => Owner::Forced,
        _ => Owner::Tag(id.clone()),
    };
    match (&f.link, &f.record) {
        (None, None) => {
            return Err(Error::Refused(format!(
                "container {label} has no interface {ifname} and pipe has no record of it; nothing to detach"
            )));
        }
        (Some(l), None) if !force && !id.owns(l.alias.as_deref()) => {
            return Err(Error::Refused(
                if crate::domain::identity::is_tag(l.alias.as_deref()) {
                    format!(
                        "interface {ifname} of container {label} carries another attachment's tag ({}); \
                     pass --force to delete it anyway",
                        l.alias.as_deref().unwrap_or_default()
                    )
                } else {
                    format!(
                        "interface {ifname} of container {label} was not made by pipe (no record, no pipe: alias); \
                     pass --force to delete it anyway"
                    )
                },
            ));
        }
        _ => {}
    }
    if let Some(r) = &f.record
        && r.spec.addr.starts_with("dhcp")
    {
        ops.push(Teardown::StopKeeper {
            label: r.label.clone(),
            ifname: ifname.clone(),
        });
    }
    if let Some(l) = &f.link {
        if let Some(r) = &f.record {
            for (i, cur) in f.defaults.iter().enumerate() {
                let ours = cur.as_ref().is_some_and(|c| c.oif() == Some(l.index));
                let prev = r
                    .previous_route(i == 1)
                    .flatten()
                    .and_then(|b| Route::from_bytes(&b));
                if ours && let Some(route) = prev {
                    ops.push(Teardown::RestoreRoute(route));
                }
            }
        }
        // A moved-in host interface goes back; anything else pipe made is deleted.
        match &f.record {
            Some(r) if r.kind == Kind::Phys => ops.push(Teardown::MoveBack {
                guest: ifname.clone(),
                restore: Restore {
                    name: l
                        .alias
                        .clone()
                        .filter(|a| {
                            !a.is_empty()
                                && !crate::domain::identity::is_tag(Some(a))
                                && a.parse::<IfName>().is_ok()
                        })
                        .unwrap_or_else(|| r.host_if.to_string()),
                    mtu: None,
                    mac: None,
                    alias: String::new(),
                    up: false,
                },
            }),
            _ => ops.push(Teardown::DeleteGuestLink {
                name: ifname.clone(),
                owner: guest_owner.clone(),
            }),
        }
    }
    let Some(r) = &f.record else {
        return Ok(ops);
    };
    let host_owner = match why {
        Why::Recover => Owner::Journaled(id.clone()),
        _ => Owner::Tag(id.clone()),
    };
    // The host end of a veth normally goes with its peer; a leftover goes now.
    let mut host_links: Vec<&IfName> = r.host_ifname.iter().collect();
    for c in &r.created {
        if let Created::HostLink(n) = c
            && !host_links.contains(&n)
        {
            host_links.push(n);
        }
    }
    for n in host_links {
        ops.push(Teardown::DeleteHostLink {
            name: n.clone(),
            owner: host_owner.clone(),
        });
    }
    // The host end of a veth may be an Open vSwitch port: its row goes too
    // (only if it names this attachment; nothing to do on hosts without OVS).
    if let Some(n) = &r.host_ifname {
        ops.push(Teardown::OvsDelPort {
            port: n.clone(),
            id: id.clone(),
        });
    }
    // The record goes before the shared links are judged: parallel detaches of
    // a bridge's last ports each see the others' records gone, so the last one
    // deletes it. (Killed in between, gc removes a shared link no record uses.)
    if !(why == Why::Collect && r.kept()) {
        ops.push(Teardown::RemoveRecord(id.clone()));
    }
    // Shared links: the ones this record created, and its bridge or parent if
    // pipe created that for another attachment (the executor checks the tag
    // and that nothing else uses it, under the lock).
    // --host-shim: the host routes to its addresses, and the shim before the
    // parent it sits on (a shim is a child that keeps a VLAN sub-interface in use).
    if let Some(s) = r.shim() {
        // What was added (committed), or asked (a run that died half-way).
        let mut dsts: Vec<std::net::IpAddr> = r
            .addrs
            .iter()
            .filter_map(|a| a.parse::<ipnetwork::IpNetwork>().ok())
            .map(|n| n.ip())
            .collect();
        if let Ok(a) = r.spec.addr.parse::<crate::domain::spec::AddrSpec>() {
            for n in a.all() {
                if !dsts.contains(&n.ip()) {
                    dsts.push(n.ip());
                }
            }
        }
        for dst in dsts {
            ops.push(Teardown::DeleteHostRoute {
                dst,
                dev: s.clone(),
            });
        }
    }
    let mut shared: Vec<&IfName> = r.created_shared().collect();
    shared.sort_by_key(|n| Some(*n) != r.shim());
    // A p2p record's host_if is the peer's end in the other container, not a host link.
    if r.kind != Kind::P2p && !shared.contains(&&r.host_if) {
        shared.push(&r.host_if);
    }
    for n in shared {
        ops.push(Teardown::ReleaseShared {
            name: n.clone(),
            untagged: why == Why::Recover && r.created_shared().any(|c| c == n),
            except: Some(id.clone()),
        });
    }
    if let Some(n) = r.netns_link()
        && !f.netns_shared
    {
        ops.push(Teardown::RemoveNetnsLink {
            name: n.clone(),
            ns: r.netns,
        });
    }
    Ok(ops)
}

/// What `detach` prints.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub container: String,
    pub ifname: String,
    pub removed: Vec<String>,
}

/// Open a netlink socket inside a namespace.
pub fn guest_socket(ns: &netns::Netns, label: &str) -> Result<Netlink> {
    let sock = netns::socket_in(ns).map_err(|e| {
        Error::kernel(
            format!("entering the network namespace of {label}"),
            crate::domain::error::KernelCause::from_io(&e),
        )
    })?;
    Netlink::from_socket(sock)
        .map_err(|c| Error::kernel("opening a netlink socket in the container", c))
}

pub fn open_store() -> Result<Store> {
    open_store_for(false)
}

/// The state directory, opened to change it, or (`dry_run`) only to read it:
/// a dry run creates nothing there, not even the directory or a lock file.
pub fn open_store_for(dry_run: bool) -> Result<Store> {
    if dry_run {
        Store::peek()
    } else {
        Store::open()
    }
    .map_err(|e| {
        Error::Refused(format!(
            "cannot open pipe's state directory {}: {e}",
            crate::sys::store::state_dir().display()
        ))
    })
}

/// The lock of one attachment (waiting for it): one attach, detach or
/// collection of it at a time. A dry run takes none (its store is read-only
/// and it leaves no lock file behind).
pub fn lock_unless_dry(
    store: &Store,
    id: &AttachmentId,
    dry_run: bool,
) -> Result<Option<crate::sys::store::Lock>> {
    if dry_run {
        return Ok(None);
    }
    store.lock(id, true).map_err(|e| {
        Error::Refused(format!(
            "taking the lock of {id} in {}: {e}",
            store.path().display()
        ))
    })
}

pub fn load(store: &Store, id: &AttachmentId) -> Result<Option<Record>> {
    store.load(id).map_err(|e| {
        Error::Refused(format!(
            "pipe's record {} is unreadable or was tampered with ({e}); nothing was changed: \
             inspect it and remove it",
            store.record_path(id).display()
        ))
    })
}

pub async fn detach(d: &DetachSpec, dry_run: bool) -> Result<Outcome> {
    let host =
        Netlink::current().map_err(|c| Error::kernel("opening a netlink socket on the host", c))?;
    let store = open_store_for(dry_run)?;
    let target = match crate::sys::guest::resolve(&d.guest, d.timeout).await {
        Ok(t) => Some(t),
        Err(e) => {
            // The container is gone: what is left is on the host, and on record.
            let name = d.guest.to_string();
            let recs: Vec<Record> = store
                .all()
                .into_iter()
                .flatten()
                .filter(|r| r.ifname == d.ifname && r.has_label(&name))
                .collect();
            if recs.is_empty() {
                return Err(e);
            }
            debug!("detach: {name} does not resolve ({e}); cleaning up from its records");
            let mut out = Outcome {
                container: name.clone(),
                ifname: d.ifname.to_string(),
                removed: Vec::new(),
            };
            for r in recs {
                let o = one(&store, &host, None, r.id(), &name, d.force, dry_run).await?;
                out.removed.extend(o.removed);
            }
            return Ok(out);
        }
    };
    let t = target.expect("resolved");
    let id = AttachmentId::new(t.netns.id, d.ifname.clone());
    let g = guest_socket(&t.netns, &t.label)?;
    one(
        &store,
        &host,
        Some((&t.netns, &g)),
        id,
        &t.label,
        d.force,
        dry_run,
    )
    .await
}

/// Detach one attachment by identity (the CNI plugin's DEL), under its lock.
pub async fn detach_id(
    store: &Store,
    host: &Netlink,
    guest: Option<(&netns::Netns, &Netlink)>,
    id: AttachmentId,
    label: &str,
) -> Result<Outcome> {
    one(store, host, guest, id, label, false, false).await
}

/// Detach one attachment, under its lock.
async fn one(
    store: &Store,
    host: &Netlink,
    guest: Option<(&netns::Netns, &Netlink)>,
    id: AttachmentId,
    label: &str,
    force: bool,
    dry_run: bool,
) -> Result<Outcome> {
    // A dry run only reads (its store is read-only): no lock file for it.
    let _lock = lock_unless_dry(store, &id, dry_run)?;
    let mut f = observe(store, &id, label, guest.map(|g| g.1)).await?;
    if let (Some((ns, _)), Some(r)) = (guest, &f.record)
        && !r.same_netns(netns::cookie(ns))
    {
        // A dead namespace's record whose inode this namespace reuses: not this one's.
        if !dry_run {
            let _ = store.remove(&id);
        }
        f.record = None;
    }
    let mut why = Why::Detach { force };
    if let Some(r) = &f.record
        && let Some(o) = r.pending
    {
        if o.alive() {
            return Err(Error::Refused(format!(
                "an attach of {} in {label} is under way (pipe PID {}); try again when it is done",
                id.ifname, o.pid
            )));
        }
        why = Why::Recover;
    }
    if f.link.is_none() && f.record.is_some() && guest.is_some() {
        // The record is of this namespace and its interface is gone: collect.
        why = if why == Why::Recover {
            why
        } else {
            Why::Collect
        };
        if let Some(r) = f.record.as_mut() {
            // An explicit detach forgets a persistent attachment too.
            r.persist = false;
            r.from_file = false;
        }
    }
    let ops = plan(&f, why)?;
    if dry_run {
        for s in &ops {
            println!("{s}");
        }
        return Ok(Outcome {
            container: label.to_string(),
            ifname: id.ifname.to_string(),
            removed: Vec::new(),
        });
    }
    let cx = Cx {
        host,
        guest: guest.map(|g| g.1),
        netns: guest.map(|g| g.0),
        label,
        store,
    };
    let done = exec::teardown(&ops, &cx).await;
    if !done.failed.is_empty() {
        return Err(Error::Refused(format!(
            "detach could not finish: {}{}",
            done.failed.join("; "),
            if done.removed.is_empty() {
                String::new()
            } else {
                format!(" (removed: {})", done.removed.join(", "))
            }
        )));
    }
    Ok(Outcome {
        container: label.to_string(),
        ifname: id.ifname.to_string(),
        removed: done.removed,
    })
}

/// Read what the teardown depends on. `guest` is `None` when the namespace is gone.
pub async fn observe(
    store: &Store,
    id: &AttachmentId,
    label: &str,
    guest: Option<&Netlink>,
) -> Result<Facts> {
    let record = load(store, id)?;
    let ifname = &id.ifname;
    let mut f = Facts {
        id: id.clone(),
        label: label.to_string(),
        link: None,
        record: record.clone(),
        defaults: [None, None],
        netns_shared: false,
    };
    let kerr = |what: String| move |c| Error::kernel(what, c);
    if let Some(g) = guest {
        f.link = g
            .link(ifname.as_str())
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
    if let Some(r) = &record
        && let Some(n) = r.netns_link()
    {
        f.netns_shared = store
            .all()
            .into_iter()
            .flatten()
            .any(|o| o.id() != *id && o.netns == r.netns && o.netns_link() == Some(n));
    }
    Ok(f)
}

/// Tear down one attachment whose record says so (gc, watch, recovery):
/// `Why::Recover` for a dead writer's pending record, else `Why::Collect`.
/// Takes the attachment's lock without waiting: a busy one is skipped.
pub async fn collect(
    store: &Store,
    host: &Netlink,
    r: &Record,
    dry_run: bool,
) -> std::result::Result<Vec<String>, Vec<String>> {
    let id = r.id();
    // A dry run only reads (its store is read-only): it takes no lock. The
    // lock's file goes with it when the record does.
    let _lock = if dry_run {
        None
    } else {
        let Ok(Some(lock)) = store.lock(&id, false) else {
            debug!("{id}: busy, skipped");
            return Ok(Vec::new());
        };
        Some(lock)
    };
    // Read again under the lock: it may have changed or gone meanwhile.
    let r = match store.load(&id) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(Vec::new()),
        Err(e) => return Err(vec![format!("{}: {e}", store.record_path(&id).display())]),
    };
    // The host side of a record made from another namespace is that
    // namespace's: collected by a gc there, or gone with it.
    let host_gone =
        !crate::sys::store::host_here(&r) && !r.host_ns.is_some_and(|h| netns::exists(h.into()));
    if !crate::sys::store::host_here(&r) && !host_gone {
        return Ok(Vec::new());
    }
    let why = match r.pending {
        Some(o) if o.alive() => return Ok(Vec::new()),
        Some(_) => Why::Recover,
        None if r.alive() => return Ok(Vec::new()),
        None => Why::Collect,
    };
    // A pending record's namespace may live on: act inside it.
    let ns = if why == Why::Recover {
        netns::find(r.netns.into(), r.anchor.as_deref())
    } else {
        None
    };
    let g = match &ns {
        Some(ns) => match guest_socket(ns, &r.label) {
            Ok(g) => Some(g),
            Err(e) => return Err(vec![e.to_string()]),
        },
        None => None,
    };
    let f = match observe(store, &id, &r.label, g.as_ref()).await {
        Ok(f) => f,
        Err(e) => return Err(vec![e.to_string()]),
    };
    let mut ops = match plan(&f, why) {
        Ok(o) => o,
        Err(_) => vec![Teardown::RemoveRecord(id.clone())],
    };
    if host_gone {
        ops.retain(|o| {
            !matches!(
                o,
                Teardown::DeleteHostLink { .. }
                    | Teardown::OvsDelPort { .. }
                    | Teardown::ReleaseShared { .. }
                    | Teardown::HostDownIfUnused { .. }
            )
        });
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    let cx = Cx {
        host,
        guest: g.as_ref(),
        netns: ns.as_ref(),
        label: &r.label,
        store,
    };
    if dry_run {
        let mut v = Vec::new();
        for o in &ops {
            if let Some(x) = exec::would(o, &cx).await {
                v.push(format!("{verb} {x}"));
            }
        }
        return Ok(v);
    }
    let done = exec::teardown(&ops, &cx).await;
    let gone = ops.iter().any(|o| matches!(o, Teardown::RemoveRecord(_)));
    let what = match why {
        Why::Recover => "interrupted attach of",
        _ => "attachment",
    };
    let mut removed: Vec<String> = done
        .removed
        .into_iter()
        .map(|x| format!("{verb} {x} ({what} {} {})", r.label, r.ifname))
        .collect();
    if gone {
        removed.push(format!(
            "{verb} record {}",
            store.record_path(&id).display()
        ));
    }
    if done.failed.is_empty() {
        Ok(removed)
    } else {
        Err(done.failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::identity::NsKey;

    fn id() -> AttachmentId {
        AttachmentId::new(NsKey { dev: 4, ino: 99 }, "eth1".parse().unwrap())
    }

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
            lower: None,
        }
    }

    fn facts(link: Option<Link>) -> Facts {
        Facts {
            id: id(),
            label: "web".into(),
            link,
            record: None,
            defaults: [None, None],
            netns_shared: false,
        }
    }

    #[test]
    fn foreign_interface_needs_force() {
        let f = facts(Some(l("eth1", None)));
        let e = plan(&f, Why::Detach { force: false }).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        let s = plan(&f, Why::Detach { force: true }).unwrap();
        assert!(
            matches!(
                &s[..],
                [Teardown::DeleteGuestLink {
                    owner: Owner::Forced,
                    ..
                }]
            ),
            "{s:?}"
        );
        // Its own tag is enough without a record; another attachment's is not.
        let f = facts(Some(l("eth1", Some("pipe:4-99:eth1"))));
        assert!(plan(&f, Why::Detach { force: false }).is_ok());
        let f = facts(Some(l("eth1", Some("pipe:4-98:eth1"))));
        let e = plan(&f, Why::Detach { force: false }).unwrap_err();
        assert!(e.to_string().contains("another attachment"), "{e}");
    }

    #[test]
    fn nothing_to_detach() {
        let e = plan(&facts(None), Why::Detach { force: false }).unwrap_err();
        assert!(e.to_string().contains("nothing to detach"), "{e}");
    }

    #[test]
    fn owners() {
        let t = Owner::Tag(id());
        assert!(t.allows(Some("pipe:4-99:eth1")));
        assert!(!t.allows(Some("pipe:web:eth1")));
        assert!(!t.allows(None));
        let j = Owner::Journaled(id());
        assert!(j.allows(None));
        assert!(j.allows(Some("")));
        assert!(!j.allows(Some("pipe:4-98:eth1")));
        assert!(!j.allows(Some("someone's")));
    }
}
