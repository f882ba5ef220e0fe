//! The attach verb: resolve the guest, lock its attachment, recover a killed
//! run, observe, plan (or re-plan a re-run), journal, execute, commit.

use crate::domain::error::{self, Error, Result};
use crate::domain::identity as state;
use crate::domain::spec::{self, AttachSpec};
use crate::exec;
use crate::planning::attach::{self as plan, NsRef};
use crate::planning::{journal, rerun};
use crate::sys::netlink::Netlink;
use crate::sys::store::{self, Alive};
use crate::sys::{guest, netns};
use crate::verbs::{detach, facts, precheck, report};

/// Does br_netfilter pass bridged IPv4 frames to iptables in this namespace?
fn bridged_traffic_is_filtered() -> bool {
    std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .map(|v| v.trim() == "1")
        .unwrap_or(false)
}

/// Pipe needs to enter namespaces and change links.
pub(crate) fn check_privileges() -> Result<()> {
    use crate::sys::probe::{CAP_NET_ADMIN, CAP_SYS_ADMIN, effective_caps};
    let eff = effective_caps().unwrap_or(0);
    let has = |c: u32| eff & (1 << c) != 0;
    if has(CAP_NET_ADMIN) && has(CAP_SYS_ADMIN) {
        Ok(())
    } else {
        Err(Error::Refused(
            "pipe needs CAP_NET_ADMIN and CAP_SYS_ADMIN to enter namespaces and create links; run it as root (sudo pipe ...)"
                .into(),
        ))
    }
}

/// Attach one interface (or find it attached already) and record it. Prints
/// the plan and returns `None` with `dry_run`.
pub async fn attach_one(
    spec: &AttachSpec,
    dry_run: bool,
    persist: bool,
) -> Result<Option<report::Report>> {
    let target = guest::resolve(&spec.guest, spec.timeout).await?;
    let host =
        Netlink::current().map_err(|c| Error::kernel("opening a netlink socket on the host", c))?;
    attach_resolved(spec, target, &host, dry_run, persist).await
}

/// A netlink connection inside the container, and the cookie of the
/// namespace it was opened in (what a record is checked against).
pub struct GuestConn {
    pub nl: Netlink,
    pub cookie: Option<u64>,
}

/// Open the container's netlink connection (one socket made in its namespace).
pub fn open_guest(target: &guest::Target) -> Result<GuestConn> {
    let sock = netns::socket_in(&target.netns).map_err(|e| {
        Error::kernel(
            format!("entering the network namespace of {}", target.label),
            error::KernelCause::from_io(&e),
        )
    })?;
    let cookie = {
        use std::os::fd::AsRawFd;
        netns::cookie_of_socket(sock.as_raw_fd())
    };
    let nl = Netlink::from_socket(sock)
        .map_err(|c| Error::kernel("opening a netlink socket in the container", c))?;
    Ok(GuestConn { nl, cookie })
}

/// The rest of an attach once the guest is resolved, on a given host
/// connection (`pipe apply` shares one across many attachments).
pub async fn attach_resolved(
    spec: &AttachSpec,
    target: guest::Target,
    host: &Netlink,
    dry_run: bool,
    persist: bool,
) -> Result<Option<report::Report>> {
    let g = open_guest(&target)?;
    attach_with(spec, target, host, &g, dry_run, persist).await
}

/// [`attach_resolved`] on a container connection the caller opened already
/// (the CNI plugin looks up CNI_IFNAME on it first).
pub async fn attach_with(
    spec: &AttachSpec,
    target: guest::Target,
    host: &Netlink,
    g: &GuestConn,
    dry_run: bool,
    persist: bool,
) -> Result<Option<report::Report>> {
    if let Some(n) = &target.note {
        eprintln!("pipe: note: {n}");
    }
    let (guest, cookie) = (&g.nl, g.cookie);

    let store = detach::open_store_for(dry_run)?;
    let id = state::AttachmentId::new(target.netns.id, spec.ifname.clone());
    let _lock = detach::lock_unless_dry(&store, &id, dry_run)?;
    let mut old = detach::load(&store, &id)?;
    if let Some(o) = &old
        && !o.same_netns(cookie)
    {
        // A record of a dead namespace whose inode the kernel gave to this one:
        // what it named went with that namespace. It is superseded.
        if !dry_run {
            let _ = store.remove(&id);
        }
        old = None;
    }
    if let Some(o) = old.as_ref().and_then(|r| r.pending)
        && !dry_run
    {
        if o.alive() {
            return Err(Error::Refused(format!(
                "another attach of {} in {} is under way (pipe PID {}); try again when it is done",
                spec.ifname, target.label, o.pid
            )));
        }
        // A run of this very attachment was killed half-way: finish its
        // rollback from the journal before starting afresh.
        recover(&store, host, &target, guest, &id).await?;
        old = None;
    }

    precheck::ipv6_enabled(spec, &target)?;
    let facts = facts::observe(spec, &target, host, guest).await?;
    for n in precheck::notes(spec, &facts) {
        eprintln!("pipe: note: {n}");
    }
    let ns = match (&target.link_name, spec.netns_link) {
        (Some(n), true) => NsRef::Named(n.clone()),
        _ => match &spec.guest {
            spec::GuestRef::Name(n) if target.link_name.is_none() => NsRef::Named(n.clone()),
            _ => NsRef::Path(target.netns.path.display().to_string()),
        },
    };
    // What the interface holds already (a re-run's report names a DHCP lease).
    let mut present: Vec<String> = Vec::new();
    let plan = match &facts.guest_ifname_taken {
        Some(link) => {
            let ex = facts::existing(
                link,
                old.clone(),
                &facts.host_veth,
                host,
                guest,
                &target,
                &id,
            )
            .await?;
            present = ex
                .addrs
                .iter()
                .filter(|a| !matches!(a.net, ipnetwork::IpNetwork::V6(n) if n.ip().is_unicast_link_local()))
                .map(|a| a.net.to_string())
                .collect();
            rerun::plan(spec, &facts, &ex, ns, &target.label)?
        }
        None => plan::plan(spec, &facts, ns)?,
    };
    // One namespace, one name under /var/run/netns: given again by another
    // form (a PID after its netns name or container name), it gets no second link.
    let mut plan = plan;
    if let Some(o) = &old
        && (o.anchor.is_some() || o.netns_link().is_some())
    {
        plan.steps.retain(|s| match s {
            plan::Step::LinkNetns { name, .. } => {
                o.netns_link().map(|n| n.as_str()) == Some(name.as_str())
            }
            _ => true,
        });
    }
    if dry_run {
        if crate::domain::output::json() {
            println!(
                "{}",
                crate::planning::plan_json::render(&plan, &target.label)
            );
        } else {
            print!("{}", plan.render());
        }
        return Ok(None);
    }
    let noop = rerun::is_noop(&plan);
    // Journal before the kernel: what this run will create, under the names it
    // will use, and who is writing (committed after the last step).
    let mut rec = journal::begin(spec, &target, &plan, old.clone(), persist);
    rec.cookie = cookie;
    let journaled = !noop;
    if journaled {
        rec.pending = Some(store::owner_me());
        store.save(&rec).map_err(|e| {
            Error::Refused(format!(
                "writing pipe's journal {}: {e}; nothing was changed",
                store.record_path(&id).display()
            ))
        })?;
    }
    let applied = match exec::apply(&plan, &target, host, guest, &store, &id).await {
        Ok(a) => a,
        Err(e) => {
            // Rolled back: the journal goes back to what it was.
            let r = match &old {
                Some(o) => store.save(o),
                None => store.remove(&id),
            };
            if let Err(w) = r {
                eprintln!(
                    "pipe: note: could not restore the record {}: {w}; run pipe gc",
                    store.record_path(&id).display()
                );
            }
            return Err(e);
        }
    };
    if let Some(br) = plan.steps.iter().find_map(|s| match s {
        plan::Step::CreateBridge { name } => Some(name),
        _ => None,
    }) && bridged_traffic_is_filtered()
    {
        // The classic trap on Docker hosts: br_netfilter sends bridged frames
        // through iptables FORWARD, whose policy Docker sets to DROP.
        eprintln!(
            "pipe: note: bridged traffic on this host goes through iptables (bridge-nf-call-iptables=1); \
             if the FORWARD policy is DROP (as Docker sets it), containers on {br} cannot reach each other \
             until you allow it, e.g. iptables -I FORWARD -i {br} -o {br} -j ACCEPT"
        );
    }
    journal::commit(&mut rec, &plan, &applied);
    // Records of earlier incarnations of this container (it restarted: a new
    // namespace) are superseded by this one, which keeps what they promised.
    // A label that names one namespace only (a PID, a CNI container ID) has
    // no earlier incarnation, and looking for one would read every record of
    // this interface name in the state dir on each attach.
    let earlier = if target.once {
        Vec::new()
    } else {
        store.find(&target.label, Some(spec.ifname.as_str()))
    };
    for o in earlier {
        if o.netns != rec.netns && o.pending.is_none() && !o.alive() {
            rec.persist |= o.persist;
            rec.from_file |= o.from_file;
            if rec.mac.is_none() {
                rec.mac = o.mac.clone();
            }
            let _ = store.remove(&o.id());
        }
    }
    if (journaled || old.as_ref() != Some(&rec))
        && let Err(e) = store.save(&rec)
    {
        eprintln!(
            "pipe: note: attached, but could not write the record {}: {e}; \
                 pipe detach will need --force",
            store.record_path(&id).display()
        );
    }
    let mut r = report::Report::new(spec, &target, &plan, &applied);
    r.already_attached = noop;
    if noop && r.addresses.is_empty() {
        // DHCP (or 0/0): name what the interface holds, not "none".
        r.address = present.first().cloned();
        r.addresses = present;
    }
    Ok(Some(r))
}

/// Finish the rollback of a killed run of attachment `id` from its journal.
async fn recover(
    store: &store::Store,
    host: &Netlink,
    target: &guest::Target,
    guest: &Netlink,
    id: &state::AttachmentId,
) -> Result<()> {
    let f = detach::observe(store, id, &target.label, Some(guest)).await?;
    let ops = detach::plan(&f, detach::Why::Recover)?;
    let cx = exec::Cx {
        host,
        guest: Some(guest),
        netns: Some(&target.netns),
        label: &target.label,
        store,
    };
    let done = exec::teardown(&ops, &cx).await;
    if done.failed.is_empty() {
        if !done.removed.is_empty() {
            eprintln!(
                "pipe: note: removed what an interrupted attach left: {}",
                done.removed.join(", ")
            );
        }
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "cleaning up after an interrupted attach of {id}: {}; run pipe gc",
            done.failed.join("; ")
        )))
    }
}
