//! The typed domain: what an operator asked for, parsed once at the edge.
//!
//! Nothing here does I/O or knows about clap, bollard, rtnetlink or nix. After
//! parsing, no `String` describes network state: a VLAN id is a [`VlanId`], an
//! interface name an [`IfName`], an address an [`AddrSpec`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnetwork::IpNetwork;
use md5::{Digest, Md5};

/// Longest `--timeout` (and `PIPE_DHCP_TIMEOUT`): a day, in seconds.
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAMSIZ_MAX: usize = 15;

/// A valid Linux interface name: 1..=15 bytes, no `/`, `:` or whitespace, not `.` or `..`.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl TryFrom<String> for IfName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}

impl IfName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("interface name is empty".into());
        }
        if s.len() > IFNAMSIZ_MAX {
            return Err(format!(
                "interface name {s:?} is {} bytes; Linux allows at most {IFNAMSIZ_MAX}",
                s.len()
            ));
        }
        if s == "." || s == ".." {
            return Err(format!("interface name {s:?} is reserved"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| *c == '/' || *c == ':' || c.is_whitespace())
        {
            return Err(format!(
                "interface name {s:?} contains {c:?}; use letters, digits, '.', '-' or '_'"
            ));
        }
        Ok(IfName(s.to_string()))
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An 802.1Q VLAN id, 1..=4094.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VlanId(u16);

impl VlanId {
    pub fn get(self) -> u16 {
        self.0
    }
}

impl FromStr for VlanId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<u16>() {
            Ok(v @ 1..=4094) => Ok(VlanId(v)),
            _ => Err(format!("VLAN id {s:?} is not a number from 1 to 4094")),
        }
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A unicast Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// pipework's derived MAC for `U:string`: `02:` then the first 40 bits of md5(string + "\n").
    pub fn derived(seed: &str) -> Mac {
        let mut h = Md5::new();
        h.update(seed.as_bytes());
        h.update(b"\n");
        let d = h.finalize();
        Mac([0x02, d[0], d[1], d[2], d[3], d[4]])
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(seed) = s.strip_prefix("U:") {
            return Ok(Mac::derived(seed));
        }
        let m: macaddr::MacAddr6 = s.parse().map_err(|_| {
            format!("MAC address {s:?} is not of the form 02:12:34:56:78:9a (or U:seed)")
        })?;
        let b = m.into_array();
        if b == [0; 6] {
            return Err(format!(
                "MAC address {s} is all zeros; give a unicast address"
            ));
        }
        if b[0] & 1 == 1 {
            return Err(format!(
                "MAC address {s} is multicast (lowest bit of the first byte set); \
                 use a unicast one such as 02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                b[1], b[2], b[3], b[4], b[5]
            ));
        }
        Ok(Mac(b))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// The fourth positional argument: `[MAC][@VLAN]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MacVlan {
    pub mac: Option<Mac>,
    pub vlan: Option<VlanId>,
}

impl FromStr for MacVlan {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // `U:seed` may itself contain '@'; the VLAN is whatever follows the last one.
        let (mac, vlan) = match s.rsplit_once('@') {
            Some((m, v)) => (m, Some(v.parse::<VlanId>()?)),
            None => (s, None),
        };
        let mac = if mac.is_empty() {
            None
        } else {
            Some(mac.parse()?)
        };
        Ok(MacVlan { mac, vlan })
    }
}

/// How an address is obtained by DHCP: `dhcp` is pipe's own client; the
/// others are pipework's spellings, which run that client binary inside the
/// container's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpClient {
    Native,
    Udhcpc,
    Dhclient,
    Dhcpcd,
}

impl DhcpClient {
    pub fn as_str(self) -> &'static str {
        match self {
            DhcpClient::Native => "dhcp",
            DhcpClient::Udhcpc => "udhcpc",
            DhcpClient::Dhclient => "dhclient",
            DhcpClient::Dhcpcd => "dhcpcd",
        }
    }
}

/// The third positional argument: `IP/PREFIX[@GATEWAY]`, `0/0` for no address,
/// or `dhcp` (`udhcpc`, `dhclient`, `dhcpcd`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AddrSpec {
    /// The address with its prefix; `None` for `0/0` and DHCP.
    pub addr: Option<IpNetwork>,
    pub gateway: Option<IpAddr>,
    /// Obtain an IPv4 address, and the default route, by DHCP.
    pub dhcp: Option<DhcpClient>,
    /// Further addresses (`ADDR,ADDR...`), each with an optional gateway: at
    /// most one gateway per family in the whole list.
    pub more: Vec<(IpNetwork, Option<IpAddr>)>,
}

impl AddrSpec {
    /// Every address, the first one first.
    pub fn all(&self) -> Vec<IpNetwork> {
        self.addr
            .into_iter()
            .chain(self.more.iter().map(|(a, _)| *a))
            .collect()
    }

    /// Every gateway (at most one per family), the first one first.
    pub fn gateways(&self) -> Vec<IpAddr> {
        self.gateway
            .into_iter()
            .chain(self.more.iter().filter_map(|(_, g)| *g))
            .collect()
    }
}

impl FromStr for AddrSpec {
    type Err = String;
    /// `ADDR[@GW]`, or several comma-separated: `10.0.0.2/24@10.0.0.1,2001:db8::2/64@2001:db8::1`.
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.contains(',') {
            return one_addr(s);
        }
        let mut items = Vec::new();
        for item in s.split(',') {
            let a = one_addr(item)?;
            let Some(net) = a.addr else {
                return Err(format!(
                    "{item:?} in {s:?}: 0/0 and DHCP stand alone, not in a list of addresses"
                ));
            };
            items.push((net, a.gateway));
        }
        for (i, (a, g)) in items.iter().enumerate() {
            if items[..i].iter().any(|(b, _)| b.ip() == a.ip()) {
                return Err(format!("address {} is given twice in {s:?}", a.ip()));
            }
            if let Some(g) = g
                && items[..i]
                    .iter()
                    .any(|(_, h)| h.is_some_and(|h| h.is_ipv4() == g.is_ipv4()))
            {
                return Err(format!(
                    "{s:?} has two {} gateways; give at most one per family",
                    family_name(*g)
                ));
            }
        }
        let (first, rest) = items.split_first().expect("split gives one item at least");
        Ok(AddrSpec {
            addr: Some(first.0),
            gateway: first.1,
            dhcp: None,
            more: rest.to_vec(),
        })
    }
}

/// One `IP/PREFIX[@GATEWAY]`, `0/0[@GATEWAY]` or DHCP spelling.
fn one_addr(s: &str) -> Result<AddrSpec, String> {
    let client = match s {
        "dhcp" => Some(DhcpClient::Native),
        "udhcpc" => Some(DhcpClient::Udhcpc),
        "dhclient" => Some(DhcpClient::Dhclient),
        "dhcpcd" => Some(DhcpClient::Dhcpcd),
        _ => None,
    };
    if client.is_some() {
        return Ok(AddrSpec {
            dhcp: client,
            ..Default::default()
        });
    }
    if let Some((c, _)) = s.split_once(['@', ':'])
        && ["dhcp", "udhcpc", "dhclient", "dhcpcd"].contains(&c)
    {
        return Err(format!(
            "{s:?}: DHCP takes no gateway or client options (the lease gives the default route); write just {c}"
        ));
    }
    let (a, gw) = match s.split_once('@') {
        Some((a, g)) => {
            let gw: IpAddr = g
                .parse()
                .map_err(|_| format!("gateway {g:?} in {s:?} is not an IPv4 or IPv6 address"))?;
            (a, Some(gw))
        }
        None => (s, None),
    };
    if a == "0/0" || a == "0.0.0.0/0" || a == "::/0" {
        return Ok(AddrSpec {
            addr: None,
            gateway: gw,
            dhcp: None,
            more: Vec::new(),
        });
    }
    let Some((ip, prefix)) = a.split_once('/') else {
        return Err(format!(
            "address {a:?} has no prefix length; write it as {a}/24 (or 0/0 for no address)"
        ));
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("address {a:?} is not IP/PREFIX, e.g. 192.168.1.10/24"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("prefix length {prefix:?} in {a:?} is not a number"))?;
    let net = IpNetwork::new(ip, prefix).map_err(|_| {
        format!(
            "prefix length /{prefix} in {a:?} is too long for an {} address",
            family_name(ip)
        )
    })?;
    if ip.is_multicast() || ip.is_unspecified() || ip.is_loopback() {
        return Err(format!(
            "address {a} cannot be given to an interface; use a unicast address"
        ));
    }
    if let Some(gw) = gw {
        if gw.is_ipv4() != ip.is_ipv4() {
            return Err(format!(
                "gateway {gw} is {} but address {a} is {}; use a gateway of the same family",
                family_name(gw),
                family_name(ip)
            ));
        }
        if gw == ip {
            return Err(format!(
                "gateway {gw} is the container's own address; give the router's address"
            ));
        }
    }
    if let Some(gw) = gw
        && (gw.is_multicast() || gw.is_unspecified() || gw.is_loopback())
    {
        return Err(format!("gateway {gw} is not a unicast address"));
    }
    Ok(AddrSpec {
        addr: Some(net),
        gateway: gw,
        dhcp: None,
        more: Vec::new(),
    })
}

impl fmt::Display for AddrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = self.dhcp {
            return f.write_str(c.as_str());
        }
        match self.addr {
            Some(a) => write!(f, "{a}")?,
            None => f.write_str("0/0")?,
        }
        if let Some(g) = self.gateway {
            write!(f, "@{g}")?;
        }
        for (a, g) in &self.more {
            write!(f, ",{a}")?;
            if let Some(g) = g {
                write!(f, "@{g}")?;
            }
        }
        Ok(())
    }
}

fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// How the host interface was named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostIfRef {
    Name(IfName),
    /// `mac:AA:BB:CC:DD:EE:FF`: the host interface that has this MAC.
    Mac(Mac),
}

impl FromStr for HostIfRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("mac:") {
            Some(m) => {
                let b: macaddr::MacAddr6 = m
                    .parse()
                    .map_err(|_| format!("{s:?} is not mac:AA:BB:CC:DD:EE:FF"))?;
                Ok(HostIfRef::Mac(Mac(b.into_array())))
            }
            None => Ok(HostIfRef::Name(s.parse()?)),
        }
    }
}

impl fmt::Display for HostIfRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostIfRef::Name(n) => write!(f, "{n}"),
            HostIfRef::Mac(m) => write!(f, "mac:{m}"),
        }
    }
}

/// How the guest was named: decided by shape alone; which names are netns
/// names and which are containers is settled by `guest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestRef {
    Pid(u32),
    Path(std::path::PathBuf),
    /// A netns name under /var/run/netns, or else a Docker container.
    Name(String),
}

impl FromStr for GuestRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("the guest is empty; give a container name, PID or netns".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(GuestRef::Pid)
                .map_err(|_| format!("PID {s} is out of range"));
        }
        if s.contains('/') {
            return Ok(GuestRef::Path(s.into()));
        }
        Ok(GuestRef::Name(s.to_string()))
    }
}

impl fmt::Display for GuestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestRef::Pid(p) => write!(f, "{p}"),
            GuestRef::Path(p) => write!(f, "{}", p.display()),
            GuestRef::Name(n) => f.write_str(n),
        }
    }
}

/// A name usable under /var/run/netns: `[A-Za-z0-9_.-]+`, not `.`/`..`.
pub fn valid_netns_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MacvlanMode {
    #[default]
    Bridge,
    Private,
    Vepa,
    Passthru,
}

impl MacvlanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Passthru => "passthru",
        }
    }
}

/// Mode of an ipvlan child (`--ipvlan MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpvlanMode {
    /// Switching at layer 2: the container answers ARP on the parent's LAN.
    L2,
    /// Routing at layer 3 through the host's routing table: no ARP, no broadcast.
    L3,
    /// Like L3, but the traffic passes the host's netfilter hooks.
    L3s,
}

impl IpvlanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IpvlanMode::L2 => "l2",
            IpvlanMode::L3 => "l3",
            IpvlanMode::L3s => "l3s",
        }
    }
}

/// The name of the 802.1Q sub-interface of `parent` for `vid`: `PARENT.VID`,
/// as pipework and `vconfig` name it; an error when that exceeds IFNAMSIZ.
pub fn vlan_subif_name(parent: &IfName, vid: VlanId) -> Result<IfName, String> {
    let n = format!("{parent}.{vid}");
    if n.len() > IFNAMSIZ_MAX {
        return Err(format!(
            "the VLAN sub-interface name {n} would be {} bytes and Linux allows at most {IFNAMSIZ_MAX}; \
             create an 802.1Q device with a shorter name (ip link add link {parent} name SHORT type vlan id {vid}) \
             and give that as HOST_IF without @{vid}",
            n.len()
        ));
    }
    Ok(IfName(n))
}

/// The MTUs Linux accepts on an Ethernet-like link.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;
/// IPv6 needs links of at least this MTU (RFC 8200); the kernel refuses IPv6
/// addresses below it.
pub const MTU_MIN_IPV6: u32 = 1280;

/// `--mtu N`: 68..=65535.
pub fn parse_mtu(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(m) if MTU_RANGE.contains(&m) => Ok(m),
        _ => Err(format!(
            "MTU {s:?} is not a number from {} to {}",
            MTU_RANGE.start(),
            MTU_RANGE.end()
        )),
    }
}

/// An MTU in range, and at least 1280 when any address is IPv6.
pub fn check_mtu_family(mtu: Option<u32>, addr: &AddrSpec) -> Result<(), String> {
    let Some(m) = mtu else { return Ok(()) };
    if !MTU_RANGE.contains(&m) {
        return Err(format!(
            "MTU {m} is out of range; give a value from {} to {}",
            MTU_RANGE.start(),
            MTU_RANGE.end()
        ));
    }
    if m < MTU_MIN_IPV6
        && let Some(a) = addr.all().into_iter().find(|a| a.is_ipv6())
    {
        return Err(format!(
            "MTU {m} is below {MTU_MIN_IPV6}, the least IPv6 works with, and {a} is IPv6; \
             give --mtu {MTU_MIN_IPV6} or more"
        ));
    }
    Ok(())
}

/// One attachment, fully parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct AttachSpec {
    pub host_if: HostIfRef,
    pub guest: GuestRef,
    pub addr: AddrSpec,
    pub mac: Option<Mac>,
    pub vlan: Option<VlanId>,
    /// Interface name inside the container.
    pub ifname: IfName,
    /// Host-side veth name; derived when absent.
    pub host_ifname: Option<IfName>,
    pub mtu: Option<u32>,
    pub macvlan_mode: MacvlanMode,
    /// `--ipvlan MODE`: an ipvlan child instead of a macvlan.
    pub ipvlan: Option<IpvlanMode>,
    /// `--direct-phys`: move HOST_IF (or HOST_IF.VID) itself into the container.
    pub direct_phys: bool,
    pub netns_link: bool,
    pub timeout: Duration,
    /// `--rate RATE[/BURST]`: shape the container's egress (TBF on its interface).
    pub rate: Option<crate::domain::rate::Rate>,
    /// `--host-shim`: a shared host-side macvlan on the parent plus a host route
    /// to each address, so the host and its macvlan containers reach each other.
    pub host_shim: bool,
}

/// Host-side veth name for a guest: pipework's `v{IF}pl{KEY}` when it fits in
/// IFNAMSIZ, otherwise `vp` plus a stable hash of the same inputs (12 bytes).
pub fn host_veth_name(ifname: &IfName, guest_key: &str) -> IfName {
    let classic = format!("v{ifname}pl{guest_key}");
    if classic.len() <= IFNAMSIZ_MAX {
        return IfName(classic);
    }
    let mut h = Md5::new();
    h.update(ifname.as_str().as_bytes());
    h.update(b"/");
    h.update(guest_key.as_bytes());
    let d = h.finalize();
    IfName(format!(
        "vp{:02x}{:02x}{:02x}{:02x}{:02x}",
        d[0], d[1], d[2], d[3], d[4]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_mac_matches_pipework() {
        assert_eq!(
            "U:myhost.foo.com".parse::<Mac>().unwrap().to_string(),
            "02:72:6c:cd:9b:8d"
        );
    }

    #[test]
    fn mac_rejects_multicast_and_zero() {
        let e = "01:00:5e:00:00:01".parse::<Mac>().unwrap_err();
        assert!(e.contains("multicast"), "{e}");
        let e = "00:00:00:00:00:00".parse::<Mac>().unwrap_err();
        assert!(e.contains("all zeros"), "{e}");
        let e = "zz".parse::<Mac>().unwrap_err();
        assert!(e.contains("\"zz\""), "{e}");
        assert_eq!(
            "02:AA:bb:cc:dd:ee".parse::<Mac>().unwrap().to_string(),
            "02:aa:bb:cc:dd:ee"
        );
    }

    #[test]
    fn mac_vlan_forms() {
        let mv: MacVlan = "@100".parse().unwrap();
        assert_eq!(mv.mac, None);
        assert_eq!(mv.vlan.unwrap().get(), 100);
        let mv: MacVlan = "02:00:00:00:00:01@4094".parse().unwrap();
        assert_eq!(mv.mac.unwrap().0, [2, 0, 0, 0, 0, 1]);
        assert_eq!(mv.vlan.unwrap().get(), 4094);
        let mv: MacVlan = "U:a@b@7".parse().unwrap();
        assert_eq!(mv.mac, Some(Mac::derived("a@b")));
        assert_eq!(mv.vlan.unwrap().get(), 7);
        let mv: MacVlan = "02:00:00:00:00:01".parse().unwrap();
        assert_eq!(mv.vlan, None);
        for bad in ["@0", "@4095", "@x", "@"] {
            let e = bad.parse::<MacVlan>().unwrap_err();
            assert!(e.contains("1 to 4094"), "{bad}: {e}");
        }
    }

    #[test]
    fn addr_forms() {
        let a: AddrSpec = "192.168.1.10/24@192.168.1.1".parse().unwrap();
        assert_eq!(a.addr.unwrap().to_string(), "192.168.1.10/24");
        assert_eq!(a.gateway.unwrap().to_string(), "192.168.1.1");
        let a: AddrSpec = "0/0".parse().unwrap();
        assert_eq!(
            a,
            AddrSpec {
                addr: None,
                gateway: None,
                dhcp: None,
                more: vec![],
            }
        );
        let a: AddrSpec = "10.0.0.2/24@10.0.0.1,2001:db8::2/64@2001:db8::1,10.0.1.2/24"
            .parse()
            .unwrap();
        assert_eq!(a.all().len(), 3);
        assert_eq!(
            a.gateways(),
            [
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        assert_eq!(
            a.to_string(),
            "10.0.0.2/24@10.0.0.1,2001:db8::2/64@2001:db8::1,10.0.1.2/24"
        );
        for (bad, want) in [
            (
                "10.0.0.2/24@10.0.0.1,10.0.1.2/24@10.0.1.1",
                "two IPv4 gateways",
            ),
            ("10.0.0.2/24,10.0.0.2/16", "twice"),
            ("10.0.0.2/24,0/0", "stand alone"),
            ("10.0.0.2/24,dhcp", "stand alone"),
            ("10.0.0.2/24,10.0.0.x/24", "not IP/PREFIX"),
        ] {
            let e = bad.parse::<AddrSpec>().unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        for (s, c) in [
            ("dhcp", DhcpClient::Native),
            ("udhcpc", DhcpClient::Udhcpc),
            ("dhclient", DhcpClient::Dhclient),
            ("dhcpcd", DhcpClient::Dhcpcd),
        ] {
            let a: AddrSpec = s.parse().unwrap();
            assert_eq!((a.addr, a.gateway, a.dhcp), (None, None, Some(c)));
            assert_eq!(a.to_string(), s);
        }
        let e = "dhcp@10.0.0.1".parse::<AddrSpec>().unwrap_err();
        assert!(e.contains("no gateway"), "{e}");
        let a: AddrSpec = "2001:db8::5/64@2001:db8::1".parse().unwrap();
        assert!(a.addr.unwrap().is_ipv6());
        let a: AddrSpec = "10.0.0.2/32@10.9.9.9".parse().unwrap();
        assert_eq!(a.addr.unwrap().prefix(), 32);
    }

    #[test]
    fn addr_errors_name_the_value() {
        for (bad, want) in [
            ("10.0.0.1", "no prefix length"),
            ("10.0.0.1/33", "/33"),
            ("10.0.0.x/24", "not IP/PREFIX"),
            ("10.0.0.1/24@2001:db8::1", "same family"),
            ("10.0.0.1/24@nope", "\"nope\""),
            ("10.0.0.1/24@10.0.0.1", "own address"),
            ("224.0.0.1/24", "unicast"),
            ("10.0.0.1/x", "\"x\""),
        ] {
            let e = bad.parse::<AddrSpec>().unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn ifname_rules() {
        assert!("eth1".parse::<IfName>().is_ok());
        assert!("a23456789012345".parse::<IfName>().is_ok());
        assert!("a234567890123456".parse::<IfName>().is_err());
        assert!("".parse::<IfName>().is_err());
        assert!("a/b".parse::<IfName>().is_err());
        assert!("a b".parse::<IfName>().is_err());
        assert!("..".parse::<IfName>().is_err());
    }

    #[test]
    fn guest_shapes() {
        assert_eq!("123".parse::<GuestRef>().unwrap(), GuestRef::Pid(123));
        assert_eq!(
            "/proc/1/ns/net".parse::<GuestRef>().unwrap(),
            GuestRef::Path("/proc/1/ns/net".into())
        );
        assert_eq!(
            "web".parse::<GuestRef>().unwrap(),
            GuestRef::Name("web".into())
        );
        assert!("99999999999999".parse::<GuestRef>().is_err());
    }

    #[test]
    fn host_if_by_mac() {
        assert_eq!(
            "mac:02:00:00:00:00:0A".parse::<HostIfRef>().unwrap(),
            HostIfRef::Mac(Mac([2, 0, 0, 0, 0, 10]))
        );
        assert!("mac:nope".parse::<HostIfRef>().is_err());
        assert!("br1".parse::<HostIfRef>().is_ok());
    }

    #[test]
    fn netns_names() {
        assert!(valid_netns_name("web-1_a.b"));
        assert!(!valid_netns_name(".."));
        assert!(!valid_netns_name("a/b"));
        assert!(!valid_netns_name("a b"));
        assert!(!valid_netns_name(""));
    }

    #[test]
    fn vlan_subif_names() {
        let eth0: IfName = "eth0".parse().unwrap();
        let v: VlanId = "100".parse().unwrap();
        assert_eq!(vlan_subif_name(&eth0, v).unwrap().as_str(), "eth0.100");
        let long: IfName = "enp0s31f6abc".parse().unwrap();
        let e = vlan_subif_name(&long, "4094".parse().unwrap()).unwrap_err();
        assert!(
            e.contains("enp0s31f6abc.4094") && e.contains("at most 15"),
            "{e}"
        );
    }

    #[test]
    fn veth_names_always_fit() {
        let eth1: IfName = "eth1".parse().unwrap();
        assert_eq!(host_veth_name(&eth1, "1234").as_str(), "veth1pl1234");
        let long: IfName = "averylongname12".parse().unwrap();
        let n = host_veth_name(&long, "4194303");
        assert!(n.as_str().len() <= IFNAMSIZ_MAX, "{n}");
        assert_eq!(n, host_veth_name(&long, "4194303"), "stable");
        assert_ne!(n, host_veth_name(&long, "4194304"));
        let n = host_veth_name(&eth1, "4194303");
        assert!(n.as_str().len() <= IFNAMSIZ_MAX, "{n}");
    }
}
