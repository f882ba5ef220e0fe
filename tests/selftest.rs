//! `pipe selftest`: the whole run, and `--keep` + `--clean`, leave the host as it was.
//! What is compared is read in the root namespace only (`ip -j link`, `ip netns list`,
//! /var/run/netns, /run), right before and right after each command.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{BIN, Ns, dir_names, must, require_root, run};

const PREFIX: &str = "pipe-selftest-";

/// The two tests run one at a time: each compares the host before and after.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    /// (ifindex, name, mtu, flags, address, master) of every root-namespace link.
    links: BTreeSet<String>,
    netns_list: BTreeSet<String>,
    run_netns: BTreeSet<String>,
    /// selftest state directories under /run.
    run_dirs: BTreeSet<String>,
}

fn snapshot() -> Snapshot {
    let v: serde_json::Value =
        serde_json::from_str(&must(Command::new("ip").args(["-j", "link", "show"]))).unwrap();
    let links = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {} mtu {} {} {} master {}",
                l["ifindex"], l["ifname"], l["mtu"], l["flags"], l["address"], l["master"]
            )
        })
        .collect();
    let netns_list = must(Command::new("ip").args(["netns", "list"]))
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    Snapshot {
        links,
        netns_list,
        run_netns: dir_names("/var/run/netns").into_iter().collect(),
        run_dirs: dir_names("/run")
            .into_iter()
            .filter(|n| n.starts_with(PREFIX))
            .collect(),
    }
}

/// Root links and everything named `pipe-selftest-*` must be exactly as before.
/// Other namespaces belong to other tests on this machine, which may come and go
/// while selftest runs: a change there fails only when the machine is quiet
/// (nothing changes there during a second of watching), as it is in CI.
fn assert_same(before: &Snapshot, after: &Snapshot, what: &str) {
    let ours = |set: &BTreeSet<String>, mine: bool| -> BTreeSet<String> {
        set.iter()
            .filter(|n| n.starts_with(PREFIX) == mine)
            .cloned()
            .collect()
    };
    let diff = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
        (
            a.difference(b).cloned().collect::<Vec<_>>(),
            b.difference(a).cloned().collect::<Vec<_>>(),
        )
    };
    let strict = [
        (
            "root links (ip -j link)",
            before.links.clone(),
            after.links.clone(),
        ),
        (
            "ip netns list (pipe-selftest-*)",
            ours(&before.netns_list, true),
            ours(&after.netns_list, true),
        ),
        (
            "/var/run/netns (pipe-selftest-*)",
            ours(&before.run_netns, true),
            ours(&after.run_netns, true),
        ),
        (
            "/run/pipe-selftest-*",
            before.run_dirs.clone(),
            after.run_dirs.clone(),
        ),
    ];
    for (name, a, b) in &strict {
        let (gone, new) = diff(a, b);
        assert!(
            gone.is_empty() && new.is_empty(),
            "{what} changed {name}: removed {gone:?}, added {new:?}"
        );
    }
    let others = |h: &Snapshot| (ours(&h.netns_list, false), ours(&h.run_netns, false));
    if others(before) != others(after) {
        let a = others(&snapshot());
        std::thread::sleep(std::time::Duration::from_secs(1));
        let busy = a != others(&snapshot());
        let (gone, new) = diff(&others(before).1, &others(after).1);
        assert!(
            busy,
            "{what} changed /var/run/netns on a quiet machine: removed {gone:?}, added {new:?}"
        );
        eprintln!(
            "note: other namespaces changed during {what} (removed {gone:?}, added {new:?}); \
             other tests are running here, so only pipe-selftest-* entries are compared"
        );
    }
}

fn selftest(args: &[&str]) -> (bool, String, String) {
    let o = run(Command::new(BIN).arg("selftest").args(args));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every step line is `ok`/`skip` with a time; the last line is the summary.
fn check_lines(out: &str) {
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("selftest: throwaway namespaces pipe-selftest-"),
        "{out}"
    );
    let steps: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("ok ") || l.starts_with("skip ") || l.starts_with("FAIL "))
        .collect();
    for l in &steps {
        assert!(!l.starts_with("FAIL"), "{out}");
        let ms = l.split_whitespace().nth(1).unwrap();
        assert!(ms.parse::<f64>().is_ok(), "no time on {l:?}");
    }
    for l in steps.iter().filter(|l| l.starts_with("skip")) {
        assert!(l.ends_with(": not supported by this kernel"), "{l}");
        assert!(l.contains(" 802.1Q:") || l.contains(" ipvlan:"), "{l}");
    }
    for want in [
        "attach c1 to a new bridge:",
        "attach c2 to the same bridge:",
        "ping over the bridge: c1 -> c2",
        "attach c2 by macvlan to the LAN:",
        "ping over the macvlan: c2 -> LAN gateway",
    ] {
        assert!(
            steps.iter().any(|l| l.contains(want)),
            "no {want:?} in {out}"
        );
    }
    let rerun = steps
        .iter()
        .find(|l| l.contains("re-run an attach:"))
        .unwrap();
    assert!(rerun.ends_with("(already attached)"), "{rerun}");
    let ok = steps.iter().filter(|l| l.starts_with("ok")).count();
    let summary = format!("selftest: {ok} steps ok in ");
    assert!(
        lines.iter().any(|l| l.starts_with(&summary)),
        "no {summary:?} in {out}"
    );
}

#[test]
fn selftest_passes_and_leaves_the_host_as_it_was() {
    require_root();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());

    let before = snapshot();
    let (ok, out, err) = selftest(&[]);
    let after = snapshot();
    assert!(ok, "pipe selftest failed:\n{out}{err}");
    assert!(err.is_empty(), "selftest wrote to stderr: {err}");
    check_lines(&out);
    for l in ["detach:", "nothing left:", "remove namespaces:"] {
        assert!(out.contains(&format!("ms  {l}")), "no {l} step in {out}");
    }
    assert_same(&before, &after, "pipe selftest");

    let before = snapshot();
    let (ok, out, err) = selftest(&["--json"]);
    let after = snapshot();
    assert!(ok, "pipe selftest --json failed:\n{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["ok"], true, "{v}");
    let steps = v["steps"].as_array().unwrap();
    assert!(steps.len() >= 10, "{v}");
    for s in steps {
        let st = s["status"].as_str().unwrap();
        assert!(st == "ok" || st == "not_supported", "{s}");
        assert!(s["ms"].as_f64().unwrap() >= 0.0);
    }
    assert_eq!(
        v["steps_ok"].as_u64().unwrap() as usize,
        steps.iter().filter(|s| s["status"] == "ok").count()
    );
    assert_same(&before, &after, "pipe selftest --json");
}

#[test]
fn keep_leaves_the_attachments_and_clean_removes_only_leftovers() {
    require_root();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    // A selftest namespace named for a process that is still running (this
    // one, with its start time): --clean must leave it alone. One named for
    // this PID with another start time (the PID was reused): a leftover.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let started: u64 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let decoy = format!("{PREFIX}{pid}-{started:x}-decoy");
    let stale = format!("{PREFIX}{pid}-{:x}-stale", started + 1);
    must(Command::new("ip").args(["netns", "add", &decoy]));
    let decoy_guard = Ns {
        name: decoy.clone(),
    };
    must(Command::new("ip").args(["netns", "add", &stale]));
    let stale_guard = Ns {
        name: stale.clone(),
    };

    let mut before = snapshot();
    let (ok, out, err) = selftest(&["--keep"]);
    assert!(ok, "pipe selftest --keep failed:\n{out}{err}");
    check_lines(&out);
    assert!(
        !out.contains("ms  detach:"),
        "--keep stops before the detach: {out}"
    );
    let kept_line = out
        .lines()
        .find(|l| l.starts_with("kept: namespaces "))
        .unwrap();
    let kept: Vec<String> = kept_line
        .split_whitespace()
        .filter(|w| w.starts_with(PREFIX) && !w.starts_with("/"))
        .map(str::to_string)
        .collect();
    assert_eq!(kept.len(), 4, "{kept_line}");
    assert!(out.contains("ip netns exec "), "{out}");
    assert!(out.contains("pipe selftest --clean"), "{out}");
    let mid = snapshot();
    for n in &kept {
        assert!(mid.netns_list.contains(n), "{n} is not in ip netns list");
    }
    // The attachment is there to look at, as printed.
    let c1 = kept.iter().find(|n| n.ends_with("-c1")).unwrap();
    let addrs = must(Command::new("ip").args(["-n", c1, "-br", "addr", "show", "eth1"]));
    assert!(addrs.contains("192.0.2.2/24"), "{addrs}");
    let state = kept_line.split_whitespace().last().unwrap();
    assert!(
        !dir_names(&format!("{state}/attachments")).is_empty(),
        "no records in {state}"
    );

    let (ok, out, err) = selftest(&["--clean"]);
    assert!(ok, "pipe selftest --clean failed:\n{out}{err}");
    for n in &kept {
        assert!(
            out.contains(&format!("removed /var/run/netns/{n}\n")),
            "{n} not removed: {out}"
        );
    }
    assert!(out.contains(&format!("removed {state}\n")), "{out}");
    assert!(
        out.contains(&format!(
            "left /var/run/netns/{decoy} (its selftest, PID {pid}"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("removed /var/run/netns/{stale}\n")),
        "{out}"
    );
    let after = snapshot();
    assert!(after.netns_list.contains(&decoy), "--clean removed {decoy}");
    before.netns_list.remove(&stale);
    before.run_netns.remove(&stale);
    assert_same(&before, &after, "pipe selftest --keep, then --clean");

    let (ok, out, _) = selftest(&["--clean"]);
    assert!(ok);
    assert!(
        !out.contains("removed"),
        "a second --clean found more: {out}"
    );
    drop(decoy_guard);
    // Removed by --clean already: nothing for its guard to do.
    std::mem::forget(stale_guard);
}

#[test]
fn keep_and_clean_together_is_a_usage_error() {
    let o = run(Command::new(BIN).args(["selftest", "--keep", "--clean"]));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("pipe: ") && err.lines().count() == 1,
        "{err}"
    );
}
