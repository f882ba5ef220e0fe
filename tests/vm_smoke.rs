//! Smoke test of the QEMU VM test tier (`tests/vm/run.sh`).
//!
//! Tests whose names start with `vm_` are `#[ignore]`d on the host and run inside a VM that boots
//! Debian's stock kernel, where 802.1Q VLAN, ipvlan, dummy and bridge VLAN filtering exist.
//! `tests/vm/run.sh` runs every test binary there with `--ignored vm_` and `PIPE_IN_VM=1`.
//!
//! This one proves that the VM kernel has what the VLAN/ipvlan tests need. It is deliberately not
//! gated on `PIPE_IN_VM`: run with `--ignored` on a kernel without VLAN support, it fails.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs `ip ARGS...`, returning its output; panics with the command and its stderr on failure.
fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip {}`: {e}", args.join(" ")));
    if !out.status.success() {
        let hint = if std::env::var_os("PIPE_IN_VM").is_some() {
            ""
        } else {
            " (this test needs a kernel with 802.1Q, ipvlan and dummy: run it through tests/vm/run.sh)"
        };
        panic!(
            "`ip {}` failed ({}): {}{hint}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out
}

/// A network namespace made for one test, deleted (with every link in it) when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn new(prefix: &str) -> Netns {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip -n NAME ARGS...` and returns its stdout.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&ip(&all).stdout).into_owned()
    }

    /// `ip -j -d link show dev IFNAME`, with whitespace removed for simple substring checks.
    fn link_json(&self, ifname: &str) -> String {
        let json = self.ip(&["-j", "-d", "link", "show", "dev", ifname]);
        json.split_whitespace().collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys the virtual links created inside it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn assert_has(json: &str, needles: &[&str]) {
    for needle in needles {
        assert!(json.contains(needle), "expected {needle} in {json}");
    }
}

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_kernel_has_vlan_ipvlan_dummy() {
    let ns = Netns::new("pipevmsmoke");

    ns.ip(&["link", "add", "dm0", "type", "dummy"]);
    ns.ip(&["link", "set", "dm0", "up"]);
    ns.ip(&[
        "link", "add", "link", "dm0", "name", "dm0.100", "type", "vlan", "id", "100",
    ]);
    ns.ip(&["link", "add", "dm1", "type", "dummy"]);
    ns.ip(&["link", "set", "dm1", "up"]);
    ns.ip(&[
        "link", "add", "link", "dm1", "name", "ipvl0", "type", "ipvlan", "mode", "l2",
    ]);

    assert_has(
        &ns.link_json("dm0"),
        &[r#""ifname":"dm0""#, r#""info_kind":"dummy""#],
    );
    assert_has(
        &ns.link_json("dm0.100"),
        &[
            r#""ifname":"dm0.100""#,
            r#""link":"dm0""#,
            r#""info_kind":"vlan""#,
            r#""protocol":"802.1Q""#,
            r#""id":100"#,
        ],
    );
    assert_has(
        &ns.link_json("ipvl0"),
        &[
            r#""ifname":"ipvl0""#,
            r#""link":"dm1""#,
            r#""info_kind":"ipvlan""#,
            r#""mode":"l2""#,
        ],
    );
}
