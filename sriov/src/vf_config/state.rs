//! A VF's current PF-side settings, as the PF reports them in `RTM_GETLINK`
//! with `IFLA_EXT_MASK = RTEXT_FILTER_VF`.

use netlink_packet_route::link::{LinkAttribute, LinkMessage, VfInfo, VfLinkState, VlanProtocol};
use serde::{Deserialize, Serialize};

use super::mac::MacAddress;
use super::settings::{LinkState, Vlan, VlanProto};

/// What the PF says about one VF; saved in the claim's record before we
/// change anything, so that release can put back exactly this.
///
/// `spoof_chk` and `trust` read `false` when the driver does not report
/// them (the kernel's -1 "unknown" is folded into off by the netlink crate);
/// drivers that do not report them do not implement setting them either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfState {
    /// VF index on its PF (the `N` of `virtfnN`).
    pub index: u32,
    /// Administrative MAC; all zeros when the PF never set one.
    pub mac: MacAddress,
    /// VLAN id, QoS and protocol; id 0 = no VLAN.
    pub vlan: Vlan,
    /// Spoof checking.
    pub spoof_chk: bool,
    /// Trusted mode.
    pub trust: bool,
    /// Link state; `None` when the kernel reported a value unknown to us.
    pub link_state: Option<LinkState>,
    /// Minimum TX rate in Mbps (0 = none).
    pub min_tx_rate_mbps: u32,
    /// Maximum TX rate in Mbps (0 = unlimited).
    pub max_tx_rate_mbps: u32,
}

impl VfState {
    /// A VF with nothing set, as a freshly created VF reports itself.
    pub fn unconfigured(index: u32) -> Self {
        VfState {
            index,
            mac: MacAddress::default(),
            vlan: Vlan::default(),
            spoof_chk: true,
            trust: false,
            link_state: Some(LinkState::Auto),
            min_tx_rate_mbps: 0,
            max_tx_rate_mbps: 0,
        }
    }
}

/// Extracts every VF of a PF's `RTM_NEWLINK` reply, in the PF's order.
///
/// A link that reports no `IFLA_VFINFO_LIST` (no SR-IOV, or a request
/// without the VF mask) yields an empty list.
pub fn vf_states(link: &LinkMessage) -> Vec<VfState> {
    let mut out = Vec::new();
    for attr in &link.attributes {
        let LinkAttribute::VfInfoList(list) = attr else {
            continue;
        };
        for vf in list {
            let mut state = VfState::unconfigured(0);
            let mut have_rate = false;
            for info in &vf.0 {
                match info {
                    VfInfo::Mac(m) => {
                        state.index = m.vf_id;
                        let mut mac = [0u8; 6];
                        mac.copy_from_slice(&m.mac[..6]);
                        state.mac = MacAddress(mac);
                    }
                    VfInfo::Vlan(v) => {
                        state.index = v.vf_id;
                        state.vlan.id = u16::try_from(v.vlan_id).unwrap_or(u16::MAX);
                        state.vlan.qos = u8::try_from(v.qos).unwrap_or(u8::MAX);
                    }
                    VfInfo::VlanList(list) => {
                        // The list carries the protocol the plain VLAN lacks.
                        for entry in list {
                            if let netlink_packet_route::link::VfVlan::Info(info) = entry {
                                state.vlan.proto = match info.protocol {
                                    VlanProtocol::Ieee8021Ad => VlanProto::Dot1Ad,
                                    _ => VlanProto::Dot1Q,
                                };
                            }
                        }
                    }
                    VfInfo::Rate(r) => {
                        have_rate = true;
                        state.min_tx_rate_mbps = r.min_tx_rate;
                        state.max_tx_rate_mbps = r.max_tx_rate;
                    }
                    VfInfo::TxRate(r) if !have_rate => state.max_tx_rate_mbps = r.rate,
                    VfInfo::SpoofCheck(s) => state.spoof_chk = s.enabled,
                    VfInfo::Trust(t) => state.trust = t.enabled,
                    VfInfo::LinkState(l) => {
                        state.link_state = match l.state {
                            VfLinkState::Auto => Some(LinkState::Auto),
                            VfLinkState::Enable => Some(LinkState::Enable),
                            VfLinkState::Disable => Some(LinkState::Disable),
                            _ => None,
                        }
                    }
                    _ => {}
                }
            }
            out.push(state);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize((out.len() + 3) & !3, 0);
        out
    }

    fn u32s(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    /// One `IFLA_VF_INFO` nest laid out as the kernel's rtnl_fill_vfinfo()
    /// writes it, carrying the values of `vf`.
    fn vf_info(vf: &VfState) -> Vec<u8> {
        let i = vf.index;
        let mut mac_buf = u32s(&[i]);
        mac_buf.extend_from_slice(&vf.mac.0);
        mac_buf.resize(4 + 32, 0); // struct ifla_vf_mac: vf + mac[32]
        let (vlan, qos) = (u32::from(vf.vlan.id), u32::from(vf.vlan.qos));
        let mut vlan_info = u32s(&[i, vlan, qos]);
        vlan_info.extend_from_slice(&vf.vlan.proto.ethertype().to_be_bytes()); // __be16
        vlan_info.extend_from_slice(&[0, 0]); // struct padding to 16 bytes
        let (min, max) = (vf.min_tx_rate_mbps, vf.max_tx_rate_mbps);
        let link = vf.link_state.map_or(0, LinkState::as_u32);
        let mut body = Vec::new();
        body.extend(nla(1, &mac_buf)); // IFLA_VF_MAC = 1
        body.extend(nla(2, &u32s(&[i, vlan, qos]))); // IFLA_VF_VLAN = 2
        body.extend(nla(6, &u32s(&[i, min, max]))); // IFLA_VF_RATE = 6
        body.extend(nla(3, &u32s(&[i, max]))); // IFLA_VF_TX_RATE = 3
        body.extend(nla(4, &u32s(&[i, u32::from(vf.spoof_chk)]))); // IFLA_VF_SPOOFCHK = 4
        body.extend(nla(5, &u32s(&[i, link]))); // IFLA_VF_LINK_STATE = 5
        body.extend(nla(9, &u32s(&[i, u32::from(vf.trust)]))); // IFLA_VF_TRUST = 9
        body.extend(nla(12, &nla(1, &vlan_info))); // IFLA_VF_VLAN_LIST = 12 { IFLA_VF_VLAN_INFO = 1 }
        nla(1, &body) // IFLA_VF_INFO = 1
    }

    /// VF 1 of the reply: every setting away from its default.
    fn configured_vf() -> VfState {
        VfState {
            index: 1,
            mac: "02:00:00:00:00:01".parse().unwrap(),
            vlan: Vlan {
                id: 100,
                qos: 3,
                proto: VlanProto::Dot1Ad,
            },
            spoof_chk: false,
            trust: true,
            link_state: Some(LinkState::Disable),
            min_tx_rate_mbps: 100,
            max_tx_rate_mbps: 5000,
        }
    }

    /// A full RTM_NEWLINK reply (type 16) for PF "ens1f0" with two VFs.
    fn reply_bytes() -> Vec<u8> {
        let mut attrs = nla(3, b"ens1f0\0"); // IFLA_IFNAME = 3
        attrs.extend(nla(21, &u32s(&[2]))); // IFLA_NUM_VF = 21
        let mut list = vf_info(&VfState::unconfigured(0));
        list.extend(vf_info(&configured_vf()));
        attrs.extend(nla(22, &list)); // IFLA_VFINFO_LIST = 22
        let mut ifinfo = vec![0u8, 0]; // family AF_UNSPEC, pad
        ifinfo.extend_from_slice(&1u16.to_ne_bytes()); // ARPHRD_ETHER
        ifinfo.extend_from_slice(&7i32.to_ne_bytes()); // ifindex 7
        ifinfo.extend_from_slice(&u32s(&[0x1003, 0])); // flags UP|BROADCAST|MULTICAST, change
        let len = 16 + ifinfo.len() + attrs.len();
        let mut msg = Vec::new();
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&16u16.to_ne_bytes()); // RTM_NEWLINK = 16
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&u32s(&[1, 0])); // seq, port
        msg.extend(ifinfo);
        msg.extend(attrs);
        msg
    }

    #[test]
    fn parses_each_vf_of_a_hand_built_getlink_reply() {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply_bytes()).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = msg.payload else {
            panic!("not a NewLink: {:?}", msg.payload);
        };
        let vfs = vf_states(&link);
        assert_eq!(vfs.len(), 2);
        assert_eq!(vfs[0], VfState::unconfigured(0));
        assert_eq!(vfs[1], configured_vf());
    }

    #[test]
    fn a_link_without_vf_info_has_no_vfs() {
        assert!(vf_states(&LinkMessage::default()).is_empty());
    }

    #[test]
    fn state_round_trips_through_json_for_the_claim_record() {
        let state = VfState::unconfigured(4);
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<VfState>(&json).unwrap(), state);
    }
}
