//! Bridges and the veths into them: create or join a bridge (shared), a veth
//! born in the container, VLAN filtering and access ports.

use super::*;

impl Exec<'_> {
    pub(super) async fn create_bridge(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        let Step::CreateBridge { name } = step else {
            unreachable!("dispatched by kind")
        };
        let l = NewLink {
            name: name.as_str(),
            up: true,
            ..Default::default()
        };
        let index = self.ensure_bridge(name, &l, undo).await?;
        self.host_index.insert(name.clone(), index);
        Ok(())
    }

    pub(super) async fn create_veth(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        let Step::CreateVeth {
            host,
            guest,
            bridge,
            bridge_index,
            mtu,
            host_mtu,
            mac,
            ovs,
        } = step
        else {
            unreachable!("dispatched by kind")
        };
        let label = self.target.label.clone();
        // An Open vSwitch port has no kernel master: OvsPort adds it.
        let master = match bridge_index {
            _ if *ovs => None,
            Some(i) => Some(*i),
            None => Some(*self.host_index.get(bridge).ok_or_else(|| {
                Error::Refused(format!("internal: bridge {bridge} has no index"))
            })?),
        };
        let h = NewLink {
            name: host.as_str(),
            mtu: Some(*host_mtu),
            up: true,
            master,
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
        let mut r = self.host.create_veth(&h, &p).await;
        // The bridge was deleted under us (by someone else, between
        // observing it and taking the lock): create it again and join it.
        if let Err(c) = &r
            && let Some(master) = master
            && matches!(c.errno, 19 | 22)
            && self.bridge_gone(bridge, master).await
        {
            let b = NewLink {
                name: bridge.as_str(),
                up: true,
                ..Default::default()
            };
            let master = self.ensure_bridge(bridge, &b, undo).await?;
            r = self
                .host
                .create_veth(
                    &NewLink {
                        master: Some(master),
                        ..h
                    },
                    &p,
                )
                .await;
        }
        r.map_err(|c| {
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
        undo.push(Undo::DeleteHostLink {
            name: host.clone(),
            owner: Owner::ThisRun,
        });
        // Both ends carry the ownership tag; the kernel ignores an alias
        // in RTM_NEWLINK, so it rides on the request that brings the peer up.
        // The two ends are in two namespaces: their requests go out together.
        let tag = self.id.tag();
        let host_tag = async {
            self.host
                .set_alias_named(host.as_str(), &tag)
                .await
                .map_err(|c| Error::kernel(format!("tagging host interface {host}"), c))
        };
        let guest_up = async {
            let l = self.guest_link_named(guest).await?;
            self.guest
                .tag_guest_link(l.index, &tag, Some(true))
                .await
                .map_err(|c| {
                    Error::kernel(format!("bringing {guest} up in container {label}"), c)
                })?;
            Ok::<_, Error>(l)
        };
        let (h, g) = futures::join!(host_tag, guest_up);
        self.guest_link = Some(g?);
        self.arp_notify = true;
        h
    }

    pub(super) async fn bridge_vlan_filtering(
        &mut self,
        step: &Step,
        undo: &mut Vec<Undo>,
    ) -> Result<()> {
        let Step::BridgeVlanFiltering { bridge, index } = step else {
            unreachable!("dispatched by kind")
        };
        let idx = self.parent_index(bridge, *index)?;
        self.host.set_vlan_filtering(idx, true).await.map_err(|c| {
            let hint = missing_feature(
                c.errno,
                "bridge VLAN filtering",
                "it needs a kernel built with CONFIG_BRIDGE_VLAN_FILTERING; or drop @VLAN",
            );
            let e = Error::kernel(format!("turning on VLAN filtering on bridge {bridge}"), c);
            e.with_hint_opt(hint)
        })?;
        // A bridge created by this run goes away whole on rollback.
        if index.is_some() {
            undo.push(Undo::VlanFilteringOff(bridge.clone(), idx));
        }
        Ok(())
    }

    pub(super) async fn bridge_access_port(
        &mut self,
        step: &Step,
        _undo: &mut Vec<Undo>,
    ) -> Result<()> {
        let Step::BridgeAccessPort {
            port,
            vid,
            drop_vid,
        } = step
        else {
            unreachable!("dispatched by kind")
        };
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
        Ok(())
    }
}
