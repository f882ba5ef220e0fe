//! Lifecycle on a real kernel: state records and ownership tags, detach,
//! idempotent re-runs, --wait and gc. Each test has its own host namespace
//! and its own state directory (PIPE_STATE_DIR), so tests run in parallel.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Give a stand-in container an interface and a default route of its own, as
/// Docker's eth0 would be: `pre0` at 10.50.0.2/24, default via 10.50.0.1.
fn with_default_route(c: &Container) {
    c.ip(&[
        "link", "add", "pre0", "type", "veth", "peer", "name", "pre1",
    ]);
    c.ip(&["addr", "add", "10.50.0.2/24", "dev", "pre0"]);
    c.ip(&["link", "set", "pre0", "up"]);
    c.ip(&["link", "set", "pre1", "up"]);
    c.ip(&["route", "add", "default", "via", "10.50.0.1"]);
}

fn inet_addrs(c: &Container, dev: &str) -> Vec<String> {
    let a = c.ipj(&["addr", "show", "dev", dev]);
    a[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["family"] == "inet" || i["scope"] == "global")
        .map(|i| format!("{}/{}", i["local"].as_str().unwrap(), i["prefixlen"]))
        .collect()
}

#[test]
fn attach_then_detach_restores_route_and_links() {
    let h = Host::new("lh");
    let c = Container::new();
    with_default_route(&c);
    let host_before = h.ns.links();
    let guest_before = c.links();
    let routes_before = c.routes();
    let br = unique("br");

    h.ok(&[&br, &c.pid_s(), "10.61.0.2/24@10.61.0.1"]);
    let r = c.ipj(&["route", "show", "default"]);
    assert_eq!(r[0]["gateway"], "10.61.0.1", "{r}");
    // Ownership tags on both ends and on the bridge pipe created.
    let veth = format!("veth1pl{}", c.pid);
    let v = h.ns.ipj(&["link", "show", "dev", &veth]);
    assert_eq!(link(&v)["ifalias"], c.tag("eth1").as_str(), "{v}");
    let b = h.ns.ipj(&["link", "show", "dev", &br]);
    assert_eq!(link(&b)["ifalias"], "pipe:shared", "{b}");
    let g = c.ipj(&["link", "show", "dev", "eth1"]);
    assert_eq!(link(&g)["ifalias"], c.tag("eth1").as_str());
    assert_eq!(h.records(), [c.record("eth1")]);

    let out = h.ok(&["detach", &c.pid_s()]);
    assert!(out.contains("detached"), "{out}");
    assert_eq!(c.routes(), routes_before, "default route not restored");
    assert_eq!(h.ns.links(), host_before, "host links differ after detach");
    assert_eq!(
        c.links(),
        guest_before,
        "container links differ after detach"
    );
    assert!(h.records().is_empty(), "{:?}", h.records());
    assert!(!c.netns_link().exists(), "netns link left behind");
}

#[test]
fn detach_keeps_a_bridge_pipe_did_not_create_and_one_still_in_use() {
    let h = Host::new("lh");
    let (a, b) = (Container::new(), Container::new());
    h.ns.ip(&["link", "add", "brmine", "type", "bridge"]);
    h.ok(&["brmine", &a.pid_s(), "10.62.0.2/24"]);
    h.ok(&["detach", &a.pid_s()]);
    assert!(h.ns.links().contains(&"brmine".to_string()));

    let br = unique("br");
    h.ok(&[&br, &a.pid_s(), "10.62.1.2/24"]);
    h.ok(&[&br, &b.pid_s(), "10.62.1.3/24"]);
    h.ok(&["detach", &a.pid_s()]);
    assert!(h.ns.links().contains(&br), "bridge removed while b uses it");
    h.ok(&["detach", &b.pid_s()]);
    assert!(!h.ns.links().contains(&br), "empty pipe bridge left behind");
}

#[test]
fn same_attach_twice_is_a_noop() {
    let h = Host::new("lh");
    let c = Container::new();
    let br = unique("br");
    let args = [br.as_str(), &c.pid_s(), "10.63.0.2/24@10.63.0.1"];
    h.ok(&args);
    let host_links = h.ns.links();
    let mac = link(&c.ipj(&["link", "show", "dev", "eth1"]))["address"].clone();
    let t = Instant::now();
    let out = h.ok(&args);
    eprintln!("re-run took {:?}", t.elapsed());
    assert!(out.contains("already attached"), "{out}");
    assert_eq!(h.ns.links(), host_links);
    assert_eq!(
        link(&c.ipj(&["link", "show", "dev", "eth1"]))["address"],
        mac
    );
    assert_eq!(inet_addrs(&c, "eth1"), ["10.63.0.2/24"]);
    let o = h.pipe(&[&br, &c.pid_s(), "10.63.0.2/24@10.63.0.1", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["already_attached"], true);
}

#[test]
fn rerun_with_another_address_replaces_it() {
    let h = Host::new("lh");
    let c = Container::new();
    let br = unique("br");
    h.ok(&[&br, &c.pid_s(), "10.64.0.2/24@10.64.0.1"]);
    // An address someone else added stays.
    c.ip(&["addr", "add", "10.64.9.9/24", "dev", "eth1"]);
    let out = h.ok(&[&br, &c.pid_s(), "10.64.0.3/24@10.64.0.1"]);
    assert!(!out.contains("already"), "{out}");
    let mut got = inet_addrs(&c, "eth1");
    got.sort();
    assert_eq!(got, ["10.64.0.3/24", "10.64.9.9/24"]);
    let r = c.ipj(&["route", "show", "default"]);
    assert_eq!(r[0]["gateway"], "10.64.0.1", "default route lost: {r}");
    assert_eq!(r[0]["dev"], "eth1");
    // The record follows.
    let rec =
        std::fs::read_to_string(format!("{}/attachments/{}", h.state, c.record("eth1"))).unwrap();
    assert!(
        rec.contains("10.64.0.3/24") && !rec.contains("10.64.0.2/24"),
        "{rec}"
    );
}

#[test]
fn rerun_on_another_bridge_is_refused() {
    let h = Host::new("lh");
    let c = Container::new();
    let (br, br2) = (unique("br"), unique("br"));
    h.ns.ip(&["link", "add", &br2, "type", "bridge"]);
    h.ok(&[&br, &c.pid_s(), "10.65.0.2/24"]);
    let o = h.pipe(&[&br2, &c.pid_s(), "10.65.0.2/24"]);
    assert_fails(&o, 1, "detach it first");
    // And an interface pipe did not make is refused as before.
    c.ip(&["link", "add", "eth7", "type", "veth", "peer", "name", "x7"]);
    let o = h.pipe(&["-i", "eth7", &br, &c.pid_s(), "0/0"]);
    assert_fails(&o, 1, "pipe did not create it");
}

#[test]
fn detach_refuses_foreign_interfaces_without_force() {
    let h = Host::new("lh");
    let c = Container::new();
    c.ip(&["link", "add", "eth1", "type", "veth", "peer", "name", "x1"]);
    let o = h.pipe(&["detach", &c.pid_s()]);
    assert_fails(&o, 1, "--force");
    assert!(c.links().contains(&"eth1".to_string()));
    h.ok(&["detach", &c.pid_s(), "--force"]);
    assert!(!c.links().contains(&"eth1".to_string()));
    let o = h.pipe(&["detach", &c.pid_s(), "-i", "eth5"]);
    assert_fails(&o, 1, "nothing to detach");
}

#[test]
fn wait_succeeds_once_attached_v4_and_v6() {
    for (addr, want) in [
        ("10.66.0.2/24", "10.66.0.2/24"),
        ("2001:db8:66::2/64", "2001:db8:66::2/64"),
    ] {
        let h = Host::new("lh");
        let c = Container::new();
        let waiter = Command::new("nsenter")
            .arg(format!("--net={}", c.ns_path()))
            .args([BIN, "--wait", "--timeout", "10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let br = unique("br");
        h.ok(&[&br, &c.pid_s(), addr]);
        let t = Instant::now();
        let o = waiter.wait_with_output().unwrap();
        eprintln!(
            "--wait returned {:?} after the attach ({addr})",
            t.elapsed()
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o).trim(), format!("eth1 ready with {want}"));
        if addr.contains(':') {
            // Past duplicate address detection: no longer tentative.
            let a = c.ipj(&["-6", "addr", "show", "dev", "eth1", "scope", "global"]);
            let info = &a[0]["addr_info"][0];
            assert!(info.get("tentative").is_none(), "{a}");
        }
    }
}

#[test]
fn wait_times_out_with_a_message() {
    let c = Container::new();
    let t = Instant::now();
    let o = c.nsenter(&[BIN, "--wait", "-i", "eth9", "--timeout", "0.3"]);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_fails(&o, 1, "eth9 does not exist after 0.3s");
    c.ip(&["link", "add", "eth9", "type", "veth", "peer", "name", "x9"]);
    let o = c.nsenter(&[BIN, "--wait", "-i", "eth9", "--timeout", "0.3"]);
    assert_fails(&o, 1, "eth9 exists but is down after 0.3s");
    // Up, but its other end is down: no carrier.
    c.ip(&["link", "set", "eth9", "up"]);
    let o = c.nsenter(&[BIN, "--wait", "-i", "eth9", "--timeout", "0.3"]);
    assert_fails(&o, 1, "eth9 is up but has no carrier");
    // Carrier but no address, when one is asked for.
    c.ip(&["link", "set", "x9", "up"]);
    let o = c.nsenter(&[BIN, "--wait=addr", "-i", "eth9", "--timeout", "0.5"]);
    assert_fails(&o, 1, "eth9 is up but has no address after 0.5s");
    c.ip(&["addr", "add", "10.69.0.2/24", "dev", "eth9"]);
    let o = c.nsenter(&[BIN, "--wait=ipv6", "-i", "eth9", "--timeout", "0.5"]);
    assert_fails(&o, 1, "eth9 is up but has no IPv6 address");
    // pipework's spelling: --wait with positionals is a usage error.
    let o = c.nsenter(&[BIN, "--wait", "br1", "web", "0/0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = c.nsenter(&[BIN, "--wait=dhcp"]);
    assert_fails(&o, 2, "possible values: link, addr, ipv4, ipv6");
}

/// `pipe --wait ARGS` in the container, in the background.
fn spawn_wait(c: &Container, args: &[&str]) -> std::process::Child {
    Command::new("nsenter")
        .arg(format!("--net={}", c.ns_path()))
        .arg(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A veth `eth9` in the container with its other end `x9` up too (so it has carrier),
/// after a wait of `delay`.
fn carrier_later(c: &Container, delay: Duration) {
    c.ip(&["link", "add", "eth9", "type", "veth", "peer", "name", "x9"]);
    c.ip(&["link", "set", "x9", "up"]);
    std::thread::sleep(delay);
    c.ip(&["link", "set", "eth9", "up"]);
}

#[test]
fn wait_default_is_up_and_carrier_without_address() {
    // 0/0, or an address a DHCP client inside the container will get later.
    let c = Container::new();
    let waiter = spawn_wait(&c, &["--wait", "-i", "eth9", "--timeout", "10"]);
    carrier_later(&c, Duration::from_millis(300));
    let t = Instant::now();
    let o = waiter.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "eth9 ready (up, carrier, no address)");
    // It waited for the interface to settle, and not much longer.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let j = c.ipj(&["addr", "show", "dev", "eth9"]);
    assert!(
        j[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["scope"] == "link"),
        "{j}"
    );
    // The same with --json.
    let o = c.nsenter(&[BIN, "--wait", "-i", "eth9", "--json", "--timeout", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["addresses"], serde_json::json!([]), "{v}");
    assert!(v["address"].is_null(), "{v}");
}

#[test]
fn wait_addr_waits_until_an_address_appears() {
    let c = Container::new();
    carrier_later(&c, Duration::ZERO);
    let mut waiter = spawn_wait(&c, &["--wait=addr", "-i", "eth9", "--timeout", "10"]);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "--wait=addr returned before any address was there"
    );
    c.ip(&["addr", "add", "10.69.1.2/24", "dev", "eth9"]);
    let o = waiter.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "eth9 ready with 10.69.1.2/24");
    // ipv4 is satisfied by it, ipv4,ipv6 is not.
    let o = c.nsenter(&[BIN, "--wait=ipv4", "-i", "eth9", "--timeout", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = c.nsenter(&[BIN, "--wait=ipv4,ipv6", "-i", "eth9", "--timeout", "0.4"]);
    assert_fails(&o, 1, "has no IPv6 address");
}

#[test]
fn wait_does_not_count_tentative_ipv6() {
    for mode in ["--wait=ipv6", "--wait"] {
        let c = Container::new();
        carrier_later(&c, Duration::ZERO);
        // Duplicate address detection: 2 probes 1 s apart, so ~2 s tentative.
        let o = c.nsenter(&["sysctl", "-qw", "net.ipv6.conf.eth9.dad_transmits=2"]);
        assert!(o.status.success(), "{}", stderr(&o));
        c.ip(&["addr", "add", "2001:db8:69::2/64", "dev", "eth9"]);
        let a = c.ipj(&["-6", "addr", "show", "dev", "eth9", "scope", "global"]);
        assert_eq!(a[0]["addr_info"][0]["tentative"], true, "{a}");
        let t = Instant::now();
        let o = c.nsenter(&[BIN, mode, "-i", "eth9", "--timeout", "10"]);
        eprintln!("{mode} returned after {:?}", t.elapsed());
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "eth9 ready with 2001:db8:69::2/64");
        let a = c.ipj(&["-6", "addr", "show", "dev", "eth9", "scope", "global"]);
        assert!(
            a[0]["addr_info"][0].get("tentative").is_none(),
            "{mode}: {a}"
        );
        assert!(
            t.elapsed() > Duration::from_millis(800),
            "{:?}",
            t.elapsed()
        );
        // While it is tentative, a short wait says so.
        let c2 = Container::new();
        carrier_later(&c2, Duration::ZERO);
        c2.nsenter(&["sysctl", "-qw", "net.ipv6.conf.eth9.dad_transmits=3"]);
        c2.ip(&["addr", "add", "2001:db8:69::3/64", "dev", "eth9"]);
        let o = c2.nsenter(&[BIN, mode, "-i", "eth9", "--timeout", "0.5"]);
        assert_fails(
            &o,
            1,
            "has address 2001:db8:69::3/64 still in duplicate address detection",
        );
    }
}

#[test]
fn gc_after_containers_were_killed() {
    let h = Host::new("lh");
    let (mut a, b) = (Container::new(), Container::new());
    let br = unique("br");
    h.ok(&[&br, &a.pid_s(), "10.67.0.2/24"]);
    h.ok(&[&br, &b.pid_s(), "10.67.0.3/24"]);
    assert_eq!(h.ok(&["gc"]).trim(), "nothing to clean up");

    let _ = a.child.kill();
    let _ = a.child.wait();
    let dry = h.ok(&["gc", "--dry-run"]);
    assert!(dry.contains("would remove record"), "{dry}");
    assert!(
        dry.contains(&format!("would remove /var/run/netns/{}", a.pid)),
        "{dry}"
    );
    assert!(!dry.contains("bridge"), "bridge still used by b: {dry}");
    assert_eq!(h.records().len(), 2, "dry run removed something");
    let out = h.ok(&["gc"]);
    assert!(out.contains("removed record"), "{out}");
    assert_eq!(h.records(), [b.record("eth1")]);
    // Not even a dangling symlink is left.
    assert!(std::fs::symlink_metadata(a.netns_link()).is_err());
    // The veth died with the namespace (the kernel tears it down
    // asynchronously) or gc deleted its host end.
    let veth = format!("veth1pl{}", a.pid);
    let t = Instant::now();
    while h.ns.links().contains(&veth) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!h.ns.links().contains(&veth), "{:?}", h.ns.links());
    assert!(h.ns.links().contains(&br));

    // Detach of a dead container works from its record too.
    drop(b);
    let links: Vec<String> = h.ns.links();
    assert!(links.contains(&br), "{links:?}");
    let out = h.ok(&["gc"]);
    assert!(out.contains(&format!("removed bridge {br}")), "{out}");
    assert!(h.records().is_empty());
    assert!(!h.ns.links().contains(&br));
}

#[test]
fn detach_of_a_dead_container_cleans_up_from_the_record() {
    let h = Host::new("lh");
    let mut c = Container::new();
    let br = unique("br");
    let before = h.ns.links();
    h.ok(&[&br, &c.pid_s(), "10.68.0.2/24"]);
    let _ = c.child.kill();
    let _ = c.child.wait();
    let out = h.ok(&["detach", &c.pid_s()]);
    assert!(out.contains("detached"), "{out}");
    assert!(h.records().is_empty());
    assert_eq!(h.ns.links(), before);
    assert!(std::fs::symlink_metadata(c.netns_link()).is_err());
}

#[test]
fn state_dir_option_is_used() {
    let h = Host::new("lh");
    let c = Container::new();
    let dir = format!("{}-opt", h.state);
    let br = unique("br");
    h.ok(&["--state-dir", &dir, &br, &c.pid_s(), "0/0"]);
    assert!(std::path::Path::new(&format!("{dir}/attachments/{}", c.record("eth1"))).exists());
    assert!(h.records().is_empty());
    h.ok(&["detach", "--state-dir", &dir, &c.pid_s()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gc_removes_unused_shared_links_pipe_tagged_only() {
    // Stands in for an 802.1Q sub-interface pipe created (this kernel has no VLAN):
    // any host link tagged pipe:shared that no record names is garbage.
    let h = Host::new("lh");
    h.ns.ip(&["link", "add", "shx", "type", "veth", "peer", "name", "shy"]);
    h.ns.ip(&["link", "set", "shx", "alias", "pipe:shared"]);
    h.ns.ip(&["link", "add", "brkeep", "type", "bridge"]);
    let dry = h.ok(&["gc", "--dry-run"]);
    assert_eq!(dry.trim(), "would remove host interface shx", "{dry}");
    h.ok(&["gc"]);
    let links = h.ns.links();
    assert!(!links.contains(&"shx".to_string()), "{links:?}");
    assert!(links.contains(&"brkeep".to_string()), "{links:?}");
}
