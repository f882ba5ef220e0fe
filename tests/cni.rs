//! pipe as a CNI plugin, driven by real clients: the plugin exec'd directly
//! (as libcni does, through a small conflist runner below for CHECK, GC and
//! STATUS, which Podman 4.3 and containerd 1.6 never send), Podman 4.3 with its
//! CNI backend, and containerd 1.6 `ctr run --cni`. Every test has its own host
//! namespace, where the runtime and the plugin run, so nothing touches the
//! machine's own network; the reference plugins come from Debian's
//! containernetworking-plugins in /usr/lib/cni.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::{Value, json};

const REF: &str = "/usr/lib/cni";

fn require(bins: &[&str]) {
    require_root();
    for b in bins {
        let found = if b.starts_with('/') {
            Path::new(b).exists()
        } else {
            Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        assert!(
            found,
            "{b} is missing: install podman containerd containernetworking-plugins busybox-static (tests/run.sh does)"
        );
    }
}

/// A CNI setting: a host namespace where the plugin runs, a CNI bin dir with
/// `pipe` in it, pipe's state dir and host-local's data dir; all removed on drop.
struct Cni {
    host: Ns,
    dir: PathBuf,
}

/// What a plugin answered.
#[derive(Debug)]
struct Reply {
    code: i32,
    out: Value,
    err: String,
}

impl Reply {
    /// Run a plugin command with `conf` on stdin.
    fn of(mut c: Command, conf: &Value) -> Reply {
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut ch = c.spawn().unwrap();
        {
            use std::io::Write;
            ch.stdin
                .take()
                .unwrap()
                .write_all(conf.to_string().as_bytes())
                .unwrap();
        }
        let o = ch.wait_with_output().unwrap();
        let s = stdout(&o);
        Reply {
            code: o.status.code().unwrap_or(-1),
            out: if s.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
            },
            err: stderr(&o),
        }
    }

    fn ok(&self) -> &Value {
        assert_eq!(self.code, 0, "plugin failed: {} {}", self.out, self.err);
        &self.out
    }

    /// A CNI error: exit 1, `{cniVersion, code, msg}` on stdout, one `pipe:` line on stderr.
    fn error(&self, want: u64, needle: &str) {
        assert_eq!(self.code, 1, "expected CNI error {want}: {:?}", self);
        assert_eq!(self.out["code"], want, "{:?}", self);
        assert!(self.out["cniVersion"].is_string(), "{:?}", self);
        let msg = self.out["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        let lines: Vec<&str> = self
            .err
            .lines()
            .filter(|l| !l.starts_with("pipe: note:"))
            .collect();
        assert_eq!(lines.len(), 1, "one stderr line: {:?}", self.err);
        assert!(lines[0].starts_with("pipe: "), "{:?}", self.err);
    }
}

impl Cni {
    fn new() -> Cni {
        require(&[&format!("{REF}/host-local"), &format!("{REF}/bridge"), "jq"]);
        Cni::bare()
    }

    /// Without the reference plugins (the VM tier has only pipe).
    fn bare() -> Cni {
        let host = Ns::new("cnh");
        let dir = PathBuf::from(format!("/tmp/pipe-cni-{}", host.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::os::unix::fs::symlink(BIN, dir.join("bin/pipe")).unwrap();
        Cni { host, dir }
    }

    fn cni_path(&self) -> String {
        format!("{}:{REF}", self.dir.join("bin").display())
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn ipam_dir(&self) -> String {
        self.dir.join("ipam").display().to_string()
    }

    /// Addresses host-local holds for a network.
    fn held(&self, net: &str) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("ipam").join(net)) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        v.sort();
        v
    }

    /// pipe's own records left in its state dir (attachments and CNI mappings).
    fn records(&self) -> Vec<String> {
        let mut v = Vec::new();
        for sub in ["attachments", "cni"] {
            let out = Command::new("find")
                .arg(self.state().join(sub))
                .args(["-name", "*.json"])
                .output()
                .unwrap();
            v.extend(stdout(&out).lines().map(str::to_string));
        }
        v
    }

    /// Run plugin `kind` from CNI_PATH in the host namespace, as a runtime does.
    #[allow(clippy::too_many_arguments)]
    fn exec(
        &self,
        kind: &str,
        cmd: &str,
        conf: &Value,
        cid: &str,
        netns: &str,
        ifname: &str,
        extra: &[(&str, &str)],
    ) -> Reply {
        let bin = self
            .cni_path()
            .split(':')
            .map(|d| PathBuf::from(d).join(kind))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("plugin {kind} not in {}", self.cni_path()));
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.host.path()))
            .arg(&bin)
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", self.cni_path())
            .env("PIPE_STATE_DIR", self.state());
        for (k, v) in extra {
            c.env(k, v);
        }
        Reply::of(c, conf)
    }

    fn pipe(&self, cmd: &str, conf: &Value, cid: &str, netns: &str, ifname: &str) -> Reply {
        self.exec("pipe", cmd, conf, cid, netns, ifname, &[])
    }

    /// The config of plugin `i` of a conflist, as libcni derives it.
    fn derive(list: &Value, i: usize, prev: Option<&Value>) -> Value {
        let mut c = list["plugins"][i].clone();
        c["cniVersion"] = list["cniVersion"].clone();
        c["name"] = list["name"].clone();
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    /// ADD a conflist: each plugin in order, each result the next one's prevResult.
    fn list_add(&self, list: &Value, cid: &str, netns: &str, ifname: &str) -> Value {
        let mut prev: Option<Value> = None;
        for i in 0..list["plugins"].as_array().unwrap().len() {
            let kind = list["plugins"][i]["type"].as_str().unwrap();
            let r = self.exec(
                kind,
                "ADD",
                &Self::derive(list, i, prev.as_ref()),
                cid,
                netns,
                ifname,
                &[],
            );
            prev = Some(r.ok().clone());
        }
        prev.unwrap()
    }

    /// DEL (reverse order) or CHECK (in order) a conflist with the ADD's result.
    fn list_run(
        &self,
        cmd: &str,
        list: &Value,
        prev: &Value,
        cid: &str,
        netns: &str,
        ifname: &str,
    ) -> Vec<Reply> {
        let n = list["plugins"].as_array().unwrap().len();
        let order: Vec<usize> = if cmd == "DEL" {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        };
        order
            .into_iter()
            .map(|i| {
                let kind = list["plugins"][i]["type"].as_str().unwrap();
                let c = Self::derive(list, i, Some(prev));
                self.exec(kind, cmd, &c, cid, netns, ifname, &[])
            })
            .collect()
    }

    /// A pipe-on-a-bridge config with host-local addresses.
    fn bridge_conf(&self, net: &str, bridge: &str, subnet: &str) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": net, "type": "pipe", "host": bridge,
            "ipam": {
                "type": "host-local", "dataDir": self.ipam_dir(),
                "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}]
            }
        })
    }

    fn host_links(&self) -> Vec<String> {
        self.host
            .links()
            .into_iter()
            .filter(|l| l != "lo")
            .collect()
    }
}

impl Drop for Cni {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn addrs(ns: &Ns, ifname: &str) -> Vec<String> {
    let j = ns.ipj(&["addr", "show", "dev", ifname]);
    j[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

#[test]
fn add_check_del_with_host_local() {
    let cni = Cni::new();
    let c = Ns::new("cnc");
    let br = unique("brc");
    let conf = cni.bridge_conf("n1", &br, "10.81.0.0/24");
    let r = cni.pipe("ADD", &conf, "c1", &c.path(), "eth0");
    let res = r.ok().clone();
    // The result: the host end of the veth, then the container's interface.
    assert_eq!(res["cniVersion"], "1.0.0");
    let ifs = res["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 2, "{res}");
    assert_eq!(ifs[1]["name"], "eth0");
    assert_eq!(ifs[1]["sandbox"], c.path());
    assert_eq!(res["ips"][0]["address"], "10.81.0.2/24");
    assert_eq!(res["ips"][0]["gateway"], "10.81.0.1");
    assert_eq!(res["ips"][0]["interface"], 1);
    assert!(
        res["ips"][0].get("version").is_none(),
        "1.0.0 has no version"
    );
    assert_eq!(addrs(&c, "eth0"), ["10.81.0.2/24"]);
    let mac = c.ipj(&["link", "show", "eth0"])[0]["address"].clone();
    assert_eq!(ifs[1]["mac"], mac);
    assert!(c.ip(&["route"]).contains("default via 10.81.0.1 dev eth0"));
    let hv = ifs[0]["name"].as_str().unwrap();
    let master = cni.host.ipj(&["link", "show", hv])[0]["master"].clone();
    assert_eq!(master, br.as_str());
    assert_eq!(cni.held("n1"), ["10.81.0.2"]);

    // ADD again on the same interface: the spec says it fails.
    cni.pipe("ADD", &conf, "c1", &c.path(), "eth0")
        .error(101, "already exists");

    // CHECK with prevResult passes; after tampering it fails.
    let mut chk = conf.clone();
    chk["prevResult"] = res.clone();
    assert_eq!(
        cni.pipe("CHECK", &chk, "c1", &c.path(), "eth0").ok(),
        &Value::Null
    );
    c.ip(&["route", "del", "default"]);
    cni.pipe("CHECK", &chk, "c1", &c.path(), "eth0")
        .error(102, "default route");
    c.ip(&["route", "add", "default", "via", "10.81.0.1"]);
    cni.pipe("CHECK", &chk, "c1", &c.path(), "eth0").ok();
    c.ip(&["addr", "flush", "dev", "eth0", "scope", "global"]);
    cni.pipe("CHECK", &chk, "c1", &c.path(), "eth0")
        .error(102, "lacks address 10.81.0.2/24");
    // CHECK without prevResult is an invalid config.
    cni.pipe("CHECK", &conf, "c1", &c.path(), "eth0")
        .error(7, "prevResult");

    // DEL, twice, without prevResult: everything goes, the address is released.
    cni.pipe("DEL", &conf, "c1", &c.path(), "eth0").ok();
    assert_eq!(c.links(), ["lo"]);
    assert!(cni.host_links().is_empty(), "{:?}", cni.host_links());
    assert!(cni.held("n1").is_empty());
    assert!(cni.records().is_empty(), "{:?}", cni.records());
    cni.pipe("DEL", &conf, "c1", &c.path(), "eth0").ok();
    cni.pipe("DEL", &conf, "c1", "", "eth0").ok();
}

#[test]
fn del_after_the_namespace_is_gone_and_without_cni_netns() {
    let cni = Cni::new();
    let br = unique("brc");
    let conf = cni.bridge_conf("n2", &br, "10.82.0.0/24");
    // Gone: the namespace is deleted before DEL (CNI_NETNS still names it).
    let c = Ns::new("cnc");
    cni.pipe("ADD", &conf, "c1", &c.path(), "eth0").ok();
    let path = c.path();
    drop(c);
    cni.pipe("DEL", &conf, "c1", &path, "eth0").ok();
    assert!(cni.host_links().is_empty(), "{:?}", cni.host_links());
    assert!(cni.held("n2").is_empty());
    // Empty CNI_NETNS while the namespace lives (containerd's ctr does that):
    // pipe finds it from its own record.
    let c = Ns::new("cnc");
    cni.pipe("ADD", &conf, "c2", &c.path(), "eth0").ok();
    cni.pipe("DEL", &conf, "c2", "", "eth0").ok();
    assert_eq!(c.links(), ["lo"]);
    assert!(cni.host_links().is_empty(), "{:?}", cni.host_links());
    assert!(cni.held("n2").is_empty());
    assert!(cni.records().is_empty(), "{:?}", cni.records());
    cni.pipe("DEL", &conf, "c2", "", "eth0").ok();
}

#[test]
fn result_versions_follow_the_config() {
    let cni = Cni::new();
    let br = unique("brc");
    for (i, ver) in ["0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let c = Ns::new("cnc");
        let mut conf = cni.bridge_conf("n3", &br, "10.83.0.0/24");
        conf["cniVersion"] = json!(ver);
        let cid = format!("c{i}");
        let res = cni.pipe("ADD", &conf, &cid, &c.path(), "eth0").ok().clone();
        assert_eq!(res["cniVersion"], *ver);
        // 0.x results say the IP version; 1.x ones do not.
        assert_eq!(
            res["ips"][0].get("version").cloned(),
            ver.starts_with("0.").then(|| json!("4")),
            "{res}"
        );
        cni.pipe("DEL", &conf, &cid, &c.path(), "eth0").ok();
    }
    let mut conf = cni.bridge_conf("n3", &br, "10.83.0.0/24");
    conf["cniVersion"] = json!("9.9.9");
    let c = Ns::new("cnc");
    cni.pipe("ADD", &conf, "c9", &c.path(), "eth0")
        .error(1, "not supported");
    let v = cni.pipe("VERSION", &json!({"cniVersion": "1.1.0"}), "", "", "");
    assert_eq!(
        v.ok()["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn gc_removes_what_is_not_valid() {
    let cni = Cni::new();
    let br = unique("brc");
    let mut conf = cni.bridge_conf("n4", &br, "10.84.0.0/24");
    conf["cniVersion"] = json!("1.1.0");
    let cs: Vec<Ns> = (0..3).map(|_| Ns::new("cnc")).collect();
    for (i, c) in cs.iter().enumerate() {
        cni.pipe("ADD", &conf, &format!("c{i}"), &c.path(), "eth0")
            .ok();
    }
    assert_eq!(cni.held("n4").len(), 3);
    // Another network's attachment is not this GC's business.
    let other = Ns::new("cnc");
    let oconf = cni.bridge_conf("n4other", &br, "10.84.1.0/24");
    cni.pipe("ADD", &oconf, "o1", &other.path(), "eth0").ok();

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c0", "ifname": "eth0"}]);
    cni.pipe("GC", &gc, "", "", "").ok();
    assert_eq!(cs[0].links(), ["eth0", "lo"]);
    assert_eq!(cs[1].links(), ["lo"]);
    assert_eq!(cs[2].links(), ["lo"]);
    assert_eq!(other.links(), ["eth0", "lo"]);
    assert_eq!(cni.held("n4").len(), 1);
    assert_eq!(cni.held("n4other").len(), 1);
    // GC without the list is an invalid config.
    cni.pipe("GC", &conf, "", "", "")
        .error(7, "valid-attachments");
    cni.pipe("DEL", &conf, "c0", &cs[0].path(), "eth0").ok();
    cni.pipe("DEL", &oconf, "o1", &other.path(), "eth0").ok();
    assert!(cni.records().is_empty(), "{:?}", cni.records());
}

#[test]
fn status_says_whether_add_can_work() {
    let cni = Cni::new();
    let conf = |host: &str, ipam: &str| {
        json!({"cniVersion": "1.1.0", "name": "n5", "type": "pipe", "host": host,
               "ipam": {"type": ipam, "dataDir": cni.ipam_dir(), "ranges": [[{"subnet": "10.85.0.0/24"}]]}})
    };
    // A br* bridge is created on demand; a missing parent is not.
    cni.pipe("STATUS", &conf("brnew0", "host-local"), "", "", "")
        .ok();
    cni.pipe("STATUS", &conf("nosuch0", "host-local"), "", "", "")
        .error(50, "nosuch0 does not exist");
    cni.host
        .ip(&["link", "add", "up0", "type", "veth", "peer", "up1"]);
    cni.pipe("STATUS", &conf("up0", "host-local"), "", "", "")
        .ok();
    cni.pipe("STATUS", &conf("up0", "no-such-ipam"), "", "", "")
        .error(50, "no-such-ipam");
}

#[test]
fn each_error_code() {
    let cni = Cni::new();
    let c = Ns::new("cnc");
    let br = unique("brc");
    let conf = cni.bridge_conf("n6", &br, "10.86.0.0/24");
    let p = c.path();
    // 4: the environment.
    cni.exec("pipe", "ADD", &conf, "", &p, "eth0", &[])
        .error(4, "CNI_CONTAINERID");
    cni.pipe("ADD", &conf, "c1", "", "eth0")
        .error(4, "CNI_NETNS");
    cni.pipe("ADD", &conf, "c1", &p, "").error(4, "CNI_IFNAME");
    cni.pipe("ADD", &conf, "c1", &p, "a/b")
        .error(4, "CNI_IFNAME");
    cni.pipe("ADD", &conf, "c1", "/nonexistent/ns", "eth0")
        .error(4, "CNI_NETNS");
    cni.pipe("ADD", &conf, "c1", &cni.host.path(), "eth0")
        .error(4, "shares pipe's own network namespace");
    cni.pipe("FROB", &conf, "c1", &p, "eth0").error(4, "FROB");
    // 6: undecodable stdin (and a wrong type is a decode error too).
    let mut bad = conf.clone();
    bad["mtu"] = json!("big");
    cni.pipe("ADD", &bad, "c1", &p, "eth0").error(6, "decode");
    // 7: invalid fields.
    for (k, v, needle) in [
        ("vlan", json!(5000), "vlan"),
        ("mtu", json!(20), "mtu"),
        ("mac", json!("01:00:5e:00:00:01"), "multicast"),
        ("ipvlan", json!("l9"), "ipvlan"),
        ("addresses", json!("10.0.0.1/24"), "not both"),
    ] {
        let mut b = conf.clone();
        b[k] = v;
        cni.pipe("ADD", &b, "c1", &p, "eth0").error(7, needle);
    }
    let mut b = conf.clone();
    b.as_object_mut().unwrap().remove("host");
    cni.pipe("ADD", &b, "c1", &p, "eth0")
        .error(7, "host interface");
    // ipvlan on a bridge is pipe's own usage error: an invalid config too.
    let mut b = conf.clone();
    b["ipvlan"] = json!("l2");
    cni.pipe("ADD", &b, "c1", &p, "eth0").error(7, "ipvlan");
    // 11: another pipe holds the network's lock.
    let lockdir = cni.state().join("cni/n6");
    std::fs::create_dir_all(&lockdir).unwrap();
    // One process that holds the lock and dies with it (flock(1) would leave
    // its child holding it).
    let mut holder = Command::new("sh")
        .args(["-c", "exec 9>\"$0\" && flock 9 && exec sleep 30"])
        .arg(lockdir.join(".lock"))
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    cni.exec(
        "pipe",
        "ADD",
        &conf,
        "c1",
        &p,
        "eth0",
        &[("PIPE_CNI_LOCK_WAIT", "0.3")],
    )
    .error(11, "try again");
    holder.kill().unwrap();
    holder.wait().unwrap();
    // 100: the attach fails (a parent that does not exist).
    let mut b = conf.clone();
    b["host"] = json!("nosuch0");
    cni.pipe("ADD", &b, "c1", &p, "eth0").error(100, "nosuch0");
    // 101: CNI_IFNAME exists.
    c.ip(&["link", "add", "eth0", "type", "veth", "peer", "x0"]);
    cni.pipe("ADD", &conf, "c1", &p, "eth0")
        .error(101, "already exists");
    // 103: the IPAM plugin is not in CNI_PATH.
    let mut b = conf.clone();
    b["ipam"]["type"] = json!("no-such-ipam");
    cni.pipe("ADD", &b, "c1", &p, "eth1")
        .error(103, "no-such-ipam");
    // An IPAM plugin's own error passes through with its code (host-local: 7 for a bad range).
    let mut b = conf.clone();
    b["ipam"]["ranges"] = json!([[{"subnet": "nonsense"}]]);
    let r = cni.pipe("ADD", &b, "c1", &p, "eth1");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.out["msg"]
            .as_str()
            .unwrap()
            .contains("IPAM plugin host-local"),
        "{r:?}"
    );
    // None of it left anything behind.
    assert!(cni.host_links().is_empty(), "{:?}", cni.host_links());
    assert!(cni.held("n6").is_empty(), "{:?}", cni.held("n6"));
    assert!(cni.records().is_empty(), "{:?}", cni.records());
}

#[test]
fn failing_add_leaves_nothing_and_releases_its_address() {
    let cni = Cni::new();
    let c = Ns::new("cnc");
    let br = unique("brc");
    let conf = cni.bridge_conf("n7", &br, "10.87.0.0/24");
    // Fail after each step of the attach in turn: every failure rolls back.
    for n in 1..5 {
        let r = cni.exec(
            "pipe",
            "ADD",
            &conf,
            "c1",
            &c.path(),
            "eth0",
            &[("PIPE_FAIL_AFTER", &n.to_string())],
        );
        r.error(100, "failure injected");
        assert_eq!(c.links(), ["lo"], "after step {n}");
        assert!(
            cni.host_links().is_empty(),
            "after step {n}: {:?}",
            cni.host_links()
        );
        assert!(
            cni.held("n7").is_empty(),
            "after step {n}: {:?}",
            cni.held("n7")
        );
        assert!(cni.records().is_empty(), "{:?}", cni.records());
    }
    cni.pipe("ADD", &conf, "c1", &c.path(), "eth0").ok();
    cni.pipe("DEL", &conf, "c1", &c.path(), "eth0").ok();
}

#[test]
fn macvlan_with_static_ipam() {
    require(&[&format!("{REF}/static")]);
    let cni = Cni::new();
    let c = Ns::new("cnc");
    // The parent: one end of a veth whose other end is a peer namespace.
    let peer = Ns::new("cnp");
    cni.host
        .ip(&["link", "add", "up0", "type", "veth", "peer", "up1"]);
    cni.host.ip(&["link", "set", "up1", "netns", &peer.name]);
    cni.host.ip(&["link", "set", "up0", "up"]);
    peer.ip(&["addr", "add", "10.88.0.1/24", "dev", "up1"]);
    peer.ip(&["link", "set", "up1", "up"]);
    let list = json!({
        "cniVersion": "1.0.0", "name": "n8",
        "plugins": [{
            "type": "pipe", "master": "up0", "macvlanMode": "bridge",
            "ipam": {"type": "static",
                     "addresses": [{"address": "10.88.0.5/24", "gateway": "10.88.0.1"}],
                     "routes": [{"dst": "0.0.0.0/0"}]}
        }]
    });
    let res = cni.list_add(&list, "c1", &c.path(), "eth0");
    assert_eq!(res["interfaces"].as_array().unwrap().len(), 1, "{res}");
    let l = c.ipj(&["-d", "link", "show", "eth0"]);
    assert_eq!(l[0]["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(addrs(&c, "eth0"), ["10.88.0.5/24"]);
    assert!(c.ip(&["route"]).contains("default via 10.88.0.1 dev eth0"));
    let ping = c.exec(&["busybox", "ping", "-c1", "-W2", "10.88.0.1"]);
    assert!(ping.status.success(), "{}{}", stdout(&ping), stderr(&ping));
    for r in cni.list_run("CHECK", &list, &res, "c1", &c.path(), "eth0") {
        r.ok();
    }
    for r in cni.list_run("DEL", &list, &res, "c1", &c.path(), "eth0") {
        r.ok();
    }
    assert_eq!(c.links(), ["lo"]);
    assert_eq!(cni.host_links(), ["up0"]);
}

#[test]
fn chained_after_bridge_and_before_tuning() {
    require(&[&format!("{REF}/tuning")]);
    let cni = Cni::new();
    let c = Ns::new("cnc");
    let (b1, b2) = (unique("brr"), unique("brp"));
    // The reference bridge makes eth0; pipe adds net1 on another bridge and
    // passes both on; tuning then changes eth0 and passes the result on.
    let list = json!({
        "cniVersion": "1.0.0", "name": "n9",
        "plugins": [
            {"type": "bridge", "bridge": b1, "ipam": {"type": "host-local", "dataDir": cni.ipam_dir(),
                "ranges": [[{"subnet": "10.89.0.0/24"}]]}},
            {"type": "pipe", "host": b2, "ifname": "net1", "rate": "10mbit",
             "addresses": ["10.89.1.5/24"]},
            {"type": "tuning", "mtu": 1400}
        ]
    });
    let res = cni.list_add(&list, "c1", &c.path(), "eth0");
    let names: Vec<&str> = res["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 5, "{res}");
    assert_eq!(names[0], b1);
    assert_eq!(names[2], "eth0");
    assert_eq!(names[4], "net1");
    let ips = res["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{res}");
    assert_eq!(ips[0]["interface"], 2);
    assert_eq!(ips[1]["address"], "10.89.1.5/24");
    assert_eq!(ips[1]["interface"], 4);
    assert_eq!(addrs(&c, "net1"), ["10.89.1.5/24"]);
    assert!(c.ip(&["link", "show", "eth0"]).contains("mtu 1400"));
    assert!(stdout(&c.exec(&["tc", "qdisc", "show", "dev", "net1"])).contains("tbf"));
    // CHECK by pipe (the reference bridge's and tuning's CHECK in 1.1.1 expect
    // every IP of the result on CNI_IFNAME, so a second interface fails them).
    let checks = cni.list_run("CHECK", &list, &res, "c1", &c.path(), "eth0");
    checks[1].ok();
    for r in cni.list_run("DEL", &list, &res, "c1", &c.path(), "eth0") {
        r.ok();
    }
    assert_eq!(c.links(), ["lo"]);
    assert!(!cni.host_links().contains(&b2), "{:?}", cni.host_links());
}

#[test]
fn runtime_capabilities_and_cni_args() {
    let cni = Cni::new();
    let c = Ns::new("cnc");
    let br = unique("brc");
    // Without IPAM: runtimeConfig ips/mac replace the config's.
    let conf = json!({"cniVersion": "1.0.0", "name": "n10", "type": "pipe", "host": br,
        "addresses": "10.90.0.2/24@10.90.0.1",
        "runtimeConfig": {"ips": ["10.90.0.9/24"], "mac": "02:00:00:00:90:09"}});
    let res = cni.pipe("ADD", &conf, "c1", &c.path(), "eth0").ok().clone();
    assert_eq!(res["ips"][0]["address"], "10.90.0.9/24");
    assert_eq!(res["interfaces"][1]["mac"], "02:00:00:00:90:09");
    assert_eq!(addrs(&c, "eth0"), ["10.90.0.9/24"]);
    cni.pipe("DEL", &conf, "c1", &c.path(), "eth0").ok();
    // With host-local: CNI_ARGS IP= (what Podman sends for --ip) goes to IPAM,
    // MAC= to pipe.
    let conf = cni.bridge_conf("n10", &br, "10.90.1.0/24");
    let r = cni.exec(
        "pipe",
        "ADD",
        &conf,
        "c2",
        &c.path(),
        "eth0",
        &[(
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAME=x;MAC=02:00:00:00:90:50;IP=10.90.1.50",
        )],
    );
    let res = r.ok();
    assert_eq!(res["ips"][0]["address"], "10.90.1.50/24");
    assert_eq!(res["interfaces"][1]["mac"], "02:00:00:00:90:50");
    cni.pipe("DEL", &conf, "c2", &c.path(), "eth0").ok();
    assert!(cni.held("n10").is_empty());
}

// host-local in process: pipe answers host-local requests itself, sharing the
// reference plugin's store. These tests hold it to the reference 1.1.1 in
// /usr/lib/cni: the same files, the same answers, one data directory for both.

impl Cni {
    /// The reference host-local itself (not through CNI_PATH): IPAM only.
    fn host_local(&self, cmd: &str, conf: &Value, cid: &str, ifname: &str, args: &str) -> Reply {
        let mut c = Command::new(format!("{REF}/host-local"));
        c.env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", "/var/run/netns/unused")
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", args)
            .env("CNI_PATH", REF);
        Reply::of(c, conf)
    }

    /// A `host-local` first in CNI_PATH that logs each call and runs the
    /// reference one: what pipe exec'd.
    fn spy_host_local(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let log = self.dir.join("spy.log");
        let bin = self.dir.join("bin/host-local");
        std::fs::write(
            &bin,
            format!(
                "#!/bin/sh\necho \"$CNI_COMMAND $CNI_CONTAINERID\" >>{}\nexec {REF}/host-local\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        log
    }
}

fn spied(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A host-local store: the directory's mode, then each entry's name, mode
/// and content, sorted by name.
fn store(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode();
    let mut v = vec![(".".to_string(), mode(dir), Vec::new())];
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let content = if p.is_dir() {
            Vec::new()
        } else {
            std::fs::read(&p).unwrap()
        };
        v.push((n, mode(&p), content));
    }
    v
}

/// The IPAM part of a result: ips (without pipe's interface index), routes, dns.
fn ipam_part(r: &Value) -> Value {
    let mut ips = r["ips"].clone();
    for ip in ips.as_array_mut().unwrap() {
        ip.as_object_mut().unwrap().remove("interface");
    }
    json!({"ips": ips, "routes": r["routes"], "dns": r["dns"]})
}

fn held_ips(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The same requests to pipe (one data directory) and to the reference
/// plugin (another): the same answers, errors, and files byte for byte
/// (names, contents, modes, the lock and last_reserved_ip files), through
/// requested addresses, wrap-around, a full range and a release; and pipe
/// never ran the plugin.
#[test]
fn host_local_in_process_matches_the_reference_byte_for_byte() {
    let cni = Cni::new();
    let spy = cni.spy_host_local();
    // One container per attachment: each gets the same routes.
    let cs: Vec<Ns> = (0..7).map(|_| Ns::new("cnc")).collect();
    let br = unique("brc");
    let resolv = cni.dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "# test\nnameserver 10.93.0.53\nsearch a.example b.example\noptions ndots:2\ndomain a.example\n",
    )
    .unwrap();
    let (a, b) = (cni.dir.join("ipam-pipe"), cni.dir.join("ipam-ref"));
    let conf = |data: &Path| {
        json!({"cniVersion": "1.0.0", "name": "n13", "type": "pipe", "host": br,
            "ipam": {"type": "host-local", "dataDir": data,
                "ranges": [[{"subnet": "10.93.0.0/24", "rangeStart": "10.93.0.10", "rangeEnd": "10.93.0.12"}],
                           [{"subnet": "fd93::/120"}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.200.0.0/16", "gw": "10.93.0.1"}],
                "resolvConf": resolv}})
    };
    let (pa, pb) = (conf(&a), conf(&b));
    // (container ID, CNI_ARGS, what the reference answers)
    let steps = [
        ("c1", "", Some(["10.93.0.10/24", "fd93::2/120"])),
        (
            "c2",
            "IP=10.93.0.12",
            Some(["10.93.0.12/24", "fd93::3/120"]),
        ),
        // After the last reserved .12 the walk wraps to .10 (taken) and .11.
        (
            "c3",
            "IgnoreUnknown=1;K8S_POD_NAME=x;IP=fd93::50",
            Some(["10.93.0.11/24", "fd93::50/120"]),
        ),
        ("c4", "", None),
    ];
    for (i, (cid, args, want)) in steps.iter().enumerate() {
        let (c, ifname) = (&cs[i], format!("net{i}"));
        let mine = cni.exec(
            "pipe",
            "ADD",
            &pa,
            cid,
            &c.path(),
            &ifname,
            &[("CNI_ARGS", args)],
        );
        let theirs = cni.host_local("ADD", &pb, cid, &ifname, args);
        match want {
            Some(w) => {
                let t = theirs.ok();
                assert_eq!(ipam_part(mine.ok()), ipam_part(t), "{cid}");
                let got: Vec<&str> = t["ips"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["address"].as_str().unwrap())
                    .collect();
                assert_eq!(&got, w, "{cid}");
                assert_eq!(t["dns"]["nameservers"], json!(["10.93.0.53"]));
            }
            None => {
                // The range is full: the plugin's own error, code and message.
                assert_eq!(theirs.code, 1);
                assert_eq!(theirs.out["code"], 999);
                let msg = theirs.out["msg"].as_str().unwrap();
                assert!(
                    msg.contains("no IP addresses available in range set: 10.93.0.10-10.93.0.12")
                );
                mine.error(999, &format!("IPAM plugin host-local (ADD): {msg}"));
                assert!(!c.links().contains(&ifname), "{:?}", c.links());
            }
        }
        assert_eq!(store(&a.join("n13")), store(&b.join("n13")), "after {cid}");
    }
    // A second ADD of the same attachment: the plugin's refusal, from both.
    let theirs = cni.host_local("ADD", &pb, "c1", "net0", "");
    let msg = theirs.out["msg"].as_str().unwrap();
    assert!(
        msg.contains("10.93.0.10 has been allocated to c1, duplicate allocation is not allowed"),
        "{msg}"
    );
    cni.exec("pipe", "ADD", &pa, "c1", &cs[5].path(), "net0", &[])
        .error(999, &format!("IPAM plugin host-local (ADD): {msg}"));
    assert_eq!(store(&a.join("n13")), store(&b.join("n13")));
    // DEL releases the same files; the next ADD continues from the same place.
    cni.pipe("DEL", &pa, "c2", &cs[1].path(), "net1").ok();
    cni.host_local("DEL", &pb, "c2", "net1", "").ok();
    assert_eq!(store(&a.join("n13")), store(&b.join("n13")));
    let mine = cni.pipe("ADD", &pa, "c5", &cs[6].path(), "net5");
    let theirs = cni.host_local("ADD", &pb, "c5", "net5", "");
    assert_eq!(ipam_part(mine.ok()), ipam_part(theirs.ok()));
    assert_eq!(theirs.out["ips"][0]["address"], "10.93.0.12/24");
    assert_eq!(store(&a.join("n13")), store(&b.join("n13")));
    // The data directory itself as the plugin makes it.
    assert_eq!(store(&a)[0].1, store(&b)[0].1);
    assert!(
        spied(&spy).is_empty(),
        "pipe ran the plugin: {:?}",
        spied(&spy)
    );
    for (i, cid, ifname) in [(0, "c1", "net0"), (2, "c3", "net2"), (6, "c5", "net5")] {
        cni.pipe("DEL", &pa, cid, &cs[i].path(), ifname).ok();
    }
    assert!(held_ips(&a.join("n13")).is_empty());
    for c in &cs {
        assert_eq!(c.links(), ["lo"]);
    }
}

/// pipe and the reference plugins on one data directory: addresses never
/// collide, either one refuses an attachment the other already served, and
/// either one releases what the other reserved (also the old one-line format).
#[test]
fn host_local_shared_with_the_reference_plugins() {
    let cni = Cni::new();
    let spy = cni.spy_host_local();
    let br = unique("brc");
    let c = Ns::new("cnc");
    // No routes: several interfaces share one container here.
    let mut conf = cni.bridge_conf("n14", &br, "10.94.0.0/24");
    conf["ipam"].as_object_mut().unwrap().remove("routes");
    let mut hl = conf.clone();
    hl.as_object_mut().unwrap().remove("type");
    let dir = cni.dir.join("ipam/n14");
    let addr = |r: &Reply| r.ok()["ips"][0]["address"].as_str().unwrap().to_string();
    assert_eq!(
        addr(&cni.pipe("ADD", &conf, "p1", &c.path(), "eth0")),
        "10.94.0.2/24"
    );
    assert_eq!(
        addr(&cni.host_local("ADD", &hl, "h1", "eth0", "")),
        "10.94.0.3/24"
    );
    assert_eq!(
        addr(&cni.pipe("ADD", &conf, "p2", &c.path(), "eth1")),
        "10.94.0.4/24"
    );
    // The reference bridge plugin (which runs host-local) on the same network.
    let b = Ns::new("cnc");
    let bridge = json!({"cniVersion": "1.0.0", "name": "n14", "type": "bridge",
        "bridge": unique("brr"), "ipam": conf["ipam"]});
    let rb = cni.exec("bridge", "ADD", &bridge, "b1", &b.path(), "eth0", &[]);
    assert_eq!(rb.ok()["ips"][0]["address"], "10.94.0.5/24");
    assert_eq!(
        addr(&cni.pipe("ADD", &conf, "p3", &c.path(), "eth2")),
        "10.94.0.6/24"
    );
    assert_eq!(
        held_ips(&dir),
        [
            "10.94.0.2",
            "10.94.0.3",
            "10.94.0.4",
            "10.94.0.5",
            "10.94.0.6"
        ]
    );
    // A second ADD of an attachment the other one served.
    let r = cni.host_local("ADD", &hl, "p2", "eth1", "");
    assert_eq!(r.out["code"], 999, "{r:?}");
    assert!(
        r.out["msg"]
            .as_str()
            .unwrap()
            .contains("10.94.0.4 has been allocated to p2")
    );
    let c2 = Ns::new("cnc");
    cni.pipe("ADD", &conf, "h1", &c2.path(), "eth0").error(
        999,
        "IPAM plugin host-local (ADD): failed to allocate for range 0: 10.94.0.3 has been allocated to h1, duplicate allocation is not allowed",
    );
    assert_eq!(c2.links(), ["lo"]);
    // The plugin releases pipe's address, pipe the plugin's.
    cni.host_local("DEL", &hl, "p1", "eth0", "").ok();
    cni.pipe("DEL", &conf, "h1", &c2.path(), "eth0").ok();
    assert_eq!(held_ips(&dir), ["10.94.0.4", "10.94.0.5", "10.94.0.6"]);
    // CHECK: pipe's own (which asks host-local) passes while the plugin holds
    // the address, fails once the plugin released it.
    let res = cni.pipe("DEL", &conf, "p1", &c.path(), "eth0");
    res.ok();
    let r3 = cni.pipe("ADD", &conf, "p4", &c.path(), "eth3");
    let mut chk = conf.clone();
    chk["prevResult"] = r3.ok().clone();
    cni.pipe("CHECK", &chk, "p4", &c.path(), "eth3").ok();
    cni.host_local("CHECK", &hl, "p4", "eth3", "").ok();
    cni.host_local("DEL", &hl, "p4", "eth3", "").ok();
    cni.pipe("CHECK", &chk, "p4", &c.path(), "eth3").error(
        999,
        "IPAM plugin host-local (CHECK): host-local: Failed to find address added by container p4",
    );
    // The one-line format of older host-local versions: released by ID alone.
    std::fs::write(dir.join("10.94.0.200"), "old1").unwrap();
    cni.pipe("DEL", &conf, "old1", "", "eth7").ok();
    assert!(!dir.join("10.94.0.200").exists());
    cni.exec("bridge", "DEL", &bridge, "b1", &b.path(), "eth0", &[])
        .ok();
    for (cid, ifname) in [("p2", "eth1"), ("p3", "eth2"), ("p4", "eth3")] {
        cni.pipe("DEL", &conf, cid, &c.path(), ifname).ok();
    }
    assert!(held_ips(&dir).is_empty(), "{:?}", held_ips(&dir));
    assert_eq!(c.links(), ["lo"]);
    // The bridge plugin ran host-local (through CNI_PATH); pipe never did.
    assert_eq!(spied(&spy), ["ADD b1", "DEL b1"]);
}

/// 40 ADDs at once on a range of 24 addresses, half by pipe, half by the
/// reference plugin, on one data directory: 24 distinct addresses, each file
/// naming the one attachment that got it, the other 16 told the range is full.
#[test]
fn host_local_parallel_adds_of_pipe_and_the_plugin_never_share_an_address() {
    let cni = Cni::new();
    let br = unique("brc");
    let c = Ns::new("cnc");
    let conf = json!({"cniVersion": "1.0.0", "name": "n15", "type": "pipe", "host": br,
        "ipam": {"type": "host-local", "dataDir": cni.ipam_dir(),
            "ranges": [[{"subnet": "10.95.0.0/24", "rangeStart": "10.95.0.10", "rangeEnd": "10.95.0.33"}]]}});
    let mut hl = conf.clone();
    hl.as_object_mut().unwrap().remove("type");
    // One bridge made before, so that the ADDs do not race to create it.
    cni.host.ip(&["link", "add", &br, "type", "bridge"]);
    let go = std::sync::Barrier::new(40);
    let replies: Vec<(String, String, Reply)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..40)
            .map(|i| {
                let (cni, c, conf, hl, go) = (&cni, &c, &conf, &hl, &go);
                s.spawn(move || {
                    go.wait();
                    if i % 2 == 0 {
                        let (cid, ifname) = (format!("p{i}"), format!("e{i}"));
                        let r = cni.exec(
                            "pipe",
                            "ADD",
                            conf,
                            &cid,
                            &c.path(),
                            &ifname,
                            &[("PIPE_CNI_LOCK_WAIT", "120")],
                        );
                        (cid, ifname, r)
                    } else {
                        let cid = format!("h{i}");
                        let r = cni.host_local("ADD", hl, &cid, "eth0", "");
                        (cid, "eth0".to_string(), r)
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let dir = cni.dir.join("ipam/n15");
    let mut got = Vec::new();
    let mut full = 0;
    for (cid, ifname, r) in &replies {
        if r.code == 0 {
            let a = r.out["ips"][0]["address"].as_str().unwrap();
            let ip = a.trim_end_matches("/24").to_string();
            // The file names exactly this attachment.
            assert_eq!(
                std::fs::read(dir.join(&ip)).unwrap(),
                format!("{cid}\r\n{ifname}").into_bytes(),
                "{ip}"
            );
            if cid.starts_with('p') {
                assert_eq!(addrs(&c, ifname), [a], "{cid}");
            }
            got.push(ip);
        } else {
            assert_eq!(r.out["code"], 999, "{cid}: {r:?}");
            let msg = r.out["msg"].as_str().unwrap();
            assert!(
                msg.contains("no IP addresses available in range set: 10.95.0.10-10.95.0.33"),
                "{cid}: {msg}"
            );
            full += 1;
        }
    }
    got.sort();
    let n = got.len();
    got.dedup();
    assert_eq!(got.len(), n, "an address was handed out twice: {got:?}");
    assert_eq!((n, full), (24, 16));
    assert_eq!(held_ips(&dir), got);
    // Failed ADDs of pipe left no interface.
    let pipes_ok = replies
        .iter()
        .filter(|(cid, _, r)| cid.starts_with('p') && r.code == 0)
        .count();
    assert_eq!(c.links().len(), 1 + pipes_ok, "{:?}", c.links());
    // pipe's DEL releases every one of them, its own and the plugin's.
    for (cid, ifname, _) in &replies {
        cni.pipe("DEL", &conf, cid, &c.path(), ifname).ok();
    }
    assert!(held_ips(&dir).is_empty(), "{:?}", held_ips(&dir));
    assert_eq!(c.links(), ["lo"]);
}

/// An ipam option pipe does not implement: the plugin itself runs (ADD, CHECK
/// and DEL), and the attachment works as before.
#[test]
fn host_local_options_pipe_does_not_read_go_to_the_plugin() {
    let cni = Cni::new();
    let spy = cni.spy_host_local();
    let br = unique("brc");
    let c = Ns::new("cnc");
    let mut conf = cni.bridge_conf("n16", &br, "10.96.0.0/24");
    conf["ipam"]["someFutureOption"] = json!(true);
    let res = cni.pipe("ADD", &conf, "f1", &c.path(), "eth0").ok().clone();
    assert_eq!(res["ips"][0]["address"], "10.96.0.2/24");
    assert_eq!(addrs(&c, "eth0"), ["10.96.0.2/24"]);
    let mut chk = conf.clone();
    chk["prevResult"] = res;
    cni.pipe("CHECK", &chk, "f1", &c.path(), "eth0").ok();
    cni.pipe("DEL", &conf, "f1", &c.path(), "eth0").ok();
    assert_eq!(spied(&spy), ["ADD f1", "CHECK f1", "DEL f1"]);
    assert!(cni.held("n16").is_empty());
    // CNI_ARGS the plugin refuses: its refusal, not pipe's guess.
    let conf = cni.bridge_conf("n16", &br, "10.96.0.0/24");
    cni.exec(
        "pipe",
        "ADD",
        &conf,
        "f2",
        &c.path(),
        "eth0",
        &[("CNI_ARGS", "K8S_POD_NAME=x")],
    )
    .error(999, "ARGS: unknown args");
    assert_eq!(spied(&spy).len(), 4);
    // Without the option: in process, the plugin not run.
    cni.pipe("ADD", &conf, "f3", &c.path(), "eth0").ok();
    cni.pipe("DEL", &conf, "f3", &c.path(), "eth0").ok();
    assert_eq!(spied(&spy).len(), 4);
    assert_eq!(c.links(), ["lo"]);
}

/// The `config: |` block of a NetworkAttachmentDefinition in contrib/cni/
/// (compiled in: the VM tier carries binaries, not the source tree).
fn nad_config(file: &str) -> Value {
    let text = match file {
        "multus-bridge.yaml" => include_str!("../contrib/cni/multus-bridge.yaml"),
        "multus-vlan.yaml" => include_str!("../contrib/cni/multus-vlan.yaml"),
        _ => panic!("no example {file}"),
    };
    let mut lines = text.lines().skip_while(|l| l.trim() != "config: |").skip(1);
    let mut body = String::new();
    for l in lines.by_ref() {
        if !l.starts_with("    ") && !l.trim().is_empty() {
            break;
        }
        body.push_str(l);
        body.push('\n');
    }
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{file}: {e}\n{body}"))
}

#[test]
fn multus_examples_run_through_add_and_del() {
    let cni = Cni::new();
    let c = Ns::new("cnc");
    // The bridge example as Multus would run it for a pod's net1, with the
    // node's names swapped for this test's own.
    let mut list = nad_config("multus-bridge.yaml");
    assert_eq!(list["plugins"][0]["type"], "pipe");
    let br = unique("brm");
    list["plugins"][0]["host"] = json!(br);
    list["plugins"][0]["ipam"]["dataDir"] = json!(cni.ipam_dir());
    let res = cni.list_add(&list, "pod1", &c.path(), "net1");
    assert_eq!(res["ips"][0]["address"], "10.77.0.2/24");
    assert!(
        c.ip(&["route"])
            .contains("10.77.0.0/16 via 10.77.0.1 dev net1")
    );
    assert!(stdout(&c.exec(&["tc", "qdisc", "show", "dev", "net1"])).contains("tbf"));
    for r in cni.list_run("CHECK", &list, &res, "pod1", &c.path(), "net1") {
        r.ok();
    }
    for r in cni.list_run("DEL", &list, &res, "pod1", &c.path(), "net1") {
        r.ok();
    }
    assert_eq!(c.links(), ["lo"]);
    assert!(cni.host_links().is_empty(), "{:?}", cni.host_links());

    // The VLAN example: this kernel has no 802.1Q, so ADD must fail cleanly
    // (nothing left, the address released); DEL then succeeds as after any
    // failed ADD. Where the kernel has 802.1Q the ADD succeeds (VM tier).
    let mut list = nad_config("multus-vlan.yaml");
    assert_eq!(list["plugins"][0]["vlan"], 100);
    cni.host
        .ip(&["link", "add", "eth1", "type", "veth", "peer", "eth1p"]);
    list["plugins"][0]["ipam"]["dataDir"] = json!(cni.ipam_dir());
    let conf = Cni::derive(&list, 0, None);
    let r = cni.pipe("ADD", &conf, "pod1", &c.path(), "net1");
    if r.code == 0 {
        assert_eq!(
            c.ipj(&["-d", "link", "show", "net1"])[0]["linkinfo"]["info_kind"],
            "macvlan"
        );
    } else {
        assert_eq!(r.out["code"], 100, "{r:?}");
        assert_eq!(c.links(), ["lo"]);
        assert_eq!(cni.host_links(), ["eth1", "eth1p"]);
        assert!(cni.held("pipe-vlan100").is_empty());
    }
    cni.pipe("DEL", &conf, "pod1", &c.path(), "net1").ok();
    assert_eq!(cni.host_links(), ["eth1", "eth1p"]);
    assert!(cni.held("pipe-vlan100").is_empty());
}

// ---- real clients -------------------------------------------------------

/// A busybox root filesystem for containers (no registry here).
fn rootfs(dir: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    for a in ["sh", "ip", "sleep", "cat", "ping"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
    }
    for f in ["resolv.conf", "hosts", "hostname"] {
        std::fs::write(r.join("etc").join(f), "").unwrap();
    }
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
    r
}

/// Podman 4.3, daemonless, private storage and CNI dirs, run inside the host namespace.
struct Podman<'a> {
    cni: &'a Cni,
}

impl Podman<'_> {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        let d = &self.cni.dir;
        run(Command::new("nsenter")
            .arg(format!("--net={}", self.cni.host.path()))
            .arg("podman")
            .arg("--root")
            .arg(d.join("pm/root"))
            .arg("--runroot")
            .arg(d.join("pm/run"))
            .arg("--tmpdir")
            .arg(d.join("pm/tmp"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf")))
    }

    fn must(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "podman {args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-f", "-a", "-t", "0"]);
    }
}

#[test]
fn podman_cni_backend() {
    require(&["podman", "/bin/busybox"]);
    let cni = Cni::new();
    let d = &cni.dir;
    let netd = d.join("net.d");
    std::fs::create_dir_all(&netd).unwrap();
    for s in ["pm/root", "pm/run", "pm/tmp"] {
        std::fs::create_dir_all(d.join(s)).unwrap();
    }
    std::fs::write(
        d.join("containers.conf"),
        format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\nlog_driver = \"k8s-file\"\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"{REF}\"]\n\
             network_config_dir = \"{}\"\ndefault_network = \"pipenet\"\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\ntmp_dir = \"{}\"\n",
            d.join("bin").display(),
            netd.display(),
            d.join("pm/tmp").display()
        ),
    )
    .unwrap();
    let (br, br2) = (unique("brp"), unique("brq"));
    let pipenet = |name: &str, bridge: &str, subnet: &str| {
        json!({"cniVersion": "1.0.0", "name": name, "plugins": [{
            "type": "pipe", "host": bridge, "capabilities": {"ips": true, "mac": true},
            "stateDir": cni.state(),
            "ipam": {"type": "host-local", "dataDir": cni.ipam_dir(),
                     "ranges": [[{"subnet": subnet, "gateway": subnet.replace(".0/24", ".1")}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}}]})
    };
    let write = |f: &str, v: &Value| std::fs::write(netd.join(f), v.to_string()).unwrap();
    write(
        "10-pipenet.conflist",
        &pipenet("pipenet", &br, "10.91.0.0/24"),
    );
    write(
        "20-pipenet2.conflist",
        &pipenet("pipenet2", &br2, "10.91.1.0/24"),
    );
    cni.host
        .ip(&["link", "add", "up0", "type", "veth", "peer", "up1"]);
    cni.host.ip(&["link", "set", "up0", "up"]);
    write(
        "30-pipemv.conflist",
        &json!({"cniVersion": "0.4.0", "name": "pipemv", "plugins": [{
            "type": "pipe", "master": "up0", "stateDir": cni.state(),
            "ipam": {"type": "static", "addresses": [{"address": "10.91.2.5/24"}]}}]}),
    );
    write(
        "40-pipefail.conflist",
        &json!({"cniVersion": "1.0.0", "name": "pipefail", "plugins": [{
            "type": "pipe", "host": "nosuch0", "stateDir": cni.state(),
            "ipam": {"type": "host-local", "dataDir": cni.ipam_dir(),
                     "ranges": [[{"subnet": "10.91.3.0/24"}]]}}]}),
    );
    let pm = Podman { cni: &cni };
    let info = pm.must(&["info", "--format", "{{.Host.NetworkBackend}}"]);
    assert_eq!(info.trim(), "cni");
    let rf = rootfs(d);
    let tar = d.join("rootfs.tar");
    must(
        Command::new("tar")
            .arg("-C")
            .arg(&rf)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    pm.must(&[
        "import",
        tar.to_str().unwrap(),
        "localhost/pipebusybox:latest",
    ]);
    let img = "localhost/pipebusybox:latest";
    let cname = unique("pc");

    // run: eth0 from pipe on the bridge, the address from host-local.
    pm.must(&[
        "run",
        "-d",
        "--name",
        &cname,
        "--network",
        "pipenet",
        img,
        "sleep",
        "300",
    ]);
    let ip = pm.must(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.pipenet.IPAddress}}",
        &cname,
    ]);
    assert_eq!(ip.trim(), "10.91.0.2");
    let a = pm.must(&["exec", &cname, "ip", "addr", "show", "eth0"]);
    assert!(a.contains("inet 10.91.0.2/24"), "{a}");
    assert!(
        cni.host
            .links()
            .iter()
            .any(|l| l.starts_with("vp") || l.starts_with("veth"))
    );
    // nothing of it in the machine's own namespace
    assert!(
        !run(Command::new("ip").args(["link", "show", &br]))
            .status
            .success()
    );

    // network connect: a second interface (the Multus shape); disconnect removes it.
    pm.must(&["network", "connect", "pipenet2", &cname]);
    let a = pm.must(&["exec", &cname, "ip", "addr", "show", "eth1"]);
    assert!(a.contains("inet 10.91.1.2/24"), "{a}");
    // Ports of a bridge; a bridge pipe created goes away with its last port.
    let ports = |b: &str| match cni.host.links().contains(&b.to_string()) {
        true => cni
            .host
            .ipj(&["link", "show", "master", b])
            .as_array()
            .unwrap()
            .len(),
        false => 0,
    };
    assert_eq!(ports(&br2), 1);
    pm.must(&["network", "disconnect", "pipenet2", &cname]);
    let o = pm.cmd(&["exec", &cname, "ip", "link", "show", "eth1"]);
    assert!(!o.status.success(), "eth1 still there");
    assert!(cni.held("pipenet2").is_empty());

    // stop: DEL; the host side goes too, the address is released.
    pm.must(&["stop", "-t", "0", &cname]);
    assert_eq!(ports(&br), 0, "host end of the veth left on {br}");
    assert!(cni.held("pipenet").is_empty(), "{:?}", cni.held("pipenet"));
    pm.must(&["rm", "-f", &cname]);
    assert!(cni.records().is_empty(), "{:?}", cni.records());

    // --ip/--mac reach pipe (CNI_ARGS and capabilities).
    let out = pm.must(&[
        "run",
        "--rm",
        "--network",
        "pipenet",
        "--ip",
        "10.91.0.50",
        "--mac-address",
        "02:00:00:00:91:50",
        img,
        "ip",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(
        out.contains("inet 10.91.0.50/24") && out.contains("02:00:00:00:91:50"),
        "{out}"
    );

    // macvlan with static IPAM (a 0.4.0 config: Podman's libcni takes a 0.4.0 result).
    let mv = unique("pm");
    pm.must(&[
        "run",
        "-d",
        "--name",
        &mv,
        "--network",
        "pipemv",
        img,
        "sleep",
        "300",
    ]);
    let sandbox = pm.must(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", &mv]);
    let out = must(
        Command::new("nsenter")
            .arg(format!("--net={}", sandbox.trim()))
            .args(["ip", "-d", "addr", "show", "eth0"]),
    );
    assert!(
        out.contains("macvlan") && out.contains("inet 10.91.2.5/24"),
        "{out}"
    );
    pm.must(&["rm", "-f", "-t", "0", &mv]);
    assert!(cni.records().is_empty(), "{:?}", cni.records());

    // A failing ADD fails `podman run` with pipe's message; nothing is left.
    let o = pm.cmd(&["run", "--rm", "--network", "pipefail", img, "true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nosuch0"), "{}", stderr(&o));
    assert!(cni.held("pipefail").is_empty());
    assert!(cni.records().is_empty(), "{:?}", cni.records());
    let left: Vec<String> = cni
        .host_links()
        .into_iter()
        .filter(|l| !l.starts_with("up") && l != &br && l != &br2)
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A private containerd 1.6 inside the host namespace, killed on drop.
struct Containerd {
    child: Child,
    sock: PathBuf,
    /// The ctr namespace: runc keeps its state under /run/containerd/runc/NS,
    /// which containerd 1.6 cannot move; removed (when empty) on drop.
    ns: String,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(format!("/run/containerd/runc/{}", self.ns));
    }
}

#[test]
fn ctr_run_cni() {
    require(&["ctr", "containerd", "/bin/busybox"]);
    let cni = Cni::new();
    let d = &cni.dir;
    let cd = d.join("ctr");
    std::fs::create_dir_all(cd.join("opt")).unwrap();
    let sock = cd.join("c.sock");
    std::fs::write(
        cd.join("config.toml"),
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{1}\"\n[ttrpc]\n  address = \"\"\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
             [plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"{0}/opt\"\n",
            cd.display(),
            sock.display()
        ),
    )
    .unwrap();
    let netd = d.join("ctrnet.d");
    std::fs::create_dir_all(&netd).unwrap();
    let br = unique("brc");
    let mut conf = cni.bridge_conf("pipectr", &br, "10.92.0.0/24");
    let plugin = conf.as_object_mut().unwrap();
    plugin.remove("cniVersion");
    plugin.remove("name");
    plugin.insert("stateDir".into(), json!(cni.state()));
    let list = json!({"cniVersion": "1.0.0", "name": "pipectr", "plugins": [conf]});
    std::fs::write(netd.join("10-pipectr.conflist"), list.to_string()).unwrap();

    let ctrd = Containerd {
        child: Command::new("nsenter")
            .arg(format!("--net={}", cni.host.path()))
            .args(["setsid", "containerd", "--config"])
            .arg(cd.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(cd.join("containerd.log")).unwrap())
            .spawn()
            .unwrap(),
        sock: sock.clone(),
        ns: unique("pn"),
    };
    let ready = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        Command::new("ctr")
            .arg("-a")
            .arg(&ctrd.sock)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        ready,
        "containerd did not answer; see {}",
        cd.join("containerd.log").display()
    );
    let rf = rootfs(d);
    let ns = ctrd.ns.clone();
    let id = unique("pc");
    // ctr runs the CNI plugins itself, from /etc/cni/net.d and /opt/cni/bin,
    // which it cannot be told otherwise: a private mount namespace puts ours there.
    let script = format!(
        "mount --bind {netd} /etc/cni/net.d && mount -t tmpfs pipecni /opt && mkdir -p /opt/cni/bin && \
         mount --bind {bin} /opt/cni/bin && exec ctr -a {sock} -n {ns} run --rm --cni --env PATH=/bin \
         --rootfs {rf} {id} /bin/sh -c 'ip addr show eth0'",
        netd = netd.display(),
        bin = d.join("bin").display(),
        sock = sock.display(),
        rf = rf.display(),
    );
    let o = run(Command::new("timeout")
        .args(["60", "nsenter"])
        .arg(format!("--net={}", cni.host.path()))
        .args([
            "unshare",
            "-m",
            "--propagation",
            "slave",
            "sh",
            "-c",
            &script,
        ]));
    assert!(o.status.success(), "ctr run: {}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("inet 10.92.0.2/24"), "{}", stdout(&o));
    // ctr's DEL comes with an empty CNI_NETNS after the task is gone: pipe
    // still removed the host side and released the address.
    // (the bridge pipe created went with its last port)
    assert!(cni.host_links().is_empty(), "{:?}", cni.host_links());
    assert!(cni.held("pipectr").is_empty(), "{:?}", cni.held("pipectr"));
    assert!(cni.records().is_empty(), "{:?}", cni.records());
    drop(ctrd);
}

/// The VLAN example on a kernel with 802.1Q and bridge VLAN filtering (the VM
/// tier): a macvlan on the uplink's VLAN 100 reaches a peer on that VLAN only;
/// the same config on a bridge makes the veth an access port of VLAN 100.
/// Static `addresses` stand in for host-local, which the VM does not carry.
#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_cni_vlan_conflist() {
    let cni = Cni::bare();
    let c = Ns::new("cnc");
    let lan = Ns::new("cnl");
    cni.host.ip(&[
        "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p", "netns", &lan.name,
    ]);
    cni.host.ip(&["link", "set", "eth1", "up"]);
    lan.ip(&["link", "set", "eth1p", "up"]);
    lan.ip(&[
        "link", "add", "link", "eth1p", "name", "v100", "type", "vlan", "id", "100",
    ]);
    lan.ip(&["addr", "add", "192.168.100.1/24", "dev", "v100"]);
    lan.ip(&["link", "set", "v100", "up"]);
    lan.ip(&["addr", "add", "192.168.200.1/24", "dev", "eth1p"]);

    let list = nad_config("multus-vlan.yaml");
    let mut conf = Cni::derive(&list, 0, None);
    conf.as_object_mut().unwrap().remove("ipam");
    conf["addresses"] = json!("192.168.100.5/24");
    let res = cni
        .pipe("ADD", &conf, "pod1", &c.path(), "net1")
        .ok()
        .clone();
    assert_eq!(res["ips"][0]["address"], "192.168.100.5/24");
    let l = c.ipj(&["-d", "link", "show", "net1"]);
    assert_eq!(l[0]["linkinfo"]["info_kind"], "macvlan");
    assert!(cni.host.links().contains(&"eth1.100".to_string()));
    assert!(
        c.exec(&["ping", "-c1", "-W2", "192.168.100.1"])
            .status
            .success()
    );
    // Untagged traffic is another network: not reachable from VLAN 100.
    c.ip(&["addr", "add", "192.168.200.5/24", "dev", "net1"]);
    assert!(
        !c.exec(&["ping", "-c1", "-W1", "192.168.200.1"])
            .status
            .success()
    );
    let mut chk = conf.clone();
    chk["prevResult"] = res;
    cni.pipe("CHECK", &chk, "pod1", &c.path(), "net1").ok();
    cni.pipe("DEL", &conf, "pod1", &c.path(), "net1").ok();
    cni.pipe("DEL", &conf, "pod1", "", "net1").ok();
    assert_eq!(c.links(), ["lo"]);
    // pipe made eth1.100 and removed it with its last user.
    assert_eq!(cni.host_links(), ["eth1"]);

    // On a bridge: the host end of the veth becomes an access port of VLAN 100.
    let mut conf = Cni::derive(&list, 0, None);
    conf.as_object_mut().unwrap().remove("ipam");
    conf.as_object_mut().unwrap().remove("master");
    conf["host"] = json!("brv100");
    conf["addresses"] = json!("192.168.100.6/24");
    let res = cni
        .pipe("ADD", &conf, "pod2", &c.path(), "net1")
        .ok()
        .clone();
    let hv = res["interfaces"][0]["name"].as_str().unwrap().to_string();
    let v = must(
        Command::new("nsenter")
            .arg(format!("--net={}", cni.host.path()))
            .args(["bridge", "-j", "vlan", "show", "dev", &hv]),
    );
    assert!(v.contains("\"vlan\":100") && v.contains("PVID"), "{v}");
    cni.pipe("DEL", &conf, "pod2", &c.path(), "net1").ok();
    assert_eq!(c.links(), ["lo"]);
}
