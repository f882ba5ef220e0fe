//! One identity per attachment (namespace device+inode, interface name),
//! ownership proven by exact tags, and state files that are never trusted
//! blindly: attacks on each, read back from the kernel and the state dir.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Child, Command, Stdio};

use common::*;

/// A process living in a named namespace (`ip netns exec NAME sleep`).
struct Sleeper(Child);

impl Sleeper {
    fn in_ns(ns: &Ns) -> Sleeper {
        Sleeper(
            Command::new("ip")
                .args(["netns", "exec", &ns.name, "sleep", "600"])
                .stdin(Stdio::null())
                .spawn()
                .expect("ip netns exec sleep"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn eth1_addrs(ns: &Ns) -> Vec<String> {
    let v = ns.ipj(&["-4", "addr", "show", "dev", "eth1"]);
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

#[test]
fn a_named_netns_survives_gc() {
    // `ip netns add blue`: a bind-mounted namespace with no process in it.
    let h = Host::new("ih");
    let blue = Ns::new("blue");
    let br = unique("br");
    h.ok(&[&br, &blue.path(), "10.71.0.2/24"]);
    let out = h.ok(&["gc"]);
    assert_eq!(out.trim(), "nothing to clean up", "{out}");
    assert_eq!(eth1_addrs(&blue), ["10.71.0.2/24"]);
    assert_eq!(h.records().len(), 1);
    assert!(h.ns.links().contains(&br));
    // Once the namespace is deleted, gc collects what is left.
    let name = blue.name.clone();
    drop(blue);
    assert!(!std::path::Path::new(&format!("/var/run/netns/{name}")).exists());
    let out = h.ok(&["gc"]);
    assert!(out.contains(&format!("removed bridge {br}")), "{out}");
    assert!(h.records().is_empty(), "{:?}", h.records());
}

#[test]
fn pid_path_and_name_of_one_namespace_are_one_attachment() {
    let h = Host::new("ih");
    let g = Ns::new("g");
    let s = Sleeper::in_ns(&g);
    // Wait until the sleeper is in the namespace.
    let want = ns_key(&g.path());
    let t = std::time::Instant::now();
    while ns_key(&format!("/proc/{}/ns/net", s.pid())) != want {
        assert!(
            t.elapsed().as_secs() < 5,
            "sleeper never entered {}",
            g.name
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let br = unique("br");
    let pid = s.pid().to_string();
    let proc_path = format!("/proc/{pid}/ns/net");
    let first = h.ok(&[&br, &g.name, "10.72.0.2/24"]);
    assert!(!first.contains("already attached"), "{first}");
    for guest in [
        pid.as_str(),
        proc_path.as_str(),
        g.path().as_str(),
        g.name.as_str(),
    ] {
        let out = h.ok(&[&br, guest, "10.72.0.2/24"]);
        assert!(out.contains("already attached"), "{guest}: {out}");
    }
    assert_eq!(h.records(), [format!("{want}@eth1.json")]);
    assert_eq!(eth1_addrs(&g), ["10.72.0.2/24"]);
    // One host end in the bridge.
    let ports = h.ns.ipj(&["link", "show", "master", &br]);
    assert_eq!(ports.as_array().unwrap().len(), 1, "{ports}");
    // Detach by another form removes it all, and no PID link is left behind.
    let out = h.ok(&["detach", &proc_path]);
    assert!(out.contains("detached"), "{out}");
    assert!(g.ip(&["-o", "link"]).lines().all(|l| !l.contains("eth1")));
    assert!(h.records().is_empty());
    assert!(std::fs::symlink_metadata(format!("/var/run/netns/{pid}")).is_err());
    assert!(!h.ns.links().contains(&br), "bridge pipe made is gone");
}

#[test]
fn a_reused_host_end_name_belongs_to_the_new_attachment() {
    // A dead container's record names host end X; a new attach reuses -l X:
    // neither gc nor a detach of the dead one may delete the live X.
    let h = Host::new("ih");
    let br = unique("br");
    let x = unique("hx");
    let mut a = Container::new();
    h.ok(&["-l", &x, &br, &a.pid_s(), "10.73.0.2/24"]);
    let a_pid = a.pid_s();
    let _ = a.child.kill();
    let _ = a.child.wait();
    // The veth dies with the namespace (asynchronously).
    let t = std::time::Instant::now();
    while h.ns.links().contains(&x) && t.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let b = Container::new();
    h.ok(&["-l", &x, &br, &b.pid_s(), "10.73.0.3/24"]);
    let v = h.ns.ipj(&["link", "show", "dev", &x]);
    assert_eq!(link(&v)["ifalias"], b.tag("eth1").as_str());
    let out = h.ok(&["gc"]);
    // a's record is collected by gc, or was superseded by b's attach when the
    // kernel gave b's namespace a's freed nsfs inode (same key, other cookie).
    assert!(
        out.contains("record") || out.contains(&format!("/var/run/netns/{a_pid}")),
        "gc collects what is left of a: {out}"
    );
    assert_eq!(h.records(), [b.record("eth1")], "{out}");
    assert!(h.ns.links().contains(&x), "gc deleted b's live {x}: {out}");
    // Detaching the dead one by its old PID finds nothing of b's to delete.
    let _ = h.pipe(&["detach", &a_pid]);
    assert!(
        h.ns.links().contains(&x),
        "detach of the dead one deleted b's {x}"
    );
    assert_eq!(eth1_addrs_of(&b), ["10.73.0.3/24"]);
    assert_eq!(h.records(), [b.record("eth1")]);
}

fn eth1_addrs_of(c: &Container) -> Vec<String> {
    let v = c.ipj(&["-4", "addr", "show", "dev", "eth1"]);
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// A record of a dead namespace, hand-written as an attacker would.
fn plant(h: &Host, file: &str, body: serde_json::Value) {
    let d = format!("{}/attachments", h.state);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(format!("{d}/{file}"), serde_json::to_vec(&body).unwrap()).unwrap();
}

fn record_body(ifname: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut r = serde_json::json!({
        "netns": {"dev": 4, "ino": 4_000_000_123u64},
        "ifname": ifname,
        "label": "ghost",
        "spec": {"container": "ghost", "host": "brghost", "addr": "10.0.0.2/24"},
        "kind": "veth",
        "host_if": "brghost",
    });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

#[test]
fn tampered_and_planted_state_is_refused_untouched() {
    let h = Host::new("ih");
    // Victims: links and files a forged record names.
    h.ns.ip(&["link", "add", "victim0", "type", "bridge"]);
    h.ns.ip(&[
        "link", "add", "victim1", "type", "veth", "peer", "name", "victim2",
    ]);
    h.ns.ip(&["link", "set", "victim1", "alias", "pipe:web:eth1"]);
    let outside = format!("{}-outside", h.state);
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(format!("{outside}/precious"), "keep").unwrap();
    let named = Ns::new("nn");

    // A well-formed record of a dead namespace that names foreign links: the
    // bridge carries no pipe:shared tag, the veth an old-style tag of another.
    plant(
        &h,
        "4-4000000123@eth1.json",
        record_body(
            "eth1",
            serde_json::json!({
                "host_if": "victim0",
                "host_ifname": "victim1",
                "created": [{"what": "bridge", "name": "victim0"}],
            }),
        ),
    );
    // Paths outside the state dir, names that are no interface.
    plant(
        &h,
        "4-4000000124@eth1.json",
        record_body(
            "eth1",
            serde_json::json!({"created": [{"what": "netns_link", "name": "../../tmp/x"}]}),
        ),
    );
    plant(
        &h,
        "4-4000000125@eth1.json",
        record_body("../../etc", serde_json::json!({})),
    );
    plant(
        &h,
        "4-4000000126@eth1.json",
        record_body(
            "eth1",
            serde_json::json!({"anchor": format!("{outside}/precious")}),
        ),
    );
    // A symlink planted as a record, pointing outside.
    std::os::unix::fs::symlink(
        format!("{outside}/precious"),
        format!("{}/attachments/4-4000000127@eth1.json", h.state),
    )
    .unwrap();
    // An empty marker for a namespace made with `ip netns add`.
    std::fs::create_dir_all(format!("{}/netns", h.state)).unwrap();
    std::fs::write(format!("{}/netns/{}", h.state, named.name), "").unwrap();

    let before = h.ns.links();
    let o = h.pipe(&["gc"]);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "gc must report the refused records: {err}"
    );
    for f in ["4000000124", "4000000125", "4000000126", "4000000127"] {
        assert!(err.contains(f), "{f} not reported: {err}");
    }
    assert_eq!(
        h.ns.links(),
        before,
        "gc touched a link a forged record names"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{outside}/precious")).unwrap(),
        "keep"
    );
    // The forged but well-formed record is collected (its namespace is dead),
    // the refused ones stay for the operator to inspect.
    let recs = h.records();
    assert!(
        !recs.contains(&"4-4000000123@eth1.json".to_string()),
        "{recs:?}"
    );
    assert_eq!(recs.len(), 4, "{recs:?}");
    assert!(
        std::path::Path::new(&named.path()).exists(),
        "gc removed a namespace made with ip netns add"
    );
    assert!(named.ip(&["-o", "link"]).contains("lo"));
    let _ = std::fs::remove_dir_all(&outside);
}

#[test]
fn state_is_private_whatever_the_umask_and_symlinks_are_not_followed() {
    let h = Host::new("ih");
    let c = Container::new();
    let br = unique("br");
    // umask 000, as a careless init system might leave it.
    let o = run(Command::new("nsenter")
        .arg(format!("--net={}", h.ns.path()))
        .args(["sh", "-c", &format!("umask 000; exec {BIN} \"$@\""), "sh"])
        .args([&br, &c.pid_s(), "10.74.0.2/24"])
        .env("PIPE_STATE_DIR", &h.state));
    assert!(o.status.success(), "{}", stderr(&o));
    let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&h.state), 0o700);
    assert_eq!(mode(&format!("{}/attachments", h.state)), 0o700);
    let rec = format!("{}/attachments/{}", h.state, c.record("eth1"));
    assert_eq!(mode(&rec), 0o600);
    assert_eq!(std::fs::metadata(&rec).unwrap().uid(), 0);

    // A state dir whose attachments/ is a symlink elsewhere: refused, nothing written there.
    let h2 = Host::new("ih");
    let elsewhere = format!("{}-elsewhere", h2.state);
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(&h2.state).unwrap();
    std::os::unix::fs::symlink(&elsewhere, format!("{}/attachments", h2.state)).unwrap();
    let c2 = Container::new();
    let before = (h2.ns.links(), c2.links());
    let o = h2.pipe(&[&br, &c2.pid_s(), "10.74.0.3/24"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));
    assert_eq!(
        (h2.ns.links(), c2.links()),
        before,
        "a refused attach changed something"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&elsewhere);
}
