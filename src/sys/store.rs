//! The state directory: records of the journal (see `domain::identity`), the
//! /var/run/netns markers and the locks, opened relative to the directory's
//! descriptor without following symlinks, created 0600 / 0700 whatever the
//! umask; and the liveness checks that need the kernel (is a namespace, a
//! writer, still there?).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::domain::identity::{AttachmentId, NetnsName, NsKey, Owner, Record, parse_record};

static STATE_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// pipe's own state (records of what it created): `--state-dir`, else
/// `$PIPE_STATE_DIR`, default /run/pipe.
pub fn state_dir() -> std::path::PathBuf {
    if let Some(d) = STATE_DIR.get() {
        return d.clone();
    }
    std::env::var_os("PIPE_STATE_DIR")
        .map(Into::into)
        .unwrap_or_else(|| "/run/pipe".into())
}

/// Set the state directory for this process (from `--state-dir`); first call wins.
pub fn set_state_dir(d: std::path::PathBuf) {
    let _ = STATE_DIR.set(d);
}

/// Largest record pipe reads (a record is well under 4 KiB).
const MAX_RECORD: u64 = 256 * 1024;

/// This process, as the writer of a pending record.
pub fn owner_me() -> Owner {
    // Read once per process: `pipe apply` journals every attachment.
    static ME: std::sync::OnceLock<Owner> = std::sync::OnceLock::new();
    *ME.get_or_init(|| {
        let pid = std::process::id();
        Owner {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    })
}

/// Liveness of what a record names, judged by the kernel.
pub trait Alive {
    fn alive(&self) -> bool;
}

impl Alive for Owner {
    /// Is the writer still running (same PID and start time)?
    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Field 22 of /proc/PID/stat: the process's start time in clock ticks.
fn start_time(pid: u32) -> Option<u64> {
    let s = read_proc(&format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Read a small /proc file. procfs reports size 0, so `fs::read_to_string`
/// starts from a 32-byte probe and doubles (six reads for /proc/PID/stat,
/// eight for /proc/self/status); one 4 KiB buffer takes it in one.
pub fn read_proc(path: &str) -> io::Result<String> {
    let mut s = String::with_capacity(4096);
    File::open(path)?.read_to_string(&mut s)?;
    Ok(s)
}

impl Alive for Record {
    /// Is the namespace still there? A process lives in it, or its anchor
    /// (a bind mount) still has its inode, and (the kernel reuses inodes) it
    /// has the recorded cookie.
    fn alive(&self) -> bool {
        let id: crate::sys::netns::NsId = self.netns.into();
        let Some(ns) = crate::sys::netns::find(id, self.anchor.as_deref()) else {
            return false;
        };
        match (self.cookie, crate::sys::netns::cookie(&ns)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

/// Is the host side of this record in the namespace pipe runs in now?
pub fn host_here(r: &Record) -> bool {
    r.host_ns
        .is_none_or(|h| crate::sys::netns::own_id().is_ok_and(|o| NsKey::from(o) == h))
        && match r.host_cookie {
            Some(c) => crate::sys::netns::own_cookie().is_none_or(|o| o == c),
            None => true,
        }
}

/// The state directory, opened without following symlinks. Files are created
/// 0600 and directories 0700 whatever the umask.
pub struct Store {
    /// `None`: opened for reading only ([`Store::peek`]) and there is no state directory.
    root: Option<OwnedFd>,
    /// Create missing directories and fix their modes; `false` for [`Store::peek`].
    create: bool,
    path: PathBuf,
    /// Subdirectories opened (and checked) once per Store: an attach asks for
    /// `attachments` four times and `locks` twice.
    subdirs: std::sync::Mutex<Vec<(String, OwnedFd)>>,
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

/// Open (with `create`, creating if needed) directory `name` under `dir` with mode 0700.
fn open_dir_at(
    dir: impl AsFd,
    name: &str,
    what: &std::path::Path,
    create: bool,
) -> io::Result<OwnedFd> {
    // Open first: the directory exists on every run but the first, and a
    // mkdirat that fails with EEXIST is a wasted path walk on each.
    let fd = match openat(dir.as_fd(), name, DIR_FLAGS, Mode::empty()) {
        Err(Errno::ENOENT) if create => {
            match mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(errno_io(e)),
            }
            openat(dir.as_fd(), name, DIR_FLAGS, Mode::empty())
        }
        r => r,
    };
    let fd = fd.map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => io::Error::other(format!(
            "{} is not a directory (a symlink or a file); pipe keeps its state in a real directory: remove it",
            what.display()
        )),
        e => errno_io(e),
    })?;
    secure_dir(&fd, what, create)?;
    Ok(fd)
}

/// A state directory must be root's own and 0700 (with `fix`, fixed if it is ours).
fn secure_dir(fd: &OwnedFd, what: &std::path::Path, fix: bool) -> io::Result<()> {
    let st = fstat(fd).map_err(errno_io)?;
    if st.st_uid != nix::unistd::geteuid().as_raw() {
        return Err(io::Error::other(format!(
            "{} belongs to uid {}, not to pipe's user; remove it or choose another --state-dir",
            what.display(),
            st.st_uid
        )));
    }
    if fix && st.st_mode & 0o077 != 0 {
        fchmod(fd, Mode::from_bits_truncate(0o700)).map_err(errno_io)?;
    }
    Ok(())
}

impl Store {
    /// Open the state directory (`--state-dir`, default /run/pipe), creating it.
    pub fn open() -> io::Result<Store> {
        Self::open_with(true)
    }

    /// Open the state directory for reading only, as a dry run does: nothing
    /// is created or changed (no directory, no lock file, no mode fixed). A
    /// missing state directory reads as one without records.
    pub fn peek() -> io::Result<Store> {
        Self::open_with(false)
    }

    fn open_with(create: bool) -> io::Result<Store> {
        let path = state_dir();
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let open_parent = || {
            nix::fcntl::open(
                parent,
                OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
                Mode::empty(),
            )
        };
        // The parent (/run) is there on every run but the first.
        let peek_none = || Store {
            root: None,
            create,
            path: path.clone(),
            subdirs: std::sync::Mutex::new(Vec::new()),
        };
        let pfd = match open_parent() {
            Err(nix::errno::Errno::ENOENT) if !create => return Ok(peek_none()),
            Err(nix::errno::Errno::ENOENT) => {
                std::fs::create_dir_all(parent)?;
                open_parent()
            }
            r => r,
        }
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
        let root = match open_dir_at(&pfd, name, &path, create) {
            Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(peek_none()),
            r => r?,
        };
        Ok(Store {
            root: Some(root),
            create,
            path,
            subdirs: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Refuse to change a store opened with [`Store::peek`] (a dry run).
    fn writable(&self) -> io::Result<()> {
        if self.create {
            Ok(())
        } else {
            Err(io::Error::other(
                "internal: a change asked of a state directory opened read-only (dry run)",
            ))
        }
    }

    /// A subdirectory (`attachments`, `netns`, `locks`), created 0700.
    pub fn dir(&self, name: &str) -> io::Result<OwnedFd> {
        let mut cache = self.subdirs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, fd)) = cache.iter().find(|(n, _)| n == name) {
            return fd.try_clone();
        }
        let root = self.root.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no state directory (dry run)")
        })?;
        let fd = open_dir_at(root, name, &self.path.join(name), self.create)?;
        cache.push((name.to_string(), fd.try_clone()?));
        Ok(fd)
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
        // Files here are written to a temporary and renamed into place, so
        // what fstat saw is the whole file: one read, not a second for EOF.
        let size = st.st_size as usize;
        let mut f = File::from(fd);
        let mut b = vec![0; size];
        let mut n = 0;
        while n < size {
            match f.read(&mut b[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        b.truncate(n);
        Ok(Some(b))
    }

    /// Write atomically: a 0600 temporary file created exclusively (no
    /// symlink followed), then renamed over `name`. No fsync: the state dir
    /// lives under /run (volatile by design), and an fsync there costs a disk
    /// flush where /run is not a tmpfs (200 ms measured) on every attach.
    pub fn write_at(dir: &OwnedFd, name: &str, body: &[u8]) -> io::Result<()> {
        let tmp = format!(".{name}.{}.tmp", std::process::id());
        let create = || {
            openat(
                dir,
                tmp.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        };
        // A leftover of a killed writer that had our PID: remove it, once.
        let fd = match create() {
            Err(Errno::EEXIST) => {
                let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
                create()
            }
            r => r,
        }
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
        let d = match self.records() {
            // Read-only (a dry run) and no records directory: no record.
            Err(e) if !self.create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
            r => r?,
        };
        let name = id.file_name();
        match Self::read_at(&d, &name, MAX_RECORD)? {
            None => Ok(None),
            Some(b) => parse_record(&name, &b).map(Some),
        }
    }

    pub fn save(&self, r: &Record) -> io::Result<()> {
        self.writable()?;
        let d = self.records()?;
        let mut body = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
        body.push(b'\n');
        Self::write_at(&d, &r.id().file_name(), &body)
    }

    pub fn remove(&self, id: &AttachmentId) -> io::Result<()> {
        self.writable()?;
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
    ///
    /// An attach calls this (`pipe apply` once per attachment), so it must not
    /// read every record each time: only files named `...@IFNAME.json` are
    /// considered, and the labels of each record file are remembered for the
    /// life of the process by (name, inode). A record is only ever replaced by
    /// a rename (a new inode), so a file seen before and not holding the label
    /// is skipped without a read; one that holds it is read and parsed afresh.
    pub fn find(&self, label: &str, ifname: Option<&str>) -> Vec<Record> {
        use std::collections::HashMap;
        use std::os::unix::fs::DirEntryExt;
        type Labels = HashMap<(String, u64), Vec<String>>;
        static SEEN: std::sync::Mutex<Option<Labels>> = std::sync::Mutex::new(None);

        let Ok(d) = self.records() else {
            return Vec::new();
        };
        let Ok(rd) = std::fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd())) else {
            return Vec::new();
        };
        let suffix = ifname.map(|i| format!("@{i}.json"));
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        let seen = seen.get_or_insert_with(HashMap::new);
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Ok(n) = e.file_name().into_string() else {
                continue;
            };
            if !n.ends_with(".json")
                || n.starts_with('.')
                || suffix.as_deref().is_some_and(|s| !n.ends_with(s))
            {
                continue;
            }
            let key = (n, e.ino());
            if seen
                .get(&key)
                .is_some_and(|ls| !ls.iter().any(|l| l == label))
            {
                continue;
            }
            let Ok(Some(b)) = Self::read_at(&d, &key.0, MAX_RECORD) else {
                continue;
            };
            let Ok(r) = parse_record(&key.0, &b) else {
                continue;
            };
            let mut ls = r.labels.clone();
            ls.push(r.label.clone());
            seen.insert(key, ls);
            if r.has_label(label) && ifname.is_none_or(|i| r.ifname.as_str() == i) {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.id().file_name());
        out
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
    ///
    /// Released with no record of the attachment on file (a refused or
    /// rolled-back first attach, a detach, a collection), the lock takes its
    /// file along, still holding it (see [`Lock`]): no verb leaves one behind.
    pub fn lock(&self, id: &AttachmentId, wait: bool) -> io::Result<Option<Lock>> {
        let mut lock = self.lock_file(&id.lock_name(), true, wait)?;
        if let Some(l) = lock.as_mut() {
            l.tidy = Some(Tidy {
                records: self.records()?,
                record: id.file_name(),
            });
        }
        Ok(lock)
    }

    /// The host-wide lock of shared objects (bridges, VLAN sub-interfaces,
    /// parents brought up): shared while an attach finds or creates one and
    /// joins it, exclusive around the read-decide-delete of one.
    pub fn shared_lock(&self, exclusive: bool) -> io::Result<Lock> {
        self.lock_file("shared.lock", exclusive, true)?
            .ok_or_else(|| io::Error::other("lock not taken"))
    }

    fn lock_file(&self, name: &str, exclusive: bool, wait: bool) -> io::Result<Option<Lock>> {
        self.writable()?;
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
                        dir: d,
                        tidy: None,
                    }));
                }
                _ => continue,
            }
        }
    }
}

/// A held flock; released on drop (and by the kernel if pipe is killed).
pub struct Lock {
    fd: OwnedFd,
    name: String,
    /// The `locks` directory the file is in.
    dir: OwnedFd,
    /// An attachment's lock ([`Store::lock`]): what its release checks.
    tidy: Option<Tidy>,
}

/// Where an attachment's record would be.
struct Tidy {
    records: OwnedFd,
    record: String,
}

impl Drop for Lock {
    /// An attachment with no record on file has no use for its lock file: it
    /// is removed here, before the flock goes with `fd`, so no one can be
    /// waiting on a file that goes away unnoticed (lockers check the inode
    /// after locking and take a new file). A killed run leaves it to gc.
    fn drop(&mut self) {
        if let Some(t) = &self.tidy
            && matches!(
                fstatat(&t.records, t.record.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW),
                Err(Errno::ENOENT)
            )
        {
            let _ = Store::remove_at(&self.dir, &self.name);
        }
    }
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
