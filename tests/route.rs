//! `pipe route`, `pipe rule`, `pipe tc` on real namespaces: what pipe applies
//! is read back from the kernel; what it refuses changes nothing and names the
//! exact command that does it instead.

mod common;

use std::process::Command;

use common::*;

/// A host namespace to run pipe in, and a named "container" namespace with a
/// veth eth1 (10.60.0.2/24, 2001:db8:60::2/64) whose peer stays in the host.
fn setup() -> (Ns, Ns) {
    let host = Ns::new("ph");
    let g = Ns::new("pg");
    host.ip(&[
        "link", "add", "peer0", "type", "veth", "peer", "name", "eth1", "netns", &g.name,
    ]);
    host.ip(&["link", "set", "peer0", "up"]);
    g.ip(&["link", "set", "eth1", "up"]);
    g.ip(&["addr", "add", "10.60.0.2/24", "dev", "eth1"]);
    g.ip(&["addr", "add", "2001:db8:60::2/64", "dev", "eth1", "nodad"]);
    (host, g)
}

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
}

#[test]
fn routes_are_applied_and_read_back() {
    let (host, g) = setup();
    ok(&host.pipe(&[
        "route",
        &g.name,
        "add",
        "10.61.0.0/16",
        "via",
        "10.60.0.1",
        "dev",
        "eth1",
        "metric",
        "7",
        "table",
        "100",
        "src",
        "10.60.0.2",
        "proto",
        "static",
    ]));
    let r = g.ipj(&["route", "show", "table", "100"]);
    let r = &r[0];
    assert_eq!(r["dst"], "10.61.0.0/16", "{r}");
    assert_eq!(r["gateway"], "10.60.0.1");
    assert_eq!(r["dev"], "eth1");
    assert_eq!(r["metric"], 7);
    assert_eq!(r["prefsrc"], "10.60.0.2");
    assert_eq!(r["protocol"], "static");

    // A gateway off every subnet needs onlink.
    ok(&host.pipe(&[
        "route",
        &g.name,
        "add",
        "10.62.0.0/16",
        "via",
        "10.99.0.1",
        "dev",
        "eth1",
        "onlink",
    ]));
    let r = g.ipj(&["route", "show", "10.62.0.0/16"]);
    assert!(r[0]["flags"].to_string().contains("onlink"), "{r}");

    // Default route, IPv6, replace twice (idempotent), then delete.
    for _ in 0..2 {
        ok(&host.pipe(&[
            "route",
            &g.name,
            "replace",
            "default",
            "via",
            "2001:db8:60::1",
            "dev",
            "eth1",
        ]));
    }
    let r = g.ipj(&["-6", "route", "show", "default"]);
    assert_eq!(r.as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r[0]["gateway"], "2001:db8:60::1");
    ok(&host.pipe(&["route", &g.name, "-6", "del", "default"]));
    assert_eq!(
        g.ipj(&["-6", "route", "show", "default"]),
        serde_json::json!([])
    );

    // Types without a device.
    ok(&host.pipe(&["route", &g.name, "add", "blackhole", "10.66.0.0/16"]));
    let r = g.ipj(&["route", "show", "10.66.0.0/16"]);
    assert_eq!(r[0]["type"], "blackhole", "{r}");

    // Deleting by prefix alone.
    ok(&host.pipe(&["route", &g.name, "del", "10.61.0.0/16", "table", "100"]));
    assert_eq!(
        g.ipj(&["route", "show", "table", "100"]),
        serde_json::json!([])
    );
}

#[test]
fn kernel_refusals_say_what_to_do() {
    let (host, g) = setup();
    let add = ["route", &g.name, "add", "10.63.0.0/16", "via", "10.60.0.1"];
    ok(&host.pipe(&add));
    assert_fails(&host.pipe(&add), 1, "use `replace`");
    let o = host.pipe(&["route", &g.name, "add", "10.64.0.0/16", "via", "10.98.0.1"]);
    assert_fails(&o, 1, "add `onlink`");
    let o = host.pipe(&["route", &g.name, "add", "10.64.0.0/16", "dev", "eth9"]);
    assert_fails(&o, 1, "has no interface eth9");
    let o = host.pipe(&["route", &g.name, "del", "10.65.0.0/16"]);
    assert_fails(&o, 1, "no such route");
}

#[test]
fn rules_are_applied_and_read_back() {
    let (host, g) = setup();
    ok(&host.pipe(&[
        "rule",
        &g.name,
        "add",
        "from",
        "10.60.0.0/24",
        "to",
        "10.70.0.0/16",
        "iif",
        "eth1",
        "fwmark",
        "0x10/0xff",
        "table",
        "100",
        "priority",
        "1000",
    ]));
    ok(&host.pipe(&[
        "rule",
        &g.name,
        "add",
        "not",
        "to",
        "2001:db8::/32",
        "pref",
        "1001",
        "unreachable",
    ]));
    let rules = g.ipj(&["rule", "show"]);
    let r = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["priority"] == 1000)
        .unwrap_or_else(|| panic!("no rule 1000 in {rules}"));
    assert_eq!(r["src"], "10.60.0.0");
    assert_eq!(r["srclen"], 24);
    assert_eq!(r["dst"], "10.70.0.0");
    assert_eq!(r["dstlen"], 16);
    assert_eq!(r["iif"], "eth1");
    assert_eq!(r["fwmark"], "0x10");
    assert_eq!(r["fwmask"], "0xff");
    assert_eq!(r["table"], "100");
    let r6 = g.ipj(&["-6", "rule", "show", "pref", "1001"]);
    assert_eq!(r6[0]["action"], "unreachable", "{r6}");
    let t = g.ip(&["-6", "rule", "show", "pref", "1001"]);
    assert!(
        t.contains("not from all to 2001:db8::/32 unreachable"),
        "{t}"
    );

    ok(&host.pipe(&["rule", &g.name, "del", "priority", "1000"]));
    let rules = g.ipj(&["rule", "show"]);
    assert!(
        !rules
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["priority"] == 1000),
        "{rules}"
    );
    let o = host.pipe(&["rule", &g.name, "del", "priority", "1000"]);
    assert_fails(&o, 1, "no such rule");
}

#[test]
fn unsupported_forms_are_refused_with_the_exact_command() {
    let (host, g) = setup();
    let before = g.ip(&["route", "show", "table", "all"]);
    let args = ["add", "10.67.0.0/16", "via", "10.60.0.1", "mtu", "1400"];
    let o = host.pipe(&[&["route", g.name.as_str()], &args[..]].concat());
    let want = format!(
        "ip netns exec {} ip route add 10.67.0.0/16 via 10.60.0.1 mtu 1400",
        g.name
    );
    assert_fails(&o, 2, &want);
    assert!(stderr(&o).contains("`mtu`"), "{}", stderr(&o));
    assert_eq!(
        g.ip(&["route", "show", "table", "all"]),
        before,
        "nothing changed"
    );
    // The suggestion is exact: it runs as printed and does the job.
    ok(&run(Command::new("sh").arg("-c").arg(&want)));
    let r = g.ipj(&["-d", "route", "show", "10.67.0.0/16"]);
    assert_eq!(r[0]["metrics"][0]["mtu"], 1400, "{r}");

    // Malformed values are refused the same way; rules too.
    let o = host.pipe(&["route", &g.name, "add", "10.68.0.0/16", "via", "nope"]);
    assert_fails(&o, 2, "\"nope\"");
    assert!(stderr(&o).contains(&format!("ip netns exec {} ip route add", g.name)));
    let o = host.pipe(&[
        "rule",
        &g.name,
        "add",
        "from",
        "10.0.0.0/8",
        "tos",
        "0x10",
        "table",
        "5",
    ]);
    assert_fails(
        &o,
        2,
        &format!(
            "ip netns exec {} ip rule add from 10.0.0.0/8 tos 0x10 table 5",
            g.name
        ),
    );
    let o = host.pipe(&["route", &g.name, "show"]);
    assert_fails(&o, 2, &format!("ip netns exec {} ip route show", g.name));
}

#[test]
fn unlinked_guest_gets_an_nsenter_suggestion_and_dry_run_changes_nothing() {
    let host = Ns::new("ph");
    let c = Container::new();
    let o = host.pipe(&[
        "route",
        &c.pid_s(),
        "add",
        "10.69.0.0/16",
        "dev",
        "lo",
        "realm",
        "3",
    ]);
    assert_fails(
        &o,
        2,
        &format!(
            "nsenter --net=/proc/{}/ns/net ip route add 10.69.0.0/16 dev lo realm 3",
            c.pid
        ),
    );
    let before = c.routes();
    let o = host.pipe(&[
        "route",
        "-n",
        &c.pid_s(),
        "add",
        "10.69.0.0/16",
        "dev",
        "lo",
    ]);
    ok(&o);
    assert_eq!(
        stdout(&o),
        format!(
            "nsenter --net=/proc/{}/ns/net ip route add 10.69.0.0/16 dev lo\n",
            c.pid
        )
    );
    assert_eq!(c.routes(), before);
}

#[test]
fn tc_runs_inside_the_container() {
    let (host, g) = setup();
    ok(&host.pipe(&[
        "tc", &g.name, "qdisc", "add", "dev", "eth1", "root", "tbf", "rate", "1mbit", "burst",
        "32kbit", "latency", "400ms",
    ]));
    let q = must(Command::new("ip").args([
        "netns", "exec", &g.name, "tc", "-j", "qdisc", "show", "dev", "eth1",
    ]));
    assert!(q.contains("\"kind\":\"tbf\""), "{q}");
    // The host's peer0 was not touched.
    let q = must(Command::new("ip").args([
        "netns", "exec", &host.name, "tc", "-j", "qdisc", "show", "dev", "peer0",
    ]));
    assert!(!q.contains("tbf"), "{q}");
    // tc's own error is shown, and pipe says it failed.
    let o = host.pipe(&["tc", &g.name, "qdisc", "add", "dev", "eth9", "root", "tbf"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("tc failed in container"),
        "{}",
        stderr(&o)
    );
}
