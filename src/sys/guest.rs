//! From what the operator typed to an open network namespace: a PID, a netns
//! path or name under /var/run/netns, or a Docker container.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use log::debug;

use crate::domain::error::{Error, Result};
use crate::domain::spec::{GuestRef, valid_netns_name};
use crate::sys::netns::{self, Netns};
use crate::sys::netns_link;

/// The container we act on.
#[derive(Debug)]
pub struct Target {
    /// How output names it: the container name, the PID or the netns name/path.
    pub label: String,
    pub netns: Netns,
    /// The name to link it under in /var/run/netns (`None`: nothing to link,
    /// e.g. the guest already is a named netns, or a bare path).
    pub link_name: Option<String>,
    /// Key for derived host-side names (the PID, else the namespace inode).
    pub key: String,
    /// Something the operator should know (e.g. a shared namespace).
    pub note: Option<String>,
    /// The label names this one namespace, not a container across restarts
    /// (a PID, /proc/PID/ns/net, a CNI container ID): no record of an earlier
    /// incarnation can carry it, so an attach looks for none.
    pub once: bool,
}

pub async fn resolve(guest: &GuestRef, timeout: Duration) -> Result<Target> {
    let mut t = match guest {
        GuestRef::Pid(pid) => by_pid(*pid, pid.to_string(), Some(pid.to_string()))?,
        GuestRef::Path(p) => by_path(p)?,
        GuestRef::Name(n) => {
            let p = netns::link_path(n);
            // A link pipe made for a container is resolved through Docker again:
            // after `docker restart` it points at the old, dead namespace.
            if valid_netns_name(n) && p.exists() && !netns_link::created_by_pipe(n) {
                let ns = open(&p, || format!("netns {n}"))?;
                Target {
                    label: n.clone(),
                    key: ns.id.ino.to_string(),
                    netns: ns,
                    link_name: None,
                    note: None,
                    once: false,
                }
            } else {
                by_docker(n, timeout).await?
            }
        }
    };
    // A PID names one process (a record under the same PID is an unrelated
    // process that had it before, left to gc).
    t.once = match guest {
        GuestRef::Pid(_) => true,
        GuestRef::Path(p) => p.starts_with("/proc/"),
        GuestRef::Name(_) => false,
    };
    if !t.netns.is_netns() {
        return Err(Error::Usage(format!(
            "{} is not a network namespace; give a PID, /proc/PID/ns/net, a name under {}, or a container",
            t.netns.path.display(),
            netns::NETNS_RUN_DIR
        )));
    }
    // The initial namespace is the machine's own network even when pipe runs in
    // another namespace (e.g. `ip netns exec`); a PID of a kernel thread or of
    // any process on the host network leads there too.
    if init_netns().contains(&t.netns.id) {
        return Err(Error::Refused(format!(
            "{} is in the initial network namespace (that of PID 1 and the kernel: the host's own network); \
             attaching would change the host network itself, so pipe refuses: check the PID, or give a \
             container with its own namespace",
            t.label
        )));
    }
    if netns::own_id().ok() == Some(t.netns.id) {
        return Err(Error::Refused(format!(
            "{} shares pipe's own network namespace (the host's); attaching would change the host network itself, \
             so pipe refuses: give a container that has its own namespace",
            t.label
        )));
    }
    Ok(t)
}

/// The namespaces of PID 1 and of kthreadd (PID 2): kernel threads always live
/// in the initial network namespace, the machine's own network, so this works
/// even where PID 1's namespace cannot be read (as in some sandboxes).
fn init_netns() -> Vec<netns::NsId> {
    use std::os::unix::fs::MetadataExt;
    ["/proc/1/ns/net", "/proc/2/ns/net"]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|md| netns::NsId {
            dev: md.dev(),
            ino: md.ino(),
        })
        .collect()
}

fn open(p: &std::path::Path, what: impl Fn() -> String) -> Result<Netns> {
    Netns::open(p).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::Refused(format!(
            "{} does not exist ({}); is the container still running?",
            what(),
            p.display()
        )),
        io::ErrorKind::PermissionDenied => Error::Refused(format!(
            "cannot open {}: permission denied; pipe needs CAP_NET_ADMIN and CAP_SYS_ADMIN: run it as root",
            p.display()
        )),
        io::ErrorKind::InvalidInput => Error::Usage(format!(
            "{} is not a network namespace ({e}); give a PID, /proc/PID/ns/net, a name under {}, or a container",
            p.display(),
            netns::NETNS_RUN_DIR
        )),
        _ => Error::Refused(format!("cannot open {} for {}: {e}", p.display(), what())),
    })
}

fn by_pid(pid: u32, label: String, link_name: Option<String>) -> Result<Target> {
    let p = PathBuf::from(format!("/proc/{pid}/ns/net"));
    debug!("guest: PID {pid} -> {}", p.display());
    let ns = open(&p, || format!("process {pid}"))?;
    Ok(Target {
        label,
        netns: ns,
        link_name,
        key: pid.to_string(),
        note: None,
        once: false,
    })
}

fn by_path(p: &std::path::Path) -> Result<Target> {
    // /proc/PID/ns/net is a PID in disguise: link it by PID like pipework did.
    let pid = p
        .strip_prefix("/proc")
        .ok()
        .and_then(|r| r.to_str())
        .and_then(|r| r.strip_suffix("/ns/net"))
        .and_then(|r| r.parse::<u32>().ok());
    if let Some(pid) = pid {
        return by_pid(pid, pid.to_string(), Some(pid.to_string()));
    }
    let ns = open(p, || format!("netns file {}", p.display()))?;
    Ok(Target {
        label: p.display().to_string(),
        key: ns.id.ino.to_string(),
        netns: ns,
        link_name: None,
        note: None,
        once: false,
    })
}

async fn by_docker(name: &str, timeout: Duration) -> Result<Target> {
    use crate::sys::docker::{self, NetMode};
    let c = docker::resolve(name, timeout).await?;
    debug!("guest: container {} ({}) has PID {}", c.name, c.id, c.pid);
    let note = match &c.net {
        NetMode::Host => {
            return Err(Error::Refused(format!(
                "container {} runs with --net=host: it has no network namespace of its own, and \
                 attaching would change the host's network; use a container with its own network",
                c.name
            )));
        }
        NetMode::Shared { with } => Some(format!(
            "container {} shares the network namespace of {with} (--net=container:{with}); \
             the interface is visible in both",
            c.name
        )),
        NetMode::Own => None,
    };
    let link_name = valid_netns_name(&c.name).then(|| c.name.clone());
    let mut t = by_pid(c.pid, c.name.clone(), link_name)?;
    t.note = note;
    Ok(t)
}
