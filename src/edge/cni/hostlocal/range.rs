//! host-local's ranges and its allocation order, pure: addresses as numbers,
//! a range set as the reference allocator walks it (after the last reserved
//! address, wrapping around the set, skipping each range's gateway).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address of one family as a number (IPv4-mapped IPv6 is IPv4, as Go's
/// `net.IP` canonicalises it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ip {
    pub v6: bool,
    pub n: u128,
}

impl Ip {
    pub fn bits(self) -> u32 {
        if self.v6 { 128 } else { 32 }
    }

    pub fn addr(self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.n))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.n as u32))
        }
    }

    /// The first byte of the address (Go's big-integer arithmetic on
    /// addresses misbehaves when it is zero: such ranges go to the plugin).
    pub fn first_byte(self) -> u8 {
        (self.n >> (self.bits() - 8)) as u8
    }
}

impl From<IpAddr> for Ip {
    fn from(a: IpAddr) -> Ip {
        match a {
            IpAddr::V4(v) => Ip {
                v6: false,
                n: u32::from(v) as u128,
            },
            IpAddr::V6(v) => match v.to_ipv4_mapped() {
                Some(v4) => Ip::from(IpAddr::V4(v4)),
                None => Ip {
                    v6: true,
                    n: u128::from(v),
                },
            },
        }
    }
}

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Rust and Go print addresses alike (RFC 5952 for IPv6).
        self.addr().fmt(f)
    }
}

/// One range of a set, canonical: `start..=end` inside `net/prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub net: Ip,
    pub prefix: u32,
    pub start: Ip,
    pub end: Ip,
    pub gateway: Ip,
}

/// The mask of `prefix` bits in a `bits`-bit address.
pub fn mask(bits: u32, prefix: u32) -> u128 {
    let all = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    if prefix == 0 {
        0
    } else {
        (all << (bits - prefix)) & all
    }
}

impl Range {
    /// The reference's `Range.Canonicalize`: `Err` for what it refuses.
    /// `start`, `end`, `gateway` as given (already of the subnet's family).
    pub fn new(
        net: Ip,
        prefix: u32,
        start: Option<Ip>,
        end: Option<Ip>,
        gateway: Option<Ip>,
    ) -> Result<Range, String> {
        let bits = net.bits();
        if prefix > bits - 2 {
            return Err(format!(
                "network {net}/{prefix} is too small to allocate from"
            ));
        }
        if net.n & mask(bits, prefix) != net.n {
            return Err(format!("network {net}/{prefix} has host bits set"));
        }
        let in_net = |a: Ip| a.v6 == net.v6 && a.n & mask(bits, prefix) == net.n;
        for (what, a) in [
            ("rangeStart", start),
            ("rangeEnd", end),
            ("gateway", gateway),
        ] {
            if let Some(a) = a
                && a.v6 != net.v6
            {
                return Err(format!("{what} {a} is not of the family of {net}/{prefix}"));
            }
        }
        let first = Ip {
            v6: net.v6,
            n: net.n + 1,
        };
        let start_v = start.unwrap_or(first);
        // As the reference checks them: the start against a given end, the
        // end against the start.
        if let Some(s) = start
            && (!in_net(s) || end.is_some_and(|e| s.n > e.n))
        {
            return Err(format!("rangeStart {s} not in network {net}/{prefix}"));
        }
        if let Some(e) = end
            && (!in_net(e) || e.n < start_v.n)
        {
            return Err(format!("rangeEnd {e} not in network {net}/{prefix}"));
        }
        let end_v = end.unwrap_or_else(|| {
            let last = net.n | (mask(bits, bits) & !mask(bits, prefix));
            // IPv4 leaves out the broadcast address.
            Ip {
                v6: net.v6,
                n: if net.v6 { last } else { last - 1 },
            }
        });
        if end_v.n < start_v.n {
            // The reference accepts a given start beyond the default end, and
            // then never ends its walk; not ours to imitate.
            return Err(format!("rangeStart {start_v} is after rangeEnd {end_v}"));
        }
        Ok(Range {
            net,
            prefix,
            start: start_v,
            end: end_v,
            gateway: gateway.unwrap_or(first),
        })
    }

    pub fn contains(&self, a: Ip) -> bool {
        a.v6 == self.net.v6
            && a.n & mask(self.net.bits(), self.prefix) == self.net.n
            && a.n >= self.start.n
            && a.n <= self.end.n
    }

    fn overlaps(&self, o: &Range) -> bool {
        self.net.v6 == o.net.v6
            && (self.contains(o.start)
                || self.contains(o.end)
                || o.contains(self.start)
                || o.contains(self.end))
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// A range set: one address is allocated from each set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    /// The reference's `RangeSet.Canonicalize` checks beyond each range's own.
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet, String> {
        let Some(first) = ranges.first() else {
            return Err("empty range set".into());
        };
        if ranges.iter().any(|r| r.net.v6 != first.net.v6) {
            return Err("mixed address families".into());
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if a.overlaps(b) {
                    return Err(format!("subnets {a} and {b} overlap"));
                }
            }
        }
        Ok(RangeSet(ranges))
    }

    pub fn v6(&self) -> bool {
        self.0[0].net.v6
    }

    pub fn range_for(&self, a: Ip) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(a))
    }

    pub fn contains(&self, a: Ip) -> bool {
        self.range_for(a).is_some()
    }

    pub fn overlaps(&self, o: &RangeSet) -> bool {
        self.0.iter().any(|a| o.0.iter().any(|b| a.overlaps(b)))
    }

    /// The candidates in the reference's order: after `last` (the last
    /// reserved address, when it is in the set) to the end of its range, the
    /// following ranges, around to `last` itself; else from the first range's
    /// start. Gateways are skipped.
    pub fn walk(&self, last: Option<Ip>) -> Walk<'_> {
        let from = last.and_then(|l| self.0.iter().position(|r| r.contains(l)).map(|i| (i, l.n)));
        Walk {
            set: self,
            idx: from.map_or(0, |(i, _)| i),
            cur: from.map(|(_, n)| n),
            start: None,
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// The reference's `RangeIter`, step for step.
pub struct Walk<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: Option<u128>,
    /// Where the walk began: reaching it again ends it.
    start: Option<u128>,
}

impl<'a> Walk<'a> {
    /// The next candidate and its range.
    pub fn step(&mut self) -> Option<(Ip, &'a Range)> {
        let set = &self.set.0;
        loop {
            let r = &set[self.idx];
            let Some(cur) = self.cur else {
                // First step from the beginning: the start itself is a candidate.
                self.cur = Some(r.start.n);
                self.start = Some(r.start.n);
                if r.start.n == r.gateway.n {
                    continue;
                }
                return Some((r.start, r));
            };
            let next = if cur == r.end.n {
                self.idx = (self.idx + 1) % set.len();
                set[self.idx].start.n
            } else {
                cur + 1
            };
            self.cur = Some(next);
            let r = &set[self.idx];
            match self.start {
                None => self.start = Some(next),
                Some(s) if s == next => return None,
                Some(_) => {}
            }
            if next == r.gateway.n {
                continue;
            }
            return Some((
                Ip {
                    v6: r.net.v6,
                    n: next,
                },
                r,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ip {
        Ip::from(s.parse::<IpAddr>().unwrap())
    }

    fn range(net: &str, start: Option<&str>, end: Option<&str>, gw: Option<&str>) -> Range {
        let (a, p) = net.split_once('/').unwrap();
        Range::new(
            ip(a),
            p.parse().unwrap(),
            start.map(ip),
            end.map(ip),
            gw.map(ip),
        )
        .unwrap()
    }

    fn all(set: &RangeSet, last: Option<&str>) -> Vec<String> {
        let mut w = set.walk(last.map(ip));
        std::iter::from_fn(|| w.step().map(|(a, _)| a.to_string())).collect()
    }

    #[test]
    fn defaults_leave_out_network_gateway_and_broadcast() {
        let r = range("10.5.0.0/29", None, None, None);
        assert_eq!(r.to_string(), "10.5.0.1-10.5.0.6");
        assert_eq!(r.gateway, ip("10.5.0.1"));
        let set = RangeSet::new(vec![r]).unwrap();
        assert_eq!(
            all(&set, None),
            ["10.5.0.2", "10.5.0.3", "10.5.0.4", "10.5.0.5", "10.5.0.6"]
        );
        // IPv6 keeps the last address.
        let r = range("fd00::/126", None, None, None);
        assert_eq!(r.to_string(), "fd00::1-fd00::3");
    }

    #[test]
    fn walk_starts_after_the_last_reserved_and_wraps_to_it() {
        let set = RangeSet::new(vec![range("10.5.0.0/29", None, None, None)]).unwrap();
        assert_eq!(
            all(&set, Some("10.5.0.4")),
            ["10.5.0.5", "10.5.0.6", "10.5.0.2", "10.5.0.3", "10.5.0.4"]
        );
        // A last reserved address outside the set: from the beginning.
        assert_eq!(all(&set, Some("10.9.0.4"))[0], "10.5.0.2");
        assert_eq!(all(&set, Some("fd00::4"))[0], "10.5.0.2");
    }

    #[test]
    fn walk_crosses_ranges_of_a_set() {
        let set = RangeSet::new(vec![
            range("10.5.0.0/24", Some("10.5.0.10"), Some("10.5.0.11"), None),
            range("10.6.0.0/24", Some("10.6.0.1"), Some("10.6.0.2"), None),
        ])
        .unwrap();
        // 10.6.0.1 is that range's gateway.
        assert_eq!(all(&set, None), ["10.5.0.10", "10.5.0.11", "10.6.0.2"]);
        assert_eq!(
            all(&set, Some("10.6.0.2")),
            ["10.5.0.10", "10.5.0.11", "10.6.0.2"]
        );
        assert_eq!(
            all(&set, Some("10.5.0.10")),
            ["10.5.0.11", "10.6.0.2", "10.5.0.10"]
        );
    }

    #[test]
    fn a_range_of_only_its_gateway_is_empty() {
        let set = RangeSet::new(vec![range(
            "10.5.0.0/24",
            Some("10.5.0.1"),
            Some("10.5.0.1"),
            None,
        )])
        .unwrap();
        assert!(all(&set, None).is_empty());
        assert!(all(&set, Some("10.5.0.1")).is_empty());
    }

    #[test]
    fn what_the_reference_refuses() {
        let bad = |net: &str, s: Option<&str>, e: Option<&str>| {
            let (a, p) = net.split_once('/').unwrap();
            Range::new(ip(a), p.parse().unwrap(), s.map(ip), e.map(ip), None).is_err()
        };
        assert!(bad("10.0.0.0/31", None, None));
        assert!(bad("fd00::/127", None, None));
        assert!(bad("10.0.0.1/24", None, None));
        assert!(bad("10.0.0.0/24", Some("10.0.1.1"), None));
        assert!(bad("10.0.0.0/24", Some("10.0.0.9"), Some("10.0.0.8")));
        assert!(bad("10.0.0.0/24", Some("10.0.0.255"), None));
        assert!(!bad("10.0.0.0/30", None, None));
        let a = range("10.0.0.0/24", None, Some("10.0.0.100"), None);
        let b = range("10.0.0.0/24", Some("10.0.0.100"), None, None);
        assert!(RangeSet::new(vec![a.clone(), b]).is_err());
        assert!(RangeSet::new(vec![a, range("fd00::/64", None, None, None)]).is_err());
        assert!(RangeSet::new(vec![]).is_err());
    }
}
