//! The process's output mode: `--json` prints results (and `--dry-run`
//! plans) as JSON. Set once by the edge, read where results are printed.

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// `--json` was given.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}
