//! Read-only queries of host and container state: everything `plan` needs,
//! looked up by name (no dumps, except for `mac:` host interfaces).

use crate::domain::error::{Error, Result};
use crate::domain::spec::{AttachSpec, HostIfRef, IfName, Mac, host_veth_name, vlan_subif_name};
use crate::planning::attach::{Facts, HostSide};
use crate::planning::vlan::{self, BridgeVlan, VlanFacts};
use crate::sys::guest::Target;
use crate::sys::netlink::{Link, Netlink};
use crate::sys::netns;
use crate::sys::netns_link;

pub async fn observe(
    spec: &AttachSpec,
    target: &Target,
    host: &Netlink,
    guest: &Netlink,
) -> Result<Facts> {
    let host_veth = spec
        .host_ifname
        .clone()
        .unwrap_or_else(|| host_veth_name(&spec.ifname, &target.key));

    // Host and container queries go out on two sockets at once.
    // Each side's independent queries are in flight together too: the host
    // end's name is looked up before knowing whether it is needed (a macvlan
    // parent has no host end), which costs nothing but the reply.
    let host_q = async {
        let (side, veth) = futures::join!(host_side(&spec.host_if, host), async {
            host.link(host_veth.as_str())
                .await
                .map_err(|c| Error::kernel(format!("looking up host interface {host_veth}"), c))
        });
        let side = side?;
        let taken = match side {
            HostSide::Parent(_) => false,
            _ => veth?.is_some(),
        };
        let vlan = vlan_facts(spec, &side, host).await?;
        Ok::<_, Error>((side, taken, vlan))
    };
    let guest_q = async {
        let taken = async {
            guest.link(spec.ifname.as_str()).await.map_err(|c| {
                Error::kernel(
                    format!("looking up {} in container {}", spec.ifname, target.label),
                    c,
                )
            })
        };
        let gws = spec.addr.gateways();
        let family = gws
            .first()
            .map(|g| g.is_ipv6())
            .or(spec.addr.dhcp.map(|_| false));
        let read = |v6: Option<bool>| async move {
            match v6 {
                Some(v6) => guest.default_route(v6, 0).await.map_err(|c| {
                    Error::kernel(
                        format!("reading the default route of container {}", target.label),
                        c,
                    )
                }),
                None => Ok(None),
            }
        };
        let (taken, route, more) =
            futures::join!(taken, read(family), read(gws.get(1).map(|g| g.is_ipv6())));
        Ok::<_, Error>((taken?, (route?, more?)))
    };
    let (h, g) = futures::join!(host_q, guest_q);
    // --direct-phys again: HOST_IF is gone from the host because it is in the
    // container already, under the name that carries it in its alias.
    if spec.direct_phys
        && h.is_err()
        && let (Ok((Some(l), _)), HostIfRef::Name(n)) = (&g, &spec.host_if)
        && l.alias.as_deref() == Some(n.as_str())
    {
        return Err(Error::Refused(format!(
            "{} is in container {} already as {} (moved there by --direct-phys); \
             detach it first (pipe detach {} -i {})",
            l.alias.as_deref().unwrap_or_default(),
            target.label,
            l.name,
            target.label,
            l.name
        )));
    }
    let (
        (host_side, host_veth_taken, vlan),
        (guest_ifname_taken, (default_route, default_route_more)),
    ) = (h?, g?);

    let netns_link = match (&target.link_name, spec.netns_link) {
        (Some(name), true) => {
            let state = netns_link::link_state(name, &target.netns).map_err(|e| {
                Error::Refused(format!(
                    "cannot inspect {}: {e}",
                    netns::link_path(name).display()
                ))
            })?;
            Some((name.clone(), state))
        }
        _ => None,
    };

    Ok(Facts {
        host: host_side,
        host_veth,
        host_veth_taken,
        guest_ifname_taken,
        default_route,
        default_route_more,
        netns_link,
        vlan,
    })
}

/// With @VID: what `HOST_IF.VID` is (a non-bridge host interface), or the
/// VLAN settings of the bridge (an existing bridge). One lookup by name.
async fn vlan_facts(spec: &AttachSpec, side: &HostSide, host: &Netlink) -> Result<VlanFacts> {
    let Some(vid) = spec.vlan else {
        return Ok(VlanFacts::default());
    };
    let detail = |name: IfName| async move {
        host.link_detail(name.as_str())
            .await
            .map_err(|c| Error::kernel(format!("looking up host interface {name}"), c))
    };
    Ok(match side {
        HostSide::NewBridge(_) | HostSide::Ovs { .. } => VlanFacts::default(),
        HostSide::Bridge(b) => {
            let name: IfName = b.name.parse().map_err(Error::Refused)?;
            let d = detail(name).await?;
            VlanFacts {
                sub: None,
                bridge: d.as_ref().map(BridgeVlan::from_detail),
            }
        }
        HostSide::Parent(p) => {
            let parent: IfName = p.name.parse().map_err(Error::Refused)?;
            let sub = vlan_subif_name(&parent, vid).map_err(Error::Usage)?;
            let d = detail(sub.clone()).await?;
            VlanFacts {
                sub: Some((sub, vlan::classify_sub(d.as_ref(), p.index, vid))),
                bridge: None,
            }
        }
    })
}

async fn host_side(r: &HostIfRef, host: &Netlink) -> Result<HostSide> {
    let link = match r {
        HostIfRef::Name(n) => {
            let l = host
                .link(n.as_str())
                .await
                .map_err(|c| Error::kernel(format!("looking up host interface {n}"), c))?;
            if let Some(side) = crate::verbs::ovs::host_side(n, l.as_ref())? {
                return Ok(side);
            }
            match l {
                Some(l) => l,
                None if n.as_str().starts_with("br") => return Ok(HostSide::NewBridge(n.clone())),
                None => {
                    return Err(Error::Refused(format!(
                        "host interface {n} does not exist; give an existing interface, \
                         or a name starting with 'br' (a Linux bridge) or 'ovs' (an Open vSwitch \
                         bridge) to have pipe create that bridge"
                    )));
                }
            }
        }
        HostIfRef::Mac(m) => by_mac(*m, host).await?,
    };
    Ok(if link.is_bridge() {
        HostSide::Bridge(link)
    } else {
        HostSide::Parent(link)
    })
}

/// The host interface with this MAC. A bridge shares its MAC with a port, so
/// links that are themselves ports (have a master) give way to the others.
async fn by_mac(mac: Mac, host: &Netlink) -> Result<Link> {
    let all = host
        .links()
        .await
        .map_err(|c| Error::kernel("listing host interfaces", c))?;
    let mut hits: Vec<Link> = all.into_iter().filter(|l| l.mac == Some(mac)).collect();
    if hits.len() > 1 {
        hits.retain(|l| l.master.is_none());
    }
    match hits.len() {
        0 => Err(Error::Refused(format!(
            "no host interface has MAC {mac}; check `ip link` for the right address"
        ))),
        1 => Ok(hits.remove(0)),
        _ => Err(Error::Refused(format!(
            "several host interfaces have MAC {mac} ({}); name the one you mean",
            hits.iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// For a re-run: what there is of an attachment whose container interface
/// exists already (its addresses, pipe's record, the veth's host end).
pub async fn existing(
    link: &Link,
    record: Option<crate::domain::identity::Record>,
    host_veth: &crate::domain::spec::IfName,
    host: &Netlink,
    guest: &Netlink,
    target: &Target,
    id: &crate::domain::identity::AttachmentId,
) -> Result<crate::planning::rerun::Existing> {
    let addrs = guest.addresses(link.index).await.map_err(|c| {
        Error::kernel(
            format!(
                "reading the addresses of {} in container {}",
                link.name, target.label
            ),
            c,
        )
    })?;
    let hv_name = record
        .as_ref()
        .and_then(|r| r.host_ifname.as_ref().map(|n| n.to_string()))
        .unwrap_or_else(|| host_veth.to_string());
    let host_veth = if link.kind.as_deref() == Some("veth") {
        host.link(&hv_name)
            .await
            .map_err(|c| Error::kernel(format!("looking up host interface {hv_name}"), c))?
    } else {
        None
    };
    Ok(crate::planning::rerun::Existing {
        link: link.clone(),
        addrs,
        record,
        host_veth,
        tag: id.tag(),
    })
}
