//! `--direct-phys`: a host link moved into the container, and back.

use super::*;

impl Exec<'_> {
    pub(super) async fn move_to_guest(&mut self, step: &Step, undo: &mut Vec<Undo>) -> Result<()> {
        let Step::MoveToGuest {
            host,
            index,
            guest,
            mtu,
            mac,
            old_mtu,
            old_mac,
            old_alias,
            old_up,
        } = step
        else {
            unreachable!("dispatched by kind")
        };
        let label = self.target.label.clone();
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
        self.guest
            .set_up(idx, true)
            .await
            .map_err(|c| Error::kernel(format!("bringing {guest} up in container {label}"), c))?;
        Ok(())
    }
}
