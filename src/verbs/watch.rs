//! `pipe watch`: follow the Docker Engine's event stream and apply the
//! persistent attachments of a container each time it starts (and clean up
//! what its death leaves behind).
//!
//! Persistent attachments come from the attachments file (`--file`, default
//! /etc/pipe/attachments.toml; see `attachments`) and from the state records
//! of attaches run with `--persist`; both are read again at every start, so
//! edits need no restart. A container keeps the MAC its interface had the
//! first time (from its record) unless the entry gives one.
//!
//! It survives the daemon: on any error it reconnects with backoff (0.1 s
//! doubling to 5 s), and each (re)connection first asks for the events since
//! just before it lists the running containers and applies their attachments
//! (catch-up), so a start during the gap is never missed; applying twice is a
//! no-op ("already attached").
//!
//! The Engine (its event stream and container list, with each container's
//! `pipe.*` labels) is reached through `sys::docker::Watcher`.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use log::{debug, info, warn};

use crate::domain::attachments::{self, DEFAULT_FILE};
use crate::domain::error::{Error, Result};
use crate::domain::spec::{AttachSpec, GuestRef};
use crate::sys::netlink::Netlink;
use crate::sys::store::{self as state, Alive};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A container's `pipe.IFNAME` labels: (key, value), sorted.
pub use crate::sys::docker::Labels;

/// The attachments a container's labels declare, minus those the file or a
/// `--persist` record gives for the same interface: label < record < file.
/// A bad label is reported and skipped.
pub fn from_labels(id: &str, name: &str, labels: &Labels, wanted: &[Wanted]) -> Vec<Wanted> {
    let mut out = Vec::new();
    for r in
        crate::domain::labels::parse(name, labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        match r {
            Ok((_, spec)) => {
                if wanted
                    .iter()
                    .any(|w| w.spec.ifname == spec.ifname && matches(&w.container, id, name))
                {
                    debug!(
                        "watch: label pipe.{} of {name} is overridden by the file or a record",
                        spec.ifname
                    );
                    continue;
                }
                out.push(Wanted {
                    spec,
                    container: name.to_string(),
                    persist: false,
                });
            }
            Err(e) => eprintln!("pipe: watch: container {name}: {e}; that label is skipped"),
        }
    }
    out
}

/// One attachment to keep applied.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub spec: AttachSpec,
    /// The container as the entry names it (name, or ID or ID prefix).
    pub container: String,
    /// From a `--persist` record (the record stays persistent when re-applied).
    pub persist: bool,
}

pub use crate::sys::docker::Event;

/// Does `container` (an entry's name, ID or ID prefix) denote this container?
pub fn matches(container: &str, id: &str, name: &str) -> bool {
    let c = container.strip_prefix('/').unwrap_or(container);
    c == name || (c.len() >= 4 && id.starts_with(c))
}

/// Read the attachments file and the persistent records. The file wins over
/// a record for the same container and interface.
pub fn load_wanted(file: &Path) -> Result<Vec<Wanted>> {
    let mut out: Vec<Wanted> = Vec::new();
    match crate::sys::files::read_text(file) {
        Ok(text) => {
            let entries =
                attachments::parse(&text, &file.display().to_string()).map_err(Error::Usage)?;
            for (e, spec) in entries {
                out.push(Wanted {
                    spec,
                    container: e.container,
                    persist: false,
                });
            }
        }
        Err(crate::sys::files::ReadError::Io(e))
            if e.kind() == std::io::ErrorKind::NotFound && file == Path::new(DEFAULT_FILE) => {}
        Err(e) => {
            return Err(Error::Refused(format!(
                "cannot read attachments file {}: {e}",
                file.display()
            )));
        }
    }
    let store = crate::verbs::detach::open_store()?;
    for r in store.all().into_iter().flatten().filter(|r| r.persist) {
        let Ok(mut spec) = r.spec.to_spec() else {
            warn!(
                "record {} has an unusable spec; skipped",
                store.record_path(&r.id()).display()
            );
            continue;
        };
        if out
            .iter()
            .any(|w| w.container == r.label && w.spec.ifname == spec.ifname)
        {
            continue;
        }
        spec.guest = GuestRef::Name(r.label.clone());
        out.push(Wanted {
            spec,
            container: r.label.clone(),
            persist: true,
        });
    }
    Ok(out)
}

/// Run until stopped (or, with `once`, after one catch-up).
pub async fn watch(file: &Path, once: bool) -> Result<()> {
    // A broken file is an error at start, not a surprise at the first event.
    let n = load_wanted(file)?.len();
    info!("watch: {n} persistent attachment(s)");
    let host =
        Netlink::current().map_err(|c| Error::kernel("opening a netlink socket on the host", c))?;
    let mut backoff = BACKOFF_MIN;
    loop {
        let connected = std::cell::Cell::new(false);
        let r = session(file, once, &host, &connected).await;
        match r {
            Ok(()) => return Ok(()),
            Err(e) if once => return Err(e),
            Err(e) => {
                if connected.get() {
                    backoff = BACKOFF_MIN;
                }
                eprintln!(
                    "pipe: watch: {e}; reconnecting in {:.1}s",
                    backoff.as_secs_f64()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// One connection: subscribe, catch up, then follow events until an error.
async fn session(
    file: &Path,
    once: bool,
    host: &Netlink,
    connected: &std::cell::Cell<bool>,
) -> Result<()> {
    let eng = crate::sys::docker::Watcher::connect().await?;
    connected.set(true);
    // Events are asked for from just before the listing: a container that
    // starts in between shows up in both, and applying twice is a no-op.
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let running = eng.running().await?;
    info!("watch: connected; {} running container(s)", running.len());
    let n = running.len();
    for (id, name, labels) in running {
        apply(file, &id, &name, &labels, None).await;
    }
    // Caught up: under systemd (Type=notify) the service is now started.
    crate::sys::notify::ready(&format!(
        "caught up with {n} running container(s); following events"
    ));
    if once {
        return Ok(());
    }
    let mut events = std::pin::pin!(eng.events(since));
    while let Some(ev) = events.next().await {
        match ev? {
            Event::Start {
                id,
                name,
                labels,
                time_nano,
            } => apply(file, &id, &name, &labels, time_nano).await,
            Event::Die { id, name } => died(&id, &name, host).await,
        }
    }
    Err(Error::Refused(
        "the Docker daemon closed the event stream".into(),
    ))
}

/// Milliseconds from a daemon timestamp (ns since the epoch) to now.
fn ms_since(t: i64) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i64;
    (now - t) as f64 / 1e6
}

/// Apply every wanted attachment of a container that started (or runs).
async fn apply(file: &Path, id: &str, name: &str, labels: &Labels, time_nano: Option<i64>) {
    if let Some(t) = time_nano {
        debug!(
            "watch: start of {name} received {:.1} ms after the event",
            ms_since(t)
        );
    }
    let mut wanted = match load_wanted(file) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("pipe: watch: {e}; keeping the container {name} as it is");
            return;
        }
    };
    let declared = from_labels(id, name, labels, &wanted);
    wanted.extend(declared);
    let mut seen = HashSet::new();
    for w in wanted
        .into_iter()
        .filter(|w| matches(&w.container, id, name))
    {
        if !seen.insert(w.spec.ifname.to_string()) {
            continue;
        }
        let mut spec = w.spec;
        spec.guest = GuestRef::Name(name.to_string());
        if spec.mac.is_none()
            && let Ok(store) = state::Store::open()
            && let Some(r) = store
                .find(name, Some(spec.ifname.as_str()))
                .into_iter()
                .find(|r| r.mac.is_some())
        {
            // The same MAC as the first time, so neighbours' caches stay right.
            spec.mac = r.mac.as_deref().and_then(|m| m.parse().ok());
        }
        debug!(
            "watch: applying {} to {name}{}",
            spec.ifname,
            time_nano
                .map(|t| format!(", {:.1} ms after the event", ms_since(t)))
                .unwrap_or_default()
        );
        match crate::verbs::attach::attach_one(&spec, false, w.persist).await {
            Ok(Some(r)) => {
                if !w.persist {
                    // Remember it came from the file: its record (and MAC) outlives the container.
                    mark_from_file(name, spec.ifname.as_str());
                }
                let after = time_nano
                    .map(|t| format!(" ({:.1} ms after the start event)", ms_since(t)))
                    .unwrap_or_default();
                println!("{}{after}", r.line());
            }
            Ok(None) => {}
            Err(e) => eprintln!("pipe: watch: {name} {}: {e}", spec.ifname),
        }
    }
}

fn mark_from_file(label: &str, ifname: &str) {
    let Ok(store) = state::Store::open() else {
        return;
    };
    for mut r in store.find(label, Some(ifname)) {
        if r.from_file || r.pending.is_some() || !r.alive() {
            continue;
        }
        r.from_file = true;
        if let Err(e) = store.save(&r) {
            warn!(
                "watch: could not update {}: {e}",
                store.record_path(&r.id()).display()
            );
        }
    }
}

/// A container died: what pipe made for it on the host goes (the namespace
/// link, host ends, shared links nothing uses), through the same collection
/// as `pipe gc`; the records of persistent attachments stay for its next start.
async fn died(id: &str, name: &str, host: &Netlink) {
    debug!("watch: {name} ({id}) died");
    let Ok(store) = state::Store::open() else {
        return;
    };
    let mut recs = store.find(name, None);
    recs.extend(store.find(id, None));
    for r in recs {
        if let Err(fails) = crate::verbs::detach::collect(&store, host, &r, false).await {
            warn!("watch: cleaning up after {name}: {}", fails.join("; "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_yield_to_the_file_and_records() {
        let labels: Labels = vec![
            ("pipe.eth1".into(), "br1 10.0.0.2/24".into()),
            ("pipe.eth2".into(), "br1 10.0.1.2/24".into()),
        ];
        let file_eth1 = Wanted {
            spec: crate::domain::attachments::parse(
                "[[attach]]\ncontainer = \"0123abcd\"\nhost = \"br9\"\naddr = \"10.9.0.2/24\"\n",
                "f",
            )
            .unwrap()
            .remove(0)
            .1,
            container: "0123abcd".into(),
            persist: false,
        };
        let w = from_labels(
            "0123abcdef",
            "web",
            &labels,
            std::slice::from_ref(&file_eth1),
        );
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].spec.ifname.as_str(), "eth2");
        assert_eq!(w[0].spec.host_if.to_string(), "br1");
        // Another container's entry does not shadow this one's label.
        assert_eq!(
            from_labels("ffff0000", "db", &labels, &[file_eth1]).len(),
            2
        );
    }

    #[test]
    fn matching_names_and_ids() {
        assert!(matches("web", "0123456789ab", "web"));
        assert!(matches("/web", "0123456789ab", "web"));
        assert!(matches("01234567", "0123456789ab", "web"));
        assert!(!matches("012", "0123456789ab", "web"));
        assert!(!matches("db", "0123456789ab", "web"));
    }
}
