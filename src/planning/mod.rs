pub mod attach;
pub mod journal;
pub mod ops;
pub mod ovs;
pub mod rerun;
pub mod vlan;
