//! `pipe apply FILE`: many attachments in one process.
//!
//! The file has the same format as `pipe watch`'s (see `attachments`). All
//! guests are resolved first, concurrently (Docker lookups overlap); then each
//! attachment is applied on one shared host netlink connection. Each one is
//! atomic on its own (a failure rolls that attachment back and the others go
//! on); the summary says what happened to every entry.

use std::path::Path;

use serde::Serialize;

use crate::domain::attachments;
use crate::domain::error::{Error, Result};
use crate::sys::guest;
use crate::sys::netlink::Netlink;
use crate::verbs::report::Report;

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Entries in the file.
    pub entries: usize,
    /// With --dry-run: entries whose plan was made (each printed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned: Option<usize>,
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
        if let Some(p) = self.planned {
            return format!(
                "{p} planned, {} would fail (dry run: nothing changed)",
                self.failed
            );
        }
        format!(
            "{} attached, {} already attached, {} failed",
            self.attached, self.already_attached, self.failed
        )
    }
}

pub async fn apply(file: &Path, dry_run: bool, persist: bool) -> Result<Summary> {
    let origin = file.display().to_string();
    let text = crate::sys::files::read_text(file).map_err(|e| {
        Error::Usage(format!(
            "cannot read attachments file {origin}: {e}; give an attachments file (TOML, see pipe watch --help)"
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

    let mut sum = Summary {
        entries: entries.len(),
        planned: dry_run.then_some(0),
        ..Summary::default()
    };
    for ((entry, spec), target) in entries.iter().zip(targets) {
        let r = match target {
            Ok(t) => crate::verbs::attach::attach_resolved(spec, t, &host, dry_run, persist).await,
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
            Ok(None) => {
                if let Some(p) = sum.planned.as_mut() {
                    *p += 1;
                }
            }
            Err(e) => {
                sum.failed += 1;
                sum.errors
                    .push(format!("{} {}: {e}", entry.container, spec.ifname));
            }
        }
    }
    Ok(sum)
}
