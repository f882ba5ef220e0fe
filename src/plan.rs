//! Pure planning: (spec, facts) -> ordered steps. No I/O.
//!
//! Every check that can fail without touching the host happens here, so bad
//! input is refused before the first change. `Display` renders a step as the
//! equivalent `ip` command for `--dry-run`.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::error::{Error, Result};
use crate::netlink::{Link, Route};
use crate::netns::LinkState;
use crate::spec::{AttachSpec, IfName, Mac, MacvlanMode};

/// What the host side looks like, as observed.
#[derive(Clone, Debug)]
pub enum HostSide {
    /// HOST_IF exists and is a Linux bridge.
    Bridge(Link),
    /// HOST_IF does not exist; its name starts with `br`, so we create it.
    NewBridge(IfName),
    /// HOST_IF exists and is not a bridge: the parent of a macvlan.
    Parent(Link),
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
    /// `/var/run/netns/NAME` and what is there now; `None` when not linking.
    pub netns_link: Option<(String, LinkState)>,
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
    fn netns_arg(&self) -> String {
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
        mtu: u32,
        mac: Option<Mac>,
    },
    CreateMacvlan {
        parent: IfName,
        parent_index: u32,
        guest: IfName,
        mode: MacvlanMode,
        mtu: u32,
        mac: Option<Mac>,
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
    if let Some(v) = spec.vlan {
        return Err(Error::Usage(format!(
            "VLAN @{v} is not supported yet; drop the @{v} suffix (802.1Q support is planned)"
        )));
    }
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
                    crate::netns::NETNS_RUN_DIR
                )));
            }
        }
    }

    let (kind, host_if, host_ifname);
    match &facts.host {
        HostSide::Bridge(_) | HostSide::NewBridge(_) => {
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
                HostSide::Parent(_) => unreachable!(),
            };
            if facts.host_veth_taken {
                return Err(Error::Refused(format!(
                    "host interface {} already exists; choose another host-side name with -l",
                    facts.host_veth
                )));
            }
            steps.push(Step::CreateVeth {
                host: facts.host_veth.clone(),
                guest: spec.ifname.clone(),
                bridge: bridge.clone(),
                bridge_index,
                mtu: spec.mtu.unwrap_or(bridge_mtu),
                mac: spec.mac,
            });
            kind = "veth";
            host_if = bridge;
            host_ifname = Some(facts.host_veth.clone());
        }
        HostSide::Parent(p) => {
            let parent: IfName = p.name.parse().map_err(Error::Refused)?;
            let mtu = spec.mtu.unwrap_or(p.mtu);
            if mtu > p.mtu {
                return Err(Error::Refused(format!(
                    "MTU {mtu} is larger than the MTU {} of {parent}, which a macvlan cannot exceed; \
                     use --mtu {} or less, or raise the MTU of {parent}",
                    p.mtu, p.mtu
                )));
            }
            if spec.mac.is_some() && spec.macvlan_mode == MacvlanMode::Passthru {
                return Err(Error::Usage(
                    "a passthru macvlan takes the MAC of its parent; drop the MAC argument or use another --macvlan-mode"
                        .into(),
                ));
            }
            if !p.up {
                steps.push(Step::HostUp {
                    name: parent.clone(),
                    index: p.index,
                });
            }
            steps.push(Step::CreateMacvlan {
                parent: parent.clone(),
                parent_index: p.index,
                guest: spec.ifname.clone(),
                mode: spec.macvlan_mode,
                mtu,
                mac: spec.mac,
            });
            kind = "macvlan";
            host_if = parent;
            host_ifname = None;
        }
    }

    if let Some(addr) = spec.addr.addr {
        steps.push(Step::AddAddress {
            ifname: spec.ifname.clone(),
            addr,
        });
    }
    if let Some(gw) = spec.addr.gateway {
        if !gateway_on_link(spec.addr.addr, gw) {
            steps.push(Step::AddGatewayRoute {
                ifname: spec.ifname.clone(),
                gateway: gw,
            });
        }
        steps.push(Step::ReplaceDefault {
            ifname: spec.ifname.clone(),
            gateway: gw,
            previous: facts.default_route.clone(),
        });
    }
    if let Some(addr) = spec.addr.addr {
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
                mac,
                ..
            } => format!(
                "ip link add {host} mtu {mtu} master {bridge} up type veth peer name {guest} mtu {mtu}{} netns {} && {ip} link set {guest} up",
                mac.map(|m| format!(" address {m}")).unwrap_or_default(),
                ns.netns_arg()
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
            Step::Announce { ifname, addr } => match addr {
                IpAddr::V4(a) => format!("{} arping -c 1 -U -I {ifname} {a}", ns.exec()),
                IpAddr::V6(a) => format!("{} ndsend {a} {ifname}", ns.exec()),
            },
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.render(&NsRef::Named("CONTAINER".into()));
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AddrSpec, GuestRef, HostIfRef};
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
            netns_link: true,
            timeout: Duration::from_secs(5),
        }
    }

    fn facts(host: HostSide) -> Facts {
        Facts {
            host,
            host_veth: "veth1pl42".parse().unwrap(),
            host_veth_taken: false,
            guest_ifname_taken: None,
            default_route: None,
            netns_link: Some(("42".into(), LinkState::Missing)),
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
    fn vlan_not_yet() {
        let mut s = spec("eth0", "0/0");
        s.vlan = Some("100".parse().unwrap());
        let e = plan(
            &s,
            &facts(HostSide::Parent(link("eth0", None, 1500, true))),
            ns(),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("@100"), "{e}");
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
}
