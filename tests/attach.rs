//! Attach on a real kernel: a "host" namespace per test, stand-in containers
//! (`unshare --net sleep`), and the result read back with `ip -j`.

mod common;

use common::*;

/// Host namespace with a "physical" veth phys0 whose other end sits in a "LAN"
/// namespace at 10.88.0.1/24.
fn host_with_lan() -> (Ns, Ns) {
    let host = Ns::new("ph");
    let lan = Ns::new("pl");
    host.ip(&[
        "link", "add", "phys0", "type", "veth", "peer", "name", "lan0", "netns", &lan.name,
    ]);
    host.ip(&["link", "set", "phys0", "up"]);
    lan.ip(&["addr", "add", "10.88.0.1/24", "dev", "lan0"]);
    lan.ip(&["link", "set", "lan0", "up"]);
    (host, lan)
}

#[test]
fn bridge_attach_reads_back_from_kernel() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let o = host.pipe(&[
        &br,
        &c.pid_s(),
        "10.77.0.2/24@10.77.0.1",
        "02:12:34:56:78:9a",
        "--mtu",
        "1400",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o);
    assert!(
        line.contains("eth1") && line.contains("02:12:34:56:78:9a") && line.contains(&br),
        "{line}"
    );

    // Container side: name, MAC, MTU, up, address, default route.
    let l = c.ipj(&["-d", "link", "show", "dev", "eth1"]);
    let l = link(&l);
    assert_eq!(l["address"], "02:12:34:56:78:9a");
    assert_eq!(l["mtu"], 1400);
    assert!(
        l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{l}"
    );
    assert_eq!(l["linkinfo"]["info_kind"], "veth");
    let a = c.ipj(&["addr", "show", "dev", "eth1"]);
    let addrs: Vec<String> = a[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["family"] == "inet")
        .map(|i| format!("{}/{}", i["local"].as_str().unwrap(), i["prefixlen"]))
        .collect();
    assert_eq!(addrs, ["10.77.0.2/24"]);
    let r = c.ipj(&["route", "show", "default"]);
    assert_eq!(r[0]["gateway"], "10.77.0.1");
    assert_eq!(r[0]["dev"], "eth1");

    // Host side: the bridge was created and is up; the veth is its port, up, same MTU.
    let b = host.ipj(&["-d", "link", "show", "dev", &br]);
    assert_eq!(link(&b)["linkinfo"]["info_kind"], "bridge");
    assert!(
        link(&b)["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP")
    );
    let veth = format!("veth1pl{}", c.pid);
    let v = host.ipj(&["-d", "link", "show", "dev", &veth]);
    assert_eq!(link(&v)["master"], br.as_str());
    assert_eq!(link(&v)["mtu"], 1400);
    assert!(
        link(&v)["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP")
    );

    // `ip netns exec PID` works afterwards.
    assert!(c.netns_link().exists());
    let o = run(std::process::Command::new("ip").args([
        "netns",
        "exec",
        &c.pid_s(),
        "ip",
        "-br",
        "addr",
    ]));
    assert!(stdout(&o).contains("10.77.0.2/24"), "{}", stdout(&o));
}

#[test]
fn two_containers_on_one_bridge_ping_each_other() {
    let host = Ns::new("ph");
    let (a, b) = (Container::new(), Container::new());
    let br = unique("br");
    for (c, ip) in [(&a, "10.78.0.2/24"), (&b, "10.78.0.3/24")] {
        let o = host.pipe(&[&br, &c.pid_s(), ip]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(a.ping("10.78.0.3"), "a cannot reach b");
    assert!(b.ping("10.78.0.2"), "b cannot reach a");
    // Both veths are ports of the same bridge.
    let ports = host.ipj(&["link", "show", "master", &br]);
    assert_eq!(link_names(&ports).len(), 2, "{ports}");
}

#[test]
fn macvlan_container_reaches_the_lan() {
    let (host, _lan) = host_with_lan();
    let c = Container::new();
    let o = host.pipe(&[
        "phys0",
        &c.pid_s(),
        "10.88.0.2/24@10.88.0.1",
        "U:myhost.foo.com",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["kind"], "macvlan");
    assert_eq!(j["host_if"], "phys0");
    assert_eq!(j["mac"], "02:72:6c:cd:9b:8d");
    let l = c.ipj(&["-d", "link", "show", "dev", "eth1"]);
    assert_eq!(link(&l)["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(link(&l)["linkinfo"]["info_data"]["mode"], "bridge");
    assert_eq!(link(&l)["address"], "02:72:6c:cd:9b:8d");
    assert!(
        c.ping("10.88.0.1"),
        "macvlan container cannot reach the LAN"
    );
    // Nothing new on the host side for a macvlan.
    assert_eq!(host.links(), ["lo", "phys0"]);
}

#[test]
fn host_interface_selected_by_mac_and_parent_brought_up() {
    let (host, _lan) = host_with_lan();
    host.ip(&["link", "set", "phys0", "down"]);
    let mac = link(&host.ipj(&["link", "show", "dev", "phys0"]))["address"]
        .as_str()
        .unwrap()
        .to_string();
    let c = Container::new();
    let o = host.pipe(&[
        &format!("mac:{mac}"),
        &c.pid_s(),
        "10.88.0.5/24",
        "-i",
        "lan5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(c.links().contains(&"lan5".to_string()));
    let p = host.ipj(&["link", "show", "dev", "phys0"]);
    assert!(
        link(&p)["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP"),
        "parent brought up"
    );
    assert!(c.ping("10.88.0.1"));
}

#[test]
fn off_subnet_gateway_gets_a_host_route() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let o = host.pipe(&[&br, &c.pid_s(), "10.79.0.2/32@10.79.9.1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = c.ipj(&["route", "show", "10.79.9.1"]);
    assert_eq!(r[0]["dev"], "eth1");
    assert_eq!(r[0]["scope"], "link");
    let r = c.ipj(&["route", "show", "default"]);
    assert_eq!(r[0]["gateway"], "10.79.9.1");
}

#[test]
fn ipv6_address_and_gateway() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let o = host.pipe(&[&br, &c.pid_s(), "fd00:77::2/64@fd00:77::1", "-i", "eth6"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = c.ipj(&["-6", "addr", "show", "dev", "eth6"]);
    let locals: Vec<&str> = a[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["local"].as_str().unwrap())
        .collect();
    assert!(locals.contains(&"fd00:77::2"), "{locals:?}");
    let r = c.ipj(&["-6", "route", "show", "default"]);
    assert_eq!(r[0]["gateway"], "fd00:77::1");
    assert_eq!(r[0]["dev"], "eth6");
}

#[test]
fn long_container_ifname_gets_a_host_name_that_fits() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let o = host.pipe(&[&br, &c.pid_s(), "0/0", "-i", "averylongname12", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let h = j["host_ifname"].as_str().unwrap();
    assert!(h.len() <= 15, "{h}");
    assert!(host.links().contains(&h.to_string()));
    assert_eq!(j["address"], serde_json::Value::Null);
}

#[test]
fn dry_run_prints_ip_commands_and_changes_nothing() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let o = host.pipe(&["-n", &br, &c.pid_s(), "10.80.0.2/24@10.80.0.1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("ip link add {br} type bridge")),
        "{out}"
    );
    assert!(
        out.contains("route replace default via 10.80.0.1 dev eth1"),
        "{out}"
    );
    assert_eq!(host.links(), ["lo"]);
    assert_eq!(c.links(), ["lo"]);
    assert!(!c.netns_link().exists());
}

/// Everything a failed attach must leave as it was.
struct World {
    host_links: Vec<String>,
    guest_links: Vec<String>,
    guest_routes: String,
}

fn world(host: &Ns, c: &Container) -> World {
    World {
        host_links: host.links(),
        guest_links: c.links(),
        guest_routes: c.routes(),
    }
}

fn assert_unchanged(before: &World, host: &Ns, c: &Container, what: &str) {
    let after = world(host, c);
    assert_eq!(
        before.host_links, after.host_links,
        "{what}: host links changed"
    );
    assert_eq!(
        before.guest_links, after.guest_links,
        "{what}: container links changed"
    );
    assert_eq!(
        before.guest_routes, after.guest_routes,
        "{what}: container routes changed"
    );
    assert!(
        !c.netns_link().exists(),
        "{what}: /var/run/netns link left behind"
    );
}

/// A container that already has an eth0 with an address and a default route.
fn container_with_default_route() -> Container {
    let c = Container::new();
    c.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    c.ip(&["addr", "add", "192.168.50.2/24", "dev", "eth0"]);
    c.ip(&["link", "set", "eth0", "up"]);
    c.ip(&["link", "set", "eth0p", "up"]);
    c.ip(&[
        "route",
        "add",
        "default",
        "via",
        "192.168.50.1",
        "dev",
        "eth0",
    ]);
    c
}

#[test]
fn failure_at_every_step_rolls_everything_back() {
    // Bridge (created) + off-subnet gateway: the longest plan. Fail after each
    // step in turn; the host and the container must be exactly as before.
    let host = Ns::new("ph");
    let c = container_with_default_route();
    let br = unique("br");
    let args = [br.as_str(), &c.pid_s(), "10.81.0.2/32@10.81.9.1"];
    let plan = stdout(&host.pipe(&[&["-n"], &args[..]].concat()));
    let steps = plan.lines().count();
    assert_eq!(steps, 7, "{plan}");
    let before = world(&host, &c);
    for n in 1..=steps {
        let o = host.pipe_env(&args, &[("PIPE_FAIL_AFTER", &n.to_string())]);
        assert_fails(&o, 1, "everything done before it was undone");
        assert_unchanged(&before, &host, &c, &format!("failure after step {n}"));
    }
    let r = c.ipj(&["route", "show", "default"]);
    assert_eq!(r[0]["gateway"], "192.168.50.1", "old default route is back");
    // And then it works.
    let o = host.pipe(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = c.ipj(&["route", "show", "default"]);
    assert_eq!(r[0]["gateway"], "10.81.9.1");
}

#[test]
fn macvlan_failure_rolls_back_the_parent_state_too() {
    let (host, _lan) = host_with_lan();
    host.ip(&["link", "set", "phys0", "down"]);
    let c = Container::new();
    let before = world(&host, &c);
    let o = host.pipe_env(
        &["phys0", &c.pid_s(), "10.88.0.9/24"],
        &[("PIPE_FAIL_AFTER", "4")],
    );
    assert_fails(&o, 1, "undone");
    assert_unchanged(&before, &host, &c, "macvlan");
    let p = host.ipj(&["link", "show", "dev", "phys0"]);
    assert!(
        !link(&p)["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP"),
        "parent is down again"
    );
}

#[test]
fn container_ifname_taken_is_refused_untouched() {
    let host = Ns::new("ph");
    let c = Container::new();
    c.ip(&["link", "add", "eth1", "type", "veth", "peer", "name", "x1"]);
    let br = unique("br");
    let before = world(&host, &c);
    let o = host.pipe(&[&br, &c.pid_s(), "10.82.0.2/24"]);
    assert_fails(&o, 1, "interface eth1 already exists in container");
    assert!(stderr(&o).contains("-i"), "names the fix");
    assert_unchanged(&before, &host, &c, "ifname taken");
}

#[test]
fn mtu_above_parent_is_refused_untouched() {
    let (host, _lan) = host_with_lan();
    let c = Container::new();
    let before = world(&host, &c);
    let o = host.pipe(&["phys0", &c.pid_s(), "10.88.0.3/24", "--mtu", "9000"]);
    assert_fails(&o, 1, "MTU 9000 is larger than the MTU 1500 of phys0");
    assert_unchanged(&before, &host, &c, "mtu");
}

#[test]
fn process_gone_is_refused_untouched() {
    let host = Ns::new("ph");
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let br = unique("br");
    let o = host.pipe(&[&br, &pid.to_string(), "10.83.0.2/24"]);
    assert_fails(&o, 1, &format!("process {pid} does not exist"));
    assert_eq!(host.links(), ["lo"]);
    assert!(!std::path::Path::new(&format!("/var/run/netns/{pid}")).exists());
}

#[test]
fn bad_gateway_is_refused_untouched() {
    let host = Ns::new("ph");
    let c = container_with_default_route();
    let br = unique("br");
    let before = world(&host, &c);
    // A gateway of the other family and the container's own address.
    let o = host.pipe(&[&br, &c.pid_s(), "10.84.0.2/24@fd00::1"]);
    assert_fails(&o, 2, "same family");
    let o = host.pipe(&[&br, &c.pid_s(), "10.84.0.2/24@10.84.0.2"]);
    assert_fails(&o, 2, "own address");
    // A gateway the kernel refuses: a broadcast address is no router.
    let o = host.pipe(&[&br, &c.pid_s(), "10.84.0.2/24@10.84.0.255"]);
    assert_fails(&o, 1, "default route");
    assert_unchanged(&before, &host, &c, "bad gateway");
}

#[test]
fn host_netns_itself_is_refused() {
    let host = Ns::new("ph");
    // The host namespace's own path: attaching there would change the host.
    let o = host.pipe(&["br0", &host.path(), "10.85.0.2/24"]);
    assert_fails(&o, 1, "host");
    assert_eq!(host.links(), ["lo"]);
}

#[test]
fn missing_host_interface_that_is_not_a_bridge_name() {
    let host = Ns::new("ph");
    let c = Container::new();
    let o = host.pipe(&["eth9", &c.pid_s(), "10.86.0.2/24"]);
    assert_fails(&o, 1, "host interface eth9 does not exist");
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    for (args, needle) in [
        (vec!["br1", "1", "10.0.0.1"], "no prefix length"),
        (
            vec!["br1", "1", "10.0.0.1/24", "01:02:03:04:05:06"],
            "multicast",
        ),
        (vec!["br1", "1", "10.0.0.1/24", "@5000"], "1 to 4094"),
        (vec!["br1"], "missing GUEST, ADDR"),
        (vec!["--macvlan-mode", "nope", "eth0", "1", "0/0"], "nope"),
    ] {
        let o = run(std::process::Command::new(BIN).args(&args));
        assert_fails(&o, 2, needle);
    }
}

#[test]
fn without_privileges_says_which_capabilities() {
    let c = Container::new();
    let o = run(std::process::Command::new("setpriv").args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        BIN,
        "br1",
        &c.pid_s(),
        "10.0.0.2/24",
    ]));
    assert_fails(&o, 1, "CAP_NET_ADMIN and CAP_SYS_ADMIN");
}

#[test]
fn named_netns_guest_is_not_linked_again() {
    let host = Ns::new("ph");
    let guest = Ns::new("pg");
    let br = unique("br");
    let o = host.pipe(&[&br, &guest.name, "10.87.0.2/24", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["container"], guest.name.as_str());
    assert!(guest.links().contains(&"eth1".to_string()));
}

#[test]
fn pid_1_namespace_is_refused_even_from_another_namespace() {
    // pipe runs in a test "host" namespace here, so PID 1's namespace (the
    // machine's own network) is not pipe's own: it must still be refused.
    // --dry-run keeps this test harmless even if the check ever regressed.
    let host = Ns::new("ph");
    // PID 2 (kthreadd) and 3 are kernel threads: always in the initial namespace.
    for guest in ["2", "/proc/2/ns/net", "3"] {
        let o = host.pipe(&["--dry-run", "br0", guest, "10.85.0.2/24"]);
        assert_fails(&o, 1, "initial network namespace");
        assert!(stdout(&o).is_empty(), "no plan printed: {}", stdout(&o));
    }
}

#[test]
fn new_bridge_warns_when_bridged_traffic_goes_through_iptables() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let sysctl = stdout(&host.exec(&["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"]));
    let o = host.pipe(&[&br, &c.pid_s(), "10.89.0.2/24"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let noted = stderr(&o).contains("bridge-nf-call-iptables=1");
    assert_eq!(
        noted,
        sysctl.trim() == "1",
        "sysctl {sysctl:?}, stderr {}",
        stderr(&o)
    );
    // Attaching to the bridge that now exists says nothing again.
    let d = Container::new();
    let o = host.pipe(&[&br, &d.pid_s(), "10.89.0.3/24"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("iptables"), "{}", stderr(&o));
}
