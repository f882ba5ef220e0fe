//! Helpers shared by the VLAN tests on this kernel (tests/vlan.rs) and in the VM
//! tier (tests/vm_vlan.rs).
#![allow(dead_code)]

use crate::common::*;

/// Host namespace with a "physical" veth phys0 (down) whose other end sits in a
/// "LAN" namespace at 10.89.0.1/24.
pub fn host_with_lan() -> (Ns, Ns) {
    let host = Ns::new("vh");
    let lan = Ns::new("vl");
    host.ip(&[
        "link", "add", "phys0", "type", "veth", "peer", "name", "lan0", "netns", &lan.name,
    ]);
    lan.ip(&["addr", "add", "10.89.0.1/24", "dev", "lan0"]);
    lan.ip(&["link", "set", "lan0", "up"]);
    (host, lan)
}

/// Everything an attach may touch, as text: every link of the host and the
/// container with kind, state, MTU, MAC, alias and master; the container's routes;
/// whether the netns link exists.
pub fn world(host: &Ns, c: &Container) -> String {
    fn links(v: &serde_json::Value) -> String {
        let mut out: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                format!(
                    "{} kind={} up={} mtu={} mac={} alias={} master={} vlan_filtering={}",
                    l["ifname"],
                    l["linkinfo"]["info_kind"],
                    l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
                    l["mtu"],
                    l["address"],
                    l["ifalias"],
                    l["master"],
                    l["linkinfo"]["info_data"]["vlan_filtering"],
                )
            })
            .collect();
        out.sort();
        out.join("\n")
    }
    format!(
        "host:\n{}\ncontainer:\n{}\nroutes: {}\nnetns link: {}",
        links(&host.ipj(&["-d", "link", "show"])),
        links(&c.ipj(&["-d", "link", "show"])),
        c.routes(),
        c.netns_link().exists()
    )
}

pub fn assert_unchanged(before: &str, host: &Ns, c: &Container, what: &str) {
    let after = world(host, c);
    assert_eq!(before, after, "{what}: state changed");
}

pub fn flags_up(l: &serde_json::Value) -> bool {
    l["flags"].as_array().unwrap().iter().any(|f| f == "UP")
}

/// `bridge -j vlan show` in a namespace, as compact text per port.
pub fn bridge_vlans(ns: &Ns) -> String {
    let s = must(std::process::Command::new("bridge").args(["-n", &ns.name, "-j", "vlan", "show"]));
    s.split_whitespace().collect()
}
