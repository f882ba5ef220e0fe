//! `pipe gc`: remove what is left of attachments whose namespace is gone, and
//! of attaches that were killed half-way; never anything live or not pipe's.
//!
//! - records whose namespace is gone (no process in it, and no bind mount with
//!   its inode): the host end of the veth if it carries exactly that
//!   attachment's tag, shared links nothing uses any more, the /var/run/netns
//!   link pipe made for it, and the record (records of `--persist` attachments
//!   and of attachments-file entries stay: `pipe watch` applies them again);
//! - pending records whose writer is dead: everything their journal names that
//!   is still there and carries their tag (or no tag: the kernel cannot tag in
//!   the creating request), in the namespace if it lives;
//! - /var/run/netns symlinks pipe made (it keeps a marker naming the
//!   namespace) that dangle or lead to another namespace now;
//! - host links carrying an attachment's tag whose namespace and record are gone;
//! - shared links tagged `pipe:shared` that nothing uses;
//! - temporary files of writers that were killed, and lock files of records
//!   that are gone.
//!
//! A record that does not parse, names paths outside pipe's directories, or is
//! a symlink is reported and left alone. With `--dry-run` it only lists.

use crate::domain::error::{Error, Result};
use crate::domain::identity::{AttachmentId, SHARED_TAG};
use crate::exec::{self, Cx};
use crate::planning::ops::{Owner, Teardown};
use crate::sys::netlink::Netlink;
use crate::sys::netns::{self, NsId};
use crate::sys::netns_link;
use crate::sys::store::Store;
use crate::verbs::detach;

/// Collect (or, with `dry_run`, list) garbage; returns what was (or would be) removed.
pub async fn gc(dry_run: bool) -> Result<Vec<String>> {
    let host =
        Netlink::current().map_err(|c| Error::kernel("opening a netlink socket on the host", c))?;
    let store = detach::open_store_for(dry_run)?;
    let (removed, fails) = collect_all(&store, &host, dry_run).await?;
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

pub async fn collect_all(
    store: &Store,
    host: &Netlink,
    dry_run: bool,
) -> Result<(Vec<String>, Vec<String>)> {
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut removed = Vec::new();
    let mut fails = Vec::new();

    for r in store.all() {
        match r {
            Err(e) => fails.push(format!("refused record {e} (left as it is)")),
            Ok(r) => match detach::collect(store, host, &r, dry_run).await {
                Ok(v) => removed.extend(v),
                Err(v) => fails.extend(v),
            },
        }
    }
    let records: Vec<_> = store.all().into_iter().flatten().collect();

    // /var/run/netns links pipe made that no record accounts for.
    for name in store.netns_marks() {
        let Some(mark) = store.netns_mark(&name) else {
            continue;
        };
        if records
            .iter()
            .any(|r| r.netns == mark && r.netns_link().map(|n| n.as_str()) == Some(name.as_str()))
        {
            continue;
        }
        let p = netns::link_path(&name);
        let id: NsId = mark.into();
        let live = netns::path_is(&p, id) && netns::any_process_in(id);
        if live {
            continue;
        }
        if dry_run {
            removed.push(format!("{verb} {}", p.display()));
            continue;
        }
        match netns_link::remove_link(store, &name, mark) {
            Ok(true) => removed.push(format!("{verb} {}", p.display())),
            Ok(false) => {}
            Err(e) => fails.push(format!("{}: {e}", p.display())),
        }
    }

    for (sub, name) in store.stale_tmp() {
        if dry_run || store.remove_in(&sub, &name).is_ok() {
            removed.push(format!(
                "{verb} {}",
                store.path().join(&sub).join(&name).display()
            ));
        }
    }

    let links = host
        .links()
        .await
        .map_err(|c| Error::kernel("listing host interfaces", c))?;
    let mut ops = Vec::new();
    for l in &links {
        let Some(alias) = l.alias.as_deref() else {
            continue;
        };
        let Ok(name) = l.name.parse() else { continue };
        if alias == SHARED_TAG {
            ops.push(Teardown::ReleaseShared {
                name,
                untagged: false,
                except: None,
            });
        } else if let Some(id) = AttachmentId::from_tag(alias)
            && !records.iter().any(|r| r.id() == id)
            && !netns::any_process_in(id.ns.into())
        {
            // The host end of a veth whose record is gone and whose namespace
            // is dead (a veth pair normally dies with its namespace).
            ops.push(Teardown::DeleteHostLink {
                name,
                owner: Owner::Tag(id),
            });
        }
    }
    // Open vSwitch ports whose attachment is gone (their rows outlive the veth).
    match crate::verbs::ovs::stale_ports(&records) {
        Ok(v) => ops.extend(v),
        Err(e) => fails.push(e),
    }
    let cx = Cx {
        host,
        guest: None,
        netns: None,
        label: "host",
        store,
    };
    if dry_run {
        for o in &ops {
            if let Some(x) = exec::would(o, &cx).await {
                removed.push(format!("{verb} {x}"));
            }
        }
    } else {
        let done = exec::teardown(&ops, &cx).await;
        removed.extend(done.removed.into_iter().map(|x| format!("{verb} {x}")));
        fails.extend(done.failed);
        // Lock files of attachments without a record.
        if let Ok(d) = store.dir("locks") {
            for n in Store::list_at(&d).unwrap_or_default() {
                let Some(stem) = n.strip_suffix(".lock") else {
                    continue;
                };
                let json = format!("{stem}.json");
                if records.iter().any(|r| r.id().file_name() == json) {
                    continue;
                }
                // Taken and released at once (unless busy): an attachment's
                // lock takes its file along when there is no record.
                if let Some(id) = parse_stem(stem) {
                    let _ = store.lock(&id, false);
                }
            }
        }
    }
    Ok((removed, fails))
}

/// `DEV-INO@IFNAME` back to an identity.
fn parse_stem(stem: &str) -> Option<AttachmentId> {
    let (ns, ifname) = stem.split_once('@')?;
    AttachmentId::from_tag(&format!("pipe:{ns}:{ifname}"))
}
