//! pipe's journal: one small JSON record per attachment under
//! `state_dir()/attachments/`, written *before* the first change to the kernel
//! and committed after the last, plus the ownership tags it puts on links.
//!
//! An attachment's identity is its network namespace (device and inode of the
//! nsfs file) plus the interface name in it ([`AttachmentId`]). Container names,
//! IDs, PIDs and netns names are labels kept in the record; every guest form of
//! one namespace leads to the same record.
//!
//! A record names every object the attach creates (`created`) before it creates
//! it, and is `pending` (with the writer's PID and start time) until the attach
//! finishes. After a crash, `gc`, a re-run or a detach finds the pending record
//! of a dead writer and removes exactly what it names, proving ownership by the
//! tag where the kernel carries one.
//!
//! The files are opened relative to the state directory with `O_NOFOLLOW`, are
//! created 0600 in 0700 directories whatever the umask, and are parsed into typed
//! values (interface names, netns names): a record naming anything else is
//! refused and never acted on. Writes go to a temporary file that is renamed
//! over the record: a crash leaves the old record or the new one, never a torn one.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use serde::{Deserialize, Serialize};

use crate::attachments::Entry;
use crate::spec::{IfName, valid_netns_name};

/// Alias (`IFLA_IFALIAS`) of host links shared by attachments that pipe
/// created (bridges, 802.1Q sub-interfaces): removed once nothing uses them.
pub const SHARED_TAG: &str = "pipe:shared";

/// Every alias pipe sets starts with this.
pub const TAG_PREFIX: &str = "pipe:";

/// Largest record pipe reads (a record is well under 4 KiB).
const MAX_RECORD: u64 = 256 * 1024;

pub fn is_tag(alias: Option<&str>) -> bool {
    alias.is_some_and(|a| a.starts_with(TAG_PREFIX))
}

/// A namespace identity as stored (device and inode of its nsfs file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NsKey {
    pub dev: u64,
    pub ino: u64,
}

impl From<crate::netns::NsId> for NsKey {
    fn from(n: crate::netns::NsId) -> NsKey {
        NsKey {
            dev: n.dev,
            ino: n.ino,
        }
    }
}

impl From<NsKey> for crate::netns::NsId {
    fn from(k: NsKey) -> crate::netns::NsId {
        crate::netns::NsId {
            dev: k.dev,
            ino: k.ino,
        }
    }
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

    fn lock_name(&self) -> String {
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

impl Owner {
    pub fn me() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Is the writer still running?
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Field 22 of /proc/PID/stat: the process's start time in clock ticks.
fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
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
            Created::Bridge(n) | Created::Vlan(n) => Some(n),
            _ => None,
        })
    }

    /// Host links this record uses: its bridge/parent and what it created.
    pub fn uses_host_link(&self, name: &str) -> bool {
        self.host_if.as_str() == name
            || self.created.iter().any(|c| match c {
                Created::Bridge(n) | Created::Vlan(n) => n.as_str() == name,
                _ => false,
            })
    }

    /// Is the host side of this record in the namespace pipe runs in now?
    pub fn host_here(&self) -> bool {
        self.host_ns
            .is_none_or(|h| crate::netns::own_id().is_ok_and(|o| NsKey::from(o) == h))
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

    /// Is the namespace still there? A process lives in it, or its anchor
    /// (a bind mount) still has its inode. A recycled PID has another namespace.
    pub fn alive(&self) -> bool {
        let id: crate::netns::NsId = self.netns.into();
        let Some(ns) = crate::netns::find(id, self.anchor.as_deref()) else {
            return false;
        };
        // The kernel reuses nsfs inodes: the cookie says whether it is the same namespace.
        match (self.cookie, crate::netns::cookie(&ns)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
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

// ---- the state directory -------------------------------------------------------------

/// The state directory, opened without following symlinks. Files are created
/// 0600 and directories 0700 whatever the umask.
pub struct Store {
    root: OwnedFd,
    path: PathBuf,
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

/// Open (creating if needed) directory `name` under `dir` with mode 0700.
fn open_dir_at(dir: impl AsFd, name: &str, what: &std::path::Path) -> io::Result<OwnedFd> {
    match mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(errno_io(e)),
    }
    let fd = openat(dir, name, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => io::Error::other(format!(
            "{} is not a directory (a symlink or a file); pipe keeps its state in a real directory: remove it",
            what.display()
        )),
        e => errno_io(e),
    })?;
    secure_dir(&fd, what)?;
    Ok(fd)
}

/// A state directory must be root's own and 0700 (fixed if it is ours).
fn secure_dir(fd: &OwnedFd, what: &std::path::Path) -> io::Result<()> {
    let st = fstat(fd).map_err(errno_io)?;
    if st.st_uid != nix::unistd::geteuid().as_raw() {
        return Err(io::Error::other(format!(
            "{} belongs to uid {}, not to pipe's user; remove it or choose another --state-dir",
            what.display(),
            st.st_uid
        )));
    }
    if st.st_mode & 0o077 != 0 {
        fchmod(fd, Mode::from_bits_truncate(0o700)).map_err(errno_io)?;
    }
    Ok(())
}

impl Store {
    /// Open the state directory (`--state-dir`, default /run/pipe), creating it.
    pub fn open() -> io::Result<Store> {
        let path = crate::state_dir();
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(parent)?;
        let pfd = nix::fcntl::open(
            parent,
            OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .map_err(errno_io)?;
        let name = path.file_name().ok_or_else(|| {
            io::Error::other(format!(
                "state dir {} has no name; give a directory path",
                path.display()
            ))
        })?;
        let name = name
            .to_str()
            .ok_or_else(|| io::Error::other("state dir name is not UTF-8"))?;
        let root = open_dir_at(&pfd, name, &path)?;
        Ok(Store { root, path })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// A subdirectory (`attachments`, `netns`, `locks`), created 0700.
    pub fn dir(&self, name: &str) -> io::Result<OwnedFd> {
        open_dir_at(&self.root, name, &self.path.join(name))
    }

    /// Read a regular file of at most `max` bytes; `None` if it is missing.
    /// A symlink, FIFO or anything else is refused (never followed, never blocks).
    pub fn read_at(dir: &OwnedFd, name: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
        let fd = match openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(io::Error::other(
                    "is a symlink (planted?); pipe never follows one",
                ));
            }
            Err(e) => return Err(errno_io(e)),
        };
        let st = fstat(&fd).map_err(errno_io)?;
        if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
            return Err(io::Error::other("is not a regular file"));
        }
        if st.st_size as u64 > max {
            return Err(io::Error::other(format!(
                "is {} bytes, too large",
                st.st_size
            )));
        }
        let mut b = Vec::with_capacity(st.st_size as usize);
        File::from(fd).take(max + 1).read_to_end(&mut b)?;
        Ok(Some(b))
    }

    /// Write atomically: a 0600 temporary file created exclusively (no
    /// symlink followed), then renamed over `name`. No fsync: the state dir
    /// lives under /run (volatile by design), and an fsync there costs a disk
    /// flush where /run is not a tmpfs (200 ms measured) on every attach.
    pub fn write_at(dir: &OwnedFd, name: &str, body: &[u8]) -> io::Result<()> {
        let tmp = format!(".{name}.{}.tmp", std::process::id());
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        let fd = openat(
            dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(errno_io)?;
        let res = (|| {
            let mut f = File::from(fd);
            f.write_all(body)?;
            renameat(dir, tmp.as_str(), dir, name).map_err(errno_io)
        })();
        if res.is_err() {
            let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        res
    }

    pub fn remove_at(dir: &OwnedFd, name: &str) -> io::Result<()> {
        match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(errno_io(e)),
        }
    }

    /// The names in a directory, sorted.
    pub fn list_at(dir: &OwnedFd) -> io::Result<Vec<String>> {
        // Listed through the descriptor we hold: the directory we checked, not a path.
        let rd = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
        let mut v: Vec<String> = rd
            .flatten()
            .filter_map(|e| {
                let n = e.file_name();
                let n: &OsStr = &n;
                n.to_str().map(str::to_string)
            })
            .collect();
        v.sort();
        Ok(v)
    }

    // ---- records ----

    fn records(&self) -> io::Result<OwnedFd> {
        self.dir("attachments")
    }

    /// The record of one attachment; an unreadable or tampered one is an error.
    pub fn load(&self, id: &AttachmentId) -> io::Result<Option<Record>> {
        let d = self.records()?;
        let name = id.file_name();
        match Self::read_at(&d, &name, MAX_RECORD)? {
            None => Ok(None),
            Some(b) => parse_record(&name, &b).map(Some),
        }
    }

    pub fn save(&self, r: &Record) -> io::Result<()> {
        let d = self.records()?;
        let mut body = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
        body.push(b'\n');
        Self::write_at(&d, &r.id().file_name(), &body)
    }

    pub fn remove(&self, id: &AttachmentId) -> io::Result<()> {
        Self::remove_at(&self.records()?, &id.file_name())
    }

    pub fn record_path(&self, id: &AttachmentId) -> PathBuf {
        self.path.join("attachments").join(id.file_name())
    }

    /// Every record; an unreadable or tampered one comes back as an error naming the file.
    pub fn all(&self) -> Vec<Result<Record, String>> {
        let Ok(d) = self.records() else {
            return Vec::new();
        };
        let Ok(names) = Self::list_at(&d) else {
            return Vec::new();
        };
        names
            .into_iter()
            .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
            .filter_map(|n| {
                let p = self.path.join("attachments").join(&n);
                match Self::read_at(&d, &n, MAX_RECORD) {
                    Ok(Some(b)) => {
                        Some(parse_record(&n, &b).map_err(|e| format!("{}: {e}", p.display())))
                    }
                    Ok(None) => None,
                    Err(e) => Some(Err(format!("{}: {e}", p.display()))),
                }
            })
            .collect()
    }

    /// The records a label (container name, ID, PID, netns name) names, for
    /// `ifname` (any interface: `None`).
    pub fn find(&self, label: &str, ifname: Option<&str>) -> Vec<Record> {
        self.all()
            .into_iter()
            .flatten()
            .filter(|r| r.has_label(label) && ifname.is_none_or(|i| r.ifname.as_str() == i))
            .collect()
    }

    /// Temporary files left by writers that are gone (killed between write and rename).
    pub fn stale_tmp(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for sub in ["attachments", "netns"] {
            let Ok(d) = self.dir(sub) else { continue };
            for n in Self::list_at(&d).unwrap_or_default() {
                let Some(pid) = n
                    .strip_suffix(".tmp")
                    .and_then(|s| s.rsplit('.').next())
                    .and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                if n.starts_with('.') && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    v.push((sub.to_string(), n));
                }
            }
        }
        v
    }

    pub fn remove_in(&self, sub: &str, name: &str) -> io::Result<()> {
        Self::remove_at(&self.dir(sub)?, name)
    }

    // ---- /var/run/netns markers ----

    /// Note that pipe made /var/run/netns/NAME for namespace `ns` (before making it).
    pub fn mark_netns(&self, name: &NetnsName, ns: NsKey) -> io::Result<()> {
        Self::write_at(
            &self.dir("netns")?,
            name.as_str(),
            format!("{}:{}\n", ns.dev, ns.ino).as_bytes(),
        )
    }

    /// The namespace pipe made /var/run/netns/NAME for, if it did.
    pub fn netns_mark(&self, name: &str) -> Option<NsKey> {
        let d = self.dir("netns").ok()?;
        let b = Self::read_at(&d, name, 64).ok()??;
        let s = std::str::from_utf8(&b).ok()?.trim();
        let (dev, ino) = s.split_once(':')?;
        Some(NsKey {
            dev: dev.parse().ok()?,
            ino: ino.parse().ok()?,
        })
    }

    pub fn unmark_netns(&self, name: &str) -> io::Result<()> {
        Self::remove_at(&self.dir("netns")?, name)
    }

    /// Every /var/run/netns name pipe has a marker for.
    pub fn netns_marks(&self) -> Vec<String> {
        self.dir("netns")
            .and_then(|d| Self::list_at(&d))
            .unwrap_or_default()
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    // ---- locks ----

    /// The lock of one attachment, held for a whole attach, detach or
    /// collection of it: two verbs on one attachment never interleave.
    pub fn lock(&self, id: &AttachmentId, wait: bool) -> io::Result<Option<Lock>> {
        self.lock_file(&id.lock_name(), true, wait)
    }

    /// The host-wide lock of shared objects (bridges, VLAN sub-interfaces,
    /// parents brought up): shared while an attach finds or creates one and
    /// joins it, exclusive around the read-decide-delete of one.
    pub fn shared_lock(&self, exclusive: bool) -> io::Result<Lock> {
        self.lock_file("shared.lock", exclusive, true)?
            .ok_or_else(|| io::Error::other("lock not taken"))
    }

    fn lock_file(&self, name: &str, exclusive: bool, wait: bool) -> io::Result<Option<Lock>> {
        let d = self.dir("locks")?;
        loop {
            let fd = openat(
                &d,
                name,
                OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(errno_io)?;
            let mut op = if exclusive {
                libc::LOCK_EX
            } else {
                libc::LOCK_SH
            };
            if !wait {
                op |= libc::LOCK_NB;
            }
            // SAFETY: flock on a descriptor we own.
            let r = unsafe { libc::flock(fd.as_raw_fd(), op) };
            if r != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Ok(None);
                }
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // A collector may have unlinked the file between our open and our
            // lock: then the lock guards nothing; take it again on the new file.
            let mine = fstat(&fd).map_err(errno_io)?;
            match fstatat(&d, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if st.st_ino == mine.st_ino && st.st_dev == mine.st_dev => {
                    return Ok(Some(Lock {
                        fd,
                        name: name.to_string(),
                    }));
                }
                _ => continue,
            }
        }
    }

    /// Remove the lock file of an attachment that has no record any more; only
    /// while holding it, so no one can be waiting on a file that goes away
    /// unnoticed (lockers check the inode after locking).
    pub fn drop_lock_file(&self, lock: Lock) {
        if let Ok(d) = self.dir("locks") {
            let _ = Self::remove_at(&d, &lock.name);
        }
        drop(lock);
    }
}

/// A held flock; released on drop (and by the kernel if pipe is killed).
pub struct Lock {
    fd: OwnedFd,
    name: String,
}

impl Lock {
    /// Turn a shared lock into an exclusive one (not atomic: flock(2)).
    pub fn exclusive(&self) -> io::Result<()> {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(self.fd.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Parse a record and check that it is what its file name says.
fn parse_record(name: &str, b: &[u8]) -> io::Result<Record> {
    let r: Record =
        serde_json::from_slice(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if r.id().file_name() != name {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "names namespace {}:{} interface {}, not what its file name says",
                r.netns.dev, r.netns.ino, r.ifname
            ),
        ));
    }
    if let Some(a) = &r.anchor
        && !a.starts_with(crate::netns::NETNS_RUN_DIR)
        && !a.starts_with("/proc/")
        && !a.starts_with("/run/")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
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
