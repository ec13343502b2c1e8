//! The PF-side settings a claim asks for, validated when built so that a bad
//! value is rejected before anything touches the kernel.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::mac::MacAddress;

/// The VLAN tag protocol the VF's VLAN is inserted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum VlanProto {
    /// Customer VLAN, EtherType 0x8100 (the default everywhere).
    #[default]
    #[serde(rename = "802.1Q")]
    Dot1Q,
    /// Service VLAN (QinQ outer tag), EtherType 0x88a8.
    #[serde(rename = "802.1ad")]
    Dot1Ad,
}

impl VlanProto {
    /// The EtherType, as `ETH_P_8021Q` / `ETH_P_8021AD` in if_ether.h.
    pub fn ethertype(self) -> u16 {
        match self {
            VlanProto::Dot1Q => 0x8100,
            VlanProto::Dot1Ad => 0x88a8,
        }
    }
}

impl fmt::Display for VlanProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VlanProto::Dot1Q => "802.1Q",
            VlanProto::Dot1Ad => "802.1ad",
        })
    }
}

/// How the VF's link follows the PF's (`IFLA_VF_LINK_STATE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Mirror the uplink (0).
    Auto,
    /// Always up, even when the uplink is down (1).
    Enable,
    /// Always down (2).
    Disable,
}

impl LinkState {
    /// The uapi value.
    pub fn as_u32(self) -> u32 {
        match self {
            LinkState::Auto => 0,
            LinkState::Enable => 1,
            LinkState::Disable => 2,
        }
    }

    /// The state for a uapi value, `None` for values this code does not know.
    pub fn from_u32(value: u32) -> Option<Self> {
        match value {
            0 => Some(LinkState::Auto),
            1 => Some(LinkState::Enable),
            2 => Some(LinkState::Disable),
            _ => None,
        }
    }
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkState::Auto => "auto",
            LinkState::Enable => "enable",
            LinkState::Disable => "disable",
        })
    }
}

/// A VF's VLAN: id 0 means "no VLAN", qos is the 802.1p priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Vlan {
    /// VLAN id, 0-4094 (0 = untagged).
    pub id: u16,
    /// Priority code point, 0-7.
    pub qos: u8,
    /// Tag protocol.
    pub proto: VlanProto,
}

impl fmt::Display for Vlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vlan {} qos {} proto {}", self.id, self.qos, self.proto)
    }
}

/// The raw, unvalidated settings as a claim's config spells them.
///
/// Field names follow the `VfConfig` API so that errors can name the field
/// the user wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VfSettingsRequest {
    /// `mac`.
    pub mac: Option<MacAddress>,
    /// `vlan`, 0-4094.
    pub vlan: Option<u32>,
    /// `vlanQoS`, 0-7; needs `vlan`.
    pub vlan_qos: Option<u32>,
    /// `vlanProto`; needs `vlan`.
    pub vlan_proto: Option<VlanProto>,
    /// `spoofChk`.
    pub spoof_chk: Option<bool>,
    /// `trust`.
    pub trust: Option<bool>,
    /// `linkState`.
    pub link_state: Option<LinkState>,
    /// `minTxRateMbps` (0 = no guarantee).
    pub min_tx_rate_mbps: Option<u32>,
    /// `maxTxRateMbps` (0 = unlimited).
    pub max_tx_rate_mbps: Option<u32>,
}

/// A setting the claim asked for that cannot be applied to any VF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid VF setting {field}: {reason}")]
pub struct InvalidVfSetting {
    /// The config field, as the user spelled it (`vlanQoS`).
    pub field: &'static str,
    /// What was expected.
    pub reason: String,
}

/// Desired PF-side settings of one VF; `None` fields are left as they are.
///
/// Only constructible through [`VfSettings::new`], so every value that
/// reaches the planner is in range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfSettings {
    mac: Option<MacAddress>,
    vlan: Option<Vlan>,
    spoof_chk: Option<bool>,
    trust: Option<bool>,
    link_state: Option<LinkState>,
    min_tx_rate_mbps: Option<u32>,
    max_tx_rate_mbps: Option<u32>,
}

impl VfSettings {
    /// Validates a request: VLAN 0-4094, QoS 0-7, QoS and protocol only with
    /// a VLAN, 802.1ad only with a non-zero VLAN, a unicast non-zero MAC, and
    /// a minimum rate not above a non-zero maximum.
    pub fn new(req: VfSettingsRequest) -> Result<Self, InvalidVfSetting> {
        let invalid = |field, reason: &str| InvalidVfSetting {
            field,
            reason: reason.to_string(),
        };
        if let Some(mac) = req.mac {
            if mac.is_zero() {
                return Err(invalid(
                    "mac",
                    "00:00:00:00:00:00 is not an address a VF can use",
                ));
            }
            if mac.is_multicast() {
                return Err(invalid(
                    "mac",
                    &format!("{mac} is a multicast address; expected a unicast one"),
                ));
            }
        }
        let vlan = match req.vlan {
            None => {
                if req.vlan_qos.is_some() {
                    return Err(invalid("vlanQoS", "needs vlan to be set"));
                }
                if req.vlan_proto.is_some() {
                    return Err(invalid("vlanProto", "needs vlan to be set"));
                }
                None
            }
            Some(id) => {
                let id = u16::try_from(id)
                    .ok()
                    .filter(|id| *id <= 4094)
                    .ok_or_else(|| {
                        invalid("vlan", &format!("{id} is out of range; expected 0-4094"))
                    })?;
                let qos = req.vlan_qos.unwrap_or(0);
                let qos = u8::try_from(qos).ok().filter(|q| *q <= 7).ok_or_else(|| {
                    invalid("vlanQoS", &format!("{qos} is out of range; expected 0-7"))
                })?;
                let proto = req.vlan_proto.unwrap_or_default();
                if proto == VlanProto::Dot1Ad && id == 0 {
                    return Err(invalid("vlanProto", "802.1ad needs a VLAN id 1-4094"));
                }
                Some(Vlan { id, qos, proto })
            }
        };
        if let (Some(min), Some(max)) = (req.min_tx_rate_mbps, req.max_tx_rate_mbps)
            && max != 0
            && min > max
        {
            return Err(invalid(
                "minTxRateMbps",
                &format!("{min} is above maxTxRateMbps {max}"),
            ));
        }
        Ok(VfSettings {
            mac: req.mac,
            vlan,
            spoof_chk: req.spoof_chk,
            trust: req.trust,
            link_state: req.link_state,
            min_tx_rate_mbps: req.min_tx_rate_mbps,
            max_tx_rate_mbps: req.max_tx_rate_mbps,
        })
    }

    /// Desired MAC.
    pub fn mac(&self) -> Option<MacAddress> {
        self.mac
    }
    /// Desired VLAN.
    pub fn vlan(&self) -> Option<Vlan> {
        self.vlan
    }
    /// Desired spoof checking.
    pub fn spoof_chk(&self) -> Option<bool> {
        self.spoof_chk
    }
    /// Desired trust.
    pub fn trust(&self) -> Option<bool> {
        self.trust
    }
    /// Desired link state.
    pub fn link_state(&self) -> Option<LinkState> {
        self.link_state
    }
    /// Desired minimum TX rate in Mbps.
    pub fn min_tx_rate_mbps(&self) -> Option<u32> {
        self.min_tx_rate_mbps
    }
    /// Desired maximum TX rate in Mbps.
    pub fn max_tx_rate_mbps(&self) -> Option<u32> {
        self.max_tx_rate_mbps
    }
    /// True when nothing is asked for, so the VF is not even read.
    pub fn is_empty(&self) -> bool {
        *self == VfSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(req: VfSettingsRequest) -> &'static str {
        VfSettings::new(req).unwrap_err().field
    }

    #[test]
    fn accepts_a_full_fronthaul_config() {
        let s = VfSettings::new(VfSettingsRequest {
            mac: Some("02:00:00:00:00:01".parse().unwrap()),
            vlan: Some(100),
            vlan_qos: Some(5),
            vlan_proto: Some(VlanProto::Dot1Ad),
            spoof_chk: Some(false),
            trust: Some(true),
            link_state: Some(LinkState::Enable),
            min_tx_rate_mbps: Some(1000),
            max_tx_rate_mbps: Some(10000),
        })
        .unwrap();
        assert_eq!(
            s.vlan(),
            Some(Vlan {
                id: 100,
                qos: 5,
                proto: VlanProto::Dot1Ad
            })
        );
        assert!(!s.is_empty());
    }

    #[test]
    fn rejects_out_of_range_vlan_and_qos_naming_the_field() {
        assert_eq!(
            field_of(VfSettingsRequest {
                vlan: Some(4095),
                ..Default::default()
            }),
            "vlan"
        );
        assert_eq!(
            field_of(VfSettingsRequest {
                vlan: Some(10),
                vlan_qos: Some(8),
                ..Default::default()
            }),
            "vlanQoS"
        );
    }

    #[test]
    fn qos_and_proto_need_a_vlan() {
        assert_eq!(
            field_of(VfSettingsRequest {
                vlan_qos: Some(1),
                ..Default::default()
            }),
            "vlanQoS"
        );
        assert_eq!(
            field_of(VfSettingsRequest {
                vlan_proto: Some(VlanProto::Dot1Q),
                ..Default::default()
            }),
            "vlanProto"
        );
        assert_eq!(
            field_of(VfSettingsRequest {
                vlan: Some(0),
                vlan_proto: Some(VlanProto::Dot1Ad),
                ..Default::default()
            }),
            "vlanProto"
        );
    }

    #[test]
    fn rejects_multicast_and_zero_mac() {
        let mac = |s: &str| VfSettingsRequest {
            mac: Some(s.parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(field_of(mac("01:00:5e:00:00:01")), "mac");
        assert_eq!(field_of(mac("00:00:00:00:00:00")), "mac");
    }

    #[test]
    fn min_rate_above_max_is_rejected_but_unlimited_max_is_fine() {
        let rate = |min, max| VfSettingsRequest {
            min_tx_rate_mbps: Some(min),
            max_tx_rate_mbps: Some(max),
            ..Default::default()
        };
        let err = VfSettings::new(rate(2000, 1000)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid VF setting minTxRateMbps: 2000 is above maxTxRateMbps 1000"
        );
        assert!(VfSettings::new(rate(2000, 0)).is_ok());
    }

    #[test]
    fn enums_use_the_config_api_spelling() {
        assert_eq!(
            serde_json::to_string(&VlanProto::Dot1Ad).unwrap(),
            "\"802.1ad\""
        );
        assert_eq!(
            serde_json::to_string(&LinkState::Disable).unwrap(),
            "\"disable\""
        );
    }
}
