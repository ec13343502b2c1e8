//! A simulated SR-IOV PF behind the netlink transport.
//!
//! PF-side VF attributes cannot be faked on veth, so CI runs the lab's
//! cases (`hw-tests --simulate`) and `sriov-dra demo` shows VF settings
//! against this: every request is encoded to bytes, decoded as the kernel
//! would see it, applied to an in-memory VF table, and answered with a
//! `RTM_NEWLINK` carrying `IFLA_VFINFO_LIST` that our parser must read back.
//! A [`DriverProfile`] refuses what a real driver refuses, with its errno.

use crate::netlink::{NetlinkError, RouteTransport, decode_messages, encode_request};
use crate::vf_config::{LinkState, Setting, VfState, VlanProto};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    LinkAttribute, LinkMessage, LinkVfInfo, VfInfo, VfInfoLinkState, VfInfoMac, VfInfoRate,
    VfInfoSpoofCheck, VfInfoTrust, VfInfoVlan, VfLinkState, VfVlan, VfVlanInfo, VlanProtocol,
};

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
    use crate::vf_config::VfTarget;

    #[test]
    fn a_wrong_pf_name_is_enodev() {
        let mut pf = SimulatedPf::new("ens1f0", 1, DriverProfile::default());
        let wrong = VfTarget {
            pf: "ens9".into(),
            vf: 0,
        };
        let err = crate::vf_config::read_vf_state(&mut pf, &wrong).unwrap_err();
        assert!(err.to_string().contains("ENODEV"), "{err}");
    }

    #[test]
    fn a_vlan_set_through_the_wire_format_is_read_back() {
        let mut pf = SimulatedPf::new("ens1f0", 2, DriverProfile::mlx5_legacy());
        let target = VfTarget {
            pf: "ens1f0".into(),
            vf: 1,
        };
        let desired = crate::vf_config::VfSettings::new(crate::vf_config::VfSettingsRequest {
            vlan: Some(100),
            ..Default::default()
        })
        .unwrap();
        let record =
            crate::vf_config::configure(&mut pf, &target, &desired, &mut |_| Ok::<(), String>(()))
                .unwrap();
        assert_eq!(pf.vfs()[1].vlan.id, 100);
        assert_eq!(pf.vfs()[0], VfState::unconfigured(0), "VF 0 untouched");
        crate::vf_config::restore(&mut pf, &record).unwrap();
        assert_eq!(pf.vfs()[1], VfState::unconfigured(1));
    }
}
