//! Planning an attachment to an Open vSwitch bridge: a veth whose host end
//! becomes an OVS port (`@VLAN` its access tag). Pure: no I/O.

use crate::domain::error::{Error, Result};
use crate::domain::spec::{AttachSpec, IfName};
use crate::planning::attach::{Facts, Step};

/// Push the steps of a veth into OVS bridge `bridge` (created first unless it `exists`).
pub fn plan_ovs(
    spec: &AttachSpec,
    facts: &Facts,
    bridge: &IfName,
    exists: bool,
    steps: &mut Vec<Step>,
) -> Result<()> {
    if spec.ipvlan.is_some() {
        return Err(Error::Usage(format!(
            "--ipvlan needs a host interface that is not a bridge, and {bridge} is an \
             Open vSwitch bridge; drop --ipvlan to connect a veth to {bridge}"
        )));
    }
    if spec.direct_phys {
        return Err(Error::Usage(format!(
            "--direct-phys moves a host interface into the container, and Open vSwitch bridge \
             {bridge} cannot leave the host; drop --direct-phys to connect a veth to {bridge}"
        )));
    }
    if facts.host_veth_taken {
        return Err(Error::Refused(format!(
            "host interface {} already exists; choose another host-side name with -l",
            facts.host_veth
        )));
    }
    if !exists {
        steps.push(Step::CreateOvsBridge {
            name: bridge.clone(),
        });
    }
    let mtu = spec.mtu.unwrap_or(1500);
    steps.push(Step::CreateVeth {
        host: facts.host_veth.clone(),
        guest: spec.ifname.clone(),
        bridge: bridge.clone(),
        bridge_index: None,
        mtu,
        host_mtu: mtu,
        mac: spec.mac,
        ovs: true,
    });
    steps.push(Step::OvsPort {
        bridge: bridge.clone(),
        port: facts.host_veth.clone(),
        tag: spec.vlan,
    });
    Ok(())
}
