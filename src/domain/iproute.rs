//! `pipe route GUEST ARGS` and `pipe rule GUEST ARGS`: the `ip route` and
//! `ip rule` forms operators use, parsed into typed requests. Pure: no I/O.
//!
//! Anything outside these forms is refused as a whole (never half-applied);
//! the caller adds the exact `ip netns exec NAME ip ...` command to run instead.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::domain::spec::IfName;

/// What the request does, as `ip` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Add,
    Del,
    Replace,
}

impl Verb {
    fn parse(s: &str, what: &str) -> Result<Verb, String> {
        match s {
            "add" => Ok(Verb::Add),
            "del" | "delete" => Ok(Verb::Del),
            "replace" => Ok(Verb::Replace),
            "show" | "list" | "get" | "flush" | "save" | "restore" => Err(format!(
                "`ip {what} {s}` reads or bulk-changes state, which pipe {what} does not do (it does add, del and replace)"
            )),
            _ => Err(format!("pipe {what} does add, del and replace, not {s:?}")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "add",
            Verb::Del => "del",
            Verb::Replace => "replace",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    Unicast,
    Blackhole,
    Unreachable,
    Prohibit,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Unicast => "unicast",
            RouteKind::Blackhole => "blackhole",
            RouteKind::Unreachable => "unreachable",
            RouteKind::Prohibit => "prohibit",
        }
    }
}

/// One `ip route add|del|replace` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub verb: Verb,
    pub v6: bool,
    pub kind: RouteKind,
    /// `None`: `default`.
    pub dst: Option<IpNetwork>,
    pub via: Option<IpAddr>,
    pub dev: Option<IfName>,
    pub metric: Option<u32>,
    pub table: Option<u32>,
    pub src: Option<IpAddr>,
    pub onlink: bool,
    pub proto: Option<u8>,
    pub scope: Option<u8>,
}

/// One `ip rule add|del` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    pub verb: Verb,
    pub v6: bool,
    pub not: bool,
    pub from: Option<IpNetwork>,
    pub to: Option<IpNetwork>,
    pub iif: Option<IfName>,
    pub oif: Option<IfName>,
    pub fwmark: Option<(u32, Option<u32>)>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    /// `None`: look up `table` (main when no table is given to `add`).
    pub action: Option<RouteKind>,
}

pub const RT_TABLE_DEFAULT: u32 = 253;
pub const RT_TABLE_MAIN: u32 = 254;
pub const RT_TABLE_LOCAL: u32 = 255;

/// A `-4` / `-6` first (as `ip -6 route ...`) or right after the verb (as
/// `pipe route GUEST replace -6 default ...`) picks the family when no
/// address says it; returns it and the rest without it.
fn family_flag(args: &[String]) -> (Option<bool>, Vec<String>) {
    let fam = |a: &str| match a {
        "-4" => Some(false),
        "-6" => Some(true),
        _ => None,
    };
    for i in 0..args.len().min(2) {
        if let Some(f) = fam(&args[i]) {
            let mut rest = args.to_vec();
            rest.remove(i);
            return (Some(f), rest);
        }
    }
    (None, args.to_vec())
}

struct Words<'a> {
    it: std::slice::Iter<'a, String>,
}

impl<'a> Words<'a> {
    fn value(&mut self, key: &str) -> Result<&'a str, String> {
        self.it
            .next()
            .map(String::as_str)
            .ok_or_else(|| format!("`{key}` needs a value"))
    }
}

fn parse_u32(key: &str, v: &str) -> Result<u32, String> {
    let r = match v.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => v.parse(),
    };
    r.map_err(|_| format!("`{key} {v}`: {v:?} is not a number"))
}

fn parse_ip(key: &str, v: &str) -> Result<IpAddr, String> {
    v.parse()
        .map_err(|_| format!("`{key} {v}`: {v:?} is not an IPv4 or IPv6 address"))
}

fn parse_ifname(key: &str, v: &str) -> Result<IfName, String> {
    v.parse().map_err(|e| format!("`{key} {v}`: {e}"))
}

/// `10.0.0.0/8`, or a bare address meaning a host route (/32, /128).
fn parse_prefix(key: &str, v: &str) -> Result<IpNetwork, String> {
    let net: IpNetwork = match v.split_once('/') {
        Some((a, l)) => {
            let ip: IpAddr = a
                .parse()
                .map_err(|_| format!("`{key}{v}`: {a:?} is not an IPv4 or IPv6 address"))?;
            let len: u8 = l
                .parse()
                .map_err(|_| format!("`{key}{v}`: prefix length {l:?} is not a number"))?;
            IpNetwork::new(ip, len)
                .map_err(|_| format!("`{key}{v}`: /{len} is too long for this address"))?
        }
        None => {
            let ip: IpAddr = v.parse().map_err(|_| {
                format!("`{key}{v}`: {v:?} is not a prefix such as 10.0.0.0/8 (or `default`)")
            })?;
            IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("full length")
        }
    };
    if net.network() != net.ip() {
        return Err(format!(
            "`{key}{v}`: the address has bits set beyond /{}; write {}/{}",
            net.prefix(),
            net.network(),
            net.prefix()
        ));
    }
    Ok(net)
}

/// `main`, `local`, `default` or a number 1..=2^32-1.
fn parse_table(key: &str, v: &str) -> Result<u32, String> {
    match v {
        "main" => Ok(RT_TABLE_MAIN),
        "local" => Ok(RT_TABLE_LOCAL),
        "default" => Ok(RT_TABLE_DEFAULT),
        _ => match parse_u32(key, v) {
            Ok(0) => Err(format!("`{key} 0`: table 0 is not a routing table")),
            Ok(n) => Ok(n),
            Err(_) => Err(format!(
                "`{key} {v}`: pipe knows the tables main, local, default and numbers, not names from rt_tables"
            )),
        },
    }
}

fn parse_proto(v: &str) -> Result<u8, String> {
    Ok(match v {
        "kernel" => 2,
        "boot" => 3,
        "static" => 4,
        "ra" => 9,
        "dhcp" => 16,
        _ => v
            .parse()
            .map_err(|_| format!("`proto {v}`: use kernel, boot, static, ra, dhcp or 0-255"))?,
    })
}

fn parse_scope(v: &str) -> Result<u8, String> {
    Ok(match v {
        "global" | "universe" => 0,
        "site" => 200,
        "link" => 253,
        "host" => 254,
        "nowhere" => 255,
        _ => v
            .parse()
            .map_err(|_| format!("`scope {v}`: use global, link, host or 0-255"))?,
    })
}

fn same_family(what: &str, v6: bool, ip: IpAddr) -> Result<(), String> {
    if ip.is_ipv6() != v6 {
        return Err(format!(
            "`{what}` is {} but the request is {}; use one family per request",
            if ip.is_ipv6() { "IPv6" } else { "IPv4" },
            if v6 { "IPv6" } else { "IPv4" }
        ));
    }
    Ok(())
}

/// Parse `ip route` arguments (after `pipe route GUEST`).
pub fn parse_route(args: &[String]) -> Result<RouteSpec, String> {
    let (fam, args) = family_flag(args);
    let Some((verb, rest)) = args.split_first() else {
        return Err("say what to do: add, del or replace, then the route".into());
    };
    let verb = Verb::parse(verb, "route")?;
    let mut w = Words { it: rest.iter() };
    let mut kind = None;
    let mut dst: Option<Option<IpNetwork>> = None;
    let mut r = RouteSpec {
        verb,
        v6: false,
        kind: RouteKind::Unicast,
        dst: None,
        via: None,
        dev: None,
        metric: None,
        table: None,
        src: None,
        onlink: false,
        proto: None,
        scope: None,
    };
    while let Some(word) = w.it.next() {
        let word = word.as_str();
        match word {
            "via" => {
                let v = w.value(word)?;
                if v == "inet" || v == "inet6" {
                    return Err(format!(
                        "`via {v} ...` (a gateway of another family) is not supported"
                    ));
                }
                r.via = Some(parse_ip(word, v)?);
            }
            "dev" | "oif" => r.dev = Some(parse_ifname(word, w.value(word)?)?),
            "metric" | "priority" | "preference" => {
                r.metric = Some(parse_u32(word, w.value(word)?)?)
            }
            "table" => r.table = Some(parse_table(word, w.value(word)?)?),
            "src" => r.src = Some(parse_ip(word, w.value(word)?)?),
            "onlink" => r.onlink = true,
            "proto" | "protocol" => r.proto = Some(parse_proto(w.value(word)?)?),
            "scope" => r.scope = Some(parse_scope(w.value(word)?)?),
            "unicast" | "blackhole" | "unreachable" | "prohibit"
                if kind.is_none() && dst.is_none() =>
            {
                kind = Some(match word {
                    "unicast" => RouteKind::Unicast,
                    "blackhole" => RouteKind::Blackhole,
                    "unreachable" => RouteKind::Unreachable,
                    _ => RouteKind::Prohibit,
                });
            }
            "to" if dst.is_none() => {
                let v = w.value(word)?;
                dst = Some(if v == "default" {
                    None
                } else {
                    Some(parse_prefix("to ", v)?)
                });
            }
            "default" | "all" if dst.is_none() => dst = Some(None),
            _ if dst.is_none() && word.starts_with(|c: char| c.is_ascii_hexdigit() || c == ':') => {
                dst = Some(Some(parse_prefix("", word)?));
            }
            _ => {
                return Err(format!(
                    "`{word}` is not one of the route options pipe applies (via, dev, metric, table, src, onlink, proto, scope)"
                ));
            }
        }
    }
    let Some(dst) = dst else {
        return Err("say which route: `default` or a prefix such as 10.0.0.0/8".into());
    };
    r.dst = dst;
    r.kind = kind.unwrap_or(RouteKind::Unicast);
    // The family: the destination's, else the gateway's or source's, else -4/-6, else IPv4 (as ip).
    r.v6 = dst
        .map(|d| d.is_ipv6())
        .or(r.via.map(|v| v.is_ipv6()))
        .or(r.src.map(|v| v.is_ipv6()))
        .or(fam)
        .unwrap_or(false);
    if let Some(f) = fam
        && f != r.v6
    {
        return Err(format!(
            "-{} does not match the addresses given",
            if f { 6 } else { 4 }
        ));
    }
    if let Some(d) = dst {
        same_family(&format!("{}", d), r.v6, d.ip())?;
    }
    if let Some(v) = r.via {
        same_family(&format!("via {v}"), r.v6, v)?;
    }
    if let Some(v) = r.src {
        same_family(&format!("src {v}"), r.v6, v)?;
    }
    if r.kind != RouteKind::Unicast && (r.via.is_some() || r.dev.is_some()) {
        return Err(format!(
            "a {} route takes no `via` or `dev`",
            r.kind.as_str()
        ));
    }
    if r.kind == RouteKind::Unicast && verb != Verb::Del && r.via.is_none() && r.dev.is_none() {
        return Err("a route needs `via GATEWAY` or `dev IFNAME`".into());
    }
    if r.onlink && r.via.is_none() {
        return Err("`onlink` only makes sense with `via`".into());
    }
    Ok(r)
}

/// Parse `ip rule` arguments (after `pipe rule GUEST`).
pub fn parse_rule(args: &[String]) -> Result<RuleSpec, String> {
    let (fam, args) = family_flag(args);
    let Some((verb, rest)) = args.split_first() else {
        return Err("say what to do: add or del, then the rule".into());
    };
    let verb = Verb::parse(verb, "rule")?;
    if verb == Verb::Replace {
        return Err("`ip rule` has no replace; del the old rule and add the new one".into());
    }
    let mut w = Words { it: rest.iter() };
    let mut r = RuleSpec {
        verb,
        v6: false,
        not: false,
        from: None,
        to: None,
        iif: None,
        oif: None,
        fwmark: None,
        priority: None,
        table: None,
        action: None,
    };
    let prefix_or_all = |key: &str, v: &str| -> Result<Option<IpNetwork>, String> {
        if v == "all" {
            Ok(None)
        } else {
            parse_prefix(&format!("{key} "), v).map(Some)
        }
    };
    while let Some(word) = w.it.next() {
        let word = word.as_str();
        match word {
            "not" => r.not = true,
            "from" => r.from = prefix_or_all(word, w.value(word)?)?,
            "to" => r.to = prefix_or_all(word, w.value(word)?)?,
            "iif" | "dev" => r.iif = Some(parse_ifname(word, w.value(word)?)?),
            "oif" => r.oif = Some(parse_ifname(word, w.value(word)?)?),
            "fwmark" => {
                let v = w.value(word)?;
                r.fwmark = Some(match v.split_once('/') {
                    Some((m, k)) => (parse_u32(word, m)?, Some(parse_u32(word, k)?)),
                    None => (parse_u32(word, v)?, None),
                });
            }
            "priority" | "pref" | "preference" | "order" => {
                r.priority = Some(parse_u32(word, w.value(word)?)?)
            }
            "table" | "lookup" => r.table = Some(parse_table(word, w.value(word)?)?),
            "blackhole" | "unreachable" | "prohibit" => {
                r.action = Some(match word {
                    "blackhole" => RouteKind::Blackhole,
                    "unreachable" => RouteKind::Unreachable,
                    _ => RouteKind::Prohibit,
                })
            }
            _ => {
                return Err(format!(
                    "`{word}` is not one of the rule selectors pipe applies (not, from, to, iif, oif, fwmark, priority, table)"
                ));
            }
        }
    }
    if r.action.is_some() && r.table.is_some() {
        return Err(
            "a rule either looks up a table or is blackhole/unreachable/prohibit, not both".into(),
        );
    }
    r.v6 = r
        .from
        .map(|d| d.is_ipv6())
        .or(r.to.map(|d| d.is_ipv6()))
        .or(fam)
        .unwrap_or(false);
    if let Some(f) = fam
        && f != r.v6
    {
        return Err(format!(
            "-{} does not match the addresses given",
            if f { 6 } else { 4 }
        ));
    }
    for (k, p) in [("from", r.from), ("to", r.to)] {
        if let Some(p) = p {
            same_family(&format!("{k} {p}"), r.v6, p.ip())?;
        }
    }
    if verb == Verb::Add && r.table.is_none() && r.action.is_none() {
        r.table = Some(RT_TABLE_MAIN);
    }
    Ok(r)
}

fn table_name(t: u32) -> String {
    match t {
        RT_TABLE_MAIN => "main".into(),
        RT_TABLE_LOCAL => "local".into(),
        RT_TABLE_DEFAULT => "default".into(),
        n => n.to_string(),
    }
}

fn fam_flag(v6: bool) -> &'static str {
    if v6 { "-6 " } else { "" }
}

impl fmt::Display for RouteSpec {
    /// The canonical `ip route` arguments (after `ip`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}route {}", fam_flag(self.v6), self.verb.as_str())?;
        if self.kind != RouteKind::Unicast {
            write!(f, " {}", self.kind.as_str())?;
        }
        match self.dst {
            Some(d) => write!(f, " {d}")?,
            None => write!(f, " default")?,
        }
        if let Some(v) = self.via {
            write!(f, " via {v}")?;
        }
        if let Some(d) = &self.dev {
            write!(f, " dev {d}")?;
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        if let Some(t) = self.table {
            write!(f, " table {}", table_name(t))?;
        }
        if let Some(s) = self.src {
            write!(f, " src {s}")?;
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        if let Some(p) = self.proto {
            write!(f, " proto {p}")?;
        }
        if let Some(s) = self.scope {
            write!(f, " scope {s}")?;
        }
        Ok(())
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}rule {}", fam_flag(self.v6), self.verb.as_str())?;
        if let Some(p) = self.priority {
            write!(f, " priority {p}")?;
        }
        if self.not {
            write!(f, " not")?;
        }
        if let Some(p) = self.from {
            write!(f, " from {p}")?;
        }
        if let Some(p) = self.to {
            write!(f, " to {p}")?;
        }
        if let Some(i) = &self.iif {
            write!(f, " iif {i}")?;
        }
        if let Some(i) = &self.oif {
            write!(f, " oif {i}")?;
        }
        if let Some((m, k)) = self.fwmark {
            match k {
                Some(k) => write!(f, " fwmark {m:#x}/{k:#x}")?,
                None => write!(f, " fwmark {m:#x}")?,
            }
        }
        if let Some(t) = self.table {
            write!(f, " table {}", table_name(t))?;
        }
        if let Some(a) = self.action {
            write!(f, " {}", a.as_str())?;
        }
        Ok(())
    }
}

/// Quote one word for a POSIX shell, only when it needs it.
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:@%+=,".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `ip ARGS` as the operator would type it, each word quoted when needed.
pub fn ip_command(what: &str, args: &[String]) -> String {
    let (fam, rest) = family_flag(args);
    let mut s = String::from("ip ");
    if let Some(v6) = fam {
        s.push_str(if v6 { "-6 " } else { "-4 " });
    }
    s.push_str(what);
    for a in &rest {
        s.push(' ');
        s.push_str(&shell_word(a));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn route_forms() {
        let r = parse_route(&v(
            "add 10.0.0.0/8 via 10.1.1.1 dev eth1 metric 5 table 100 src 10.1.1.2 proto static",
        ))
        .unwrap();
        assert_eq!(r.verb, Verb::Add);
        assert!(!r.v6);
        assert_eq!(r.dst.unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(r.via.unwrap().to_string(), "10.1.1.1");
        assert_eq!(r.dev.as_ref().unwrap().as_str(), "eth1");
        assert_eq!((r.metric, r.table, r.proto), (Some(5), Some(100), Some(4)));
        assert_eq!(
            r.to_string(),
            "route add 10.0.0.0/8 via 10.1.1.1 dev eth1 metric 5 table 100 src 10.1.1.2 proto 4"
        );
        let r = parse_route(&v("replace default via 2001:db8::1 dev eth1 onlink")).unwrap();
        assert!(r.v6 && r.onlink && r.dst.is_none());
        assert_eq!(
            r.to_string(),
            "-6 route replace default via 2001:db8::1 dev eth1 onlink"
        );
        let r = parse_route(&v("del to 10.9.0.0/16 table main")).unwrap();
        assert_eq!(r.verb, Verb::Del);
        assert_eq!(r.table, Some(RT_TABLE_MAIN));
        let r = parse_route(&v("add 192.168.7.7 dev eth1 scope link")).unwrap();
        assert_eq!(
            r.dst.unwrap().prefix(),
            32,
            "a bare address is a host route"
        );
        assert_eq!(r.scope, Some(253));
        let r = parse_route(&v("add blackhole 10.66.0.0/16")).unwrap();
        assert_eq!(r.kind, RouteKind::Blackhole);
        let r = parse_route(&v("-6 add default dev eth1")).unwrap();
        assert!(r.v6);
        let r = parse_route(&v("delete default")).unwrap();
        assert!(!r.v6 && r.dst.is_none());
    }

    #[test]
    fn route_refusals_name_the_word() {
        for (args, want) in [
            ("", "add, del or replace"),
            ("show", "reads or bulk-changes"),
            ("append 10.0.0.0/8 dev eth1", "not \"append\""),
            ("add 10.0.0.0/8 via 10.1.1.1 mtu 1400", "`mtu`"),
            ("add 10.0.0.0/8 nexthop via 10.1.1.1", "`nexthop`"),
            ("add 10.0.0.0/8 via nope", "\"nope\""),
            ("add 10.0.0.1/8 dev eth1", "10.0.0.0/8"),
            ("add 10.0.0.0/8", "via GATEWAY"),
            ("add 10.0.0.0/8 via 2001:db8::1", "one family"),
            ("add 10.0.0.0/8 via inet6 fe80::1", "another family"),
            ("add 10.0.0.0/8 table mytable dev eth1", "rt_tables"),
            ("add 10.0.0.0/8 dev averyveryverylongname", "at most 15"),
            ("add 10.0.0.0/8 metric", "needs a value"),
            ("add blackhole 10.0.0.0/8 via 10.1.1.1", "no `via`"),
            ("add 10.0.0.0/8 dev eth1 onlink", "`onlink`"),
            ("-6 add 10.0.0.0/8 dev eth1", "-6"),
        ] {
            let e = parse_route(&v(args)).unwrap_err();
            assert!(e.contains(want), "{args}: {e}");
        }
    }

    #[test]
    fn rule_forms() {
        let r = parse_rule(&v("add from 10.1.0.0/16 table 100 priority 1000")).unwrap();
        assert_eq!(
            r.to_string(),
            "rule add priority 1000 from 10.1.0.0/16 table 100"
        );
        let r = parse_rule(&v("add fwmark 0x1/0xff lookup 7 pref 10 iif eth1 oif eth2")).unwrap();
        assert_eq!(r.fwmark, Some((1, Some(255))));
        assert_eq!(r.table, Some(7));
        assert_eq!(r.iif.unwrap().as_str(), "eth1");
        let r = parse_rule(&v("add not to 2001:db8::/32 table main")).unwrap();
        assert!(r.v6 && r.not);
        let r = parse_rule(&v("add from all unreachable")).unwrap();
        assert_eq!((r.action, r.table), (Some(RouteKind::Unreachable), None));
        let r = parse_rule(&v("add from 10.2.0.0/16")).unwrap();
        assert_eq!(r.table, Some(RT_TABLE_MAIN), "ip's default table");
        let r = parse_rule(&v("del priority 1000")).unwrap();
        assert_eq!((r.verb, r.table), (Verb::Del, None));
        let r = parse_rule(&v("-6 add fwmark 3 table 3")).unwrap();
        assert!(r.v6);
    }

    #[test]
    fn rule_refusals() {
        for (args, want) in [
            ("replace from 10.0.0.0/8", "no replace"),
            ("add from 10.0.0.0/8 tos 0x10 table 5", "`tos`"),
            ("add from 10.0.0.0/8 goto 100", "`goto`"),
            ("add from 10.0.0.0/8 to 2001:db8::/32", "one family"),
            ("add fwmark x table 1", "not a number"),
            ("add from 10.0.0.0/8 table 5 blackhole", "not both"),
        ] {
            let e = parse_rule(&v(args)).unwrap_err();
            assert!(e.contains(want), "{args}: {e}");
        }
    }

    #[test]
    fn suggested_commands_are_quoted() {
        assert_eq!(
            ip_command("route", &v("add 10.0.0.0/8 via 10.1.1.1 mtu lock 1400")),
            "ip route add 10.0.0.0/8 via 10.1.1.1 mtu lock 1400"
        );
        assert_eq!(
            ip_command(
                "rule",
                &["-6".into(), "add".into(), "a b".into(), "it's".into()]
            ),
            r"ip -6 rule add 'a b' 'it'\''s'"
        );
    }
}
