//! `pipe doctor` on a real kernel: kernel support agrees with what `ip link add`
//! says in a test namespace, the bridge-netfilter/FORWARD DROP trap (set up
//! inside the test's own namespace), HOST_IF and GUEST facts, privileges, and
//! nothing changes anywhere.

mod common;

use std::process::Command;

use common::*;

fn doctor(ns: &Ns, args: &[&str]) -> (i32, serde_json::Value) {
    let state = format!("/tmp/pipe-test-state-{}", ns.name);
    let mut a = vec!["doctor", "--json"];
    a.extend_from_slice(args);
    let o = ns.pipe_env(
        &a,
        &[
            ("PIPE_STATE_DIR", &state),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ],
    );
    let out = stdout(&o);
    let first = out.lines().next().unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{out} {}: {e}", stderr(&o)));
    (o.status.code().unwrap(), v)
}

fn check<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {v}"))
}

/// Does `ip link add ... type KIND` work here (in a scratch namespace)?
fn kernel_has(kind: &[&str]) -> bool {
    let n = Ns::new("dk");
    n.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p1"]);
    let mut a = vec!["-n", &n.name, "link", "add"];
    a.extend_from_slice(kind);
    Command::new("ip").args(&a).status().unwrap().success()
}

#[test]
fn kernel_support_matches_ip_link_and_nothing_changes() {
    let h = Ns::new("dh");
    let before = h.links();
    let root_before = must(Command::new("ip").args(["-o", "link", "show"]));

    let (code, v) = doctor(&h, &[]);
    for k in ["veth", "bridge", "macvlan", "tbf"] {
        assert_eq!(check(&v, k)["status"], "ok", "{v}");
    }
    let vlan = kernel_has(&["link", "p0", "name", "p0.7", "type", "vlan", "id", "7"]);
    assert_eq!(
        check(&v, "802.1Q")["status"] == "ok",
        vlan,
        "doctor and ip disagree on 802.1Q: {v}"
    );
    let ipvlan = kernel_has(&["link", "p1", "name", "iv0", "type", "ipvlan", "mode", "l2"]);
    assert_eq!(
        check(&v, "ipvlan")["status"] == "ok",
        ipvlan,
        "doctor and ip disagree on ipvlan: {v}"
    );
    if !vlan {
        let c = check(&v, "802.1Q");
        assert_eq!(c["status"], "warn");
        assert!(c["fix"].as_str().unwrap().contains("8021q"), "{c}");
    }
    assert_eq!(check(&v, "capabilities")["status"], "ok");
    assert_eq!(check(&v, "docker")["status"], "warn", "{v}");
    assert!(v["selftest"].as_str().unwrap().contains("pipe selftest"));
    assert_eq!(code, 0, "nothing fails: {v}");
    assert_eq!(v["fail"], 0);

    // Read-only: no link in the host namespace or the root one (the probe's
    // namespace is never named), no state dir created.
    assert_eq!(h.links(), before);
    let root_after = must(Command::new("ip").args(["-o", "link", "show"]));
    let names = |s: &str| -> Vec<String> {
        s.lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
            .filter(|n| n.starts_with("pd"))
            .collect()
    };
    assert!(names(&root_after).is_empty(), "{root_after}");
    assert!(names(&root_before).is_empty());
    assert!(
        !std::path::Path::new(&format!("/tmp/pipe-test-state-{}", h.name)).exists(),
        "doctor created the state dir"
    );

    // The human form: one line per check, then the summary naming selftest.
    let o = h.pipe_env(
        &["doctor"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let text = stdout(&o);
    assert!(text.lines().any(|l| l.starts_with("ok    veth")), "{text}");
    assert!(text.contains("pipe selftest"), "{text}");
}

#[test]
fn bridge_netfilter_forward_drop_trap() {
    let h = Ns::new("dn");
    let br = unique("br");
    h.ip(&["link", "add", &br, "type", "bridge"]);
    h.ip(&["link", "set", &br, "up"]);
    let ipt = |args: &[&str]| {
        must(
            Command::new("ip")
                .args(["netns", "exec", &h.name, "iptables"])
                .args(args),
        )
    };
    // Only in the test's namespace: br_netfilter's sysctl and iptables are per namespace.
    must(Command::new("ip").args([
        "netns",
        "exec",
        &h.name,
        "sysctl",
        "-qw",
        "net.bridge.bridge-nf-call-iptables=1",
    ]));
    let (code, v) = doctor(&h, &[&br]);
    assert_eq!(code, 0, "{v}");
    let c = check(&v, &format!("{br} netfilter"));
    assert_eq!(c["status"], "ok", "{c}");
    let hc = check(&v, &format!("HOST_IF {br}"));
    assert!(
        hc["detail"]
            .as_str()
            .unwrap()
            .contains("bridge, mtu 1500, up"),
        "{hc}"
    );

    ipt(&["-P", "FORWARD", "DROP"]);
    let (code, v) = doctor(&h, &[&br]);
    let c = check(&v, &format!("{br} netfilter"));
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("iptables -I FORWARD -i {br} -o {br} -j ACCEPT")),
        "{c}"
    );
    assert_eq!(code, 1, "a failed check exits 1: {v}");

    ipt(&["-I", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"]);
    let (code, v) = doctor(&h, &[&br]);
    assert_eq!(check(&v, &format!("{br} netfilter"))["status"], "ok");
    assert_eq!(code, 0);

    ipt(&["-F", "FORWARD"]);
    must(Command::new("ip").args([
        "netns",
        "exec",
        &h.name,
        "sysctl",
        "-qw",
        "net.bridge.bridge-nf-call-iptables=0",
    ]));
    let (code, v) = doctor(&h, &[&br]);
    let c = check(&v, &format!("{br} netfilter"));
    assert_eq!(c["status"], "ok");
    assert!(c["detail"].as_str().unwrap().contains("=0"), "{c}");
    assert_eq!(code, 0);
}

#[test]
fn host_if_and_guest_facts() {
    let h = Ns::new("dg");
    let c = Container::new();
    // Missing HOST_IF: fail (exit 1); a missing br* is created by an attach: ok.
    let (code, v) = doctor(&h, &["nosuchif0"]);
    assert_eq!(check(&v, "HOST_IF nosuchif0")["status"], "fail");
    assert_eq!(code, 1);
    let (code, v) = doctor(&h, &["brnew0", &c.pid_s()]);
    assert_eq!(check(&v, "HOST_IF brnew0")["status"], "ok", "{v}");
    assert_eq!(check(&v, &format!("GUEST {}", c.pid))["status"], "ok");
    let names = check(&v, "GUEST names");
    assert_eq!(names["status"], "ok", "{names}");
    assert!(names["detail"].as_str().unwrap().contains("lo"));
    assert_eq!(check(&v, "GUEST IPv6")["status"], "ok");
    assert_eq!(code, 0, "{v}");

    // eth1 taken and IPv6 disabled in the container: warnings, still exit 0.
    c.ip(&["link", "add", "eth1", "type", "veth", "peer", "name", "x1"]);
    must(Command::new("nsenter").args([
        &format!("--net={}", c.ns_path()),
        "sysctl",
        "-qw",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]));
    let (code, v) = doctor(&h, &["brnew0", &c.pid_s()]);
    assert_eq!(check(&v, "GUEST names")["status"], "warn", "{v}");
    assert!(
        check(&v, "GUEST names")["fix"]
            .as_str()
            .unwrap()
            .contains("-i")
    );
    assert_eq!(check(&v, "GUEST IPv6")["status"], "warn", "{v}");
    assert_eq!(code, 0);

    // A guest that does not resolve: fail.
    let (code, v) = doctor(&h, &["brnew0", "/nonexistent/ns"]);
    assert_eq!(check(&v, "GUEST /nonexistent/ns")["status"], "fail", "{v}");
    assert_eq!(code, 1);
}

#[test]
fn without_privileges_capabilities_fail() {
    require_root();
    let o = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            BIN,
            "doctor",
            "--state-dir",
            "/tmp/pipe-doctor-nobody/state",
        ])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(
        out.lines()
            .any(|l| l.starts_with("fail  capabilities") && l.contains("run pipe as root")),
        "{out}"
    );
    assert!(stderr(&o).starts_with("pipe: doctor:"), "{}", stderr(&o));
}
