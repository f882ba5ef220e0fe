//! The teardown half of pipe's operation vocabulary. An attach's undo stack,
//! `detach`, `gc`, crash recovery and the death path of `pipe watch` are all
//! lists of these, and one executor (`exec::teardown`) runs them best-effort:
//! it goes on past a failure, reports every failure together, and counts
//! "already gone" as done. Pure data: no I/O here.

use std::fmt;

use ipnetwork::IpNetwork;

use crate::domain::identity::{AttachmentId, NetnsName, NsKey};
use crate::domain::spec::{IfName, Mac};
use crate::sys::netlink::Route;

/// Which links an operation may delete: proof of ownership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Created by this very run (an undo): no further proof needed.
    ThisRun,
    /// The link's alias must be exactly this attachment's tag.
    Tag(AttachmentId),
    /// Journaled by a run that died before it could tag the link: the tag, or
    /// no alias at all (the kernel cannot tag a link in the request that creates it).
    Journaled(AttachmentId),
    /// `detach --force`: the operator vouches for it.
    Forced,
}

impl Owner {
    /// May a link with this alias be deleted?
    pub fn allows(&self, alias: Option<&str>) -> bool {
        match self {
            Owner::ThisRun | Owner::Forced => true,
            Owner::Tag(id) => id.owns(alias),
            Owner::Journaled(id) => id.owns(alias) || alias.is_none_or(str::is_empty),
        }
    }
}

/// What a host link moved into a container looks like back on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restore {
    /// Its name on the host.
    pub name: String,
    /// MTU and MAC to put back (`None`: unchanged by the move).
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    /// Its alias on the host ("" for none).
    pub alias: String,
    /// Bring it up again.
    pub up: bool,
}

#[derive(Clone, Debug)]
pub enum Teardown {
    /// Put back a default route the attach replaced.
    RestoreRoute(Route),
    /// Delete the default route the attach added (there was none before).
    DeleteDefault { v6: bool },
    /// Give back a DHCP lease obtained by this run.
    ReleaseLease {
        ifname: IfName,
        mac: Mac,
        lease: crate::sys::dhcp::Lease,
    },
    /// Stop the lease keeper of this interface (it releases the lease).
    StopKeeper { label: String, ifname: IfName },
    /// On an adopted (pre-existing) link: take back an address we added.
    DeleteAddress(u32, IpNetwork),
    /// On an adopted link: put back an address we removed.
    AddAddress(u32, IpNetwork),
    /// Turn a bridge's VLAN filtering off again.
    VlanFilteringOff(IfName, u32),
    /// Delete the container's interface (a veth takes its host end along).
    DeleteGuestLink { name: IfName, owner: Owner },
    /// Move a `--direct-phys` link back to the host as it was.
    MoveBack { guest: IfName, restore: Restore },
    /// Delete a host link (the host end of a veth).
    DeleteHostLink { name: IfName, owner: Owner },
    /// Delete a shared host link pipe created (bridge, 802.1Q sub-interface)
    /// when nothing uses it any more: no port, no child, no other record
    /// naming it; decided under the host-wide lock. `untagged`: a crashed run
    /// journaled it and may have died before tagging it.
    ReleaseShared {
        name: IfName,
        untagged: bool,
        except: Option<AttachmentId>,
    },
    /// Bring a host link down again, unless anything else uses it now.
    HostDownIfUnused {
        name: IfName,
        index: u32,
        except: Option<AttachmentId>,
    },
    /// Remove Open vSwitch port `port` (and its interface row) if its
    /// `external_ids` name exactly attachment `id`. Nothing to do without an OVSDB.
    OvsDelPort { port: IfName, id: AttachmentId },
    /// Delete the Open vSwitch bridge this run created, unless it has a port
    /// (other than its own) by now.
    OvsReleaseBridge { name: IfName },
    /// Remove /var/run/netns/NAME if pipe made it for namespace `ns`.
    RemoveNetnsLink { name: NetnsName, ns: NsKey },
    /// Remove the journal record.
    RemoveRecord(AttachmentId),
    /// Delete the host's /32 (/128) route to `dst` through `dev` (`--host-shim`).
    DeleteHostRoute { dst: std::net::IpAddr, dev: IfName },
}

impl fmt::Display for Teardown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Teardown::RestoreRoute(r) => write!(
                f,
                "ip route replace default{} (the route the attach replaced)",
                r.gateway().map(|g| format!(" via {g}")).unwrap_or_default()
            ),
            Teardown::DeleteDefault { v6 } => {
                write!(f, "ip {}route del default", if *v6 { "-6 " } else { "" })
            }
            Teardown::ReleaseLease { ifname, lease, .. } => {
                write!(f, "dhcp release {} on {ifname}", lease.addr)
            }
            Teardown::StopKeeper { ifname, .. } => write!(f, "stop the lease keeper of {ifname}"),
            Teardown::DeleteAddress(i, a) => write!(f, "ip addr del {a} dev #{i}"),
            Teardown::AddAddress(i, a) => write!(f, "ip addr add {a} dev #{i}"),
            Teardown::VlanFilteringOff(n, _) => {
                write!(f, "ip link set {n} type bridge vlan_filtering 0")
            }
            Teardown::DeleteGuestLink { name, .. } => {
                write!(f, "ip link del {name} (in the container)")
            }
            Teardown::MoveBack { guest, restore } => write!(
                f,
                "ip link set {guest} netns HOST name {} (from the container)",
                restore.name
            ),
            Teardown::DeleteHostLink { name, .. } => write!(f, "ip link del {name}"),
            Teardown::ReleaseShared { name, .. } => {
                write!(f, "ip link del {name} (if nothing uses it any more)")
            }
            Teardown::HostDownIfUnused { name, .. } => {
                write!(f, "ip link set {name} down (if nothing uses it any more)")
            }
            Teardown::OvsDelPort { port, .. } => write!(
                f,
                "ovs-vsctl del-port {port} (if its external_ids name this attachment)"
            ),
            Teardown::OvsReleaseBridge { name } => {
                write!(f, "ovs-vsctl del-br {name} (if it has no port)")
            }
            Teardown::RemoveNetnsLink { name, .. } => write!(f, "ip netns delete {name}"),
            Teardown::RemoveRecord(id) => write!(f, "rm the record of {id}"),
            Teardown::DeleteHostRoute { dst, dev } => write!(
                f,
                "ip route del {dst}/{} dev {dev}",
                if dst.is_ipv6() { 128 } else { 32 }
            ),
        }
    }
}
