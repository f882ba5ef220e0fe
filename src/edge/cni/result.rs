//! CNI results and errors, in the version the configuration asks for.
//!
//! Internally a result has the 1.x shape; [`CniResult::for_version`] turns it
//! into what a 0.3/0.4 runtime expects (an IP `version` field), since libcni
//! 1.1.2 (Podman 4.3, containerd 1.6) rejects a result newer than its config.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The newest spec version pipe speaks.
pub const LATEST: &str = "1.1.0";

/// Every version pipe can answer in.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Error codes pipe uses beyond the spec's (which are below 100).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE: u32 = 1;
    /// Missing or invalid CNI_* environment.
    pub const ENV: u32 = 4;
    /// The config on stdin cannot be decoded.
    pub const DECODE: u32 = 6;
    /// A field of the config is invalid.
    pub const CONFIG: u32 = 7;
    /// Transient: another pipe holds this network's lock; try again.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: ADD cannot work now (host interface missing, IPAM plugin missing).
    pub const NOT_AVAILABLE: u32 = 50;
    /// The attach failed (and was rolled back).
    pub const ATTACH: u32 = 100;
    /// CNI_IFNAME already exists in the container.
    pub const IFNAME_EXISTS: u32 = 101;
    /// CHECK found the container's network different from prevResult.
    pub const CHECK_MISMATCH: u32 = 102;
    /// The IPAM plugin could not be run (not found, bad output).
    pub const IPAM: u32 = 103;
    /// DEL/GC could not remove everything.
    pub const TEARDOWN: u32 = 104;
    /// pipe's CNI state could not be read or written.
    pub const STATE: u32 = 105;
    /// What the reference plugins answer for their own failures (libcni's
    /// ErrInternal): host-local in process answers with it too (range full...).
    pub const PLUGIN_INTERNAL: u32 = 999;
}

/// A CNI error result: printed on stdout, exit status 1.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CniError {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(ver: &str, code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            cni_version: ver.to_string(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, d: impl Into<String>) -> CniError {
        self.details = d.into();
        self
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Fields of newer versions (mtu, socketPath, pciID) passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct IpConfig {
    /// "4"/"6": only in 0.x results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RouteEntry {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    /// 1.1 fields (mtu, advmss, priority, table, scope) passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RouteEntry {
    pub fn is_default(&self) -> bool {
        self.dst == "0.0.0.0/0" || self.dst == "::/0"
    }

    pub fn v6(&self) -> bool {
        self.dst.contains(':')
    }

    pub fn gw_ip(&self) -> Option<IpAddr> {
        self.gw.as_deref()?.parse().ok()
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<RouteEntry>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub dns: Value,
}

impl CniResult {
    /// Parse a result of any supported version (prevResult, IPAM output).
    pub fn parse(v: &Value) -> Result<CniResult, String> {
        CniResult::deserialize(v).map_err(|e| e.to_string())
    }

    /// The same result in version `ver`: 0.x results carry `version` on each IP.
    pub fn for_version(mut self, ver: &str) -> CniResult {
        let old = ver.starts_with("0.");
        for ip in &mut self.ips {
            ip.version = old.then(|| if ip.address.contains(':') { "6" } else { "4" }.to_string());
        }
        if old {
            // 0.x knows no interface fields beyond name/mac/sandbox.
            for i in &mut self.interfaces {
                i.extra.clear();
            }
            for r in &mut self.routes {
                r.extra.clear();
            }
        }
        self.cni_version = ver.to_string();
        self
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_shape_the_ips() {
        let r = CniResult {
            ips: vec![
                IpConfig {
                    address: "10.1.0.2/24".into(),
                    interface: Some(1),
                    ..Default::default()
                },
                IpConfig {
                    address: "2001:db8::2/64".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let old: Value = serde_json::from_str(&r.clone().for_version("0.4.0").json()).unwrap();
        assert_eq!(old["cniVersion"], "0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        let new: Value = serde_json::from_str(&r.for_version("1.0.0").json()).unwrap();
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["ips"][0]["interface"], 1);
    }

    #[test]
    fn parses_an_old_prev_result_and_keeps_unknown_fields() {
        let v: Value = serde_json::from_str(
            r#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/x","mtu":1400}],
                "ips":[{"version":"4","address":"10.0.0.2/24","gateway":"10.0.0.1","interface":0}],
                "routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.0.0.1"]}}"#,
        )
        .unwrap();
        let r = CniResult::parse(&v).unwrap();
        assert_eq!(r.interfaces[0].extra["mtu"], 1400);
        assert!(r.routes[0].is_default());
        let out: Value = serde_json::from_str(&r.for_version("1.1.0").json()).unwrap();
        assert_eq!(out["interfaces"][0]["mtu"], 1400);
        assert_eq!(out["dns"]["nameservers"][0], "10.0.0.1");
    }

    #[test]
    fn error_json() {
        let e = CniError::new("1.0.0", 7, "bad").details("why");
        assert_eq!(
            e.json(),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"bad","details":"why"}"#
        );
    }
}
