//! Apply a plan. Every step that creates something pushes its undo; if a step
//! fails, the undos run in reverse and every failure among them is reported.

use std::collections::HashMap;
use std::os::fd::AsFd;

use log::{debug, warn};

use crate::error::{Error, Result};
use crate::guest::Target;
use crate::netlink::{Link, Netlink, NewLink, Route};
use crate::netns;
use crate::plan::{Plan, Step};
use crate::spec::{IfName, Mac};

/// Hidden test hook: fail on purpose after step N (1-based), to prove rollback.
const FAIL_AFTER_ENV: &str = "PIPE_FAIL_AFTER";

#[derive(Debug)]
enum Undo {
    RemoveNetnsLink(String),
    DeleteHostLink(IfName),
    DeleteGuestLink(IfName),
    HostDown(IfName, u32),
    RestoreRoute(Route),
    DeleteDefault {
        v6: bool,
    },
    /// Give back a DHCP lease obtained by this run.
    ReleaseLease {
        ifname: IfName,
        mac: crate::spec::Mac,
        lease: crate::dhcp::Lease,
    },
    /// Stop the lease keeper this run started (it releases the lease).
    StopKeeper {
        ifname: IfName,
    },
    /// Turn a bridge's VLAN filtering off again.
    VlanFilteringOff(IfName, u32),
    /// Move a `--direct-phys` link back to the host under its old name.
    MoveBack {
        guest: IfName,
        restore: Restore,
    },
    /// On an adopted (pre-existing) link: take back an address we added.
    DeleteAddress(u32, ipnetwork::IpNetwork),
    /// On an adopted link: put back an address we removed.
    AddAddress(u32, ipnetwork::IpNetwork),
}

const VLAN_FIX: &str = "load its module (modprobe 8021q), or drop @VLAN";

/// The hint for EOPNOTSUPP from a request that needs a kernel feature: `what`
/// names the feature, `fix` says what to do about it.
fn missing_feature(errno: i32, what: &str, fix: &str) -> Option<String> {
    (errno == 95).then(|| format!("this kernel has no {what} support; {fix}"))
}

/// What an applied plan left in the container.
#[derive(Debug)]
pub struct Applied {
    /// The container-side link as read back after creation.
    pub guest_link: Link,
    /// The DHCP lease pipe's own client obtained.
    pub leased: Option<crate::dhcp::Lease>,
}

pub async fn apply(
    plan: &Plan,
    target: &Target,
    host: &Netlink,
    guest: &Netlink,
) -> Result<Applied> {
    let mut undo = Vec::new();
    let fail_after: Option<usize> = std::env::var(FAIL_AFTER_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let mut ex = Exec {
        target,
        host,
        guest,
        host_index: HashMap::new(),
        guest_link: None,
        adopted: false,
        leased: None,
    };
    for (i, step) in plan.steps.iter().enumerate() {
        let r = match ex.step(step, &mut undo).await {
            Ok(()) if fail_after == Some(i + 1) => Err(Error::Refused(format!(
                "failure injected after step {} ({FAIL_AFTER_ENV})",
                i + 1
            ))),
            r => r,
        };
        if let Err(cause) = r {
            let undo_failures = rollback(undo, target, host, guest).await;
            return Err(Error::RolledBack {
                cause: Box::new(cause),
                undo_failures,
            });
        }
    }
    match ex.guest_link {
        Some(guest_link) => Ok(Applied {
            guest_link,
            leased: ex.leased,
        }),
        None => {
            let undo_failures = rollback(undo, target, host, guest).await;
            Err(Error::RolledBack {
                cause: Box::new(Error::Refused("the plan created no interface".into())),
                undo_failures,
            })
        }
    }
}

struct Exec<'a> {
    target: &'a Target,
    host: &'a Netlink,
    guest: &'a Netlink,
    /// Indexes of host links created by this run.
    host_index: HashMap<IfName, u32>,
    guest_link: Option<Link>,
    /// The container interface existed before this run (idempotent re-run).
    adopted: bool,
    leased: Option<crate::dhcp::Lease>,
}

impl Exec<'_> {
    fn guest_index(&self) -> Result<u32> {
        self.guest_link
            .as_ref()
            .map(|l| l.index)
            .ok_or_else(|| Error::Refused("internal: no container interface yet".into()))
    }

    /// The index of a host link: known at plan time, or created by this run.
    fn parent_index(&self, name: &IfName, known: Option<u32>) -> Result<u32> {
        match known {
            Some(i) => Ok(i),
            None => self
                .host_index
                .get(name)
                .copied()
                .ok_or_else(|| Error::Refused(format!("internal: {name} has no index"))),
        }
    }

    /// A child link (macvlan, ipvlan) was just created in the container: read
    /// it back and give it pipe's ownership tag.
    async fn adopt_child(&mut self, guest: &IfName) -> Result<()> {
        self.read_guest_link(guest).await?;
        let idx = self.guest_index()?;
        let label = &self.target.label;
        let tag = crate::state::tag(label, guest.as_str());
        self.guest
            .set_alias(idx, &tag, None)
            .await
            .map_err(|c| Error::kernel(format!("tagging {guest} in container {label}"), c))
    }

    async fn read_guest_link(&mut self, name: &IfName) -> Result<()> {
        let label = &self.target.label;
        let l = self
            .guest
            .link(name.as_str())
            .await
            .map_err(|c| Error::kernel(format!("reading back {name} in container {label}"), c))?
            .ok_or_else(|| {
                Error::Refused(format!(
                    "{name} vanished from container {label} right after it was created"
                ))
            })?;
        self.guest_link = Some(l);
        Ok(())
    }

    async fn step(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        debug!("step: {step}");
        let label = self.target.label.clone();
        match step {
            Step::LinkNetns {
                name,
                replace_stale,
            } => {
                let path = netns::link_path(name);
                if *replace_stale {
                    netns::remove_link(name).map_err(|e| {
                        Error::Refused(format!("removing stale {}: {e}", path.display()))
                    })?;
                }
                netns::create_link(name, &self.target.netns).map_err(|e| {
                    Error::Refused(format!(
                        "linking the namespace of {label} at {}: {e}; pass --no-netns-link to skip this",
                        path.display()
                    ))
                })?;
                undo.push(Undo::RemoveNetnsLink(name.clone()));
            }
            Step::CreateBridge { name } => {
                let l = NewLink {
                    name: name.as_str(),
                    up: true,
                    ..Default::default()
                };
                self.host
                    .create_bridge(&l)
                    .await
                    .map_err(|c| Error::kernel(format!("creating bridge {name}"), c))?;
                undo.push(Undo::DeleteHostLink(name.clone()));
                let b = self
                    .host
                    .link(name.as_str())
                    .await
                    .map_err(|c| Error::kernel(format!("reading back bridge {name}"), c))?
                    .ok_or_else(|| {
                        Error::Refused(format!("bridge {name} vanished after creation"))
                    })?;
                // Ownership tag: gc and detach remove only bridges pipe made.
                self.host
                    .set_alias(b.index, crate::state::SHARED_TAG, None)
                    .await
                    .map_err(|c| Error::kernel(format!("tagging bridge {name}"), c))?;
                self.host_index.insert(name.clone(), b.index);
            }
            Step::HostUp { name, index } => {
                self.host.set_up(*index, true).await.map_err(|c| {
                    let e = Error::kernel(format!("bringing host interface {name} up"), c);
                    // ENETDOWN: a VLAN (or similar) device whose own lower device is down.
                    if e.errno() == Some(100) {
                        e.with_hint(format!(
                            "{name} cannot come up while the device under it is down; \
                             bring that one up first (ip -d link show {name} names it)"
                        ))
                    } else {
                        e
                    }
                })?;
                undo.push(Undo::HostDown(name.clone(), *index));
            }
            Step::CreateVeth {
                host,
                guest,
                bridge,
                bridge_index,
                mtu,
                host_mtu,
                mac,
            } => {
                let master = match bridge_index {
                    Some(i) => *i,
                    None => *self.host_index.get(bridge).ok_or_else(|| {
                        Error::Refused(format!("internal: bridge {bridge} has no index"))
                    })?,
                };
                let h = NewLink {
                    name: host.as_str(),
                    mtu: Some(*host_mtu),
                    up: true,
                    master: Some(master),
                    ..Default::default()
                };
                let p = NewLink {
                    name: guest.as_str(),
                    mtu: Some(*mtu),
                    mac: *mac,
                    // The peer cannot be created up: it is configured before its
                    // other end exists, and veth_open() refuses with ENOTCONN.
                    up: false,
                    netns: Some(self.target.netns.fd.as_fd()),
                    ..Default::default()
                };
                self.host.create_veth(&h, &p).await.map_err(|c| {
                    let hint = match c.errno {
                        17 => Some(format!(
                            "{host} or {guest} exists already; choose other names with -l / -i"
                        )),
                        _ => None,
                    };
                    let e = Error::kernel(
                        format!(
                            "creating veth {host} (host, in bridge {bridge}) / {guest} (container {label})"
                        ),
                        c,
                    );
                    e.with_hint_opt(hint)
                })?;
                undo.push(Undo::DeleteHostLink(host.clone()));
                self.read_guest_link(guest).await?;
                let idx = self.guest_index()?;
                // Both ends carry the ownership tag; the kernel ignores an alias
                // in RTM_NEWLINK, so it rides on the request that brings the peer up.
                let tag = crate::state::tag(&label, guest.as_str());
                self.guest
                    .set_alias(idx, &tag, Some(true))
                    .await
                    .map_err(|c| {
                        Error::kernel(format!("bringing {guest} up in container {label}"), c)
                    })?;
                self.host
                    .set_alias_named(host.as_str(), &tag)
                    .await
                    .map_err(|c| Error::kernel(format!("tagging host interface {host}"), c))?;
            }
            Step::CreateMacvlan {
                parent,
                parent_index,
                guest,
                mode,
                mtu,
                mac,
            } => {
                let parent_index = self.parent_index(parent, *parent_index)?;
                let l = NewLink {
                    name: guest.as_str(),
                    mtu: Some(*mtu),
                    mac: *mac,
                    up: true,
                    netns: Some(self.target.netns.fd.as_fd()),
                    ..Default::default()
                };
                self.host
                    .create_macvlan(&l, parent_index, *mode)
                    .await
                    .map_err(|c| {
                        let hint = match c.errno {
                            16 => Some(format!(
                                "{parent} cannot take a macvlan now (is it a bridge port, or does it carry an ipvlan?); \
                                 attach to its bridge instead"
                            )),
                            22 => Some(format!(
                                "the kernel refused these settings on {parent} (MTU {mtu}, mode {})",
                                mode.as_str()
                            )),
                            _ => None,
                        };
                        let e = Error::kernel(
                            format!("creating macvlan {guest} on {parent} in container {label}"),
                            c,
                        );
                        e.with_hint_opt(hint)
                    })?;
                undo.push(Undo::DeleteGuestLink(guest.clone()));
                self.adopt_child(guest).await?;
            }
            Step::CreateVlan {
                name,
                parent,
                parent_index,
                vid,
                mtu,
            } => {
                let l = NewLink {
                    name: name.as_str(),
                    mtu: Some(*mtu),
                    up: true,
                    ..Default::default()
                };
                self.host
                    .create_vlan(&l, *parent_index, vid.get())
                    .await
                    .map_err(|c| {
                        let hint = missing_feature(c.errno, "802.1Q VLAN", VLAN_FIX)
                            .or_else(|| match c.errno {
                                17 => Some(format!(
                                    "VLAN {vid} on {parent} exists already under another name or in another \
                                     namespace (ip -d link shows \"vlan id {vid}\"); give that device as HOST_IF without @{vid}"
                                )),
                                100 => Some(format!("{parent} is down; bring it up (ip link set {parent} up)")),
                                _ => None,
                            });
                        let e = Error::kernel(
                            format!("creating 802.1Q sub-interface {name} (VLAN {vid}) on {parent}"),
                            c,
                        );
                        e.with_hint_opt(hint)
                    })?;
                undo.push(Undo::DeleteHostLink(name.clone()));
                let v = self
                    .host
                    .link(name.as_str())
                    .await
                    .map_err(|c| Error::kernel(format!("reading back {name}"), c))?
                    .ok_or_else(|| Error::Refused(format!("{name} vanished after creation")))?;
                // Ownership tag: detach and gc remove it once no attachment uses it.
                self.host
                    .set_alias(v.index, crate::state::SHARED_TAG, None)
                    .await
                    .map_err(|c| Error::kernel(format!("tagging {name}"), c))?;
                self.host_index.insert(name.clone(), v.index);
            }
            Step::CreateIpvlan {
                parent,
                parent_index,
                guest,
                mode,
                mtu,
            } => {
                let parent_index = self.parent_index(parent, *parent_index)?;
                let l = NewLink {
                    name: guest.as_str(),
                    mtu: Some(*mtu),
                    up: true,
                    netns: Some(self.target.netns.fd.as_fd()),
                    ..Default::default()
                };
                self.host
                    .create_ipvlan(&l, parent_index, *mode)
                    .await
                    .map_err(|c| {
                        let hint = missing_feature(
                            c.errno,
                            "ipvlan",
                            "load its module (modprobe ipvlan), or drop --ipvlan to use a macvlan",
                        )
                            .or_else(|| match c.errno {
                                16 => Some(format!(
                                    "{parent} already carries a macvlan or is a bridge port, and the kernel \
                                     allows no ipvlan there; drop --ipvlan to use a macvlan, or give another parent"
                                )),
                                22 => Some(format!(
                                    "the kernel refused these settings on {parent} (MTU {mtu}, mode {}); \
                                     an ipvlan needs an Ethernet parent that is not itself an ipvlan",
                                    mode.as_str()
                                )),
                                _ => None,
                            });
                        let e = Error::kernel(
                            format!(
                                "creating ipvlan {guest} (mode {}) on {parent} in container {label}",
                                mode.as_str()
                            ),
                            c,
                        );
                        e.with_hint_opt(hint)
                    })?;
                undo.push(Undo::DeleteGuestLink(guest.clone()));
                self.adopt_child(guest).await?;
            }
            Step::MoveToGuest {
                host,
                index,
                guest,
                mtu,
                mac,
                old_mtu,
                old_mac,
                old_alias,
                old_up,
            } => {
                let index = &self.parent_index(host, *index)?;
                self.host
                    .move_link(
                        *index,
                        self.target.netns.fd.as_fd(),
                        guest.as_str(),
                        Some(host.as_str()),
                        *mtu,
                        *mac,
                    )
                    .await
                    .map_err(|c| {
                        let hint = match c.errno {
                            22 => Some(format!(
                                "{host} cannot change namespace (loopback, bridges and some drivers are tied to theirs)"
                            )),
                            17 => Some(format!("{guest} exists in container {label}; choose another name with -i")),
                            _ => None,
                        };
                        let e = Error::kernel(
                            format!("moving {host} into container {label} as {guest}"),
                            c,
                        );
                        e.with_hint_opt(hint)
                    })?;
                undo.push(Undo::MoveBack {
                    guest: guest.clone(),
                    restore: Restore {
                        name: host.to_string(),
                        mtu: mtu.map(|_| *old_mtu),
                        mac: mac.and(*old_mac),
                        alias: old_alias.clone().unwrap_or_default(),
                        up: *old_up,
                    },
                });
                self.read_guest_link(guest).await?;
                let idx = self.guest_index()?;
                self.guest.set_up(idx, true).await.map_err(|c| {
                    Error::kernel(format!("bringing {guest} up in container {label}"), c)
                })?;
            }
            Step::BridgeVlanFiltering { bridge, index } => {
                let idx = self.parent_index(bridge, *index)?;
                self.host.set_vlan_filtering(idx, true).await.map_err(|c| {
                    let hint = missing_feature(
                        c.errno,
                        "bridge VLAN filtering",
                        "it needs a kernel built with CONFIG_BRIDGE_VLAN_FILTERING; or drop @VLAN",
                    );
                    let e =
                        Error::kernel(format!("turning on VLAN filtering on bridge {bridge}"), c);
                    e.with_hint_opt(hint)
                })?;
                // A bridge created by this run goes away whole on rollback.
                if index.is_some() {
                    undo.push(Undo::VlanFilteringOff(bridge.clone(), idx));
                }
            }
            Step::BridgeAccessPort {
                port,
                vid,
                drop_vid,
            } => {
                // No undo: the port is the veth created by this run.
                let idx = self
                    .host
                    .link(port.as_str())
                    .await
                    .map_err(|c| Error::kernel(format!("looking up {port}"), c))?
                    .ok_or_else(|| Error::Refused(format!("{port} vanished after creation")))?
                    .index;
                self.host
                    .bridge_vlan_add(idx, vid.get(), true)
                    .await
                    .map_err(|c| {
                        Error::kernel(
                            format!("making {port} an access port of VLAN {vid} (pvid untagged)"),
                            c,
                        )
                    })?;
                if let Some(d) = drop_vid {
                    match self.host.bridge_vlan_del(idx, *d).await {
                        // ENOENT: the port was not in that VLAN after all.
                        Err(c) if c.errno != 2 => {
                            return Err(Error::kernel(
                                format!("taking {port} out of the bridge's default VLAN {d}"),
                                c,
                            ));
                        }
                        _ => {}
                    }
                }
            }
            Step::AddAddress { ifname, addr } => {
                // No undo on a link created by this run: it takes its addresses along.
                let idx = self.guest_index()?;
                self.guest.add_address(idx, *addr).await.map_err(|c| {
                    Error::kernel(format!("adding {addr} to {ifname} in container {label}"), c)
                })?;
                if self.adopted {
                    undo.push(Undo::DeleteAddress(idx, *addr));
                }
            }
            Step::AddGatewayRoute { ifname, gateway } => {
                let idx = self.guest_index()?;
                self.guest.add_host_route(*gateway, idx).await.map_err(|c| {
                    Error::kernel(
                        format!("adding a route to gateway {gateway} on {ifname} in container {label}"),
                        c,
                    )
                })?;
            }
            Step::ReplaceDefault {
                ifname,
                gateway,
                previous,
            } => {
                let idx = self.guest_index()?;
                self.guest.replace_default(*gateway, idx).await.map_err(|c| {
                    Error::kernel(
                        format!("setting the default route of container {label} via {gateway} on {ifname}"),
                        c,
                    )
                    .with_hint("check that the gateway is a router's address on that link")
                })?;
                undo.push(match previous {
                    Some(r) => Undo::RestoreRoute(r.clone()),
                    None => Undo::DeleteDefault {
                        v6: gateway.is_ipv6(),
                    },
                });
            }
            Step::Adopt { link } => {
                self.guest_link = Some(link.clone());
                self.adopted = true;
            }
            Step::DeleteAddress { ifname, addr } => {
                let idx = self.guest_index()?;
                self.guest.delete_address(idx, *addr).await.map_err(|c| {
                    Error::kernel(
                        format!("removing {addr} from {ifname} in container {label}"),
                        c,
                    )
                })?;
                undo.push(Undo::AddAddress(idx, *addr));
            }
            Step::AcceptRaOff { ifname } => {
                crate::netns::set_sysctl(
                    &self.target.netns,
                    &format!("net/ipv6/conf/{ifname}/accept_ra"),
                    "0",
                )
                .map_err(|e| {
                    Error::kernel(
                        format!(
                            "turning off router advertisements on {ifname} in container {label}"
                        ),
                        crate::error::KernelCause::from_io(&e),
                    )
                })?;
            }
            Step::Shape {
                ifname,
                rate,
                burst,
                limit,
            } => {
                let idx = self.guest_index()?;
                self.guest
                    .set_tbf(idx, rate.bytes_per_sec, *burst, *limit)
                    .await
                    .map_err(|c| {
                        Error::kernel(
                            format!("shaping {ifname} in container {label} to {rate}"),
                            c,
                        )
                        .with_hint("the kernel needs the tbf qdisc (CONFIG_NET_SCH_TBF)")
                    })?;
            }
            Step::Dhcp {
                ifname,
                client,
                previous,
            } => {
                let idx = self.guest_index()?;
                let l = self
                    .guest_link
                    .clone()
                    .ok_or_else(|| Error::Refused("internal: no container interface yet".into()))?;
                if *client != crate::spec::DhcpClient::Native {
                    return crate::dhcp_ext::run(*client, self.target, ifname.as_str());
                }
                let mac = l.mac.ok_or_else(|| {
                    Error::Refused(format!("{ifname} has no MAC address; DHCP needs one"))
                })?;
                let sock =
                    crate::dhcp::socket_in(&self.target.netns, ifname.as_str()).map_err(|e| {
                        Error::kernel(
                            format!("opening a DHCP socket on {ifname} in container {label}"),
                            crate::error::KernelCause::from_io(&e),
                        )
                    })?;
                let hostname = crate::dhcp_ext::hostname(&label);
                let lease = crate::dhcp::obtain(&sock, mac, hostname.as_deref(), crate::dhcp_ext::timeout())
                    .map_err(|e| {
                        Error::Refused(format!(
                            "DHCP on {ifname} in container {label}: {e}; check that a DHCP server serves that network, or give an address"
                        ))
                    })?;
                debug!("dhcp: lease {lease:?}");
                undo.push(Undo::ReleaseLease {
                    ifname: ifname.clone(),
                    mac,
                    lease: lease.clone(),
                });
                self.guest
                    .set_address_lifetime(idx, lease.net(), lease.lease_secs, lease.lease_secs)
                    .await
                    .map_err(|c| {
                        Error::kernel(
                            format!(
                                "adding leased {} to {ifname} in container {label}",
                                lease.net()
                            ),
                            c,
                        )
                    })?;
                if let Some(gw) = lease.router {
                    self.guest
                        .replace_default(std::net::IpAddr::V4(gw), idx)
                        .await
                        .map_err(|c| {
                            Error::kernel(
                                format!("setting the default route of container {label} via {gw} (from the lease)"),
                                c,
                            )
                        })?;
                    undo.push(match previous {
                        Some(r) => Undo::RestoreRoute(r.clone()),
                        None => Undo::DeleteDefault { v6: false },
                    });
                }
                if let Err(e) = crate::announce::announce(
                    &self.target.netns,
                    idx,
                    mac,
                    std::net::IpAddr::V4(lease.addr),
                ) {
                    warn!("could not announce {} on {ifname}: {e}", lease.addr);
                }
                let st = crate::dhcp::KeeperState {
                    label: label.clone(),
                    ifname: ifname.to_string(),
                    mac: mac.to_string(),
                    ns_path: self.target.netns.path.clone(),
                    ns_dev: self.target.netns.id.dev,
                    ns_ino: self.target.netns.id.ino,
                    hostname,
                    lease: lease.clone(),
                    bound_at: crate::dhcp::now_unix(),
                    renewals: 0,
                };
                crate::dhcp::start_keeper(&st).map_err(|e| {
                    Error::Refused(format!(
                        "starting the DHCP lease keeper for {ifname} in container {label}: {e}"
                    ))
                })?;
                undo.push(Undo::StopKeeper {
                    ifname: ifname.clone(),
                });
                self.leased = Some(lease);
            }
            Step::Announce { ifname, addr } => {
                // A nudge, like pipework's `arping ... || true`: a failure to
                // send is logged, never a reason to undo a working attach.
                let l = self
                    .guest_link
                    .as_ref()
                    .ok_or_else(|| Error::Refused("internal: no container interface yet".into()))?;
                match l.mac {
                    // IPv4: let the kernel send it (no AF_PACKET socket to close);
                    // devices that cannot re-set their MAC fall back to a frame.
                    Some(mac)
                        if addr.is_ipv4()
                            && self.guest.kernel_arp_announce(l.index, mac).await.is_ok() => {}
                    Some(mac) => {
                        if let Err(e) =
                            crate::announce::announce(&self.target.netns, l.index, mac, *addr)
                        {
                            warn!(
                                "could not announce {addr} on {ifname} in container {label}: {e}"
                            );
                        }
                    }
                    None => debug!("{ifname} has no MAC; nothing to announce"),
                }
            }
        }
        Ok(())
    }
}

/// An undo that finds its link gone (ENODEV) has nothing left to do.
fn already_gone(
    c: crate::error::KernelCause,
) -> std::result::Result<(), crate::error::KernelCause> {
    if c.errno == libc::ENODEV {
        debug!("undo: already gone");
        Ok(())
    } else {
        Err(c)
    }
}

/// Run the undos in reverse; return a description of each one that failed.
async fn rollback(
    undo: Vec<Undo>,
    target: &Target,
    host: &Netlink,
    guest: &Netlink,
) -> Vec<String> {
    let mut fails = Vec::new();
    for u in undo.into_iter().rev() {
        debug!("undo: {u:?}");
        let r: std::result::Result<(), String> = match &u {
            Undo::RemoveNetnsLink(name) => netns::remove_link(name)
                .map_err(|e| format!("{}: {e}", netns::link_path(name).display())),
            // Deleting one end of a veth takes the other along, and a link
            // whose namespace went away is gone: "No such device" is done.
            Undo::DeleteHostLink(name) => host
                .delete_link_named(name.as_str())
                .await
                .or_else(already_gone)
                .map_err(|c| format!("host interface {name} ({c})")),
            Undo::DeleteGuestLink(name) => guest
                .delete_link_named(name.as_str())
                .await
                .or_else(already_gone)
                .map_err(|c| format!("{name} in container {} ({c})", target.label)),
            Undo::HostDown(name, index) => host
                .set_up(*index, false)
                .await
                .map_err(|c| format!("bring {name} down again ({c})")),
            Undo::ReleaseLease { ifname, mac, lease } => {
                crate::dhcp::socket_in(&target.netns, ifname.as_str())
                    .map_err(|e| e.to_string())
                    .and_then(|s| crate::dhcp::send_release(&s, *mac, lease))
                    .map_err(|e| format!("the DHCP lease of {} ({e})", lease.addr))
            }
            Undo::StopKeeper { ifname } => {
                crate::dhcp::stop_keeper(
                    &target.label,
                    ifname.as_str(),
                    std::time::Duration::from_secs(3),
                );
                Ok(())
            }
            Undo::RestoreRoute(r) => guest
                .restore_route(r)
                .await
                .map_err(|c| format!("the previous default route of {} ({c})", target.label)),
            Undo::DeleteDefault { v6 } => guest
                .delete_default(*v6)
                .await
                .map_err(|c| format!("the new default route of {} ({c})", target.label)),
            Undo::VlanFilteringOff(name, index) => host
                .set_vlan_filtering(*index, false)
                .await
                .map_err(|c| format!("turn VLAN filtering on bridge {name} off again ({c})")),
            Undo::MoveBack { guest: g, restore } => move_back(guest, host, g.as_str(), restore)
                .await
                .map_err(|c| {
                    format!(
                        "move {g} of container {} back to the host as {} ({c})",
                        target.label, restore.name
                    )
                }),
            Undo::DeleteAddress(i, a) => guest
                .delete_address(*i, *a)
                .await
                .map_err(|c| format!("address {a} added in {} ({c})", target.label)),
            Undo::AddAddress(i, a) => guest
                .add_address(*i, *a)
                .await
                .map_err(|c| format!("address {a} removed in {} ({c})", target.label)),
        };
        if let Err(e) = r {
            warn!("rollback: could not undo {e}");
            fails.push(e);
        }
    }
    fails
}

/// What a host link moved into a container looks like back on the host.
#[derive(Debug)]
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

/// Move `name` from the container back into pipe's own (the host's) namespace
/// as it was: the undo of `--direct-phys`, and what `detach` does for it.
pub async fn move_back(
    guest: &Netlink,
    host: &Netlink,
    name: &str,
    r: &Restore,
) -> std::result::Result<(), crate::error::KernelCause> {
    let l = guest.link(name).await?.ok_or(crate::error::KernelCause {
        errno: 19,
        detail: None,
    })?;
    // The main thread never leaves the host's namespace: /proc/self/ns/net is it.
    let own = std::fs::File::open("/proc/self/ns/net")
        .map_err(|e| crate::error::KernelCause::from_io(&e))?;
    guest
        .move_link(l.index, own.as_fd(), &r.name, Some(&r.alias), r.mtu, r.mac)
        .await?;
    if r.up
        && let Some(h) = host.link(&r.name).await?
    {
        host.set_up(h.index, true).await?;
    }
    Ok(())
}
