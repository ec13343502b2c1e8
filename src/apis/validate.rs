//! Checks of a merged `VfConfig` that need no knowledge of the device:
//! ranges, MAC, rates, interface name, and which fields each mode allows.
//! Device-dependent checks (IOMMU group, PF MTU, RDMA) happen in prepare.

use ipam::{IpNetwork, RouteConfig};
use serde::{Deserialize, Serialize};
use sriov::vf_config::{VfSettings, VfSettingsRequest};

use super::vfconfig::{IpamConfig, Mode, VfConfig};

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub use sriov::ifname::MAX_IFNAME_LEN;
/// Smallest MTU we accept: the IPv4 minimum.
pub const MIN_MTU: u32 = 68;
/// Largest MTU we accept: the largest any supported NIC does.
pub const MAX_MTU: u32 = 9702;

/// A field with a value that cannot be used, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {expected}")]
pub struct FieldError {
    /// The field as the user spells it (`vlanQoS`, `ipam.static`).
    pub field: String,
    /// What was wrong and what is expected.
    pub expected: String,
}

fn field_error(field: &str, expected: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        expected: expected.into(),
    }
}

/// Where addresses come from, once validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AddressSource {
    /// One address per family from this pool.
    Pool(String),
    /// Exactly these addresses.
    Static(Vec<IpNetwork>),
}

/// A config that passed every device-independent check; what prepare acts
/// on and what the claim record keeps for attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidConfig {
    /// How the VF reaches the pod.
    pub mode: Mode,
    /// Interface name asked for (netdevice mode only).
    pub if_name: Option<String>,
    /// MTU asked for (netdevice mode only).
    pub mtu: Option<u32>,
    /// PF-side settings.
    pub settings: VfSettings,
    /// Address source (netdevice mode only).
    pub addresses: Option<AddressSource>,
    /// Extra routes (netdevice mode only).
    pub routes: Vec<RouteConfig>,
    /// Move the RDMA device exclusively into the pod.
    pub rdma_exclusive: bool,
}

/// Validates `cfg` (already checked for apiVersion and kind).
pub fn validate(cfg: &VfConfig) -> Result<ValidConfig, FieldError> {
    let mode = cfg.mode.unwrap_or_default();
    if mode == Mode::Dpdk {
        // These describe a kernel netdev, which a vfio-bound VF does not have.
        let netdev_only = [
            ("ifName", cfg.if_name.is_some()),
            ("mtu", cfg.mtu.is_some()),
            ("ipam", cfg.ipam.is_some()),
            ("routes", cfg.routes.is_some()),
            (
                "rdma.exclusive",
                cfg.rdma.as_ref().and_then(|r| r.exclusive) == Some(true),
            ),
        ];
        if let Some((field, _)) = netdev_only.iter().find(|(_, set)| *set) {
            return Err(field_error(
                field,
                "is not allowed with mode dpdk (the VF has no kernel netdev); remove it or use mode netdevice",
            ));
        }
    }
    if let Some(name) = &cfg.if_name {
        check_ifname(name)?;
    }
    if let Some(mtu) = cfg.mtu
        && !(MIN_MTU..=MAX_MTU).contains(&mtu)
    {
        return Err(field_error(
            "mtu",
            format!("{mtu} is out of range; expected {MIN_MTU}-{MAX_MTU}"),
        ));
    }
    let settings = VfSettings::new(VfSettingsRequest {
        mac: cfg.mac,
        vlan: cfg.vlan,
        vlan_qos: cfg.vlan_qos,
        vlan_proto: cfg.vlan_proto,
        spoof_chk: cfg.spoof_chk,
        trust: cfg.trust,
        link_state: cfg.link_state,
        min_tx_rate_mbps: cfg.min_tx_rate_mbps,
        max_tx_rate_mbps: cfg.max_tx_rate_mbps,
    })
    .map_err(|e| field_error(e.field, e.reason))?;
    let addresses = cfg.ipam.as_ref().map(address_source).transpose()?;
    Ok(ValidConfig {
        mode,
        if_name: cfg.if_name.clone(),
        mtu: cfg.mtu,
        settings,
        addresses,
        routes: cfg.routes.clone().unwrap_or_default(),
        rdma_exclusive: cfg.rdma.as_ref().and_then(|r| r.exclusive) == Some(true),
    })
}

/// The rules of the kernel's `dev_valid_name()`.
fn check_ifname(name: &str) -> Result<(), FieldError> {
    match sriov::ifname::ifname_problem(name) {
        None => Ok(()),
        Some(why) => Err(field_error(
            "ifName",
            format!(
                "{name:?} {why}; expected 1-{MAX_IFNAME_LEN} characters without '/', ':', '%' or whitespace"
            ),
        )),
    }
}

fn address_source(ipam: &IpamConfig) -> Result<AddressSource, FieldError> {
    match (&ipam.pool, &ipam.static_addresses) {
        (Some(_), Some(_)) => Err(field_error(
            "ipam",
            "sets both pool and static; expected exactly one",
        )),
        (None, None) => Err(field_error(
            "ipam",
            "sets neither pool nor static; expected exactly one",
        )),
        (Some(pool), None) if pool.is_empty() => {
            Err(field_error("ipam.pool", "is empty; expected a pool name"))
        }
        (Some(pool), None) => Ok(AddressSource::Pool(pool.clone())),
        (None, Some(list)) if list.is_empty() => Err(field_error(
            "ipam.static",
            "is empty; expected at least one CIDR",
        )),
        (None, Some(list)) => Ok(AddressSource::Static(list.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> VfConfig {
        let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["apiVersion"] = "sriov.dra.dev/v1alpha1".into();
        v["kind"] = "VfConfig".into();
        serde_json::from_value(v).unwrap()
    }

    fn field_of(json: &str) -> String {
        validate(&parse(json)).unwrap_err().field
    }

    #[test]
    fn an_empty_config_is_a_plain_netdevice() {
        let v = validate(&parse("{}")).unwrap();
        assert_eq!(v.mode, Mode::Netdevice);
        assert!(v.settings.is_empty());
        assert_eq!(v.addresses, None);
    }

    #[test]
    fn each_bad_value_names_its_field() {
        for (json, field) in [
            (r#"{"vlan":4095}"#, "vlan"),
            (r#"{"vlan":10,"vlanQoS":8}"#, "vlanQoS"),
            (r#"{"vlanProto":"802.1Q"}"#, "vlanProto"),
            (r#"{"mac":"01:00:5e:00:00:01"}"#, "mac"),
            (r#"{"mac":"00:00:00:00:00:00"}"#, "mac"),
            (
                r#"{"minTxRateMbps":2000,"maxTxRateMbps":1000}"#,
                "minTxRateMbps",
            ),
            (r#"{"ifName":"a-very-long-name0"}"#, "ifName"),
            (r#"{"ifName":"net/1"}"#, "ifName"),
            (r#"{"ifName":""}"#, "ifName"),
            (r#"{"mtu":67}"#, "mtu"),
            (r#"{"ipam":{}}"#, "ipam"),
            (r#"{"ipam":{"pool":"a","static":["10.0.0.1/24"]}}"#, "ipam"),
            (r#"{"ipam":{"static":[]}}"#, "ipam.static"),
            (r#"{"mode":"dpdk","ifName":"net1"}"#, "ifName"),
            (r#"{"mode":"dpdk","mtu":9000}"#, "mtu"),
            (r#"{"mode":"dpdk","ipam":{"pool":"a"}}"#, "ipam"),
            (
                r#"{"mode":"dpdk","rdma":{"exclusive":true}}"#,
                "rdma.exclusive",
            ),
        ] {
            assert_eq!(field_of(json), field, "{json}");
        }
    }

    #[test]
    fn dpdk_keeps_pf_side_settings() {
        let v = validate(&parse(r#"{"mode":"dpdk","vlan":200,"trust":true}"#)).unwrap();
        assert_eq!(v.mode, Mode::Dpdk);
        assert_eq!(v.settings.vlan().map(|v| v.id), Some(200));
    }

    #[test]
    fn error_says_what_is_expected() {
        let err = validate(&parse(r#"{"vlan":5000}"#)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field vlan: 5000 is out of range; expected 0-4094"
        );
    }
}
