//! 802.1Q decisions, pure: what `HOST_IF.VID` is and whether it may be reused,
//! and what a bridge's VLAN settings are. `facts` fills these in, `plan` acts on them.

use crate::domain::spec::{IfName, VlanId};
use crate::sys::netlink::{ETH_P_8021Q, LinkDetail};

/// What the VLAN part of an attachment found on the host, read before any change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VlanFacts {
    /// `HOST_IF.VID` and what is there now (@VID on an interface that is not a bridge).
    pub sub: Option<(IfName, SubIf)>,
    /// The VLAN settings of an existing bridge (@VID on a bridge).
    pub bridge: Option<BridgeVlan>,
}

/// What is at the name `HOST_IF.VID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubIf {
    /// Nothing: this attach creates it (and deletes it again if the attach fails).
    Missing,
    /// An 802.1Q device with this VID on this parent: reused, never deleted.
    Reuse(crate::sys::netlink::Link),
    /// Something else squats on the name; the text says what it is.
    Squatter(String),
}

/// A bridge's VLAN settings as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeVlan {
    pub filtering: bool,
    /// The VLAN every new port joins untagged (0: none). Linux's default is 1.
    pub default_pvid: u16,
}

/// Linux's default `vlan_default_pvid` for a new bridge.
pub const DEFAULT_PVID: u16 = 1;

impl BridgeVlan {
    /// A bridge as `ip link add type bridge` makes it.
    pub fn new_bridge() -> BridgeVlan {
        BridgeVlan {
            filtering: false,
            default_pvid: DEFAULT_PVID,
        }
    }

    pub fn from_detail(d: &LinkDetail) -> BridgeVlan {
        BridgeVlan {
            filtering: d.vlan_filtering.unwrap_or(false),
            default_pvid: d.default_pvid.unwrap_or(DEFAULT_PVID),
        }
    }
}

/// Is `found` (the link named `PARENT.VID`) an 802.1Q device with `vid` on `parent`?
pub fn classify_sub(found: Option<&LinkDetail>, parent: u32, vid: VlanId) -> SubIf {
    let Some(d) = found else {
        return SubIf::Missing;
    };
    let kind = d.link.kind.as_deref();
    let what = match (kind, d.vlan) {
        (Some("vlan"), Some((id, proto)))
            if id == vid.get()
                && proto == ETH_P_8021Q
                && d.parent == Some(parent)
                && d.parent_netnsid.is_none() =>
        {
            return SubIf::Reuse(d.link.clone());
        }
        (Some("vlan"), Some((_, proto))) if proto != ETH_P_8021Q => {
            format!("an 802.1ad (QinQ, protocol {proto:#06x}) VLAN device")
        }
        (Some("vlan"), Some((id, _))) if id != vid.get() => {
            format!("an 802.1Q device of VLAN {id}, not {vid}")
        }
        (Some("vlan"), _) => "an 802.1Q device on another parent".to_string(),
        (Some(k), _) => format!("a {k} device"),
        (None, _) => "a physical interface".to_string(),
    };
    SubIf::Squatter(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::netlink::Link;

    fn detail(kind: Option<&str>, parent: Option<u32>, vlan: Option<(u16, u16)>) -> LinkDetail {
        LinkDetail {
            link: Link {
                index: 9,
                name: "eth0.100".into(),
                kind: kind.map(str::to_string),
                mtu: 1500,
                up: true,
                mac: None,
                master: None,
                alias: None,
                lower: None,
            },
            parent,
            parent_netnsid: None,
            vlan,
            vlan_filtering: None,
            default_pvid: None,
        }
    }

    #[test]
    fn reuse_only_the_right_8021q_device() {
        let v: VlanId = "100".parse().unwrap();
        assert_eq!(classify_sub(None, 2, v), SubIf::Missing);
        let ok = detail(Some("vlan"), Some(2), Some((100, ETH_P_8021Q)));
        assert!(matches!(classify_sub(Some(&ok), 2, v), SubIf::Reuse(l) if l.index == 9));
        for (d, want) in [
            (detail(Some("dummy"), None, None), "a dummy device"),
            (
                detail(Some("vlan"), Some(2), Some((101, ETH_P_8021Q))),
                "VLAN 101, not 100",
            ),
            (
                detail(Some("vlan"), Some(3), Some((100, ETH_P_8021Q))),
                "another parent",
            ),
            (
                detail(Some("vlan"), Some(2), Some((100, 0x88a8))),
                "802.1ad",
            ),
            (detail(None, None, None), "physical"),
        ] {
            match classify_sub(Some(&d), 2, v) {
                SubIf::Squatter(s) => assert!(s.contains(want), "{s} / {want}"),
                other => panic!("{other:?} for {d:?}"),
            }
        }
        let mut other_ns = ok.clone();
        other_ns.parent_netnsid = Some(0);
        assert!(matches!(
            classify_sub(Some(&other_ns), 2, v),
            SubIf::Squatter(_)
        ));
    }
}
