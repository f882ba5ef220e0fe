//! `pipe list`: every attachment pipe has a record of, checked against the
//! kernel, read-only. For each record: is its namespace still there (else
//! `stale`: gc would remove it), and does the kernel still show what the record
//! says (the interface, its MAC, its addresses, its default routes, the host
//! side): `live`, or `drifted` with what differs. Container names are labels:
//! Docker is asked whether a name still leads to the recorded namespace, and
//! when the Engine cannot be reached the names are shown as recorded (and said so).

use std::time::Duration;

use serde::Serialize;

use crate::domain::identity::{Kind, Record};
use crate::domain::spec::{AddrSpec, GuestRef, valid_netns_name};
use crate::sys::docker::{self, DockerError};
use crate::sys::netlink::Netlink;
use crate::sys::netns::{self, Netns, NsId};
use crate::sys::store::{Alive, host_here, state_dir};
use crate::verbs::detach::guest_socket;

/// The state of one attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The kernel matches the record.
    Live,
    /// The namespace lives but something differs (see `drift`).
    Drifted,
    /// The namespace is gone, or an attach was killed half-way: gc would remove it.
    Stale,
    /// An attach is under way right now.
    Pending,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Live => "live",
            State::Drifted => "drifted",
            State::Stale => "stale",
            State::Pending => "pending",
        }
    }

    pub const ALL: [&'static str; 4] = ["live", "drifted", "stale", "pending"];
}

impl std::str::FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<State, String> {
        Ok(match s {
            "live" => State::Live,
            "drifted" => State::Drifted,
            "stale" => State::Stale,
            "pending" => State::Pending,
            _ => {
                return Err(format!(
                    "{s:?} is not a state: live, drifted, stale or pending"
                ));
            }
        })
    }
}

/// One attachment as listed.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// How the operator named the container (Docker name, PID, netns name/path).
    pub container: String,
    /// Every other name it was given.
    pub labels: Vec<String>,
    /// The namespace's identity, `DEV:INO`.
    pub netns: String,
    pub ifname: String,
    /// bridge, macvlan, ipvlan, direct-phys or p2p.
    pub kind: String,
    /// The bridge or parent (for p2p: the peer's end).
    pub host_if: String,
    /// The host end of a veth.
    pub host_ifname: Option<String>,
    pub mac: Option<String>,
    pub addresses: Vec<String>,
    pub gateways: Vec<String>,
    pub vlan: Option<u16>,
    pub mtu: Option<u32>,
    pub rate: Option<String>,
    /// `--persist` or the attachments file: `pipe watch` applies it again.
    pub persist: bool,
    /// The `--host-shim` macvlan on the host, if any.
    pub host_shim: Option<String>,
    pub state: State,
    /// What differs (drifted) or why it is stale.
    pub drift: Vec<String>,
    /// What Docker says about the name, when asked.
    pub note: Option<String>,
}

impl Row {
    pub fn line(&self) -> String {
        let mut s = format!(
            "{:<8} {} {} {} {}",
            self.state.as_str(),
            self.container,
            self.ifname,
            self.kind,
            self.host_if
        );
        if let Some(h) = &self.host_ifname {
            s.push_str(&format!(" ({h})"));
        }
        if let Some(m) = &self.mac {
            s.push_str(&format!(" mac {m}"));
        }
        if self.addresses.is_empty() {
            s.push_str(" no address");
        } else {
            s.push_str(&format!(" addr {}", self.addresses.join(",")));
        }
        if !self.gateways.is_empty() {
            s.push_str(&format!(" via {}", self.gateways.join(",")));
        }
        if let Some(v) = self.vlan {
            s.push_str(&format!(" vlan {v}"));
        }
        if let Some(m) = self.mtu {
            s.push_str(&format!(" mtu {m}"));
        }
        if let Some(r) = &self.rate {
            s.push_str(&format!(" rate {r}"));
        }
        if let Some(h) = &self.host_shim {
            s.push_str(&format!(" shim {h}"));
        }
        if self.persist {
            s.push_str(" persist");
        }
        if !self.drift.is_empty() {
            s.push_str(&format!(" ({})", self.drift.join("; ")));
        }
        if let Some(n) = &self.note {
            s.push_str(&format!(" [{n}]"));
        }
        s
    }
}

/// What `pipe list` found.
#[derive(Debug, Default, Serialize)]
pub struct Listing {
    pub attachments: Vec<Row>,
    /// Records that could not be read (named by file), left as they are.
    pub errors: Vec<String>,
    /// Container names that could not be checked (the Engine is unreachable).
    pub unresolved: Vec<String>,
    /// Why they could not.
    pub unresolved_reason: Option<String>,
}

pub struct Filter {
    pub guest: Option<String>,
    pub state: Option<State>,
}

/// List the attachments (no change anywhere; a missing state dir lists nothing).
pub async fn list(f: &Filter) -> crate::domain::error::Result<Listing> {
    let mut out = Listing::default();
    // Read-only: a missing state directory is an empty list, not one to create.
    if !state_dir().is_dir() {
        return Ok(out);
    }
    // Listing only reads: it creates no state directory.
    let store = crate::verbs::detach::open_store_for(true)?;
    let host = Netlink::current().ok();
    let wanted_ns = f.guest.as_deref().and_then(ns_of_guest);
    let mut docker_down: Option<String> = None;
    for r in store.all() {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                out.errors.push(e);
                continue;
            }
        };
        if let Some(g) = &f.guest
            && !r.has_label(g)
            && wanted_ns.is_none_or(|n| NsId::from(r.netns) != n)
        {
            continue;
        }
        let mut row = check(&r, host.as_ref()).await;
        if f.state.is_some_and(|s| s != row.state) {
            continue;
        }
        if let Some(name) = docker_name(&r.label) {
            if docker_down.is_some() {
                out.unresolved.push(name.to_string());
            } else {
                match docker::resolve(name, Duration::ZERO).await {
                    Ok(c) => {
                        let p = std::path::PathBuf::from(format!("/proc/{}/ns/net", c.pid));
                        if !netns::path_is(&p, r.netns.into()) {
                            row.note = Some(format!(
                                "Docker's {name} is now another namespace (restarted or recreated)"
                            ));
                        }
                    }
                    Err(
                        e @ (DockerError::Unreachable { .. } | DockerError::UnsupportedHost { .. }),
                    ) => {
                        docker_down = Some(e.to_string());
                        out.unresolved.push(name.to_string());
                    }
                    Err(DockerError::NoSuchContainer { .. }) => {
                        row.note = Some(format!("Docker has no container {name} now"));
                    }
                    Err(DockerError::NotRunning { state, .. }) => {
                        row.note = Some(format!("Docker's {name} is {state}"));
                    }
                    Err(e) => row.note = Some(format!("Docker: {e}")),
                }
            }
        }
        out.attachments.push(row);
    }
    out.unresolved_reason = docker_down;
    Ok(out)
}

/// The namespace a GUEST names when that needs no Docker (PID, path, netns name).
fn ns_of_guest(g: &str) -> Option<NsId> {
    let p = match g.parse::<GuestRef>().ok()? {
        GuestRef::Pid(p) => std::path::PathBuf::from(format!("/proc/{p}/ns/net")),
        GuestRef::Path(p) => p,
        GuestRef::Name(n) if valid_netns_name(&n) => netns::link_path(&n),
        GuestRef::Name(_) => return None,
    };
    Netns::open(&p).ok().map(|n| n.id)
}

/// The label, if it is a Docker container name (not a PID, path or a netns name
/// that someone other than pipe made).
fn docker_name(label: &str) -> Option<&str> {
    match label.parse::<GuestRef>().ok()? {
        GuestRef::Name(n) => {
            let p = netns::link_path(&n);
            if valid_netns_name(&n)
                && p.symlink_metadata().is_ok()
                && !crate::sys::netns_link::created_by_pipe(&n)
            {
                None
            } else {
                Some(label)
            }
        }
        _ => None,
    }
}

fn kind_name(r: &Record) -> &'static str {
    match r.kind {
        Kind::Veth => "bridge",
        Kind::Macvlan => "macvlan",
        Kind::Ipvlan => "ipvlan",
        Kind::Phys => "direct-phys",
        Kind::P2p => "p2p",
    }
}

/// The row of a record, its state judged by the kernel.
pub async fn check(r: &Record, host: Option<&Netlink>) -> Row {
    let spec_addr: Option<AddrSpec> = r.spec.addr.parse().ok();
    let mut row = Row {
        container: r.label.clone(),
        labels: r
            .labels
            .iter()
            .filter(|l| **l != r.label)
            .cloned()
            .collect(),
        netns: format!("{}:{}", r.netns.dev, r.netns.ino),
        ifname: r.ifname.to_string(),
        kind: kind_name(r).to_string(),
        host_if: r.host_if.to_string(),
        host_ifname: r.host_ifname.as_ref().map(|n| n.to_string()),
        mac: r.mac.clone(),
        addresses: r.addrs.clone(),
        gateways: spec_addr
            .as_ref()
            .map(|a| a.gateways().iter().map(|g| g.to_string()).collect())
            .unwrap_or_default(),
        vlan: r.spec.vlan,
        mtu: r.spec.mtu,
        rate: r.spec.rate.clone(),
        persist: r.kept(),
        host_shim: r.shim().map(|s| s.to_string()),
        state: State::Live,
        drift: Vec::new(),
        note: None,
    };
    if let Some(dhcp) = spec_addr.as_ref().and_then(|a| a.dhcp) {
        row.note = Some(format!("addresses by {}", dhcp.as_str()));
    }
    if let Some(o) = r.pending {
        if o.alive() {
            row.state = State::Pending;
            row.drift.push(format!("attach under way by PID {}", o.pid));
        } else {
            row.state = State::Stale;
            row.drift
                .push("an attach was killed half-way; pipe gc removes what it left".into());
        }
        return row;
    }
    if !r.alive() {
        row.state = State::Stale;
        row.drift.push(if r.kept() {
            "container gone; pipe watch attaches it again at its next start".into()
        } else {
            "container gone; pipe gc removes the record".into()
        });
        return row;
    }
    let ns = netns::find(r.netns.into(), r.anchor.as_deref());
    let drift = match ns {
        None => vec!["namespace gone while listing".to_string()],
        Some(ns) => match guest_socket(&ns, &r.label) {
            Err(e) => vec![format!("cannot look inside: {e}")],
            Ok(nl) => guest_drift(r, &nl, spec_addr.as_ref()).await,
        },
    };
    row.drift = drift;
    if host_here(r) {
        if let Some(h) = host {
            row.drift.extend(host_drift(r, h).await);
        }
    } else {
        row.note = Some("host side in another namespace: not checked".into());
    }
    if !row.drift.is_empty() {
        row.state = State::Drifted;
    }
    row
}

fn expected_kind(k: Kind) -> Option<&'static str> {
    match k {
        Kind::Veth | Kind::P2p => Some("veth"),
        Kind::Macvlan => Some("macvlan"),
        Kind::Ipvlan => Some("ipvlan"),
        Kind::Phys => None,
    }
}

/// What differs inside the container.
async fn guest_drift(r: &Record, nl: &Netlink, spec: Option<&AddrSpec>) -> Vec<String> {
    let mut d = Vec::new();
    let l = match nl.link(r.ifname.as_str()).await {
        Ok(Some(l)) => l,
        Ok(None) => return vec![format!("interface {} missing", r.ifname)],
        Err(e) => return vec![format!("reading {}: {e}", r.ifname)],
    };
    if let Some(k) = expected_kind(r.kind)
        && l.kind.as_deref() != Some(k)
    {
        d.push(format!(
            "{} is a {}, not a {k}",
            r.ifname,
            l.kind.as_deref().unwrap_or("device")
        ));
    }
    if !l.up {
        d.push("down".into());
    }
    if let (Some(want), Some(have)) = (&r.mac, l.mac) {
        let have = have.to_string();
        if !want.eq_ignore_ascii_case(&have) {
            d.push(format!("mac {have}, recorded {want}"));
        }
    }
    if let Some(m) = r.spec.mtu
        && l.mtu != m
    {
        d.push(format!("mtu {}, asked {m}", l.mtu));
    }
    let have: Vec<String> = match nl.addresses(l.index).await {
        Ok(v) => v
            .into_iter()
            .filter(|a| !matches!(a.net.ip(), std::net::IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
            .map(|a| a.net.to_string())
            .collect(),
        Err(e) => {
            d.push(format!("reading addresses: {e}"));
            return d;
        }
    };
    for a in &r.addrs {
        if !have.contains(a) {
            d.push(format!("address {a} missing"));
        }
    }
    // Someone else's addresses on a DHCP interface are the client's, not drift.
    if spec.is_some_and(|s| s.dhcp.is_none()) {
        for a in &have {
            if !r.addrs.contains(a) {
                d.push(format!("extra address {a}"));
            }
        }
    }
    if let Some(s) = spec {
        for gw in s.gateways() {
            match nl.default_route(gw.is_ipv6(), 0).await {
                Ok(Some(rt)) if rt.gateway() == Some(gw) && rt.oif() == Some(l.index) => {}
                Ok(Some(rt)) => d.push(format!(
                    "default route via {}, not {gw} on {}",
                    rt.gateway()
                        .map(|g| g.to_string())
                        .unwrap_or("(none)".into()),
                    r.ifname
                )),
                Ok(None) => d.push(format!("no default route (recorded via {gw})")),
                Err(e) => d.push(format!("reading routes: {e}")),
            }
        }
    }
    d
}

/// What differs on the host side (bridge, parent, host end of the veth).
async fn host_drift(r: &Record, h: &Netlink) -> Vec<String> {
    let mut d = Vec::new();
    if matches!(r.kind, Kind::P2p | Kind::Phys) {
        return d;
    }
    let parent = match h.link(r.host_if.as_str()).await {
        Ok(Some(l)) => l,
        Ok(None) => return vec![format!("host interface {} missing", r.host_if)],
        Err(e) => return vec![format!("reading {}: {e}", r.host_if)],
    };
    if r.kind == Kind::Veth {
        if !parent.is_bridge() {
            d.push(format!("{} is no longer a bridge", r.host_if));
        }
        if let Some(hn) = &r.host_ifname {
            match h.link(hn.as_str()).await {
                Ok(Some(l)) => {
                    if l.master != Some(parent.index) {
                        d.push(format!("host end {hn} is not a port of {}", r.host_if));
                    }
                    if !l.up {
                        d.push(format!("host end {hn} down"));
                    }
                    if !r.id().owns(l.alias.as_deref()) {
                        d.push(format!("host end {hn} does not carry pipe's tag"));
                    }
                }
                Ok(None) => d.push(format!("host end {hn} missing")),
                Err(e) => d.push(format!("reading {hn}: {e}")),
            }
        }
    } else if !parent.up {
        d.push(format!("parent {} down", r.host_if));
    }
    if let Some(s) = r.shim() {
        match h.link(s.as_str()).await {
            Ok(Some(l)) if l.up => {}
            Ok(Some(_)) => d.push(format!("host shim {s} down")),
            Ok(None) => d.push(format!("host shim {s} missing")),
            Err(e) => d.push(format!("reading {s}: {e}")),
        }
    }
    d
}

/// The human output: one line per attachment, then notes (stderr is the caller's).
pub fn render(l: &Listing) -> (String, Vec<String>) {
    let mut s = String::new();
    for r in &l.attachments {
        s.push_str(&r.line());
        s.push('\n');
    }
    let mut notes: Vec<String> = l
        .errors
        .iter()
        .map(|e| format!("unreadable record {e} (left as it is)"))
        .collect();
    if !l.unresolved.is_empty() {
        notes.push(format!(
            "note: container names not checked with Docker ({}): {}; their state comes from the kernel",
            l.unresolved_reason.as_deref().unwrap_or("Engine unreachable"),
            l.unresolved.join(", ")
        ));
    }
    (s, notes)
}
