pub mod cli;
pub mod cni;
pub mod generate;
pub mod plan_json;
pub mod run;
pub mod selftest;
pub mod usage;
