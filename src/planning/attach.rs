//! Pure planning: (spec, facts) -> ordered steps. No I/O.
//!
//! Every check that can fail without touching the host happens here, so bad
//! input is refused before the first change. `Display` renders a step as the
//! equivalent `ip` command for `--dry-run`.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::domain::error::{Error, Result};
use crate::domain::spec::{AttachSpec, IfName, IpvlanMode, Mac, MacvlanMode, VlanId};
use crate::planning::vlan::{BridgeVlan, SubIf, VlanFacts};
use crate::sys::netlink::{Link, Route};
use crate::sys::netns_link::LinkState;

/// What the host side looks like, as observed.
#[derive(Clone, Debug)]
pub enum HostSide {
    /// HOST_IF exists and is a Linux bridge.
    Bridge(Link),
    /// HOST_IF does not exist; its name starts with `br`, so we create it.
    NewBridge(IfName),
    /// HOST_IF exists and is not a bridge: the parent of a macvlan.
    Parent(Link),
    /// HOST_IF is an Open vSwitch bridge (`exists`), or a missing name
    /// starting with `ovs` that pipe creates in the OVSDB.
    Ovs { bridge: IfName, exists: bool },
}

/// Everything `plan` needs to know about the world, read before any change.
#[derive(Clone, Debug)]
pub struct Facts {
    pub host: HostSide,
    /// The host-side veth name we would use, and whether it is taken.
    pub host_veth: IfName,
    pub host_veth_taken: bool,
    /// The container's interface of that name, if it exists already.
    pub guest_ifname_taken: Option<Link>,
    /// The container's current default route of the gateway's family (metric 0).
    pub default_route: Option<Route>,
    /// Same for the second gateway (`ADDR@GW4,ADDR6@GW6`): the other family.
    pub default_route_more: Option<Route>,
    /// `/var/run/netns/NAME` and what is there now; `None` when not linking.
    pub netns_link: Option<(String, LinkState)>,
    /// `HOST_IF.VID` and bridge VLAN settings, when @VLAN is given.
    pub vlan: VlanFacts,
}

/// How commands refer to the container's namespace in `--dry-run` output.
#[derive(Clone, Debug)]
pub enum NsRef {
    Named(String),
    Path(String),
}

impl NsRef {
    pub fn ip(&self) -> String {
        match self {
            NsRef::Named(n) => format!("ip -n {n}"),
            NsRef::Path(p) => format!("nsenter --net={p} ip"),
        }
    }
    /// How to run any command inside the namespace.
    pub fn exec(&self) -> String {
        match self {
            NsRef::Named(n) => format!("ip netns exec {n}"),
            NsRef::Path(p) => format!("nsenter --net={p}"),
        }
    }
    pub fn netns_arg(&self) -> String {
        match self {
            NsRef::Named(n) => n.clone(),
            NsRef::Path(p) => p.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Step {
    /// Link the container's netns into /var/run/netns (replacing a stale link).
    LinkNetns {
        name: String,
        replace_stale: bool,
    },
    CreateBridge {
        name: IfName,
    },
    /// Bring an existing host link up (bridge or macvlan parent).
    HostUp {
        name: IfName,
        index: u32,
    },
    CreateVeth {
        host: IfName,
        guest: IfName,
        bridge: IfName,
        /// `None`: the bridge is created by an earlier step of this plan.
        bridge_index: Option<u32>,
        /// The container end's MTU.
        mtu: u32,
        /// The host end's: the bridge's own MTU when `--mtu` is lower, so one
        /// port's smaller MTU does not lower the bridge (the kernel gives a
        /// bridge the smallest MTU of its ports).
        host_mtu: u32,
        mac: Option<Mac>,
        /// `bridge` is an Open vSwitch bridge: no kernel master (a later
        /// [`Step::OvsPort`] adds the host end to it).
        ovs: bool,
    },
    CreateMacvlan {
        parent: IfName,
        /// `None`: the parent (a VLAN sub-interface) is created by an earlier step.
        parent_index: Option<u32>,
        guest: IfName,
        mode: MacvlanMode,
        mtu: u32,
        mac: Option<Mac>,
    },
    /// The 802.1Q sub-interface `name` (`PARENT.VID`) on the host, created up.
    CreateVlan {
        name: IfName,
        parent: IfName,
        parent_index: u32,
        vid: VlanId,
        mtu: u32,
    },
    CreateIpvlan {
        parent: IfName,
        /// `None`: the parent (a VLAN sub-interface) is created by an earlier step.
        parent_index: Option<u32>,
        guest: IfName,
        mode: IpvlanMode,
        mtu: u32,
    },
    /// `--direct-phys`: move a host link into the container as `guest`, its
    /// old name in the alias; rollback moves it back as it was.
    MoveToGuest {
        host: IfName,
        /// `None`: the link (a VLAN sub-interface) is created by an earlier step.
        index: Option<u32>,
        guest: IfName,
        mtu: Option<u32>,
        mac: Option<Mac>,
        /// What to put back on rollback.
        old_mtu: u32,
        old_mac: Option<Mac>,
        old_alias: Option<String>,
        old_up: bool,
    },
    /// Turn on VLAN filtering on a bridge (undone on rollback if it was off).
    BridgeVlanFiltering {
        bridge: IfName,
        /// `None`: the bridge is created by an earlier step of this plan.
        index: Option<u32>,
    },
    /// Make a bridge port an access port: PVID `vid`, egress untagged, and
    /// out of the bridge's default VLAN `drop_vid`.
    BridgeAccessPort {
        port: IfName,
        vid: VlanId,
        drop_vid: Option<u16>,
    },
    /// Create the Open vSwitch bridge `name` in the OVSDB (joined if another
    /// run created it first); rollback deletes it if it has no port then.
    CreateOvsBridge {
        name: IfName,
    },
    /// Make host link `port` a port of Open vSwitch bridge `bridge` (an
    /// access port of VLAN `tag`), its `external_ids` naming the attachment.
    OvsPort {
        bridge: IfName,
        port: IfName,
        tag: Option<VlanId>,
    },
    AddAddress {
        ifname: IfName,
        addr: IpNetwork,
    },
    /// A /32 or /128 route so that an off-subnet gateway is reachable.
    AddGatewayRoute {
        ifname: IfName,
        gateway: IpAddr,
    },
    ReplaceDefault {
        ifname: IfName,
        gateway: IpAddr,
        previous: Option<Route>,
    },
    /// Re-run: keep the container interface pipe made earlier (no change).
    Adopt {
        link: Link,
    },
    /// Re-run with another address: remove the one pipe set before.
    DeleteAddress {
        ifname: IfName,
        addr: IpNetwork,
    },
    /// `sysctl net.ipv6.conf.IF.accept_ra=0` inside the container. No undo:
    /// the setting belongs to the interface this run created.
    AcceptRaOff {
        ifname: IfName,
    },
    /// `--rate`: a token bucket as the root qdisc of the container's interface
    /// (its egress). No undo: it goes with the interface this run created.
    Shape {
        ifname: IfName,
        rate: crate::domain::rate::Rate,
        /// Bucket size and queue limit, bytes.
        burst: u32,
        limit: u32,
    },
    /// Obtain an IPv4 lease (pipe's client, or run pipework's client binary),
    /// set address and default route from it, and (own client) start the
    /// lease keeper.
    Dhcp {
        ifname: IfName,
        client: crate::domain::spec::DhcpClient,
        previous: Option<Route>,
    },
    /// `--host-shim`: the shared host-side sibling `name` of the container's
    /// link on its parent (a macvlan in bridge mode, or an ipvlan in the
    /// container's mode), created up and tagged `pipe:shared`, or joined if it exists.
    EnsureShim {
        name: IfName,
        parent: IfName,
        /// `None`: the parent (a VLAN sub-interface) is created by an earlier step.
        parent_index: Option<u32>,
        /// `Some`: the container's link is an ipvlan of this mode (a parent
        /// carries macvlans or ipvlans, never both, and one ipvlan mode).
        ipvlan: Option<IpvlanMode>,
    },
    /// `--host-shim`: the host's /32 (/128) route to a container address through the shim.
    ShimRoute {
        shim: IfName,
        dst: IpAddr,
    },
    /// `--host-shim` re-run: the host route to an address the container no longer has.
    ShimUnroute {
        shim: IfName,
        dst: IpAddr,
    },
    /// Tell the link that `addr` now lives at this interface's MAC: one
    /// gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6).
    /// Last, so nothing is announced for an attach that is rolled back.
    Announce {
        ifname: IfName,
        addr: IpAddr,
    },
}

/// The ordered steps of one attachment plus what to report when done.
#[derive(Clone, Debug)]
pub struct Plan {
    pub ns: NsRef,
    pub steps: Vec<Step>,
    pub ifname: IfName,
    pub host_ifname: Option<IfName>,
    pub host_if: IfName,
    pub kind: &'static str,
}

impl Plan {
    /// The whole plan as shell commands, one per line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for st in &self.steps {
            s.push_str(&st.render(&self.ns));
            s.push('\n');
        }
        s
    }
}

/// Plan one attachment. `ns` says how to name the container in rendered commands.
pub fn plan(spec: &AttachSpec, facts: &Facts, ns: NsRef) -> Result<Plan> {
    if let Some(l) = &facts.guest_ifname_taken {
        return Err(Error::Refused(format!(
            "interface {} already exists in container {}; choose another name with -i",
            l.name,
            ns.netns_arg()
        )));
    }
    if let Some(mtu) = spec.mtu
        && !(68..=65535).contains(&mtu)
    {
        return Err(Error::Usage(format!(
            "MTU {mtu} is out of range; give a value from 68 to 65535"
        )));
    }

    let mut steps = Vec::new();
    if let Some((name, state)) = &facts.netns_link {
        match state {
            LinkState::Same => {}
            LinkState::Missing => steps.push(Step::LinkNetns {
                name: name.clone(),
                replace_stale: false,
            }),
            LinkState::Stale => steps.push(Step::LinkNetns {
                name: name.clone(),
                replace_stale: true,
            }),
            LinkState::Other => {
                return Err(Error::Refused(format!(
                    "{}/{name} already links to another live network namespace; \
                     remove it (ip netns delete {name}) or pass --no-netns-link",
                    crate::sys::netns::NETNS_RUN_DIR
                )));
            }
        }
    }

    let (kind, host_if, host_ifname);
    match &facts.host {
        HostSide::Bridge(_) | HostSide::NewBridge(_) => {
            let bname = match &facts.host {
                HostSide::Bridge(b) => b.name.clone(),
                HostSide::NewBridge(n) => n.to_string(),
                _ => unreachable!(),
            };
            if spec.ipvlan.is_some() {
                return Err(Error::Usage(format!(
                    "--ipvlan needs a host interface that is not a bridge, and {bname} is one; \
                     drop --ipvlan to connect a veth to {bname}, or give the bridge's uplink"
                )));
            }
            if spec.direct_phys {
                return Err(Error::Usage(format!(
                    "--direct-phys moves a host interface into the container, and bridge {bname} \
                     cannot leave the host; drop --direct-phys to connect a veth to {bname}"
                )));
            }
            let (bridge, bridge_index, bridge_mtu) = match &facts.host {
                HostSide::Bridge(b) => {
                    let name: IfName = b.name.parse().map_err(Error::Refused)?;
                    if !b.up {
                        steps.push(Step::HostUp {
                            name: name.clone(),
                            index: b.index,
                        });
                    }
                    (name, Some(b.index), b.mtu)
                }
                HostSide::NewBridge(n) => {
                    steps.push(Step::CreateBridge { name: n.clone() });
                    (n.clone(), None, 1500)
                }
                _ => unreachable!(),
            };
            if facts.host_veth_taken {
                return Err(Error::Refused(format!(
                    "host interface {} already exists; choose another host-side name with -l",
                    facts.host_veth
                )));
            }
            let bvlan = match &facts.host {
                HostSide::NewBridge(_) => BridgeVlan::new_bridge(),
                _ => facts.vlan.bridge.unwrap_or_else(BridgeVlan::new_bridge),
            };
            if spec.vlan.is_some() && !bvlan.filtering {
                steps.push(Step::BridgeVlanFiltering {
                    bridge: bridge.clone(),
                    index: bridge_index,
                });
            }
            steps.push(Step::CreateVeth {
                host: facts.host_veth.clone(),
                guest: spec.ifname.clone(),
                bridge: bridge.clone(),
                bridge_index,
                mtu: spec.mtu.unwrap_or(bridge_mtu),
                host_mtu: match (&facts.host, spec.mtu) {
                    (HostSide::Bridge(_), Some(m)) => m.max(bridge_mtu),
                    (_, m) => m.unwrap_or(bridge_mtu),
                },
                mac: spec.mac,
                ovs: false,
            });
            if let Some(vid) = spec.vlan {
                let d = bvlan.default_pvid;
                steps.push(Step::BridgeAccessPort {
                    port: facts.host_veth.clone(),
                    vid,
                    drop_vid: (d != 0 && d != vid.get()).then_some(d),
                });
            }
            kind = "veth";
            host_if = bridge;
            host_ifname = Some(facts.host_veth.clone());
        }
        HostSide::Ovs { bridge, exists } => {
            plan_ovs(spec, facts, bridge, *exists, &mut steps)?;
            kind = "veth";
            host_if = bridge.clone();
            host_ifname = Some(facts.host_veth.clone());
        }
        HostSide::Parent(p) => {
            let (k, lower) = plan_parent(spec, facts, p, &mut steps)?;
            kind = k;
            host_if = lower;
            host_ifname = None;
        }
    }

    if spec.host_shim {
        plan_shim(spec, &host_if, &mut steps)?;
    }

    let gateways = spec.addr.gateways();
    // A static IPv6 gateway: router advertisements must not add another
    // default route (or addresses) behind its back.
    if gateways.iter().any(IpAddr::is_ipv6) {
        steps.push(Step::AcceptRaOff {
            ifname: spec.ifname.clone(),
        });
    }
    for addr in spec.addr.all() {
        steps.push(Step::AddAddress {
            ifname: spec.ifname.clone(),
            addr,
        });
    }
    for (i, gw) in gateways.into_iter().enumerate() {
        if !spec
            .addr
            .all()
            .iter()
            .any(|a| gateway_on_link(Some(*a), gw))
            && !gateway_on_link(None, gw)
        {
            steps.push(Step::AddGatewayRoute {
                ifname: spec.ifname.clone(),
                gateway: gw,
            });
        }
        steps.push(Step::ReplaceDefault {
            ifname: spec.ifname.clone(),
            gateway: gw,
            previous: if i == 0 {
                facts.default_route.clone()
            } else {
                facts.default_route_more.clone()
            },
        });
    }
    if let Some(rate) = spec.rate {
        // The MTU the new interface gets decides the smallest usable bucket.
        let mtu = steps
            .iter()
            .find_map(|s| match s {
                Step::CreateVeth { mtu, .. }
                | Step::CreateMacvlan { mtu, .. }
                | Step::CreateIpvlan { mtu, .. } => Some(*mtu),
                Step::MoveToGuest { mtu, old_mtu, .. } => Some(mtu.unwrap_or(*old_mtu)),
                _ => None,
            })
            .or(spec.mtu)
            .unwrap_or(1500);
        let (burst, limit) = crate::domain::rate::tbf(rate, mtu).map_err(Error::Usage)?;
        steps.push(Step::Shape {
            ifname: spec.ifname.clone(),
            rate,
            burst,
            limit,
        });
    }
    if let Some(client) = spec.addr.dhcp {
        steps.push(Step::Dhcp {
            ifname: spec.ifname.clone(),
            client,
            previous: facts.default_route.clone(),
        });
    }
    // An ipvlan in l3/l3s mode has no ARP: there is nothing to announce.
    let arp = !matches!(spec.ipvlan, Some(IpvlanMode::L3 | IpvlanMode::L3s));
    for addr in spec.addr.all().into_iter().filter(|_| arp) {
        steps.push(Step::Announce {
            ifname: spec.ifname.clone(),
            addr: addr.ip(),
        });
    }

    Ok(Plan {
        ns,
        steps,
        ifname: spec.ifname.clone(),
        host_ifname,
        host_if,
        kind,
    })
}

/// The steps for a host interface that is not a bridge: macvlan or ipvlan on
/// it or on its 802.1Q sub-interface, or the interface itself moved in
/// (`--direct-phys`). Returns the kind and the interface the child hangs on.
fn plan_parent(
    spec: &AttachSpec,
    facts: &Facts,
    p: &Link,
    steps: &mut Vec<Step>,
) -> Result<(&'static str, IfName)> {
    let parent: IfName = p.name.parse().map_err(Error::Refused)?;
    if spec.ipvlan.is_some() && spec.mac.is_some() {
        return Err(Error::Usage(format!(
            "an ipvlan shares the MAC address of its parent {parent}, so no MAC can be given; \
             drop the MAC argument, or drop --ipvlan to get a macvlan with its own MAC"
        )));
    }
    if spec.ipvlan.is_none()
        && !spec.direct_phys
        && spec.mac.is_some()
        && spec.macvlan_mode == MacvlanMode::Passthru
    {
        return Err(Error::Usage(
            "a passthru macvlan takes the MAC of its parent; drop the MAC argument or use another --macvlan-mode"
                .into(),
        ));
    }
    if spec.direct_phys && spec.vlan.is_none() {
        if let Some(m) = p.master {
            return Err(Error::Refused(format!(
                "{parent} is a port of another interface (index {m}), and moving it into the container \
                 would take it out; release it first (ip link set {parent} nomaster)"
            )));
        }
        steps.push(Step::MoveToGuest {
            host: parent.clone(),
            index: Some(p.index),
            guest: spec.ifname.clone(),
            mtu: spec.mtu,
            mac: spec.mac,
            old_mtu: p.mtu,
            old_mac: p.mac,
            old_alias: p.alias.clone(),
            old_up: p.up,
        });
        return Ok(("phys", parent));
    }
    if !p.up {
        steps.push(Step::HostUp {
            name: parent.clone(),
            index: p.index,
        });
    }
    // The lower device of the new link: HOST_IF, or HOST_IF.VID (made if missing).
    let (lower, lower_index, lower_mtu) = match spec.vlan {
        None => (parent.clone(), Some(p.index), p.mtu),
        Some(vid) => {
            let Some((sub, state)) = &facts.vlan.sub else {
                return Err(Error::Refused(
                    "internal: @VLAN given but the sub-interface was not observed".into(),
                ));
            };
            match state {
                SubIf::Squatter(what) => {
                    return Err(Error::Refused(format!(
                        "{sub} exists but is {what}, not 802.1Q VLAN {vid} on {parent}; \
                         rename or remove it (ip link del {sub}), or give another HOST_IF"
                    )));
                }
                SubIf::Reuse(l) => {
                    if spec.direct_phys {
                        if let Some(mtu) = spec.mtu {
                            check_lower_mtu(mtu, p.mtu, &parent, "an 802.1Q device")?;
                        }
                        steps.push(Step::MoveToGuest {
                            host: sub.clone(),
                            index: Some(l.index),
                            guest: spec.ifname.clone(),
                            mtu: spec.mtu,
                            mac: spec.mac,
                            old_mtu: l.mtu,
                            old_mac: l.mac,
                            old_alias: l.alias.clone(),
                            old_up: l.up,
                        });
                        return Ok(("phys", sub.clone()));
                    }
                    if !l.up {
                        steps.push(Step::HostUp {
                            name: sub.clone(),
                            index: l.index,
                        });
                    }
                    (sub.clone(), Some(l.index), l.mtu)
                }
                SubIf::Missing if spec.direct_phys => {
                    // Made on the host under its usual name, then moved: the
                    // alias says where it goes back to, as for an existing one.
                    let mtu = spec.mtu.unwrap_or(p.mtu);
                    check_lower_mtu(mtu, p.mtu, &parent, "an 802.1Q device")?;
                    steps.push(Step::CreateVlan {
                        name: sub.clone(),
                        parent: parent.clone(),
                        parent_index: p.index,
                        vid,
                        mtu: p.mtu,
                    });
                    steps.push(Step::MoveToGuest {
                        host: sub.clone(),
                        index: None,
                        guest: spec.ifname.clone(),
                        mtu: spec.mtu,
                        mac: spec.mac,
                        old_mtu: p.mtu,
                        old_mac: None,
                        old_alias: None,
                        old_up: true,
                    });
                    return Ok(("phys", sub.clone()));
                }
                SubIf::Missing => {
                    steps.push(Step::CreateVlan {
                        name: sub.clone(),
                        parent: parent.clone(),
                        parent_index: p.index,
                        vid,
                        mtu: p.mtu,
                    });
                    (sub.clone(), None, p.mtu)
                }
            }
        }
    };
    let mtu = spec.mtu.unwrap_or(lower_mtu);
    match spec.ipvlan {
        Some(mode) => {
            check_lower_mtu(mtu, lower_mtu, &lower, "an ipvlan")?;
            steps.push(Step::CreateIpvlan {
                parent: lower.clone(),
                parent_index: lower_index,
                guest: spec.ifname.clone(),
                mode,
                mtu,
            });
            Ok(("ipvlan", lower))
        }
        None => {
            check_lower_mtu(mtu, lower_mtu, &lower, "a macvlan")?;
            steps.push(Step::CreateMacvlan {
                parent: lower.clone(),
                parent_index: lower_index,
                guest: spec.ifname.clone(),
                mode: spec.macvlan_mode,
                mtu,
                mac: spec.mac,
            });
            Ok(("macvlan", lower))
        }
    }
}

/// A child link (macvlan, ipvlan, 802.1Q) cannot have a larger MTU than its lower device.
fn check_lower_mtu(mtu: u32, lower_mtu: u32, lower: &IfName, what: &str) -> Result<()> {
    if mtu > lower_mtu {
        return Err(Error::Refused(format!(
            "MTU {mtu} is larger than the MTU {lower_mtu} of {lower}, which {what} cannot exceed; \
             use --mtu {lower_mtu} or less, or raise the MTU of {lower}"
        )));
    }
    Ok(())
}

/// Is `gw` inside a subnet the new interface is on? Its only subnets are the
/// address we give it and, for IPv6, the link-local fe80::/64.
pub fn gateway_on_link(addr: Option<IpNetwork>, gw: IpAddr) -> bool {
    if let IpAddr::V6(v6) = gw
        && v6.segments()[0] & 0xffc0 == 0xfe80
    {
        return true;
    }
    match addr {
        Some(net) => net.prefix() < net.max_prefix_len_bits() && net.contains(gw),
        None => false,
    }
}

trait MaxPrefix {
    fn max_prefix_len_bits(&self) -> u8;
}

impl MaxPrefix for IpNetwork {
    fn max_prefix_len_bits(&self) -> u8 {
        if self.is_ipv4() { 32 } else { 128 }
    }
}

impl Step {
    pub fn render(&self, ns: &NsRef) -> String {
        let ip = ns.ip();
        match self {
            Step::LinkNetns {
                name,
                replace_stale,
            } => {
                let pre = if *replace_stale {
                    format!("ip netns delete {name} && ")
                } else {
                    String::new()
                };
                format!("{pre}ip netns attach {name} {}", ns.netns_arg())
            }
            Step::CreateBridge { name } => {
                format!("ip link add {name} type bridge && ip link set {name} up")
            }
            Step::HostUp { name, .. } => format!("ip link set {name} up"),
            Step::CreateVeth {
                host,
                guest,
                bridge,
                mtu,
                host_mtu,
                mac,
                ovs,
                ..
            } => format!(
                "ip link add {host} mtu {host_mtu}{} up type veth peer name {guest} mtu {mtu}{} netns {} && {ip} link set {guest} up",
                if *ovs {
                    String::new()
                } else {
                    format!(" master {bridge}")
                },
                mac.map(|m| format!(" address {m}")).unwrap_or_default(),
                ns.netns_arg()
            ),
            Step::CreateOvsBridge { name } => format!("ovs-vsctl --may-exist add-br {name}"),
            Step::OvsPort { bridge, port, tag } => format!(
                "ovs-vsctl add-port {bridge} {port}{} -- set port {port} external_ids:{}=ATTACHMENT",
                tag.map(|t| format!(" tag={t}")).unwrap_or_default(),
                crate::sys::ovsdb::OWNER_KEY
            ),
            Step::CreateMacvlan {
                parent,
                guest,
                mode,
                mtu,
                mac,
                ..
            } => format!(
                "ip link add link {parent} name {guest} netns {} mtu {mtu}{} type macvlan mode {} && {ip} link set {guest} up",
                ns.netns_arg(),
                mac.map(|m| format!(" address {m}")).unwrap_or_default(),
                mode.as_str()
            ),
            Step::CreateVlan {
                name,
                parent,
                vid,
                mtu,
                ..
            } => format!(
                "ip link add link {parent} name {name} mtu {mtu} type vlan id {vid} && ip link set {name} up"
            ),
            Step::CreateIpvlan {
                parent,
                guest,
                mode,
                mtu,
                ..
            } => format!(
                "ip link add link {parent} name {guest} netns {} mtu {mtu} type ipvlan mode {} && {ip} link set {guest} up",
                ns.netns_arg(),
                mode.as_str()
            ),
            Step::MoveToGuest {
                host,
                guest,
                mtu,
                mac,
                ..
            } => format!(
                "ip link set {host} netns {} name {guest} alias {host}{}{} && {ip} link set {guest} up",
                ns.netns_arg(),
                mtu.map(|m| format!(" mtu {m}")).unwrap_or_default(),
                mac.map(|m| format!(" address {m}")).unwrap_or_default(),
            ),
            Step::BridgeVlanFiltering { bridge, .. } => {
                format!("ip link set {bridge} type bridge vlan_filtering 1")
            }
            Step::BridgeAccessPort {
                port,
                vid,
                drop_vid,
            } => {
                let mut c = format!("bridge vlan add dev {port} vid {vid} pvid untagged");
                if let Some(d) = drop_vid {
                    c.push_str(&format!(" && bridge vlan del dev {port} vid {d}"));
                }
                c
            }
            Step::AddAddress { ifname, addr } => format!("{ip} addr add {addr} dev {ifname}"),
            Step::AddGatewayRoute { ifname, gateway } => {
                let len = if gateway.is_ipv6() { 128 } else { 32 };
                format!("{ip} route replace {gateway}/{len} dev {ifname} scope link")
            }
            Step::ReplaceDefault {
                ifname, gateway, ..
            } => {
                let fam = if gateway.is_ipv6() { "-6 " } else { "" };
                format!("{ip} {fam}route replace default via {gateway} dev {ifname}")
            }
            Step::Adopt { link } => format!("# {} exists already (made by pipe): kept", link.name),
            Step::DeleteAddress { ifname, addr } => format!("{ip} addr del {addr} dev {ifname}"),
            // The same packet as these tools send (pipe sends it itself).
            Step::AcceptRaOff { ifname } => format!(
                "{} sysctl -qw net.ipv6.conf.{ifname}.accept_ra=0",
                ns.exec()
            ),
            Step::Shape {
                ifname,
                rate,
                burst,
                limit,
            } => format!(
                "{} tc qdisc replace dev {ifname} root tbf rate {}bit burst {burst} limit {limit}",
                ns.exec(),
                rate.bytes_per_sec * 8
            ),
            Step::Dhcp { ifname, client, .. } => {
                let name = crate::sys::dhcp_ext::hostname(&ns.netns_arg())
                    .unwrap_or_else(|| "container".into());
                let argv = crate::sys::dhcp_ext::argv(*client, ifname.as_str(), &name, "PIDFILE");
                let cmd = argv.join(" ");
                match client {
                    crate::domain::spec::DhcpClient::Native => format!(
                        "{} {cmd}  # pipe's own client does this, then renews the lease in the background",
                        ns.exec()
                    ),
                    _ => format!("{} {cmd}", ns.exec()),
                }
            }
            Step::EnsureShim {
                name,
                parent,
                ipvlan,
                ..
            } => format!(
                "ip link add {name} link {parent} up type {} && ip link set {name} alias pipe:shared (unless it exists)",
                match ipvlan {
                    Some(m) => format!("ipvlan mode {}", m.as_str()),
                    None => "macvlan mode bridge".to_string(),
                }
            ),
            Step::ShimRoute { shim, dst } => format!(
                "ip route replace {dst}/{} dev {shim} scope link",
                if dst.is_ipv6() { 128 } else { 32 }
            ),
            Step::ShimUnroute { shim, dst } => format!(
                "ip route del {dst}/{} dev {shim}",
                if dst.is_ipv6() { 128 } else { 32 }
            ),
            Step::Announce { ifname, addr } => match addr {
                IpAddr::V4(a) => format!("{} arping -c 1 -U -I {ifname} {a}", ns.exec()),
                IpAddr::V6(a) => format!("{} ndsend {a} {ifname}", ns.exec()),
            },
        }
    }
}

/// The name of the `--host-shim` macvlan on `parent`: `shim-PARENT`, or
/// `shim` + a stable hash of the parent's name when that would exceed 15 bytes.
pub fn shim_name(parent: &IfName) -> IfName {
    let n = format!("shim-{parent}");
    if n.len() <= 15 {
        return n.parse().expect("a valid name");
    }
    // FNV-1a: stable across runs and versions (unlike std's hasher).
    let h = parent.as_str().bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    format!("shim{:011x}", h & 0xfff_ffff_ffff)
        .parse()
        .expect("a valid name")
}

/// `--host-shim` steps after the macvlan or ipvlan: the shim on the same
/// parent, then a host route per address (added after the addresses, before
/// the default route).
fn plan_shim(spec: &AttachSpec, parent: &IfName, steps: &mut Vec<Step>) -> Result<()> {
    let Some((parent_index, ipvlan)) = steps.iter().find_map(|s| match s {
        Step::CreateMacvlan { parent_index, .. } => Some((*parent_index, None)),
        Step::CreateIpvlan {
            parent_index, mode, ..
        } => Some((*parent_index, Some(*mode))),
        _ => None,
    }) else {
        return Err(Error::Usage(
            "--host-shim is for a macvlan or ipvlan (HOST_IF not a bridge, without --direct-phys); drop it"
                .into(),
        ));
    };
    if ipvlan == Some(IpvlanMode::L2) {
        // All l2 siblings share the parent's MAC: the container's ARP reply to
        // the shim is delivered to the parent, and the shim never resolves it.
        return Err(Error::Usage(format!(
            "--host-shim works with --ipvlan l3 or l3s, not l2 (ipvlan l2 siblings share {parent}'s MAC, \
             so the shim cannot resolve the container); use --ipvlan l3, or a macvlan (drop --ipvlan)"
        )));
    }
    if ipvlan.is_none() && spec.macvlan_mode != MacvlanMode::Bridge {
        return Err(Error::Usage(format!(
            "--host-shim needs macvlan mode bridge (the shim and the container are siblings on {parent}), not {}; drop --macvlan-mode or --host-shim",
            spec.macvlan_mode.as_str()
        )));
    }
    let addrs = spec.addr.all();
    if addrs.is_empty() {
        return Err(Error::Usage(
            "--host-shim routes the container's addresses through the shim and needs static ones (not 0/0 or DHCP); give an address or drop --host-shim".into(),
        ));
    }
    let name = shim_name(parent);
    steps.push(Step::EnsureShim {
        name: name.clone(),
        parent: parent.clone(),
        parent_index,
        ipvlan,
    });
    for a in addrs {
        steps.push(Step::ShimRoute {
            shim: name.clone(),
            dst: a.ip(),
        });
    }
    Ok(())
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.render(&NsRef::Named("CONTAINER".into()));
        f.write_str(&s)
    }
}

/// Open vSwitch: a veth whose host end becomes an OVS port (`@VLAN` its access tag).
/// Push the steps of a veth into OVS bridge `bridge` (created first unless it `exists`).
fn plan_ovs(
    spec: &AttachSpec,
    facts: &Facts,
    bridge: &IfName,
    exists: bool,
    steps: &mut Vec<Step>,
) -> Result<()> {
    if spec.ipvlan.is_some() {
        return Err(Error::Usage(format!(
            "--ipvlan needs a host interface that is not a bridge, and {bridge} is an \
             Open vSwitch bridge; drop --ipvlan to connect a veth to {bridge}"
        )));
    }
    if spec.direct_phys {
        return Err(Error::Usage(format!(
            "--direct-phys moves a host interface into the container, and Open vSwitch bridge \
             {bridge} cannot leave the host; drop --direct-phys to connect a veth to {bridge}"
        )));
    }
    if facts.host_veth_taken {
        return Err(Error::Refused(format!(
            "host interface {} already exists; choose another host-side name with -l",
            facts.host_veth
        )));
    }
    if !exists {
        steps.push(Step::CreateOvsBridge {
            name: bridge.clone(),
        });
    }
    let mtu = spec.mtu.unwrap_or(1500);
    steps.push(Step::CreateVeth {
        host: facts.host_veth.clone(),
        guest: spec.ifname.clone(),
        bridge: bridge.clone(),
        bridge_index: None,
        mtu,
        host_mtu: mtu,
        mac: spec.mac,
        ovs: true,
    });
    steps.push(Step::OvsPort {
        bridge: bridge.clone(),
        port: facts.host_veth.clone(),
        tag: spec.vlan,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::{AddrSpec, GuestRef, HostIfRef};
    use crate::planning::vlan::{BridgeVlan, SubIf};
    use std::time::Duration;

    fn link(name: &str, kind: Option<&str>, mtu: u32, up: bool) -> Link {
        Link {
            index: 7,
            name: name.into(),
            kind: kind.map(str::to_string),
            mtu,
            up,
            mac: None,
            master: None,
            alias: None,
            lower: None,
        }
    }

    fn spec(host: &str, addr: &str) -> AttachSpec {
        AttachSpec {
            host_if: HostIfRef::Name(host.parse().unwrap()),
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

    fn facts(host: HostSide) -> Facts {
        Facts {
            host,
            host_veth: "veth1pl42".parse().unwrap(),
            host_veth_taken: false,
            guest_ifname_taken: None,
            default_route: None,
            default_route_more: None,
            netns_link: Some(("42".into(), LinkState::Missing)),
            vlan: VlanFacts::default(),
        }
    }

    fn ns() -> NsRef {
        NsRef::Named("42".into())
    }

    #[test]
    fn new_bridge_with_gateway_in_subnet() {
        let p = plan(
            &spec("br1", "10.0.0.2/24@10.0.0.1"),
            &facts(HostSide::NewBridge("br1".parse().unwrap())),
            ns(),
        )
        .unwrap();
        let r = p.render();
        assert_eq!(
            r,
            "ip netns attach 42 42\n\
             ip link add br1 type bridge && ip link set br1 up\n\
             ip link add veth1pl42 mtu 1500 master br1 up type veth peer name eth1 mtu 1500 netns 42 && ip -n 42 link set eth1 up\n\
             ip -n 42 addr add 10.0.0.2/24 dev eth1\n\
             ip -n 42 route replace default via 10.0.0.1 dev eth1\n\
             ip netns exec 42 arping -c 1 -U -I eth1 10.0.0.2\n"
        );
        assert_eq!(p.kind, "veth");
        assert_eq!(p.host_ifname.unwrap().as_str(), "veth1pl42");
    }

    #[test]
    fn off_subnet_gateway_gets_a_host_route() {
        let p = plan(
            &spec("br1", "10.0.0.2/32@10.9.9.9"),
            &facts(HostSide::Bridge(link("br1", Some("bridge"), 9000, true))),
            ns(),
        )
        .unwrap();
        let r = p.render();
        assert!(
            r.contains("route replace 10.9.9.9/32 dev eth1 scope link\n"),
            "{r}"
        );
        assert!(r.contains("mtu 9000"), "bridge MTU is the default: {r}");
        assert!(!r.contains("type bridge"), "{r}");
    }

    #[test]
    fn macvlan_mtu_above_parent_refused() {
        let mut s = spec("eth0", "10.0.0.2/24");
        s.mtu = Some(9000);
        let e = plan(
            &s,
            &facts(HostSide::Parent(link("eth0", None, 1500, true))),
            ns(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("MTU 9000 is larger than the MTU 1500 of eth0"),
            "{e}"
        );
    }

    #[test]
    fn macvlan_parent_down_is_brought_up() {
        let p = plan(
            &spec("eth0", "0/0"),
            &facts(HostSide::Parent(link("eth0", None, 1500, false))),
            ns(),
        )
        .unwrap();
        assert!(matches!(p.steps[1], Step::HostUp { .. }));
        assert!(matches!(p.steps[2], Step::CreateMacvlan { mtu: 1500, .. }));
        assert_eq!(p.steps.len(), 3, "0/0 means no address");
    }

    #[test]
    fn taken_names_and_live_links_refused() {
        let mut f = facts(HostSide::NewBridge("br1".parse().unwrap()));
        f.guest_ifname_taken = Some(link("eth1", Some("veth"), 1500, true));
        let e = plan(&spec("br1", "0/0"), &f, ns()).unwrap_err();
        assert!(e.to_string().contains("choose another name with -i"), "{e}");

        let mut f = facts(HostSide::NewBridge("br1".parse().unwrap()));
        f.host_veth_taken = true;
        let e = plan(&spec("br1", "0/0"), &f, ns()).unwrap_err();
        assert!(e.to_string().contains("-l"), "{e}");

        let mut f = facts(HostSide::NewBridge("br1".parse().unwrap()));
        f.netns_link = Some(("42".into(), LinkState::Other));
        let e = plan(&spec("br1", "0/0"), &f, ns()).unwrap_err();
        assert!(e.to_string().contains("--no-netns-link"), "{e}");

        let mut f = facts(HostSide::NewBridge("br1".parse().unwrap()));
        f.netns_link = Some(("42".into(), LinkState::Same));
        let p = plan(&spec("br1", "0/0"), &f, ns()).unwrap();
        assert!(matches!(p.steps[0], Step::CreateBridge { .. }));
    }

    #[test]
    fn host_shim_steps_and_refusals() {
        let on_eth0 = || facts(HostSide::Parent(link("eth0", None, 1500, true)));
        assert_eq!(shim_name(&"eth0".parse().unwrap()).as_str(), "shim-eth0");
        let long = shim_name(&"enp0s31f6.100".parse().unwrap());
        assert!(
            long.as_str().starts_with("shim") && long.as_str().len() == 15,
            "{long}"
        );
        assert_eq!(long, shim_name(&"enp0s31f6.100".parse().unwrap()), "stable");
        assert_ne!(long, shim_name(&"enp0s31f6.101".parse().unwrap()));

        let mut s = spec("eth0", "10.0.0.2/24,10.0.1.2/24");
        s.host_shim = true;
        let p = plan(&s, &on_eth0(), ns()).unwrap();
        let i = p
            .steps
            .iter()
            .position(|s| matches!(s, Step::CreateMacvlan { .. }))
            .unwrap();
        let j = p
            .steps
            .iter()
            .position(|s| matches!(s, Step::EnsureShim { .. }))
            .unwrap();
        assert!(i < j, "{:?}", p.steps);
        let routes: Vec<String> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::ShimRoute { shim, dst } => Some(format!("{dst} {shim}")),
                _ => None,
            })
            .collect();
        assert_eq!(routes, ["10.0.0.2 shim-eth0", "10.0.1.2 shim-eth0"]);

        let bridge = facts(HostSide::NewBridge("br1".parse().unwrap()));
        let mut b = spec("br1", "10.0.0.2/24");
        b.host_shim = true;
        assert_eq!(plan(&b, &bridge, ns()).unwrap_err().exit_code(), 2);
        let mut none = spec("eth0", "0/0");
        none.host_shim = true;
        let e = plan(&none, &on_eth0(), ns()).unwrap_err();
        assert!(e.to_string().contains("static"), "{e}");
        // An ipvlan gets an ipvlan shim of its own mode (a parent never carries both kinds).
        let mut iv = s.clone();
        iv.ipvlan = Some(IpvlanMode::L3);
        let p = plan(&iv, &on_eth0(), ns()).unwrap();
        assert!(p.steps.iter().any(|s| matches!(
            s,
            Step::EnsureShim {
                ipvlan: Some(IpvlanMode::L3),
                ..
            }
        )));
        assert!(p.render().contains("type ipvlan mode l3"), "{}", p.render());
        iv.ipvlan = Some(IpvlanMode::L2);
        let e = plan(&iv, &on_eth0(), ns()).unwrap_err();
        assert!(e.to_string().contains("not l2"), "{e}");
        let mut vepa = s.clone();
        vepa.macvlan_mode = MacvlanMode::Vepa;
        assert!(plan(&vepa, &on_eth0(), ns()).is_err());
    }

    fn vlan_spec(host: &str, vid: &str) -> AttachSpec {
        let mut s = spec(host, "10.1.100.11/24");
        s.vlan = Some(vid.parse().unwrap());
        s
    }

    fn parent_with_sub(sub: SubIf, parent_mtu: u32) -> Facts {
        let mut f = facts(HostSide::Parent(link("eth0", None, parent_mtu, true)));
        f.vlan.sub = Some(("eth0.100".parse().unwrap(), sub));
        f
    }

    #[test]
    fn vlan_subinterface_created_with_parent_mtu_then_macvlan_on_it() {
        let p = plan(
            &vlan_spec("eth0", "100"),
            &parent_with_sub(SubIf::Missing, 1400),
            ns(),
        )
        .unwrap();
        assert_eq!(
            p.render(),
            "ip netns attach 42 42\n\
             ip link add link eth0 name eth0.100 mtu 1400 type vlan id 100 && ip link set eth0.100 up\n\
             ip link add link eth0.100 name eth1 netns 42 mtu 1400 type macvlan mode bridge && ip -n 42 link set eth1 up\n\
             ip -n 42 addr add 10.1.100.11/24 dev eth1\n\
             ip netns exec 42 arping -c 1 -U -I eth1 10.1.100.11\n"
        );
        assert!(matches!(
            p.steps[2],
            Step::CreateMacvlan {
                parent_index: None,
                ..
            }
        ));
        assert_eq!((p.kind, p.host_if.as_str()), ("macvlan", "eth0.100"));
    }

    #[test]
    fn vlan_subinterface_reused_and_brought_up_parent_too() {
        let mut sub = link("eth0.100", Some("vlan"), 1500, false);
        sub.index = 11;
        let mut f = parent_with_sub(SubIf::Reuse(sub), 1500);
        f.host = HostSide::Parent(link("eth0", None, 1500, false));
        let p = plan(&vlan_spec("eth0", "100"), &f, ns()).unwrap();
        let kinds: Vec<String> = p.steps.iter().map(|s| s.to_string()).collect();
        assert_eq!(kinds[1], "ip link set eth0 up");
        assert_eq!(kinds[2], "ip link set eth0.100 up");
        assert!(matches!(
            p.steps[3],
            Step::CreateMacvlan {
                parent_index: Some(11),
                ..
            }
        ));
        assert!(
            !p.steps.iter().any(|s| matches!(s, Step::CreateVlan { .. })),
            "reused, not created"
        );
    }

    #[test]
    fn vlan_squatter_refused_naming_what_it_is() {
        let e = plan(
            &vlan_spec("eth0", "100"),
            &parent_with_sub(SubIf::Squatter("a dummy device".into()), 1500),
            ns(),
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("eth0.100 exists but is a dummy device, not 802.1Q VLAN 100 on eth0"),
            "{m}"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn ipvlan_plans_and_refusals() {
        let mut s = vlan_spec("eth0", "100");
        s.ipvlan = Some(IpvlanMode::L3);
        let p = plan(&s, &parent_with_sub(SubIf::Missing, 1500), ns()).unwrap();
        let r = p.render();
        assert!(
            r.contains("ip link add link eth0.100 name eth1 netns 42 mtu 1500 type ipvlan mode l3"),
            "{r}"
        );
        assert_eq!(p.kind, "ipvlan");
        assert!(!r.contains("arping"), "l3 has no ARP: {r}");

        s.mac = Some("02:00:00:00:00:01".parse().unwrap());
        let e = plan(&s, &parent_with_sub(SubIf::Missing, 1500), ns()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("shares the MAC address"), "{e}");

        let mut s = spec("br1", "0/0");
        s.ipvlan = Some(IpvlanMode::L2);
        let e = plan(
            &s,
            &facts(HostSide::Bridge(link("br1", Some("bridge"), 1500, true))),
            ns(),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--ipvlan needs"), "{e}");

        let mut s = spec("eth0", "0/0");
        s.ipvlan = Some(IpvlanMode::L2);
        s.mtu = Some(9000);
        let e = plan(
            &s,
            &facts(HostSide::Parent(link("eth0", None, 1500, true))),
            ns(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("an ipvlan cannot exceed"), "{e}");
    }

    #[test]
    fn vlan_on_existing_bridge_turns_filtering_on_and_makes_an_access_port() {
        let mut f = facts(HostSide::Bridge(link("br1", Some("bridge"), 1500, true)));
        f.vlan.bridge = Some(BridgeVlan {
            filtering: false,
            default_pvid: 1,
        });
        let p = plan(&vlan_spec("br1", "100"), &f, ns()).unwrap();
        let r = p.render();
        assert!(
            r.contains(
                "ip link set br1 type bridge vlan_filtering 1\nip link add veth1pl42 mtu 1500 master br1"
            ),
            "{r}"
        );
        assert!(
            r.contains(
                "bridge vlan add dev veth1pl42 vid 100 pvid untagged && bridge vlan del dev veth1pl42 vid 1\n"
            ),
            "{r}"
        );
        // Already filtering, default PVID none: no toggle, nothing to drop.
        f.vlan.bridge = Some(BridgeVlan {
            filtering: true,
            default_pvid: 0,
        });
        let p = plan(&vlan_spec("br1", "100"), &f, ns()).unwrap();
        let r = p.render();
        assert!(!r.contains("vlan_filtering"), "{r}");
        assert!(r.contains("vid 100 pvid untagged\n"), "{r}");
        // A new bridge: filtering on right after it is created.
        let p = plan(
            &vlan_spec("br1", "1"),
            &facts(HostSide::NewBridge("br1".parse().unwrap())),
            ns(),
        )
        .unwrap();
        assert!(matches!(
            p.steps[2],
            Step::BridgeVlanFiltering { index: None, .. }
        ));
        assert!(
            matches!(p.steps[4], Step::BridgeAccessPort { drop_vid: None, .. }),
            "VLAN 1 is the default PVID: nothing to drop"
        );
    }

    #[test]
    fn direct_phys_moves_or_creates_in_place() {
        let mut s = spec("dm0", "10.9.0.2/24");
        s.direct_phys = true;
        let mut dm0 = link("dm0", Some("dummy"), 1500, false);
        dm0.alias = Some("old".into());
        let p = plan(&s, &facts(HostSide::Parent(dm0.clone())), ns()).unwrap();
        assert_eq!(
            p.steps[1].render(&ns()),
            "ip link set dm0 netns 42 name eth1 alias dm0 && ip -n 42 link set eth1 up"
        );
        assert!(matches!(&p.steps[1], Step::MoveToGuest { old_alias: Some(a), .. } if a == "old"));
        assert_eq!(
            p.steps.len(),
            4,
            "netns link, move, address, announce: no HostUp for an interface that moves"
        );
        assert_eq!(p.kind, "phys");

        dm0.master = Some(3);
        let e = plan(&s, &facts(HostSide::Parent(dm0)), ns()).unwrap_err();
        assert!(e.to_string().contains("nomaster"), "{e}");

        // With @VID: the existing sub-interface moves; a missing one is born inside.
        let mut s = vlan_spec("eth0", "100");
        s.direct_phys = true;
        let sub = link("eth0.100", Some("vlan"), 1500, true);
        let p = plan(&s, &parent_with_sub(SubIf::Reuse(sub), 1500), ns()).unwrap();
        assert!(
            matches!(&p.steps[1], Step::MoveToGuest { host, .. } if host.as_str() == "eth0.100")
        );
        let p = plan(&s, &parent_with_sub(SubIf::Missing, 1500), ns()).unwrap();
        assert_eq!(
            p.steps[1].render(&ns()),
            "ip link add link eth0 name eth0.100 mtu 1500 type vlan id 100 && ip link set eth0.100 up"
        );
        assert_eq!(
            p.steps[2].render(&ns()),
            "ip link set eth0.100 netns 42 name eth1 alias eth0.100 && ip -n 42 link set eth1 up"
        );
        assert_eq!((p.kind, p.host_if.as_str()), ("phys", "eth0.100"));
        let mut s2 = spec("br1", "0/0");
        s2.direct_phys = true;
        let e = plan(
            &s2,
            &facts(HostSide::NewBridge("br1".parse().unwrap())),
            ns(),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn on_link_rules() {
        let a: AddrSpec = "10.0.0.2/24".parse().unwrap();
        assert!(gateway_on_link(a.addr, "10.0.0.1".parse().unwrap()));
        assert!(!gateway_on_link(a.addr, "10.0.1.1".parse().unwrap()));
        let a: AddrSpec = "10.0.0.2/32".parse().unwrap();
        assert!(!gateway_on_link(a.addr, "10.0.0.2".parse().unwrap()));
        assert!(gateway_on_link(None, "fe80::1".parse().unwrap()));
        assert!(!gateway_on_link(None, "10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn ovs_bridge_new_and_existing_with_access_tag() {
        let mut s = vlan_spec("ovsbr0", "10");
        s.addr = "10.0.0.2/24".parse().unwrap();
        let ovs = |exists| HostSide::Ovs {
            bridge: "ovsbr0".parse().unwrap(),
            exists,
        };
        let p = plan(&s, &facts(ovs(false)), ns()).unwrap();
        let r = p.render();
        assert!(r.contains("ovs-vsctl --may-exist add-br ovsbr0\n"), "{r}");
        assert!(
            r.contains("ip link add veth1pl42 mtu 1500 up type veth peer name eth1"),
            "no kernel master on an OVS bridge: {r}"
        );
        assert!(
            r.contains("ovs-vsctl add-port ovsbr0 veth1pl42 tag=10 "),
            "{r}"
        );
        assert_eq!((p.kind, p.host_if.as_str()), ("veth", "ovsbr0"));
        assert_eq!(
            p.host_ifname.as_ref().map(|n| n.as_str()),
            Some("veth1pl42")
        );
        let p = plan(&s, &facts(ovs(true)), ns()).unwrap();
        assert!(!p.render().contains("add-br"), "{}", p.render());
        s.ipvlan = Some(IpvlanMode::L2);
        assert!(plan(&s, &facts(ovs(true)), ns()).is_err());
    }
}
