//! `pipe apply FILE`: many attachments in one process.
//!
//! The file has the same format as `pipe watch`'s (see `attachments`). All
//! guests are resolved first, concurrently (Docker lookups overlap); then each
//! attachment is applied on one shared host netlink connection. Each one is
//! atomic on its own (a failure rolls that attachment back and the others go
//! on); the summary says what happened to every entry.

use std::path::Path;

use serde::Serialize;

use crate::attachments;
use crate::error::{Error, Result};
use crate::guest;
use crate::netlink::Netlink;
use crate::report::Report;

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub attached: usize,
    pub already_attached: usize,
    pub failed: usize,
    /// One line per failed entry: which one and why.
    pub errors: Vec<String>,
    /// The reports of the entries that worked (empty with --dry-run).
    pub results: Vec<Report>,
}

impl Summary {
    pub fn line(&self) -> String {
        format!(
            "{} attached, {} already attached, {} failed",
            self.attached, self.already_attached, self.failed
        )
    }
}

pub async fn apply(file: &Path, dry_run: bool, persist: bool) -> Result<Summary> {
    let origin = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| {
        Error::Usage(format!(
            "cannot read {origin}: {e}; give an attachments file"
        ))
    })?;
    let entries = attachments::parse(&text, &origin).map_err(Error::Usage)?;

    let targets = futures::future::join_all(
        entries
            .iter()
            .map(|(_, s)| guest::resolve(&s.guest, s.timeout)),
    )
    .await;
    let host =
        Netlink::current().map_err(|c| Error::kernel("opening a netlink socket on the host", c))?;

    let mut sum = Summary::default();
    for ((entry, spec), target) in entries.iter().zip(targets) {
        let r = match target {
            Ok(t) => crate::attach_resolved(spec, t, &host, dry_run, persist).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(Some(rep)) => {
                if rep.already_attached {
                    sum.already_attached += 1;
                } else {
                    sum.attached += 1;
                }
                sum.results.push(rep);
            }
            Ok(None) => {}
            Err(e) => {
                sum.failed += 1;
                sum.errors
                    .push(format!("{} {}: {e}", entry.container, spec.ifname));
            }
        }
    }
    Ok(sum)
}
