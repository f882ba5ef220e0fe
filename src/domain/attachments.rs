//! Attachments as data: the declarative file (`/etc/pipe/attachments.toml`)
//! and the spec part of a state record share one shape, [`Entry`], whose keys
//! mirror the command line's long options.
//!
//! ```toml
//! [[attach]]
//! container = "web"                    # GUEST: Docker name/ID, PID, netns name or path
//! host = "br1"                         # HOST_IF
//! addr = "192.168.1.10/24@192.168.1.1" # ADDR[@GATEWAY]; "0/0" for none
//! ifname = "eth1"                      # optional, -i (default eth1)
//! mac = "U:web.example.com"            # optional
//! vlan = 100                           # optional
//! host_ifname = "vweb"                 # optional, -l
//! mtu = 1400                           # optional
//! macvlan_mode = "bridge"              # optional
//! ipvlan = "l2"                        # optional: l2, l3 or l3s (instead of a macvlan)
//! direct_phys = true                   # optional: move HOST_IF (or HOST_IF.VLAN) in
//! ```
//!
//! Pure: parsing only, no I/O (callers read the file). `pipe watch` uses it for
//! its attachments file; `pipe apply FILE` can reuse [`parse`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::spec::{AttachSpec, GuestRef, IpvlanMode, MacvlanMode};

/// The default declarative file read by `pipe watch`.
pub const DEFAULT_FILE: &str = "/etc/pipe/attachments.toml";

/// One attachment, as strings in the command line's own syntax.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub container: String,
    pub host: String,
    pub addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvlan_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvlan: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct_phys: bool,
    /// `--rate RATE[/BURST]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// `--host-shim`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_shim: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    attach: Vec<Entry>,
}

impl Entry {
    /// The entry of an attach spec (the inverse of [`Entry::to_spec`]).
    pub fn from_spec(s: &AttachSpec) -> Entry {
        Entry {
            container: s.guest.to_string(),
            host: s.host_if.to_string(),
            addr: s.addr.to_string(),
            ifname: Some(s.ifname.to_string()),
            mac: s.mac.map(|m| m.to_string()),
            vlan: s.vlan.map(|v| v.get()),
            host_ifname: s.host_ifname.as_ref().map(|n| n.to_string()),
            mtu: s.mtu,
            macvlan_mode: (s.macvlan_mode != MacvlanMode::Bridge)
                .then(|| s.macvlan_mode.as_str().to_string()),
            ipvlan: s.ipvlan.map(|m| m.as_str().to_string()),
            direct_phys: s.direct_phys,
            rate: s.rate.map(|r| r.to_string()),
            host_shim: s.host_shim,
        }
    }

    /// Parse every field; the error names the field and the value.
    pub fn to_spec(&self) -> Result<AttachSpec, String> {
        let f = |field: &str, e: String| format!("{field}: {e}");
        let guest: GuestRef = self.container.parse().map_err(|e| f("container", e))?;
        Ok(AttachSpec {
            host_if: self.host.parse().map_err(|e| f("host", e))?,
            guest,
            addr: self.addr.parse().map_err(|e| f("addr", e))?,
            mac: self
                .mac
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| f("mac", e))?,
            vlan: self
                .vlan
                .map(|v| v.to_string().parse())
                .transpose()
                .map_err(|e| f("vlan", e))?,
            ifname: self
                .ifname
                .as_deref()
                .unwrap_or("eth1")
                .parse()
                .map_err(|e| f("ifname", e))?,
            host_ifname: self
                .host_ifname
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| f("host_ifname", e))?,
            mtu: self.mtu,
            macvlan_mode: match self.macvlan_mode.as_deref() {
                None | Some("bridge") => MacvlanMode::Bridge,
                Some("private") => MacvlanMode::Private,
                Some("vepa") => MacvlanMode::Vepa,
                Some("passthru") => MacvlanMode::Passthru,
                Some(o) => {
                    return Err(format!(
                        "macvlan_mode: {o:?} is not bridge, private, vepa or passthru"
                    ));
                }
            },
            ipvlan: match self.ipvlan.as_deref() {
                None => None,
                Some("l2") => Some(IpvlanMode::L2),
                Some("l3") => Some(IpvlanMode::L3),
                Some("l3s") => Some(IpvlanMode::L3s),
                Some(o) => return Err(format!("ipvlan: {o:?} is not l2, l3 or l3s")),
            },
            direct_phys: self.direct_phys,
            netns_link: true,
            timeout: Duration::from_secs(5),
            rate: self
                .rate
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| f("rate", e))?,
            host_shim: self.host_shim,
        })
    }
}

/// Parse an attachments file. `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<(Entry, AttachSpec)>, String> {
    let file: File = toml::from_str(text).map_err(|e| {
        // toml's message spans several lines (with a source excerpt); keep one.
        let msg = e.message().trim().to_string();
        let at = e
            .span()
            .map(|s| format!(" (line {})", text[..s.start].lines().count().max(1)))
            .unwrap_or_default();
        format!("{origin}{at}: {msg}")
    })?;
    let mut out = Vec::with_capacity(file.attach.len());
    let mut seen = std::collections::HashSet::new();
    for (i, e) in file.attach.into_iter().enumerate() {
        let spec = e
            .to_spec()
            .and_then(|s| {
                crate::domain::spec::check_mtu_family(s.mtu, &s.addr)
                    .map_err(|m| format!("mtu: {m}"))?;
                Ok(s)
            })
            .map_err(|m| format!("{origin}: attachment {} ({}): {m}", i + 1, e.container))?;
        if !seen.insert((e.container.clone(), spec.ifname.clone())) {
            return Err(format!(
                "{origin}: attachment {} gives {} of {} a second time; keep one entry per interface",
                i + 1,
                spec.ifname,
                e.container
            ));
        }
        out.push((e, spec));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_format() {
        let t = r#"
# comment
[[attach]]
container = "web"
host = "br1"
addr = "192.168.1.10/24@192.168.1.1"
mac = "U:web.example.com"

[[attach]]
container = "db"
host = "eth0"
addr = "0/0"
ifname = "eth2"
mtu = 1400
macvlan_mode = "private"
"#;
        let v = parse(t, "f.toml").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].1.ifname.as_str(), "eth1");
        assert_eq!(v[0].1.guest, GuestRef::Name("web".into()));
        assert_eq!(
            v[0].1.addr.gateway.unwrap().to_string(),
            "192.168.1.1".to_string()
        );
        assert_eq!(v[1].1.macvlan_mode, MacvlanMode::Private);
        assert_eq!(v[1].1.mtu, Some(1400));
        assert_eq!(v[1].1.addr.addr, None);
        assert!(parse("", "f").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_place() {
        let e = parse(
            "[[attach]]\ncontainer = \"web\"\nhost = \"br1\"\naddr = \"10.0.0.1\"\n",
            "f",
        )
        .unwrap_err();
        assert!(e.contains("attachment 1 (web): addr:"), "{e}");
        assert!(e.contains("no prefix length"), "{e}");
        let e = parse("[[attach]]\ncontainer = \"web\"\nhots = 1\n", "f").unwrap_err();
        assert!(e.starts_with("f (line "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let two = "[[attach]]\ncontainer=\"a\"\nhost=\"br1\"\naddr=\"0/0\"\n";
        let e = parse(&format!("{two}{two}"), "f").unwrap_err();
        assert!(e.contains("second time"), "{e}");
    }

    #[test]
    fn documented_examples_parse() {
        // `pipe watch --help` (and the man page) show this example.
        // The module's own example (`pipe watch --help`'s is checked in edge::cli).
        let doc: String = include_str!("attachments.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! [[attach]]"))
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        assert_eq!(parse(&doc, "doc").unwrap().len(), 1);
    }

    #[test]
    fn spec_round_trip() {
        let t = "[[attach]]\ncontainer = \"web\"\nhost = \"mac:02:00:00:00:00:01\"\naddr = \"2001:db8::5/64@2001:db8::1\"\nvlan = 7\nhost_ifname = \"vh\"\nmac = \"02:00:00:00:00:09\"\n";
        let v = parse(t, "f").unwrap();
        let back = Entry::from_spec(&v[0].1).to_spec().unwrap();
        assert_eq!(back, v[0].1);
    }
}
