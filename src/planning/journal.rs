//! From a plan to the journal record that names what it will create (written
//! before the first change) and to the committed record after the last step.
//! Pure: the caller writes the record.

use crate::domain::attachments::Entry;
use crate::domain::identity::{Created, Kind, NsKey, Record, Replaced, to_hex};
use crate::domain::spec::{AttachSpec, GuestRef};
use crate::planning::attach::{Plan, Step};
use crate::sys::guest::Target;

pub fn kind_of(plan: &Plan) -> Kind {
    match plan.kind {
        "veth" => Kind::Veth,
        "macvlan" => Kind::Macvlan,
        "ipvlan" => Kind::Ipvlan,
        _ => Kind::Phys,
    }
}

/// The record as it stands before the first step: `old` (a re-run's record)
/// or a new one, with every object the plan will create named in `created`.
pub fn begin(
    spec: &AttachSpec,
    target: &Target,
    plan: &Plan,
    old: Option<Record>,
    persist: bool,
) -> Record {
    let here: NsKey = target.netns.id.into();
    let mut r = old.unwrap_or_else(|| Record {
        netns: here,
        host_ns: None,
        host_cookie: None,
        cookie: None,
        ifname: spec.ifname.clone(),
        label: target.label.clone(),
        labels: Vec::new(),
        anchor: None,
        pending: None,
        created: Vec::new(),
        spec: Entry::from_spec(spec),
        kind: kind_of(plan),
        host_if: plan.host_if.clone(),
        host_ifname: None,
        mac: None,
        replaced_default: Vec::new(),
        addrs: Vec::new(),
        persist: false,
        from_file: false,
    });
    r.label = target.label.clone();
    r.host_ns = crate::sys::netns::own_id().ok().map(Into::into);
    r.host_cookie = crate::sys::netns::own_cookie();
    r.add_label(&target.label);
    r.add_label(&spec.guest.to_string());
    if let Some(n) = &target.link_name {
        r.add_label(n);
    }
    // A namespace that lives without a process (`ip netns add`) is alive
    // while its bind mount is.
    let anchor = match &spec.guest {
        GuestRef::Name(n) => Some(crate::sys::netns::link_path(n)),
        GuestRef::Path(p) => Some(p.clone()),
        GuestRef::Pid(_) => None,
    };
    if let Some(p) = anchor
        && !p.starts_with("/proc/")
        && crate::sys::netns::path_is(&p, target.netns.id)
    {
        r.anchor = Some(p);
    }
    r.spec = Entry::from_spec(spec);
    r.kind = kind_of(plan);
    r.host_if = plan.host_if.clone();
    r.host_ifname = plan.host_ifname.clone();
    r.persist |= persist;
    for s in &plan.steps {
        match s {
            Step::CreateBridge { name } => r.journal(Created::Bridge(name.clone())),
            Step::CreateVlan { name, .. } => r.journal(Created::Vlan(name.clone())),
            Step::EnsureShim { name, .. } => r.journal(Created::Shim(name.clone())),
            Step::CreateVeth { host, guest, .. } => {
                r.journal(Created::HostLink(host.clone()));
                r.journal(Created::GuestLink(guest.clone()));
            }
            Step::CreateMacvlan { guest, .. } | Step::CreateIpvlan { guest, .. } => {
                r.journal(Created::GuestLink(guest.clone()))
            }
            Step::LinkNetns { name, .. } => {
                if let Ok(n) = name.clone().try_into() {
                    r.journal(Created::NetnsLink(n));
                }
            }
            Step::ReplaceDefault {
                gateway, previous, ..
            } => {
                let v6 = gateway.is_ipv6();
                // Keep the route from before pipe's first change.
                if !r.replaced_default.iter().any(|x| x.v6 == v6) {
                    r.replaced_default.push(Replaced {
                        v6,
                        previous: previous.as_ref().map(|p| to_hex(&p.to_bytes())),
                    });
                }
            }
            Step::Dhcp { previous, .. } if !r.replaced_default.iter().any(|x| !x.v6) => {
                r.replaced_default.push(Replaced {
                    v6: false,
                    previous: previous.as_ref().map(|p| to_hex(&p.to_bytes())),
                })
            }
            _ => {}
        }
    }
    r
}

/// The record after the last step: what the container has now, and no longer pending.
pub fn commit(r: &mut Record, plan: &Plan, applied: &Applied) {
    r.pending = None;
    r.mac = applied.guest_link.mac.map(|m| m.to_string());
    for s in &plan.steps {
        match s {
            Step::DeleteAddress { addr, .. } => r.addrs.retain(|a| *a != addr.to_string()),
            Step::AddAddress { addr, .. } if !r.addrs.contains(&addr.to_string()) => {
                r.addrs.push(addr.to_string())
            }
            _ => {}
        }
    }
}

/// What an applied plan left in the container.
#[derive(Debug)]
pub struct Applied {
    /// The container-side link as read back after creation.
    pub guest_link: crate::sys::netlink::Link,
    /// The DHCP lease pipe's own client obtained.
    pub leased: Option<crate::sys::dhcp::Lease>,
}
