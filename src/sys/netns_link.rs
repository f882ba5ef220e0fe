//! Names under /var/run/netns: what is at one (for `ip netns` users), and the
//! symlinks pipe makes and removes, each proven by a marker in the state dir.

use std::io;
use std::os::unix::fs::MetadataExt;

use log::debug;

use crate::domain::identity::{NetnsName, NsKey};
use crate::sys::netns::{NETNS_RUN_DIR, Netns, NsId, link_path};
use crate::sys::store::Store;

/// What is at /var/run/netns/NAME now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Missing,
    /// Already a link to this very namespace.
    Same,
    /// A dangling symlink (the process is gone), or a symlink pipe made for this
    /// name that now leads to another namespace (the container restarted).
    Stale,
    /// A link to another namespace that is still in use.
    Other,
}

pub fn link_state(name: &str, ns: &Netns) -> io::Result<LinkState> {
    let p = link_path(name);
    let lmd = match std::fs::symlink_metadata(&p) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LinkState::Missing),
        Err(e) => return Err(e),
    };
    let md = match std::fs::metadata(&p) {
        Ok(md) => md,
        // A symlink to /proc/PID/ns/net of a process that is gone: harmless.
        Err(e) if e.kind() == io::ErrorKind::NotFound && lmd.file_type().is_symlink() => {
            return Ok(LinkState::Stale);
        }
        Err(e) => return Err(e),
    };
    let id = NsId {
        dev: md.dev(),
        ino: md.ino(),
    };
    if id == ns.id {
        return Ok(LinkState::Same);
    }
    // A symlink pipe made for this name that now leads elsewhere: the container
    // restarted and its old PID was reused. Anything else (`ip netns add`,
    // `ip netns attach`, another tool's link) is not ours to replace.
    if lmd.file_type().is_symlink() && created_by_pipe(name) {
        return Ok(LinkState::Stale);
    }
    Ok(LinkState::Other)
}

/// Did pipe make /var/run/netns/NAME (rather than `ip netns add` or a user)?
pub fn created_by_pipe(name: &str) -> bool {
    // A question only: read the markers, create nothing.
    crate::sys::store::Store::peek()
        .ok()
        .and_then(|s| s.netns_mark(name))
        .is_some()
}

/// Link /var/run/netns/NAME to the namespace as pipework did: a symlink to
/// /proc/PID/ns/net. Unlike a bind mount (`ip netns attach`), a symlink does not
/// keep the namespace alive, so `docker stop` still tears the container's
/// network down, host-side veth ends included; once the process is gone the
/// link dangles and the next attach replaces it. pipe itself never acts through
/// the link (it holds the namespace's descriptor), so a recycled PID cannot
/// misdirect an attach. The marker (which namespace pipe made the link for) is
/// written first: a crash in between leaves a marker without a link, which gc
/// removes, never a link pipe cannot prove it made.
pub fn create_link(store: &Store, name: &NetnsName, ns: &Netns) -> io::Result<()> {
    std::fs::create_dir_all(NETNS_RUN_DIR)?;
    let p = link_path(name.as_str());
    store.mark_netns(name, ns.id.into())?;
    debug!("netns: link {} -> {}", p.display(), ns.path.display());
    if let Err(e) = std::os::unix::fs::symlink(&ns.path, &p) {
        let _ = store.unmark_netns(name.as_str());
        return Err(e);
    }
    Ok(())
}

/// Remove /var/run/netns/NAME if pipe made it for namespace `ns`: the marker
/// must name that namespace and the link must be a symlink (pipe never makes
/// bind mounts, and never unmounts one: those are `ip netns add`'s). Missing is done.
pub fn remove_link(store: &Store, name: &str, ns: NsKey) -> io::Result<bool> {
    match store.netns_mark(name) {
        Some(m) if m == ns => {}
        // Not ours (or another namespace's now): leave it.
        _ => return Ok(false),
    }
    let p = link_path(name);
    match std::fs::symlink_metadata(&p) {
        Ok(md) if md.file_type().is_symlink() => {
            debug!("netns: unlink {}", p.display());
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(_) => {
            // Someone replaced our symlink with something else: not ours any more.
            store.unmark_netns(name)?;
            return Ok(false);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    store.unmark_netns(name)?;
    Ok(true)
}
