//! rtnetlink messages that read and write VF settings through the PF.
//!
//! Constants, from include/uapi/linux/rtnetlink.h and if_link.h:
//! `RTM_GETLINK` = 18, `RTM_SETLINK` = 19, `IFLA_IFNAME` = 3,
//! `IFLA_VFINFO_LIST` = 22, `IFLA_EXT_MASK` = 29, `RTEXT_FILTER_VF` = 1,
//! `RTEXT_FILTER_SKIP_STATS` = 8; inside `IFLA_VF_INFO` = 1: `IFLA_VF_MAC`
//! = 1, `IFLA_VF_VLAN` = 2, `IFLA_VF_SPOOFCHK` = 4, `IFLA_VF_LINK_STATE` = 5,
//! `IFLA_VF_RATE` = 6, `IFLA_VF_TRUST` = 9, `IFLA_VF_VLAN_LIST` = 12 holding
//! `IFLA_VF_VLAN_INFO` = 1.

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkMessage, LinkVfInfo, VfInfo, VfInfoLinkState, VfInfoMac,
    VfInfoRate, VfInfoSpoofCheck, VfInfoTrust, VfInfoVlan, VfLinkState, VfVlan, VfVlanInfo,
    VlanProtocol,
};

use super::plan::VfChange;
use super::settings::{LinkState, VlanProto};

/// `RTM_GETLINK` for `pf` asking for the VF list but not the per-VF
/// statistics, which would only make a many-VF reply larger.
pub fn get_vfs_message(pf: &str) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.attributes = vec![
        LinkAttribute::IfName(pf.to_string()),
        LinkAttribute::ExtMask(vec![LinkExtentMask::Vf, LinkExtentMask::SkipStats]),
    ];
    RouteNetlinkMessage::GetLink(link)
}

/// `RTM_SETLINK` on `pf` (found by name) carrying one setting of VF `vf`.
///
/// One setting per message: the kernel applies the attributes of one
/// `IFLA_VF_INFO` in a fixed order and stops at the first refusal without
/// saying which one failed, so bundling them would lose both the name of the
/// refused setting and the knowledge of what was applied.
pub fn set_vf_message(pf: &str, vf: u32, change: &VfChange) -> RouteNetlinkMessage {
    let info = match *change {
        VfChange::Mac { mac } => VfInfo::Mac(VfInfoMac::new(vf, &mac.0)),
        // 802.1Q goes through the plain IFLA_VF_VLAN, which every driver and
        // kernel since 2.6.34 accepts; 802.1ad needs the VLAN list.
        VfChange::Vlan { vlan } if vlan.proto == VlanProto::Dot1Q => {
            VfInfo::Vlan(VfInfoVlan::new(vf, u32::from(vlan.id), u32::from(vlan.qos)))
        }
        VfChange::Vlan { vlan } => VfInfo::VlanList(vec![VfVlan::Info(VfVlanInfo::new(
            vf,
            u32::from(vlan.id),
            u32::from(vlan.qos),
            VlanProtocol::Ieee8021Ad,
        ))]),
        VfChange::TxRate { min_mbps, max_mbps } => {
            VfInfo::Rate(VfInfoRate::new(vf, min_mbps, max_mbps))
        }
        VfChange::SpoofChk { enabled } => VfInfo::SpoofCheck(VfInfoSpoofCheck::new(vf, enabled)),
        VfChange::Trust { enabled } => VfInfo::Trust(VfInfoTrust::new(vf, enabled)),
        VfChange::LinkState { state } => VfInfo::LinkState(VfInfoLinkState::new(
            vf,
            match state {
                LinkState::Auto => VfLinkState::Auto,
                LinkState::Enable => VfLinkState::Enable,
                LinkState::Disable => VfLinkState::Disable,
            },
        )),
    };
    let mut link = LinkMessage::default();
    link.attributes = vec![
        LinkAttribute::IfName(pf.to_string()),
        LinkAttribute::VfInfoList(vec![LinkVfInfo(vec![info])]),
    ];
    RouteNetlinkMessage::SetLink(link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::encode_request;
    use crate::vf_config::settings::Vlan;

    /// nlmsghdr + ifinfomsg + IFLA_IFNAME "ens1f0" + IFLA_VFINFO_LIST {
    /// IFLA_VF_INFO { `vf_attr` } }, as iproute2 lays it out, sequence 1.
    fn expected_setlink(vf_attr: &[u8]) -> Vec<u8> {
        let info_len = 4 + vf_attr.len();
        let list_len = 4 + info_len;
        let total = 16 + 16 + 12 + list_len;
        let mut b = Vec::new();
        b.extend_from_slice(&(total as u32).to_ne_bytes()); // nlmsg_len
        b.extend_from_slice(&19u16.to_ne_bytes()); // RTM_SETLINK = 19
        b.extend_from_slice(&5u16.to_ne_bytes()); // NLM_F_REQUEST 1 | NLM_F_ACK 4
        b.extend_from_slice(&1u32.to_ne_bytes()); // nlmsg_seq
        b.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
        b.extend_from_slice(&[0; 16]); // ifinfomsg: family 0, type 0, index 0 (by name), flags 0, change 0
        b.extend_from_slice(&11u16.to_ne_bytes()); // nla_len 4 + "ens1f0\0"
        b.extend_from_slice(&3u16.to_ne_bytes()); // IFLA_IFNAME = 3
        b.extend_from_slice(b"ens1f0\0\0"); // string, NUL, 1 byte pad to 4
        b.extend_from_slice(&(list_len as u16).to_ne_bytes());
        b.extend_from_slice(&22u16.to_ne_bytes()); // IFLA_VFINFO_LIST = 22
        b.extend_from_slice(&(info_len as u16).to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes()); // IFLA_VF_INFO = 1
        b.extend_from_slice(vf_attr);
        b
    }

    fn attr(kind: u16, words: &[u32]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((4 + 4 * words.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        for w in words {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        b
    }

    fn encoded(change: VfChange) -> Vec<u8> {
        encode_request(set_vf_message("ens1f0", 3, &change), 0, 1)
    }

    #[test]
    fn mac_is_ifla_vf_mac_with_a_32_byte_address_field() {
        // struct ifla_vf_mac { __u32 vf; __u8 mac[32]; } = 36 bytes, nla_len 40.
        let mut vf_attr = Vec::new();
        vf_attr.extend_from_slice(&40u16.to_ne_bytes());
        vf_attr.extend_from_slice(&1u16.to_ne_bytes()); // IFLA_VF_MAC = 1
        vf_attr.extend_from_slice(&3u32.to_ne_bytes());
        vf_attr.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        vf_attr.extend_from_slice(&[0; 26]);
        let change = VfChange::Mac {
            mac: "02:00:00:00:00:01".parse().unwrap(),
        };
        assert_eq!(encoded(change), expected_setlink(&vf_attr));
    }

    #[test]
    fn dot1q_vlan_is_ifla_vf_vlan() {
        // struct ifla_vf_vlan { vf, vlan, qos } = 12 bytes; IFLA_VF_VLAN = 2.
        let change = VfChange::Vlan {
            vlan: Vlan {
                id: 100,
                qos: 5,
                proto: VlanProto::Dot1Q,
            },
        };
        assert_eq!(encoded(change), expected_setlink(&attr(2, &[3, 100, 5])));
    }

    #[test]
    fn dot1ad_vlan_is_a_one_entry_vlan_list_with_big_endian_proto() {
        // IFLA_VF_VLAN_LIST = 12 { IFLA_VF_VLAN_INFO = 1: struct ifla_vf_vlan_info
        // { vf, vlan, qos, __be16 vlan_proto } padded to 16 bytes }.
        let mut info = attr(1, &[3, 200, 1]);
        info[0..2].copy_from_slice(&20u16.to_ne_bytes());
        info.extend_from_slice(&[0x88, 0xa8, 0, 0]); // ETH_P_8021AD big-endian + pad
        let mut list = Vec::new();
        list.extend_from_slice(&24u16.to_ne_bytes());
        list.extend_from_slice(&12u16.to_ne_bytes());
        list.extend(info);
        let change = VfChange::Vlan {
            vlan: Vlan {
                id: 200,
                qos: 1,
                proto: VlanProto::Dot1Ad,
            },
        };
        assert_eq!(encoded(change), expected_setlink(&list));
    }

    #[test]
    fn rate_is_ifla_vf_rate_with_min_then_max() {
        // struct ifla_vf_rate { vf, min_tx_rate, max_tx_rate }; IFLA_VF_RATE = 6.
        let change = VfChange::TxRate {
            min_mbps: 1000,
            max_mbps: 10000,
        };
        assert_eq!(
            encoded(change),
            expected_setlink(&attr(6, &[3, 1000, 10000]))
        );
    }

    #[test]
    fn spoofchk_is_ifla_vf_spoofchk() {
        // struct ifla_vf_spoofchk { vf, setting }; IFLA_VF_SPOOFCHK = 4.
        let change = VfChange::SpoofChk { enabled: false };
        assert_eq!(encoded(change), expected_setlink(&attr(4, &[3, 0])));
    }

    #[test]
    fn trust_is_ifla_vf_trust() {
        // struct ifla_vf_trust { vf, setting }; IFLA_VF_TRUST = 9.
        let change = VfChange::Trust { enabled: true };
        assert_eq!(encoded(change), expected_setlink(&attr(9, &[3, 1])));
    }

    #[test]
    fn link_state_is_ifla_vf_link_state_with_uapi_values() {
        // struct ifla_vf_link_state { vf, link_state }; IFLA_VF_LINK_STATE = 5;
        // IFLA_VF_LINK_STATE_AUTO = 0, _ENABLE = 1, _DISABLE = 2.
        for (state, value) in [
            (LinkState::Auto, 0),
            (LinkState::Enable, 1),
            (LinkState::Disable, 2),
        ] {
            let change = VfChange::LinkState { state };
            assert_eq!(
                encoded(change),
                expected_setlink(&attr(5, &[3, value])),
                "{state}"
            );
        }
    }

    #[test]
    fn getlink_asks_for_vfs_without_stats() {
        let bytes = encode_request(get_vfs_message("ens1f0"), 0, 1);
        let mut expected = Vec::new();
        expected.extend_from_slice(&52u32.to_ne_bytes()); // 16 + 16 + 12 + 8
        expected.extend_from_slice(&18u16.to_ne_bytes()); // RTM_GETLINK = 18
        expected.extend_from_slice(&5u16.to_ne_bytes()); // NLM_F_REQUEST | NLM_F_ACK
        expected.extend_from_slice(&1u32.to_ne_bytes());
        expected.extend_from_slice(&0u32.to_ne_bytes());
        expected.extend_from_slice(&[0; 16]);
        expected.extend_from_slice(&11u16.to_ne_bytes());
        expected.extend_from_slice(&3u16.to_ne_bytes()); // IFLA_IFNAME = 3
        expected.extend_from_slice(b"ens1f0\0\0");
        // IFLA_EXT_MASK = 29, u32 RTEXT_FILTER_VF (1) | RTEXT_FILTER_SKIP_STATS (8)
        expected.extend(attr(29, &[9]));
        assert_eq!(bytes, expected);
    }
}
