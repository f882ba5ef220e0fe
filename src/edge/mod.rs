pub mod cli;
pub mod cni;
pub mod complete;
pub mod generate;
pub mod run;
pub mod selftest;
pub mod usage;
