//! `VfConfig`: what a claim may ask of a VF. Every field is optional so that
//! a DeviceClass can set defaults and the claim override single fields;
//! unknown fields are errors, because a misspelt `vlna: 100` silently
//! ignored puts a fronthaul VF on the wrong network.

use ipam::{IpNetwork, RouteConfig};
use serde::{Deserialize, Serialize};
use sriov::vf_config::{LinkState, MacAddress, VlanProto};

/// The config's API group and version.
pub const API_VERSION: &str = "sriov.dra.dev/v1alpha1";
/// The config's kind.
pub const KIND: &str = "VfConfig";

/// How the VF reaches the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A kernel netdev moved into the pod's network namespace.
    #[default]
    Netdevice,
    /// Bound to `vfio-pci` and handed to a user-space (DPDK) application.
    Dpdk,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Netdevice => "netdevice",
            Mode::Dpdk => "dpdk",
        })
    }
}

/// Where the VF's addresses come from: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamConfig {
    /// A pool of the node config; one address per family of the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Fixed addresses with their prefix length.
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_addresses: Option<Vec<IpNetwork>>,
}

/// RDMA options of the VF.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RdmaConfig {
    /// Move the VF's RDMA device into the pod's namespace (RDMA subsystem
    /// in exclusive netns mode), not only its char devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<bool>,
}

/// One `VfConfig` document as it appears in a claim or class config entry.
///
/// `None` means "not set here": [`VfConfig::overlay`] lets a later entry
/// override single fields of an earlier one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VfConfig {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be [`KIND`].
    pub kind: String,
    /// `netdevice` (default) or `dpdk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Interface name in the pod (default `net1`, `net2`, … per claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_name: Option<String>,
    /// MTU of the VF's netdev in the pod; not above the PF's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Administrative MAC set through the PF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddress>,
    /// VLAN id 0-4094 inserted by the NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u32>,
    /// 802.1p priority 0-7 of the VLAN.
    #[serde(default, rename = "vlanQoS", skip_serializing_if = "Option::is_none")]
    pub vlan_qos: Option<u32>,
    /// `802.1Q` (default) or `802.1ad`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_proto: Option<VlanProto>,
    /// PF-side spoof checking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spoof_chk: Option<bool>,
    /// Trusted VF (promiscuous, MAC changes from the pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<bool>,
    /// `auto`, `enable` or `disable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_state: Option<LinkState>,
    /// Guaranteed TX rate in Mbps (0 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tx_rate_mbps: Option<u32>,
    /// TX rate limit in Mbps (0 = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tx_rate_mbps: Option<u32>,
    /// Addresses for the VF's netdev.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConfig>,
    /// Routes through the VF's netdev, in addition to the pool's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<RouteConfig>>,
    /// RDMA options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma: Option<RdmaConfig>,
}

impl VfConfig {
    /// Lays `later` over `self`: every field `later` sets wins. `ipam` and
    /// `routes` are replaced as a whole (a pool and a static list do not
    /// mix); `rdma` merges by field.
    pub fn overlay(&mut self, later: VfConfig) {
        fn set<T>(slot: &mut Option<T>, value: Option<T>) {
            if value.is_some() {
                *slot = value;
            }
        }
        set(&mut self.mode, later.mode);
        set(&mut self.if_name, later.if_name);
        set(&mut self.mtu, later.mtu);
        set(&mut self.mac, later.mac);
        set(&mut self.vlan, later.vlan);
        set(&mut self.vlan_qos, later.vlan_qos);
        set(&mut self.vlan_proto, later.vlan_proto);
        set(&mut self.spoof_chk, later.spoof_chk);
        set(&mut self.trust, later.trust);
        set(&mut self.link_state, later.link_state);
        set(&mut self.min_tx_rate_mbps, later.min_tx_rate_mbps);
        set(&mut self.max_tx_rate_mbps, later.max_tx_rate_mbps);
        set(&mut self.ipam, later.ipam);
        set(&mut self.routes, later.routes);
        if let Some(rdma) = later.rdma {
            let mine = self.rdma.get_or_insert_with(RdmaConfig::default);
            set(&mut mine.exclusive, rdma.exclusive);
        }
        self.api_version = later.api_version;
        self.kind = later.kind;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_reads_with_the_api_spelling() {
        let cfg: VfConfig = serde_json::from_str(
            r#"{"apiVersion":"sriov.dra.dev/v1alpha1","kind":"VfConfig",
                "mode":"netdevice","ifName":"fh0","mtu":9000,"mac":"02:00:00:00:00:01",
                "vlan":100,"vlanQoS":5,"vlanProto":"802.1ad","spoofChk":false,"trust":true,
                "linkState":"enable","minTxRateMbps":1000,"maxTxRateMbps":10000,
                "ipam":{"pool":"fronthaul"},"routes":[{"dst":"10.9.0.0/16","gw":"10.1.0.1"}],
                "rdma":{"exclusive":true}}"#,
        )
        .unwrap();
        assert_eq!(cfg.vlan_qos, Some(5));
        assert_eq!(cfg.vlan_proto, Some(VlanProto::Dot1Ad));
        assert_eq!(cfg.link_state, Some(LinkState::Enable));
        assert_eq!(cfg.ipam.unwrap().pool.as_deref(), Some("fronthaul"));
        assert_eq!(cfg.rdma.unwrap().exclusive, Some(true));
    }

    #[test]
    fn unknown_fields_are_named_even_when_nested() {
        let err = serde_json::from_str::<VfConfig>(
            r#"{"apiVersion":"sriov.dra.dev/v1alpha1","kind":"VfConfig","vlna":100}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `vlna`"), "{err}");
        let err = serde_json::from_str::<VfConfig>(
            r#"{"apiVersion":"a","kind":"b","ipam":{"pool":"x","statc":[]}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `statc`"), "{err}");
    }

    #[test]
    fn overlay_takes_each_field_the_later_config_sets() {
        let mut class = VfConfig {
            vlan: Some(100),
            trust: Some(false),
            rdma: Some(RdmaConfig {
                exclusive: Some(true),
            }),
            ..Default::default()
        };
        class.overlay(VfConfig {
            trust: Some(true),
            mtu: Some(9000),
            rdma: Some(RdmaConfig { exclusive: None }),
            ..Default::default()
        });
        assert_eq!(class.vlan, Some(100), "kept from the class");
        assert_eq!(class.trust, Some(true), "overridden by the claim");
        assert_eq!(class.mtu, Some(9000));
        assert_eq!(class.rdma.unwrap().exclusive, Some(true));
    }
}
