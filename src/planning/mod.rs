pub mod attach;
pub mod journal;
pub mod ops;
pub mod plan_json;
pub mod rerun;
pub mod vlan;
