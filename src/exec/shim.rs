//! `--host-shim`: a host-side sibling of the container's link on the parent
//! (a macvlan in bridge mode, or an ipvlan in the container's mode; shared) and
//! a host route per container address through it, so the host reaches its own
//! macvlan and ipvlan containers (the kernel never delivers between a child
//! and its parent).

use super::*;

impl Exec<'_> {
    /// Create the shim `name` on `parent` (a macvlan in bridge mode, or an
    /// ipvlan of mode `ipvlan`; up, tagged shared), or join it when it exists
    /// and is one. Returns its index.
    async fn ensure_shim(
        &mut self,
        name: &IfName,
        parent: &IfName,
        parent_index: u32,
        ipvlan: Option<crate::domain::spec::IpvlanMode>,
        undo: &mut Vec<Undo>,
    ) -> Result<u32> {
        let l = NewLink {
            name: name.as_str(),
            up: true,
            ..Default::default()
        };
        let kind = if ipvlan.is_some() {
            "ipvlan"
        } else {
            "macvlan"
        };
        let r = match ipvlan {
            Some(m) => self.host.create_ipvlan(&l, parent_index, m).await,
            None => {
                self.host
                    .create_macvlan(&l, parent_index, crate::domain::spec::MacvlanMode::Bridge)
                    .await
            }
        };
        let created = match r {
            Ok(()) => true,
            Err(c) if c.errno == 17 => false,
            Err(c) => {
                return Err(Error::kernel(
                    format!("creating the host shim {name} ({kind} on {parent})"),
                    c,
                ));
            }
        };
        if created {
            undo.push(Undo::ReleaseShared {
                name: name.clone(),
                untagged: true,
                except: Some(self.id.clone()),
            });
        }
        let d = self
            .host
            .link_detail(name.as_str())
            .await
            .map_err(|c| Error::kernel(format!("reading back {name}"), c))?
            .ok_or_else(|| Error::Refused(format!("{name} vanished after creation; try again")))?;
        if d.link.kind.as_deref() != Some(kind) || d.parent != Some(parent_index) {
            return Err(Error::Refused(format!(
                "{name} exists and is not a {kind} on {parent} (it is a {}); remove it or rename it, pipe uses that name for the host shim",
                d.link.kind.as_deref().unwrap_or("device")
            )));
        }
        if created {
            self.host
                .set_alias(d.link.index, SHARED_TAG, None)
                .await
                .map_err(|c| Error::kernel(format!("tagging {name}"), c))?;
        } else if !d.link.up {
            self.host
                .set_up(d.link.index, true)
                .await
                .map_err(|c| Error::kernel(format!("bringing {name} up"), c))?;
        }
        Ok(d.link.index)
    }

    pub(super) async fn shim(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        let Step::EnsureShim {
            name,
            parent,
            parent_index,
            ipvlan,
        } = step
        else {
            unreachable!("dispatched by kind")
        };
        let parent_index = match self.parent_index(parent, *parent_index) {
            Ok(i) => i,
            // A re-run: the parent exists and was not looked up by the plan.
            Err(_) => {
                self.host
                    .link(parent.as_str())
                    .await
                    .map_err(|c| Error::kernel(format!("looking up {parent}"), c))?
                    .ok_or_else(|| Error::Refused(format!("{parent} vanished")))?
                    .index
            }
        };
        let index = self
            .ensure_shim(name, parent, parent_index, *ipvlan, undo)
            .await?;
        self.host_index.insert(name.clone(), index);
        Ok(())
    }

    pub(super) async fn shim_route(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        let Step::ShimRoute { shim, dst } = step else {
            unreachable!("dispatched by kind")
        };
        let idx = self.parent_index(shim, None)?;
        self.host.add_host_route(*dst, idx).await.map_err(|c| {
            Error::kernel(format!("adding the host route to {dst} through {shim}"), c)
        })?;
        undo.push(Undo::DeleteHostRoute {
            dst: *dst,
            dev: shim.clone(),
        });
        Ok(())
    }

    /// No undo: a rollback puts the address back, and a re-run puts the route back.
    pub(super) async fn shim_unroute(&mut self, step: &Step) -> Result<()> {
        let Step::ShimUnroute { shim, dst } = step else {
            unreachable!("dispatched by kind")
        };
        let idx = self.parent_index(shim, None)?;
        match self.host.delete_host_route(*dst, idx).await {
            Err(c) if !matches!(c.errno, 2 | 3) => Err(Error::kernel(
                format!("deleting the host route to {dst} through {shim}"),
                c,
            )),
            _ => Ok(()),
        }
    }
}
