//! What DEL, CHECK and GC need to find a CNI attachment again, keyed the way
//! the runtime names it (network, container ID, interface):
//! `<state_dir>/cni/<network>/<containerid>@<ifname>.json`.
//!
//! This is a stop-gap beside pipe's own attachment records: once those are
//! keyed by namespace identity with labels, a CNI attachment becomes a record
//! with the labels `cni.network`, `cni.containerID`, `cni.ifname`, and this
//! module's four functions (`load`, `save`, `remove`, `list`) map onto it.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::identity::NsKey;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Mapping {
    pub network: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// CNI_IFNAME: with the container ID, how the runtime names the attachment.
    pub ifname: String,
    /// The interface pipe made (the config's `ifname`, else CNI_IFNAME).
    pub guest_ifname: String,
    /// The label of pipe's own attachment record (and of its ownership tags).
    pub label: String,
    /// CNI_NETNS at ADD, to find the namespace when DEL comes without it.
    pub netns_path: String,
    /// The namespace's identity: a path that now leads elsewhere is not ours.
    pub netns: NsKey,
    pub kind: String,
    pub host_if: String,
    #[serde(default)]
    pub host_ifname: Option<String>,
    /// The network configuration of the ADD, to release IPAM in GC.
    #[serde(default)]
    pub config: Value,
}

fn net_dir(network: &str) -> PathBuf {
    crate::sys::store::state_dir()
        .join("cni")
        .join(encode(network))
}

/// File-name-safe: `[A-Za-z0-9_.-]` as is, anything else `%XX`.
fn encode(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    if o.starts_with('.') {
        o.replace_range(0..1, "%2E");
    }
    o
}

pub fn path(network: &str, container_id: &str, ifname: &str) -> PathBuf {
    net_dir(network).join(format!("{}@{}.json", encode(container_id), encode(ifname)))
}

pub fn load(network: &str, container_id: &str, ifname: &str) -> io::Result<Option<Mapping>> {
    read(&path(network, container_id, ifname))
}

fn read(p: &Path) -> io::Result<Option<Mapping>> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write atomically (temporary file, then rename).
pub fn save(m: &Mapping) -> io::Result<()> {
    let d = net_dir(&m.network);
    std::fs::create_dir_all(&d)?;
    let p = path(&m.network, &m.container_id, &m.ifname);
    let tmp = d.join(format!(".tmp.{}", std::process::id()));
    let body = serde_json::to_vec_pretty(m).map_err(io::Error::other)?;
    let r = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        std::fs::rename(&tmp, &p)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

pub fn remove(network: &str, container_id: &str, ifname: &str) -> io::Result<()> {
    match std::fs::remove_file(path(network, container_id, ifname)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Every mapping of a network; unreadable files come back as errors.
pub fn list(network: &str) -> Vec<Result<Mapping, String>> {
    let Ok(rd) = std::fs::read_dir(net_dir(network)) else {
        return Vec::new();
    };
    let mut ps: Vec<PathBuf> = rd
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
    ps.sort();
    ps.into_iter()
        .filter_map(|p| match read(&p) {
            Ok(Some(m)) => Some(Ok(m)),
            Ok(None) => None,
            Err(e) => Some(Err(format!("{}: {e}", p.display()))),
        })
        .collect()
}

/// The network's lock, held for one whole verb: ADD, DEL and GC of the same
/// network never interleave (GC must not collect an ADD in progress).
pub struct Lock {
    _f: nix::fcntl::Flock<File>,
}

pub enum LockError {
    /// Another pipe held it for the whole wait: the runtime may try again.
    Busy(PathBuf),
    Io(PathBuf, io::Error),
}

pub fn lock(network: &str, wait: Duration) -> Result<Lock, LockError> {
    use nix::fcntl::{Flock, FlockArg};
    let d = net_dir(network);
    let p = d.join(".lock");
    let open = || -> io::Result<File> {
        std::fs::create_dir_all(&d)?;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
    };
    let mut f = open().map_err(|e| LockError::Io(p.clone(), e))?;
    let start = Instant::now();
    loop {
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(Lock { _f: l }),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) => {
                if start.elapsed() >= wait {
                    return Err(LockError::Busy(p));
                }
                f = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((_, e)) => return Err(LockError::Io(p, e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_file_safe() {
        assert_eq!(encode("pipenet"), "pipenet");
        assert_eq!(encode("../x"), "%2E.%2Fx");
        assert_eq!(encode("a b"), "a%20b");
    }
}
