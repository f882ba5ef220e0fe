//! `pipe link GUEST_A ADDR_A GUEST_B ADDR_B`: a point-to-point veth between
//! two containers (the "point-to-point connection" recipe of Docker's docs).
//!
//! One netlink request creates both ends, each directly in its container's
//! namespace: no bridge, no host-side interface. Then each end gets its
//! address, is brought up, and gets a host route to the other end when the
//! other address is outside its own prefix (`10.1.1.1/32` <-> `10.1.1.2/32`).
//! Like an attach it is atomic: a failure deletes the pair again.

use std::fmt;
use std::net::IpAddr;
use std::os::fd::AsFd;

use ipnetwork::IpNetwork;
use log::debug;
use serde::Serialize;

use crate::domain::error::{Error, KernelCause, Result};
use crate::domain::identity::{AttachmentId, Created, Kind, Record};
use crate::domain::spec::{AddrSpec, GuestRef, IfName};
use crate::planning::attach::NsRef;
use crate::planning::ops::Teardown;
use crate::sys::guest::{self, Target};
use crate::sys::netlink::{Netlink, NewLink};
use crate::sys::netns;
use crate::sys::store::Alive;

/// A point-to-point link, fully parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSpec {
    pub a: GuestRef,
    pub addr_a: Option<IpNetwork>,
    pub b: GuestRef,
    pub addr_b: Option<IpNetwork>,
    pub ifname_a: IfName,
    pub ifname_b: IfName,
    pub mtu: Option<u32>,
}

impl LinkSpec {
    /// Check the two ADDR arguments: no gateways, one family.
    pub fn new(
        a: GuestRef,
        addr_a: AddrSpec,
        b: GuestRef,
        addr_b: AddrSpec,
        ifname_a: IfName,
        ifname_b: Option<IfName>,
        mtu: Option<u32>,
    ) -> Result<LinkSpec> {
        for (g, s) in [(&a, &addr_a), (&b, &addr_b)] {
            if let Some(gw) = s.gateway {
                return Err(Error::Usage(format!(
                    "@{gw} for {g}: a point-to-point link takes no gateway; add one afterwards with \
                     pipe route {g} replace default via ADDR"
                )));
            }
        }
        if let (Some(x), Some(y)) = (addr_a.addr, addr_b.addr) {
            if x.is_ipv4() != y.is_ipv4() {
                return Err(Error::Usage(format!(
                    "{x} and {y} are of different families; give both ends IPv4 or both IPv6 addresses"
                )));
            }
            if x.ip() == y.ip() {
                return Err(Error::Usage(format!(
                    "both ends would have {}; give each end its own address",
                    x.ip()
                )));
            }
        }
        if let Some(m) = mtu
            && !(68..=65535).contains(&m)
        {
            return Err(Error::Usage(format!(
                "MTU {m} is out of range; give a value from 68 to 65535"
            )));
        }
        Ok(LinkSpec {
            a,
            addr_a: addr_a.addr,
            b,
            addr_b: addr_b.addr,
            ifname_b: ifname_b.unwrap_or_else(|| ifname_a.clone()),
            ifname_a,
            mtu,
        })
    }
}

/// Which end a step acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    A,
    B,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    CreatePair {
        a: IfName,
        b: IfName,
        mtu: u32,
    },
    AddAddress {
        end: End,
        ifname: IfName,
        addr: IpNetwork,
    },
    /// Set the ownership alias (the kernel ignores it on RTM_NEWLINK) and bring it up.
    Up {
        end: End,
        ifname: IfName,
        tag: String,
    },
    /// `ip route replace PEER/32 dev IF scope link`: the peer is outside our prefix.
    PeerRoute {
        end: End,
        ifname: IfName,
        peer: IpAddr,
    },
}

/// Is `peer` reachable on-link through a prefix `own` already covers?
fn covered(own: Option<IpNetwork>, peer: IpAddr) -> bool {
    match own {
        Some(n) => {
            let full = if n.is_ipv4() { 32 } else { 128 };
            n.prefix() < full && n.contains(peer)
        }
        None => false,
    }
}

/// Pure: the steps of a link. `taken_*`: the name exists in that container.
pub fn plan(
    spec: &LinkSpec,
    taken_a: bool,
    taken_b: bool,
    (la, lb): (&str, &str),
    (tag_a, tag_b): (&str, &str),
) -> Result<Vec<Step>> {
    for (taken, name, label, opt) in [
        (taken_a, &spec.ifname_a, la, "-i"),
        (taken_b, &spec.ifname_b, lb, "--peer-ifname"),
    ] {
        if taken {
            return Err(Error::Refused(format!(
                "interface {name} already exists in container {label}; choose another name with {opt}"
            )));
        }
    }
    let mut steps = vec![Step::CreatePair {
        a: spec.ifname_a.clone(),
        b: spec.ifname_b.clone(),
        mtu: spec.mtu.unwrap_or(1500),
    }];
    for (end, ifname, addr, tag) in [
        (End::A, &spec.ifname_a, spec.addr_a, tag_a),
        (End::B, &spec.ifname_b, spec.addr_b, tag_b),
    ] {
        if let Some(addr) = addr {
            steps.push(Step::AddAddress {
                end,
                ifname: ifname.clone(),
                addr,
            });
        }
        steps.push(Step::Up {
            end,
            ifname: ifname.clone(),
            tag: tag.to_string(),
        });
    }
    for (end, ifname, own, peer) in [
        (End::A, &spec.ifname_a, spec.addr_a, spec.addr_b),
        (End::B, &spec.ifname_b, spec.addr_b, spec.addr_a),
    ] {
        if let Some(peer) = peer
            && own.is_some()
            && !covered(own, peer.ip())
        {
            steps.push(Step::PeerRoute {
                end,
                ifname: ifname.clone(),
                peer: peer.ip(),
            });
        }
    }
    Ok(steps)
}

/// The plan as `ip` commands.
pub fn render(steps: &[Step], a: &NsRef, b: &NsRef) -> String {
    let ns = |e: End| if e == End::A { a } else { b };
    let mut s = String::new();
    for st in steps {
        let line = match st {
            Step::CreatePair { a: na, b: nb, mtu } => format!(
                "ip link add {na} mtu {mtu} netns {} type veth peer name {nb} mtu {mtu} netns {}",
                a.netns_arg(),
                b.netns_arg()
            ),
            Step::AddAddress { end, ifname, addr } => {
                format!("{} addr add {addr} dev {ifname}", ns(*end).ip())
            }
            Step::Up { end, ifname, tag } => format!(
                "{} link set {ifname} alias {} up",
                ns(*end).ip(),
                crate::verbs::route_cmd::shell_quote(tag)
            ),
            Step::PeerRoute { end, ifname, peer } => {
                let len = if peer.is_ipv6() { 128 } else { 32 };
                format!(
                    "{} route replace {peer}/{len} dev {ifname} scope link",
                    ns(*end).ip()
                )
            }
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if *self == End::A { "A" } else { "B" })
    }
}

/// What `pipe link` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub a: String,
    pub ifname_a: String,
    pub address_a: Option<String>,
    pub b: String,
    pub ifname_b: String,
    pub address_b: Option<String>,
    /// The same link existed already (a re-run): nothing was changed.
    pub already_linked: bool,
}

impl Report {
    pub fn line(&self) -> String {
        format!(
            "{} {} addr {} <-> {} {} addr {}{}",
            self.a,
            self.ifname_a,
            self.address_a.as_deref().unwrap_or("none"),
            self.b,
            self.ifname_b,
            self.address_b.as_deref().unwrap_or("none"),
            if self.already_linked {
                " (already linked)"
            } else {
                ""
            }
        )
    }
}

fn ns_of(guest: &GuestRef, t: &Target) -> NsRef {
    crate::verbs::route_cmd::ns_ref(guest, t)
}

fn socket(t: &Target) -> Result<Netlink> {
    let sock = netns::socket_in(&t.netns).map_err(|e| {
        Error::kernel(
            format!("entering the network namespace of {}", t.label),
            KernelCause::from_io(&e),
        )
    })?;
    Netlink::from_socket(sock).map_err(|c| {
        Error::kernel(
            format!("opening a netlink socket in container {}", t.label),
            c,
        )
    })
}

async fn look(
    nl: &Netlink,
    name: &IfName,
    label: &str,
) -> Result<Option<crate::sys::netlink::Link>> {
    nl.link(name.as_str())
        .await
        .map_err(|c| Error::kernel(format!("looking up {name} in container {label}"), c))
}

/// Resolve, observe, plan, apply. Returns `None` on a dry run (the plan is printed).
pub async fn link(
    spec: &LinkSpec,
    timeout: std::time::Duration,
    dry_run: bool,
) -> Result<Option<Report>> {
    let (ta, tb) = futures::join!(
        guest::resolve(&spec.a, timeout),
        guest::resolve(&spec.b, timeout)
    );
    let (ta, tb) = (ta?, tb?);
    if ta.netns.id == tb.netns.id {
        return Err(Error::Usage(format!(
            "{} and {} share one network namespace; a point-to-point link needs two",
            ta.label, tb.label
        )));
    }
    let host =
        Netlink::current().map_err(|c| Error::kernel("opening a netlink socket on the host", c))?;
    let (ga, gb) = (socket(&ta)?, socket(&tb)?);
    let id_a = AttachmentId::new(ta.netns.id, spec.ifname_a.clone());
    let id_b = AttachmentId::new(tb.netns.id, spec.ifname_b.clone());
    let store = crate::verbs::detach::open_store_for(dry_run)?;
    let _lock = crate::verbs::detach::lock_unless_dry(&store, &id_a, dry_run)?;
    let old = crate::verbs::detach::load(&store, &id_a)?;
    let (xa, xb) = futures::join!(
        look(&ga, &spec.ifname_a, &ta.label),
        look(&gb, &spec.ifname_b, &tb.label)
    );
    let (xa, xb) = (xa?, xb?);
    let report = Report {
        a: ta.label.clone(),
        ifname_a: spec.ifname_a.to_string(),
        address_a: spec.addr_a.map(|a| a.to_string()),
        b: tb.label.clone(),
        ifname_b: spec.ifname_b.to_string(),
        address_b: spec.addr_b.map(|a| a.to_string()),
        already_linked: false,
    };
    // The same link again: both ends are there with their tags, and on record.
    if let (Some(a), Some(b), Some(r)) = (&xa, &xb, &old)
        && r.pending.is_none()
        && id_a.owns(a.alias.as_deref())
        && id_b.owns(b.alias.as_deref())
        && r.host_if == spec.ifname_b
    {
        if dry_run {
            println!("# already linked: nothing to do");
            return Ok(None);
        }
        return Ok(Some(Report {
            already_linked: true,
            ..report
        }));
    }
    if let Some(r) = &old
        && let Some(o) = r.pending
        && !dry_run
    {
        if o.alive() {
            return Err(Error::Refused(format!(
                "another pipe link of {} in {} is under way (pipe PID {}); try again when it is done",
                spec.ifname_a, ta.label, o.pid
            )));
        }
        let _ = crate::verbs::detach::collect(&store, &host, r, false).await;
    }
    let xa = look(&ga, &spec.ifname_a, &ta.label).await?;
    let steps = plan(
        spec,
        xa.is_some(),
        xb.is_some(),
        (&ta.label, &tb.label),
        (&id_a.tag(), &id_b.tag()),
    )?;
    if dry_run {
        print!(
            "{}",
            render(&steps, &ns_of(&spec.a, &ta), &ns_of(&spec.b, &tb))
        );
        return Ok(None);
    }
    // Journal before the kernel: end A (its peer goes with it) and who writes.
    let mut rec = Record {
        netns: ta.netns.id.into(),
        host_ns: netns::own_id().ok().map(Into::into),
        host_cookie: netns::own_cookie(),
        cookie: netns::cookie(&ta.netns),
        ifname: spec.ifname_a.clone(),
        label: ta.label.clone(),
        labels: vec![ta.label.clone(), spec.a.to_string()],
        anchor: None,
        pending: Some(crate::sys::store::owner_me()),
        created: vec![Created::GuestLink(spec.ifname_a.clone())],
        spec: crate::domain::attachments::Entry {
            container: spec.a.to_string(),
            host: spec.b.to_string(),
            addr: spec
                .addr_a
                .map(|a| a.to_string())
                .unwrap_or_else(|| "0/0".into()),
            ifname: Some(spec.ifname_a.to_string()),
            mac: None,
            vlan: None,
            host_ifname: Some(spec.ifname_b.to_string()),
            mtu: spec.mtu,
            macvlan_mode: None,
            ipvlan: None,
            direct_phys: false,
            rate: None,
            host_shim: false,
        },
        kind: Kind::P2p,
        host_if: spec.ifname_b.clone(),
        host_ifname: None,
        mac: None,
        replaced_default: Vec::new(),
        addrs: spec.addr_a.iter().map(|a| a.to_string()).collect(),
        persist: false,
        from_file: false,
    };
    if let GuestRef::Name(n) = &spec.a
        && netns::path_is(&netns::link_path(n), ta.netns.id)
    {
        rec.anchor = Some(netns::link_path(n));
    }
    store.save(&rec).map_err(|e| {
        Error::Refused(format!(
            "writing pipe's journal {}: {e}; nothing was changed",
            store.record_path(&id_a).display()
        ))
    })?;
    if let Err(e) = apply(spec, &steps, (&ta, &tb), &host, (&ga, &gb), &store).await {
        let _ = store.remove(&id_a);
        return Err(e);
    }
    rec.pending = None;
    if let Err(e) = store.save(&rec) {
        eprintln!(
            "pipe: note: linked, but could not write the record {}: {e}; pipe detach will need --force",
            store.record_path(&id_a).display()
        );
    }
    Ok(Some(report))
}

async fn apply(
    spec: &LinkSpec,
    steps: &[Step],
    (ta, tb): (&Target, &Target),
    host: &Netlink,
    (ga, gb): (&Netlink, &Netlink),
    store: &crate::sys::store::Store,
) -> Result<()> {
    let fail_after: Option<usize> = std::env::var("PIPE_FAIL_AFTER")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut created = false;
    let mut index = [0u32; 2];
    for (i, st) in steps.iter().enumerate() {
        debug!("link step: {st:?}");
        let r = step(spec, st, ta, tb, host, ga, gb, &mut index, &mut created).await;
        let r = match r {
            Ok(()) if fail_after == Some(i + 1) => Err(Error::Refused(format!(
                "failure injected after step {} (PIPE_FAIL_AFTER)",
                i + 1
            ))),
            r => r,
        };
        if let Err(cause) = r {
            // The one executor undoes it: deleting one end of a veth deletes the pair.
            let ops: Vec<Teardown> = if created {
                vec![Teardown::DeleteGuestLink {
                    name: spec.ifname_a.clone(),
                    owner: crate::planning::ops::Owner::ThisRun,
                }]
            } else {
                Vec::new()
            };
            let cx = crate::exec::Cx {
                host,
                guest: Some(ga),
                netns: Some(&ta.netns),
                label: &ta.label,
                store,
            };
            let undo_failures = crate::exec::teardown(&ops, &cx).await.failed;
            return Err(Error::RolledBack {
                cause: Box::new(cause),
                undo_failures,
            });
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn step(
    spec: &LinkSpec,
    st: &Step,
    ta: &Target,
    tb: &Target,
    host: &Netlink,
    ga: &Netlink,
    gb: &Netlink,
    index: &mut [u32; 2],
    created: &mut bool,
) -> Result<()> {
    let pick = |e: End| match e {
        End::A => (ga, &ta.label, 0usize),
        End::B => (gb, &tb.label, 1usize),
    };
    match st {
        Step::CreatePair { a, b, mtu } => {
            let la = NewLink {
                name: a.as_str(),
                mtu: Some(*mtu),
                netns: Some(ta.netns.fd.as_fd()),
                ..Default::default()
            };
            let lb = NewLink {
                name: b.as_str(),
                mtu: Some(*mtu),
                netns: Some(tb.netns.fd.as_fd()),
                ..Default::default()
            };
            host.create_veth(&la, &lb).await.map_err(|c| {
                Error::kernel(
                    format!(
                        "creating veth {a} (container {}) / {b} (container {})",
                        ta.label, tb.label
                    ),
                    c,
                )
            })?;
            *created = true;
            for (nl, name, label, i) in [(ga, a, &ta.label, 0), (gb, b, &tb.label, 1)] {
                index[i] = nl
                    .link(name.as_str())
                    .await
                    .map_err(|c| {
                        Error::kernel(format!("reading back {name} in container {label}"), c)
                    })?
                    .ok_or_else(|| {
                        Error::Refused(format!(
                            "{name} vanished from container {label} right after it was created"
                        ))
                    })?
                    .index;
            }
        }
        Step::AddAddress { end, ifname, addr } => {
            let (nl, label, i) = pick(*end);
            nl.add_address(index[i], *addr).await.map_err(|c| {
                Error::kernel(format!("adding {addr} to {ifname} in container {label}"), c)
            })?;
        }
        Step::Up { end, ifname, tag } => {
            let (nl, label, i) = pick(*end);
            nl.set_alias(index[i], tag, Some(true)).await.map_err(|c| {
                Error::kernel(format!("bringing {ifname} up in container {label}"), c)
            })?;
        }
        Step::PeerRoute { end, ifname, peer } => {
            let (nl, label, i) = pick(*end);
            nl.add_host_route(*peer, index[i]).await.map_err(|c| {
                Error::kernel(
                    format!("adding a route to {peer} on {ifname} in container {label}"),
                    c,
                )
            })?;
        }
    }
    let _ = spec;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(a: &str, b: &str) -> LinkSpec {
        LinkSpec::new(
            GuestRef::Name("a".into()),
            a.parse().unwrap(),
            GuestRef::Name("b".into()),
            b.parse().unwrap(),
            "eth1".parse().unwrap(),
            None,
            None,
        )
        .unwrap()
    }

    #[test]
    fn host_routes_only_when_the_peer_is_off_prefix() {
        let s = spec("10.1.1.1/32", "10.1.1.2/32");
        let p = plan(
            &s,
            false,
            false,
            ("a", "b"),
            ("pipe:1-2:eth1", "pipe:1-3:eth1"),
        )
        .unwrap();
        let r = render(&p, &NsRef::Named("a".into()), &NsRef::Named("b".into()));
        assert_eq!(
            r,
            "ip link add eth1 mtu 1500 netns a type veth peer name eth1 mtu 1500 netns b\n\
             ip -n a addr add 10.1.1.1/32 dev eth1\n\
             ip -n a link set eth1 alias pipe:1-2:eth1 up\n\
             ip -n b addr add 10.1.1.2/32 dev eth1\n\
             ip -n b link set eth1 alias pipe:1-3:eth1 up\n\
             ip -n a route replace 10.1.1.2/32 dev eth1 scope link\n\
             ip -n b route replace 10.1.1.1/32 dev eth1 scope link\n"
        );
        let s = spec("10.1.1.1/30", "10.1.1.2/30");
        let p = plan(
            &s,
            false,
            false,
            ("a", "b"),
            ("pipe:1-2:eth1", "pipe:1-3:eth1"),
        )
        .unwrap();
        assert!(
            !p.iter().any(|s| matches!(s, Step::PeerRoute { .. })),
            "{p:?}"
        );
        let s = spec("fd00::1/128", "fd00::2/128");
        let p = plan(
            &s,
            false,
            false,
            ("a", "b"),
            ("pipe:1-2:eth1", "pipe:1-3:eth1"),
        )
        .unwrap();
        assert_eq!(
            p.iter()
                .filter(|s| matches!(s, Step::PeerRoute { .. }))
                .count(),
            2
        );
    }

    #[test]
    fn refusals() {
        let g = |s: &str| GuestRef::Name(s.into());
        let e = LinkSpec::new(
            g("a"),
            "10.1.1.1/32@10.1.1.9".parse().unwrap(),
            g("b"),
            "10.1.1.2/32".parse().unwrap(),
            "eth1".parse().unwrap(),
            None,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no gateway"), "{e}");
        let e = LinkSpec::new(
            g("a"),
            "10.1.1.1/32".parse().unwrap(),
            g("b"),
            "fd00::2/128".parse().unwrap(),
            "eth1".parse().unwrap(),
            None,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("families"), "{e}");
        let e = LinkSpec::new(
            g("a"),
            "10.1.1.1/32".parse().unwrap(),
            g("b"),
            "10.1.1.1/32".parse().unwrap(),
            "eth1".parse().unwrap(),
            None,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("own address"), "{e}");
        let s = spec("10.1.1.1/32", "10.1.1.2/32");
        let e = plan(
            &s,
            false,
            true,
            ("a", "b"),
            ("pipe:1-2:eth1", "pipe:1-3:eth1"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--peer-ifname"), "{e}");
    }
}
