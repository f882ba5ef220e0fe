//! Open vSwitch in the verbs: is HOST_IF an OVS bridge (asked of the OVSDB,
//! not guessed from the name), and which OVS ports gc collects.

use crate::domain::error::{Error, Result};
use crate::domain::identity::{AttachmentId, Record};
use crate::domain::spec::IfName;
use crate::planning::attach::HostSide;
use crate::planning::ops::Teardown;
use crate::sys::netlink::Link;
use crate::sys::netns;
use crate::sys::ovsdb::{self, Ovsdb};

/// `Some(HostSide::Ovs)` when `name` is an Open vSwitch bridge, or is missing
/// and starts with `ovs` (pipe creates it). `None`: not a case for OVS. Hosts
/// without an OVSDB socket never connect.
pub fn host_side(name: &IfName, link: Option<&Link>) -> Result<Option<HostSide>> {
    let n = name.as_str();
    let want_new = link.is_none() && n.starts_with("ovs");
    // An OVS bridge's own kernel device is of kind "openvswitch"; a bridge
    // ovs-vswitchd has not created in the kernel yet has no device at all.
    let maybe = link.is_none_or(|l| l.kind.as_deref() == Some("openvswitch"));
    if !maybe {
        return Ok(None);
    }
    if !ovsdb::available() {
        if want_new {
            return Err(Error::Refused(format!(
                "host interface {n} does not exist, and there is no Open vSwitch database at {} \
                 to create bridge {n} in; start Open vSwitch (or set PIPE_OVSDB to its socket), \
                 or name a Linux bridge (br*)",
                ovsdb::socket_path().display()
            )));
        }
        return Ok(None);
    }
    let exists = Ovsdb::connect_default()
        .and_then(|mut c| c.is_bridge(n))
        .map_err(|e| {
            Error::Refused(format!(
                "asking the Open vSwitch database whether {n} is a bridge: {e}; \
                 check that ovsdb-server is running"
            ))
        })?;
    Ok((exists || want_new).then(|| HostSide::Ovs {
        bridge: name.clone(),
        exists,
    }))
}

/// gc: OVS ports naming an attachment that has no record and whose namespace
/// is dead (the veth died with it; the OVSDB row stays until removed).
pub fn stale_ports(records: &[Record]) -> std::result::Result<Vec<Teardown>, String> {
    if !ovsdb::available() {
        return Ok(Vec::new());
    }
    let ports = Ovsdb::connect_default()
        .and_then(|mut c| c.owned_ports())
        .map_err(|e| format!("listing Open vSwitch ports ({e})"))?;
    Ok(ports
        .into_iter()
        .filter_map(|p| {
            let id = AttachmentId::from_tag(&p.owner)?;
            let port: IfName = p.name.parse().ok()?;
            let stale =
                !records.iter().any(|r| r.id() == id) && !netns::any_process_in(id.ns.into());
            stale.then_some(Teardown::OvsDelPort { port, id })
        })
        .collect())
}
