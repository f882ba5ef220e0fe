//! `pipe route`, `pipe rule` and `pipe tc`: pipework's pass-through verbs.
//!
//! Routes and rules are parsed into typed requests (`iproute`) and applied
//! over netlink inside the container; any form pipe does not apply is refused
//! whole, with the exact `ip netns exec NAME ip ...` command to run instead.
//! `tc` runs the host's `tc` binary inside the container's namespace: tc's
//! grammar is huge, and spawning the system tool is the honest answer there.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;

use log::debug;

use crate::domain::error::{Error, KernelCause, Result};
use crate::domain::iproute::{self, Verb};
use crate::domain::spec::GuestRef;
use crate::planning::attach::NsRef;
use crate::sys::guest::{self, Target};
use crate::sys::netlink::Netlink;
use crate::sys::netns;
use crate::sys::netns_link;
use crate::sys::netns_link::LinkState;

/// Which pass-through verb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb3 {
    Route,
    Rule,
    Tc,
}

impl Verb3 {
    fn as_str(self) -> &'static str {
        match self {
            Verb3::Route => "route",
            Verb3::Rule => "rule",
            Verb3::Tc => "tc",
        }
    }
}

/// A word for a shell command line (quoted only when needed).
pub fn shell_quote(s: &str) -> String {
    iproute::shell_word(s)
}

/// How the operator reaches the container's namespace from a shell: its
/// /var/run/netns name when one points at it, else its nsfs path.
pub fn ns_ref(guest: &GuestRef, target: &Target) -> NsRef {
    if let Some(n) = &target.link_name
        && matches!(
            netns_link::link_state(n, &target.netns),
            Ok(LinkState::Same)
        )
    {
        return NsRef::Named(n.clone());
    }
    if let GuestRef::Name(n) = guest
        && matches!(
            netns_link::link_state(n, &target.netns),
            Ok(LinkState::Same)
        )
    {
        return NsRef::Named(n.clone());
    }
    NsRef::Path(target.netns.path.display().to_string())
}

/// Run one verb; the caller has checked privileges.
pub fn run(
    rt: &tokio::runtime::Runtime,
    verb: Verb3,
    guest: GuestRef,
    args: Vec<String>,
    dry_run: bool,
) -> Result<()> {
    let timeout = std::time::Duration::from_secs(5);
    let target = rt.block_on(guest::resolve(&guest, timeout))?;
    let ns = ns_ref(&guest, &target);
    match verb {
        Verb3::Tc => tc(&target, &ns, &args, dry_run),
        Verb3::Route | Verb3::Rule => rt.block_on(ip(verb, &target, &ns, &args, dry_run)),
    }
}

/// The refusal: why, and the command that does it instead.
fn refuse(verb: Verb3, ns: &NsRef, args: &[String], why: &str) -> Error {
    Error::Usage(format!(
        "pipe {v}: {why}; nothing was changed. To run it as given: {} {}",
        ns.exec(),
        iproute::ip_command(verb.as_str(), args),
        v = verb.as_str()
    ))
}

async fn ip(
    verb: Verb3,
    target: &Target,
    ns: &NsRef,
    args: &[String],
    dry_run: bool,
) -> Result<()> {
    let label = &target.label;
    let (route, rule) = match verb {
        Verb3::Route => (
            Some(iproute::parse_route(args).map_err(|e| refuse(verb, ns, args, &e))?),
            None,
        ),
        _ => (
            None,
            Some(iproute::parse_rule(args).map_err(|e| refuse(verb, ns, args, &e))?),
        ),
    };
    let canonical = route
        .as_ref()
        .map(|r| r.to_string())
        .or(rule.as_ref().map(|r| r.to_string()))
        .unwrap_or_default();
    if dry_run {
        println!("{} ip {canonical}", ns.exec());
        return Ok(());
    }
    let sock = netns::socket_in(&target.netns).map_err(|e| {
        Error::kernel(
            format!("entering the network namespace of {label}"),
            KernelCause::from_io(&e),
        )
    })?;
    let nl = Netlink::from_socket(sock)
        .map_err(|c| Error::kernel("opening a netlink socket in the container", c))?;
    let action = format!("ip {canonical} in container {label}");
    if let Some(r) = route {
        let oif = match &r.dev {
            Some(d) => Some(
                nl.link(d.as_str())
                    .await
                    .map_err(|c| Error::kernel(format!("looking up {d} in container {label}"), c))?
                    .ok_or_else(|| {
                        Error::Refused(format!(
                            "container {label} has no interface {d}; check `{} ip link`",
                            ns.exec()
                        ))
                    })?
                    .index,
            ),
            None => None,
        };
        nl.route_request(&r, oif).await.map_err(|c| {
            let hint = match (c.errno, r.verb) {
                (17, _) => Some("that route exists already; use `replace` to change it"),
                (3, Verb::Del) => Some("no such route; compare with `ip route show`"),
                (101, _) => Some(
                    "the gateway is not on a subnet of the container; add `onlink`, or a route to the gateway first",
                ),
                _ => None,
            };
            let e = Error::kernel(action.clone(), c);
            e.with_hint_opt(hint)
        })?;
    } else if let Some(r) = rule {
        nl.rule_request(&r).await.map_err(|c| {
            let hint = match (c.errno, r.verb) {
                (17, _) => Some("an identical rule exists already"),
                (2, Verb::Del) => Some("no such rule; compare with `ip rule show`"),
                _ => None,
            };
            let e = Error::kernel(action.clone(), c);
            e.with_hint_opt(hint)
        })?;
    }
    Ok(())
}

/// Run the host's `tc ARGS` inside the container's namespace, output as is.
fn tc(target: &Target, ns: &NsRef, args: &[String], dry_run: bool) -> Result<()> {
    let shown = {
        let mut s = format!("{} tc", ns.exec());
        for a in args {
            s.push(' ');
            s.push_str(&iproute::shell_word(a));
        }
        s
    };
    if dry_run {
        println!("{shown}");
        return Ok(());
    }
    let fd = target.netns.fd.as_raw_fd();
    let mut cmd = std::process::Command::new("tc");
    cmd.args(args);
    // SAFETY: between fork and exec the child only makes the setns syscall,
    // which is async-signal-safe; `fd` stays open for the parent's lifetime.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    debug!("tc: {shown}");
    let status = cmd.status().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Refused(
            "tc is not installed on this host; install iproute2 (or use --rate on attach, which needs no tc)".into(),
        ),
        _ => Error::Refused(format!("running tc in container {}: {e}", target.label)),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "tc failed in container {} ({status}); its own message is above",
            target.label
        )))
    }
}
