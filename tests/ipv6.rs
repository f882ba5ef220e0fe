//! IPv6 details on a real kernel: several addresses in one attach, link-local
//! kept, an off-link IPv6 gateway gets a /128 route, accept_ra off with a
//! static IPv6 gateway.

mod common;

use common::*;

fn addrs(c: &Container) -> Vec<String> {
    let a = c.ipj(&["addr", "show", "dev", "eth1"]);
    a[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{}/{}", i["local"].as_str().unwrap(), i["prefixlen"]))
        .collect()
}

fn sysctl(c: &Container, key: &str) -> String {
    stdout(&c.nsenter(&["cat", &format!("/proc/sys/{key}")]))
        .trim()
        .to_string()
}

#[test]
fn dual_stack_addresses_and_gateways_in_one_attach() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let o = host.pipe(&[
        &br,
        &c.pid_s(),
        "10.98.0.2/24@10.98.0.1,fd00:98::2/64@fd00:98::1,10.98.1.2/24",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = addrs(&c);
    for want in ["10.98.0.2/24", "10.98.1.2/24", "fd00:98::2/64"] {
        assert!(a.contains(&want.to_string()), "{want} missing: {a:?}");
    }
    // The kernel's link-local address is kept.
    assert!(a.iter().any(|x| x.starts_with("fe80::")), "{a:?}");
    assert_eq!(
        c.ipj(&["route", "show", "default"])[0]["gateway"],
        "10.98.0.1"
    );
    assert_eq!(
        c.ipj(&["-6", "route", "show", "default"])[0]["gateway"],
        "fd00:98::1"
    );
    // A static IPv6 gateway: no router advertisements on eth1.
    assert_eq!(sysctl(&c, "net/ipv6/conf/eth1/accept_ra"), "0");
}

#[test]
fn off_link_ipv6_gateway_gets_a_host_route_and_v4_only_keeps_accept_ra() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let o = host.pipe(&[&br, &c.pid_s(), "fd00:99::2/128@fd00:99:1::1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = c.ipj(&["-6", "route", "show", "fd00:99:1::1/128"]);
    assert_eq!(r[0]["dev"], "eth1", "{r}");
    assert_eq!(
        c.ipj(&["-6", "route", "show", "default"])[0]["gateway"],
        "fd00:99:1::1"
    );

    let o = host.pipe(&["-i", "eth2", &br, &c.pid_s(), "10.99.0.2/24@10.99.0.1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        sysctl(&c, "net/ipv6/conf/eth2/accept_ra"),
        "1",
        "only for IPv6 gateways"
    );
}

#[test]
fn each_address_is_announced_and_rolled_back() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let args = [
        br.as_str(),
        &c.pid_s(),
        "10.97.5.2/24,fd00:97::2/64@fd00:97::1",
    ];
    let plan = stdout(&host.pipe(&[&["-n"][..], &args[..]].concat()));
    assert!(
        plan.contains("sysctl -qw net.ipv6.conf.eth1.accept_ra=0"),
        "{plan}"
    );
    assert!(plan.contains("arping -c 1 -U -I eth1 10.97.5.2"), "{plan}");
    assert!(plan.contains("ndsend fd00:97::2 eth1"), "{plan}");
    let steps = plan.lines().count();
    let before = (host.links(), c.links(), c.routes());
    for n in 1..=steps {
        let o = host.pipe_env(&args, &[("PIPE_FAIL_AFTER", &n.to_string())]);
        assert_fails(&o, 1, "everything done before it was undone");
        assert_eq!(
            (host.links(), c.links(), c.routes()),
            before,
            "after step {n}"
        );
    }
}

#[test]
fn re_running_with_one_more_address_adds_it() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let state = format!("/tmp/pipe-test-state-{}", host.name);
    let env = [("PIPE_STATE_DIR", state.as_str())];
    let o = host.pipe_env(&[&br, &c.pid_s(), "10.96.0.2/24@10.96.0.1"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = host.pipe_env(
        &[
            &br,
            &c.pid_s(),
            "10.96.0.2/24@10.96.0.1,fd00:96::2/64@fd00:96::1",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        addrs(&c).contains(&"fd00:96::2/64".to_string()),
        "{:?}",
        addrs(&c)
    );
    assert_eq!(
        c.ipj(&["-6", "route", "show", "default"])[0]["gateway"],
        "fd00:96::1"
    );
    let o = host.pipe_env(
        &[
            &br,
            &c.pid_s(),
            "10.96.0.2/24@10.96.0.1,fd00:96::2/64@fd00:96::1",
        ],
        &env,
    );
    assert!(stdout(&o).contains("already attached"), "{}", stdout(&o));
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn rollback_puts_back_the_previous_ipv6_default_route() {
    // The kernel stores an IPv6 route added without a metric under 1024: the
    // container's own default route must be found, and put back, as such.
    let host = Ns::new("ph");
    let c = Container::new();
    c.ip(&[
        "link", "add", "old0", "type", "veth", "peer", "name", "old1",
    ]);
    c.ip(&["link", "set", "old0", "up"]);
    c.ip(&["-6", "addr", "add", "fd00:95::2/64", "dev", "old0", "nodad"]);
    c.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fd00:95::1",
        "dev",
        "old0",
    ]);
    let before = c.routes();
    let br = unique("br");
    let args = [br.as_str(), &c.pid_s(), "fd00:94::2/64@fd00:94::1"];
    let steps = stdout(&host.pipe(&[&["-n"][..], &args[..]].concat()))
        .lines()
        .count();
    let o = host.pipe_env(&args, &[("PIPE_FAIL_AFTER", &steps.to_string())]);
    assert_fails(&o, 1, "everything done before it was undone");
    assert_eq!(c.routes(), before);
    let r = c.ipj(&["-6", "route", "show", "default"]);
    assert_eq!(r[0]["gateway"], "fd00:95::1", "{r}");
}
