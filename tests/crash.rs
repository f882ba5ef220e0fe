//! Crashes and races on a real kernel: 100 attaches racing to create one
//! bridge, a failing or killed creator among joiners, attach racing detach,
//! SIGKILL at random points followed by `pipe gc`, and re-run/detach after a
//! killed attach. Each test has its own host namespace and state directory.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// What these tests read back from a `Host` (one per test, prefix "ch"): the
/// records directory after killed writers, a container's record, the host's links.
impl Host {
    /// Record files, without temporary files of killed writers.
    fn records_no_tmp(&self) -> Vec<String> {
        self.records()
            .into_iter()
            .filter(|n| !n.ends_with(".tmp"))
            .collect()
    }

    /// Temporary files a killed writer left in the records directory.
    fn tmp_files(&self) -> Vec<String> {
        self.records()
            .into_iter()
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    /// Records that are pending (an attach in progress or killed).
    fn pending(&self) -> Vec<String> {
        self.records_no_tmp()
            .into_iter()
            .filter(|n| {
                let p = format!("{}/attachments/{n}", self.state);
                let s = std::fs::read_to_string(p).unwrap_or_default();
                serde_json::from_str::<serde_json::Value>(&s)
                    .map(|v| !v["pending"].is_null())
                    .unwrap_or(true)
            })
            .collect()
    }

    fn record(&self, c: &Container, ifname: &str) -> Option<serde_json::Value> {
        let p = format!("{}/attachments/{}", self.state, c.record(ifname));
        let s = std::fs::read_to_string(p).ok()?;
        // A half-written record is a finding, not a parse panic.
        let v = serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s));
        // A dead container's record may carry the same DEV-INO: the kernel
        // reuses namespace inodes. Its label (the PID) tells them apart.
        if v.is_object() && v["label"] != c.pid_s().as_str() {
            return None;
        }
        Some(v)
    }

    /// `pipe gc`, which must exit 0.
    fn gc(&self) -> String {
        self.ok(&["gc"])
    }

    /// Host links with their master and alias, for exact comparisons.
    fn link_view(&self) -> Vec<String> {
        link_view(&self.ns.ipj(&["link", "show"]))
    }

    fn master_of(&self, dev: &str) -> Option<String> {
        let o =
            run(Command::new("ip").args(["-j", "-n", &self.ns.name, "link", "show", "dev", dev]));
        if !o.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        Some(link(&v)["master"].as_str().unwrap_or("").to_string())
    }

    fn ports(&self, br: &str) -> Vec<String> {
        link_names(&self.ns.ipj(&["link", "show", "master", br]))
    }
}

fn link_view(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} master={} alias={}",
                l["ifname"].as_str().unwrap(),
                l["master"].as_str().unwrap_or("-"),
                l["ifalias"].as_str().unwrap_or("-")
            )
        })
        .collect();
    out.sort();
    out
}

/// A small xorshift PRNG; the seed is printed (and may be set with CRASH_SEED).
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{test}: seed {seed} (CRASH_SEED={seed} repeats it)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A delay of 0..max_us microseconds.
    fn delay(&mut self, max_us: u64) -> Duration {
        Duration::from_micros(self.next() % max_us)
    }
}

fn sigkill(child: &Child) {
    // The child is not reaped yet, so its PID cannot have been reused.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}

/// Kill `child` after `after`; true if it was still running (the kill landed
/// mid-run), false if it had exited on its own (then it must have exited 0).
fn kill_after(mut child: Child, after: Duration, what: &str) -> (bool, Output) {
    std::thread::sleep(after);
    if child.try_wait().unwrap().is_none() {
        sigkill(&child);
    }
    let o = child.wait_with_output().unwrap();
    let killed = o.status.signal() == Some(9);
    if !killed {
        assert!(
            o.status.success(),
            "{what} exited on its own but failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
    (killed, o)
}

/// Every address as `IFNAME LOCAL/LEN`, without DAD flags and lifetimes.
fn addr_view(v: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for l in v.as_array().unwrap() {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            out.push(format!(
                "{} {}/{}",
                l["ifname"].as_str().unwrap(),
                a["local"].as_str().unwrap_or("?"),
                a["prefixlen"]
            ));
        }
    }
    out.sort();
    out
}

fn addrs(c: &Container, dev: &str) -> Vec<String> {
    let a = c.ipj(&["addr", "show", "dev", dev]);
    a[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["scope"] != "link")
        .map(|i| format!("{}/{}", i["local"].as_str().unwrap(), i["prefixlen"]))
        .collect()
}

fn is_up(c: &Container, dev: &str) -> bool {
    let l = c.ipj(&["link", "show", "dev", dev]);
    link(&l)["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "UP")
}

fn has_link(c: &Container, dev: &str) -> bool {
    c.links().iter().any(|l| l == dev)
}

fn veth_of(c: &Container) -> String {
    format!("veth1pl{}", c.pid)
}

/// A joiner that exited 0 is working: veth in `br`, eth1 up with `addr`.
fn assert_joined(h: &Host, c: &Container, br: &str, addr: &str, ctx: &str) {
    assert_eq!(
        h.master_of(&veth_of(c)).as_deref(),
        Some(br),
        "{ctx}: {} of {} is not in bridge {br}; host: {:?}",
        veth_of(c),
        c.pid,
        h.link_view()
    );
    assert!(
        has_link(c, "eth1"),
        "{ctx}: {} has no eth1: {:?}",
        c.pid,
        c.links()
    );
    assert!(is_up(c, "eth1"), "{ctx}: eth1 of {} is down", c.pid);
    assert_eq!(addrs(c, "eth1"), [addr], "{ctx}: address of {}", c.pid);
}

/// Give a container a default route of its own (as Docker's eth0 would be).
fn with_default_route(c: &Container) {
    c.ip(&[
        "link", "add", "pre0", "type", "veth", "peer", "name", "pre1",
    ]);
    c.ip(&["addr", "add", "10.50.0.2/24", "dev", "pre0"]);
    c.ip(&["link", "set", "pre0", "up"]);
    c.ip(&["link", "set", "pre1", "up"]);
    c.ip(&["route", "add", "default", "via", "10.50.0.1"]);
}

#[test]
fn hundred_parallel_attaches_to_one_missing_bridge() {
    const N: usize = 100;
    let h = Host::new("ch");
    let host_before = h.link_view();
    let br = unique("br");
    let cs: Vec<Container> = (0..N).map(|_| Container::new()).collect();
    let addr = |i: usize| format!("10.90.{}.{}/16", i / 200, i % 200 + 2);

    let t = Instant::now();
    let kids: Vec<Child> = cs
        .iter()
        .enumerate()
        .map(|(i, c)| h.spawn(&[&br, &c.pid_s(), &addr(i)], &[]))
        .collect();
    let outs: Vec<Output> = kids
        .into_iter()
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    let took = t.elapsed();
    eprintln!("{N} parallel attaches to one missing bridge: {took:?}");
    let failed: Vec<String> = outs
        .iter()
        .enumerate()
        .filter(|(_, o)| !o.status.success())
        .map(|(i, o)| format!("#{i} ({}): {}", cs[i].pid, stderr(o).trim()))
        .collect();
    assert!(failed.is_empty(), "{} failed: {failed:#?}", failed.len());
    let ports = h.ports(&br);
    assert_eq!(ports.len(), N, "ports of {br}: {ports:?}");
    let mut want: Vec<String> = cs.iter().map(veth_of).collect();
    want.sort();
    assert_eq!(ports, want);
    assert_eq!(h.records_no_tmp().len(), N, "{:?}", h.records_no_tmp());
    for (i, c) in cs.iter().enumerate().step_by(9) {
        assert_joined(&h, c, &br, &addr(i), "after parallel attach");
    }

    let t = Instant::now();
    let kids: Vec<Child> = cs
        .iter()
        .map(|c| h.spawn(&["detach", &c.pid_s()], &[]))
        .collect();
    let outs: Vec<Output> = kids
        .into_iter()
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    eprintln!("{N} parallel detaches: {:?}", t.elapsed());
    let failed: Vec<String> = outs
        .iter()
        .enumerate()
        .filter(|(_, o)| !o.status.success())
        .map(|(i, o)| format!("#{i} ({}): {}", cs[i].pid, stderr(o).trim()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} detaches failed: {failed:#?}",
        failed.len()
    );
    assert!(h.records_no_tmp().is_empty(), "{:?}", h.records_no_tmp());
    for c in &cs {
        assert_eq!(c.links(), ["lo"], "container {} keeps links", c.pid);
        assert!(
            c.netns_link().symlink_metadata().is_err(),
            "/var/run/netns/{} left after its detach exited 0; markers {:?}",
            c.pid,
            h.files("netns")
        );
    }
    let left = h.link_view();
    if left != host_before {
        let gc = h.pipe(&["gc"]);
        panic!(
            "{N} parallel detaches left {left:?} (before: {host_before:?}); \
             a later `pipe gc` says: {}{} and leaves {:?}",
            stdout(&gc).trim(),
            stderr(&gc).trim(),
            h.link_view()
        );
    }
}

/// One round: a creator (failing after step `fail_after`, or SIGKILLed after
/// `kill_after`) and 10 joiners on the missing bridge `br`, all at once.
/// Returns whether the creator was killed mid-run.
fn creator_round(
    h: &Host,
    round: usize,
    fail_after: Option<usize>,
    kill: Option<Duration>,
) -> bool {
    const JOINERS: usize = 10;
    let br = unique("br");
    let creator = Container::new();
    let joiners: Vec<Container> = (0..JOINERS).map(|_| Container::new()).collect();
    let addr = |i: usize| format!("10.91.{round}.{}/16", i + 10);
    // The creator's own plan (the binary may have been rebuilt meanwhile):
    // fail after step min(n, its step count).
    let plan = h.ok(&["-n", &br, &creator.pid_s(), &addr(0)]);
    let count = plan.lines().filter(|l| !l.trim().is_empty()).count();
    let fail_after = fail_after.map(|n| n.min(count));
    let n = fail_after.map(|n| n.to_string());
    let env: Vec<(&str, &str)> = n
        .as_deref()
        .map(|n| vec![("PIPE_FAIL_AFTER", n)])
        .unwrap_or_default();
    let mut c_kid = h.spawn(&[&br, &creator.pid_s(), &addr(0)], &env);
    if fail_after.is_some() {
        // Let the creator plan first (its plan must create the bridge for
        // PIPE_FAIL_AFTER to count its steps): it journals right after.
        // (A dead container's record may have the same file name: h.record
        // checks the label.)
        let t = Instant::now();
        while h.record(&creator, "eth1").is_none()
            && c_kid.try_wait().unwrap().is_none()
            && t.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let kids: Vec<Child> = joiners
        .iter()
        .enumerate()
        .map(|(i, c)| h.spawn(&[&br, &c.pid_s(), &addr(i + 1)], &[]))
        .collect();
    let ctx = format!("round {round} (fail_after {fail_after:?}, kill {kill:?}) on {br}");
    let (killed, c_out) = match kill {
        Some(d) => kill_after(c_kid, d, "creator"),
        None => (false, c_kid.wait_with_output().unwrap()),
    };
    let outs: Vec<Output> = kids
        .into_iter()
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    // A creator killed after it committed its record has finished.
    let committed = h
        .record(&creator, "eth1")
        .is_some_and(|r| r.is_object() && r["pending"].is_null());
    let creator_ok = c_out.status.success() || (killed && committed);
    let ctx = format!(
        "{ctx}; creator {} exit {:?} signal {:?} {}, its record then {:?}, eth1 {}, veth master {:?}",
        creator.pid,
        c_out.status.code(),
        c_out.status.signal(),
        stderr(&c_out).trim(),
        h.record(&creator, "eth1"),
        has_link(&creator, "eth1"),
        h.master_of(&veth_of(&creator))
    );
    if fail_after.is_some() {
        assert_eq!(
            c_out.status.code(),
            Some(1),
            "{ctx}: creator should fail: {}{}",
            stdout(&c_out),
            stderr(&c_out)
        );
    }
    let check = |when: &str| {
        let mut ok = 0;
        for (i, (c, o)) in joiners.iter().zip(&outs).enumerate() {
            if o.status.success() {
                ok += 1;
                assert_joined(h, c, &br, &addr(i + 1), &format!("{ctx} {when}"));
            }
        }
        if ok > 0 {
            assert!(
                h.ns.links().contains(&br),
                "{ctx} {when}: bridge gone though {ok} joiners succeeded"
            );
        }
        if creator_ok {
            assert_joined(h, &creator, &br, &addr(0), &format!("{ctx} {when}"));
        } else {
            assert!(
                !has_link(&creator, "eth1"),
                "{ctx} {when}: failed creator {} (killed: {killed}) still has eth1; record {:?}",
                creator.pid,
                h.record(&creator, "eth1")
            );
        }
        ok
    };
    if kill.is_none() {
        check("after the run");
    }
    // After a kill only gc is expected to clean up the creator's leftovers;
    // gc must not tear the bridge from the joiners either.
    h.gc();
    let ok = check("after gc");
    let failed: Vec<String> = outs
        .iter()
        .zip(&joiners)
        .filter(|(o, _)| !o.status.success())
        .map(|(o, c)| format!("{}: {}", c.pid, stderr(o).trim()))
        .collect();
    assert!(
        failed.is_empty(),
        "{ctx}: {} of {JOINERS} joiners failed: {failed:#?}",
        failed.len()
    );
    assert_eq!(ok, JOINERS);
    killed
}

#[test]
fn failing_creator_never_tears_the_bridge_from_joiners() {
    let h = Host::new("ch");
    let probe = Container::new();
    let br = unique("br");
    let plan = h.ok(&["-n", &br, &probe.pid_s(), "10.91.0.2/16"]);
    let steps = plan.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(steps >= 3, "plan: {plan}");
    assert!(
        plan.contains("type bridge"),
        "the plan creates no bridge: {plan}"
    );
    drop(probe);
    let t = Instant::now();
    for n in 1..=steps {
        creator_round(&h, n, Some(n), None);
    }
    eprintln!("{steps} failing-creator rounds: {:?}", t.elapsed());
    let mut rng = Rng::new("failing_creator_never_tears_the_bridge_from_joiners");
    let t = Instant::now();
    let mut mid = 0;
    // CRASH_KILL_ROUNDS=N runs more rounds when hunting a rare interleaving.
    let kill_rounds: usize = std::env::var("CRASH_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for r in 0..kill_rounds {
        if creator_round(&h, 100 + r, None, Some(rng.delay(20_000))) {
            mid += 1;
        }
    }
    eprintln!(
        "{kill_rounds} killed-creator rounds ({mid} kills landed mid-run): {:?}",
        t.elapsed()
    );
}

#[test]
fn attach_and_detach_race_ends_consistent() {
    let h = Host::new("ch");
    let c = Container::new();
    let host_before = h.link_view();
    let guest_before = c.links();
    let br = unique("br");
    let pid = c.pid_s();
    let (mut attached, mut detached) = (0, 0);
    let t = Instant::now();
    for round in 0..30 {
        let a = h.spawn(&[&br, &pid, "10.92.0.2/24"], &[]);
        let d = h.spawn(&["detach", &pid], &[]);
        let (ao, dout) = (a.wait_with_output().unwrap(), d.wait_with_output().unwrap());
        let ctx = format!(
            "round {round}: attach {:?} {} / detach {:?} {}",
            ao.status.code(),
            stderr(&ao).trim(),
            dout.status.code(),
            stderr(&dout).trim()
        );
        assert!(
            ao.status.code().is_some() && dout.status.code().is_some(),
            "{ctx}"
        );
        let eth1 = has_link(&c, "eth1");
        let rec = h.record(&c, "eth1");
        let veth = h.master_of(&veth_of(&c));
        if eth1 || rec.is_some() || veth.is_some() {
            attached += 1;
            assert!(
                eth1 && veth.as_deref() == Some(br.as_str()),
                "{ctx}: eth1 {eth1}, record {rec:?}, host veth master {veth:?}"
            );
            let rec = rec.unwrap_or_else(|| panic!("{ctx}: eth1 and veth without a record"));
            assert!(
                rec["pending"].is_null(),
                "{ctx}: record left pending: {rec}"
            );
            assert!(
                ao.status.success(),
                "{ctx}: attached although the attach failed"
            );
            assert_eq!(addrs(&c, "eth1"), ["10.92.0.2/24"], "{ctx}");
            h.ok(&["detach", &pid]);
        } else {
            detached += 1;
        }
        // Nothing left: no link, no record, no bridge, no netns link.
        assert_eq!(h.link_view(), host_before, "{ctx}: host links left");
        assert_eq!(c.links(), guest_before, "{ctx}: container links left");
        assert!(
            h.records_no_tmp().is_empty(),
            "{ctx}: records {:?}",
            h.records_no_tmp()
        );
        assert!(
            c.netns_link().symlink_metadata().is_err(),
            "{ctx}: /var/run/netns/{pid} left"
        );
        assert!(
            h.files("netns").is_empty(),
            "{ctx}: markers {:?}",
            h.files("netns")
        );
    }
    eprintln!(
        "30 attach/detach races: {attached} ended attached, {detached} detached, {:?}",
        t.elapsed()
    );
}

/// Everything a killed run may leave behind, read back.
#[derive(Debug, PartialEq)]
struct Snapshot {
    host: Vec<String>,
    guests: Vec<(Vec<String>, String, Vec<String>)>,
    records: Vec<String>,
    markers: Vec<String>,
    netns_links: Vec<bool>,
}

fn snapshot(h: &Host, cs: &[&Container]) -> Snapshot {
    Snapshot {
        host: h.link_view(),
        guests: cs
            .iter()
            .map(|c| {
                (
                    link_view(&c.ipj(&["link", "show"])),
                    c.routes(),
                    addr_view(&c.ipj(&["addr", "show"])),
                )
            })
            .collect(),
        records: h.records(),
        markers: h.files("netns"),
        netns_links: cs
            .iter()
            .map(|c| c.netns_link().symlink_metadata().is_ok())
            .collect(),
    }
}

fn diff(a: &Snapshot, b: &Snapshot) -> String {
    let mut out = String::new();
    if a.host != b.host {
        out += &format!("host links {:?} -> {:?}\n", a.host, b.host);
    }
    for (i, (x, y)) in a.guests.iter().zip(&b.guests).enumerate() {
        if x.0 != y.0 {
            out += &format!("container #{i} links {:?} -> {:?}\n", x.0, y.0);
        }
        if x.1 != y.1 {
            out += &format!("container #{i} routes {} -> {}\n", x.1, y.1);
        }
        if x.2 != y.2 {
            out += &format!("container #{i} addresses {:?} -> {:?}\n", x.2, y.2);
        }
    }
    if a.records != b.records {
        out += &format!("records {:?} -> {:?}\n", a.records, b.records);
    }
    if a.markers != b.markers {
        out += &format!("netns markers {:?} -> {:?}\n", a.markers, b.markers);
    }
    if a.netns_links != b.netns_links {
        out += &format!(
            "/var/run/netns links {:?} -> {:?}\n",
            a.netns_links, b.netns_links
        );
    }
    out
}

/// Kill `args` after a random delay, gc, and compare with `before`; a run that
/// finished is undone with `pipe detach undo_pid` first. Returns counts of
/// [kills that landed mid-run, of those after the commit, that left a pending record].
fn kill_gc_round(
    h: &Host,
    rng: &mut Rng,
    args: &[&str],
    undo_pid: &str,
    cs: &[&Container],
    before: &Snapshot,
    i: usize,
) -> [usize; 3] {
    let d = rng.delay(15_000);
    let kid = h.spawn(args, &[]);
    let (killed, _) = kill_after(kid, d, &format!("pipe {args:?}"));
    // A run killed after it committed its record has finished: undo it.
    let committed = !h.records_no_tmp().is_empty() && h.pending().is_empty();
    let pending = !h.pending().is_empty();
    let left = format!(
        "records {:?}, pending {:?}",
        h.records_no_tmp(),
        h.pending()
    );
    if !killed || committed {
        h.ok(&["detach", undo_pid]);
    }
    let gc = h.pipe(&["gc"]);
    let after = snapshot(h, cs);
    assert!(
        gc.status.success() && after == *before,
        "kill #{i} of pipe {args:?} after {d:?} (mid-run: {killed}; left {left}), gc exit {:?}: {}{}\n{}",
        gc.status.code(),
        stdout(&gc),
        stderr(&gc),
        diff(before, &after)
    );
    [
        killed as usize,
        (killed && committed) as usize,
        (killed && pending) as usize,
    ]
}

#[test]
fn sigkill_at_random_points_then_gc_restores_the_host() {
    const KILLS: usize = 220;
    let h = Host::new("ch");
    let mut rng = Rng::new("sigkill_at_random_points_then_gc_restores_the_host");
    let (a, b, c) = (Container::new(), Container::new(), Container::new());
    with_default_route(&a);
    let br = unique("br");
    let cs = [&a, &b, &c];
    let before = snapshot(&h, &cs);
    let attach = [
        br.as_str(),
        &a.pid_s(),
        "10.93.0.2/24@10.93.0.1",
        "-i",
        "eth1",
    ];
    let p2p = [
        "link",
        &b.pid_s(),
        "10.94.0.1/32",
        &c.pid_s(),
        "10.94.0.2/32",
    ];
    let t = Instant::now();
    // Per kind: [mid-run, of those after the commit, left a pending record].
    let mut n = [[0usize; 3]; 2];
    for i in 0..KILLS {
        let k = i % 2;
        let r = if k == 0 {
            kill_gc_round(&h, &mut rng, &attach, &a.pid_s(), &cs, &before, i)
        } else {
            kill_gc_round(&h, &mut rng, &p2p, &b.pid_s(), &cs, &before, i)
        };
        for j in 0..3 {
            n[k][j] += r[j];
        }
    }
    eprintln!(
        "{KILLS} kills in {:?}: attach {} kills, {} mid-run ({} after the commit, {} left a pending record); \
         link {} kills, {} mid-run ({} after the commit, {} left a pending record)",
        t.elapsed(),
        KILLS.div_ceil(2),
        n[0][0],
        n[0][1],
        n[0][2],
        KILLS / 2,
        n[1][0],
        n[1][1],
        n[1][2],
    );
    assert!(
        // Under load most early kills land before the journal is written.
        n[0][2] >= 1 && n[1][2] >= 1 && n[0][2] + n[1][2] >= 8,
        "too few kills left a pending record to test gc: {n:?}"
    );
    // The host is usable afterwards: the same attach and link work.
    h.ok(&attach);
    h.ok(&p2p);
    assert!(has_link(&a, "eth1") && has_link(&b, "eth1") && has_link(&c, "eth1"));
}

/// Kill `args` at random points until a kill leaves a pending record of
/// `c`'s eth1 and a link it made; cleans up other runs. Returns the number of tries.
fn kill_until_pending(h: &Host, rng: &mut Rng, args: &[&str], c: &Container) -> usize {
    for tries in 1..=400 {
        let d = rng.delay(30_000);
        let kid = h.spawn(args, &[]);
        let (killed, _) = kill_after(kid, d, &format!("pipe {args:?}"));
        match h.record(c, "eth1") {
            // Pending, with something in the kernel to recover.
            Some(r)
                if killed
                    && r["pending"].is_object()
                    && (has_link(c, "eth1") || h.master_of(&veth_of(c)).is_some()) =>
            {
                return tries;
            }
            Some(r) if r.is_object() && r["pending"].is_null() => {
                h.ok(&["detach", &c.pid_s()]);
            }
            Some(r) if r.is_object() => {}
            Some(r) => panic!("after a kill at {d:?}: record {r}"),
            None => {}
        }
        h.gc();
        assert!(
            h.records_no_tmp().is_empty(),
            "gc left {:?}",
            h.records_no_tmp()
        );
    }
    panic!("400 kills of pipe {args:?} never left a pending record");
}

#[test]
fn rerun_and_detach_recover_a_killed_attach() {
    let h = Host::new("ch");
    let mut rng = Rng::new("rerun_and_detach_recover_a_killed_attach");
    let c = Container::new();
    with_default_route(&c);
    let br = unique("br");

    for round in 0..5 {
        rerun_round(&h, &mut rng, &c, &br, round);
        detach_round(&h, &mut rng, &c, &br, round);
    }
}

struct Before {
    host: Vec<String>,
    guest: Vec<String>,
    routes: String,
}

fn rerun_round(h: &Host, rng: &mut Rng, c: &Container, br: &str, round: usize) {
    let b = before_of(h, c);
    let attach = [br, &c.pid_s(), "10.95.0.2/24@10.95.0.1"];
    let (host_before, guest_before) = (&b.host, &b.guest);
    // A re-run finishes the attach.
    let tries = kill_until_pending(h, rng, &attach, c);
    eprintln!("round {round}: re-run after a kill that left a pending record ({tries} tries)");
    let left = snapshot(h, &[c]);
    let out = h.pipe(&attach);
    assert!(
        out.status.success(),
        "re-run after the kill: {}{}\nleft by the kill: {left:?}",
        stdout(&out),
        stderr(&out)
    );
    let mut want = guest_before.clone();
    want.push(format!("eth1 master=- alias={}", c.tag("eth1")));
    want.sort();
    assert_eq!(link_view(&c.ipj(&["link", "show"])), want);
    assert!(is_up(c, "eth1"));
    assert_eq!(addrs(c, "eth1"), ["10.95.0.2/24"]);
    let r = c.ipj(&["route", "show", "default"]);
    assert_eq!(r[0]["gateway"], "10.95.0.1", "{r}");
    assert_eq!(h.ports(br), [veth_of(c)]);
    let rec = h.record(c, "eth1").expect("record");
    assert!(rec["pending"].is_null(), "{rec}");
    assert_eq!(h.records_no_tmp(), [c.record("eth1")]);
    // And it works: the host reaches the container across the bridge.
    h.ns.ip(&["addr", "add", "10.95.0.1/24", "dev", br]);
    assert!(c.ping("10.95.0.1"), "eth1 does not reach the bridge");
    h.ns.ip(&["addr", "del", "10.95.0.1/24", "dev", br]);
    h.ok(&["detach", &c.pid_s()]);
    assert_eq!(&h.link_view(), host_before);
    assert_eq!(c.routes(), b.routes, "default route not restored");
    gc_removes_tmp(h, round);
}

/// A writer killed mid-write leaves a `.tmp` file; re-run and detach leave
/// it to gc (noted), and gc must remove it.
fn gc_removes_tmp(h: &Host, round: usize) {
    let tmp = h.tmp_files();
    if !tmp.is_empty() {
        eprintln!("round {round}: left for gc: {tmp:?}");
    }
    h.gc();
    assert!(h.tmp_files().is_empty(), "gc left {:?}", h.tmp_files());
}

fn before_of(h: &Host, c: &Container) -> Before {
    Before {
        host: h.link_view(),
        guest: link_view(&c.ipj(&["link", "show"])),
        routes: c.routes(),
    }
}

fn detach_round(h: &Host, rng: &mut Rng, c: &Container, br: &str, round: usize) {
    let b = before_of(h, c);
    let attach = [br, &c.pid_s(), "10.95.0.2/24@10.95.0.1"];
    // A detach after the kill removes everything.
    let tries = kill_until_pending(h, rng, &attach, c);
    eprintln!("round {round}: detach after a kill that left a pending record ({tries} tries)");
    let left = snapshot(h, &[c]);
    let out = h.pipe(&["detach", &c.pid_s()]);
    assert!(
        out.status.success(),
        "detach after the kill: {}{}\nleft by the kill: {left:?}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(h.link_view(), b.host, "host links left");
    assert_eq!(link_view(&c.ipj(&["link", "show"])), b.guest);
    assert_eq!(c.routes(), b.routes, "default route not restored");
    assert!(h.records_no_tmp().is_empty(), "{:?}", h.records_no_tmp());
    assert!(h.files("netns").is_empty(), "{:?}", h.files("netns"));
    assert!(c.netns_link().symlink_metadata().is_err());
    gc_removes_tmp(h, round);
}
