//! `pipe --wait [-i IFNAME] [--timeout SECS]`: run inside a container (its
//! entrypoint) to wait until pipe's interface is really usable: it exists, is
//! up, and has an address that is not an IPv6 link-local one and has passed
//! duplicate address detection. pipework's `--wait` only checked existence.

use std::time::Duration;

use log::debug;

use crate::domain::error::{Error, Result};
use crate::sys::netlink::{Addr, Link, Netlink};

/// How often the interface is looked at (three netlink requests each time).
const POLL: Duration = Duration::from_millis(20);

/// Where an interface stands on the way to usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Missing,
    Down,
    NoAddress,
    /// Only tentative addresses (IPv6 duplicate address detection running).
    Tentative,
    DadFailed(String),
    Ready(String),
}

/// Pure: judge one observation.
pub fn judge(link: Option<&Link>, addrs: &[Addr]) -> Readiness {
    let Some(l) = link else {
        return Readiness::Missing;
    };
    if !l.up {
        return Readiness::Down;
    }
    let usable: Vec<&Addr> = addrs
        .iter()
        .filter(|a| match a.net.ip() {
            // fe80::/10 comes with every IPv6 link: it says nothing about pipe's address.
            std::net::IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 != 0xfe80,
            std::net::IpAddr::V4(_) => true,
        })
        .collect();
    if let Some(a) = usable.iter().find(|a| a.dad_failed) {
        return Readiness::DadFailed(a.net.to_string());
    }
    if let Some(a) = usable.iter().find(|a| !a.tentative) {
        return Readiness::Ready(a.net.to_string());
    }
    if usable.is_empty() {
        Readiness::NoAddress
    } else {
        Readiness::Tentative
    }
}

/// Wait in the calling process's own namespace; `None` waits for ever.
pub async fn wait(ifname: &str, timeout: Option<Duration>) -> Result<String> {
    let nl = Netlink::current().map_err(|c| Error::kernel("opening a netlink socket", c))?;
    let start = tokio::time::Instant::now();
    let mut last = Readiness::Missing;
    loop {
        let link = nl
            .link(ifname)
            .await
            .map_err(|c| Error::kernel(format!("looking up {ifname}"), c))?;
        let addrs = match &link {
            Some(l) if l.up => nl
                .addresses(l.index)
                .await
                .map_err(|c| Error::kernel(format!("reading the addresses of {ifname}"), c))?,
            _ => Vec::new(),
        };
        let r = judge(link.as_ref(), &addrs);
        if r != last {
            debug!("wait: {ifname}: {r:?}");
        }
        match r {
            Readiness::Ready(a) => return Ok(a),
            Readiness::DadFailed(a) => {
                return Err(Error::Refused(format!(
                    "address {a} on {ifname} failed duplicate address detection: another host uses it; \
                     attach with another address"
                )));
            }
            _ => {}
        }
        last = r;
        if let Some(t) = timeout
            && start.elapsed() + POLL > t
        {
            let why = match last {
                Readiness::Missing => "does not exist",
                Readiness::Down => "exists but is down",
                Readiness::NoAddress => "is up but has no address",
                Readiness::Tentative => "has only addresses still in duplicate address detection",
                _ => "is not ready",
            };
            return Err(Error::Refused(format!(
                "{ifname} {why} after {:.1}s; attach it from the host (pipe ... -i {ifname}) or raise --timeout",
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

    #[test]
    fn stages() {
        assert_eq!(judge(None, &[]), Readiness::Missing);
        assert_eq!(judge(Some(&link(false)), &[]), Readiness::Down);
        assert_eq!(
            judge(Some(&link(true)), &[a("fe80::1/64", false)]),
            Readiness::NoAddress
        );
        assert_eq!(
            judge(Some(&link(true)), &[a("2001:db8::5/64", true)]),
            Readiness::Tentative
        );
        assert_eq!(
            judge(Some(&link(true)), &[a("10.0.0.2/24", false)]),
            Readiness::Ready("10.0.0.2/24".into())
        );
        let mut f = a("2001:db8::5/64", true);
        f.dad_failed = true;
        assert!(matches!(
            judge(Some(&link(true)), &[f]),
            Readiness::DadFailed(_)
        ));
    }
}
