//! `--host-shim` on a real kernel: without it the host cannot reach its own
//! macvlan container (nor the container the host); with it both ways work
//! through one shared host-side macvlan and a /32 route per container; the shim
//! goes with its last user; a failed attach leaves nothing.

mod common;

use common::*;

/// A host ("shh") whose "physical" NIC `parent` (10.74.0.1/24) is a veth to
/// a LAN namespace ("shl").
struct Lan {
    h: Host,
    parent: String,
}

impl std::ops::Deref for Lan {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.h
    }
}

impl Lan {
    fn new() -> Lan {
        let parent = unique("up");
        let h = Host::new("shh").with_lan("shl", &parent);
        h.ns.ip(&["addr", "add", "10.74.0.1/24", "dev", &parent]);
        Lan { h, parent }
    }

    fn host_pings(&self, addr: &str) -> bool {
        self.ns.exec(&["ping", "-c1", "-W1", addr]).status.success()
    }

    /// Host links tagged pipe:shared that are macvlans on the parent.
    fn shims(&self) -> Vec<String> {
        let v = self.ns.ipj(&["-d", "link", "show"]);
        v.as_array()
            .unwrap()
            .iter()
            .filter(|l| {
                l["ifalias"] == "pipe:shared"
                    && l["linkinfo"]["info_kind"] == "macvlan"
                    && l["link"] == self.parent.as_str()
            })
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    fn routes(&self) -> String {
        self.ns.ip(&["route", "show"])
    }
}

#[test]
fn host_and_macvlan_container_reach_each_other_only_with_the_shim() {
    let l = Lan::new();
    let before = l.ns.links();
    let c1 = Container::new();
    let c2 = Container::new();

    // Without: the kernel delivers nothing between a macvlan and its parent.
    l.ok(&[&l.parent, &c1.pid_s(), "10.74.0.2/24"]);
    assert!(
        !l.host_pings("10.74.0.2"),
        "host reached its macvlan container without a shim"
    );
    assert!(
        !c1.ping("10.74.0.1"),
        "container reached the host without a shim"
    );
    l.ok(&["detach", &c1.pid_s()]);

    // With: one shim, a /32 per container, both directions.
    l.ok(&["--host-shim", &l.parent, &c1.pid_s(), "10.74.0.2/24"]);
    let shims = l.shims();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let shim = shims[0].clone();
    assert!(
        l.routes().contains(&format!("10.74.0.2 dev {shim}")),
        "{}",
        l.routes()
    );
    assert!(
        l.host_pings("10.74.0.2"),
        "host -> container through the shim"
    );
    assert!(c1.ping("10.74.0.1"), "container -> host through the shim");

    l.ok(&["--host-shim", &l.parent, &c2.pid_s(), "10.74.0.3/24"]);
    assert_eq!(l.shims(), std::slice::from_ref(&shim), "the shim is shared");
    assert!(l.host_pings("10.74.0.3"));
    assert!(c2.ping("10.74.0.1"));
    // Containers still reach each other (bridge mode).
    assert!(c1.ping("10.74.0.3"));
    // A re-run is a no-op; a re-run with another address moves the route.
    let out = l.ok(&["--host-shim", &l.parent, &c2.pid_s(), "10.74.0.3/24"]);
    assert!(out.contains("already attached"), "{out}");
    l.ok(&["--host-shim", &l.parent, &c2.pid_s(), "10.74.0.4/24"]);
    let r = l.routes();
    assert!(
        !r.contains("10.74.0.3 ") && r.contains(&format!("10.74.0.4 dev {shim}")),
        "{r}"
    );
    assert!(l.host_pings("10.74.0.4"));

    // The record names the shim; pipe list shows both live.
    let list = l.ok(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "live"),
        "{rows}"
    );

    // Detach the first: its route goes, the shim stays for the second.
    let out = l.ok(&["detach", &c1.pid_s()]);
    assert!(out.contains("host route to 10.74.0.2"), "{out}");
    assert!(!l.routes().contains("10.74.0.2 "), "{}", l.routes());
    assert_eq!(l.shims(), std::slice::from_ref(&shim));
    assert!(l.host_pings("10.74.0.4"));
    // The last user: the shim goes too.
    let out = l.ok(&["detach", &c2.pid_s()]);
    assert!(out.contains(&shim), "{out}");
    assert!(l.shims().is_empty());
    assert!(!l.routes().contains(&shim), "{}", l.routes());
    assert_eq!(l.ns.links(), before);
}

#[test]
fn failed_attach_with_shim_leaves_nothing_and_gc_collects_the_dead() {
    let l = Lan::new();
    let before = l.ns.links();
    let routes_before = l.routes();
    let c = Container::new();
    let args = ["--host-shim", &l.parent, &c.pid_s(), "10.74.0.5/24"];
    // Find the route step in the plan and fail right after it.
    let mut dry = vec!["--dry-run"];
    dry.extend_from_slice(&args);
    let plan = l.ok(&dry);
    assert!(plan.contains("type macvlan mode bridge"), "{plan}");
    let n = plan
        .lines()
        .position(|s| s.contains("ip route replace 10.74.0.5/32"))
        .unwrap_or_else(|| panic!("no shim route in {plan}"))
        + 1;
    let o = l.pipe_env(&args, &[("PIPE_FAIL_AFTER", &n.to_string())]);
    assert_fails(&o, 1, "failure injected");
    assert_eq!(l.ns.links(), before, "rollback left links");
    assert_eq!(l.routes(), routes_before);
    assert!(c.links().iter().all(|n| n == "lo"), "{:?}", c.links());

    // Refusals: not a macvlan, no address.
    let br = unique("br");
    let o = l.pipe(&["--host-shim", &br, &c.pid_s(), "10.74.0.5/24"]);
    assert_fails(&o, 2, "--host-shim is for a macvlan");
    let o = l.pipe(&["--host-shim", &l.parent, &c.pid_s(), "0/0"]);
    assert_fails(&o, 2, "needs static");

    // A container that dies: gc removes the record, the route and the shim.
    let mut c2 = Container::new();
    l.ok(&["--host-shim", &l.parent, &c2.pid_s(), "10.74.0.6/24"]);
    assert_eq!(l.shims().len(), 1);
    let _ = c2.child.kill();
    let _ = c2.child.wait();
    let out = l.ok(&["gc"]);
    assert!(l.shims().is_empty(), "gc left the shim: {out}");
    assert_eq!(l.routes(), routes_before, "{out}");
    assert_eq!(l.ns.links(), before);
}
