//! The reference `host-local` IPAM plugin, in process: the same
//! configuration, the same store on disk (files, contents, modes, lock), the
//! same allocation order, the same answers and errors, so pipe and the plugin
//! (and the reference `bridge`, or anything else that runs it) share one
//! `dataDir` and either releases what the other reserved. It saves the
//! plugin's process start (several ms of Go run-time) on every ADD and DEL.
//!
//! Written after containernetworking/plugins 1.1.1 (Debian bookworm's, the
//! version tests/cni.rs checks it against), `plugins/ipam/host-local`. A
//! request it does not read exactly as the plugin would ([`Fallback`]) goes
//! to the plugin, decided before anything is touched.

pub mod config;
mod disk;
pub mod range;

use std::path::Path;

use log::debug;
use serde_json::{Map, Value};

pub use config::{Fallback, Request};
use disk::Store;
use range::{Ip, RangeSet};

use super::result::{CniResult, IpConfig};

/// How an in-process request ends when it does not succeed.
#[derive(Debug)]
pub enum Failure {
    /// Nothing was touched: run the plugin instead.
    Fallback(Fallback),
    /// The plugin's own error message (its code is 999, "internal").
    Plugin(String),
}

impl From<Fallback> for Failure {
    fn from(f: Fallback) -> Failure {
        Failure::Fallback(f)
    }
}

/// ADD: one address from each range set, with its gateway; the configured
/// routes; DNS from `resolvConf`.
pub fn add(req: &Request, cid: &str, ifname: &str) -> Result<CniResult, Failure> {
    let dns = match &req.resolv_conf {
        Some(p) => resolv_conf(p)?,
        None => Value::Object(Map::new()),
    };
    let store = Store::open(&req.dir).map_err(Failure::Plugin)?;
    let mut ips = Vec::new();
    for (idx, set) in req.sets.iter().enumerate() {
        match get(&store, set, idx, cid, ifname, req.requested[idx]) {
            Ok(ip) => ips.push(ip),
            Err(e) => {
                // The plugin releases once per set already allocated.
                for _ in 0..ips.len() {
                    store.release_by_id(cid, ifname);
                }
                return Err(Failure::Plugin(format!(
                    "failed to allocate for range {idx}: {e}"
                )));
            }
        }
    }
    debug!(
        "cni: host-local in process: {} for {cid}/{ifname} in {}",
        ips.iter()
            .map(|i| i.address.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        req.dir.display()
    );
    Ok(CniResult {
        ips,
        routes: req.routes.clone(),
        dns,
        ..Default::default()
    })
}

/// One address of set `idx`: the requested one, else the first free one in
/// the allocator's order.
fn get(
    store: &Store,
    set: &RangeSet,
    idx: usize,
    cid: &str,
    ifname: &str,
    requested: Option<Ip>,
) -> Result<IpConfig, String> {
    let config = |ip: Ip, r: &range::Range| IpConfig {
        address: format!("{ip}/{}", r.prefix),
        gateway: Some(r.gateway.to_string()),
        ..Default::default()
    };
    if let Some(want) = requested {
        let r = set
            .range_for(want)
            .ok_or_else(|| format!("{want} not in range set {set}"))?;
        if want == r.gateway {
            return Err(format!("requested ip {want} is subnet's gateway"));
        }
        if !store.reserve(cid, ifname, want, idx)? {
            return Err(format!(
                "requested IP address {want} is not available in range set {set}"
            ));
        }
        return Ok(config(want, r));
    }
    // One address per set and attachment (the spec forbids a second ADD).
    if let Some(held) = store
        .get_by_id(cid, ifname)
        .into_iter()
        .find(|ip| set.contains(*ip))
    {
        return Err(format!(
            "{held} has been allocated to {cid}, duplicate allocation is not allowed"
        ));
    }
    let mut walk = set.walk(store.last_reserved(idx));
    while let Some((ip, r)) = walk.step() {
        if store.reserve(cid, ifname, ip, idx)? {
            return Ok(config(ip, r));
        }
    }
    Err(format!("no IP addresses available in range set: {set}"))
}

/// DEL: release everything `cid`/`ifname` holds (once per range set, as
/// the plugin does). Never fails once the store is open.
pub fn del(req: &Request, cid: &str, ifname: &str) -> Result<(), Failure> {
    let store = Store::open(&req.dir).map_err(Failure::Plugin)?;
    for _ in &req.sets {
        store.release_by_id(cid, ifname);
    }
    debug!(
        "cni: host-local in process: released {cid}/{ifname} in {}",
        req.dir.display()
    );
    Ok(())
}

/// CHECK: does `cid`/`ifname` hold an address at all?
pub fn check(req: &Request, cid: &str, ifname: &str) -> Result<(), Failure> {
    let store = Store::open(&req.dir).map_err(Failure::Plugin)?;
    if store.find_by_id(cid, ifname) {
        Ok(())
    } else {
        Err(Failure::Plugin(format!(
            "host-local: Failed to find address added by container {cid}"
        )))
    }
}

/// `resolvConf` as the plugin reads it: `nameserver`, `domain`, `search`,
/// `options` lines. A file it cannot read goes to the plugin (for its error).
fn resolv_conf(p: &Path) -> Result<Value, Fallback> {
    let b = std::fs::read(p).map_err(|e| Fallback(format!("resolvConf {}: {e}", p.display())))?;
    let s = std::str::from_utf8(&b)
        .map_err(|_| Fallback(format!("resolvConf {} is not UTF-8", p.display())))?;
    let (mut ns, mut domain, mut search, mut options) = (
        Vec::<&str>::new(),
        None::<&str>,
        Vec::<&str>::new(),
        Vec::<&str>::new(),
    );
    for line in s.split('\n') {
        // Go's line scanner gives up on a line of 64 KiB.
        if line.len() >= 60_000 {
            return Err(Fallback(format!(
                "resolvConf {} has a huge line",
                p.display()
            )));
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 2 {
            continue;
        }
        match f[0] {
            "nameserver" => ns.push(f[1]),
            "domain" => domain = Some(f[1]),
            "search" => search.extend(&f[1..]),
            "options" => options.extend(&f[1..]),
            _ => {}
        }
    }
    // The plugin's field order; empty fields are left out.
    let mut m = Map::new();
    if !ns.is_empty() {
        m.insert("nameservers".into(), ns.into());
    }
    if let Some(d) = domain {
        m.insert("domain".into(), d.into());
    }
    if !search.is_empty() {
        m.insert("search".into(), search.into());
    }
    if !options.is_empty() {
        m.insert("options".into(), options.into());
    }
    Ok(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway data directory, removed on drop.
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn req(dir: &Dir, args: Option<&str>) -> Request {
        let j = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"type":"host-local","dataDir":"{}",
                "ranges":[[{{"subnet":"10.5.0.0/29"}}]],"routes":[{{"dst":"0.0.0.0/0"}}]}}}}"#,
            dir.0.display()
        );
        Request::parse(j.as_bytes(), args).unwrap()
    }

    fn addr(r: Result<CniResult, Failure>) -> String {
        match r {
            Ok(r) => r.ips[0].address.clone(),
            Err(e) => panic!("{e:?}"),
        }
    }

    fn plugin_err(r: Result<CniResult, Failure>) -> String {
        match r {
            Err(Failure::Plugin(m)) => m,
            r => panic!("expected the plugin's error: {r:?}"),
        }
    }

    /// An ADD that cannot record its last reservation takes no address.
    #[test]
    fn a_failed_reservation_leaves_no_address_taken() {
        let d = Dir(std::env::temp_dir().join(format!("pipe-hl-fail-{}", std::process::id())));
        let net = d.0.join("n");
        std::fs::create_dir_all(net.join("last_reserved_ip.0")).unwrap();
        let r = req(&d, None);
        let e = plugin_err(add(&r, "a", "eth0"));
        assert!(e.contains("last_reserved_ip.0"), "{e}");
        let mut left: Vec<String> = std::fs::read_dir(&net)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["last_reserved_ip.0", "lock"]);
    }

    #[test]
    fn allocate_refuse_release_as_the_plugin() {
        let d = Dir(std::env::temp_dir().join(format!("pipe-hl-{}", std::process::id())));
        let net = d.0.join("n");
        let r = req(&d, None);
        assert_eq!(addr(add(&r, "a", "eth0")), "10.5.0.2/29");
        assert_eq!(
            std::fs::read(net.join("10.5.0.2")).unwrap(),
            b"a\r\neth0".to_vec()
        );
        assert_eq!(
            std::fs::read(net.join("last_reserved_ip.0")).unwrap(),
            b"10.5.0.2"
        );
        assert!(net.join("lock").exists());
        assert_eq!(
            plugin_err(add(&r, "a", "eth0")),
            "failed to allocate for range 0: 10.5.0.2 has been allocated to a, duplicate allocation is not allowed"
        );
        let want = req(&d, Some("IP=10.5.0.6"));
        assert_eq!(addr(add(&want, "b", "eth0")), "10.5.0.6/29");
        assert_eq!(
            plugin_err(add(&want, "c", "eth0")),
            "failed to allocate for range 0: requested IP address 10.5.0.6 is not available in range set 10.5.0.1-10.5.0.6"
        );
        let gw = req(&d, Some("IP=10.5.0.1"));
        assert_eq!(
            plugin_err(add(&gw, "c", "eth0")),
            "failed to allocate for range 0: requested ip 10.5.0.1 is subnet's gateway"
        );
        // After .6 the walk wraps: .2 is taken, .3 is next.
        assert_eq!(addr(add(&r, "c", "eth0")), "10.5.0.3/29");
        assert_eq!(addr(add(&r, "d", "eth0")), "10.5.0.4/29");
        assert_eq!(addr(add(&r, "e", "eth0")), "10.5.0.5/29");
        assert_eq!(
            plugin_err(add(&r, "f", "eth0")),
            "failed to allocate for range 0: no IP addresses available in range set: 10.5.0.1-10.5.0.6"
        );
        check(&r, "c", "eth0").unwrap();
        del(&r, "c", "eth0").unwrap();
        assert!(!net.join("10.5.0.3").exists());
        assert!(matches!(check(&r, "c", "eth0"), Err(Failure::Plugin(_))));
        // The old format (the container ID alone) is released by ID.
        std::fs::write(net.join("10.5.0.3"), "old\n").unwrap();
        check(&r, "old", "eth9").unwrap();
        del(&r, "old", "eth9").unwrap();
        assert!(!net.join("10.5.0.3").exists());
        assert_eq!(addr(add(&r, "g", "eth0")), "10.5.0.3/29");
    }

    #[test]
    fn resolv_conf_as_the_plugin_reads_it() {
        let d = std::env::temp_dir().join(format!("pipe-resolv-{}", std::process::id()));
        std::fs::write(
            &d,
            "# c\n; c\nnameserver 10.0.0.1\r\nnameserver  10.0.0.2 x\n domain a.example\ndomain b.example\n\
             search s1 s2\nsearch s3\noptions ndots:2\nnameserver\nsortlist 1.2.3.4",
        )
        .unwrap();
        let v = resolv_conf(&d).unwrap();
        std::fs::remove_file(&d).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"nameservers":["10.0.0.1","10.0.0.2"],"domain":"b.example",
                "search":["s1","s2","s3"],"options":["ndots:2"]})
        );
        assert!(resolv_conf(Path::new("/nonexistent/resolv.conf")).is_err());
    }
}
