//! `pipe list` on a real kernel: live, drifted (addresses changed by hand, the
//! host end taken out of its bridge), stale (container killed), filters, JSON,
//! and names Docker could not check. Each test has its own host namespace and
//! state directory.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// Each test's host ("lsh") has no Docker: DOCKER_HOST leads nowhere.
fn host() -> Host {
    Host::new("lsh").with_env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
}

impl Host {
    /// `pipe list --json ARGS`, parsed.
    fn list(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut a = vec!["list", "--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap_or_else(|e| panic!("{out}: {e}"))
            .as_array()
            .unwrap()
            .clone()
    }
}

fn row<'a>(rows: &'a [serde_json::Value], ifname: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["ifname"] == ifname)
        .unwrap_or_else(|| panic!("no {ifname} in {rows:?}"))
}

#[test]
fn live_then_drifted_then_stale() {
    let h = host();
    let mut c = Container::new();
    let br = unique("br");
    let parent = unique("up");
    h.ns.ip(&[
        "link",
        "add",
        &parent,
        "type",
        "veth",
        "peer",
        "name",
        &unique("pe"),
    ]);
    h.ns.ip(&["link", "set", &parent, "up"]);

    // Nothing yet: an empty array, and no state dir created by a read.
    assert!(h.list(&[]).is_empty());
    assert!(
        !std::path::Path::new(&h.state).exists(),
        "pipe list created the state dir"
    );

    h.ok(&[
        &br,
        &c.pid_s(),
        "10.71.0.2/24@10.71.0.1",
        "02:00:00:71:00:02",
    ]);
    h.ok(&[
        "-i",
        "eth2",
        &parent,
        &c.pid_s(),
        "10.72.0.2/24",
        "--persist",
    ]);

    let rows = h.list(&[]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let e1 = row(&rows, "eth1");
    for k in [
        "container",
        "ifname",
        "kind",
        "host_if",
        "mac",
        "addresses",
        "state",
    ] {
        assert!(e1.get(k).is_some(), "no key {k} in {e1}");
    }
    assert_eq!(e1["container"], c.pid_s().as_str());
    assert_eq!(e1["kind"], "bridge");
    assert_eq!(e1["host_if"], br.as_str());
    assert_eq!(e1["mac"], "02:00:00:71:00:02");
    assert_eq!(e1["addresses"], serde_json::json!(["10.71.0.2/24"]));
    assert_eq!(e1["gateways"], serde_json::json!(["10.71.0.1"]));
    assert_eq!(e1["state"], "live", "{e1}");
    let e2 = row(&rows, "eth2");
    assert_eq!(e2["kind"], "macvlan");
    assert_eq!(e2["persist"], true);
    assert_eq!(e2["state"], "live", "{e2}");
    // The human form: one line each.
    let text = h.ok(&["list"]);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("live") && l.contains("eth1") && l.contains("10.71.0.2/24")),
        "{text}"
    );

    // Change the address by hand, and take the host end out of the bridge.
    c.ip(&["addr", "add", "10.79.0.9/24", "dev", "eth1"]);
    c.ip(&["addr", "del", "10.71.0.2/24", "dev", "eth1"]);
    c.ip(&[
        "route",
        "replace",
        "default",
        "via",
        "10.79.0.1",
        "dev",
        "eth1",
    ]);
    h.ns.ip(&["link", "set", &format!("veth1pl{}", c.pid), "nomaster"]);
    let rows = h.list(&[]);
    let e1 = row(&rows, "eth1");
    assert_eq!(e1["state"], "drifted", "{e1}");
    let drift = e1["drift"].to_string();
    for want in [
        "address 10.71.0.2/24 missing",
        "extra address 10.79.0.9/24",
        "default route via 10.79.0.1, not 10.71.0.1",
        "is not a port of",
    ] {
        assert!(drift.contains(want), "{want:?} not in {drift}");
    }
    assert_eq!(row(&rows, "eth2")["state"], "live");
    // Filters.
    let d = h.list(&["--state", "drifted"]);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["ifname"], "eth1");
    assert_eq!(h.list(&["--state", "stale"]).len(), 0);
    assert_eq!(h.list(&[&c.pid_s()]).len(), 2);
    assert_eq!(h.list(&["no-such-container"]).len(), 0);
    assert_eq!(h.list(&[&c.ns_path()]).len(), 2, "by netns path");
    let text = h.ok(&["list"]);
    assert!(
        text.contains("drifted") && text.contains("address 10.71.0.2/24 missing"),
        "{text}"
    );

    // The container dies: both stale, the persisted one says watch brings it back.
    let pid = c.pid_s();
    let _ = c.child.kill();
    let _ = c.child.wait();
    let rows = h.list(&["--state", "stale"]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(row(&rows, "eth1")["drift"].to_string().contains("pipe gc"));
    assert!(
        row(&rows, "eth2")["drift"]
            .to_string()
            .contains("pipe watch")
    );
    assert_eq!(h.list(&["--state", "live"]).len(), 0);
    assert_eq!(h.list(&[&pid]).len(), 2, "a dead PID is still a label");
    // gc agrees with "stale": the non-persisted record goes.
    h.ok(&["gc"]);
    let rows = h.list(&[]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["ifname"], "eth2");
    let _ = h.ok(&["detach", &pid, "-i", "eth2"]);
}

#[test]
fn container_names_without_docker_are_listed_and_named_as_unchecked() {
    let h = host();
    // A named namespace, attached by name, whose name then goes away while a
    // process keeps the namespace alive: its label can only be a Docker name now.
    let n = Ns::new("lsw");
    let mut keeper = Command::new("ip")
        .args(["netns", "exec", &n.name, "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = keeper.id();
    for _ in 0..200 {
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let br = unique("br");
    h.ok(&[&br, &n.name, "10.73.0.2/24"]);
    must(Command::new("ip").args(["netns", "del", &n.name]));

    let o = h.pipe(&["list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("live") && out.contains(&n.name), "{out}");
    let err = stderr(&o);
    assert!(
        err.contains("not checked with Docker") && err.contains(&n.name),
        "{err}"
    );
    let _ = keeper.kill();
    let _ = keeper.wait();
    let rows = h.list(&[]);
    assert_eq!(rows[0]["state"], "stale", "{rows:?}");
    h.ok(&["gc"]);
}
