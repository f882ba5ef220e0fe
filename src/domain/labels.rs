//! Attachments declared on the container: a Docker label `pipe.IFNAME` whose
//! value is the command line's grammar without GUEST:
//!
//! ```text
//! docker run --label pipe.eth1="br1 192.168.1.10/24@192.168.1.1" ...
//! docker run --label pipe.eth2="eth0 10.0.0.5/24 U:web@100 --mtu 1400 --rate 10mbit" ...
//! ```
//!
//! `HOST_IF ADDR[@GW] [MAC][@VLAN]` followed by any of `--mtu N`, `--rate R`,
//! `--ipvlan l2|l3|l3s`, `--macvlan-mode M`, `--host-shim`, `-l NAME`.
//! `--direct-phys` is refused: a label is written by whoever runs the container,
//! and moving one of the host's NICs is for the host's operator (the file).
//! Pure: parsing only; `pipe watch` reads the labels.

use crate::domain::attachments::Entry;
use crate::domain::spec::{AttachSpec, IfName};

/// Labels that declare attachments start with this.
pub const PREFIX: &str = "pipe.";

/// Parse one label into an attachment of `container`.
pub fn entry(container: &str, key: &str, value: &str) -> Result<Entry, String> {
    let ifname = key
        .strip_prefix(PREFIX)
        .ok_or_else(|| format!("label {key} does not start with {PREFIX}"))?;
    ifname
        .parse::<IfName>()
        .map_err(|e| format!("label {key}: interface name: {e}"))?;
    let bad = |m: String| format!("label {key}={value:?}: {m}");
    let mut pos = Vec::new();
    let mut e = Entry {
        container: container.to_string(),
        host: String::new(),
        addr: String::new(),
        ifname: Some(ifname.to_string()),
        mac: None,
        vlan: None,
        host_ifname: None,
        mtu: None,
        macvlan_mode: None,
        ipvlan: None,
        direct_phys: false,
        rate: None,
        host_shim: false,
    };
    let mut it = value.split_whitespace();
    while let Some(t) = it.next() {
        let (opt, inline) = match t.split_once('=') {
            Some((o, v)) if o.starts_with('-') => (o, Some(v.to_string())),
            _ => (t, None),
        };
        let mut arg = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().map(str::to_string))
                .ok_or_else(|| bad(format!("{name} needs a value")))
        };
        match opt {
            "--mtu" => {
                e.mtu = Some(
                    arg("--mtu")?
                        .parse()
                        .map_err(|_| bad("--mtu: not a number".into()))?,
                )
            }
            "--rate" => e.rate = Some(arg("--rate")?),
            "--ipvlan" => e.ipvlan = Some(arg("--ipvlan")?),
            "--macvlan-mode" => e.macvlan_mode = Some(arg("--macvlan-mode")?),
            "-l" | "--host-ifname" => e.host_ifname = Some(arg("-l")?),
            "--host-shim" => e.host_shim = true,
            "--direct-phys" => {
                return Err(bad(
                    "--direct-phys is not accepted from a label (it would move a host NIC); \
                     put it in the attachments file"
                        .into(),
                ));
            }
            o if o.starts_with('-') && o.len() > 1 => {
                return Err(bad(format!(
                    "unknown option {o}; a label takes --mtu, --rate, --ipvlan, --macvlan-mode, --host-shim, -l"
                )));
            }
            _ => pos.push(t.to_string()),
        }
    }
    match pos.as_slice() {
        [h, a] => {
            e.host = h.clone();
            e.addr = a.clone();
        }
        [h, a, mv] => {
            e.host = h.clone();
            e.addr = a.clone();
            let (mac, vlan) = match mv.split_once('@') {
                Some((m, v)) => (m, Some(v)),
                None => (mv.as_str(), None),
            };
            if !mac.is_empty() {
                e.mac = Some(mac.to_string());
            }
            if let Some(v) = vlan {
                e.vlan = Some(
                    v.parse()
                        .map_err(|_| bad(format!("@{v} is not a VLAN id")))?,
                );
            }
        }
        _ => {
            return Err(bad(
                "expected HOST_IF ADDR[@GATEWAY] [MAC][@VLAN] and options".into(),
            ));
        }
    }
    Ok(e)
}

/// Every `pipe.*` label of a container, parsed and checked; a bad label is an
/// error naming it, and does not hide the good ones.
pub fn parse<'a>(
    container: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<Result<(Entry, AttachSpec), String>> {
    let mut v: Vec<(&str, &str)> = labels
        .into_iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .collect();
    v.sort();
    v.into_iter()
        .map(|(k, val)| {
            let e = entry(container, k, val)?;
            let s = e.to_spec().map_err(|m| format!("label {k}: {m}"))?;
            crate::domain::spec::check_mtu_family(s.mtu, &s.addr)
                .map_err(|m| format!("label {k}: mtu: {m}"))?;
            Ok((e, s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_grammar_in_a_label() {
        let e = entry("web", "pipe.eth1", "br1 192.168.1.10/24@192.168.1.1").unwrap();
        assert_eq!(
            (e.host.as_str(), e.addr.as_str(), e.ifname.as_deref()),
            ("br1", "192.168.1.10/24@192.168.1.1", Some("eth1"))
        );
        let e = entry(
            "web",
            "pipe.eth2",
            "eth0 10.0.0.5/24 U:web@100 --mtu 1400 --rate=10mbit --host-shim -l vweb",
        )
        .unwrap();
        assert_eq!(e.mac.as_deref(), Some("U:web"));
        assert_eq!(e.vlan, Some(100));
        assert_eq!(e.mtu, Some(1400));
        assert_eq!(e.rate.as_deref(), Some("10mbit"));
        assert!(e.host_shim);
        assert_eq!(e.host_ifname.as_deref(), Some("vweb"));
        let e = entry("web", "pipe.eth3", "eth0 0/0 @7 --ipvlan l2").unwrap();
        assert_eq!(
            (e.mac, e.vlan, e.ipvlan.as_deref()),
            (None, Some(7), Some("l2"))
        );
    }

    #[test]
    fn bad_labels_are_named_and_do_not_hide_good_ones() {
        for (k, v, needle) in [
            ("pipe.eth1", "br1", "expected HOST_IF"),
            ("pipe.eth1", "br1 10.0.0.2/24 --mtu", "needs a value"),
            (
                "pipe.eth1",
                "eth0 10.0.0.2/24 --direct-phys",
                "--direct-phys",
            ),
            ("pipe.eth1", "br1 10.0.0.2/24 --frob", "unknown option"),
            (
                "pipe.averyveryverylongname",
                "br1 10.0.0.2/24",
                "interface name",
            ),
        ] {
            let e = entry("web", k, v).unwrap_err();
            assert!(e.contains(needle) && e.contains(k), "{e}");
        }
        let r = parse(
            "web",
            [
                ("com.example.x", "y"),
                ("pipe.eth2", "br1 10.0.0.300/24"),
                ("pipe.eth1", "br1 10.0.0.2/24"),
            ],
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].as_ref().unwrap().1.ifname.as_str(), "eth1");
        assert!(r[1].as_ref().unwrap_err().contains("pipe.eth2"));
    }
}
