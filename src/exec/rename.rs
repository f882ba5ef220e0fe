//! Creating a macvlan or ipvlan directly in the container, under its final
//! name even when the host has a link of that name.
//!
//! Debian's 6.1 kernel (measured in the VM tier) refuses with EEXIST a new
//! link whose name exists in the namespace that sends the request, although
//! the link is created in the container's: a host uplink `eth1` and the
//! container's default `eth1` collide. Then, as the CNI plugins do, the link is
//! created under a temporary name and renamed inside the container.

use crate::domain::spec::{IpvlanMode, MacvlanMode};
use crate::sys::netlink::{NewLink, NlResult};

use super::Exec;

#[derive(Clone, Copy)]
pub(super) enum Child {
    Macvlan(MacvlanMode),
    Ipvlan(IpvlanMode),
}

/// A name no link of pipe's has: `pipetmp` and 8 hex digits (15 bytes).
fn temp_name() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("pipetmp{:08x}", t ^ std::process::id().rotate_left(20))
}

impl Exec<'_> {
    async fn create_as(&self, l: &NewLink<'_>, parent: u32, kind: Child) -> NlResult<()> {
        match kind {
            Child::Macvlan(m) => self.host.create_macvlan(l, parent, m).await,
            Child::Ipvlan(m) => self.host.create_ipvlan(l, parent, m).await,
        }
    }

    /// Create the child `l` in the container (`l.netns`), renaming through a
    /// temporary name if the host's own link of that name is in the way.
    pub(super) async fn create_child(
        &self,
        l: &NewLink<'_>,
        parent: u32,
        kind: Child,
    ) -> NlResult<()> {
        let r = self.create_as(l, parent, kind).await;
        match &r {
            Err(c) if c.errno == 17 => {}
            _ => return r,
        }
        // EEXIST: the container has no such link (planning checked), so the
        // name the kernel found is the host's.
        if !matches!(self.host.link(l.name).await, Ok(Some(_))) {
            return r;
        }
        let tmp = temp_name();
        log::debug!("{} exists on the host: creating it as {tmp} first", l.name);
        self.create_as(
            &NewLink {
                name: &tmp,
                up: false,
                ..*l
            },
            parent,
            kind,
        )
        .await?;
        let fix = async {
            let link = self
                .guest
                .link(&tmp)
                .await?
                .ok_or(crate::domain::error::KernelCause {
                    errno: 19,
                    detail: Some(format!("{tmp} vanished from the container")),
                })?;
            self.guest.rename(link.index, l.name).await?;
            if l.up {
                self.guest.set_up(link.index, true).await?;
            }
            Ok::<u32, crate::domain::error::KernelCause>(link.index)
        };
        match fix.await {
            Ok(_) => Ok(()),
            Err(c) => {
                // Nothing half-made stays behind (whatever its name is now).
                for n in [tmp.as_str(), l.name] {
                    if let Ok(Some(x)) = self.guest.link(n).await
                        && x.kind.as_deref()
                            == Some(match kind {
                                Child::Macvlan(_) => "macvlan",
                                Child::Ipvlan(_) => "ipvlan",
                            })
                        && x.alias.is_none()
                    {
                        let _ = self.guest.delete_link(x.index).await;
                    }
                }
                Err(c)
            }
        }
    }
}
