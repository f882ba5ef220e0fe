//! `pipe link`: two containers joined by one veth pair, read back from the
//! kernel; they reach each other and nothing else, and failures roll back.

mod common;

use common::*;

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
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

#[test]
fn two_containers_linked_point_to_point_ping_each_other_and_nothing_else() {
    let host = Ns::new("ph");
    let host_links = host.links();
    let (a, b, other) = (Container::new(), Container::new(), Container::new());
    let o = host.pipe(&["link", &a.pid_s(), "10.1.1.1/32", &b.pid_s(), "10.1.1.2/32"]);
    ok(&o);
    assert_eq!(
        stdout(&o).trim(),
        format!(
            "{} eth1 addr 10.1.1.1/32 <-> {} eth1 addr 10.1.1.2/32",
            a.pid, b.pid
        )
    );

    // One veth, one end in each container, up, with its address and a host route to the other.
    for (c, me, peer) in [(&a, "10.1.1.1", "10.1.1.2"), (&b, "10.1.1.2", "10.1.1.1")] {
        assert_eq!(c.links(), ["eth1", "lo"]);
        let l = c.ipj(&["-d", "link", "show", "dev", "eth1"]);
        assert_eq!(link(&l)["linkinfo"]["info_kind"], "veth");
        assert!(link(&l)["flags"].to_string().contains("UP"), "{l}");
        assert_eq!(addrs(c, "eth1"), [format!("{me}/32")]);
        let r = c.ipj(&["route", "show", &format!("{peer}/32")]);
        assert_eq!(r[0]["dev"], "eth1", "{r}");
        assert_eq!(r[0]["scope"], "link", "{r}");
    }
    // No bridge, no host-side interface.
    assert_eq!(host.links(), host_links);

    assert!(a.ping("10.1.1.2"), "a cannot reach b");
    assert!(b.ping("10.1.1.1"), "b cannot reach a");
    // Nothing else: no default route, no other container, not the host.
    assert!(
        a.ipj(&["route", "show", "default"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    other.ip(&["addr", "add", "10.1.1.3/32", "dev", "lo"]);
    assert!(
        !a.ping("10.1.1.3"),
        "a reached a container it is not linked to"
    );
    assert!(
        !a.nsenter(&["ping", "-c1", "-W1", "10.1.2.1"])
            .status
            .success(),
        "a has a route off the link"
    );
    // Both ends carry pipe's ownership alias: detaching one container removes the pair.
    let l = a.ipj(&["link", "show", "dev", "eth1"]);
    assert_eq!(link(&l)["ifalias"], a.tag("eth1"), "{l}");
    ok(&host.pipe(&["detach", &a.pid_s()]));
    assert_eq!(a.links(), ["lo"]);
    assert_eq!(b.links(), ["lo"]);
}

#[test]
fn ipv6_link_and_own_names() {
    let host = Ns::new("ph");
    let (a, b) = (Container::new(), Container::new());
    ok(&host.pipe(&[
        "link",
        "-i",
        "p2pa",
        "--peer-ifname",
        "p2pb",
        "--mtu",
        "9000",
        &a.pid_s(),
        "fd00:11::1/128",
        &b.pid_s(),
        "fd00:11::2/128",
    ]));
    assert_eq!(link(&a.ipj(&["link", "show", "dev", "p2pa"]))["mtu"], 9000);
    assert_eq!(link(&b.ipj(&["link", "show", "dev", "p2pb"]))["mtu"], 9000);
    // Wait for duplicate address detection, then ping across.
    let mut reached = false;
    for _ in 0..30 {
        if a.nsenter(&["ping", "-c1", "-W1", "fd00:11::2"])
            .status
            .success()
        {
            reached = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(reached, "a cannot reach b over IPv6");
}

#[test]
fn failure_at_every_step_rolls_back_both_containers() {
    let host = Ns::new("ph");
    let (a, b) = (Container::new(), Container::new());
    let args = ["link", &a.pid_s(), "10.2.2.1/32", &b.pid_s(), "10.2.2.2/32"];
    let plan = stdout(&host.pipe(&[&["link", "-n"][..], &args[1..]].concat()));
    let steps = plan.lines().count();
    assert_eq!(steps, 7, "{plan}");
    assert!(
        plan.starts_with("ip link add eth1 mtu 1500 netns "),
        "{plan}"
    );
    let before = (a.links(), b.links(), a.routes(), b.routes(), host.links());
    for n in 1..=steps {
        let o = host.pipe_env(&args, &[("PIPE_FAIL_AFTER", &n.to_string())]);
        assert_fails(&o, 1, "everything done before it was undone");
        let now = (a.links(), b.links(), a.routes(), b.routes(), host.links());
        assert_eq!(now, before, "failure after step {n}");
    }
    ok(&host.pipe(&args));
    assert!(a.ping("10.2.2.2"));
}

#[test]
fn refusals_change_nothing() {
    let host = Ns::new("ph");
    let (a, b) = (Container::new(), Container::new());
    b.ip(&["link", "add", "eth1", "type", "veth", "peer", "name", "x1"]);
    let before = (a.links(), b.links());
    let o = host.pipe(&["link", &a.pid_s(), "10.3.3.1/32", &b.pid_s(), "10.3.3.2/32"]);
    assert_fails(&o, 1, "interface eth1 already exists in container");
    assert!(stderr(&o).contains("--peer-ifname"), "{}", stderr(&o));
    assert_eq!((a.links(), b.links()), before);
    let o = host.pipe(&["link", &a.pid_s(), "10.3.3.1/32", &a.pid_s(), "10.3.3.2/32"]);
    assert_fails(&o, 2, "share one network namespace");
    let o = host.pipe(&[
        "link",
        &a.pid_s(),
        "10.3.3.1/32@10.3.3.9",
        &b.pid_s(),
        "10.3.3.2/32",
    ]);
    assert_fails(&o, 2, "no gateway");
    assert_eq!((a.links(), b.links()), before);
}
