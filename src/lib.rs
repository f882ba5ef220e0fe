//! `pipe`: give a running container another network interface.
//!
//! The folders are the layers, and imports point down them:
//! `edge` (command line, CNI, generated docs) -> `verbs` (one planner per verb:
//! attach, detach, gc, watch, link, apply, ...) -> `exec` (the one executor)
//! -> `planning` (pure: specs and facts to operations, the journal record)
//! -> `sys` (netlink, namespaces, the Docker Engine, DHCP, the state dir)
//! -> `domain` (typed specs, identity, errors).

pub mod domain;
pub mod edge;
pub mod exec;
pub mod planning;
pub mod sys;
pub mod verbs;
