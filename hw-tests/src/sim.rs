//! A simulated SR-IOV PF behind the netlink transport, for CI.
//!
//! PF-side VF attributes cannot be faked on veth, so CI runs the lab's cases
//! against this: every request is encoded to bytes, decoded as the kernel
//! would see it, applied to an in-memory VF table, and answered with a
//! `RTM_NEWLINK` carrying `IFLA_VFINFO_LIST` that our parser must read back.
//! A [`DriverProfile`] refuses what a real driver refuses, with its errno.

use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    LinkAttribute, LinkMessage, LinkVfInfo, VfInfo, VfInfoLinkState, VfInfoMac, VfInfoRate,
    VfInfoSpoofCheck, VfInfoTrust, VfInfoVlan, VfLinkState, VfVlan, VfVlanInfo, VlanProtocol,
};
use sriov::netlink::{NetlinkError, RouteTransport, decode_messages, encode_request};
use sriov::vf_config::{LinkState, Setting, VfState, VlanProto};

/// Which settings a simulated driver refuses, and how.
#[derive(Debug, Clone, Default)]
pub struct DriverProfile {
    /// Settings refused with the given errno.
    pub refuses: Vec<(Setting, i32)>,
    /// Refuse 802.1ad VLANs with EPROTONOSUPPORT, as most drivers do.
    pub no_qinq: bool,
}

impl DriverProfile {
    /// mlx5 in legacy mode: everything but 802.1ad.
    pub fn mlx5_legacy() -> Self {
        DriverProfile {
            refuses: Vec::new(),
            no_qinq: true,
        }
    }
}

/// An in-memory PF with `vfs` VFs.
#[derive(Debug)]
pub struct SimulatedPf {
    name: String,
    vfs: Vec<VfState>,
    profile: DriverProfile,
    /// Every request as the bytes the kernel would have received.
    pub wire_log: Vec<Vec<u8>>,
}

impl SimulatedPf {
    /// A PF called `name` with `count` unconfigured VFs.
    pub fn new(name: &str, count: u32, profile: DriverProfile) -> Self {
        SimulatedPf {
            name: name.to_string(),
            vfs: (0..count).map(VfState::unconfigured).collect(),
            profile,
            wire_log: Vec::new(),
        }
    }

    /// The table as the simulated hardware holds it.
    pub fn vfs(&self) -> &[VfState] {
        &self.vfs
    }

    fn refuse(op: &str, errno: i32) -> NetlinkError {
        NetlinkError::Kernel {
            op: op.to_string(),
            errno,
            message: None,
        }
    }

    fn reply(&self) -> RouteNetlinkMessage {
        let list = self
            .vfs
            .iter()
            .map(|vf| {
                let i = vf.index;
                let proto = match vf.vlan.proto {
                    VlanProto::Dot1Q => VlanProtocol::Ieee8021Q,
                    VlanProto::Dot1Ad => VlanProtocol::Ieee8021Ad,
                };
                let link_state = match vf.link_state {
                    Some(LinkState::Enable) => VfLinkState::Enable,
                    Some(LinkState::Disable) => VfLinkState::Disable,
                    _ => VfLinkState::Auto,
                };
                LinkVfInfo(vec![
                    VfInfo::Mac(VfInfoMac::new(i, &vf.mac.0)),
                    VfInfo::Vlan(VfInfoVlan::new(
                        i,
                        u32::from(vf.vlan.id),
                        u32::from(vf.vlan.qos),
                    )),
                    VfInfo::VlanList(vec![VfVlan::Info(VfVlanInfo::new(
                        i,
                        u32::from(vf.vlan.id),
                        u32::from(vf.vlan.qos),
                        proto,
                    ))]),
                    VfInfo::Rate(VfInfoRate::new(i, vf.min_tx_rate_mbps, vf.max_tx_rate_mbps)),
                    VfInfo::SpoofCheck(VfInfoSpoofCheck::new(i, vf.spoof_chk)),
                    VfInfo::Trust(VfInfoTrust::new(i, vf.trust)),
                    VfInfo::LinkState(VfInfoLinkState::new(i, link_state)),
                ])
            })
            .collect();
        let mut link = LinkMessage::default();
        link.attributes = vec![
            LinkAttribute::IfName(self.name.clone()),
            LinkAttribute::VfInfoList(list),
        ];
        RouteNetlinkMessage::NewLink(link)
    }

    fn apply(&mut self, op: &str, info: &VfInfo) -> Result<(), NetlinkError> {
        let (vf, setting) = match info {
            VfInfo::Mac(m) => (m.vf_id, Setting::Mac),
            VfInfo::Vlan(v) => (v.vf_id, Setting::Vlan),
            VfInfo::VlanList(l) => match l.first() {
                Some(VfVlan::Info(v)) => (v.vf_id, Setting::Vlan),
                _ => return Err(Self::refuse(op, libc::EINVAL)),
            },
            VfInfo::Rate(r) => (r.vf_id, Setting::TxRate),
            VfInfo::SpoofCheck(s) => (s.vf_id, Setting::SpoofChk),
            VfInfo::Trust(t) => (t.vf_id, Setting::Trust),
            VfInfo::LinkState(l) => (l.vf_id, Setting::LinkState),
            _ => return Err(Self::refuse(op, libc::EOPNOTSUPP)),
        };
        if let Some((_, errno)) = self.profile.refuses.iter().find(|(s, _)| *s == setting) {
            return Err(Self::refuse(op, *errno));
        }
        let Some(state) = self.vfs.iter_mut().find(|s| s.index == vf) else {
            return Err(Self::refuse(op, libc::EINVAL));
        };
        match info {
            VfInfo::Mac(m) => state.mac.0.copy_from_slice(&m.mac[..6]),
            VfInfo::Vlan(v) => {
                state.vlan.id =
                    u16::try_from(v.vlan_id).map_err(|_| Self::refuse(op, libc::EINVAL))?;
                state.vlan.qos = u8::try_from(v.qos).map_err(|_| Self::refuse(op, libc::EINVAL))?;
                state.vlan.proto = VlanProto::Dot1Q;
            }
            VfInfo::VlanList(l) => {
                if let Some(VfVlan::Info(v)) = l.first() {
                    if self.profile.no_qinq && v.protocol == VlanProtocol::Ieee8021Ad {
                        return Err(Self::refuse(op, libc::EPROTONOSUPPORT));
                    }
                    state.vlan.id =
                        u16::try_from(v.vlan_id).map_err(|_| Self::refuse(op, libc::EINVAL))?;
                    state.vlan.qos =
                        u8::try_from(v.qos).map_err(|_| Self::refuse(op, libc::EINVAL))?;
                    state.vlan.proto = if v.protocol == VlanProtocol::Ieee8021Ad {
                        VlanProto::Dot1Ad
                    } else {
                        VlanProto::Dot1Q
                    };
                }
            }
            VfInfo::Rate(r) => {
                state.min_tx_rate_mbps = r.min_tx_rate;
                state.max_tx_rate_mbps = r.max_tx_rate;
            }
            VfInfo::SpoofCheck(s) => state.spoof_chk = s.enabled,
            VfInfo::Trust(t) => state.trust = t.enabled,
            VfInfo::LinkState(l) => {
                state.link_state = Some(match l.state {
                    VfLinkState::Enable => LinkState::Enable,
                    VfLinkState::Disable => LinkState::Disable,
                    _ => LinkState::Auto,
                })
            }
            _ => {}
        }
        Ok(())
    }
}

impl RouteTransport for SimulatedPf {
    fn request(
        &mut self,
        op: &str,
        request: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        // Go through the wire format, as the kernel would receive it.
        let bytes = encode_request(request, extra_flags, self.wire_log.len() as u32 + 1);
        let decoded = decode_messages(&bytes).map_err(|detail| NetlinkError::Protocol {
            op: op.to_string(),
            detail,
        })?;
        self.wire_log.push(bytes);
        let Some(NetlinkPayload::InnerMessage(message)) =
            decoded.into_iter().next().map(|m| m.payload)
        else {
            return Err(Self::refuse(op, libc::EINVAL));
        };
        let link = match &message {
            RouteNetlinkMessage::GetLink(l) | RouteNetlinkMessage::SetLink(l) => l,
            _ => return Err(Self::refuse(op, libc::EOPNOTSUPP)),
        };
        let named_us = link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::IfName(n) if *n == self.name));
        if !named_us {
            return Err(Self::refuse(op, libc::ENODEV));
        }
        match message {
            RouteNetlinkMessage::GetLink(_) => Ok(vec![self.reply()]),
            RouteNetlinkMessage::SetLink(link) => {
                for attr in &link.attributes {
                    if let LinkAttribute::VfInfoList(list) = attr {
                        for vf in list {
                            for info in &vf.0 {
                                self.apply(op, info)?;
                            }
                        }
                    }
                }
                Ok(Vec::new())
            }
            _ => Err(Self::refuse(op, libc::EOPNOTSUPP)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{NoIndependentReader, Outcome, run_setting_case, setting_cases};
    use sriov::vf_config::VfTarget;

    fn target() -> VfTarget {
        VfTarget {
            pf: "ens1f0".into(),
            vf: 2,
        }
    }

    #[test]
    fn a_refused_setting_is_unsupported_and_leaves_the_vf_as_it_was() {
        let profile = DriverProfile {
            refuses: vec![(Setting::Trust, libc::EOPNOTSUPP)],
            no_qinq: true,
        };
        let mut pf = SimulatedPf::new("ens1f0", 4, profile);
        let before = pf.vfs().to_vec();
        let cases = setting_cases();
        let trust = cases.iter().find(|c| c.name == "trust-on").unwrap();
        let r = run_setting_case(&mut pf, &mut NoIndependentReader, &target(), trust);
        assert_eq!(r.outcome, Outcome::Unsupported("EOPNOTSUPP".into()));
        assert_eq!(pf.vfs(), &before[..]);
    }

    #[test]
    fn every_request_crossed_the_wire_format() {
        let mut pf = SimulatedPf::new("ens1f0", 4, DriverProfile::mlx5_legacy());
        for case in setting_cases() {
            run_setting_case(&mut pf, &mut NoIndependentReader, &target(), &case);
        }
        assert!(pf.wire_log.len() > 40, "{} requests", pf.wire_log.len());
        // RTM_GETLINK = 18, RTM_SETLINK = 19 at bytes 4..6 of each header.
        for bytes in &pf.wire_log {
            let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
            assert!(kind == 18 || kind == 19, "type {kind}");
        }
        assert_eq!(
            pf.vfs()[2],
            VfState::unconfigured(2),
            "every case restored the VF"
        );
    }

    #[test]
    fn a_wrong_pf_name_is_enodev() {
        let mut pf = SimulatedPf::new("ens1f0", 1, DriverProfile::default());
        let wrong = VfTarget {
            pf: "ens9".into(),
            vf: 0,
        };
        let err = sriov::vf_config::read_vf_state(&mut pf, &wrong).unwrap_err();
        assert!(err.to_string().contains("ENODEV"), "{err}");
    }
}
