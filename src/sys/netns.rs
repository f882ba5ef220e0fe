//! Network namespace handles: open once, open a netlink socket inside, and
//! link into /var/run/netns for users of `ip netns`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use log::debug;
use nix::sched::{CloneFlags, setns};

pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// A namespace's identity: the (device, inode) of its nsfs file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

/// An open network namespace, held for the whole run (no PID-reuse race).
#[derive(Debug)]
pub struct Netns {
    pub fd: OwnedFd,
    pub id: NsId,
    /// The path it was opened from (for messages and `--dry-run`).
    pub path: PathBuf,
}

impl Netns {
    pub fn open(path: &Path) -> io::Result<Netns> {
        // O_NONBLOCK: a FIFO given as a namespace must not hang the open; an
        // nsfs file is a regular file, anything else is refused here.
        let f: File = crate::sys::files::open_nonblocking(path)?;
        let md = f.metadata()?;
        if !md.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("it is {}", crate::sys::files::kind_of(md.file_type())),
            ));
        }
        Ok(Netns {
            fd: f.into(),
            id: NsId {
                dev: md.dev(),
                ino: md.ino(),
            },
            path: path.to_path_buf(),
        })
    }

    /// Is this file a network namespace at all? Compares with our own netns's
    /// filesystem (nsfs): any other file would fail later in `setns`.
    pub fn is_netns(&self) -> bool {
        // One ioctl would say it exactly (NS_GET_NSTYPE); a stat comparison is
        // enough to reject a regular file or directory.
        own_id().map(|o| o.dev == self.id.dev).unwrap_or(false)
    }
}

/// The calling thread's network namespace.
pub fn own_id() -> io::Result<NsId> {
    let md = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok(NsId {
        dev: md.dev(),
        ino: md.ino(),
    })
}

/// A netlink route socket created inside `ns`.
///
/// A socket stays in the namespace it was created in, so the calling thread
/// enters `ns` just long enough to open it (see `run_in`).
pub fn socket_in(ns: &Netns) -> io::Result<netlink_sys::Socket> {
    run_in(ns, || {
        netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
    })
}

/// Run `f` with the calling thread inside `ns`, and return what it returns.
/// For creating sockets (packet, UDP, netlink) that must live in the
/// container's namespace.
///
/// Namespace membership is per thread: the thread enters `ns`, runs `f` and
/// returns to the namespace it was in, also when `f` fails or panics. This
/// used to be a short-lived thread; entering on the calling thread saves a
/// thread start per call (about 0.3 ms of a 5 ms attach, `docs/performance.md`).
/// Should the way back fail, the process aborts: no later code may run in the
/// container's namespace believing it is on the host.
pub fn run_in<T, F>(ns: &Netns, f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T>,
{
    let home: OwnedFd = File::open("/proc/thread-self/ns/net")?.into();
    setns(ns.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    let _back = Return(home);
    f()
}

/// Takes the calling thread back to its namespace when dropped.
struct Return(OwnedFd);

impl Drop for Return {
    fn drop(&mut self) {
        if let Err(e) = setns(self.0.as_fd(), CloneFlags::CLONE_NEWNET) {
            eprintln!("pipe: cannot return to the host network namespace ({e}); aborting");
            std::process::abort();
        }
    }
}

/// Write a net sysctl (`net/ipv6/conf/eth1/accept_ra`) of namespace `ns`:
/// /proc/sys/net shows the namespace of the thread that opens it.
pub fn set_sysctl(ns: &Netns, key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{key}");
    let value = value.to_string();
    debug!("netns: sysctl {key}={value}");
    run_in(ns, move || std::fs::write(&path, value.as_bytes()))
}

pub fn link_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Does `path` (followed) lead to the namespace `id`?
pub fn path_is(path: &Path, id: NsId) -> bool {
    std::fs::metadata(path).is_ok_and(|md| md.dev() == id.dev && md.ino() == id.ino)
}

/// The namespace's cookie (`SO_NETNS_COOKIE`): unlike the nsfs inode, which
/// the kernel reuses soon after a namespace dies, it is never reused while the
/// machine runs. `None` on kernels before 5.14.
pub fn cookie_of_socket(fd: std::os::fd::RawFd) -> Option<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let mut v: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut v as *mut u64).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

/// The cookie of the calling thread's namespace.
pub fn own_cookie() -> Option<u64> {
    use std::os::fd::AsRawFd;
    // Any socket will do; a netlink one needs no address in the namespace.
    let s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE).ok()?;
    cookie_of_socket(s.as_raw_fd())
}

/// The cookie of namespace `ns` (a socket is opened inside it for the question).
pub fn cookie(ns: &Netns) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let s = socket_in(ns).ok()?;
    cookie_of_socket(s.as_raw_fd())
}

/// Open the namespace `id` if it still exists: through `anchor` (a bind
/// mount) when that still has its inode, else through a process living in it.
pub fn find(id: NsId, anchor: Option<&Path>) -> Option<Netns> {
    if let Some(a) = anchor
        && let Ok(ns) = Netns::open(a)
        && ns.id == id
    {
        return Some(ns);
    }
    let pid = process_in(id)?;
    Netns::open(&PathBuf::from(format!("/proc/{pid}/ns/net")))
        .ok()
        .filter(|ns| ns.id == id)
}

/// A process living in namespace `id`, if any.
pub fn process_in(id: NsId) -> Option<u32> {
    let rd = std::fs::read_dir("/proc").ok()?;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(s) = name.to_str() else { continue };
        let Ok(pid) = s.parse::<u32>() else { continue };
        if let Ok(md) = std::fs::metadata(format!("/proc/{s}/ns/net"))
            && md.dev() == id.dev
            && md.ino() == id.ino
        {
            return Some(pid);
        }
    }
    None
}

/// Does namespace `id` exist: a process in it, or a name under /var/run/netns?
pub fn exists(id: NsId) -> bool {
    if let Ok(rd) = std::fs::read_dir(NETNS_RUN_DIR) {
        for e in rd.flatten() {
            if path_is(&e.path(), id) {
                return true;
            }
        }
    }
    any_process_in(id)
}

/// Does any process live in the namespace `id`? Only used on the rare path
/// where a name is already taken by another namespace.
pub fn any_process_in(id: NsId) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return true;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(s) = name.to_str() else { continue };
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(md) = std::fs::metadata(format!("/proc/{s}/ns/net"))
            && md.dev() == id.dev
            && md.ino() == id.ino
        {
            return true;
        }
    }
    false
}

impl From<NsId> for crate::domain::identity::NsKey {
    fn from(n: NsId) -> crate::domain::identity::NsKey {
        crate::domain::identity::NsKey {
            dev: n.dev,
            ino: n.ino,
        }
    }
}

impl From<crate::domain::identity::NsKey> for NsId {
    fn from(k: crate::domain::identity::NsKey) -> NsId {
        NsId {
            dev: k.dev,
            ino: k.ino,
        }
    }
}
