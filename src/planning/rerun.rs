//! Idempotent re-runs: planning an attach whose container interface exists
//! already. Pure, like `plan`: (spec, facts, what exists) -> steps.
//!
//! - the same request again is a no-op ("already attached");
//! - another address replaces the one pipe set before (others stay);
//! - another gateway replaces the default route (the original one stays on
//!   record for `detach`);
//! - anything that would need a different link (other bridge or parent,
//!   other kind, other MAC or MTU) is refused with the way out.

use ipnetwork::IpNetwork;

use crate::domain::error::{Error, Result};
#[cfg(test)]
use crate::domain::identity::Kind;
use crate::domain::identity::Record;
use crate::domain::spec::{AttachSpec, IfName};
use crate::planning::attach::{Facts, HostSide, NsRef, Plan, Step, gateway_on_link};
use crate::sys::netlink::{Addr, Link};
use crate::sys::netns_link::LinkState;

/// What is there already, read before any change.
#[derive(Clone, Debug)]
pub struct Existing {
    /// The container interface of the requested name.
    pub link: Link,
    pub addrs: Vec<Addr>,
    /// pipe's record of it, if any.
    pub record: Option<Record>,
    /// The host end of the veth (named by the record, or the derived name).
    pub host_veth: Option<Link>,
    /// This attachment's ownership tag.
    pub tag: String,
}

impl Existing {
    /// Did pipe make this interface?
    pub fn ours(&self) -> bool {
        self.record.is_some() || self.link.alias.as_deref() == Some(self.tag.as_str())
    }
}

/// Is the plan a no-op (the attachment is already as asked)?
pub fn is_noop(p: &Plan) -> bool {
    p.steps.iter().all(|s| matches!(s, Step::Adopt { .. }))
}

pub fn plan(
    spec: &AttachSpec,
    facts: &Facts,
    ex: &Existing,
    ns: NsRef,
    label: &str,
) -> Result<Plan> {
    let ifname = &spec.ifname;
    if !ex.ours() {
        return Err(Error::Refused(format!(
            "interface {ifname} already exists in container {label} and pipe did not create it; \
             choose another name with -i"
        )));
    }
    let have_kind = ex.link.kind.as_deref().unwrap_or("device");
    let on = ex
        .record
        .as_ref()
        .map(|r| format!(" on {}", r.host_if))
        .unwrap_or_default();
    let conflict = |what: String| {
        Error::Refused(format!(
            "interface {ifname} of container {label} is a {have_kind}{on} already, {what}; \
             detach it first (pipe detach {label} -i {ifname}) or choose another name with -i"
        ))
    };

    let (kind, host_if, host_ifname) = match &facts.host {
        HostSide::NewBridge(b) => {
            return Err(conflict(format!("and bridge {b} does not exist")));
        }
        HostSide::Bridge(b) => {
            if have_kind != "veth" {
                return Err(conflict(format!("not a veth into bridge {}", b.name)));
            }
            let hv = ex.host_veth.as_ref();
            let in_bridge = hv.is_some_and(|h| h.master == Some(b.index));
            let rec_ok = ex
                .record
                .as_ref()
                .is_none_or(|r| r.host_if.as_str() == b.name);
            if !in_bridge || !rec_ok {
                return Err(conflict(format!("not a port of bridge {}", b.name)));
            }
            let name: IfName = b.name.parse().map_err(Error::Refused)?;
            let hname: Option<IfName> = hv.and_then(|h| h.name.parse().ok());
            ("veth", name, hname)
        }
        HostSide::Ovs { bridge, exists } => {
            let hv = ex.host_veth.as_ref();
            let rec_ok = ex.record.as_ref().is_none_or(|r| r.host_if == *bridge);
            if !*exists || have_kind != "veth" || hv.is_none() || !rec_ok {
                return Err(conflict(format!(
                    "not a veth into Open vSwitch bridge {bridge}"
                )));
            }
            let hname: Option<IfName> = hv.and_then(|h| h.name.parse().ok());
            ("veth", bridge.clone(), hname)
        }
        HostSide::Parent(p) => {
            if spec.direct_phys {
                return Err(conflict(format!(
                    "and --direct-phys would move {} in as another one",
                    p.name
                )));
            }
            let want = if spec.ipvlan.is_some() {
                "ipvlan"
            } else {
                "macvlan"
            };
            // With @VID the child hangs on HOST_IF.VID.
            let lower: IfName = match (&facts.vlan.sub, spec.vlan) {
                (Some((sub, _)), Some(_)) => sub.clone(),
                _ => p.name.parse().map_err(Error::Refused)?,
            };
            if have_kind != want || ex.record.as_ref().is_some_and(|r| r.host_if != lower) {
                return Err(conflict(format!("not a {want} on {lower}")));
            }
            (want, lower, None)
        }
    };
    if let Some(m) = spec.mac
        && ex.link.mac != Some(m)
    {
        return Err(conflict(format!(
            "with MAC {}, not {m}",
            ex.link.mac.map(|m| m.to_string()).unwrap_or("-".into())
        )));
    }
    if let Some(mtu) = spec.mtu
        && ex.link.mtu != mtu
    {
        return Err(conflict(format!("with MTU {}, not {mtu}", ex.link.mtu)));
    }
    // Another VLAN or ipvlan mode needs another link: the record says what it was made for.
    if let Some(r) = &ex.record {
        let vlan = |v: Option<u16>| v.map_or("no VLAN".to_string(), |v| format!("VLAN {v}"));
        let want = spec.vlan.map(|v| v.get());
        if r.spec.vlan != want {
            return Err(conflict(format!(
                "in {}, not {}",
                vlan(r.spec.vlan),
                vlan(want)
            )));
        }
        let mode = spec.ipvlan.map(|m| m.as_str());
        if mode.is_some() && r.spec.ipvlan.as_deref() != mode {
            return Err(conflict(format!(
                "in ipvlan mode {}, not {}",
                r.spec.ipvlan.as_deref().unwrap_or("-"),
                mode.unwrap_or("-")
            )));
        }
    }

    let mut steps = Vec::new();
    if let Some((name, state)) = &facts.netns_link {
        match state {
            LinkState::Same | LinkState::Other => {}
            LinkState::Missing => steps.push(Step::LinkNetns {
                name: name.clone(),
                replace_stale: false,
            }),
            LinkState::Stale => steps.push(Step::LinkNetns {
                name: name.clone(),
                replace_stale: true,
            }),
        }
    }
    steps.push(Step::Adopt {
        link: ex.link.clone(),
    });

    let mut readdressed = false;
    if let Some(want) = spec.addr.addr
        && !ex
            .addrs
            .iter()
            .any(|a| a.net.ip() == want.ip() && a.net.prefix() == want.prefix())
    {
        // Replace what pipe set before (same family), and the same IP under
        // another prefix; leave every other address alone.
        let recorded: Vec<IpNetwork> = ex
            .record
            .as_ref()
            .map(|r| r.addrs.iter().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default();
        for a in &ex.addrs {
            let same_family = a.net.is_ipv4() == want.is_ipv4();
            let was_ours = recorded
                .iter()
                .any(|r| r.ip() == a.net.ip() && r.prefix() == a.net.prefix());
            if same_family && (was_ours || a.net.ip() == want.ip()) {
                steps.push(Step::DeleteAddress {
                    ifname: ifname.clone(),
                    addr: a.net,
                });
            }
        }
        // Delete before add: deleting a primary IPv4 address takes its
        // secondaries along (promote_secondaries is off by default).
        steps.push(Step::AddAddress {
            ifname: ifname.clone(),
            addr: want,
        });
        readdressed = true;
    }

    if let Some(gw) = spec.addr.gateway {
        // Removing an address drops the routes through it, the default route
        // included: then it is set again whatever it was before.
        let current = !readdressed
            && facts
                .default_route
                .as_ref()
                .is_some_and(|r| r.gateway() == Some(gw) && r.oif() == Some(ex.link.index));
        if !current {
            if !gateway_on_link(spec.addr.addr, gw) {
                steps.push(Step::AddGatewayRoute {
                    ifname: ifname.clone(),
                    gateway: gw,
                });
            }
            steps.push(Step::ReplaceDefault {
                ifname: ifname.clone(),
                gateway: gw,
                previous: facts.default_route.clone(),
            });
        }
    }

    // Further addresses (`ADDR,ADDR...`) that are missing are added; their
    // gateway (the other family) is set when it is not the current one.
    let mut added = Vec::new();
    for (want, _) in &spec.addr.more {
        if !ex
            .addrs
            .iter()
            .any(|a| a.net.ip() == want.ip() && a.net.prefix() == want.prefix())
        {
            steps.push(Step::AddAddress {
                ifname: ifname.clone(),
                addr: *want,
            });
            added.push(want.ip());
        }
    }
    for gw in spec.addr.gateways().into_iter().skip(1) {
        let current = facts
            .default_route_more
            .as_ref()
            .is_some_and(|r| r.gateway() == Some(gw) && r.oif() == Some(ex.link.index));
        if !current {
            if !spec
                .addr
                .all()
                .iter()
                .any(|a| gateway_on_link(Some(*a), gw))
                && !gateway_on_link(None, gw)
            {
                steps.push(Step::AddGatewayRoute {
                    ifname: ifname.clone(),
                    gateway: gw,
                });
            }
            steps.push(Step::ReplaceDefault {
                ifname: ifname.clone(),
                gateway: gw,
                previous: facts.default_route_more.clone(),
            });
        }
    }

    // --rate: shaped again only when it differs from what was asked last time.
    if let Some(rate) = spec.rate {
        let before = ex.record.as_ref().and_then(|r| r.spec.rate.clone());
        if before.as_deref() != Some(rate.to_string().as_str()) {
            let (burst, limit) =
                crate::domain::rate::tbf(rate, ex.link.mtu).map_err(Error::Usage)?;
            steps.push(Step::Shape {
                ifname: ifname.clone(),
                rate,
                burst,
                limit,
            });
        }
    }

    // --host-shim: the shim's routes follow the addresses (a shim asked for the
    // first time gets a route to each).
    if spec.host_shim && (kind == "macvlan" || kind == "ipvlan") {
        let had = ex.record.as_ref().and_then(|r| r.shim()).is_some();
        let shim = crate::planning::attach::shim_name(&host_if);
        let mut more = Vec::new();
        for s in &steps {
            match s {
                Step::DeleteAddress { addr, .. } if had => more.push(Step::ShimUnroute {
                    shim: shim.clone(),
                    dst: addr.ip(),
                }),
                Step::AddAddress { addr, .. } if had => more.push(Step::ShimRoute {
                    shim: shim.clone(),
                    dst: addr.ip(),
                }),
                _ => {}
            }
        }
        if !had {
            more.extend(spec.addr.all().into_iter().map(|a| Step::ShimRoute {
                shim: shim.clone(),
                dst: a.ip(),
            }));
        }
        if !more.is_empty() {
            steps.push(Step::EnsureShim {
                name: shim,
                parent: host_if.clone(),
                parent_index: None,
                ipvlan: spec.ipvlan,
            });
            steps.extend(more);
        }
    }

    if readdressed && let Some(addr) = spec.addr.addr {
        steps.push(Step::Announce {
            ifname: ifname.clone(),
            addr: addr.ip(),
        });
    }
    for addr in added {
        steps.push(Step::Announce {
            ifname: ifname.clone(),
            addr,
        });
    }

    Ok(Plan {
        ns,
        steps,
        ifname: ifname.clone(),
        host_ifname,
        host_if,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::attachments::Entry;
    use crate::domain::spec::{GuestRef, HostIfRef, MacvlanMode};
    use std::time::Duration;

    fn link(name: &str, kind: &str, index: u32, master: Option<u32>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: Some(kind.into()),
            mtu: 1500,
            up: true,
            mac: Some(crate::domain::spec::Mac([2, 0, 0, 0, 0, 1])),
            master,
            alias: Some("pipe:42:eth1".into()),
            lower: None,
        }
    }

    fn spec(addr: &str) -> AttachSpec {
        AttachSpec {
            host_if: HostIfRef::Name("br1".parse().unwrap()),
            guest: GuestRef::Pid(42),
            addr: addr.parse().unwrap(),
            mac: None,
            vlan: None,
            ifname: "eth1".parse().unwrap(),
            host_ifname: None,
            mtu: None,
            macvlan_mode: MacvlanMode::Bridge,
            ipvlan: None,
            direct_phys: false,
            netns_link: true,
            timeout: Duration::from_secs(5),
            rate: None,
            host_shim: false,
        }
    }

    fn facts() -> Facts {
        Facts {
            host: HostSide::Bridge(link("br1", "bridge", 5, None)),
            host_veth: "veth1pl42".parse().unwrap(),
            host_veth_taken: true,
            guest_ifname_taken: Some(link("eth1", "veth", 2, None)),
            default_route: None,
            default_route_more: None,
            netns_link: Some(("42".into(), LinkState::Same)),
            vlan: Default::default(),
        }
    }

    fn existing(addr: &str) -> Existing {
        Existing {
            link: link("eth1", "veth", 2, None),
            addrs: vec![Addr {
                net: addr.parse().unwrap(),
                tentative: false,
                dad_failed: false,
            }],
            record: Some(Record {
                spec: Entry::from_spec(&spec(addr)),
                label: "42".into(),
                labels: vec![],
                anchor: None,
                pending: None,
                created: vec![],
                ifname: "eth1".parse().unwrap(),
                kind: Kind::Veth,
                host_if: "br1".parse().unwrap(),
                host_ifname: Some("veth1pl42".parse().unwrap()),
                mac: None,
                netns: crate::domain::identity::NsKey { dev: 4, ino: 42 },
                host_ns: None,
                host_cookie: None,
                cookie: None,
                replaced_default: vec![],
                addrs: vec![addr.into()],
                persist: false,
                from_file: false,
            }),
            host_veth: Some(link("veth1pl42", "veth", 9, Some(5))),
            tag: "pipe:42:eth1".into(),
        }
    }

    fn ns() -> NsRef {
        NsRef::Named("42".into())
    }

    #[test]
    fn same_spec_is_a_noop() {
        let p = plan(
            &spec("10.0.0.2/24"),
            &facts(),
            &existing("10.0.0.2/24"),
            ns(),
            "42",
        )
        .unwrap();
        assert!(is_noop(&p), "{}", p.render());
    }

    #[test]
    fn new_address_replaces_the_recorded_one() {
        let p = plan(
            &spec("10.0.0.3/24"),
            &facts(),
            &existing("10.0.0.2/24"),
            ns(),
            "42",
        )
        .unwrap();
        let r = p.render();
        assert!(!is_noop(&p));
        assert!(r.contains("addr del 10.0.0.2/24 dev eth1"), "{r}");
        assert!(r.contains("addr add 10.0.0.3/24 dev eth1"), "{r}");
        // A foreign address stays.
        let mut ex = existing("10.0.0.2/24");
        ex.record.as_mut().unwrap().addrs.clear();
        let p = plan(&spec("10.0.0.3/24"), &facts(), &ex, ns(), "42").unwrap();
        assert!(!p.render().contains("addr del"), "{}", p.render());
    }

    #[test]
    fn conflicts_and_foreign_links_refused() {
        let mut f = facts();
        f.host = HostSide::Bridge(link("br2", "bridge", 6, None));
        let e = plan(&spec("0/0"), &f, &existing("10.0.0.2/24"), ns(), "42").unwrap_err();
        assert!(e.to_string().contains("not a port of bridge br2"), "{e}");
        assert!(e.to_string().contains("pipe detach 42 -i eth1"), "{e}");

        let mut f = facts();
        f.host = HostSide::Parent(link("eth0", "veth", 3, None));
        let e = plan(&spec("0/0"), &f, &existing("10.0.0.2/24"), ns(), "42").unwrap_err();
        assert!(e.to_string().contains("not a macvlan on eth0"), "{e}");

        let mut ex = existing("10.0.0.2/24");
        ex.record = None;
        ex.link.alias = None;
        let e = plan(&spec("0/0"), &facts(), &ex, ns(), "42").unwrap_err();
        assert!(e.to_string().contains("pipe did not create it"), "{e}");

        let mut s = spec("10.0.0.2/24");
        s.mac = Some(crate::domain::spec::Mac([2, 0, 0, 0, 0, 2]));
        let e = plan(&s, &facts(), &existing("10.0.0.2/24"), ns(), "42").unwrap_err();
        assert!(e.to_string().contains("MAC"), "{e}");
    }

    #[test]
    fn another_vlan_or_ipvlan_needs_another_link() {
        // Made for VLAN 100; asked again without a VLAN, and with VLAN 200.
        let mut ex = existing("10.0.0.2/24");
        ex.record.as_mut().unwrap().spec.vlan = Some(100);
        let e = plan(&spec("10.0.0.2/24"), &facts(), &ex, ns(), "42").unwrap_err();
        assert!(e.to_string().contains("in VLAN 100, not no VLAN"), "{e}");
        let mut s = spec("10.0.0.2/24");
        s.vlan = Some("200".parse().unwrap());
        let e = plan(&s, &facts(), &ex, ns(), "42").unwrap_err();
        assert!(e.to_string().contains("in VLAN 100, not VLAN 200"), "{e}");
        s.vlan = Some("100".parse().unwrap());
        assert!(is_noop(&plan(&s, &facts(), &ex, ns(), "42").unwrap()));

        // An ipvlan on eth0.100, asked again: no-op; as a macvlan or in l3: refused.
        let mut f = facts();
        f.host = HostSide::Parent(link("eth0", "veth", 3, None));
        f.vlan.sub = Some((
            "eth0.100".parse().unwrap(),
            crate::planning::vlan::SubIf::Reuse(link("eth0.100", "vlan", 4, None)),
        ));
        let mut ex = existing("10.0.0.2/24");
        ex.link = link("eth1", "ipvlan", 2, None);
        let r = ex.record.as_mut().unwrap();
        r.kind = Kind::Ipvlan;
        r.host_if = "eth0.100".parse().unwrap();
        r.host_ifname = None;
        r.spec.vlan = Some(100);
        r.spec.ipvlan = Some("l2".into());
        let mut s = spec("10.0.0.2/24");
        s.vlan = Some("100".parse().unwrap());
        s.ipvlan = Some(crate::domain::spec::IpvlanMode::L2);
        assert!(is_noop(&plan(&s, &f, &ex, ns(), "42").unwrap()));
        s.ipvlan = Some(crate::domain::spec::IpvlanMode::L3);
        let e = plan(&s, &f, &ex, ns(), "42").unwrap_err();
        assert!(e.to_string().contains("in ipvlan mode l2, not l3"), "{e}");
        s.ipvlan = None;
        let e = plan(&s, &f, &ex, ns(), "42").unwrap_err();
        assert!(e.to_string().contains("not a macvlan on eth0.100"), "{e}");
    }
}
