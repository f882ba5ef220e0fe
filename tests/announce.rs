//! Neighbour announcements on a real bridge: a container that cached an
//! address with an old MAC learns the new MAC from the attach alone.

mod common;

use common::*;

/// The MAC `c` has cached for `addr` on eth1, if any.
fn cached_mac(c: &Container, addr: &str) -> Option<String> {
    let j = c.ipj(&["neigh", "show", "dev", "eth1", "to", addr]);
    j.as_array()
        .and_then(|a| a.first())
        .and_then(|n| n["lladdr"].as_str())
        .map(str::to_string)
}

/// Poll for up to a second: the announcement is one frame, handled in softirq.
fn wait_for_mac(c: &Container, addr: &str, want: &str) -> Option<String> {
    let mut last = None;
    for _ in 0..50 {
        last = cached_mac(c, addr);
        if last.as_deref() == Some(want) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    last
}

fn announce_case(peer_addr: &str, addr: &str, ip: &str, old: &str, new: &str) {
    let host = Ns::new("ph");
    let br = unique("br");
    let (peer, c) = (Container::new(), Container::new());
    let o = host.pipe(&[&br, &peer.pid_s(), peer_addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The peer believes `ip` lives at an old MAC (a container that had the
    // address before, say). STALE: it would not probe until it sends.
    peer.ip(&[
        "neigh", "replace", ip, "lladdr", old, "dev", "eth1", "nud", "stale",
    ]);
    assert_eq!(cached_mac(&peer, ip).as_deref(), Some(old));

    let o = host.pipe(&[&br, &c.pid_s(), addr, new]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        wait_for_mac(&peer, ip, new).as_deref(),
        Some(new),
        "the peer did not learn the new MAC of {ip} from the attach"
    );
}

#[test]
fn gratuitous_arp_updates_a_stale_cache() {
    announce_case(
        "10.90.0.3/24",
        "10.90.0.2/24",
        "10.90.0.2",
        "02:00:00:00:0a:01",
        "02:00:00:00:0b:01",
    );
}

#[test]
fn unsolicited_na_updates_a_stale_cache() {
    announce_case(
        "fd00:90::3/64",
        "fd00:90::2/64",
        "fd00:90::2",
        "02:00:00:00:0a:02",
        "02:00:00:00:0b:02",
    );
}

#[test]
fn dry_run_shows_the_announcement() {
    let host = Ns::new("ph");
    let c = Container::new();
    let br = unique("br");
    let o = host.pipe(&["-n", &br, &c.pid_s(), "10.91.0.2/24"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = stdout(&o);
    assert!(
        plan.ends_with(&format!(
            "ip netns exec {} arping -c 1 -U -I eth1 10.91.0.2\n",
            c.pid
        )),
        "{plan}"
    );
    let o = host.pipe(&["-n", &br, &c.pid_s(), "0/0"]);
    assert!(
        !stdout(&o).contains("arping"),
        "no address, no announcement"
    );
}
