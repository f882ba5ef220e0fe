//! `pipe doctor [HOST_IF] [GUEST]`: a preflight that changes nothing on the
//! host. One line per check, ok / warn / fail, with the fix. Kernel support is
//! found by asking the kernel: each link kind is created in a throwaway network
//! namespace that exists only for the check (see `sys::probe::throwaway_socket`).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::domain::spec::{GuestRef, IpvlanMode, MacvlanMode};
use crate::sys::docker::{self, DockerError};
use crate::sys::netlink::{Netlink, NewLink};
use crate::sys::netns::{self, NETNS_RUN_DIR};
use crate::sys::probe;
use crate::sys::store::state_dir;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub detail: String,
    /// What to do about a warn or fail.
    pub fix: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, check: &str, status: Status, detail: impl Into<String>, fix: Option<String>) {
        self.checks.push(Check {
            check: check.to_string(),
            status,
            detail: detail.into(),
            fix,
        });
    }
    fn ok(&mut self, check: &str, detail: impl Into<String>) {
        self.add(check, Status::Ok, detail, None);
    }
    fn warn(&mut self, check: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(check, Status::Warn, detail, Some(fix.into()));
    }
    fn fail(&mut self, check: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(check, Status::Fail, detail, Some(fix.into()));
    }

    pub fn count(&self, s: Status) -> usize {
        self.checks.iter().filter(|c| c.status == s).count()
    }

    pub fn lines(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{:<4}  {:<22} {}",
                c.status.as_str(),
                c.check,
                c.detail
            ));
            if let Some(f) = &c.fix {
                out.push_str(&format!(": {f}"));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "doctor: {} ok, {} warn, {} fail. `pipe selftest` runs the real attach and detach on throwaway namespaces.\n",
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail)
        ));
        out
    }
}

/// Run every check.
pub async fn doctor(host_if: Option<&str>, guest: Option<&GuestRef>) -> Report {
    let mut r = Report::default();
    privileges(&mut r);
    kernel(&mut r).await;
    run_dirs(&mut r);
    docker_engine(&mut r).await;
    network_manager(&mut r);
    if let Some(h) = host_if {
        host_interface(&mut r, h).await;
    }
    if let Some(g) = guest {
        guest_checks(&mut r, g).await;
    }
    r
}

fn privileges(r: &mut Report) {
    match probe::effective_caps() {
        Ok(caps) => {
            let missing: Vec<&str> = [
                (probe::CAP_NET_ADMIN, "CAP_NET_ADMIN"),
                (probe::CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
            ]
            .into_iter()
            .filter(|(bit, _)| caps & (1 << bit) == 0)
            .map(|(_, n)| n)
            .collect();
            if missing.is_empty() {
                r.ok("capabilities", "CAP_NET_ADMIN and CAP_SYS_ADMIN");
            } else {
                r.fail(
                    "capabilities",
                    format!("missing {}", missing.join(", ")),
                    "run pipe as root (sudo pipe ...)",
                );
            }
        }
        Err(e) => r.warn(
            "capabilities",
            format!("cannot read /proc/self/status: {e}"),
            "run pipe as root",
        ),
    }
}

/// Ask the kernel: create each link kind in a throwaway namespace.
async fn kernel(r: &mut Report) {
    let nl = match probe::throwaway_socket()
        .map_err(|e| e.to_string())
        .and_then(|s| Netlink::from_socket(s).map_err(|c| c.to_string()))
    {
        Ok(nl) => nl,
        Err(e) => {
            r.fail(
                "kernel",
                format!("cannot create a throwaway network namespace to ask the kernel: {e}"),
                "run pipe as root on a kernel with network namespaces (CONFIG_NET_NS)",
            );
            return;
        }
    };
    let link = |name: &'static str| NewLink {
        name,
        up: false,
        ..Default::default()
    };
    let res = nl.create_veth(&link("pdv0"), &link("pdv1")).await;
    let veth = nl.link("pdv0").await.ok().flatten();
    report_kind(r, "veth", res.map(|_| ()), true);
    let Some(veth) = veth else { return };
    let br = nl.create_bridge(&link("pdbr0")).await;
    let bridge = nl.link("pdbr0").await.ok().flatten();
    report_kind(r, "bridge", br, true);
    let res = nl
        .create_macvlan(&link("pdmv0"), veth.index, MacvlanMode::Bridge)
        .await;
    report_kind(r, "macvlan", res, true);
    // A parent takes macvlan or ipvlan children, not both: ipvlan on the other end.
    let other = nl.link("pdv1").await.ok().flatten().map(|l| l.index);
    let res = match other {
        Some(i) => nl.create_ipvlan(&link("pdiv0"), i, IpvlanMode::L2).await,
        None => Ok(()),
    };
    report_kind(r, "ipvlan", res, false);
    let res = nl.create_vlan(&link("pdvl0"), veth.index, 100).await;
    report_kind(r, "802.1Q", res, false);
    match bridge {
        Some(b) => {
            let res = nl.set_vlan_filtering(b.index, true).await;
            // Some kernels take the request and ignore it: read it back.
            let on = nl
                .link_detail("pdbr0")
                .await
                .ok()
                .flatten()
                .and_then(|d| d.vlan_filtering);
            let res = match (res, on) {
                (Ok(()), Some(true)) => Ok(()),
                (Ok(()), _) => Err("accepted but not on when read back".to_string()),
                (Err(c), _) => Err(c.to_string()),
            };
            report_result(
                r,
                "bridge VLAN filter",
                res,
                false,
                "a VLAN on a bridge (@VLAN with a bridge HOST_IF)",
            );
        }
        None => r.warn(
            "bridge VLAN filter",
            "not tried (no bridge)",
            "see the bridge check",
        ),
    }
    let res = nl.set_tbf(veth.index, 125_000, 16_384, 32_768).await;
    report_result(r, "tbf", res.map_err(|c| c.to_string()), false, "--rate");
    // The namespace and all of the above go away with the socket.
    drop(nl);
}

fn report_kind(
    r: &mut Report,
    kind: &str,
    res: Result<(), crate::domain::error::KernelCause>,
    needed: bool,
) {
    let what = match kind {
        "ipvlan" => "--ipvlan",
        "802.1Q" => "@VLAN on a non-bridge HOST_IF",
        _ => "every attach of that kind",
    };
    report_result(r, kind, res.map_err(|c| c.to_string()), needed, what);
}

fn report_result(r: &mut Report, kind: &str, res: Result<(), String>, needed: bool, what: &str) {
    match res {
        Ok(()) => r.ok(
            kind,
            "supported by the kernel (created one in a throwaway namespace)",
        ),
        Err(e) => {
            let detail = format!("not supported by this kernel ({e})");
            let fix = format!(
                "needed for {what}: load or build the kernel module (modprobe {})",
                module(kind)
            );
            if needed {
                r.fail(kind, detail, fix);
            } else {
                r.warn(kind, detail, fix);
            }
        }
    }
}

fn module(kind: &str) -> &'static str {
    match kind {
        "veth" => "veth",
        "bridge" => "bridge",
        "macvlan" => "macvlan",
        "ipvlan" => "ipvlan",
        "802.1Q" => "8021q",
        "tbf" => "sch_tbf",
        _ => "bridge; CONFIG_BRIDGE_VLAN_FILTERING=y",
    }
}

fn run_dirs(r: &mut Report) {
    let d = Path::new(NETNS_RUN_DIR);
    if d.is_dir() {
        if probe::writable(d) {
            r.ok(
                NETNS_RUN_DIR,
                "writable (ip netns exec NAME works for attached containers)",
            );
        } else {
            r.warn(
                NETNS_RUN_DIR,
                "not writable",
                "run as root, or attach with --no-netns-link",
            );
        }
    } else {
        let parent = d.parent().unwrap_or(Path::new("/"));
        if probe::writable(parent) {
            r.ok(
                NETNS_RUN_DIR,
                "missing; pipe creates it on the first attach",
            );
        } else {
            r.warn(
                NETNS_RUN_DIR,
                format!("missing and {} is not writable", parent.display()),
                "run as root, or attach with --no-netns-link",
            );
        }
    }
    let s = state_dir();
    let shown = s.display().to_string();
    match std::fs::symlink_metadata(&s) {
        Err(_) => {
            let parent = s.parent().unwrap_or(Path::new("/"));
            if probe::writable(parent) || !parent.exists() {
                r.ok(
                    "state dir",
                    format!("{shown} missing; created 0700 on first use"),
                );
            } else {
                r.fail(
                    "state dir",
                    format!("{shown} missing and {} is not writable", parent.display()),
                    "run as root, or choose another --state-dir",
                );
            }
        }
        Ok(md) => {
            use std::os::unix::fs::MetadataExt;
            let euid = nix::unistd::geteuid().as_raw();
            if md.file_type().is_symlink() || !md.is_dir() {
                r.fail(
                    "state dir",
                    format!("{shown} is not a directory (a symlink or a file)"),
                    format!("remove {shown}, or choose another --state-dir"),
                );
            } else if md.uid() != euid {
                r.fail(
                    "state dir",
                    format!("{shown} belongs to uid {}", md.uid()),
                    format!("remove {shown}, or choose another --state-dir"),
                );
            } else {
                let bad = crate::sys::store::Store::open()
                    .map(|st| st.all().into_iter().filter(|x| x.is_err()).count())
                    .unwrap_or(0);
                let mode = md.mode() & 0o777;
                if bad > 0 {
                    r.warn(
                        "state dir",
                        format!("{shown}: {bad} unreadable record(s)"),
                        "pipe list names them; inspect and remove them",
                    );
                } else if mode & 0o077 != 0 {
                    r.warn(
                        "state dir",
                        format!("{shown} is mode {mode:o}"),
                        "pipe makes it 0700 on its next write (chmod 700 it now)",
                    );
                } else {
                    r.ok("state dir", format!("{shown}, 0700, owned by pipe's user"));
                }
            }
        }
    }
}

async fn docker_engine(r: &mut Report) {
    let at = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    // A name no container has: "no such container" proves the Engine answers.
    match docker::resolve("pipe-doctor-probe-no-such-container", Duration::ZERO).await {
        Err(DockerError::NoSuchContainer { .. }) | Ok(_) => {
            r.ok("docker", format!("Engine reachable at {at}"))
        }
        Err(e @ (DockerError::Unreachable { .. } | DockerError::UnsupportedHost { .. })) => r.warn(
            "docker",
            format!("Engine not reachable at {at}"),
            format!(
                "only needed for container names and pipe watch ({})",
                first_clause(&e.to_string())
            ),
        ),
        Err(e) => r.warn("docker", format!("Engine at {at}: {e}"), "check dockerd"),
    }
}

fn first_clause(s: &str) -> String {
    s.split(';').next().unwrap_or(s).to_string()
}

fn network_manager(r: &mut Report) {
    if Path::new("/run/NetworkManager").is_dir() {
        r.warn(
            "NetworkManager",
            "NetworkManager runs on this host: it may take over new veths and bridges",
            "add [keyfile] unmanaged-devices=interface-name:vp*;interface-name:veth*;interface-name:br* to /etc/NetworkManager/conf.d/pipe.conf",
        );
    } else {
        r.ok("NetworkManager", "not running");
    }
}

async fn host_interface(r: &mut Report, name: &str) {
    let check = format!("HOST_IF {name}");
    let nl = match Netlink::current() {
        Ok(nl) => nl,
        Err(c) => {
            r.fail(
                &check,
                format!("cannot open a netlink socket: {c}"),
                "run as root",
            );
            return;
        }
    };
    let l = match nl.link(name).await {
        Ok(Some(l)) => l,
        Ok(None) if name.starts_with("br") => {
            r.ok(
                &check,
                "missing; an attach creates bridge it (and removes it with its last port)",
            );
            return;
        }
        Ok(None) => {
            r.fail(
                &check,
                "no such interface",
                "check the name with ip link; a new bridge needs a name starting with br",
            );
            return;
        }
        Err(c) => {
            r.fail(&check, format!("cannot read it: {c}"), "run as root");
            return;
        }
    };
    let kind = l.kind.clone().unwrap_or_else(|| "device".into());
    let role = if l.is_bridge() {
        "bridge: containers get a veth into it"
    } else {
        "not a bridge: containers get a macvlan (or ipvlan) child of it"
    };
    let detail = format!(
        "{kind}, mtu {}, {}; {role}",
        l.mtu,
        if l.up { "up" } else { "down" }
    );
    if l.up {
        r.ok(&check, detail);
    } else if l.is_bridge() {
        r.warn(&check, detail, format!("ip link set {name} up"));
    } else {
        r.warn(&check, detail, "pipe brings a macvlan parent up on attach");
    }
    if l.is_bridge() {
        bridge_netfilter(r, name);
    } else if let Ok(drv) = std::fs::read_link(format!("/sys/class/net/{name}/device/driver"))
        && let Some(d) = drv.file_name().and_then(|d| d.to_str())
        && matches!(d, "e1000" | "e1000e" | "vmxnet3" | "pcnet32")
    {
        r.warn(
            &format!("{name} promiscuity"),
            format!("driver {d} (VirtualBox/VMware-style NIC): macvlan needs the virtual switch to accept other MACs"),
            "allow promiscuous mode on the hypervisor's port group / adapter, or use a bridge",
        );
    }
}

/// The Docker-host trap: with br_netfilter loaded and bridge-nf-call-iptables
/// on, frames bridged between two ports go through iptables' FORWARD chain;
/// Docker sets its policy to DROP, so containers on the bridge cannot talk.
fn bridge_netfilter(r: &mut Report, bridge: &str) {
    let check = format!("{bridge} netfilter");
    let call = match probe::sysctl("net/bridge/bridge-nf-call-iptables") {
        Ok(v) => v,
        Err(_) => {
            r.ok(
                &check,
                "br_netfilter not loaded: bridged frames skip iptables",
            );
            return;
        }
    };
    if call != "1" {
        r.ok(
            &check,
            "net.bridge.bridge-nf-call-iptables=0: bridged frames skip iptables",
        );
        return;
    }
    let rule = format!("-A FORWARD -i {bridge} -o {bridge} -j ACCEPT");
    match probe::forward_chain() {
        Err(e) => r.warn(
            &check,
            format!("bridge-nf-call-iptables=1 and the FORWARD chain cannot be read ({e})"),
            format!(
                "if its policy is DROP, add: iptables -I FORWARD -i {bridge} -o {bridge} -j ACCEPT"
            ),
        ),
        Ok(chain) => {
            let drop = chain.lines().any(|l| l.trim() == "-P FORWARD DROP");
            let accepted = chain.lines().any(|l| l.trim() == rule);
            if !drop {
                r.ok(&check, "bridge-nf-call-iptables=1, FORWARD policy ACCEPT");
            } else if accepted {
                r.ok(&check, format!("bridge-nf-call-iptables=1, FORWARD policy DROP, but {rule:?} lets its ports talk"));
            } else {
                r.fail(
                    &check,
                    "bridge-nf-call-iptables=1 and FORWARD policy DROP: traffic between its ports is dropped",
                    format!("iptables -I FORWARD -i {bridge} -o {bridge} -j ACCEPT (or sysctl net.bridge.bridge-nf-call-iptables=0)"),
                );
            }
        }
    }
}

async fn guest_checks(r: &mut Report, g: &GuestRef) {
    let check = format!("GUEST {g}");
    let t = match crate::sys::guest::resolve(g, Duration::from_secs(2)).await {
        Ok(t) => t,
        Err(e) => {
            r.fail(&check, "cannot be resolved", e.to_string());
            return;
        }
    };
    r.ok(
        &check,
        format!(
            "namespace {}:{} ({})",
            t.netns.id.dev,
            t.netns.id.ino,
            t.netns.path.display()
        ),
    );
    let v6 = netns::run_in(&t.netns, || {
        Ok((
            probe::sysctl("net/ipv6/conf/all/disable_ipv6").ok(),
            probe::sysctl("net/ipv6/conf/default/disable_ipv6").ok(),
        ))
    });
    match v6 {
        Ok((None, _)) => r.warn(
            "GUEST IPv6",
            "no IPv6 in the container's namespace (ipv6.disable=1?)",
            "IPv4 only; an IPv6 ADDR will fail",
        ),
        Ok((Some(a), Some(d))) if a == "1" || d == "1" => r.warn(
            "GUEST IPv6",
            format!("disabled (all={a}, default={d}): new interfaces get no IPv6"),
            "pipe enables it on the new interface for an IPv6 ADDR; or docker run --sysctl net.ipv6.conf.all.disable_ipv6=0",
        ),
        Ok(_) => r.ok("GUEST IPv6", "enabled"),
        Err(e) => r.warn("GUEST IPv6", format!("cannot read: {e}"), "run as root"),
    }
    match crate::verbs::detach::guest_socket(&t.netns, &t.label) {
        Ok(nl) => match nl.links().await {
            Ok(links) => {
                let names: Vec<String> = links.iter().map(|l| l.name.clone()).collect();
                let taken = names.iter().any(|n| n == "eth1");
                let detail = format!("interfaces in use: {}", names.join(", "));
                if taken {
                    r.warn(
                        "GUEST names",
                        detail,
                        "eth1 is taken: give another name with -i",
                    );
                } else {
                    r.ok(
                        "GUEST names",
                        format!("{detail}; eth1 (the default -i) is free"),
                    );
                }
            }
            Err(c) => r.warn("GUEST names", format!("cannot list: {c}"), "run as root"),
        },
        Err(e) => r.warn("GUEST names", e.to_string(), "run as root"),
    }
}

/// `pipe doctor`: print the report; an error (exit 1) when a check failed.
pub fn run(
    rt: &tokio::runtime::Runtime,
    host_if: Option<String>,
    guest: Option<GuestRef>,
    json: bool,
) -> crate::domain::error::Result<()> {
    let rep = rt.block_on(doctor(host_if.as_deref(), guest.as_ref()));
    if json {
        println!(
            "{}",
            serde_json::json!({
                "checks": rep.checks,
                "ok": rep.count(Status::Ok),
                "warn": rep.count(Status::Warn),
                "fail": rep.count(Status::Fail),
                "selftest": "pipe selftest runs the real attach and detach on throwaway namespaces",
            })
        );
    } else {
        print!("{}", rep.lines());
    }
    let failed: Vec<&str> = rep
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.check.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(crate::domain::error::Error::Refused(format!(
            "doctor: {} check(s) failed: {}; see the fixes above",
            failed.len(),
            failed.join(", ")
        )))
    }
}
