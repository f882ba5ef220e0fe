//! The CNI edge: the environment (`CNI_*`) and the network configuration on
//! stdin, parsed once into typed values. No I/O beyond reading the env.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::result::CniError;
use crate::domain::spec::{AddrSpec, HostIfRef, IfName, IpvlanMode, Mac, MacvlanMode, VlanId};

/// The verbs of CNI 1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// The `CNI_*` environment, as the runtime set it.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub container_id: Option<String>,
    /// Empty or unset: the runtime no longer knows the namespace (DEL).
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub args: Vec<(String, String)>,
    /// CNI_ARGS as given, for host-local in process (which reads it as the plugin).
    pub args_raw: Option<String>,
    pub path: Vec<PathBuf>,
}

impl Env {
    pub fn from_process() -> Env {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS").map(PathBuf::from),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS").map(|a| parse_args(&a)).unwrap_or_default(),
            args_raw: get("CNI_ARGS"),
            path: get("CNI_PATH")
                .map(|p| {
                    p.split(':')
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// CNI_CONTAINERID, required (code 4 when missing or malformed).
    pub fn container_id(&self, ver: &str) -> Result<&str, CniError> {
        let id = self.container_id.as_deref().ok_or_else(|| {
            CniError::new(
                ver,
                4,
                "CNI_CONTAINERID is not set; the runtime must give the container's ID",
            )
        })?;
        // The spec's grammar: alphanumeric plus `_.-`, starting alphanumeric.
        let ok = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return Err(CniError::new(
                ver,
                4,
                format!("CNI_CONTAINERID {id:?} is not valid; use letters, digits, '_', '.', '-'"),
            ));
        }
        Ok(id)
    }

    /// CNI_IFNAME, required and a valid interface name (code 4).
    pub fn ifname(&self, ver: &str) -> Result<IfName, CniError> {
        let n = self.ifname.as_deref().ok_or_else(|| {
            CniError::new(
                ver,
                4,
                "CNI_IFNAME is not set; the runtime must name the interface to create",
            )
        })?;
        n.parse()
            .map_err(|e| CniError::new(ver, 4, format!("CNI_IFNAME: {e}")))
    }

    /// CNI_NETNS, required for ADD and CHECK (code 4).
    pub fn netns(&self, ver: &str) -> Result<&PathBuf, CniError> {
        self.netns.as_ref().ok_or_else(|| {
            CniError::new(ver, 4, "CNI_NETNS is not set; the runtime must give the container's network namespace path")
        })
    }

    pub fn arg(&self, k: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// `CNI_ARGS`: `K=V;K=V` (`IgnoreUnknown=1` and keys pipe does not use are ignored).
pub fn parse_args(s: &str) -> Vec<(String, String)> {
    s.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A `String` or a list of strings (for `addresses`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The plugin's network configuration (one entry of a conflist, as the
/// runtime hands it over). Keys mirror pipe's command line.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// HOST_IF: a bridge (created when missing and named `br*`), or the parent
    /// of a macvlan/ipvlan; `mac:AA:..` picks it by MAC. Aliases: bridge, master.
    #[serde(default, alias = "bridge", alias = "master")]
    pub host: Option<String>,
    #[serde(default)]
    pub vlan: Option<Value>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub macvlan_mode: Option<String>,
    /// Also accepted as the reference plugins' `mode` for macvlan.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub ipvlan: Option<String>,
    #[serde(default)]
    pub direct_phys: bool,
    #[serde(default)]
    pub rate: Option<String>,
    /// The interface to create instead of CNI_IFNAME (`-i`): a second
    /// interface after a plugin that made CNI_IFNAME in the same chain.
    #[serde(default)]
    pub ifname: Option<String>,
    /// Static addresses in pipe's syntax, without IPAM.
    #[serde(default)]
    pub addresses: Option<OneOrMany>,
    #[serde(default)]
    pub ipam: Option<Value>,
    /// pipe's state directory (default `$PIPE_STATE_DIR`, else /run/pipe):
    /// runtimes do not always pass their environment on to the plugin.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub runtime_config: Option<RuntimeConfig>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub ips: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The cniVersion a request asks for, read leniently so that even a config
/// that fails to decode gets its error in the version it asked for.
pub fn version_of(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .unwrap_or_else(|| super::result::LATEST.to_string())
}

impl NetConf {
    /// Decode stdin (code 6 when it is not the expected JSON).
    pub fn decode(stdin: &[u8], ver: &str) -> Result<NetConf, CniError> {
        serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(ver, 6, "cannot decode the network configuration on stdin")
                .details(e.to_string())
        })
    }

    pub fn network(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The IPAM plugin's type, if the config delegates addresses to one.
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam.as_ref()?.get("type")?.as_str()
    }
}

/// The attach options of a config, typed (code 7 for any invalid field).
#[derive(Clone, Debug)]
pub struct Options {
    pub host_if: HostIfRef,
    pub vlan: Option<VlanId>,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    pub macvlan_mode: MacvlanMode,
    pub ipvlan: Option<IpvlanMode>,
    pub direct_phys: bool,
    pub rate: Option<crate::domain::rate::Rate>,
    pub addresses: Option<AddrSpec>,
}

impl Options {
    pub fn from_conf(c: &NetConf, env: &Env, ver: &str) -> Result<Options, CniError> {
        let bad = |what: &str, e: String| CniError::new(ver, 7, format!("invalid \"{what}\": {e}"));
        let host = c.host.as_deref().ok_or_else(|| {
            CniError::new(
                ver,
                7,
                "the network configuration names no host interface; set \"host\" (or \"bridge\"/\"master\") \
                 to a bridge or a parent interface",
            )
        })?;
        let host_if: HostIfRef = host.parse().map_err(|e| bad("host", e))?;
        let vlan = match &c.vlan {
            None => None,
            Some(Value::Number(n)) => Some(n.to_string().parse().map_err(|e| bad("vlan", e))?),
            Some(Value::String(s)) => Some(s.parse().map_err(|e| bad("vlan", e))?),
            Some(v) => return Err(bad("vlan", format!("{v} is not a number from 1 to 4094"))),
        };
        if let Some(m) = c.mtu
            && !(68..=65535).contains(&m)
        {
            return Err(bad("mtu", format!("{m} is out of range; give 68 to 65535")));
        }
        // The runtime's `mac` capability and CNI_ARGS MAC= override the config.
        let mac_s = c
            .runtime_config
            .as_ref()
            .and_then(|r| r.mac.clone())
            .or_else(|| env.arg("MAC").map(str::to_string))
            .or_else(|| c.mac.clone());
        let mac = mac_s
            .map(|m| m.parse::<Mac>().map_err(|e| bad("mac", e)))
            .transpose()?;
        let macvlan_mode = match c.macvlan_mode.as_deref().or(c.mode.as_deref()) {
            None | Some("bridge") => MacvlanMode::Bridge,
            Some("private") => MacvlanMode::Private,
            Some("vepa") => MacvlanMode::Vepa,
            Some("passthru") => MacvlanMode::Passthru,
            Some(m) => {
                return Err(bad(
                    "macvlanMode",
                    format!("{m:?} is not bridge, private, vepa or passthru"),
                ));
            }
        };
        let ipvlan = match c.ipvlan.as_deref() {
            None => None,
            Some("l2") => Some(IpvlanMode::L2),
            Some("l3") => Some(IpvlanMode::L3),
            Some("l3s") => Some(IpvlanMode::L3s),
            Some(m) => return Err(bad("ipvlan", format!("{m:?} is not l2, l3 or l3s"))),
        };
        let rate = c
            .rate
            .as_deref()
            .map(|r| r.parse().map_err(|e| bad("rate", e)))
            .transpose()?;
        let mut addresses = match &c.addresses {
            None => None,
            Some(OneOrMany::One(s)) => Some(s.clone()),
            Some(OneOrMany::Many(v)) => Some(v.join(",")),
        }
        .map(|s| s.parse::<AddrSpec>().map_err(|e| bad("addresses", e)))
        .transpose()?;
        if addresses.as_ref().is_some_and(|a| a.dhcp.is_some()) {
            return Err(bad(
                "addresses",
                "DHCP is not available through CNI; use an \"ipam\" section (type dhcp)".into(),
            ));
        }
        if addresses.is_some() && c.ipam_type().is_some() {
            return Err(bad(
                "addresses",
                "give either \"addresses\" or an \"ipam\" section, not both".into(),
            ));
        }
        // Without IPAM, the runtime's `ips` capability (or CNI_ARGS IP=) replaces
        // the addresses: an IP with a prefix, the gateway kept from the config.
        if c.ipam_type().is_none() {
            let ips: Vec<String> = match &c.runtime_config {
                Some(r) if !r.ips.is_empty() => r.ips.clone(),
                _ => env
                    .arg("IP")
                    .map(|s| s.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            };
            if !ips.is_empty() {
                let gws = addresses.as_ref().map(|a| a.gateways()).unwrap_or_default();
                let mut list = Vec::new();
                for ip in &ips {
                    if !ip.contains('/') {
                        return Err(bad(
                            "ips",
                            format!(
                                "{ip} has no prefix length; give IP/PREFIX, or use an \"ipam\" section"
                            ),
                        ));
                    }
                    let gw = gws
                        .iter()
                        .find(|g| g.is_ipv4() != ip.contains(':'))
                        .map(|g| format!("@{g}"))
                        .unwrap_or_default();
                    list.push(format!("{ip}{gw}"));
                }
                addresses = Some(list.join(",").parse().map_err(|e| bad("ips", e))?);
            }
        }
        Ok(Options {
            host_if,
            vlan,
            mtu: c.mtu,
            mac,
            macvlan_mode,
            ipvlan,
            direct_phys: c.direct_phys,
            rate,
            addresses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(j: &str) -> NetConf {
        NetConf::decode(j.as_bytes(), "1.0.0").unwrap()
    }

    #[test]
    fn aliases_and_fields() {
        let c = conf(
            r#"{"cniVersion":"1.0.0","name":"n","type":"pipe","bridge":"br0","vlan":100,"mtu":1400,
                "mac":"02:00:00:00:00:01","rate":"10mbit","addresses":["10.1.0.2/24@10.1.0.1"]}"#,
        );
        let o = Options::from_conf(&c, &Env::default(), "1.0.0").unwrap();
        assert_eq!(o.host_if.to_string(), "br0");
        assert_eq!(o.vlan.unwrap().get(), 100);
        assert_eq!(o.mtu, Some(1400));
        assert_eq!(o.addresses.unwrap().to_string(), "10.1.0.2/24@10.1.0.1");
        let c = conf(r#"{"cniVersion":"1.0.0","master":"eth0","mode":"private"}"#);
        let o = Options::from_conf(&c, &Env::default(), "1.0.0").unwrap();
        assert_eq!(o.host_if.to_string(), "eth0");
        assert_eq!(o.macvlan_mode, MacvlanMode::Private);
    }

    #[test]
    fn invalid_fields_are_code_7() {
        for j in [
            r#"{"cniVersion":"1.0.0"}"#,
            r#"{"cniVersion":"1.0.0","host":"br0","vlan":5000}"#,
            r#"{"cniVersion":"1.0.0","host":"br0","mtu":10}"#,
            r#"{"cniVersion":"1.0.0","host":"br0","mac":"01:00:00:00:00:01"}"#,
            r#"{"cniVersion":"1.0.0","host":"br0","ipvlan":"l4"}"#,
            r#"{"cniVersion":"1.0.0","host":"br0","addresses":"10.0.0.1"}"#,
            r#"{"cniVersion":"1.0.0","host":"br0","addresses":"10.0.0.1/24","ipam":{"type":"host-local"}}"#,
        ] {
            let e = Options::from_conf(&conf(j), &Env::default(), "1.0.0").unwrap_err();
            assert_eq!(e.code, 7, "{j}: {e:?}");
        }
    }

    #[test]
    fn runtime_mac_and_ips_override() {
        let c = conf(
            r#"{"cniVersion":"1.0.0","host":"br0","mac":"02:00:00:00:00:01","addresses":"10.1.0.2/24@10.1.0.1",
                "runtimeConfig":{"mac":"02:00:00:00:00:02","ips":["10.1.0.9/24"]}}"#,
        );
        let o = Options::from_conf(&c, &Env::default(), "1.0.0").unwrap();
        assert_eq!(o.mac.unwrap().to_string(), "02:00:00:00:00:02");
        assert_eq!(o.addresses.unwrap().to_string(), "10.1.0.9/24@10.1.0.1");
        let env = Env {
            args: parse_args("IgnoreUnknown=1;K8S_POD_NAME=x;MAC=02:00:00:00:00:03;IP=10.1.0.7/24"),
            ..Default::default()
        };
        let c = conf(r#"{"cniVersion":"1.0.0","host":"br0"}"#);
        let o = Options::from_conf(&c, &env, "1.0.0").unwrap();
        assert_eq!(o.mac.unwrap().to_string(), "02:00:00:00:00:03");
        assert_eq!(o.addresses.unwrap().to_string(), "10.1.0.7/24");
    }

    #[test]
    fn bad_json_is_code_6() {
        assert_eq!(NetConf::decode(b"{", "1.0.0").unwrap_err().code, 6);
        assert_eq!(
            NetConf::decode(br#"{"mtu":"x"}"#, "1.0.0")
                .unwrap_err()
                .code,
            6
        );
        assert_eq!(version_of(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
    }
}
