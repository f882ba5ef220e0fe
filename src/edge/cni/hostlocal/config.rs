//! host-local's configuration, read as the reference plugin
//! (containernetworking/plugins 1.1.1, `backend/allocator/config.go`) reads
//! it, or not at all: anything pipe does not know, or knows the reference
//! would refuse or treat in a way not worth imitating, is a [`Fallback`] and
//! the request goes to the plugin itself, which answers it as it always did.

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::range::{Ip, Range, RangeSet};
use crate::edge::cni::result::RouteEntry;

/// host-local's default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// Why a request is left to the plugin (for the debug log).
#[derive(Debug, PartialEq, Eq)]
pub struct Fallback(pub String);

type R<T> = Result<T, Fallback>;

fn fb<T>(why: impl Into<String>) -> R<T> {
    Err(Fallback(why.into()))
}

/// A host-local request pipe answers itself.
#[derive(Debug)]
pub struct Request {
    /// `<dataDir>/<network name>`: the reference's store.
    pub dir: PathBuf,
    pub sets: Vec<RangeSet>,
    pub routes: Vec<RouteEntry>,
    pub resolv_conf: Option<PathBuf>,
    /// The address asked for in each range set (`CNI_ARGS` `IP=`,
    /// `args.cni.ips`, `runtimeConfig.ips`), by set.
    pub requested: Vec<Option<Ip>>,
}

/// The keys of `obj` that the reference reads are `known`; Go matches JSON
/// keys case-insensitively (with Unicode folding), so a key that only folds
/// to a known one is left to the plugin; with `strict`, so is any other key.
fn keys(obj: &Map<String, Value>, known: &[&str], strict: bool, what: &str) -> R<()> {
    for k in obj.keys() {
        if known.contains(&k.as_str()) {
            continue;
        }
        if !k.is_ascii() || known.iter().any(|n| n.eq_ignore_ascii_case(k)) {
            return fb(format!(
                "{what} key {k:?} would match a host-local field by case"
            ));
        }
        if strict {
            return fb(format!("{what} key {k:?} is not one pipe implements"));
        }
    }
    Ok(())
}

fn object<'a>(v: &'a Value, what: &str) -> R<&'a Map<String, Value>> {
    v.as_object()
        .map_or_else(|| fb(format!("{what} is not an object")), Ok)
}

fn string<'a>(v: &'a Value, what: &str) -> R<&'a str> {
    v.as_str()
        .map_or_else(|| fb(format!("{what} is not a string")), Ok)
}

fn array<'a>(v: &'a Value, what: &str) -> R<&'a Vec<Value>> {
    v.as_array()
        .map_or_else(|| fb(format!("{what} is not a list")), Ok)
}

/// An address as Go's `net.ParseIP` reads it; IPv4-mapped IPv6 and
/// anything Go might read differently is left to the plugin.
fn addr(s: &str, what: &str) -> R<Ip> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V6(v)) if v.to_ipv4_mapped().is_some() => {
            fb(format!("{what} {s:?} is IPv4-mapped IPv6"))
        }
        Ok(a) => Ok(Ip::from(a)),
        Err(_) => fb(format!("{what} {s:?} is not an address pipe reads")),
    }
}

/// `ADDR/PREFIX` as Go's `net.ParseCIDR` reads it (the address kept as written).
fn cidr(s: &str, what: &str) -> R<(Ip, u32)> {
    let Some((a, p)) = s.split_once('/') else {
        return fb(format!("{what} {s:?} has no prefix length"));
    };
    let ip = addr(a, what)?;
    let ok = !p.is_empty()
        && p.bytes().all(|b| b.is_ascii_digit())
        && (p == "0" || !p.starts_with('0'))
        && p.len() <= 3;
    match p.parse::<u32>() {
        Ok(n) if ok && n <= ip.bits() => Ok((ip, n)),
        _ => fb(format!("{what} {s:?} has a bad prefix length")),
    }
}

/// An `ip.IP` of the CNI plugins' `pkg/ip`: an address, or an address with a
/// prefix length (which is dropped).
fn ip_arg(s: &str, what: &str) -> R<Ip> {
    if s.contains('/') {
        cidr(s, what).map(|(a, _)| a)
    } else {
        addr(s, what)
    }
}

fn range(v: &Value, legacy: bool) -> R<Option<Range>> {
    let o = object(v, "a range")?;
    if !legacy {
        keys(
            o,
            &["subnet", "rangeStart", "rangeEnd", "gateway"],
            true,
            "range",
        )?;
    }
    let opt = |k: &str| -> R<Option<Ip>> { o.get(k).map(|v| addr(string(v, k)?, k)).transpose() };
    let (start, end, gateway) = (opt("rangeStart")?, opt("rangeEnd")?, opt("gateway")?);
    let Some(subnet) = o.get("subnet") else {
        // The legacy top-level range is only one with a subnet.
        return if legacy {
            Ok(None)
        } else {
            fb("a range has no subnet")
        };
    };
    let (net, prefix) = cidr(string(subnet, "subnet")?, "subnet")?;
    if net.first_byte() == 0 {
        return fb(format!(
            "subnet {net}/{prefix} starts with a zero byte (the reference's address arithmetic misbehaves there)"
        ));
    }
    Range::new(net, prefix, start, end, gateway)
        .map(Some)
        .or_else(|e| fb(format!("the plugin refuses it: {e}")))
}

fn range_sets(v: &Value, what: &str) -> R<Vec<Vec<Range>>> {
    let mut out = Vec::new();
    for set in array(v, what)? {
        let mut rs = Vec::new();
        for r in array(set, what)? {
            rs.extend(range(r, false)?);
        }
        out.push(rs);
    }
    Ok(out)
}

fn route(v: &Value) -> R<RouteEntry> {
    let o = object(v, "a route")?;
    keys(o, &["dst", "gw"], true, "route")?;
    let dst = o
        .get("dst")
        .map_or_else(|| fb("a route has no dst"), |d| string(d, "dst"))?;
    let (a, p) = cidr(dst, "route dst")?;
    let gw = o
        .get("gw")
        .map(|g| addr(string(g, "gw")?, "route gw"))
        .transpose()?;
    Ok(RouteEntry {
        dst: format!("{a}/{p}"),
        gw: gw.map(|g| g.to_string()),
        ..Default::default()
    })
}

/// Does an object of the JSON have a key twice? Go decodes a repeated object
/// into the same struct (merging both) where serde keeps the last one.
fn duplicate_keys(b: &[u8]) -> bool {
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    struct Unique;
    impl<'de> Deserialize<'de> for Unique {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
            d.deserialize_any(Unique)
        }
    }
    impl<'de> Visitor<'de> for Unique {
        type Value = Unique;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_unit<E>(self) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Unique, A::Error> {
            while a.next_element::<Unique>()?.is_some() {}
            Ok(Unique)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Unique, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = a.next_key::<String>()? {
                if !seen.insert(k) {
                    return Err(de::Error::custom("duplicate key"));
                }
                a.next_value::<Unique>()?;
            }
            Ok(Unique)
        }
    }
    serde_json::from_slice::<Unique>(b).is_err()
}

/// The CNI name grammar (network names, container IDs) the plugins' skeleton checks.
fn cni_name(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// `CNI_ARGS` as the reference's `types.LoadArgs` reads it into
/// `{IgnoreUnknown, IP}`: the requested address, if any.
fn cni_args(s: &str) -> R<Option<Ip>> {
    if s.is_empty() {
        return Ok(None);
    }
    let (mut ip, mut ignore, mut unknown) = (None, false, false);
    for pair in s.split(';') {
        let kv: Vec<&str> = pair.split('=').collect();
        let [k, v] = kv[..] else {
            return fb(format!("CNI_ARGS pair {pair:?} is refused by the plugin"));
        };
        match k {
            "IP" if v.is_empty() => ip = None,
            "IP" => ip = Some(ip_arg(v, "CNI_ARGS IP")?),
            "IgnoreUnknown" => {
                ignore = match v.to_ascii_lowercase().as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => {
                        return fb(format!(
                            "CNI_ARGS IgnoreUnknown={v} is refused by the plugin"
                        ));
                    }
                }
            }
            "CommonArgs" => return fb("CNI_ARGS CommonArgs is refused by the plugin"),
            _ => unknown = true,
        }
    }
    if unknown && !ignore {
        return fb("CNI_ARGS has keys the plugin refuses without IgnoreUnknown=1");
    }
    Ok(ip)
}

/// CNI_CONTAINERID and CNI_IFNAME as the plugins' skeleton checks them.
pub fn check_call(cid: &str, ifname: &str) -> R<()> {
    if !cni_name(cid) {
        return fb(format!("container ID {cid:?} is refused by the plugin"));
    }
    let bad = ifname.is_empty()
        || ifname.len() > 15
        || ifname == "."
        || ifname == ".."
        || !ifname.is_ascii()
        || ifname
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0x0b);
    if bad {
        return fb(format!(
            "interface name {ifname:?} is refused by the plugin"
        ));
    }
    Ok(())
}

impl Request {
    /// Read a host-local request: the network configuration on stdin and the
    /// raw `CNI_ARGS`.
    pub fn parse(stdin: &[u8], args: Option<&str>) -> R<Request> {
        let conf: Value =
            serde_json::from_slice(stdin).or_else(|_| fb("the configuration is not JSON"))?;
        if duplicate_keys(stdin) {
            return fb("the configuration has a key twice in one object");
        }
        let top = object(&conf, "the configuration")?;
        // Without a cniVersion the plugin answers in 0.1.0, which pipe does not read.
        let ver = top.get("cniVersion").and_then(Value::as_str);
        if !ver.is_some_and(|v| crate::edge::cni::result::SUPPORTED.contains(&v)) {
            return fb("the configuration's cniVersion is missing or not one pipe speaks");
        }
        keys(
            top,
            &["name", "cniVersion", "ipam", "runtimeConfig", "args"],
            false,
            "top-level",
        )?;
        let name = string(top.get("name").unwrap_or(&Value::Null), "name")?;
        if !cni_name(name) {
            return fb(format!("network name {name:?} is refused by the plugin"));
        }
        let ipam = object(top.get("ipam").unwrap_or(&Value::Null), "ipam")?;
        keys(
            ipam,
            &[
                "type",
                "subnet",
                "rangeStart",
                "rangeEnd",
                "gateway",
                "routes",
                "dataDir",
                "resolvConf",
                "ranges",
            ],
            true,
            "ipam",
        )?;
        if ipam.get("type").and_then(Value::as_str) != Some("host-local") {
            return fb("ipam.type is not host-local");
        }

        // Requested addresses, in the reference's order.
        let mut wanted = Vec::new();
        if let Some(ip) = cni_args(args.unwrap_or(""))? {
            wanted.push(ip);
        }
        let rc = match top.get("runtimeConfig") {
            Some(v) => {
                let o = object(v, "runtimeConfig")?;
                keys(o, &["ips", "ipRanges"], false, "runtimeConfig")?;
                Some(o)
            }
            None => None,
        };
        if let Some(a) = top.get("args") {
            let a = object(a, "args")?;
            keys(a, &["cni"], false, "args")?;
            if let Some(c) = a.get("cni") {
                let c = object(c, "args.cni")?;
                keys(c, &["ips"], false, "args.cni")?;
                if let Some(ips) = c.get("ips") {
                    for i in array(ips, "args.cni.ips")? {
                        wanted.push(ip_arg(string(i, "args.cni.ips")?, "args.cni.ips")?);
                    }
                }
            }
        }
        if let Some(ips) = rc.and_then(|o| o.get("ips")) {
            for i in array(ips, "runtimeConfig.ips")? {
                wanted.push(ip_arg(
                    string(i, "runtimeConfig.ips")?,
                    "runtimeConfig.ips",
                )?);
            }
        }

        // Range sets: runtimeConfig.ipRanges, the legacy single range, ranges.
        let mut raw = Vec::new();
        if let Some(r) = rc.and_then(|o| o.get("ipRanges")) {
            raw.extend(range_sets(r, "runtimeConfig.ipRanges")?);
        }
        if let Some(r) = range(&Value::Object(ipam.clone()), true)? {
            raw.push(vec![r]);
        }
        if let Some(r) = ipam.get("ranges") {
            raw.extend(range_sets(r, "ranges")?);
        }
        if raw.is_empty() {
            return fb("no IP ranges specified");
        }
        let mut sets = Vec::new();
        for rs in raw {
            sets.push(
                RangeSet::new(rs)
                    .or_else(|e| fb(format!("the plugin refuses a range set: {e}")))?,
            );
        }
        for (i, a) in sets.iter().enumerate() {
            if sets[i + 1..].iter().any(|b| a.overlaps(b)) {
                return fb(format!("range set {i} overlaps another"));
            }
        }

        // Each requested address to the one set that holds it; the plugin
        // picks among several in one set at random, and fails (after
        // allocating) for one outside every set: both left to it.
        let mut uniq: Vec<Ip> = Vec::new();
        for w in wanted {
            if !uniq.contains(&w) {
                uniq.push(w);
            }
        }
        let mut requested = vec![None; sets.len()];
        for w in uniq {
            let Some(i) = sets.iter().position(|s| s.contains(w)) else {
                return fb(format!("requested address {w} is in no range set"));
            };
            if requested[i].replace(w).is_some() {
                return fb(format!("several requested addresses in range set {i}"));
            }
        }

        let routes = match ipam.get("routes") {
            Some(r) => array(r, "routes")?
                .iter()
                .map(route)
                .collect::<R<Vec<_>>>()?,
            None => Vec::new(),
        };
        let data_dir = match ipam.get("dataDir") {
            Some(d) => string(d, "dataDir")?,
            None => "",
        };
        let data_dir = if data_dir.is_empty() {
            DEFAULT_DATA_DIR
        } else {
            data_dir
        };
        let resolv_conf = match ipam.get("resolvConf") {
            Some(r) => Some(string(r, "resolvConf")?).filter(|s| !s.is_empty()),
            None => None,
        }
        .map(PathBuf::from);
        Ok(Request {
            dir: PathBuf::from(data_dir).join(name),
            sets,
            routes,
            resolv_conf,
            requested,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(j: &str, args: Option<&str>) -> R<Request> {
        Request::parse(j.as_bytes(), args)
    }

    fn ok(j: &str) -> Request {
        parse(j, None).unwrap_or_else(|e| panic!("{j}: {e:?}"))
    }

    fn falls_back(j: &str) {
        assert!(parse(j, None).is_err(), "{j} should go to the plugin");
    }

    #[test]
    fn ranges_legacy_and_runtime_ranges_in_the_reference_order() {
        let r = ok(
            r#"{"cniVersion":"1.0.0","name":"n","type":"pipe","host":"br0",
            "runtimeConfig":{"ipRanges":[[{"subnet":"10.3.0.0/24"}]],"mac":"x"},
            "ipam":{"type":"host-local","subnet":"10.1.0.0/24","gateway":"10.1.0.254",
              "ranges":[[{"subnet":"10.2.0.0/24","rangeStart":"10.2.0.10","rangeEnd":"10.2.0.20"}],
                        [{"subnet":"fd00::/64"}]],
              "routes":[{"dst":"0.0.0.0/0"},{"dst":"10.9.1.2/16","gw":"10.1.0.9"}],
              "dataDir":"/tmp/x","resolvConf":"/etc/resolv.conf"}}"#,
        );
        let s: Vec<String> = r.sets.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            s,
            [
                "10.3.0.1-10.3.0.254",
                "10.1.0.1-10.1.0.254",
                "10.2.0.10-10.2.0.20",
                "fd00::1-fd00::ffff:ffff:ffff:ffff"
            ]
        );
        assert_eq!(r.sets[1].0[0].gateway.to_string(), "10.1.0.254");
        assert_eq!(r.dir, PathBuf::from("/tmp/x/n"));
        assert_eq!(r.routes[1].dst, "10.9.1.2/16");
        assert_eq!(r.routes[1].gw.as_deref(), Some("10.1.0.9"));
        assert_eq!(r.resolv_conf, Some(PathBuf::from("/etc/resolv.conf")));
        let r = ok(
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","subnet":"10.1.0.0/24","dataDir":""}}"#,
        );
        assert_eq!(r.dir, PathBuf::from("/var/lib/cni/networks/n"));
        // The legacy fields without a subnet are no range.
        let r = ok(
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","rangeStart":"10.1.0.5",
            "ranges":[[{"subnet":"10.2.0.0/24"}]]}}"#,
        );
        assert_eq!(r.sets.len(), 1);
    }

    #[test]
    fn requested_addresses_from_args_config_and_capability() {
        let j = r#"{"cniVersion":"1.0.0","name":"n","args":{"cni":{"ips":["10.2.0.7"]},"other":1},
            "runtimeConfig":{"ips":["fd00::7/64"]},
            "ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/24"}],[{"subnet":"fd00::/64"}]]}}"#;
        let r = parse(j, Some("IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.0.9")).unwrap();
        let got: Vec<String> = r
            .requested
            .iter()
            .map(|i| i.map(|i| i.to_string()).unwrap_or_default())
            .collect();
        assert_eq!(got, ["10.1.0.9", "10.2.0.7", "fd00::7"]);
        // The same address twice is one request.
        let j2 = j.replace("10.2.0.7", "10.1.0.9");
        assert!(parse(&j2, Some("IP=10.1.0.9")).is_ok());
        // Left to the plugin: two in one set, one outside every set, bad args.
        let j3 = j.replace("10.2.0.7", "10.1.0.8");
        assert!(parse(&j3, Some("IP=10.1.0.9")).is_err());
        assert!(parse(j, Some("IP=10.7.0.9")).is_err());
        assert!(parse(j, Some("K8S_POD_NAME=x")).is_err());
        assert!(parse(j, Some("IP=10.1.0.9;")).is_err());
        assert!(parse(j, Some("IP=010.1.0.9")).is_err());
        assert!(parse(j, Some("IgnoreUnknown=yes;IP=10.1.0.9")).is_err());
        assert!(parse(j, Some("IgnoreUnknown=TRUE;a=b")).is_ok());
        assert!(parse(j, Some("IP=")).is_ok());
    }

    #[test]
    fn what_goes_to_the_plugin() {
        let base = r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"}]]}}"#;
        ok(base);
        for (from, to) in [
            (
                r#""type":"host-local""#,
                r#""type":"host-local","future":1"#,
            ),
            (
                r#""type":"host-local""#,
                r#""type":"host-local","Subnet":"10.2.0.0/24""#,
            ),
            (
                r#""subnet":"10.1.0.0/24""#,
                r#""subnet":"10.1.0.0/24","exclude":[]"#,
            ),
            (r#""subnet":"10.1.0.0/24""#, r#""subnet":"10.1.0.1/24""#),
            (r#""subnet":"10.1.0.0/24""#, r#""subnet":"10.1.0.0/31""#),
            (r#""subnet":"10.1.0.0/24""#, r#""subnet":"0.1.0.0/24""#),
            (
                r#""subnet":"10.1.0.0/24""#,
                r#""subnet":"::ffff:10.1.0.0/120""#,
            ),
            (r#""subnet":"10.1.0.0/24""#, r#""subnet":"10.1.0.0/024""#),
            (r#""subnet":"10.1.0.0/24""#, r#""subnet":null"#),
            (
                r#""subnet":"10.1.0.0/24""#,
                r#""subnet":"10.1.0.0/24","gateway":"fd00::1""#,
            ),
            (
                r#""ranges":[[{"subnet":"10.1.0.0/24"}]]"#,
                r#""ranges":[[]]"#,
            ),
            (r#""ranges":[[{"subnet":"10.1.0.0/24"}]]"#, r#""ranges":[]"#),
            (
                r#""ranges":[[{"subnet":"10.1.0.0/24"}]]"#,
                r#""ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.1.0.0/25"}]]"#,
            ),
            (
                r#""type":"host-local""#,
                r#""type":"host-local","routes":[{"dst":"0.0.0.0/0","priority":5}]"#,
            ),
            (
                r#""type":"host-local""#,
                r#""type":"host-local","routes":[{"gw":"10.1.0.1"}]"#,
            ),
            (
                r#""type":"host-local""#,
                r#""type":"host-local","dataDir":5"#,
            ),
            (r#""type":"host-local""#, r#""type":"static""#),
            (r#""name":"n""#, r#""name":"n","IPAM":{}"#),
            (r#""name":"n""#, r#""name":"bad name""#),
            (r#""name":"n""#, r#""name":"n","args":{"CNI":{}}"#),
            (r#""name":"n""#, r#""name":"n","name":"n""#),
            (r#""cniVersion":"1.0.0","#, ""),
            (r#""cniVersion":"1.0.0""#, r#""cniVersion":"0.2.0""#),
            (
                r#""type":"host-local""#,
                r#""type":"host-local","ranges":[[{"subnet":"10.1.0.0/24","subnet":"10.1.0.0/24"}]]"#,
            ),
        ] {
            let j = base.replace(from, to);
            assert_ne!(j, base, "{from}");
            falls_back(&j);
        }
        assert!(check_call("c1", "eth0").is_ok());
        assert!(check_call("c1", "a:b").is_err());
        assert!(check_call("c1", "a\u{b}b").is_err());
        assert!(check_call("-c1", "eth0").is_err());
    }
}
