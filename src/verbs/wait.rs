//! `pipe --wait[=WHAT] [-i IFNAME] [--timeout SECS]`: run inside a container (its
//! entrypoint) to wait until pipe's interface is usable.
//!
//! It runs where nobody knows what the attach asked for (a static address, `0/0`, an
//! external DHCP client started later), so the default asks only what every attachment
//! ends in, the same as pipework's `--wait` (which polled `/sys/class/net/IF/carrier`):
//! the interface exists, is up and has carrier. On top of that, whatever addresses it has
//! must be past IPv6 duplicate address detection (a tentative address cannot be bound),
//! and the interface must have stayed the same for `SETTLE`, which covers the few
//! milliseconds between an attach bringing the link up and adding its addresses and
//! routes. An address is required only when the command line asks for one
//! (`--wait=addr`, `ipv4`, `ipv6`): that is what DHCP users want.

use std::net::IpAddr;
use std::time::Duration;

use log::debug;

use crate::domain::error::{Error, Result};
use crate::sys::netlink::{Addr, Link, Netlink};

/// How often the interface is looked at (two netlink requests each time).
const POLL: Duration = Duration::from_millis(20);

/// How long a ready interface must stay unchanged (flags, carrier, addresses) before
/// `--wait` returns: an attach creates the container end up and then adds addresses and
/// routes within milliseconds; this keeps `--wait` from returning in between.
pub const SETTLE: Duration = Duration::from_millis(250);

/// What `--wait` asks for beyond "exists, up, carrier" (`--wait=addr,ipv4,...`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Want {
    /// An address of either family.
    pub any: bool,
    pub v4: bool,
    pub v6: bool,
}

/// Where an interface stands on the way to usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Missing,
    Down,
    NoCarrier,
    /// The address asked for is not there ("", "IPv4 ", "IPv6 ").
    NoAddress(&'static str),
    /// An address is still in IPv6 duplicate address detection.
    Tentative(String),
    DadFailed(String),
    /// Ready, with its usable addresses (none when none was asked for and none is there).
    Ready(Vec<String>),
}

/// Pure: judge one observation (`carrier` from `Netlink::link_state`).
pub fn judge(link: Option<(&Link, bool)>, addrs: &[Addr], want: Want) -> Readiness {
    let Some((l, carrier)) = link else {
        return Readiness::Missing;
    };
    if !l.up {
        return Readiness::Down;
    }
    if !carrier {
        return Readiness::NoCarrier;
    }
    let usable: Vec<&Addr> = addrs
        .iter()
        .filter(|a| match a.net.ip() {
            // fe80::/10 comes with every IPv6 link: it says nothing about pipe's address.
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 != 0xfe80,
            IpAddr::V4(_) => true,
        })
        .collect();
    if let Some(a) = usable.iter().find(|a| a.dad_failed) {
        return Readiness::DadFailed(a.net.to_string());
    }
    let done = |v6: bool| usable.iter().any(|a| !a.tentative && a.net.is_ipv6() == v6);
    let missing = if want.v4 && !done(false) {
        Some("IPv4 ")
    } else if want.v6 && !done(true) {
        Some("IPv6 ")
    } else if want.any && !done(false) && !done(true) {
        Some("")
    } else {
        None
    };
    // A tentative address cannot be bound yet (EADDRNOTAVAIL): not ready, whether it
    // was asked for or not.
    if let Some(a) = usable.iter().find(|a| a.tentative) {
        return Readiness::Tentative(a.net.to_string());
    }
    if let Some(m) = missing {
        return Readiness::NoAddress(m);
    }
    Readiness::Ready(usable.iter().map(|a| a.net.to_string()).collect())
}

/// Why a judgement is not ready, for the timeout message.
fn why(r: &Readiness) -> String {
    match r {
        Readiness::Missing => "does not exist".into(),
        Readiness::Down => "exists but is down".into(),
        Readiness::NoCarrier => {
            "is up but has no carrier (its other end is down, or its parent has no link)".into()
        }
        Readiness::NoAddress(which) => format!("is up but has no {which}address"),
        Readiness::Tentative(a) => {
            format!("has address {a} still in duplicate address detection")
        }
        Readiness::DadFailed(a) => format!("address {a} failed duplicate address detection"),
        Readiness::Ready(_) => "is ready".into(),
    }
}

/// Wait in the calling process's own namespace; `None` waits for ever. Returns the
/// interface's usable addresses (possibly none).
pub async fn wait(ifname: &str, want: Want, timeout: Option<Duration>) -> Result<Vec<String>> {
    let nl = Netlink::current().map_err(|c| Error::kernel("opening a netlink socket", c))?;
    let start = tokio::time::Instant::now();
    // The last observation and since when it has not changed.
    let mut last: Option<(Readiness, Vec<Addr>)> = None;
    let mut since = start;
    loop {
        let link = nl
            .link_state(ifname)
            .await
            .map_err(|c| Error::kernel(format!("looking up {ifname}"), c))?;
        let addrs = match &link {
            Some((l, _)) if l.up => nl
                .addresses(l.index)
                .await
                .map_err(|c| Error::kernel(format!("reading the addresses of {ifname}"), c))?,
            _ => Vec::new(),
        };
        let r = judge(link.as_ref().map(|(l, c)| (l, *c)), &addrs, want);
        let now = tokio::time::Instant::now();
        if last.as_ref() != Some(&(r.clone(), addrs.clone())) {
            debug!("wait: {ifname}: {r:?}");
            since = now;
            last = Some((r.clone(), addrs));
        }
        let timed_out = timeout.is_some_and(|t| now.duration_since(start) + POLL > t);
        match &r {
            // At the timeout a ready interface counts even if it has not settled.
            Readiness::Ready(a) if now.duration_since(since) >= SETTLE || timed_out => {
                return Ok(a.clone());
            }
            Readiness::DadFailed(a) => {
                return Err(Error::Refused(format!(
                    "address {a} on {ifname} failed duplicate address detection: another host uses it; \
                     attach with another address"
                )));
            }
            _ => {}
        }
        if let Some(t) = timeout
            && timed_out
        {
            return Err(Error::Refused(format!(
                "{ifname} {} after {:.1}s; attach it from the host (pipe ... -i {ifname}) or raise --timeout",
                why(&r),
                t.as_secs_f64()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(up: bool) -> Link {
        Link {
            index: 2,
            name: "eth1".into(),
            kind: None,
            mtu: 1500,
            up,
            mac: None,
            master: None,
            alias: None,
            lower: None,
        }
    }

    fn a(s: &str, tentative: bool) -> Addr {
        Addr {
            net: s.parse().unwrap(),
            tentative,
            dad_failed: false,
        }
    }

    const LINK: Want = Want {
        any: false,
        v4: false,
        v6: false,
    };
    const ANY: Want = Want {
        any: true,
        v4: false,
        v6: false,
    };

    #[test]
    fn stages() {
        let up = link(true);
        let on = Some((&up, true));
        assert_eq!(judge(None, &[], LINK), Readiness::Missing);
        assert_eq!(
            judge(Some((&link(false), true)), &[], LINK),
            Readiness::Down
        );
        assert_eq!(judge(Some((&up, false)), &[], LINK), Readiness::NoCarrier);
        // Up with carrier and no address: ready by default, not when one is asked for.
        assert_eq!(judge(on, &[], LINK), Readiness::Ready(vec![]));
        let ll = [a("fe80::1/64", false)];
        assert_eq!(judge(on, &ll, LINK), Readiness::Ready(vec![]));
        assert_eq!(judge(on, &ll, ANY), Readiness::NoAddress(""));
        // Tentative addresses are never counted, asked for or not.
        let tent = [a("2001:db8::5/64", true)];
        assert!(matches!(judge(on, &tent, LINK), Readiness::Tentative(_)));
        assert!(matches!(judge(on, &tent, ANY), Readiness::Tentative(_)));
        // A tentative link-local address does not hold anything up.
        assert_eq!(
            judge(on, &[a("fe80::1/64", true)], LINK),
            Readiness::Ready(vec![])
        );
        let v4 = [a("10.0.0.2/24", false)];
        assert_eq!(
            judge(on, &v4, ANY),
            Readiness::Ready(vec!["10.0.0.2/24".into()])
        );
        let v6 = Want { v6: true, ..LINK };
        assert_eq!(judge(on, &v4, v6), Readiness::NoAddress("IPv6 "));
        let both = Want {
            v4: true,
            v6: true,
            any: false,
        };
        let dual = [a("10.0.0.2/24", false), a("2001:db8::5/64", false)];
        assert_eq!(
            judge(on, &dual, both),
            Readiness::Ready(vec!["10.0.0.2/24".into(), "2001:db8::5/64".into()])
        );
        let mut f = a("2001:db8::5/64", true);
        f.dad_failed = true;
        assert!(matches!(judge(on, &[f], LINK), Readiness::DadFailed(_)));
    }
}
