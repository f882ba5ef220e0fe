//! `pipe apply FILE`: many attachments in one process.
//!
//! The file has the same format as `pipe watch`'s (see `attachments`). All
//! guests are resolved first, concurrently (Docker lookups overlap). Entries
//! that may create a shared host object (the first user of each bridge,
//! parent, VLAN or shim) and entries of a container named more than once run
//! one by one, in file order; the rest, independent of each other, run
//! several at a time on worker threads. Each one is atomic on its own (a
//! failure rolls that attachment back and the others go on); the summary
//! lists every entry in file order.

use std::path::Path;

use serde::Serialize;

use crate::domain::attachments;
use crate::domain::error::{Error, Result};
use crate::domain::spec::AttachSpec;
use crate::sys::guest::{self, Target};
use crate::sys::netlink::Netlink;
use crate::verbs::report::Report;

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Entries in the file.
    pub entries: usize,
    /// With --dry-run: entries whose plan was made (each printed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned: Option<usize>,
    pub attached: usize,
    pub already_attached: usize,
    pub failed: usize,
    /// One line per failed entry: which one and why.
    pub errors: Vec<String>,
    /// The reports of the entries that worked (empty with --dry-run).
    pub results: Vec<Report>,
}

impl Summary {
    pub fn line(&self) -> String {
        if let Some(p) = self.planned {
            return format!(
                "{p} planned, {} would fail (dry run: nothing changed)",
                self.failed
            );
        }
        format!(
            "{} attached, {} already attached, {} failed",
            self.attached, self.already_attached, self.failed
        )
    }
}

pub async fn apply(file: &Path, dry_run: bool, persist: bool) -> Result<Summary> {
    let origin = file.display().to_string();
    let text = crate::sys::files::read_text(file).map_err(|e| {
        Error::Usage(format!(
            "cannot read attachments file {origin}: {e}; give an attachments file (TOML, see pipe watch --help)"
        ))
    })?;
    let entries = attachments::parse(&text, &origin).map_err(Error::Usage)?;

    let targets = futures::future::join_all(
        entries
            .iter()
            .map(|(_, s)| guest::resolve(&s.guest, s.timeout)),
    )
    .await;
    let host =
        Netlink::current().map_err(|c| Error::kernel("opening a netlink socket on the host", c))?;

    let specs: Vec<&AttachSpec> = entries.iter().map(|(_, s)| s).collect();
    // With --dry-run plans are printed as they are made: all in file order.
    let (first, rest) = if dry_run {
        ((0..specs.len()).collect(), Vec::new())
    } else {
        let keys: Vec<_> = specs.iter().map(|s| host_key(s)).collect();
        let ns: Vec<_> = targets
            .iter()
            .map(|t| t.as_ref().ok().map(|t| (t.netns.id.dev, t.netns.id.ino)))
            .collect();
        let alone: Vec<bool> = specs.iter().map(|s| s.direct_phys).collect();
        schedule(&keys, &ns, &alone)
    };
    let mut slots: Vec<Option<Result<Target>>> = targets.into_iter().map(Some).collect();
    let mut results: Vec<Option<Result<Option<Report>>>> =
        (0..entries.len()).map(|_| None).collect();

    // Phase 1, in file order: each first user of a host-side object (it may
    // create the bridge, the VLAN sub-interface, the shim) and every entry of
    // a container named more than once.
    for i in first {
        results[i] = Some(run_one(specs[i], slots[i].take(), &host, dry_run, persist).await);
    }
    // Phase 2: independent attachments (their own namespace, a host-side
    // object that exists), several at once on worker threads. Those whose
    // host object's first user failed wait for a sequential phase 3: they
    // may have to create it, and two creators of one bridge would race.
    let (ready, late): (Vec<usize>, Vec<usize>) = rest
        .into_iter()
        .partition(|&i| first_ok(&specs, &results, i));
    let jobs: Vec<(usize, Option<Result<Target>>)> =
        ready.into_iter().map(|i| (i, slots[i].take())).collect();
    for (i, r) in parallel(&specs, jobs, persist) {
        results[i] = Some(r);
    }
    for i in late {
        results[i] = Some(run_one(specs[i], slots[i].take(), &host, dry_run, persist).await);
    }

    let mut sum = Summary {
        entries: entries.len(),
        planned: dry_run.then_some(0),
        ..Summary::default()
    };
    for ((entry, spec), r) in entries.iter().zip(results) {
        match r.unwrap_or_else(|| Err(Error::Refused("not run".into()))) {
            Ok(Some(rep)) => {
                if rep.already_attached {
                    sum.already_attached += 1;
                } else {
                    sum.attached += 1;
                }
                sum.results.push(rep);
            }
            Ok(None) => {
                if let Some(p) = sum.planned.as_mut() {
                    *p += 1;
                }
            }
            Err(e) => {
                sum.failed += 1;
                sum.errors
                    .push(format!("{} {}: {e}", entry.container, spec.ifname));
            }
        }
    }
    Ok(sum)
}

/// Attachments in flight at once in phase 2. The kernel serializes link
/// changes (rtnl), so this overlaps the rest: state files, the thread that
/// opens each container's socket, the container-side requests.
const WORKERS: usize = 8;

async fn run_one(
    spec: &AttachSpec,
    target: Option<Result<Target>>,
    host: &Netlink,
    dry_run: bool,
    persist: bool,
) -> Result<Option<Report>> {
    match target {
        Some(Ok(t)) => crate::verbs::attach::attach_resolved(spec, t, host, dry_run, persist).await,
        Some(Err(e)) => Err(e),
        None => Err(Error::Refused("not run".into())),
    }
}

/// What an entry shares on the host with others: the host interface (a
/// bridge to create or join, a parent to bring up), its VLAN and shim.
fn host_key(s: &AttachSpec) -> (String, Option<u16>, bool) {
    (
        format!("{:?}", s.host_if),
        s.vlan.map(|v| v.get()),
        s.host_shim,
    )
}

/// Split entries into those run one by one first, in file order, and those
/// that may run concurrently afterwards: the first entry of each host key
/// (`keys`), every entry whose namespace (`ns`; `None`: unresolved) appears
/// more than once, and those marked `alone` go first.
fn schedule<K, N>(keys: &[K], ns: &[Option<N>], alone: &[bool]) -> (Vec<usize>, Vec<usize>)
where
    K: Eq + std::hash::Hash,
    N: Eq + std::hash::Hash,
{
    use std::collections::{HashMap, HashSet};
    let mut per_ns: HashMap<&N, usize> = HashMap::new();
    for n in ns.iter().flatten() {
        *per_ns.entry(n).or_default() += 1;
    }
    let mut seen = HashSet::new();
    let (mut first, mut rest) = (Vec::new(), Vec::new());
    for (i, k) in keys.iter().enumerate() {
        let new_key = seen.insert(k);
        let shared_ns = ns[i].as_ref().is_some_and(|n| per_ns[n] > 1);
        if new_key || shared_ns || alone[i] {
            first.push(i);
        } else {
            rest.push(i);
        }
    }
    (first, rest)
}

/// Did the first entry with entry `i`'s host key succeed?
fn first_ok(specs: &[&AttachSpec], results: &[Option<Result<Option<Report>>>], i: usize) -> bool {
    let k = host_key(specs[i]);
    specs
        .iter()
        .position(|s| host_key(s) == k)
        .and_then(|f| results[f].as_ref())
        .is_some_and(|r| r.is_ok())
}

/// Run `jobs` on up to `WORKERS` threads, each with its own runtime and host
/// netlink connection, taking the next job as it finishes one.
fn parallel(
    specs: &[&AttachSpec],
    jobs: Vec<(usize, Option<Result<Target>>)>,
    persist: bool,
) -> Vec<(usize, Result<Option<Report>>)> {
    use std::sync::Mutex;
    if jobs.is_empty() {
        return Vec::new();
    }
    let workers = WORKERS.min(jobs.len());
    let queue = Mutex::new(jobs.into_iter());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| {
                let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let put = |i, r| done.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
                let rt = match crate::sys::runtime::runtime() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let msg = e.to_string();
                        while let Some((i, _)) = next() {
                            put(i, Err(Error::Refused(msg.clone())));
                        }
                        return;
                    }
                };
                rt.block_on(async {
                    let host = match Netlink::current() {
                        Ok(h) => h,
                        Err(c) => {
                            let e = Error::kernel("opening a netlink socket on the host", c);
                            let msg = e.to_string();
                            while let Some((i, _)) = next() {
                                put(i, Err(Error::Refused(msg.clone())));
                            }
                            return;
                        }
                    };
                    while let Some((i, t)) = next() {
                        put(i, run_one(specs[i], t, &host, false, persist).await);
                    }
                });
            });
        }
    });
    done.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::schedule;

    #[test]
    fn first_user_of_each_host_object_goes_first_the_rest_concurrently() {
        let keys = ["br0", "br0", "br1", "br0", "br1"];
        let ns = [Some(1), Some(2), Some(3), Some(4), Some(5)];
        let (first, rest) = schedule(&keys, &ns, &[false; 5]);
        assert_eq!(first, [0, 2]);
        assert_eq!(rest, [1, 3, 4]);
    }

    #[test]
    fn a_container_named_twice_and_direct_phys_run_in_file_order() {
        let keys = ["br0", "br0", "br0", "br0", "eth9"];
        // entries 1 and 3 are one namespace; 2 is unresolved.
        let ns = [Some(1), Some(7), None, Some(7), Some(9)];
        let alone = [false, false, false, false, true];
        let (first, rest) = schedule(&keys, &ns, &alone);
        assert_eq!(first, [0, 1, 3, 4]);
        assert_eq!(rest, [2]);
    }
}
