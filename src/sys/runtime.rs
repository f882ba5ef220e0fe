//! The async runtime every verb runs on: one thread. It enters a container's
//! namespace only inside `netns::run_in`, which opens a socket there and comes
//! back before returning (no await in between, so no other task runs there).

use crate::domain::error::{Error, Result};

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Refused(format!("starting the async runtime: {e}")))
}
