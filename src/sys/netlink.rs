//! The only user of rtnetlink: typed operations on one network namespace.
//!
//! A [`Netlink`] is bound to the namespace its socket was created in (see
//! `netns::socket_in`). Every function is one request and one reply; nothing
//! here dumps all links or addresses except [`Netlink::links`], which only the
//! `mac:` host-interface lookup uses.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};

use futures::StreamExt;
use ipnetwork::IpNetwork;
use log::debug;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoData, InfoIpVlan, InfoKind,
    InfoMacVlan, InfoVeth, InfoVlan, IpVlanMode, LinkAttribute, LinkExtentMask, LinkFlags,
    LinkInfo, LinkMessage, MacVlanMode, VlanProtocol,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::Handle;

use crate::domain::error::KernelCause;
use crate::domain::spec::{IpvlanMode, Mac, MacvlanMode};

pub type NlResult<T> = Result<T, KernelCause>;

const ENODEV: i32 = 19;

/// A link as read back from the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: "bridge", "veth", "macvlan", ... (`None` for physical NICs).
    pub kind: Option<String>,
    pub mtu: u32,
    pub up: bool,
    pub mac: Option<Mac>,
    pub master: Option<u32>,
    pub alias: Option<String>,
    /// `IFLA_LINK`: the lower device (the parent of a VLAN or macvlan) in this namespace.
    pub lower: Option<u32>,
}

impl Link {
    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }

    fn from_message(m: LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            kind: None,
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            mac: None,
            master: None,
            alias: None,
            lower: None,
        };
        let mut other_ns = false;
        for a in m.attributes {
            match a {
                LinkAttribute::LinkNetNsId(_) => other_ns = true,
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::Mtu(v) => l.mtu = v,
                LinkAttribute::Address(b) if b.len() == 6 => {
                    l.mac = Some(Mac([b[0], b[1], b[2], b[3], b[4], b[5]]))
                }
                LinkAttribute::Controller(i) => l.master = Some(i),
                LinkAttribute::IfAlias(s) => l.alias = Some(s),
                LinkAttribute::Link(i) => l.lower = Some(i),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            l.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        // IFLA_LINK names an index in another namespace (a veth's peer): not ours.
        if other_ns {
            l.lower = None;
        }
        l
    }
}

/// A link plus the kind-specific facts VLAN, ipvlan and bridge decisions need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkDetail {
    pub link: Link,
    /// `IFLA_LINK`: the lower device (parent of a VLAN, macvlan, ipvlan).
    pub parent: Option<u32>,
    /// `IFLA_LINK_NETNSID`: set when the parent lives in another namespace.
    pub parent_netnsid: Option<i32>,
    /// 802.1Q/802.1ad id and protocol (`0x8100`/`0x88a8`) of a `vlan` device.
    pub vlan: Option<(u16, u16)>,
    /// A bridge's `IFLA_BR_VLAN_FILTERING`.
    pub vlan_filtering: Option<bool>,
    /// A bridge's `IFLA_BR_VLAN_DEFAULT_PVID` (0: none).
    pub default_pvid: Option<u16>,
}

impl LinkDetail {
    fn from_message(m: LinkMessage) -> LinkDetail {
        let mut d = LinkDetail::default();
        for a in &m.attributes {
            match a {
                LinkAttribute::Link(i) => d.parent = Some(*i),
                LinkAttribute::LinkNetNsId(i) => d.parent_netnsid = Some(*i),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Data(InfoData::Vlan(v)) => {
                                let mut id = None;
                                let mut proto = u16::from(VlanProtocol::Ieee8021Q);
                                for x in v {
                                    match x {
                                        InfoVlan::Id(n) => id = Some(*n),
                                        InfoVlan::Protocol(p) => proto = u16::from(*p),
                                        _ => {}
                                    }
                                }
                                d.vlan = id.map(|id| (id, proto));
                            }
                            LinkInfo::Data(InfoData::Bridge(b)) => {
                                for x in b {
                                    match x {
                                        InfoBridge::VlanFiltering(f) => d.vlan_filtering = Some(*f),
                                        InfoBridge::VlanDefaultPvid(p) => d.default_pvid = Some(*p),
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        d.link = Link::from_message(m);
        d
    }
}

/// 802.1Q's ethertype, as `IFLA_VLAN_PROTOCOL` reports it.
pub const ETH_P_8021Q: u16 = 0x8100;

/// A route as read back, enough to put it back exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub message: RouteMessage,
}

impl Route {
    pub fn gateway(&self) -> Option<IpAddr> {
        self.message.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(v)) => Some(IpAddr::V4(*v)),
            RouteAttribute::Gateway(RouteAddress::Inet6(v)) => Some(IpAddr::V6(*v)),
            _ => None,
        })
    }

    pub fn oif(&self) -> Option<u32> {
        self.message.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        })
    }

    pub fn priority(&self) -> u32 {
        self.message
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Priority(p) => Some(*p),
                _ => None,
            })
            .unwrap_or(0)
    }
}

/// What a new link should look like.
#[derive(Clone, Debug, Default)]
pub struct NewLink<'a> {
    pub name: &'a str,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    pub up: bool,
    pub master: Option<u32>,
    pub alias: Option<&'a str>,
    /// Create it directly in this namespace (`IFLA_NET_NS_FD`).
    pub netns: Option<BorrowedFd<'a>>,
}

impl NewLink<'_> {
    fn message(&self) -> LinkMessage {
        let mut m = LinkMessage::default();
        if self.up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        m.attributes
            .push(LinkAttribute::IfName(self.name.to_string()));
        if let Some(mtu) = self.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = self.mac {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(master) = self.master {
            m.attributes.push(LinkAttribute::Controller(master));
        }
        if let Some(alias) = self.alias {
            m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        }
        if let Some(fd) = self.netns {
            m.attributes.push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
        }
        m
    }
}

fn cause(e: rtnetlink::Error) -> KernelCause {
    match e {
        rtnetlink::Error::NetlinkError(m) => KernelCause {
            errno: m.raw_code().abs(),
            detail: None,
        },
        other => KernelCause {
            errno: 5,
            detail: Some(other.to_string()),
        },
    }
}

fn io_cause(e: std::io::Error) -> KernelCause {
    KernelCause::from_io(&e)
}

/// A netlink connection bound to one network namespace.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection in the calling thread's namespace. Needs a tokio runtime.
    pub fn current() -> NlResult<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(io_cause)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A connection over a socket opened elsewhere (in another namespace).
    pub fn from_socket(sock: netlink_sys::Socket) -> NlResult<Netlink> {
        sock.set_non_blocking(true).map_err(io_cause)?;
        // SAFETY: the fd comes from a socket we own and give up here.
        let tsock = unsafe { netlink_sys::TokioSocket::from_raw_fd(sock.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(tsock);
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Send one request and wait for its ACK.
    async fn ack(&self, msg: RouteNetlinkMessage, flags: u16) -> NlResult<()> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut h = self.handle.clone();
        let mut resp = h.request(req).map_err(cause)?;
        while let Some(m) = resp.next().await {
            if let NetlinkPayload::Error(e) = m.payload
                && e.code.is_some()
            {
                return Err(cause(rtnetlink::Error::NetlinkError(e)));
            }
        }
        Ok(())
    }

    /// One link by name, without a dump; `None` when there is no such link.
    pub async fn link(&self, name: &str) -> NlResult<Option<Link>> {
        debug!("netlink: get link {name}");
        Ok(self.link_message(name).await?.map(Link::from_message))
    }

    /// One link by name and whether it can pass traffic (for `--wait`): `IFF_LOWER_UP` (the
    /// carrier: a veth has it once both ends are up, a macvlan when its parent has it) and not
    /// `IFF_DORMANT` (e.g. 802.1X still authenticating). `None` when there is no such link.
    pub async fn link_state(&self, name: &str) -> NlResult<Option<(Link, bool)>> {
        debug!("netlink: get link {name} (state)");
        Ok(self.link_message(name).await?.map(|m| {
            let f = m.header.flags;
            let carrier = f.contains(LinkFlags::LowerUp) && !f.contains(LinkFlags::Dormant);
            (Link::from_message(m), carrier)
        }))
    }

    /// One link by name with its kind-specific details; `None` when there is no such link.
    pub async fn link_detail(&self, name: &str) -> NlResult<Option<LinkDetail>> {
        debug!("netlink: get link {name} (details)");
        Ok(self.link_message(name).await?.map(LinkDetail::from_message))
    }

    /// Ask the kernel to leave the link's counters out (`RTEXT_FILTER_SKIP_STATS`):
    /// pipe reads none of them, and they were a fifth of each answer (a veth:
    /// 1,884 -> 1,516 bytes) to gather, copy and parse. Kernels that do not know
    /// the flag ignore it.
    fn no_stats(mut req: rtnetlink::LinkGetRequest) -> rtnetlink::LinkGetRequest {
        req.message_mut()
            .attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        req
    }

    async fn link_message(&self, name: &str) -> NlResult<Option<LinkMessage>> {
        Self::one_link(self.handle.link().get().match_name(name)).await
    }

    pub async fn link_by_index(&self, index: u32) -> NlResult<Option<Link>> {
        debug!("netlink: get link #{index}");
        let m = Self::one_link(self.handle.link().get().match_index(index)).await?;
        Ok(m.map(Link::from_message))
    }

    /// The one link a lookup names, without its counters; `None` when there is
    /// no such link (ENODEV).
    async fn one_link(req: rtnetlink::LinkGetRequest) -> NlResult<Option<LinkMessage>> {
        let mut s = Self::no_stats(req).execute();
        match s.next().await {
            Some(Ok(m)) => Ok(Some(m)),
            Some(Err(e)) => {
                let c = cause(e);
                // ENODEV: no such device. EINVAL: old kernels reject lookups of bad names.
                if c.errno == ENODEV { Ok(None) } else { Err(c) }
            }
            None => Ok(None),
        }
    }

    /// All links (a dump): only for selecting the host interface by MAC.
    pub async fn links(&self) -> NlResult<Vec<Link>> {
        debug!("netlink: dump links");
        let mut s = Self::no_stats(self.handle.link().get()).execute();
        let mut out = Vec::new();
        while let Some(m) = s.next().await {
            out.push(Link::from_message(m.map_err(cause)?));
        }
        Ok(out)
    }

    async fn add_link(&self, m: LinkMessage) -> NlResult<()> {
        self.ack(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .await
    }

    pub async fn create_bridge(&self, l: &NewLink<'_>) -> NlResult<()> {
        debug!("netlink: create bridge {}", l.name);
        let mut m = l.message();
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.add_link(m).await
    }

    /// One request creates both ends: `host` here, `peer` wherever its `netns` says.
    pub async fn create_veth(&self, host: &NewLink<'_>, peer: &NewLink<'_>) -> NlResult<()> {
        debug!("netlink: create veth {} peer {}", host.name, peer.name);
        let mut m = host.message();
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer.message()))),
        ]));
        self.add_link(m).await
    }

    pub async fn create_macvlan(
        &self,
        l: &NewLink<'_>,
        parent: u32,
        mode: MacvlanMode,
    ) -> NlResult<()> {
        debug!("netlink: create macvlan {} on #{parent}", l.name);
        let mode = match mode {
            MacvlanMode::Bridge => MacVlanMode::Bridge,
            MacvlanMode::Private => MacVlanMode::Private,
            MacvlanMode::Vepa => MacVlanMode::Vepa,
            MacvlanMode::Passthru => MacVlanMode::Passthrough,
        };
        self.add_child(
            l,
            parent,
            InfoKind::MacVlan,
            InfoData::MacVlan(vec![InfoMacVlan::Mode(mode)]),
        )
        .await
    }

    /// A link stacked on `parent` (IFLA_LINK): macvlan, ipvlan, 802.1Q.
    async fn add_child(
        &self,
        l: &NewLink<'_>,
        parent: u32,
        kind: InfoKind,
        data: InfoData,
    ) -> NlResult<()> {
        let mut m = l.message();
        m.attributes.push(LinkAttribute::Link(parent));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(kind),
            LinkInfo::Data(data),
        ]));
        self.add_link(m).await
    }

    /// An 802.1Q sub-interface `l` of `parent` (created where `l.netns` says).
    pub async fn create_vlan(&self, l: &NewLink<'_>, parent: u32, vid: u16) -> NlResult<()> {
        debug!("netlink: create vlan {} id {vid} on #{parent}", l.name);
        self.add_child(
            l,
            parent,
            InfoKind::Vlan,
            InfoData::Vlan(vec![
                InfoVlan::Id(vid),
                InfoVlan::Protocol(VlanProtocol::Ieee8021Q),
            ]),
        )
        .await
    }

    pub async fn create_ipvlan(
        &self,
        l: &NewLink<'_>,
        parent: u32,
        mode: IpvlanMode,
    ) -> NlResult<()> {
        debug!(
            "netlink: create ipvlan {} mode {} on #{parent}",
            l.name,
            mode.as_str()
        );
        let mode = match mode {
            IpvlanMode::L2 => IpVlanMode::L2,
            IpvlanMode::L3 => IpVlanMode::L3,
            IpvlanMode::L3s => IpVlanMode::L3S,
        };
        self.add_child(
            l,
            parent,
            InfoKind::IpVlan,
            InfoData::IpVlan(vec![InfoIpVlan::Mode(mode)]),
        )
        .await
    }

    /// `ip link set BRIDGE type bridge vlan_filtering 0|1`: an RTM_NEWLINK without
    /// NLM_F_CREATE is the kernel's "changelink" for an existing bridge.
    pub async fn set_vlan_filtering(&self, bridge: u32, on: bool) -> NlResult<()> {
        debug!("netlink: set bridge #{bridge} vlan_filtering={on}");
        let mut m = LinkMessage::default();
        m.header.index = bridge;
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(on)])),
        ]));
        self.ack(RouteNetlinkMessage::NewLink(m), 0).await
    }

    /// `bridge vlan add dev PORT vid VID [pvid untagged]`: RTM_SETLINK of family
    /// AF_BRIDGE with IFLA_AF_SPEC / IFLA_BRIDGE_VLAN_INFO.
    pub async fn bridge_vlan_add(&self, port: u32, vid: u16, access: bool) -> NlResult<()> {
        debug!("netlink: bridge vlan add dev #{port} vid {vid} access={access}");
        let flags = if access {
            BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged
        } else {
            BridgeVlanInfoFlags::empty()
        };
        let m = bridge_vlan_message(port, vid, flags);
        self.ack(RouteNetlinkMessage::SetLink(m), 0).await
    }

    /// `bridge vlan del dev PORT vid VID`.
    pub async fn bridge_vlan_del(&self, port: u32, vid: u16) -> NlResult<()> {
        debug!("netlink: bridge vlan del dev #{port} vid {vid}");
        let m = bridge_vlan_message(port, vid, BridgeVlanInfoFlags::empty());
        self.ack(RouteNetlinkMessage::DelLink(m), 0).await
    }

    /// Move link `index` into the namespace `netns`, renamed to `name`, in one
    /// request (`ip link set DEV netns NS name NAME alias ALIAS`). The kernel
    /// closes the device while moving it, so it arrives down and can be renamed.
    pub async fn move_link(
        &self,
        index: u32,
        netns: BorrowedFd<'_>,
        name: &str,
        alias: Option<&str>,
        mtu: Option<u32>,
        mac: Option<Mac>,
    ) -> NlResult<()> {
        debug!("netlink: move link #{index} to another netns as {name}");
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(a) = alias {
            m.attributes.push(LinkAttribute::IfAlias(a.to_string()));
        }
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        self.ack(RouteNetlinkMessage::SetLink(m), 0).await
    }

    /// Rename a link (the kernel wants it down).
    pub async fn rename(&self, index: u32, name: &str) -> NlResult<()> {
        debug!("netlink: rename link #{index} to {name}");
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.ack(RouteNetlinkMessage::SetLink(m), 0).await
    }

    /// Bring a link up (or down).
    pub async fn set_up(&self, index: u32, up: bool) -> NlResult<()> {
        debug!("netlink: set link #{index} up={up}");
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.change_mask = LinkFlags::Up;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        self.ack(RouteNetlinkMessage::SetLink(m), 0).await
    }

    /// Have the kernel announce the link's IPv4 addresses with a gratuitous ARP,
    /// now and whenever it comes up or changes MAC: turn on `arp_notify` for the
    /// link (IFLA_AF_SPEC / AF_INET / IFLA_INET_CONF), then set its MAC to the
    /// value it has, which raises NETDEV_CHANGEADDR. This replaces an AF_PACKET
    /// socket, whose close() waits for an RCU grace period (17 ms measured here).
    /// Two requests (do_setlink applies IFLA_ADDRESS before IFLA_AF_SPEC), or
    /// one when `notify_on` says [`Netlink::tag_guest_link`] set it already.
    pub async fn kernel_arp_announce(&self, index: u32, mac: Mac, notify_on: bool) -> NlResult<()> {
        debug!(
            "netlink: arp_notify on #{index} (set already: {notify_on}), then re-set its MAC {mac}"
        );
        if !notify_on {
            let mut m = LinkMessage::default();
            m.header.index = index;
            m.attributes.push(arp_notify_on());
            self.ack(RouteNetlinkMessage::SetLink(m), 0).await?;
        }
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        self.ack(RouteNetlinkMessage::SetLink(m), 0).await
    }

    /// Tag a container link and bring it up (or leave its state), in one
    /// request that also turns its arp_notify on: the IPv4 announcement that
    /// comes later is then one request, the MAC re-set
    /// ([`Netlink::kernel_arp_announce`] with `notify_on`). With arp_notify on and no address yet,
    /// coming up announces nothing.
    pub async fn tag_guest_link(&self, index: u32, alias: &str, up: Option<bool>) -> NlResult<()> {
        debug!("netlink: set link #{index} alias {alias:?} up={up:?} arp_notify=1");
        let mut m = alias_message(index, alias, up);
        m.attributes.push(arp_notify_on());
        self.ack(RouteNetlinkMessage::SetLink(m), 0).await
    }

    pub async fn delete_link(&self, index: u32) -> NlResult<()> {
        debug!("netlink: delete link #{index}");
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.ack(RouteNetlinkMessage::DelLink(m), 0).await
    }

    /// Delete a link by name (RTM_DELLINK with IFLA_IFNAME): no lookup first.
    pub async fn delete_link_named(&self, name: &str) -> NlResult<()> {
        debug!("netlink: delete link {name}");
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.ack(RouteNetlinkMessage::DelLink(m), 0).await
    }

    pub async fn add_address(&self, index: u32, net: IpNetwork) -> NlResult<()> {
        debug!("netlink: add address {net} to #{index}");
        self.handle
            .address()
            .add(index, net.ip(), net.prefix())
            .execute()
            .await
            .map_err(cause)
    }

    /// The main table's default route of a family with metric `priority`, if any.
    pub async fn default_route(&self, v6: bool, priority: u32) -> NlResult<Option<Route>> {
        // IPv6 stores a route added without a metric under 1024
        // (IP6_RT_PRIO_USER): that is the "metric 0" default route there.
        let priority = if v6 && priority == 0 { 1024 } else { priority };
        debug!("netlink: dump routes (v6={v6}) for the default route");
        let mut q = RouteMessage::default();
        q.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetRoute(q));
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut h = self.handle.clone();
        let mut resp = h.request(req).map_err(cause)?;
        let mut found = None;
        while let Some(m) = resp.next().await {
            match m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => {
                    let table = r
                        .attributes
                        .iter()
                        .find_map(|a| match a {
                            RouteAttribute::Table(t) => Some(*t),
                            _ => None,
                        })
                        .unwrap_or(r.header.table as u32);
                    let route = Route { message: r };
                    if found.is_none()
                        && route.message.header.destination_prefix_length == 0
                        && table == RouteHeader::RT_TABLE_MAIN as u32
                        && route.message.header.kind == RouteType::Unicast
                        && route.priority() == priority
                    {
                        found = Some(route);
                    }
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(cause(rtnetlink::Error::NetlinkError(e)));
                }
                _ => {}
            }
        }
        Ok(found)
    }

    /// `ip route replace default via GW dev INDEX`.
    pub async fn replace_default(&self, gw: IpAddr, oif: u32) -> NlResult<()> {
        debug!("netlink: replace default route via {gw} dev #{oif}");
        let mut m = route_message(gw.is_ipv6(), 0, RouteScope::Universe);
        m.attributes.push(RouteAttribute::Gateway(gw.into()));
        m.attributes.push(RouteAttribute::Oif(oif));
        self.ack(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }

    /// Put back a route exactly as it was read.
    pub async fn restore_route(&self, r: &Route) -> NlResult<()> {
        debug!("netlink: restore route {:?}", r.gateway());
        let mut m = r.message.clone();
        // Read-only attributes the kernel rejects or ignores on input.
        m.attributes.retain(|a| {
            !matches!(
                a,
                RouteAttribute::CacheInfo(_)
                    | RouteAttribute::Expires(_)
                    | RouteAttribute::MulticastExpires(_)
            )
        });
        m.header.flags = RouteFlags::empty() | (r.message.header.flags & RouteFlags::Onlink);
        self.ack(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }

    /// Delete the main table's default route of a family with metric 0.
    pub async fn delete_default(&self, v6: bool) -> NlResult<()> {
        debug!("netlink: delete default route (v6={v6})");
        let m = route_message(v6, 0, RouteScope::NoWhere);
        self.ack(RouteNetlinkMessage::DelRoute(m), 0).await
    }

    /// `ip route add DST/32 dev INDEX scope link`: makes an off-subnet gateway reachable.
    pub async fn add_host_route(&self, dst: IpAddr, oif: u32) -> NlResult<()> {
        debug!("netlink: add host route {dst} dev #{oif}");
        let len = if dst.is_ipv6() { 128 } else { 32 };
        let mut m = route_message(dst.is_ipv6(), len, RouteScope::Link);
        m.attributes.push(RouteAttribute::Destination(dst.into()));
        m.attributes.push(RouteAttribute::Oif(oif));
        self.ack(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }
}

impl Netlink {
    /// `ip route del DST/32 dev INDEX` (the route `add_host_route` made).
    pub async fn delete_host_route(&self, dst: IpAddr, oif: u32) -> NlResult<()> {
        debug!("netlink: delete host route {dst} dev #{oif}");
        let len = if dst.is_ipv6() { 128 } else { 32 };
        let mut m = route_message(dst.is_ipv6(), len, RouteScope::Link);
        m.attributes.push(RouteAttribute::Destination(dst.into()));
        m.attributes.push(RouteAttribute::Oif(oif));
        self.ack(RouteNetlinkMessage::DelRoute(m), 0).await
    }
}

fn bridge_vlan_message(port: u32, vid: u16, flags: BridgeVlanInfoFlags) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.interface_family = AddressFamily::Bridge;
    m.header.index = port;
    m.attributes
        .push(LinkAttribute::AfSpecBridge(vec![AfSpecBridge::VlanInfo(
            BridgeVlanInfo { flags, vid },
        )]));
    m
}

fn route_message(v6: bool, dst_len: u8, scope: RouteScope) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.destination_prefix_length = dst_len;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = scope;
    m.header.kind = RouteType::Unicast;
    m
}

impl Netlink {
    /// `ip route add|del|replace ...` as one request; `oif` is `dev` resolved.
    pub async fn route_request(
        &self,
        r: &crate::domain::iproute::RouteSpec,
        oif: Option<u32>,
    ) -> NlResult<()> {
        use crate::domain::iproute::{RouteKind, Verb};
        debug!("netlink: ip {r}");
        let del = r.verb == Verb::Del;
        let mut m = RouteMessage::default();
        m.header.address_family = if r.v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        m.header.destination_prefix_length = r.dst.map(|d| d.prefix()).unwrap_or(0);
        // As ip does: a delete leaves protocol, type and scope unset (the
        // kernel then matches any); an add defaults to proto boot, and a
        // route without a gateway to scope link.
        m.header.protocol = match (r.proto, del) {
            (Some(p), _) => RouteProtocol::from(p),
            (None, true) => RouteProtocol::Unspec,
            (None, false) => RouteProtocol::Boot,
        };
        m.header.kind = match (r.kind, del) {
            (RouteKind::Unicast, true) => RouteType::Unspec,
            (RouteKind::Unicast, false) => RouteType::Unicast,
            (RouteKind::Blackhole, _) => RouteType::BlackHole,
            (RouteKind::Unreachable, _) => RouteType::Unreachable,
            (RouteKind::Prohibit, _) => RouteType::Prohibit,
        };
        m.header.scope = match (r.scope, del) {
            (Some(s), _) => RouteScope::from(s),
            (None, true) => RouteScope::NoWhere,
            (None, false) if r.kind == RouteKind::Unicast && r.via.is_none() => RouteScope::Link,
            (None, false) => RouteScope::Universe,
        };
        let table = r.table.unwrap_or(RouteHeader::RT_TABLE_MAIN as u32);
        if table < 256 {
            m.header.table = table as u8;
        } else {
            m.header.table = RouteHeader::RT_TABLE_UNSPEC;
            m.attributes.push(RouteAttribute::Table(table));
        }
        if r.onlink {
            m.header.flags = RouteFlags::Onlink;
        }
        if let Some(d) = r.dst {
            m.attributes
                .push(RouteAttribute::Destination(d.ip().into()));
        }
        if let Some(g) = r.via {
            m.attributes.push(RouteAttribute::Gateway(g.into()));
        }
        if let Some(i) = oif {
            m.attributes.push(RouteAttribute::Oif(i));
        }
        if let Some(p) = r.metric {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        if let Some(s) = r.src {
            m.attributes.push(RouteAttribute::PrefSource(s.into()));
        }
        match r.verb {
            Verb::Add => {
                self.ack(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
                    .await
            }
            Verb::Replace => {
                self.ack(
                    RouteNetlinkMessage::NewRoute(m),
                    NLM_F_CREATE | NLM_F_REPLACE,
                )
                .await
            }
            Verb::Del => self.ack(RouteNetlinkMessage::DelRoute(m), 0).await,
        }
    }

    /// `ip rule add|del ...` as one request.
    pub async fn rule_request(&self, r: &crate::domain::iproute::RuleSpec) -> NlResult<()> {
        use crate::domain::iproute::{RouteKind, Verb};
        use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
        debug!("netlink: ip {r}");
        let mut m = RuleMessage::default();
        m.header.family = if r.v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        if r.not {
            m.header.flags = RuleFlags::Invert;
        }
        m.header.action = match r.action {
            Some(RouteKind::Blackhole) => RuleAction::Blackhole,
            Some(RouteKind::Unreachable) => RuleAction::Unreachable,
            Some(RouteKind::Prohibit) => RuleAction::Prohibit,
            _ if r.table.is_some() => RuleAction::ToTable,
            _ => RuleAction::Unspec,
        };
        if let Some(t) = r.table {
            if t < 256 {
                m.header.table = t as u8;
            } else {
                m.attributes.push(RuleAttribute::Table(t));
            }
        }
        if let Some(p) = r.from {
            m.header.src_len = p.prefix();
            if p.prefix() > 0 {
                m.attributes.push(RuleAttribute::Source(p.ip()));
            }
        }
        if let Some(p) = r.to {
            m.header.dst_len = p.prefix();
            if p.prefix() > 0 {
                m.attributes.push(RuleAttribute::Destination(p.ip()));
            }
        }
        if let Some(i) = &r.iif {
            m.attributes.push(RuleAttribute::Iifname(i.to_string()));
        }
        if let Some(i) = &r.oif {
            m.attributes.push(RuleAttribute::Oifname(i.to_string()));
        }
        if let Some((mark, mask)) = r.fwmark {
            m.attributes.push(RuleAttribute::FwMark(mark));
            if let Some(k) = mask {
                m.attributes.push(RuleAttribute::FwMask(k));
            }
        }
        if let Some(p) = r.priority {
            m.attributes.push(RuleAttribute::Priority(p));
        }
        match r.verb {
            Verb::Del => self.ack(RouteNetlinkMessage::DelRule(m), 0).await,
            _ => {
                self.ack(RouteNetlinkMessage::NewRule(m), NLM_F_CREATE | NLM_F_EXCL)
                    .await
            }
        }
    }
}

// ---- lifecycle (issue 5): ownership tags, addresses, route records --------------------------

/// An address on a link, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    pub net: IpNetwork,
    /// IPv6 duplicate address detection has not finished (`IFA_F_TENTATIVE`).
    pub tentative: bool,
    /// IPv6 duplicate address detection failed (`IFA_F_DADFAILED`).
    pub dad_failed: bool,
}

impl Route {
    /// The route message in its wire format, to keep in a state record.
    pub fn to_bytes(&self) -> Vec<u8> {
        use netlink_packet_core::Emitable;
        let mut b = vec![0; self.message.buffer_len()];
        self.message.emit(&mut b);
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Route> {
        use netlink_packet_core::Parseable;
        RouteMessage::parse(b).ok().map(|message| Route { message })
    }
}

impl Netlink {
    /// Set a link's alias (`IFLA_IFALIAS`): pipe's ownership tag. The kernel
    /// ignores the alias in RTM_NEWLINK, so it takes a RTM_SETLINK of its own.
    pub async fn set_alias(&self, index: u32, alias: &str, up: Option<bool>) -> NlResult<()> {
        debug!("netlink: set link #{index} alias {alias:?} up={up:?}");
        let m = alias_message(index, alias, up);
        self.ack(RouteNetlinkMessage::SetLink(m), 0).await
    }

    /// [`Netlink::set_alias`] by name (index 0: the kernel looks the name up).
    pub async fn set_alias_named(&self, name: &str, alias: &str) -> NlResult<()> {
        debug!("netlink: set link {name} alias {alias:?}");
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.ack(RouteNetlinkMessage::SetLink(m), 0).await
    }

    /// The addresses of one link (a dump filtered by the kernel to that index).
    pub async fn addresses(&self, index: u32) -> NlResult<Vec<Addr>> {
        use netlink_packet_route::address::{AddressAttribute, AddressFlags};
        debug!("netlink: get addresses of #{index}");
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = s.next().await {
            let m = m.map_err(cause)?;
            if m.header.index != index {
                continue;
            }
            let mut ip = None;
            let mut local = None;
            let mut flags = AddressFlags::from_bits_retain(m.header.flags.bits() as u32);
            for a in &m.attributes {
                match a {
                    AddressAttribute::Address(a) => ip = Some(*a),
                    AddressAttribute::Local(a) => local = Some(*a),
                    AddressAttribute::Flags(f) => flags = *f,
                    _ => {}
                }
            }
            // IFA_LOCAL is the interface's own address on point-to-point links.
            let Some(ip) = local.or(ip) else { continue };
            let Ok(net) = IpNetwork::new(ip, m.header.prefix_len) else {
                continue;
            };
            out.push(Addr {
                net,
                tentative: flags.contains(AddressFlags::Tentative),
                dad_failed: flags.contains(AddressFlags::Dadfailed),
            });
        }
        Ok(out)
    }

    pub async fn delete_address(&self, index: u32, net: IpNetwork) -> NlResult<()> {
        use netlink_packet_route::address::AddressAttribute;
        debug!("netlink: delete address {net} from #{index}");
        let mut m = address_message(index, net);
        if net.is_ipv4() {
            m.attributes.push(AddressAttribute::Address(net.ip()));
        }
        self.handle.address().del(m).execute().await.map_err(cause)
    }

    /// The ports of a bridge (a dump of all links, filtered here).
    pub async fn ports_of(&self, bridge: u32) -> NlResult<Vec<Link>> {
        Ok(self
            .links()
            .await?
            .into_iter()
            .filter(|l| l.master == Some(bridge))
            .collect())
    }
}

impl Netlink {
    /// `tc qdisc replace dev INDEX root tbf rate R burst B limit L`: egress
    /// shaping with a token bucket, no `tc` binary. netlink-packet-route has
    /// no TBF type, so the options are emitted by hand (`struct tc_tbf_qopt`).
    pub async fn set_tbf(
        &self,
        index: u32,
        bytes_per_sec: u64,
        burst: u32,
        limit: u32,
    ) -> NlResult<()> {
        use netlink_packet_core::DefaultNla;
        use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
        const TCA_TBF_PARMS: u16 = 1;
        const TCA_TBF_RATE64: u16 = 4;
        const TCA_TBF_BURST: u16 = 6;
        const TC_LINKLAYER_ETHERNET: u8 = 1;
        debug!("netlink: tbf on #{index}: {bytes_per_sec} B/s, burst {burst}, limit {limit}");
        // struct tc_ratespec { u8 cell_log; u8 linklayer; u16 overhead;
        // s16 cell_align; u16 mpu; u32 rate; }: with a link layer set, the
        // kernel needs no rate table (TCA_TBF_RTAB). Rates of 4 GB/s and more
        // go in TCA_TBF_RATE64 with the 32-bit field saturated.
        let rate32 = u32::try_from(bytes_per_sec).unwrap_or(u32::MAX);
        let mut parms = Vec::with_capacity(36);
        parms.extend_from_slice(&[0, TC_LINKLAYER_ETHERNET, 0, 0, 0, 0, 0, 0]);
        parms.extend_from_slice(&rate32.to_ne_bytes());
        parms.extend_from_slice(&[0; 12]); // peakrate: none
        parms.extend_from_slice(&limit.to_ne_bytes());
        parms.extend_from_slice(&0u32.to_ne_bytes()); // buffer: from TCA_TBF_BURST
        parms.extend_from_slice(&0u32.to_ne_bytes()); // mtu: only with a peak rate
        let mut opts = vec![
            TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, parms)),
            TcOption::Other(DefaultNla::new(TCA_TBF_BURST, burst.to_ne_bytes().to_vec())),
        ];
        if rate32 == u32::MAX {
            opts.push(TcOption::Other(DefaultNla::new(
                TCA_TBF_RATE64,
                bytes_per_sec.to_ne_bytes().to_vec(),
            )));
        }
        let mut m = TcMessage::with_index(index as i32);
        m.header.parent = TcHandle::ROOT;
        m.attributes.push(TcAttribute::Kind("tbf".into()));
        m.attributes.push(TcAttribute::Options(opts));
        self.ack(
            RouteNetlinkMessage::NewQueueDiscipline(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }
}

impl Netlink {
    /// `ip addr replace ADDR/LEN dev INDEX valid_lft V preferred_lft P`: an
    /// address that the kernel removes by itself when its lifetime runs out
    /// (a DHCP lease not renewed). Replacing refreshes the lifetimes.
    pub async fn set_address_lifetime(
        &self,
        index: u32,
        net: IpNetwork,
        valid: u32,
        preferred: u32,
    ) -> NlResult<()> {
        use netlink_packet_route::address::{AddressAttribute, CacheInfo};
        debug!("netlink: replace address {net} on #{index} valid {valid}s preferred {preferred}s");
        let mut m = address_message(index, net);
        m.attributes.push(AddressAttribute::Address(net.ip()));
        if let ipnetwork::IpNetwork::V4(v4) = net {
            m.attributes
                .push(AddressAttribute::Broadcast(v4.broadcast()));
        }
        let mut ci = CacheInfo::default();
        ci.ifa_preferred = preferred;
        ci.ifa_valid = valid;
        m.attributes.push(AddressAttribute::CacheInfo(ci));
        self.ack(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }
}

/// An address request for `net` on link `index` (IFA_LOCAL set; callers add the rest).
fn address_message(index: u32, net: IpNetwork) -> netlink_packet_route::address::AddressMessage {
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    let mut m = AddressMessage::default();
    m.header.family = if net.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.prefix_len = net.prefix();
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(net.ip()));
    m
}

/// RTM_SETLINK body: alias, and the up flag when given.
fn alias_message(index: u32, alias: &str, up: Option<bool>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    if let Some(up) = up {
        m.header.change_mask = LinkFlags::Up;
        if up {
            m.header.flags = LinkFlags::Up;
        }
    }
    m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
    m
}

/// IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF { ARP_NOTIFY = 1 } } }: the
/// link's net.ipv4.conf.IF.arp_notify, which makes the kernel send a
/// gratuitous ARP when the link's MAC changes (or it comes up with an address).
fn arp_notify_on() -> LinkAttribute {
    const IFLA_AF_SPEC: u16 = 26;
    const AF_INET: u16 = 2;
    const IFLA_INET_CONF: u16 = 1;
    const IPV4_DEVCONF_ARP_NOTIFY: u16 = 22;
    let nla = |kind: u16, body: &[u8]| {
        let mut v = ((4 + body.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(body);
        v
    };
    let conf = nla(IPV4_DEVCONF_ARP_NOTIFY, &1u32.to_ne_bytes());
    let inet = nla(AF_INET, &nla(IFLA_INET_CONF, &conf));
    LinkAttribute::Other(netlink_packet_core::DefaultNla::new(IFLA_AF_SPEC, inet))
}
