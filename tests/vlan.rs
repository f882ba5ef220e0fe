//! VLAN, ipvlan and --direct-phys on this machine's kernel: refusals that happen
//! before any change, clean rollback when the kernel lacks 802.1Q, ipvlan or
//! bridge VLAN filtering, and --direct-phys of a veth. The scenarios that need
//! those kernel features run in the VM tier (tests/vm_vlan.rs).

mod common;
mod vlan_util;

use common::*;
use vlan_util::*;

#[test]
fn vlan_id_out_of_range_is_a_usage_error_and_changes_nothing() {
    let (host, _lan) = host_with_lan();
    let c = Container::new();
    let before = world(&host, &c);
    for bad in ["@0", "@4095", "02:00:00:00:00:01@70000", "@x"] {
        let o = host.pipe(&["phys0", &c.pid_s(), "10.89.0.2/24", bad]);
        assert_fails(&o, 2, "is not a number from 1 to 4094");
        assert_unchanged(&before, &host, &c, bad);
    }
}

#[test]
fn ipvlan_with_a_mac_is_refused_before_any_change() {
    let (host, _lan) = host_with_lan();
    let c = Container::new();
    let before = world(&host, &c);
    let o = host.pipe(&[
        "--ipvlan",
        "l2",
        "phys0",
        &c.pid_s(),
        "10.89.0.2/24",
        "02:00:00:00:00:01@100",
    ]);
    assert_fails(
        &o,
        2,
        "an ipvlan shares the MAC address of its parent phys0",
    );
    assert_unchanged(&before, &host, &c, "ipvlan with a MAC");
}

#[test]
fn ipvlan_or_direct_phys_on_a_bridge_are_usage_errors() {
    let host = Ns::new("vh");
    let c = Container::new();
    let br = unique("br");
    host.ip(&["link", "add", &br, "type", "bridge"]);
    let before = world(&host, &c);
    let o = host.pipe(&["--ipvlan", "l3", &br, &c.pid_s(), "0/0"]);
    assert_fails(
        &o,
        2,
        "--ipvlan needs a host interface that is not a bridge",
    );
    let o = host.pipe(&["--direct-phys", &br, &c.pid_s(), "0/0"]);
    assert_fails(&o, 2, "cannot leave the host");
    let o = host.pipe(&["--direct-phys", "--ipvlan", "l2", "x", &c.pid_s(), "0/0"]);
    assert_fails(&o, 2, "cannot be used with");
    assert_unchanged(&before, &host, &c, "bridge");
}

#[test]
fn another_device_squatting_on_the_vlan_name_is_refused() {
    // phys0.100 exists but is a veth: never reused, never touched.
    let (host, _lan) = host_with_lan();
    host.ip(&[
        "link",
        "add",
        "phys0.100",
        "type",
        "veth",
        "peer",
        "name",
        "sq1",
    ]);
    let c = Container::new();
    let before = world(&host, &c);
    let o = host.pipe(&["phys0", &c.pid_s(), "10.89.0.2/24", "@100"]);
    assert_fails(
        &o,
        1,
        "phys0.100 exists but is a veth device, not 802.1Q VLAN 100 on phys0",
    );
    assert!(
        stderr(&o).contains("ip link del phys0.100"),
        "names the fix"
    );
    assert_unchanged(&before, &host, &c, "squatter");
}

#[test]
fn a_subinterface_name_over_15_bytes_is_refused() {
    let host = Ns::new("vh");
    host.ip(&[
        "link",
        "add",
        "phys0abcdefghi",
        "type",
        "veth",
        "peer",
        "name",
        "x2",
    ]);
    let c = Container::new();
    let before = world(&host, &c);
    let o = host.pipe(&["phys0abcdefghi", &c.pid_s(), "0/0", "@4000"]);
    assert_fails(&o, 2, "phys0abcdefghi.4000 would be 19 bytes");
    assert_unchanged(&before, &host, &c, "long name");
}

/// Can this kernel make these links? Probed in a scratch namespace.
fn kernel_has(args: &[&str]) -> bool {
    let ns = Ns::new("vk");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    run(std::process::Command::new("ip")
        .args(["-n", &ns.name, "link", "add"])
        .args(args))
    .status
    .success()
}

#[test]
fn without_kernel_support_the_attach_rolls_back_with_a_hint() {
    // On a kernel without 802.1Q / ipvlan / bridge VLAN filtering (this build
    // machine's), each attach fails at its kernel step and undoes what came
    // before (the netns link, the parent brought up, a created bridge). Where the
    // kernel has the feature, the same attach must work.
    let cases: [(&[&str], &[&str], &str); 3] = [
        (
            &["link", "d0", "name", "d0.5", "type", "vlan", "id", "5"],
            &["phys0", "PID", "10.89.0.2/24", "@100"],
            "this kernel has no 802.1Q VLAN support; load its module (modprobe 8021q)",
        ),
        (
            &["link", "d0", "name", "iv0", "type", "ipvlan"],
            &["--ipvlan", "l2", "phys0", "PID", "10.89.0.2/24"],
            "this kernel has no ipvlan support",
        ),
        (
            &["b0", "type", "bridge", "vlan_filtering", "1"],
            &["BRIDGE", "PID", "10.89.0.2/24", "@100"],
            "this kernel has no bridge VLAN filtering support",
        ),
    ];
    for (probe, args, hint) in cases {
        let (host, _lan) = host_with_lan();
        let c = Container::new();
        let br = unique("br");
        let pid = c.pid_s();
        let args: Vec<&str> = args
            .iter()
            .map(|a| match *a {
                "PID" => pid.as_str(),
                "BRIDGE" => br.as_str(),
                a => a,
            })
            .collect();
        let before = world(&host, &c);
        let o = host.pipe(&args);
        if kernel_has(probe) {
            assert!(o.status.success(), "{args:?}: {}", stderr(&o));
            assert!(c.links().contains(&"eth1".to_string()));
        } else {
            assert_fails(&o, 1, hint);
            assert!(stderr(&o).contains("everything done before it was undone"));
            assert_unchanged(&before, &host, &c, &format!("{args:?}"));
        }
    }
}

#[test]
fn direct_phys_moves_the_interface_in_and_keeps_its_name_in_the_alias() {
    let (host, _lan) = host_with_lan();
    host.ip(&["link", "set", "phys0", "up"]);
    let c = Container::new();
    let o = host.pipe(&[
        "--direct-phys",
        "phys0",
        &c.pid_s(),
        "10.89.0.7/24",
        "02:00:00:89:00:07",
        "--mtu",
        "1400",
        "-i",
        "lan7",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["kind"], "phys");
    assert_eq!(j["host_if"], "phys0");
    assert_eq!(j["mac"], "02:00:00:89:00:07");
    assert_eq!(host.links(), ["lo"], "phys0 left the host");
    let l = c.ipj(&["-d", "link", "show", "dev", "lan7"]);
    let l = link(&l);
    assert_eq!(l["ifalias"], "phys0");
    assert_eq!(l["linkinfo"]["info_kind"], "veth");
    assert_eq!(l["mtu"], 1400);
    assert_eq!(l["address"], "02:00:00:89:00:07");
    assert!(flags_up(l));
    assert!(c.ping("10.89.0.1"), "the moved interface reaches the LAN");
}

#[test]
fn direct_phys_failure_at_every_step_moves_it_back_as_it_was() {
    let (host, _lan) = host_with_lan();
    host.ip(&["link", "set", "phys0", "up", "alias", "uplink"]);
    let c = Container::new();
    let args = [
        "--direct-phys",
        "phys0",
        &c.pid_s(),
        "10.89.0.8/24@10.89.0.1",
        "02:00:00:89:00:08",
        "--mtu",
        "1300",
    ];
    let plan = stdout(&host.pipe(&[&["-n"], &args[..]].concat()));
    let steps = plan.lines().count();
    assert_eq!(steps, 5, "{plan}");
    assert!(
        plan.contains("ip link set phys0 netns"),
        "dry run names the move: {plan}"
    );
    let before = world(&host, &c);
    for n in 1..=steps {
        let o = host.pipe_env(&args, &[("PIPE_FAIL_AFTER", &n.to_string())]);
        assert_fails(&o, 1, "everything done before it was undone");
        assert_unchanged(&before, &host, &c, &format!("failure after step {n}"));
    }
    let l = host.ipj(&["-d", "link", "show", "dev", "phys0"]);
    assert_eq!(link(&l)["ifalias"], "uplink", "old alias back");
    assert!(flags_up(link(&l)), "up again");
}

#[test]
fn direct_phys_refuses_a_bridge_port() {
    let (host, _lan) = host_with_lan();
    let br = unique("br");
    host.ip(&["link", "add", &br, "type", "bridge"]);
    host.ip(&["link", "set", "phys0", "master", &br]);
    let c = Container::new();
    let before = world(&host, &c);
    let o = host.pipe(&["--direct-phys", "phys0", &c.pid_s(), "0/0"]);
    assert_fails(&o, 1, "phys0 is a port of another interface");
    assert_unchanged(&before, &host, &c, "bridge port");
}

#[test]
fn detach_moves_a_direct_phys_interface_back_under_its_old_name() {
    let (host, _lan) = host_with_lan();
    let c = Container::new();
    let o = host.pipe(&["--direct-phys", "phys0", &c.pid_s(), "10.89.0.9/24"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(host.links(), ["lo"]);
    let o = host.pipe(&["detach", &c.pid_s()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("moved back to the host as phys0"),
        "{}",
        stdout(&o)
    );
    assert_eq!(host.links(), ["lo", "phys0"], "phys0 is back");
    assert_eq!(c.links(), ["lo"]);
    let l = host.ipj(&["-d", "link", "show", "dev", "phys0"]);
    assert!(link(&l)["ifalias"].is_null(), "alias cleared: {l}");
}

#[test]
fn direct_phys_again_says_where_the_interface_is() {
    let (host, _lan) = host_with_lan();
    let c = Container::new();
    let args = ["--direct-phys", "phys0", &c.pid_s(), "10.89.0.9/24"];
    let o = host.pipe(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = host.pipe(&args);
    assert_fails(
        &o,
        1,
        &format!(
            "phys0 is in container {} already as eth1 (moved there by --direct-phys); detach it first",
            c.pid
        ),
    );
}
