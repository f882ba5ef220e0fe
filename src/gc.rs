//! `pipe gc`: remove what is left of attachments whose container is gone.
//!
//! - state records whose namespace no process lives in any more (records of
//!   `--persist` attachments and of attachments-file entries stay: `pipe watch`
//!   applies them again, with the same MAC, on start);
//! - /var/run/netns links pipe made that point to such a namespace;
//! - host ends of veths pipe tagged whose record is gone;
//! - bridges pipe created (alias `pipe:shared`) with no port left that no
//!   record names.
//!
//! With `--dry-run` it only lists them.

use log::debug;

use crate::error::{Error, Result};
use crate::netlink::Netlink;
use crate::netns::{self, NsId};
use crate::state::{self, Record, SHARED_TAG};

/// Is the namespace a record was made in still used by some process?
pub fn alive(r: &Record) -> bool {
    match r.netns {
        Some(k) => netns::any_process_in(NsId {
            dev: k.dev,
            ino: k.ino,
        }),
        // Unknown: never collect what we cannot judge.
        None => true,
    }
}

/// The names under /var/run/netns that pipe made.
fn pipe_netns_links() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(crate::state_dir().join("netns")) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Is /var/run/netns/NAME (made by pipe) dead: missing, or no process in it?
fn netns_link_dead(name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(netns::link_path(name)) {
        Ok(md) => !netns::any_process_in(NsId {
            dev: md.dev(),
            ino: md.ino(),
        }),
        Err(_) => true,
    }
}

/// Collect (or, with `dry_run`, list) garbage; returns what was (or would be) removed.
pub async fn gc(dry_run: bool) -> Result<Vec<String>> {
    let host =
        Netlink::current().map_err(|c| Error::kernel("opening a netlink socket on the host", c))?;
    let mut removed = Vec::new();
    let mut fails = Vec::new();
    let verb = if dry_run { "would remove" } else { "removed" };

    let mut keep: Vec<Record> = Vec::new();
    for r in state::all() {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                fails.push(format!("unreadable record {e}"));
                continue;
            }
        };
        if alive(&r) {
            keep.push(r);
            continue;
        }
        debug!("gc: {}/{}: container gone", r.label, r.ifname);
        // The container's end died with its namespace, and a veth's host end with it.
        if let Some(h) = &r.host_ifname
            && let Ok(Some(l)) = host.link(h).await
            && state::is_tag(l.alias.as_deref())
            && l.alias.as_deref() != Some(SHARED_TAG)
        {
            match if dry_run {
                Ok(())
            } else {
                host.delete_link(l.index).await
            } {
                Ok(()) => removed.push(format!("{verb} host interface {h}")),
                // The kernel took it down with the dead namespace meanwhile.
                Err(c) if c.errno == 19 => {}
                Err(c) => fails.push(format!("host interface {h} ({c})")),
            }
        }
        if r.kept() {
            // For `pipe watch` (the spec, or the MAC of a file entry): kept until `pipe detach`.
            keep.push(r);
            continue;
        }
        if !dry_run && let Err(e) = state::remove(&r.label, &r.ifname) {
            fails.push(format!("{}: {e}", r.path().display()));
        } else {
            removed.push(format!("{verb} record {}", r.path().display()));
        }
    }

    for name in pipe_netns_links() {
        if !netns_link_dead(&name) {
            continue;
        }
        if !dry_run && let Err(e) = netns::remove_link(&name) {
            fails.push(format!("{}: {e}", netns::link_path(&name).display()));
        } else {
            removed.push(format!("{verb} {}", netns::link_path(&name).display()));
        }
    }

    let links = host
        .links()
        .await
        .map_err(|c| Error::kernel("listing host interfaces", c))?;
    for b in links
        .iter()
        .filter(|l| l.alias.as_deref() == Some(SHARED_TAG))
    {
        // A bridge with a port is in use; so is anything a remaining record names.
        let has_port = b.is_bridge() && links.iter().any(|l| l.master == Some(b.index));
        let named = keep.iter().any(|r| r.host_if == b.name);
        if has_port || named {
            continue;
        }
        let what = if b.is_bridge() {
            "bridge"
        } else {
            "host interface"
        };
        if !dry_run && let Err(c) = host.delete_link(b.index).await {
            fails.push(format!("{what} {} ({c})", b.name));
        } else {
            removed.push(format!("{verb} {what} {}", b.name));
        }
    }

    if fails.is_empty() {
        Ok(removed)
    } else {
        Err(Error::Refused(format!(
            "gc could not remove: {}{}",
            fails.join("; "),
            if removed.is_empty() {
                String::new()
            } else {
                format!(" ({})", removed.join(", "))
            }
        )))
    }
}
