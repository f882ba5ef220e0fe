//! `pipe selftest`: the main job, for real, on throwaway namespaces.
//!
//! It creates uniquely named network namespaces (a "host", two "containers" and a
//! "LAN" joined to the host by "physical" veths), runs the real attach and detach
//! entry points (`attach_one`, `detach::detach`) on a short-lived thread that has
//! entered the throwaway host namespace, pings across every attachment with its
//! own ICMP echo, and checks that nothing is left. Its records go to a state
//! directory of its own (`/run/pipe-selftest-ID`), never to pipe's real one.
//!
//! Everything it creates carries the name prefix `pipe-selftest-PID-HEX`, so
//! `pipe selftest --clean` finds the leftovers of `--keep` (or of an interrupted
//! run) and removes those of processes that are gone, and nothing else.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use ipnetwork::IpNetwork;
use log::debug;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use serde::Serialize;
use tokio::runtime::Runtime;

use crate::domain::error::{Error, KernelCause, Result};
use crate::domain::spec::{GuestRef, IpvlanMode};
use crate::edge::cli::Cli;
use crate::sys::netlink::{Netlink, NewLink};
use crate::sys::netns::{NETNS_RUN_DIR, Netns};
use crate::verbs::detach::DetachSpec;
use crate::verbs::report::Report;

/// Every namespace and state directory selftest makes starts with this.
pub const PREFIX: &str = "pipe-selftest-";
/// Where its throwaway state directories go (beside pipe's own /run/pipe).
const STATE_PARENT: &str = "/run";
const EOPNOTSUPP: i32 = 95;
/// A link that was just brought up drops what is sent on it until the kernel's
/// link watcher activates its queue (up to 1 s later), and a lost ARP request
/// is repeated 1 s later: a first reply can take 2 s on a busy machine.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// What the operator asked.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub keep: bool,
    pub clean: bool,
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Ok,
    NotSupported,
    Failed,
}

#[derive(Debug, Serialize)]
struct StepResult {
    step: String,
    status: Status,
    ms: f64,
    detail: String,
}

/// How a step that did not fail ended.
enum Outcome {
    Ok(String),
    /// The kernel lacks the feature (EOPNOTSUPP): reported, not a failure.
    NotSupported(String),
}

/// The roles of the throwaway namespaces.
const HOST: usize = 0;
const C1: usize = 1;
const C2: usize = 2;
const LAN: usize = 3;
const ROLES: [&str; 4] = ["host", "c1", "c2", "lan"];

/// Interface names inside the throwaway namespaces (private to them).
const BRIDGE: &str = "brst0";
const PHYS: &str = "phys0";
const LAN_END: &str = "lan0";
const PHYS2: &str = "phys1";
const LAN_END2: &str = "lan1";
const VID: u16 = 100;

/// The run: its id, its namespaces, its state directory and what it attached.
struct World {
    id: String,
    state: PathBuf,
    ns: Vec<Netns>,
    /// The namespaces this run created (only these are ever removed).
    created: Vec<String>,
    /// (role, container ifname) of every attachment made, for the detach step.
    attached: Vec<(usize, &'static str)>,
    /// Links the LAN namespace should hold at the end (lan0.100 when 802.1Q ran).
    lan_links: Vec<String>,
}

impl World {
    fn name(&self, role: usize) -> String {
        ns_name(&self.id, ROLES[role])
    }
}

fn ns_name(id: &str, role: &str) -> String {
    format!("{PREFIX}{id}-{role}")
}

struct Runner {
    json: bool,
    start: Instant,
    steps: Vec<StepResult>,
}

impl Runner {
    /// Run one step, time it, print its line; a failure ends the run.
    fn step(&mut self, name: &str, f: impl FnOnce() -> Result<Outcome>) -> Result<()> {
        let t = Instant::now();
        let r = f();
        let ms = (t.elapsed().as_secs_f64() * 1e5).round() / 100.0;
        let (status, detail) = match &r {
            Ok(Outcome::Ok(d)) => (Status::Ok, d.clone()),
            Ok(Outcome::NotSupported(d)) => (Status::NotSupported, d.clone()),
            Err(e) => (Status::Failed, e.to_string()),
        };
        if !self.json {
            let tag = match status {
                Status::Ok => "ok  ",
                Status::NotSupported => "skip",
                Status::Failed => "FAIL",
            };
            println!("{tag} {ms:7.1} ms  {name}: {detail}");
        }
        self.steps.push(StepResult {
            step: name.to_string(),
            status,
            ms,
            detail,
        });
        r.map(|_| ())
            .map_err(|e| Error::Refused(format!("selftest: step `{name}` failed: {e}")))
    }

    fn count(&self, s: Status) -> usize {
        self.steps.iter().filter(|r| r.status == s).count()
    }

    fn unsupported(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|r| r.status == Status::NotSupported)
            .map(|r| r.step.as_str())
            .collect()
    }
}

pub fn run(rt: &Runtime, o: Options) -> Result<()> {
    if o.clean {
        return clean(o.json);
    }
    // PID and start time: unique to this process, and --clean can tell whether
    // the process that made a leftover still runs (a reused PID has another start time).
    let pid = std::process::id();
    let id = format!("{pid}-{:x}", start_time(pid).unwrap_or(0));
    let state = Path::new(STATE_PARENT).join(format!("{PREFIX}{id}"));
    // Before anything reads it: attach and detach keep their records here.
    crate::sys::store::set_state_dir(state.clone());
    let mut w = World {
        id,
        state,
        ns: Vec::new(),
        created: Vec::new(),
        attached: Vec::new(),
        lan_links: vec!["lo".into(), LAN_END.into(), LAN_END2.into()],
    };
    let mut r = Runner {
        json: o.json,
        start: Instant::now(),
        steps: Vec::new(),
    };
    if !o.json {
        println!(
            "selftest: throwaway namespaces {}{{{}}} (named by role below), records in {}",
            ns_name(&w.id, ""),
            ROLES.join(","),
            w.state.display()
        );
    }
    let res = scenario(rt, &mut w, &mut r, o.keep);
    if res.is_err() && !o.keep {
        // Best effort: the namespaces take everything in them along.
        w.ns.clear();
        for n in &w.created {
            let _ = remove_ns(n);
        }
        let _ = fs::remove_dir_all(&w.state);
    }
    let total = (r.start.elapsed().as_secs_f64() * 1e5).round() / 100.0;
    let ok = r.count(Status::Ok);
    let unsupported = r.unsupported();
    let kept: Vec<String> = if o.keep {
        ROLES.iter().map(|role| ns_name(&w.id, role)).collect()
    } else {
        Vec::new()
    };
    if o.json {
        let v = serde_json::json!({
            "ok": res.is_ok(),
            "steps": r.steps,
            "steps_ok": ok,
            "not_supported": unsupported,
            "ms": total,
            "kept": kept,
            "state_dir": o.keep.then(|| w.state.display().to_string()),
            "error": res.as_ref().err().map(|e| e.to_string()),
        });
        println!("{v}");
    } else {
        let note = if unsupported.is_empty() {
            String::new()
        } else {
            format!(
                " (not supported by this kernel: {})",
                unsupported.join(", ")
            )
        };
        match &res {
            Ok(()) => println!("selftest: {ok} steps ok in {total:.0} ms{note}"),
            Err(_) => println!("selftest: failed after {ok} steps ok in {total:.0} ms{note}"),
        }
        if o.keep {
            let c1 = ns_name(&w.id, "c1");
            let host = ns_name(&w.id, "host");
            println!(
                "kept: namespaces {} and records in {}",
                kept.join(" "),
                w.state.display()
            );
            println!("  look:   ip netns exec {c1} ip addr; ip netns exec {host} ip -d link");
            println!("          ls {}/attachments", w.state.display());
            println!("  remove: pipe selftest --clean");
        }
    }
    res
}

/// The steps, in order. `keep` stops before the detach, leaving the attachments.
fn scenario(rt: &Runtime, w: &mut World, r: &mut Runner, keep: bool) -> Result<()> {
    r.step("namespaces", || setup(rt, w).map(Outcome::Ok))?;

    let (c1, c2) = (w.name(C1), w.name(C2));
    let bridge_c1 = [BRIDGE, c1.as_str(), "192.0.2.2/24@192.0.2.1"];
    r.step("attach c1 to a new bridge", || {
        let rep = attach(w, &bridge_c1)?;
        w.attached.push((C1, "eth1"));
        // The host's leg on the bridge: c1's gateway (as br1's address would be).
        rt.block_on(async {
            let host = nl(&w.ns[HOST])?;
            let br = index(&host, BRIDGE).await?;
            host.add_address(br, net("192.0.2.1/24"))
                .await
                .map_err(|c| Error::kernel(format!("adding 192.0.2.1/24 to {BRIDGE}"), c))
        })?;
        Ok(Outcome::Ok(format!(
            "pipe {}: {} (gateway 192.0.2.1 on {BRIDGE})",
            shown(w, &bridge_c1),
            said(&rep)
        )))
    })?;
    r.step("attach c2 to the same bridge", || {
        let args = [BRIDGE, c2.as_str(), "192.0.2.3/24"];
        let rep = attach(w, &args)?;
        w.attached.push((C2, "eth1"));
        Ok(Outcome::Ok(format!(
            "pipe {}: {}",
            shown(w, &args),
            said(&rep)
        )))
    })?;
    r.step("ping over the bridge", || {
        pings(
            w,
            &[
                (C1, "192.0.2.3", "c1 -> c2"),
                (C2, "192.0.2.2", "c2 -> c1"),
                (C1, "192.0.2.1", "c1 -> gateway"),
                (C1, "203.0.113.2", "c1 -> host via default route"),
            ],
        )
        .map(Outcome::Ok)
    })?;
    r.step("attach c2 by macvlan to the LAN", || {
        let args = [
            "-i",
            "eth2",
            PHYS,
            c2.as_str(),
            "198.51.100.2/24@198.51.100.1",
        ];
        let rep = attach(w, &args)?;
        w.attached.push((C2, "eth2"));
        Ok(Outcome::Ok(format!(
            "pipe {}: {}",
            shown(w, &args),
            said(&rep)
        )))
    })?;
    r.step("ping over the macvlan", || {
        pings(
            w,
            &[
                (C2, "198.51.100.1", "c2 -> LAN gateway"),
                (C2, "203.0.113.1", "c2 -> LAN via default route"),
            ],
        )
        .map(Outcome::Ok)
    })?;
    r.step("re-run an attach", || {
        let rep = attach(w, &bridge_c1)?;
        if !rep.already_attached {
            return Err(Error::Refused(format!(
                "pipe {} again did not report `already attached`: {}",
                shown(w, &bridge_c1),
                said(&rep)
            )));
        }
        Ok(Outcome::Ok(format!(
            "pipe {}: {}",
            shown(w, &bridge_c1),
            said(&rep)
        )))
    })?;
    r.step("802.1Q", || vlan_step(rt, w))?;
    r.step("ipvlan", || ipvlan_step(rt, w))?;
    if keep {
        return Ok(());
    }
    r.step("detach", || detach_all(w).map(Outcome::Ok))?;
    r.step("nothing left", || check_empty(rt, w).map(Outcome::Ok))?;
    r.step("remove namespaces", || teardown(w).map(Outcome::Ok))?;
    Ok(())
}

/// The four namespaces, lo up in each, and the "physical" veths between the host
/// and the LAN (whose end holds the gateway).
fn setup(rt: &Runtime, w: &mut World) -> Result<String> {
    for role in ROLES {
        let name = ns_name(&w.id, role);
        let ns = create_ns(&name).map_err(|e| {
            Error::Refused(format!(
                "cannot create the throwaway namespace {NETNS_RUN_DIR}/{name}: {e}"
            ))
        })?;
        w.created.push(name);
        w.ns.push(ns);
    }
    rt.block_on(async {
        for ns in &w.ns {
            // lo is always index 1 in a new namespace.
            nl(ns)?
                .set_up(1, true)
                .await
                .map_err(|c| Error::kernel("bringing lo up", c))?;
        }
        let host = nl(&w.ns[HOST])?;
        let lan = nl(&w.ns[LAN])?;
        for (phys, end, gw) in [
            (PHYS, LAN_END, "198.51.100.1/24"),
            (PHYS2, LAN_END2, "10.101.0.1/24"),
        ] {
            // The peer cannot be created up (veth_open() refuses with ENOTCONN
            // before its other end exists): it is brought up afterwards.
            let peer = NewLink {
                name: end,
                netns: Some(w.ns[LAN].fd.as_fd()),
                ..Default::default()
            };
            let l = NewLink {
                name: phys,
                up: true,
                ..Default::default()
            };
            host.create_veth(&l, &peer)
                .await
                .map_err(|c| Error::kernel(format!("creating veth {phys} <-> {end}"), c))?;
            let i = index(&lan, end).await?;
            lan.set_up(i, true)
                .await
                .map_err(|c| Error::kernel(format!("bringing {end} up"), c))?;
            add_addr(&lan, end, gw).await?;
        }
        // The throwaway host's bridges need not pass through its (empty) iptables;
        // where br_netfilter defaults this to 1, attach would print its Docker-host note.
        let _ =
            crate::sys::netns::set_sysctl(&w.ns[HOST], "net/bridge/bridge-nf-call-iptables", "0");
        // Off-link addresses, reached only through each container's default route.
        add_addr(&lan, "lo", "203.0.113.1/32").await?;
        add_addr(&host, "lo", "203.0.113.2/32").await?;
        Ok::<_, Error>(())
    })?;
    Ok(format!(
        "{} created; \"physical\" veths {PHYS} <-> {LAN_END} (LAN gateway 198.51.100.1) and {PHYS2} <-> {LAN_END2}",
        ROLES.join(", ")
    ))
}

/// 802.1Q: the LAN gets `lan0.100` first; a kernel without 802.1Q refuses that.
fn vlan_step(rt: &Runtime, w: &mut World) -> Result<Outcome> {
    let sub = format!("{LAN_END}.{VID}");
    let made = rt.block_on(async {
        let lan = nl(&w.ns[LAN])?;
        let parent = index(&lan, LAN_END).await?;
        let l = NewLink {
            name: &sub,
            up: true,
            ..Default::default()
        };
        match lan.create_vlan(&l, parent, VID).await {
            Err(c) if c.errno == EOPNOTSUPP => return Ok(false),
            r => r.map_err(|c| Error::kernel(format!("creating {sub} in the LAN"), c))?,
        }
        add_addr(&lan, &sub, "10.100.0.1/24").await?;
        Ok::<_, Error>(true)
    })?;
    if !made {
        return Ok(Outcome::NotSupported("not supported by this kernel".into()));
    }
    w.lan_links.push(sub);
    let c1 = w.name(C1);
    let args = ["-i", "eth3", PHYS, c1.as_str(), "10.100.0.2/24", "@100"];
    let rep = attach(w, &args)?;
    w.attached.push((C1, "eth3"));
    let p = pings(w, &[(C1, "10.100.0.1", "c1 -> LAN VLAN 100")])?;
    Ok(Outcome::Ok(format!(
        "pipe {}: {}; {p}",
        shown(w, &args),
        said(&rep)
    )))
}

/// ipvlan: probe with a child of the LAN end (removed again), then attach c2 on phys1.
fn ipvlan_step(rt: &Runtime, w: &mut World) -> Result<Outcome> {
    let supported = rt.block_on(async {
        let lan = nl(&w.ns[LAN])?;
        let parent = index(&lan, LAN_END2).await?;
        let l = NewLink {
            name: "ipvprobe",
            ..Default::default()
        };
        match lan.create_ipvlan(&l, parent, IpvlanMode::L2).await {
            Err(c) if c.errno == EOPNOTSUPP => Ok(false),
            Err(c) => Err(Error::kernel("creating an ipvlan probe in the LAN", c)),
            Ok(()) => {
                lan.delete_link_named("ipvprobe")
                    .await
                    .map_err(|c| Error::kernel("deleting the ipvlan probe", c))?;
                Ok::<_, Error>(true)
            }
        }
    })?;
    if !supported {
        return Ok(Outcome::NotSupported("not supported by this kernel".into()));
    }
    let c2 = w.name(C2);
    let args = [
        "--ipvlan",
        "l2",
        "-i",
        "eth4",
        PHYS2,
        c2.as_str(),
        "10.101.0.2/24",
    ];
    let rep = attach(w, &args)?;
    w.attached.push((C2, "eth4"));
    let p = pings(w, &[(C2, "10.101.0.1", "c2 -> LAN over ipvlan")])?;
    Ok(Outcome::Ok(format!(
        "pipe {}: {}; {p}",
        shown(w, &args),
        said(&rep)
    )))
}

fn detach_all(w: &World) -> Result<String> {
    let mut out = Vec::new();
    // Last attached first, as an operator undoing the run would.
    for (role, ifname) in w.attached.iter().rev() {
        let d = DetachSpec {
            guest: GuestRef::Name(w.name(*role)),
            ifname: ifname.parse().map_err(Error::Usage)?,
            force: false,
            timeout: Duration::from_secs(1),
        };
        let o = in_ns(&w.ns[HOST], move || {
            crate::sys::runtime::runtime()?.block_on(crate::verbs::detach::detach(&d, false))
        })?;
        out.push(if o.removed.is_empty() {
            format!("{} {ifname}", ROLES[*role])
        } else {
            format!(
                "{} {ifname} (removed {})",
                ROLES[*role],
                o.removed.join(", ")
            )
        });
    }
    Ok(out.join("; "))
}

/// After the detach: only what selftest itself made is left in its namespaces,
/// no record, no /var/run/netns link besides its own namespaces.
fn check_empty(rt: &Runtime, w: &World) -> Result<String> {
    let host_want = ["lo", PHYS, PHYS2];
    let want: [(usize, Vec<&str>); 4] = [
        (HOST, host_want.to_vec()),
        (C1, vec!["lo"]),
        (C2, vec!["lo"]),
        (LAN, w.lan_links.iter().map(String::as_str).collect()),
    ];
    let mut left = Vec::new();
    rt.block_on(async {
        for (role, want) in &want {
            let links = nl(&w.ns[*role])?
                .links()
                .await
                .map_err(|c| Error::kernel(format!("listing links in {}", ROLES[*role]), c))?;
            for l in links {
                if !want.contains(&l.name.as_str()) {
                    left.push(format!("link {} in {}", l.name, ROLES[*role]));
                }
            }
        }
        Ok::<_, Error>(())
    })?;
    for sub in ["attachments", "netns", "dhcp"] {
        for f in list(&w.state.join(sub)) {
            left.push(format!("{}/{sub}/{f}", w.state.display()));
        }
    }
    let ours = ns_name(&w.id, "");
    let mut mine: Vec<String> = list(Path::new(NETNS_RUN_DIR))
        .into_iter()
        .filter(|n| n.starts_with(&ours))
        .collect();
    mine.sort();
    let mut expected: Vec<String> = ROLES.iter().map(|r| ns_name(&w.id, r)).collect();
    expected.sort();
    for n in mine.iter().filter(|n| !expected.contains(n)) {
        left.push(format!("{NETNS_RUN_DIR}/{n}"));
    }
    if !left.is_empty() {
        return Err(Error::Refused(format!(
            "left after detach: {}",
            left.join(", ")
        )));
    }
    Ok("no pipe link, bridge, record or netns link left".into())
}

/// Delete the namespaces and the state directory, and check they are gone.
fn teardown(w: &mut World) -> Result<String> {
    w.ns.clear();
    let mut errs = Vec::new();
    for n in std::mem::take(&mut w.created) {
        if let Err(e) = remove_ns(&n) {
            errs.push(format!("{NETNS_RUN_DIR}/{n}: {e}"));
        }
    }
    if let Err(e) = fs::remove_dir_all(&w.state)
        && e.kind() != io::ErrorKind::NotFound
    {
        errs.push(format!("{}: {e}", w.state.display()));
    }
    let ours = ns_name(&w.id, "");
    for n in list(Path::new(NETNS_RUN_DIR)) {
        if n.starts_with(&ours) {
            errs.push(format!("{NETNS_RUN_DIR}/{n} is still there"));
        }
    }
    if w.state.exists() {
        errs.push(format!("{} is still there", w.state.display()));
    }
    if !errs.is_empty() {
        return Err(Error::Refused(format!(
            "could not remove {}; pipe selftest --clean retries",
            errs.join(", ")
        )));
    }
    Ok(format!(
        "{} and {} removed",
        ROLES.join(", "),
        w.state.display()
    ))
}

/// `pipe selftest --clean`: remove the namespaces and state directories of
/// selftest runs whose process is gone (a running selftest's are left alone:
/// same PID and same start time).
fn clean(json: bool) -> Result<()> {
    let mut removed = Vec::new();
    let mut skipped = Vec::new();
    let mut errors = Vec::new();
    let mut consider = |dir: &Path, is_ns: bool| {
        let mut names = list(dir);
        names.sort();
        for n in names.into_iter().filter(|n| n.starts_with(PREFIX)) {
            let path = dir.join(&n);
            if let Some((pid, started)) = owner(&n)
                && start_time(pid) == Some(started)
            {
                skipped.push(format!(
                    "{} (its selftest, PID {pid}, is still running)",
                    path.display()
                ));
                continue;
            }
            let r = if is_ns {
                remove_ns(&n)
            } else if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                continue;
            };
            match r {
                Ok(()) => removed.push(path.display().to_string()),
                Err(e) => errors.push(format!("{}: {e}", path.display())),
            }
        }
    };
    consider(Path::new(NETNS_RUN_DIR), true);
    consider(Path::new(STATE_PARENT), false);
    if json {
        println!(
            "{}",
            serde_json::json!({"removed": removed, "skipped": skipped, "errors": errors})
        );
    } else {
        for r in &removed {
            println!("removed {r}");
        }
        for s in &skipped {
            println!("left {s}");
        }
        if removed.is_empty() && skipped.is_empty() && errors.is_empty() {
            println!("nothing to clean up");
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "selftest --clean could not remove {}",
            errors.join(", ")
        )))
    }
}

/// The PID and start time in `pipe-selftest-PID-STARTHEX[-ROLE]`.
fn owner(name: &str) -> Option<(u32, u64)> {
    let mut it = name.strip_prefix(PREFIX)?.split('-');
    let pid = it.next()?.parse().ok()?;
    let started = u64::from_str_radix(it.next()?, 16).ok()?;
    Some((pid, started))
}

/// When process `pid` started (clock ticks after boot, /proc/PID/stat field 22);
/// `None` when there is no such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Entry names of a directory (empty when it does not exist).
fn list(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A named network namespace, as `ip netns add` makes one: a new namespace
/// bind-mounted on an empty file under /var/run/netns, so it outlives the thread
/// that made it and `ip netns exec NAME` works.
fn create_ns(name: &str) -> io::Result<Netns> {
    fs::create_dir_all(NETNS_RUN_DIR)?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    // create_new: never take over a file that is already there.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    debug!("selftest: new netns {}", path.display());
    let target = path.clone();
    // unshare(CLONE_NEWNET) changes only the calling thread: a short-lived thread
    // does it, mounts its namespace on the file and exits.
    let made = std::thread::spawn(move || -> io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("netns thread panicked"))
    .and_then(|r| r);
    if let Err(e) = made {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Netns::open(&path)
}

/// `ip netns del NAME`: unmount and remove the file. A namespace goes away with
/// its last reference, and every link in it with it.
fn remove_ns(name: &str) -> io::Result<()> {
    let path = Path::new(NETNS_RUN_DIR).join(name);
    debug!("selftest: remove netns {}", path.display());
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Run `f` on a short-lived thread that has entered `ns` and does nothing else.
fn in_ns<T: Send>(ns: &Netns, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                Error::kernel(
                    format!("entering {}", ns.path.display()),
                    KernelCause::from_io(&e.into()),
                )
            })?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Refused("selftest thread panicked".into())))
    })
}

/// The real attach, as `pipe ARGS` run in the throwaway host namespace.
fn attach(w: &World, args: &[&str]) -> Result<Report> {
    let cli = Cli::try_parse_from(std::iter::once("pipe").chain(args.iter().copied()))
        .map_err(|e| Error::Usage(format!("pipe {}: {e}", shown(w, args))))?;
    let spec = cli.into_spec()?;
    in_ns(&w.ns[HOST], move || {
        crate::sys::runtime::runtime()?
            .block_on(crate::verbs::attach::attach_one(&spec, false, false))?
            .ok_or_else(|| Error::Refused("attach printed a plan instead of attaching".into()))
    })
}

/// What pipe printed, without the container's long throwaway name.
fn said(r: &Report) -> String {
    let line = r.line();
    match line.strip_prefix(&format!("{} ", r.container)) {
        Some(rest) => rest.to_string(),
        None => line,
    }
}

/// `pipe ARGS` as shown: the throwaway namespace names shortened to their role.
fn shown(w: &World, args: &[&str]) -> String {
    let prefix = ns_name(&w.id, "");
    args.iter()
        .map(|a| a.strip_prefix(&prefix).unwrap_or(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A netlink connection in `ns` (needs the runtime's context).
fn nl(ns: &Netns) -> Result<Netlink> {
    let sock = crate::sys::netns::socket_in(ns).map_err(|e| {
        Error::kernel(
            format!("entering {}", ns.path.display()),
            KernelCause::from_io(&e),
        )
    })?;
    Netlink::from_socket(sock).map_err(|c| Error::kernel("opening a netlink socket", c))
}

async fn index(nl: &Netlink, name: &str) -> Result<u32> {
    nl.link(name)
        .await
        .map_err(|c| Error::kernel(format!("looking up {name}"), c))?
        .map(|l| l.index)
        .ok_or_else(|| Error::Refused(format!("{name} is missing")))
}

async fn add_addr(nl: &Netlink, link: &str, addr: &str) -> Result<()> {
    let i = index(nl, link).await?;
    nl.add_address(i, net(addr))
        .await
        .map_err(|c| Error::kernel(format!("adding {addr} to {link}"), c))
}

fn net(s: &str) -> IpNetwork {
    s.parse().expect("a valid built-in address")
}

/// Ping each (from role, to address), one after the other; "what 0.1 ms, ...".
fn pings(w: &World, list: &[(usize, &str, &str)]) -> Result<String> {
    let mut out = Vec::new();
    for (role, to, what) in list {
        let dst: Ipv4Addr = to.parse().expect("a valid built-in address");
        let t = Instant::now();
        let rtt = in_ns(&w.ns[*role], move || {
            icmp_echo(dst, PING_TIMEOUT).map_err(|e| {
                Error::Refused(format!("ping {what} ({dst}) from {}: {e}", ROLES[*role]))
            })
        })?;
        let waited = t.elapsed();
        out.push(if waited > rtt + Duration::from_millis(100) {
            format!(
                "{what} {:.2} ms (first reply after {:.0} ms)",
                rtt.as_secs_f64() * 1e3,
                waited.as_secs_f64() * 1e3
            )
        } else {
            format!("{what} {:.2} ms", rtt.as_secs_f64() * 1e3)
        });
    }
    Ok(out.join(", "))
}

/// One ICMP echo exchange over a raw socket of the calling thread's namespace
/// (a ping socket would need net.ipv4.ping_group_range, which is empty in a new
/// namespace). Resends every 200 ms until a reply comes or `timeout` passes;
/// returns the round-trip time of the answered request.
fn icmp_echo(dst: Ipv4Addr, timeout: Duration) -> io::Result<Duration> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // The thread id tells concurrent pingers (other selftests) apart.
    // SAFETY: gettid has no preconditions.
    let ident = (unsafe { libc::gettid() } & 0xffff) as u16;
    let start = Instant::now();
    let mut seq: u16 = 0;
    loop {
        seq = seq.wrapping_add(1);
        let mut pkt = [0u8; 24];
        pkt[0] = 8; // echo request
        pkt[4..6].copy_from_slice(&ident.to_be_bytes());
        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
        pkt[8..].copy_from_slice(b"pipe selftest ..");
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        let sent_at = Instant::now();
        // SAFETY: the buffer and address outlive the call; lengths are theirs.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let round_end = (sent_at + Duration::from_millis(200)).min(start + timeout);
        loop {
            let now = Instant::now();
            if now >= round_end {
                break;
            }
            let ms = (round_end - now).as_millis().max(1) as libc::c_int;
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                break;
            }
            let mut buf = [0u8; 1500];
            // SAFETY: the buffer is ours and its length is passed.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                continue;
            }
            if is_reply(&buf[..n as usize], dst, ident, seq) {
                return Ok(sent_at.elapsed());
            }
        }
        if start.elapsed() >= timeout {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no echo reply within {} s", timeout.as_secs_f64()),
            ));
        }
    }
}

/// Is this IPv4 packet (as a raw socket delivers it) our echo reply?
fn is_reply(p: &[u8], from: Ipv4Addr, ident: u16, seq: u16) -> bool {
    if p.len() < 20 {
        return false;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let Some(icmp) = p.get(ihl..ihl + 8) else {
        return false;
    };
    src == from
        && icmp[0] == 0
        && u16::from_be_bytes([icmp[4], icmp[5]]) == ident
        && u16::from_be_bytes([icmp[6], icmp[7]]) == seq
}

/// The Internet checksum (RFC 1071).
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_echo_request() {
        // An echo request, id 1, seq 1, no payload: 08 00 f7 fd 00 01 00 01.
        let mut p = [8u8, 0, 0, 0, 0, 1, 0, 1];
        let s = checksum(&p);
        assert_eq!(s, 0xf7fd);
        p[2..4].copy_from_slice(&s.to_be_bytes());
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
    }

    #[test]
    fn reply_matching() {
        let mut p = vec![0x45u8; 20];
        p[12..16].copy_from_slice(&[192, 0, 2, 3]);
        p.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        let from = Ipv4Addr::new(192, 0, 2, 3);
        assert!(is_reply(&p, from, 0x1234, 7));
        assert!(!is_reply(&p, from, 0x1234, 8), "another sequence number");
        assert!(!is_reply(&p, Ipv4Addr::new(192, 0, 2, 4), 0x1234, 7));
        p[20] = 8;
        assert!(!is_reply(&p, from, 0x1234, 7), "a request is no reply");
        assert!(!is_reply(&p[..24], from, 0x1234, 7), "truncated");
    }

    #[test]
    fn owner_pid_from_names() {
        assert_eq!(owner("pipe-selftest-4711-1f2e3-c1"), Some((4711, 0x1f2e3)));
        assert_eq!(owner("pipe-selftest-4711-1f2e3"), Some((4711, 0x1f2e3)));
        assert_eq!(owner("pipe-selftest-4711"), None);
        assert_eq!(owner("pipe-selftest-x-1"), None);
        assert_eq!(owner("other-4711-1"), None);
    }

    #[test]
    fn own_start_time_is_read() {
        let me = std::process::id();
        let t = start_time(me).expect("our own /proc/PID/stat");
        assert_eq!(start_time(me), Some(t), "stable");
        assert_eq!(start_time(u32::MAX), None);
    }
}
