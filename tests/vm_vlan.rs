//! 802.1Q VLANs across hosts, ipvlan, VLANs on Linux bridges and --direct-phys,
//! on a kernel that has them: these run inside the QEMU VM tier (tests/vm/run.sh,
//! Debian's stock kernel), one boot for all. On the build machine they are ignored.
//!
//! Every "host" and "LAN" is a namespace made by the test, every container a
//! `unshare --net sleep`; pings that must fail are as much part of a test as pings
//! that must succeed.

mod common;
mod vlan_util;

use common::*;
use vlan_util::*;

const VM: &str = "runs inside the QEMU VM tier: tests/vm/run.sh";

/// A ping that must fail: one try, one second (nothing answers a frame in the
/// wrong VLAN, so waiting longer proves nothing).
fn cant_reach(c: &Container, addr: &str) -> bool {
    !c.nsenter(&["ping", "-c1", "-W1", addr]).status.success()
}

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "pipe failed: {}", stderr(o));
    stdout(o)
}

/// `ip -j -d link show dev NAME` in a namespace.
fn dlink(ns: &Ns, name: &str) -> serde_json::Value {
    link(&ns.ipj(&["-d", "link", "show", "dev", name])).clone()
}

/// A "switch" namespace holding a plain bridge (no VLAN filtering: tagged frames
/// pass through it as through a trunk), and a "host" namespace whose eth0 is a
/// veth into that bridge.
fn switch() -> (Ns, String) {
    let sw = Ns::new("sw");
    sw.ip(&["link", "add", "sw0", "type", "bridge"]);
    sw.ip(&["link", "set", "sw0", "up"]);
    (sw, "sw0".into())
}

fn host_on_switch(sw: &Ns, port: &str, mtu: &str) -> Ns {
    let h = Ns::new("vh");
    h.ip(&[
        "link", "add", "eth0", "mtu", mtu, "type", "veth", "peer", "name", port, "netns", &sw.name,
    ]);
    sw.ip(&["link", "set", port, "mtu", mtu, "master", "sw0", "up"]);
    h
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_vlan_trunk_two_hosts_four_containers() {
    let _ = VM;
    let (sw, _) = switch();
    // Host A's eth0 is down with MTU 1400: pipe brings it up, and the
    // sub-interfaces it creates take its MTU.
    let a = host_on_switch(&sw, "pa", "1400");
    let b = host_on_switch(&sw, "pb", "1500");
    b.ip(&["link", "set", "eth0", "up"]);
    let (t1, t2, t3, t4) = (
        Container::new(),
        Container::new(),
        Container::new(),
        Container::new(),
    );
    // One subnet for all four: a ping between VLANs fails because of 802.1Q,
    // not for want of a route.
    ok(&a.pipe(&["eth0", &t1.pid_s(), "10.1.0.11/24", "@100"]));
    ok(&a.pipe(&["eth0", &t2.pid_s(), "10.1.0.12/24", "@200"]));
    ok(&b.pipe(&["eth0", &t3.pid_s(), "10.1.0.13/24", "@100"]));
    let line = ok(&b.pipe(&["eth0", &t4.pid_s(), "10.1.0.14/24", "@200"]));
    assert!(line.contains("macvlan on eth0.200 vlan 200"), "{line}");

    for (h, mtu) in [(&a, 1400), (&b, 1500)] {
        for vid in [100, 200] {
            let l = dlink(h, &format!("eth0.{vid}"));
            assert_eq!(l["linkinfo"]["info_kind"], "vlan", "{l}");
            assert_eq!(l["linkinfo"]["info_data"]["id"], vid, "{l}");
            assert_eq!(l["linkinfo"]["info_data"]["protocol"], "802.1Q", "{l}");
            assert_eq!(l["link"], "eth0", "{l}");
            assert_eq!(l["mtu"], mtu, "sub-interface has the parent's MTU: {l}");
            assert!(flags_up(&l), "{l}");
        }
        assert!(flags_up(&dlink(h, "eth0")), "parent brought up");
    }
    let l = t1.ipj(&["-d", "link", "show", "dev", "eth1"]);
    assert_eq!(link(&l)["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(link(&l)["mtu"], 1400);

    // The same attach again: nothing to do, the sub-interface stays shared.
    let again = ok(&a.pipe(&["eth0", &t1.pid_s(), "10.1.0.11/24", "@100"]));
    assert!(again.contains("(already attached)"), "{again}");
    let o = a.pipe(&["eth0", &t1.pid_s(), "10.1.0.11/24", "@200"]);
    assert_fails(
        &o,
        1,
        "is a macvlan on eth0.100 already, not a macvlan on eth0.200",
    );

    assert!(
        t1.ping("10.1.0.13"),
        "test1 -> test3 (VLAN 100 across hosts)"
    );
    assert!(t3.ping("10.1.0.11"), "test3 -> test1");
    assert!(
        t2.ping("10.1.0.14"),
        "test2 -> test4 (VLAN 200 across hosts)"
    );
    assert!(
        cant_reach(&t1, "10.1.0.12"),
        "test1 must not reach test2 (VLAN 200, same host)"
    );
    assert!(
        cant_reach(&t1, "10.1.0.14"),
        "test1 must not reach test4 (VLAN 200)"
    );
    assert!(cant_reach(&t3, "10.1.0.12"), "test3 must not reach test2");
    assert!(cant_reach(&t4, "10.1.0.13"), "test4 must not reach test3");
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_vlan_existing_subinterface_is_reused_and_kept_on_failure() {
    let (host, lan) = host_with_lan();
    lan.ip(&[
        "link", "add", "link", "lan0", "name", "lan0.100", "type", "vlan", "id", "100",
    ]);
    lan.ip(&["addr", "add", "10.90.0.1/24", "dev", "lan0.100"]);
    lan.ip(&["link", "set", "lan0.100", "up"]);
    // An existing, down phys0.100 with its own MTU.
    host.ip(&[
        "link",
        "add",
        "link",
        "phys0",
        "name",
        "phys0.100",
        "mtu",
        "1300",
        "type",
        "vlan",
        "id",
        "100",
    ]);
    let idx = dlink(&host, "phys0.100")["ifindex"].clone();
    let c = Container::new();
    let args = ["phys0", &c.pid_s(), "10.90.0.2/24", "@100"];
    let plan = stdout(&host.pipe(&[&["-n"], &args[..]].concat()));
    assert!(!plan.contains("type vlan"), "reused, not created: {plan}");
    let steps = plan.lines().count();
    let before = world(&host, &c);
    for n in 1..=steps {
        let o = host.pipe_env(&args, &[("PIPE_FAIL_AFTER", &n.to_string())]);
        assert_fails(&o, 1, "everything done before it was undone");
        assert_unchanged(&before, &host, &c, &format!("failure after step {n}"));
    }
    ok(&host.pipe(&args));
    let l = dlink(&host, "phys0.100");
    assert_eq!(l["ifindex"], idx, "the same device, reused");
    assert!(flags_up(&l), "brought up");
    let e = c.ipj(&["-d", "link", "show", "dev", "eth1"]);
    assert_eq!(link(&e)["mtu"], 1300, "the sub-interface's MTU");
    assert!(c.ping("10.90.0.1"), "container reaches VLAN 100 on the LAN");
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_vlan_name_squatters_are_refused() {
    let (host, _lan) = host_with_lan();
    host.ip(&["link", "add", "phys0.100", "type", "dummy"]);
    host.ip(&[
        "link",
        "add",
        "link",
        "phys0",
        "name",
        "phys0.200",
        "type",
        "vlan",
        "id",
        "201",
    ]);
    host.ip(&["link", "add", "dm9", "type", "dummy"]);
    host.ip(&[
        "link",
        "add",
        "link",
        "dm9",
        "name",
        "phys0.300",
        "type",
        "vlan",
        "id",
        "300",
    ]);
    let c = Container::new();
    let before = world(&host, &c);
    for (vid, what) in [
        (
            "@100",
            "phys0.100 exists but is a dummy device, not 802.1Q VLAN 100 on phys0",
        ),
        (
            "@200",
            "phys0.200 exists but is an 802.1Q device of VLAN 201, not 200",
        ),
        (
            "@300",
            "phys0.300 exists but is an 802.1Q device on another parent",
        ),
    ] {
        let o = host.pipe(&["phys0", &c.pid_s(), "10.90.0.2/24", vid]);
        assert_fails(&o, 1, what);
        assert_unchanged(&before, &host, &c, vid);
    }
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_vlan_failure_at_every_step_deletes_the_subinterface_it_created() {
    let (host, _lan) = host_with_lan();
    let c = Container::new();
    let args = ["phys0", &c.pid_s(), "10.89.0.5/24@10.89.0.1", "@100"];
    let plan = stdout(&host.pipe(&[&["-n"], &args[..]].concat()));
    assert!(plan.contains("ip link set phys0 up\n"), "{plan}");
    assert!(plan.contains("type vlan id 100"), "{plan}");
    let steps = plan.lines().count();
    assert_eq!(steps, 7, "{plan}");
    let before = world(&host, &c);
    for n in 1..=steps {
        let o = host.pipe_env(&args, &[("PIPE_FAIL_AFTER", &n.to_string())]);
        assert_fails(&o, 1, "everything done before it was undone");
        assert_unchanged(&before, &host, &c, &format!("failure after step {n}"));
    }
    assert_eq!(host.links(), ["lo", "phys0"]);
    // A VLAN that exists elsewhere under another name: the kernel's EEXIST, explained.
    host.ip(&[
        "link", "add", "link", "phys0", "name", "v100", "type", "vlan", "id", "100",
    ]);
    let before = world(&host, &c);
    let o = host.pipe(&args);
    assert_fails(&o, 1, "VLAN 100 on phys0 exists already under another name");
    assert_unchanged(&before, &host, &c, "VLAN under another name");
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_parent_that_cannot_come_up_is_refused_cleanly() {
    // dm0v is a VLAN device on dm0, both down: dm0v cannot come up (ENETDOWN).
    let host = Ns::new("vh");
    host.ip(&["link", "add", "dm0", "type", "dummy"]);
    host.ip(&[
        "link", "add", "link", "dm0", "name", "dm0v", "type", "vlan", "id", "5",
    ]);
    let c = Container::new();
    let before = world(&host, &c);
    for extra in [&[][..], &["@7"], &["--ipvlan", "l2"]] {
        let o = host.pipe(&[&["dm0v", &c.pid_s(), "10.91.0.2/24"], extra].concat());
        assert_fails(&o, 1, "bringing host interface dm0v up");
        assert!(
            stderr(&o).contains("cannot come up while the device under it is down"),
            "{}",
            stderr(&o)
        );
        assert_unchanged(&before, &host, &c, &format!("{extra:?}"));
    }
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_ipvlan_l2_reaches_a_lan_peer() {
    let (host, _lan) = host_with_lan();
    let c = Container::new();
    let o = ok(&host.pipe(&[
        "--ipvlan",
        "l2",
        "phys0",
        &c.pid_s(),
        "10.89.0.2/24",
        "--json",
    ]));
    let j: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(j["kind"], "ipvlan");
    let l = c.ipj(&["-d", "link", "show", "dev", "eth1"]);
    let l = link(&l);
    assert_eq!(l["linkinfo"]["info_kind"], "ipvlan");
    assert_eq!(l["linkinfo"]["info_data"]["mode"], "l2");
    assert_eq!(
        l["address"],
        dlink(&host, "phys0")["address"],
        "shares the parent's MAC"
    );
    assert!(c.ping("10.89.0.1"), "ipvlan l2 container reaches the LAN");
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_ipvlan_l3_reaches_a_lan_peer_through_the_host_routes() {
    // L3: the container has its own subnet; the host routes it, the LAN has a
    // route to it via the host.
    let (host, lan) = host_with_lan();
    host.ip(&["addr", "add", "10.89.0.254/24", "dev", "phys0"]);
    host.ip(&["link", "set", "phys0", "up"]);
    lan.ip(&["route", "add", "10.92.0.0/24", "via", "10.89.0.254"]);
    let c = Container::new();
    ok(&host.pipe(&[
        "--ipvlan",
        "l3",
        "phys0",
        &c.pid_s(),
        "10.92.0.2/24@10.89.0.1",
    ]));
    let l = c.ipj(&["-d", "link", "show", "dev", "eth1"]);
    assert_eq!(link(&l)["linkinfo"]["info_data"]["mode"], "l3");
    assert!(c.ping("10.89.0.1"), "ipvlan l3 container reaches the LAN");
    // With @VID, the ipvlan sits on the sub-interface.
    let (host2, lan2) = host_with_lan();
    lan2.ip(&[
        "link", "add", "link", "lan0", "name", "lan0.30", "type", "vlan", "id", "30",
    ]);
    lan2.ip(&["addr", "add", "10.93.0.1/24", "dev", "lan0.30"]);
    lan2.ip(&["link", "set", "lan0.30", "up"]);
    let c2 = Container::new();
    ok(&host2.pipe(&[
        "--ipvlan",
        "l2",
        "phys0",
        &c2.pid_s(),
        "10.93.0.2/24",
        "@30",
    ]));
    assert_eq!(dlink(&host2, "phys0.30")["linkinfo"]["info_kind"], "vlan");
    assert!(c2.ping("10.93.0.1"), "ipvlan on phys0.30 reaches VLAN 30");
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_ipvlan_on_a_parent_with_a_macvlan_is_refused_cleanly() {
    let (host, _lan) = host_with_lan();
    let m = Container::new();
    ok(&host.pipe(&["phys0", &m.pid_s(), "10.89.0.3/24"]));
    let c = Container::new();
    let before = world(&host, &c);
    let o = host.pipe(&["--ipvlan", "l2", "phys0", &c.pid_s(), "10.89.0.4/24"]);
    assert_fails(&o, 1, "phys0 already carries a macvlan");
    assert_unchanged(&before, &host, &c, "ipvlan after macvlan");
    // And the other way round: the kernel refuses a macvlan on an ipvlan parent.
    let (host2, _lan2) = host_with_lan();
    let i = Container::new();
    ok(&host2.pipe(&["--ipvlan", "l2", "phys0", &i.pid_s(), "10.89.0.3/24"]));
    let before = world(&host2, &c);
    let o = host2.pipe(&["phys0", &c.pid_s(), "10.89.0.4/24"]);
    assert_fails(&o, 1, "carry an ipvlan");
    assert_unchanged(&before, &host2, &c, "macvlan after ipvlan");
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_bridge_vlan_access_ports_isolate_vlans() {
    let host = Ns::new("vh");
    let br = unique("br");
    // A container attached before any VLAN: it stays in the default VLAN 1.
    let old = Container::new();
    ok(&host.pipe(&[&br, &old.pid_s(), "10.94.0.9/24"]));
    let (a, b, c) = (Container::new(), Container::new(), Container::new());
    ok(&host.pipe(&[&br, &a.pid_s(), "10.94.0.2/24", "@100"]));
    ok(&host.pipe(&[&br, &b.pid_s(), "10.94.0.3/24", "@100"]));
    ok(&host.pipe(&[&br, &c.pid_s(), "10.94.0.4/24", "@200"]));
    assert_eq!(
        dlink(&host, &br)["linkinfo"]["info_data"]["vlan_filtering"],
        1
    );
    let vlans = bridge_vlans(&host);
    let port = format!("veth1pl{}", a.pid);
    let want = format!(
        r#"{{"ifname":"{port}","vlans":[{{"vlan":100,"flags":["PVID","EgressUntagged"]}}]}}"#
    );
    assert!(vlans.contains(&want), "{want} in {vlans}");
    let oldport = format!("veth1pl{}", old.pid);
    let want = format!(
        r#"{{"ifname":"{oldport}","vlans":[{{"vlan":1,"flags":["PVID","EgressUntagged"]}}]}}"#
    );
    assert!(vlans.contains(&want), "{want} in {vlans}");

    let o = host.pipe(&[&br, &a.pid_s(), "10.94.0.2/24", "@200"]);
    assert_fails(&o, 1, "in VLAN 100, not VLAN 200");
    assert!(a.ping("10.94.0.3"), "a -> b (both VLAN 100)");
    assert!(b.ping("10.94.0.2"), "b -> a");
    assert!(cant_reach(&a, "10.94.0.4"), "a must not reach c (VLAN 200)");
    assert!(cant_reach(&c, "10.94.0.3"), "c must not reach b");
    assert!(
        cant_reach(&old, "10.94.0.2"),
        "the VLAN 1 container must not reach VLAN 100"
    );
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_bridge_vlan_failure_turns_filtering_off_again() {
    let host = Ns::new("vh");
    let br = unique("br");
    // A fixed MAC: otherwise the kernel gives the bridge its first port's MAC,
    // and keeps it when that port goes (not a VLAN matter).
    host.ip(&[
        "link",
        "add",
        &br,
        "address",
        "02:00:00:95:00:01",
        "type",
        "bridge",
    ]);
    host.ip(&["link", "set", &br, "up"]);
    let c = Container::new();
    let args = [br.as_str(), &c.pid_s(), "10.95.0.2/24", "@100"];
    let plan = stdout(&host.pipe(&[&["-n"], &args[..]].concat()));
    assert!(plan.contains("vlan_filtering 1"), "{plan}");
    let steps = plan.lines().count();
    let before = world(&host, &c);
    assert!(before.contains("vlan_filtering=0"), "{before}");
    for n in 1..=steps {
        let o = host.pipe_env(&args, &[("PIPE_FAIL_AFTER", &n.to_string())]);
        assert_fails(&o, 1, "everything done before it was undone");
        assert_unchanged(&before, &host, &c, &format!("failure after step {n}"));
    }
    // A bridge created by the attach goes away whole.
    let br2 = unique("br");
    let args = [br2.as_str(), &c.pid_s(), "10.95.0.2/24", "@100"];
    let before = world(&host, &c);
    let o = host.pipe_env(&args, &[("PIPE_FAIL_AFTER", "4")]);
    assert_fails(&o, 1, "everything done before it was undone");
    assert_unchanged(&before, &host, &c, "new bridge");
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_direct_phys_moves_a_dummy_and_back_on_failure() {
    let host = Ns::new("vh");
    host.ip(&["link", "add", "dm0", "mtu", "1400", "type", "dummy"]);
    let c = Container::new();
    let args = [
        "--direct-phys",
        "dm0",
        &c.pid_s(),
        "10.96.0.2/24",
        "-i",
        "data0",
    ];
    let plan = stdout(&host.pipe(&[&["-n"], &args[..]].concat()));
    let steps = plan.lines().count();
    let before = world(&host, &c);
    for n in 1..=steps {
        let o = host.pipe_env(&args, &[("PIPE_FAIL_AFTER", &n.to_string())]);
        assert_fails(&o, 1, "everything done before it was undone");
        assert_unchanged(&before, &host, &c, &format!("failure after step {n}"));
    }
    let line = ok(&host.pipe(&args));
    assert!(line.contains("moved from dm0"), "{line}");
    assert_eq!(host.links(), ["lo"]);
    let l = c.ipj(&["-d", "link", "show", "dev", "data0"]);
    let l = link(&l);
    assert_eq!(l["linkinfo"]["info_kind"], "dummy");
    assert_eq!(l["ifalias"], "dm0", "the old name, for a later detach");
    assert_eq!(l["mtu"], 1400);
    assert!(flags_up(l));
    let a = c.ipj(&["-4", "addr", "show", "dev", "data0"]);
    assert_eq!(a[0]["addr_info"][0]["local"], "10.96.0.2");
    // Detach moves it back under its old name.
    let out = ok(&host.pipe(&["detach", &c.pid_s(), "-i", "data0"]));
    assert!(out.contains("moved back to the host as dm0"), "{out}");
    assert_eq!(host.links(), ["dm0", "lo"]);
    let l = dlink(&host, "dm0");
    assert_eq!(l["linkinfo"]["info_kind"], "dummy");
    assert!(l["ifalias"].is_null(), "alias cleared: {l}");
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_direct_phys_of_a_vlan_subinterface() {
    let (host, lan) = host_with_lan();
    for (vid, net) in [("100", "10.97.0"), ("200", "10.98.0")] {
        let l = format!("lan0.{vid}");
        lan.ip(&[
            "link", "add", "link", "lan0", "name", &l, "type", "vlan", "id", vid,
        ]);
        lan.ip(&["addr", "add", &format!("{net}.1/24"), "dev", &l]);
        lan.ip(&["link", "set", &l, "up"]);
    }
    // An existing phys0.100 moves in.
    host.ip(&[
        "link",
        "add",
        "link",
        "phys0",
        "name",
        "phys0.100",
        "type",
        "vlan",
        "id",
        "100",
    ]);
    let c1 = Container::new();
    ok(&host.pipe(&[
        "--direct-phys",
        "phys0",
        &c1.pid_s(),
        "10.97.0.2/24",
        "@100",
    ]));
    assert_eq!(host.links(), ["lo", "phys0"], "phys0.100 left the host");
    let l = c1.ipj(&["-d", "link", "show", "dev", "eth1"]);
    let l = link(&l);
    assert_eq!(l["linkinfo"]["info_kind"], "vlan");
    assert_eq!(l["linkinfo"]["info_data"]["id"], 100);
    assert_eq!(l["ifalias"], "phys0.100");
    assert!(c1.ping("10.97.0.1"), "reaches VLAN 100 on the LAN");
    // Detach puts phys0.100 back on the host, still VLAN 100 on phys0.
    ok(&host.pipe(&["detach", &c1.pid_s()]));
    let l = dlink(&host, "phys0.100");
    assert_eq!(l["linkinfo"]["info_data"]["id"], 100);
    assert_eq!(l["link"], "phys0");
    assert_eq!(c1.links(), ["lo"]);

    // No phys0.200: it is made on the host, then moved in (alias phys0.200);
    // a failure at any step leaves nothing behind.
    let c2 = Container::new();
    let args = [
        "--direct-phys",
        "phys0",
        &c2.pid_s(),
        "10.98.0.2/24",
        "@200",
    ];
    let plan = stdout(&host.pipe(&[&["-n"], &args[..]].concat()));
    let steps = plan.lines().count();
    let before = world(&host, &c2);
    for n in 1..=steps {
        let o = host.pipe_env(&args, &[("PIPE_FAIL_AFTER", &n.to_string())]);
        assert_fails(&o, 1, "everything done before it was undone");
        assert_unchanged(&before, &host, &c2, &format!("failure after step {n}"));
    }
    ok(&host.pipe(&args));
    let l = c2.ipj(&["-d", "link", "show", "dev", "eth1"]);
    let l = link(&l);
    assert_eq!(l["linkinfo"]["info_data"]["id"], 200);
    assert_eq!(l["ifalias"], "phys0.200");
    assert!(c2.ping("10.98.0.1"), "reaches VLAN 200 on the LAN");
    assert!(cant_reach(&c2, "10.97.0.1"), "but not VLAN 100");
}

/// Does the host namespace `host` get an echo reply from `addr` (1 s)?
fn host_pings(host: &Ns, addr: &str) -> bool {
    host.exec(&["ping", "-c", "1", "-W", "1", addr])
        .status
        .success()
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_ipvlan_host_shim_reaches_the_host_both_ways() {
    // An ipvlan, like a macvlan, never talks to its own parent: --host-shim
    // adds an ipvlan sibling of the container's mode and a /32 through it.
    for mode in ["l3", "l3s"] {
        let (host, _lan) = host_with_lan();
        host.ip(&["addr", "add", "10.89.0.254/24", "dev", "phys0"]);
        host.ip(&["link", "set", "phys0", "up"]);
        let before = host.links();
        let c = Container::new();
        ok(&host.pipe(&["--ipvlan", mode, "phys0", &c.pid_s(), "10.89.0.2/24"]));
        assert!(
            !host_pings(&host, "10.89.0.2"),
            "{mode}: the host reached its ipvlan container without a shim"
        );
        ok(&host.pipe(&["detach", &c.pid_s()]));
        let out = ok(&host.pipe(&[
            "--host-shim",
            "--ipvlan",
            mode,
            "phys0",
            &c.pid_s(),
            "10.89.0.2/24",
        ]));
        let shim = dlink(&host, "shim-phys0");
        assert_eq!(shim["linkinfo"]["info_kind"], "ipvlan", "{mode}: {out}");
        assert_eq!(shim["linkinfo"]["info_data"]["mode"], mode);
        assert_eq!(shim["ifalias"], "pipe:shared");
        assert!(
            host_pings(&host, "10.89.0.2"),
            "{mode}: host -> container through the shim: {}",
            host.ip(&["-d", "neigh"])
        );
        assert!(c.ping("10.89.0.254"), "{mode}: container -> host");
        let out = ok(&host.pipe(&["detach", &c.pid_s()]));
        assert!(out.contains("shim-phys0"), "{mode}: {out}");
        assert_eq!(
            host.links(),
            before,
            "{mode}: detach leaves the host as before"
        );
    }
    // l2: refused before any change (its siblings share the parent's MAC, so
    // the container's ARP reply to the shim goes to the parent).
    let (host, _lan) = host_with_lan();
    let before = host.links();
    let c = Container::new();
    let o = host.pipe(&[
        "--host-shim",
        "--ipvlan",
        "l2",
        "phys0",
        &c.pid_s(),
        "10.89.0.2/24",
    ]);
    assert_fails(&o, 2, "not l2");
    assert_eq!(host.links(), before);
    assert_eq!(c.links(), ["lo"]);
}
