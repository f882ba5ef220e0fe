//! The async runtime every verb runs on: one thread. Namespaces are entered
//! only on short-lived threads of their own (see `netns`), never on this one.

use crate::domain::error::{Error, Result};

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Refused(format!("starting the async runtime: {e}")))
}
