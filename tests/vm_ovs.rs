//! Open vSwitch bridges and access tags, bonded uplinks, and a macvlan named
//! like a host interface, on Debian's 6.1 kernel: these run inside the QEMU VM
//! tier (tests/vm/run.sh unpacks ovsdb-server, ovs-vswitchd and ovs-vsctl from
//! Debian's packages and loads the openvswitch module). On the build machine
//! they are ignored; run there with --ignored, they fail (no OVS).
//!
//! One ovsdb-server and one ovs-vswitchd serve every test of this binary:
//! ovs-vswitchd runs in the namespace `pipeovs`, which is the "host" of every
//! OVS test (pipe runs there); each test uses bridges of its own. What the
//! tests check in the database, they read with Open vSwitch's own `ovs-vsctl`.

mod common;

use std::process::Command;
use std::sync::OnceLock;

use common::*;

const OVS_HOST: &str = "pipeovs";
const RUN: &str = "/run/openvswitch";

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "pipe failed: {}", stderr(o));
    stdout(o)
}

fn vsctl(args: &[&str]) -> String {
    must(Command::new("ovs-vsctl").arg("--timeout=60").args(args))
        .trim()
        .to_string()
}

/// Start the database and the switch once for this test binary.
fn ovs_up() {
    static UP: OnceLock<()> = OnceLock::new();
    UP.get_or_init(|| {
        require_root();
        let _ = Command::new("ip").args(["netns", "add", OVS_HOST]).status();
        must(Command::new("ip").args(["-n", OVS_HOST, "link", "set", "lo", "up"]));
        std::fs::create_dir_all(RUN).unwrap();
        std::fs::create_dir_all("/var/log/openvswitch").unwrap();
        let db = format!("{RUN}/conf.db");
        if !std::path::Path::new(&db).exists() {
            must(Command::new("ovsdb-tool").args([
                "create",
                &db,
                "/usr/share/openvswitch/vswitch.ovsschema",
            ]));
        }
        must(Command::new("ovsdb-server").args([
            &db,
            &format!("--remote=punix:{RUN}/db.sock"),
            "--pidfile",
            "--detach",
            "--no-chdir",
            "--log-file=/tmp/ovsdb-server.log",
        ]));
        must(Command::new("ovs-vsctl").args(["--no-wait", "init"]));
        must(
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{OVS_HOST}"))
                .args([
                    "ovs-vswitchd",
                    &format!("unix:{RUN}/db.sock"),
                    "--pidfile",
                    "--detach",
                    "--no-chdir",
                    "--log-file=/tmp/ovs-vswitchd.log",
                ]),
        );
    });
}

/// The OVS host: pipe runs in the namespace ovs-vswitchd serves.
fn pipe(args: &[&str]) -> std::process::Output {
    pipe_env(args, &[])
}

fn pipe_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{OVS_HOST}"))
        .arg(BIN)
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c)
}

/// An OVS bridge of this test, deleted (with its ports) on drop.
struct Br(String);

impl Br {
    /// A fresh name starting with `ovs` (pipe creates it on the first attach).
    fn name() -> Br {
        Br(unique("ovs"))
    }
    fn ports(&self) -> Vec<String> {
        let mut v: Vec<String> = vsctl(&["list-ports", &self.0])
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }
}

impl Drop for Br {
    fn drop(&mut self) {
        let _ = Command::new("ovs-vsctl")
            .args(["--timeout=30", "--if-exists", "del-br", &self.0])
            .status();
    }
}

/// The OVS port whose external_ids name this container's `ifname`, if any.
fn port_of(c: &Container, ifname: &str) -> Option<String> {
    let tag = c.tag(ifname);
    let out = vsctl(&[
        "--bare",
        "--columns=name",
        "find",
        "port",
        &format!("external_ids:pipe-attachment=\"{tag}\""),
    ]);
    let names: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(names.len() <= 1, "two ports name {tag}: {names:?}");
    names.first().map(|s| s.to_string())
}

fn host_links() -> Vec<String> {
    let s = must(Command::new("ip").args(["-j", "-n", OVS_HOST, "link", "show"]));
    link_names(&serde_json::from_str(&s).unwrap())
}

/// Links in the OVS host carrying this alias (pipe's tag of an attachment).
fn host_links_tagged(tag: &str) -> Vec<String> {
    let s = must(Command::new("ip").args(["-j", "-n", OVS_HOST, "link", "show"]));
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ifalias"].as_str() == Some(tag))
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

/// Wait (up to 20 s: namespace cleanup is asynchronous) until `f` holds.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    (0..200).any(|_| {
        f() || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            false
        }
    })
}

fn ping_retry(c: &Container, addr: &str) -> bool {
    (0..5).any(|_| c.ping(addr))
}

fn cant_reach(c: &Container, addr: &str) -> bool {
    !c.nsenter(&["ping", "-c1", "-W1", addr]).status.success()
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_ovs_two_containers_ping_rerun_detach() {
    ovs_up();
    let br = Br::name();
    let (a, b) = (Container::new(), Container::new());
    let line = ok(&pipe(&[&br.0, &a.pid_s(), "10.30.0.1/24"]));
    assert!(line.contains(&br.0), "{line}");
    assert_eq!(
        vsctl(&["br-exists", &br.0]),
        "",
        "pipe created OVS bridge {}",
        br.0
    );
    ok(&pipe(&[&br.0, &b.pid_s(), "10.30.0.2/24"]));
    let pa = port_of(&a, "eth1").expect("a's host end is an OVS port");
    let pb = port_of(&b, "eth1").expect("b's host end is an OVS port");
    assert_eq!(br.ports(), {
        let mut v = vec![pa.clone(), pb.clone()];
        v.sort();
        v
    });
    assert_eq!(
        vsctl(&["get", "port", &pa, "tag"]),
        "[]",
        "no @VLAN: no tag"
    );
    assert_eq!(
        vsctl(&["get", "interface", &pa, "external_ids:pipe-attachment"]),
        format!("\"{}\"", a.tag("eth1"))
    );
    assert!(host_links().contains(&pa), "{:?}", host_links());
    assert!(ping_retry(&a, "10.30.0.2"), "a -> b across the OVS bridge");
    assert!(b.ping("10.30.0.1"), "b -> a");

    // The same attach again: nothing changes.
    let again = ok(&pipe(&[&br.0, &a.pid_s(), "10.30.0.1/24"]));
    assert!(again.contains("(already attached)"), "{again}");
    assert_eq!(br.ports().len(), 2);

    // detach removes the port row as well as the veth.
    ok(&pipe(&["detach", &a.pid_s()]));
    assert_eq!(port_of(&a, "eth1"), None);
    assert_eq!(br.ports(), vec![pb.clone()]);
    assert!(!host_links().contains(&pa));
    assert!(!a.links().contains(&"eth1".to_string()));
    // A port pipe did not make is never touched: b's stays, and a second
    // detach of a is a no-op.
    let o = pipe(&["detach", &a.pid_s()]);
    assert!(br.ports() == vec![pb.clone()], "{}", stderr(&o));
    ok(&pipe(&["detach", &b.pid_s()]));
    assert!(br.ports().is_empty());
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_ovs_tags_10_and_20_isolate() {
    ovs_up();
    let br = Br::name();
    vsctl(&["add-br", &br.0]); // an existing bridge, found through the OVSDB
    let (a, b, c) = (Container::new(), Container::new(), Container::new());
    ok(&pipe(&[&br.0, &a.pid_s(), "10.31.0.1/24", "@10"]));
    ok(&pipe(&[&br.0, &b.pid_s(), "10.31.0.2/24", "@10"]));
    ok(&pipe(&[&br.0, &c.pid_s(), "10.31.0.3/24", "@20"]));
    let pa = port_of(&a, "eth1").unwrap();
    let pc = port_of(&c, "eth1").unwrap();
    assert_eq!(vsctl(&["get", "port", &pa, "tag"]), "10");
    assert_eq!(vsctl(&["get", "port", &pc, "tag"]), "20");
    assert!(ping_retry(&a, "10.31.0.2"), "a -> b, both in VLAN 10");
    assert!(cant_reach(&a, "10.31.0.3"), "a (10) must not reach c (20)");
    assert!(cant_reach(&c, "10.31.0.2"), "c (20) must not reach b (10)");
    for x in [&a, &b, &c] {
        ok(&pipe(&["detach", &x.pid_s()]));
    }
    assert!(br.ports().is_empty(), "{:?}", br.ports());
    assert_eq!(
        vsctl(&["br-exists", &br.0]),
        "",
        "a bridge pipe did not make stays"
    );
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_ovs_killed_container_collected_leaves_no_port() {
    ovs_up();
    let br = Br::name();
    let a = Container::new();
    let b = Container::new();
    ok(&pipe(&[&br.0, &a.pid_s(), "10.32.0.1/24"]));
    ok(&pipe(&[&br.0, &b.pid_s(), "10.32.0.2/24"]));
    let pa = port_of(&a, "eth1").unwrap();
    let pb = port_of(&b, "eth1").unwrap();
    let (ta, tb) = (a.tag("eth1"), b.tag("eth1"));
    // b's record is lost too: gc finds its port by the external_ids alone.
    std::fs::remove_file(format!("/run/pipe/attachments/{}", b.record("eth1"))).unwrap();
    drop(a);
    drop(b);
    // The veths died with the namespaces; the OVSDB rows did not.
    assert!(eventually(|| {
        let l = host_links();
        !l.contains(&pa) && !l.contains(&pb)
    }));
    assert_eq!(br.ports().len(), 2, "rows outlive the veths");
    let out = ok(&pipe(&["gc"]));
    assert!(out.contains(&format!("Open vSwitch port {pa}")), "{out}");
    assert!(out.contains(&format!("Open vSwitch port {pb}")), "{out}");
    assert!(br.ports().is_empty(), "{:?}", br.ports());
    let left = vsctl(&["--bare", "--columns=external_ids", "list", "interface"]);
    assert!(!left.contains(&ta) && !left.contains(&tb), "{left}");
    // Again: nothing left to do.
    let out = ok(&pipe(&["gc"]));
    assert!(!out.contains("Open vSwitch"), "{out}");
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_ovs_failed_attach_leaves_the_ovsdb_unchanged() {
    ovs_up();
    // A bridge pipe would create, and an existing one with a port of someone else's.
    let new = Br::name();
    let old = Br::name();
    vsctl(&["add-br", &old.0]);
    let other = unique("oth");
    must(Command::new("ip").args([
        "-n",
        OVS_HOST,
        "link",
        "add",
        &other,
        "type",
        "veth",
        "peer",
        "name",
        &unique("otp"),
    ]));
    vsctl(&["add-port", &old.0, &other]);
    let before = old.ports();
    let c = Container::new();
    // Steps: link netns, [create bridge,] veth, OVS port, address.
    for (br, steps) in [(&new, 5), (&old, 4)] {
        for n in 1..=steps {
            let o = pipe_env(
                &[&br.0, &c.pid_s(), "10.33.0.1/24", "@10"],
                &[("PIPE_FAIL_AFTER", &n.to_string())],
            );
            assert_fails(&o, 1, "failure injected");
            assert_eq!(port_of(&c, "eth1"), None, "step {n} on {}", br.0);
            let all = vsctl(&["--bare", "--columns=external_ids", "list", "interface"]);
            assert!(!all.contains(&c.tag("eth1")), "step {n}: {all}");
            assert_eq!(
                host_links_tagged(&c.tag("eth1")),
                Vec::<String>::new(),
                "step {n}"
            );
            assert!(!c.links().contains(&"eth1".to_string()));
        }
    }
    let o = Command::new("ovs-vsctl")
        .args(["br-exists", &new.0])
        .status()
        .unwrap();
    assert_eq!(
        o.code(),
        Some(2),
        "the bridge the failed attach created is gone"
    );
    assert_eq!(
        old.ports(),
        before,
        "the existing bridge's ports are as they were"
    );
    // And the attach itself works.
    ok(&pipe(&[&old.0, &c.pid_s(), "10.33.0.1/24", "@10"]));
    assert!(port_of(&c, "eth1").is_some());
    ok(&pipe(&["detach", &c.pid_s()]));
    assert_eq!(old.ports(), before);
    let _ = Command::new("ip")
        .args(["-n", OVS_HOST, "link", "del", &other])
        .status();
}

/// A "switch" namespace with `s0` (the peer of the host's `dev`), addresses on
/// it and on its VLAN 10.
fn lan(h: &Ns, dev: &str, net: &str, vnet: &str) -> Ns {
    let sw = Ns::new("lan");
    h.ip(&[
        "link", "add", dev, "type", "veth", "peer", "name", "s0", "netns", &sw.name,
    ]);
    sw.ip(&["link", "set", "s0", "up"]);
    sw.ip(&["addr", "add", &format!("{net}.1/24"), "dev", "s0"]);
    sw.ip(&[
        "link", "add", "link", "s0", "name", "s0.10", "type", "vlan", "id", "10",
    ]);
    sw.ip(&["link", "set", "s0.10", "up"]);
    sw.ip(&["addr", "add", &format!("{vnet}.1/24"), "dev", "s0.10"]);
    sw
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_bond_as_macvlan_parent_and_with_vlan() {
    let h = Ns::new("bh");
    let _sw = lan(&h, "e0", "10.34.0", "10.35.0");
    h.ip(&[
        "link",
        "add",
        "bond0",
        "type",
        "bond",
        "mode",
        "active-backup",
        "miimon",
        "50",
    ]);
    h.ip(&["link", "set", "e0", "master", "bond0"]);
    h.ip(&["link", "set", "bond0", "up"]);
    let (a, b) = (Container::new(), Container::new());
    let line = ok(&h.pipe(&["bond0", &a.pid_s(), "10.34.0.2/24"]));
    assert!(line.contains("macvlan on bond0"), "{line}");
    let line = ok(&h.pipe(&["bond0", &b.pid_s(), "10.35.0.2/24", "@10"]));
    assert!(line.contains("macvlan on bond0.10 vlan 10"), "{line}");
    let d = &h.ipj(&["-d", "link", "show", "dev", "bond0.10"])[0];
    assert_eq!(d["linkinfo"]["info_kind"], "vlan", "{d}");
    assert_eq!(d["link"], "bond0", "{d}");
    assert!(
        ping_retry(&a, "10.34.0.1"),
        "macvlan on the bond reaches the LAN"
    );
    assert!(
        ping_retry(&b, "10.35.0.1"),
        "macvlan on bond0.10 reaches VLAN 10"
    );
    assert!(
        cant_reach(&b, "10.34.0.1"),
        "VLAN 10 is not the untagged LAN"
    );
    ok(&h.pipe(&["detach", &b.pid_s()]));
    assert!(
        !h.links().contains(&"bond0.10".to_string()),
        "{:?}",
        h.links()
    );
    ok(&h.pipe(&["detach", &a.pid_s()]));
    assert!(
        h.links().contains(&"bond0".to_string()),
        "the operator's bond stays"
    );
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_macvlan_named_like_the_host_interface_on_6_1() {
    // The host's uplink is eth1, and the container's interface is eth1 by
    // default: the kernel checks the name in the container's namespace only.
    let h = Ns::new("mh");
    let _sw = lan(&h, "eth1", "10.36.0", "10.37.0");
    h.ip(&["link", "set", "eth1", "up"]);
    let c = Container::new();
    let line = ok(&h.pipe(&["eth1", &c.pid_s(), "10.36.0.2/24"]));
    assert!(line.contains("macvlan on eth1"), "{line}");
    let l = &c.ipj(&["-d", "link", "show", "dev", "eth1"])[0];
    assert_eq!(l["linkinfo"]["info_kind"], "macvlan", "{l}");
    assert!(h.links().contains(&"eth1".to_string()));
    assert!(ping_retry(&c, "10.36.0.1"));
    // With @VLAN too: eth1.10 on the host, eth1 in the container.
    let d = Container::new();
    ok(&h.pipe(&["eth1", &d.pid_s(), "10.37.0.2/24", "@10"]));
    assert!(ping_retry(&d, "10.37.0.1"));
    ok(&h.pipe(&["detach", &c.pid_s()]));
    ok(&h.pipe(&["detach", &d.pid_s()]));
}
