//! Lifecycle of the 802.1Q sub-interfaces pipe creates (`@VID`): tagged
//! `pipe:shared`, kept while another attachment uses them, removed by detach
//! and by gc once unused. The build machine's kernel has no 802.1Q, so these
//! run inside the QEMU VM tier (tests/vm/run.sh); here they are ignored.

mod common;

use common::*;

#[test]
#[ignore = "runs inside the QEMU VM tier: tests/vm/run.sh"]
fn vm_detach_and_gc_remove_vlan_subinterfaces_pipe_created() {
    // A host whose eth0 is a veth to a LAN namespace.
    let h = Host::new("vd").with_lan("vl", "eth0");
    let before = h.ns.links();
    let (a, b) = (Container::new(), Container::new());
    h.ok(&["eth0", &a.pid_s(), "10.1.0.2/24", "@100"]);
    h.ok(&["eth0", &b.pid_s(), "10.1.0.3/24", "@100"]);
    let l = h.ns.ipj(&["-d", "link", "show", "dev", "eth0.100"]);
    assert_eq!(link(&l)["ifalias"], "pipe:shared", "{l}");

    // Still used by b: kept.
    h.ok(&["detach", &a.pid_s()]);
    assert!(h.ns.links().contains(&"eth0.100".to_string()));
    // Last user gone: removed, the host is as before.
    let out = h.ok(&["detach", &b.pid_s()]);
    assert!(out.contains("host interface eth0.100"), "{out}");
    assert_eq!(h.ns.links(), before);

    // gc after the container was killed.
    let mut c = Container::new();
    h.ok(&["eth0", &c.pid_s(), "10.2.0.2/24", "@200"]);
    assert!(h.ns.links().contains(&"eth0.200".to_string()));
    let _ = c.child.kill();
    let _ = c.child.wait();
    let out = h.ok(&["gc"]);
    assert!(out.contains("removed host interface eth0.200"), "{out}");
    assert_eq!(h.ns.links(), before);
}
