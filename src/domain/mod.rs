pub mod attachments;
pub mod error;
pub mod identity;
pub mod iproute;
pub mod labels;
pub mod output;
pub mod rate;
pub mod spec;
