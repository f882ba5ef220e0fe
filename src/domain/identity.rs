//! The identity of an attachment and what pipe writes down about it: a
//! network namespace (device and inode of its nsfs file, plus its cookie) and an
//! interface name; the ownership tags on links; the journal record. Pure data:
//! the state directory that stores records is `sys::store`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::domain::attachments::Entry;
use crate::domain::spec::{IfName, valid_netns_name};

/// Alias (`IFLA_IFALIAS`) of host links shared by attachments that pipe
/// created (bridges, 802.1Q sub-interfaces): removed once nothing uses them.
pub const SHARED_TAG: &str = "pipe:shared";

/// Every alias pipe sets starts with this.
pub const TAG_PREFIX: &str = "pipe:";

pub fn is_tag(alias: Option<&str>) -> bool {
    alias.is_some_and(|a| a.starts_with(TAG_PREFIX))
}

/// A namespace identity as stored (device and inode of its nsfs file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NsKey {
    pub dev: u64,
    pub ino: u64,
}

/// One attachment: a network namespace and an interface name in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttachmentId {
    pub ns: NsKey,
    pub ifname: IfName,
}

impl AttachmentId {
    pub fn new(ns: impl Into<NsKey>, ifname: IfName) -> AttachmentId {
        AttachmentId {
            ns: ns.into(),
            ifname,
        }
    }

    /// The ownership tag of the links made for exactly this attachment.
    pub fn tag(&self) -> String {
        format!(
            "{TAG_PREFIX}{}-{}:{}",
            self.ns.dev, self.ns.ino, self.ifname
        )
    }

    /// The attachment an alias names, if it is an attachment's tag.
    pub fn from_tag(alias: &str) -> Option<AttachmentId> {
        let rest = alias.strip_prefix(TAG_PREFIX)?;
        let (ns, ifname) = rest.split_once(':')?;
        let (dev, ino) = ns.split_once('-')?;
        Some(AttachmentId {
            ns: NsKey {
                dev: dev.parse().ok()?,
                ino: ino.parse().ok()?,
            },
            ifname: ifname.parse().ok()?,
        })
    }

    /// Does this alias name exactly this attachment?
    pub fn owns(&self, alias: Option<&str>) -> bool {
        alias == Some(self.tag().as_str())
    }

    /// The record's file name: `DEV-INO@IFNAME.json` (no `/`: IfName has none).
    pub fn file_name(&self) -> String {
        format!("{}-{}@{}.json", self.ns.dev, self.ns.ino, self.ifname)
    }

    pub fn lock_name(&self) -> String {
        format!("{}-{}@{}.lock", self.ns.dev, self.ns.ino, self.ifname)
    }
}

impl std::fmt::Display for AttachmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in netns {}:{}",
            self.ifname, self.ns.dev, self.ns.ino
        )
    }
}

/// A default route the attach replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    pub v6: bool,
    /// The previous route as a netlink message, hex; `None`: there was none.
    pub previous: Option<String>,
}

/// Something an attach creates, named in the journal before it is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", content = "name", rename_all = "snake_case")]
pub enum Created {
    /// A bridge (shared: removed with its last port).
    Bridge(IfName),
    /// An 802.1Q sub-interface on the host (shared: removed with its last user).
    Vlan(IfName),
    /// The host end of a veth.
    HostLink(IfName),
    /// The container's interface (a veth end, macvlan or ipvlan).
    GuestLink(IfName),
    /// A /var/run/netns symlink (and its marker).
    NetnsLink(NetnsName),
    /// The host-side macvlan of `--host-shim` (shared: removed with its last
    /// user). Every record that uses it names it, whether it made it or joined it.
    Shim(IfName),
}

/// A name under /var/run/netns: no `/`, not `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetnsName(String);

impl NetnsName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NetnsName {
    type Error = String;
    fn try_from(s: String) -> Result<NetnsName, String> {
        if valid_netns_name(&s) {
            Ok(NetnsName(s))
        } else {
            Err(format!("{s:?} is not a netns name"))
        }
    }
}

impl From<NetnsName> for String {
    fn from(n: NetnsName) -> String {
        n.0
    }
}

impl std::fmt::Display for NetnsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The process writing a pending record: a PID and its start time (so a
/// recycled PID is not mistaken for the writer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub start: u64,
}

/// The link kind of an attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Veth,
    Macvlan,
    Ipvlan,
    /// A host interface moved in by --direct-phys: detach moves it back.
    Phys,
    /// `pipe link`: a veth between two containers (`host_if` names the peer's end).
    P2p,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Veth => "veth",
            Kind::Macvlan => "macvlan",
            Kind::Ipvlan => "ipvlan",
            Kind::Phys => "phys",
            Kind::P2p => "p2p",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The namespace (identity, with `ifname`).
    pub netns: NsKey,
    /// The namespace's cookie: tells it from a later namespace that got the same inode.
    #[serde(default)]
    pub cookie: Option<u64>,
    /// The namespace pipe ran in (where the host side lives: bridge, parent, host end).
    #[serde(default)]
    pub host_ns: Option<NsKey>,
    /// ... and its cookie (the kernel reuses nsfs inodes).
    #[serde(default)]
    pub host_cookie: Option<u64>,
    /// The container's interface.
    pub ifname: IfName,
    /// How the operator named the container last (Docker name, PID, netns name/path).
    pub label: String,
    /// Every name it was given (name, ID, PID, netns name, path): for lookups
    /// once the namespace is gone.
    #[serde(default)]
    pub labels: Vec<String>,
    /// A path whose inode is the namespace while it lives without a process
    /// (a bind-mounted netns: `/var/run/netns/NAME`).
    #[serde(default)]
    pub anchor: Option<PathBuf>,
    /// Set while an attach is under way; cleared on commit.
    #[serde(default)]
    pub pending: Option<Owner>,
    /// What the attaches of this record created (journaled before creation).
    #[serde(default)]
    pub created: Vec<Created>,
    /// What was asked, in the attachments file's shape.
    pub spec: Entry,
    pub kind: Kind,
    /// The bridge or parent it hangs off.
    pub host_if: IfName,
    /// The host end of a veth.
    #[serde(default)]
    pub host_ifname: Option<IfName>,
    /// The container interface's MAC as created (kept across restarts).
    #[serde(default)]
    pub mac: Option<String>,
    /// Default routes replaced, to put back on detach.
    #[serde(default)]
    pub replaced_default: Vec<Replaced>,
    /// Addresses pipe put on the interface.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// Re-applied by `pipe watch` whenever the container starts.
    #[serde(default)]
    pub persist: bool,
    /// Applied by `pipe watch` from the attachments file.
    #[serde(default)]
    pub from_file: bool,
}

impl Record {
    pub fn id(&self) -> AttachmentId {
        AttachmentId {
            ns: self.netns,
            ifname: self.ifname.clone(),
        }
    }

    /// Outlives its container (`--persist`, or the attachments file).
    pub fn kept(&self) -> bool {
        self.persist || self.from_file
    }

    pub fn previous_route(&self, v6: bool) -> Option<Option<Vec<u8>>> {
        self.replaced_default
            .iter()
            .find(|r| r.v6 == v6)
            .map(|r| r.previous.as_deref().and_then(from_hex))
    }

    /// The /var/run/netns link this record's attaches made.
    pub fn netns_link(&self) -> Option<&NetnsName> {
        self.created.iter().find_map(|c| match c {
            Created::NetnsLink(n) => Some(n),
            _ => None,
        })
    }

    /// Shared host links (bridges, VLAN sub-interfaces) this record created.
    pub fn created_shared(&self) -> impl Iterator<Item = &IfName> {
        self.created.iter().filter_map(|c| match c {
            Created::Bridge(n) | Created::Vlan(n) | Created::Shim(n) => Some(n),
            _ => None,
        })
    }

    /// Host links this record uses: its bridge/parent and what it created.
    pub fn uses_host_link(&self, name: &str) -> bool {
        self.host_if.as_str() == name
            || self.created.iter().any(|c| match c {
                Created::Bridge(n) | Created::Vlan(n) | Created::Shim(n) => n.as_str() == name,
                _ => false,
            })
    }

    /// The `--host-shim` macvlan this record uses, if any.
    pub fn shim(&self) -> Option<&IfName> {
        self.created.iter().find_map(|c| match c {
            Created::Shim(n) => Some(n),
            _ => None,
        })
    }

    pub fn has_label(&self, l: &str) -> bool {
        self.label == l || self.labels.iter().any(|x| x == l)
    }

    pub fn add_label(&mut self, l: &str) {
        if !self.labels.iter().any(|x| x == l) {
            self.labels.push(l.to_string());
        }
    }

    /// Note an object before it is created.
    pub fn journal(&mut self, c: Created) {
        if !self.created.contains(&c) {
            self.created.push(c);
        }
    }

    /// Was this record made in namespace `ns` (same inode and, when known, same cookie)?
    pub fn same_netns(&self, cookie: Option<u64>) -> bool {
        match (self.cookie, cookie) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A record in the format of pipe 0.1 (keyed by label, `created_shared`):
/// what it is and what to do, since pipe no longer acts on it.
fn legacy(b: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(b).ok()?;
    let o = v.as_object()?;
    if !(o.contains_key("created_shared") || o.contains_key("netns_link")) {
        return None;
    }
    let label = o.get("label")?.as_str()?;
    let ifname = o.get("ifname")?.as_str()?;
    Some(format!(
        "is in the format of pipe 0.1 (keyed by label) or was tampered with, and pipe no longer acts on it; \
         remove its interface with `pipe detach --force {} -i {}` if it is still there, then delete the file",
        label, ifname
    ))
}

/// Parse a record and check that it is what its file name says.
pub fn parse_record(name: &str, b: &[u8]) -> std::io::Result<Record> {
    let r: Record = serde_json::from_slice(b).map_err(|e| {
        let e = match legacy(b) {
            Some(hint) => hint,
            None => e.to_string(),
        };
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    })?;
    if r.id().file_name() != name {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "names namespace {}:{} interface {}, not what its file name says",
                r.netns.dev, r.netns.ino, r.ifname
            ),
        ));
    }
    if let Some(a) = &r.anchor
        && !a.starts_with("/var/run/netns")
        && !a.starts_with("/proc/")
        && !a.starts_with("/run/")
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "anchor {} is outside /var/run/netns, /run and /proc",
                a.display()
            ),
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> AttachmentId {
        AttachmentId::new(
            NsKey {
                dev: 4,
                ino: 4026532570,
            },
            "eth1".parse().unwrap(),
        )
    }

    #[test]
    fn names_and_hex() {
        assert_eq!(
            from_hex(&to_hex(&[0, 1, 254, 255])).unwrap(),
            [0, 1, 254, 255]
        );
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(id().tag(), "pipe:4-4026532570:eth1");
        assert_eq!(id().file_name(), "4-4026532570@eth1.json");
        assert!(id().owns(Some("pipe:4-4026532570:eth1")));
        assert_eq!(AttachmentId::from_tag(&id().tag()), Some(id()));
        assert_eq!(AttachmentId::from_tag("pipe:shared"), None);
        assert_eq!(AttachmentId::from_tag("pipe:web:eth1"), None);
        assert!(!id().owns(Some("pipe:4-4026532571:eth1")));
        assert!(!id().owns(Some("pipe:shared")));
        assert!(is_tag(Some("pipe:shared")));
        assert!(!is_tag(Some("other")));
        assert!(!is_tag(None));
    }

    #[test]
    fn a_record_of_pipe_0_1_is_refused_with_what_to_do() {
        // As 0.1 wrote it: keyed by label, with created_shared and netns_link.
        let old = serde_json::json!({
            "spec": {"container": "web", "host": "br1", "addr": "10.0.0.2/24"},
            "label": "web", "ifname": "eth1", "kind": "veth", "host_if": "br1",
            "host_ifname": "veth1pl42", "netns": {"dev": 4, "ino": 4026532570u64},
            "created_shared": ["br1"], "netns_link": "web",
        });
        let e = parse_record("web@eth1.json", &serde_json::to_vec(&old).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("format of pipe 0.1"), "{e}");
        assert!(e.contains("pipe detach --force web -i eth1"), "{e}");
    }

    #[test]
    fn tampered_names_are_refused() {
        let good = serde_json::json!({
            "netns": {"dev": 4, "ino": 4026532570u64}, "ifname": "eth1", "label": "web",
            "spec": {"container": "web", "host": "br1", "addr": "10.0.0.2/24"},
            "kind": "veth", "host_if": "br1", "host_ifname": "veth1pl42",
            "created": [{"what": "netns_link", "name": "web"}],
        });
        let b = serde_json::to_vec(&good).unwrap();
        assert!(parse_record("4-4026532570@eth1.json", &b).is_ok());
        assert!(parse_record("4-4026532570@eth2.json", &b).is_err());
        for (k, v) in [
            ("ifname", serde_json::json!("../x")),
            ("host_ifname", serde_json::json!("a/b")),
            (
                "created",
                serde_json::json!([{"what": "netns_link", "name": "../../etc"}]),
            ),
            (
                "created",
                serde_json::json!([{"what": "bridge", "name": "waytoolongname0123"}]),
            ),
            ("anchor", serde_json::json!("/etc/passwd")),
            ("created_shared", serde_json::json!(["eth0"])),
        ] {
            let mut t = good.clone();
            t[k] = v;
            let b = serde_json::to_vec(&t).unwrap();
            assert!(
                parse_record("4-4026532570@eth1.json", &b).is_err(),
                "{k} accepted"
            );
        }
    }
}
