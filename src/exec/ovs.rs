//! The executor's Open vSwitch operations: the OVSDB client's transactions
//! with pipe's error wording (object, what failed, the fix).

use crate::domain::error::{Error, Result};
use crate::domain::identity::AttachmentId;
use crate::domain::spec::{IfName, VlanId};
use crate::sys::ovsdb::{self, Ovsdb};

const START_OVS: &str = "start Open vSwitch (ovsdb-server and ovs-vswitchd), or set PIPE_OVSDB \
                         to its database socket";

fn connect(what: &str) -> Result<Ovsdb> {
    Ovsdb::connect_default().map_err(|e| {
        Error::Refused(format!(
            "{what}: no Open vSwitch database ({e}); {START_OVS}"
        ))
    })
}

/// Create OVS bridge `name`; `true` if this run created it (else joined).
pub fn create_bridge(name: &IfName) -> Result<bool> {
    let what = format!("creating Open vSwitch bridge {name}");
    connect(&what)?
        .add_bridge(name.as_str())
        .map_err(|e| Error::Refused(format!("{what}: {e}")))
}

pub fn add_port(
    bridge: &IfName,
    port: &IfName,
    tag: Option<VlanId>,
    id: &AttachmentId,
) -> Result<()> {
    let what = format!("adding {port} to Open vSwitch bridge {bridge}");
    connect(&what)?
        .add_port(
            bridge.as_str(),
            port.as_str(),
            tag.map(|t| t.get()),
            &id.tag(),
        )
        .map_err(|e| {
            Error::Refused(format!(
                "{what}: {e}; check the bridge exists (ovs-vsctl br-exists {bridge})"
            ))
        })
}

/// Teardown: remove the port if it is this attachment's. No OVSDB: nothing to do.
pub fn del_port(port: &IfName, id: &AttachmentId) -> std::result::Result<Option<String>, String> {
    if !ovsdb::available() {
        return Ok(None);
    }
    Ovsdb::connect_default()
        .and_then(|mut c| c.del_port_owned(port.as_str(), &id.tag()))
        .map(|done| done.then(|| format!("Open vSwitch port {port}")))
        .map_err(|e| format!("Open vSwitch port {port} ({e})"))
}

pub fn would_del_port(port: &IfName, id: &AttachmentId) -> Option<String> {
    if !ovsdb::available() {
        return None;
    }
    let mut c = Ovsdb::connect_default().ok()?;
    let owned = c.owned_ports().ok()?;
    owned
        .iter()
        .any(|p| p.name == port.as_str() && p.owner == id.tag())
        .then(|| format!("Open vSwitch port {port}"))
}

pub fn release_bridge(name: &IfName) -> std::result::Result<Option<String>, String> {
    if !ovsdb::available() {
        return Ok(None);
    }
    Ovsdb::connect_default()
        .and_then(|mut c| c.del_bridge_if_unused(name.as_str()))
        .map(|done| done.then(|| format!("Open vSwitch bridge {name}")))
        .map_err(|e| format!("Open vSwitch bridge {name} ({e})"))
}
