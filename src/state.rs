//! pipe's memory of what it did: one small JSON record per attachment under
//! `state_dir()/attachments/`, plus the ownership tags it puts on links.
//!
//! A record says what was asked (the spec, in the attachments file's shape),
//! what the attach created (a bridge, the /var/run/netns link), and what it
//! replaced (the previous default route, byte for byte), so that `detach` can
//! undo exactly that, `gc` can clean up after dead containers and `watch` can
//! apply it again. Writes go to a temporary file that is then renamed over the
//! record: a crash leaves the old record or the new one, never a torn one.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::attachments::Entry;

/// Alias (`IFLA_IFALIAS`) of host links shared by attachments that pipe
/// created, such as a bridge: removed once nothing uses them any more.
pub const SHARED_TAG: &str = "pipe:shared";

/// Every alias pipe sets starts with this.
pub const TAG_PREFIX: &str = "pipe:";

/// The ownership tag of a link pipe made for one attachment: `pipe:LABEL:IFNAME`.
pub fn tag(label: &str, ifname: &str) -> String {
    let mut t = format!("{TAG_PREFIX}{label}:{ifname}");
    // IFALIASZ is 256 bytes including the NUL.
    while t.len() > 255 {
        t.pop();
    }
    t
}

pub fn is_tag(alias: Option<&str>) -> bool {
    alias.is_some_and(|a| a.starts_with(TAG_PREFIX))
}

/// A namespace identity as stored (device and inode of its nsfs file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsKey {
    pub dev: u64,
    pub ino: u64,
}

/// A default route the attach replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    pub v6: bool,
    /// The previous route as a netlink message, hex; `None`: there was none.
    pub previous: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// What was asked, in the attachments file's shape.
    pub spec: Entry,
    /// The container as pipe names it: Docker name, PID, or netns name/path.
    pub label: String,
    /// The container's interface.
    pub ifname: String,
    /// "veth", "macvlan", "ipvlan" or "phys" (a host interface moved in by
    /// --direct-phys: detach moves it back under the name in its alias).
    pub kind: String,
    /// The bridge or parent it hangs off.
    pub host_if: String,
    /// The host end of a veth.
    #[serde(default)]
    pub host_ifname: Option<String>,
    /// The container interface's MAC as created (kept across restarts).
    #[serde(default)]
    pub mac: Option<String>,
    /// The namespace it was made in.
    #[serde(default)]
    pub netns: Option<NsKey>,
    /// Shared host links this attach created (a bridge).
    #[serde(default)]
    pub created_shared: Vec<String>,
    /// The /var/run/netns name this attach linked.
    #[serde(default)]
    pub netns_link: Option<String>,
    /// Default routes replaced, to put back on detach.
    #[serde(default)]
    pub replaced_default: Vec<Replaced>,
    /// Addresses pipe put on the interface.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// Re-applied by `pipe watch` whenever the container starts.
    #[serde(default)]
    pub persist: bool,
    /// Applied by `pipe watch` from the attachments file: kept (for its MAC)
    /// when the container dies, but applied again only while the file says so.
    #[serde(default)]
    pub from_file: bool,
}

impl Record {
    /// Outlives its container (`--persist`, or the attachments file).
    pub fn kept(&self) -> bool {
        self.persist || self.from_file
    }
}

pub fn dir() -> PathBuf {
    crate::state_dir().join("attachments")
}

/// File-name-safe form of a label: `[A-Za-z0-9_.-]` as is, anything else `%XX`.
fn encode(label: &str) -> String {
    let mut s = String::with_capacity(label.len());
    for b in label.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

pub fn path(label: &str, ifname: &str) -> PathBuf {
    dir().join(format!("{}@{ifname}.json", encode(label)))
}

impl Record {
    pub fn path(&self) -> PathBuf {
        path(&self.label, &self.ifname)
    }

    pub fn previous_route(&self, v6: bool) -> Option<Option<Vec<u8>>> {
        self.replaced_default
            .iter()
            .find(|r| r.v6 == v6)
            .map(|r| r.previous.as_deref().and_then(from_hex))
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

fn read(p: &Path) -> io::Result<Option<Record>> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn load(label: &str, ifname: &str) -> io::Result<Option<Record>> {
    read(&path(label, ifname))
}

/// Write atomically: a temporary file in the same directory, then rename, so a
/// crash never leaves a torn record. No fsync: the state dir lives under /run
/// (volatile by design), and an fsync there costs a disk flush on hosts where
/// /run is not a tmpfs (200 ms measured here) on every attach.
pub fn save(r: &Record) -> io::Result<()> {
    let d = dir();
    std::fs::create_dir_all(&d)?;
    let p = r.path();
    let tmp = d.join(format!(
        ".{}.{}.tmp",
        p.file_name().and_then(|n| n.to_str()).unwrap_or("record"),
        std::process::id()
    ));
    let body = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        std::fs::rename(&tmp, &p)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

pub fn remove(label: &str, ifname: &str) -> io::Result<()> {
    match std::fs::remove_file(path(label, ifname)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Every record; unreadable ones come back as an error naming the file.
pub fn all() -> Vec<Result<Record, String>> {
    let Ok(rd) = std::fs::read_dir(dir()) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| match read(&p) {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => Some(Err(format!("{}: {e}", p.display()))),
        })
        .collect()
}

/// The records of one container.
pub fn of(label: &str) -> Vec<Record> {
    all()
        .into_iter()
        .flatten()
        .filter(|r| r.label == label)
        .collect()
}

/// The record of an attach that just succeeded; `old` is the record of an
/// earlier run on the same interface (a re-run), whose memory of what was
/// created and replaced first is kept.
pub fn after_attach(
    spec: &crate::spec::AttachSpec,
    target: &crate::guest::Target,
    plan: &crate::plan::Plan,
    applied: &crate::exec::Applied,
    old: Option<Record>,
    persist: bool,
) -> Record {
    use crate::plan::Step;
    let mut r = old.unwrap_or_else(|| Record {
        spec: Entry::from_spec(spec),
        label: target.label.clone(),
        ifname: spec.ifname.to_string(),
        kind: plan.kind.to_string(),
        host_if: plan.host_if.to_string(),
        host_ifname: None,
        mac: None,
        netns: None,
        created_shared: Vec::new(),
        netns_link: None,
        replaced_default: Vec::new(),
        addrs: Vec::new(),
        persist: false,
        from_file: false,
    });
    let here = NsKey {
        dev: target.netns.id.dev,
        ino: target.netns.id.ino,
    };
    if r.netns != Some(here) {
        // A new incarnation of the container (it restarted): the old one's
        // routes and addresses went with its namespace.
        r.replaced_default.clear();
        r.addrs.clear();
        r.netns_link = None;
    }
    r.spec = Entry::from_spec(spec);
    r.kind = plan.kind.to_string();
    r.host_if = plan.host_if.to_string();
    r.host_ifname = plan.host_ifname.as_ref().map(|n| n.to_string());
    r.mac = applied.guest_link.mac.map(|m| m.to_string());
    r.netns = Some(here);
    r.persist |= persist;
    for s in &plan.steps {
        match s {
            Step::CreateBridge { name } | Step::CreateVlan { name, .. }
                if !r.created_shared.contains(&name.to_string()) =>
            {
                r.created_shared.push(name.to_string())
            }
            Step::LinkNetns { name, .. } => r.netns_link = Some(name.clone()),
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
            Step::DeleteAddress { addr, .. } => r.addrs.retain(|a| *a != addr.to_string()),
            Step::AddAddress { addr, .. } if !r.addrs.contains(&addr.to_string()) => {
                r.addrs.push(addr.to_string())
            }
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hex() {
        assert_eq!(encode("web-1_a.b"), "web-1_a.b");
        assert_eq!(encode("/var/run/x"), "%2Fvar%2Frun%2Fx");
        assert_eq!(
            from_hex(&to_hex(&[0, 1, 254, 255])).unwrap(),
            [0, 1, 254, 255]
        );
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert!(tag(&"x".repeat(400), "eth1").len() <= 255);
        assert_eq!(tag("web", "eth1"), "pipe:web:eth1");
        assert!(is_tag(Some("pipe:shared")));
        assert!(!is_tag(Some("other")));
        assert!(!is_tag(None));
    }
}
