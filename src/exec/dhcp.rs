//! DHCP: pipe's own client (and lease keeper), or pipework's client binaries.

use super::*;

impl Exec<'_> {
    pub(super) async fn dhcp(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        let Step::Dhcp {
            ifname,
            client,
            previous,
        } = step
        else {
            unreachable!("dispatched by kind")
        };
        let label = self.target.label.clone();
        let idx = self.guest_index()?;
        let l = self
            .guest_link
            .clone()
            .ok_or_else(|| Error::Refused("internal: no container interface yet".into()))?;
        if *client != crate::domain::spec::DhcpClient::Native {
            return crate::sys::dhcp_ext::run(*client, self.target, ifname.as_str());
        }
        let mac = l.mac.ok_or_else(|| {
            Error::Refused(format!("{ifname} has no MAC address; DHCP needs one"))
        })?;
        let sock =
            crate::sys::dhcp::socket_in(&self.target.netns, ifname.as_str()).map_err(|e| {
                Error::kernel(
                    format!("opening a DHCP socket on {ifname} in container {label}"),
                    crate::domain::error::KernelCause::from_io(&e),
                )
            })?;
        let hostname = crate::sys::dhcp_ext::hostname(&label);
        let lease = crate::sys::dhcp::obtain(&sock, mac, hostname.as_deref(), crate::sys::dhcp_ext::timeout())
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
        if let Err(e) = crate::sys::announce::announce(
            &self.target.netns,
            idx,
            mac,
            std::net::IpAddr::V4(lease.addr),
        ) {
            warn!("could not announce {} on {ifname}: {e}", lease.addr);
        }
        let st = crate::sys::dhcp::KeeperState {
            label: label.clone(),
            ifname: ifname.to_string(),
            mac: mac.to_string(),
            ns_path: self.target.netns.path.clone(),
            ns_dev: self.target.netns.id.dev,
            ns_ino: self.target.netns.id.ino,
            hostname,
            lease: lease.clone(),
            bound_at: crate::sys::dhcp::now_unix(),
            renewals: 0,
        };
        crate::sys::dhcp::start_keeper(&st).map_err(|e| {
            Error::Refused(format!(
                "starting the DHCP lease keeper for {ifname} in container {label}: {e}"
            ))
        })?;
        undo.push(Undo::StopKeeper {
            label: label.clone(),
            ifname: ifname.clone(),
        });
        self.leased = Some(lease);
        Ok(())
    }
}
