//! `pipe watch`: follow the Docker Engine's events and re-apply persistent attachments.

use std::path::Path;

use crate::error::{Error, Result};

pub async fn watch(_file: &Path, _once: bool) -> Result<()> {
    Err(Error::Refused("pipe watch is not implemented yet".into()))
}
