//! The container's /var/run/netns name, and host links brought up.

use super::*;

impl Exec<'_> {
    pub(super) async fn link_netns(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        let Step::LinkNetns {
            name,
            replace_stale,
        } = step
        else {
            unreachable!("dispatched by kind")
        };
        let label = self.target.label.clone();
        let path = netns::link_path(name);
        let name: crate::domain::identity::NetnsName =
            name.clone().try_into().map_err(Error::Refused)?;
        if *replace_stale {
            // Stale: a dangling symlink, or one pipe made for a namespace now gone.
            let _ = std::fs::symlink_metadata(&path)
                .ok()
                .filter(|m| m.file_type().is_symlink())
                .map(|_| std::fs::remove_file(&path));
            let _ = self.store.unmark_netns(name.as_str());
        }
        netns_link::create_link(self.store, &name, &self.target.netns).map_err(|e| {
            Error::Refused(format!(
                "linking the namespace of {label} at {}: {e}; pass --no-netns-link to skip this",
                path.display()
            ))
        })?;
        undo.push(Undo::RemoveNetnsLink {
            name,
            ns: self.target.netns.id.into(),
        });
        Ok(())
    }

    pub(super) async fn host_up(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        let Step::HostUp { name, index } = step else {
            unreachable!("dispatched by kind")
        };
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
        undo.push(Undo::HostDownIfUnused {
            name: name.clone(),
            index: *index,
            except: Some(self.id.clone()),
        });
        Ok(())
    }
}
