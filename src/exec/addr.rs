//! Addresses, routes, shaping, router advertisements and announcements inside
//! the container, on the interface this run created or adopted.

use super::*;

impl Exec<'_> {
    pub(super) async fn add_address(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        let Step::AddAddress { ifname, addr } = step else {
            unreachable!("dispatched by kind")
        };
        let label = self.target.label.clone();
        // No undo on a link created by this run: it takes its addresses along.
        let idx = self.guest_index()?;
        self.guest.add_address(idx, *addr).await.map_err(|c| {
            Error::kernel(format!("adding {addr} to {ifname} in container {label}"), c)
        })?;
        if self.adopted {
            undo.push(Undo::DeleteAddress(idx, *addr));
        }
        Ok(())
    }

    pub(super) async fn add_gateway_route(
        &mut self,
        step: &Step,
        _undo: &mut Vec<Undo>,
    ) -> Result<()> {
        let Step::AddGatewayRoute { ifname, gateway } = step else {
            unreachable!("dispatched by kind")
        };
        let label = self.target.label.clone();
        let idx = self.guest_index()?;
        self.guest
            .add_host_route(*gateway, idx)
            .await
            .map_err(|c| {
                Error::kernel(
                    format!("adding a route to gateway {gateway} on {ifname} in container {label}"),
                    c,
                )
            })?;
        Ok(())
    }

    pub(super) async fn replace_default(
        &mut self,
        step: &Step,
        undo: &mut Vec<Undo>,
    ) -> Result<()> {
        let Step::ReplaceDefault {
            ifname,
            gateway,
            previous,
        } = step
        else {
            unreachable!("dispatched by kind")
        };
        let label = self.target.label.clone();
        let idx = self.guest_index()?;
        self.guest
            .replace_default(*gateway, idx)
            .await
            .map_err(|c| {
                Error::kernel(
                    format!(
                        "setting the default route of container {label} via {gateway} on {ifname}"
                    ),
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
        Ok(())
    }

    pub(super) async fn adopt(&mut self, step: &Step, _undo: &mut Vec<Undo>) -> Result<()> {
        let Step::Adopt { link } = step else {
            unreachable!("dispatched by kind")
        };
        self.guest_link = Some(link.clone());
        self.adopted = true;
        Ok(())
    }

    pub(super) async fn delete_address(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        let Step::DeleteAddress { ifname, addr } = step else {
            unreachable!("dispatched by kind")
        };
        let label = self.target.label.clone();
        let idx = self.guest_index()?;
        self.guest.delete_address(idx, *addr).await.map_err(|c| {
            Error::kernel(
                format!("removing {addr} from {ifname} in container {label}"),
                c,
            )
        })?;
        undo.push(Undo::AddAddress(idx, *addr));
        Ok(())
    }

    pub(super) async fn accept_ra_off(&mut self, step: &Step, _undo: &mut Vec<Undo>) -> Result<()> {
        let Step::AcceptRaOff { ifname } = step else {
            unreachable!("dispatched by kind")
        };
        let label = self.target.label.clone();
        crate::sys::netns::set_sysctl(
            &self.target.netns,
            &format!("net/ipv6/conf/{ifname}/accept_ra"),
            "0",
        )
        .map_err(|e| {
            Error::kernel(
                format!("turning off router advertisements on {ifname} in container {label}"),
                crate::domain::error::KernelCause::from_io(&e),
            )
        })?;
        Ok(())
    }

    pub(super) async fn shape(&mut self, step: &Step, _undo: &mut Vec<Undo>) -> Result<()> {
        let Step::Shape {
            ifname,
            rate,
            burst,
            limit,
        } = step
        else {
            unreachable!("dispatched by kind")
        };
        let label = self.target.label.clone();
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
        Ok(())
    }

    pub(super) async fn announce(&mut self, step: &Step, _undo: &mut Vec<Undo>) -> Result<()> {
        let Step::Announce { ifname, addr } = step else {
            unreachable!("dispatched by kind")
        };
        let label = self.target.label.clone();
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
                    && self
                        .guest
                        .kernel_arp_announce(l.index, mac, self.arp_notify)
                        .await
                        .is_ok() => {}
            Some(mac) => {
                if let Err(e) =
                    crate::sys::announce::announce(&self.target.netns, l.index, mac, *addr)
                {
                    warn!("could not announce {addr} on {ifname} in container {label}: {e}");
                }
            }
            None => debug!("{ifname} has no MAC; nothing to announce"),
        }
        Ok(())
    }
}
