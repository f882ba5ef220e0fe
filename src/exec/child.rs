//! Links that hang on a host parent: macvlan and ipvlan born in the container,
//! 802.1Q sub-interfaces on the host (shared: joined when another run made it).

use super::rename::Child;
use super::*;
use crate::domain::error::KernelCause;
use crate::domain::spec::Mac;

impl Exec<'_> {
    pub(super) async fn create_macvlan(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        let Step::CreateMacvlan {
            parent,
            parent_index,
            guest,
            mode,
            mtu,
            mac,
        } = step
        else {
            unreachable!("dispatched by kind")
        };
        let label = &self.target.label;
        let fail = |c: KernelCause| {
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
            Error::kernel(
                format!("creating macvlan {guest} on {parent} in container {label}"),
                c,
            )
            .with_hint_opt(hint)
        };
        let kind = Child::Macvlan(*mode);
        self.child_in_guest(guest, parent, *parent_index, *mtu, *mac, kind, fail, undo)
            .await
    }

    pub(super) async fn create_vlan(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        let Step::CreateVlan {
            name,
            parent,
            parent_index,
            vid,
            mtu,
        } = step
        else {
            unreachable!("dispatched by kind")
        };
        let l = NewLink {
            name: name.as_str(),
            mtu: Some(*mtu),
            up: true,
            ..Default::default()
        };
        let r = self.host.create_vlan(&l, *parent_index, vid.get()).await;
        // Another attach created the same sub-interface meanwhile: join it.
        if let Err(c) = &r
            && c.errno == 17
            && let Ok(Some(d)) = self.host.link_detail(name.as_str()).await
            && d.vlan.map(|v| v.0) == Some(vid.get())
            && d.parent == Some(*parent_index)
        {
            debug!("{name} appeared meanwhile: joining it");
            self.host_index.insert(name.clone(), d.link.index);
            return Ok(());
        }
        r.map_err(|c| {
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
        undo.push(Undo::ReleaseShared {
            name: name.clone(),
            untagged: true,
            except: Some(self.id.clone()),
        });
        let v = self
            .host
            .link(name.as_str())
            .await
            .map_err(|c| Error::kernel(format!("reading back {name}"), c))?
            .ok_or_else(|| Error::Refused(format!("{name} vanished after creation")))?;
        // Ownership tag: detach and gc remove it once no attachment uses it.
        self.host
            .set_alias(v.index, SHARED_TAG, None)
            .await
            .map_err(|c| Error::kernel(format!("tagging {name}"), c))?;
        self.host_index.insert(name.clone(), v.index);
        Ok(())
    }

    pub(super) async fn create_ipvlan(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        let Step::CreateIpvlan {
            parent,
            parent_index,
            guest,
            mode,
            mtu,
        } = step
        else {
            unreachable!("dispatched by kind")
        };
        let label = &self.target.label;
        let fail = |c: KernelCause| {
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
            Error::kernel(
                format!(
                    "creating ipvlan {guest} (mode {}) on {parent} in container {label}",
                    mode.as_str()
                ),
                c,
            )
            .with_hint_opt(hint)
        };
        let kind = Child::Ipvlan(*mode);
        self.child_in_guest(guest, parent, *parent_index, *mtu, None, kind, fail, undo)
            .await
    }

    /// A macvlan or ipvlan `guest` born up in the container on `parent`:
    /// created (`fail` words a refusal), its undo pushed, read back and tagged.
    #[allow(clippy::too_many_arguments)]
    async fn child_in_guest(
        &mut self,
        guest: &IfName,
        parent: &IfName,
        parent_index: Option<u32>,
        mtu: u32,
        mac: Option<Mac>,
        kind: Child,
        fail: impl FnOnce(KernelCause) -> Error,
        undo: &mut Vec<Undo>,
    ) -> Result<()> {
        let parent_index = self.parent_index(parent, parent_index)?;
        let l = NewLink {
            name: guest.as_str(),
            mtu: Some(mtu),
            mac,
            up: true,
            netns: Some(self.target.netns.fd.as_fd()),
            ..Default::default()
        };
        self.create_child(&l, parent_index, kind)
            .await
            .map_err(fail)?;
        undo.push(Undo::DeleteGuestLink {
            name: guest.clone(),
            owner: Owner::ThisRun,
        });
        self.adopt_child(guest).await?;
        Ok(())
    }
}
