//! Claim records as prepare writes them, for tests of what reads them.

use ipam::{Allocation, AssignedAddress, Owner, RouteConfig};
use sriov::PciAddress;

use crate::apis::{Mode, ValidConfig};
use crate::state::claims::CLAIM_SCHEMA_VERSION;
use crate::state::{ClaimRecord, Phase, PreparedDevice as PreparedClaimDevice};

/// The pod UID the records are reserved for.
pub const POD: &str = "0b7e4c1d-22a9-4c3e-8f05-6d1e2a3b4c5d";

/// A prepared device of a claim record, as prepare writes it: one pool
/// address (when given) with a route the config repeats.
pub fn prepared(
    pci: PciAddress,
    mode: Mode,
    address: Option<&str>,
    if_name: Option<&str>,
) -> PreparedClaimDevice {
    let owner = Owner::new("claim-1", "nic", pci.device_name()).unwrap();
    PreparedClaimDevice {
        request: "nic".into(),
        pool: "node-a".into(),
        device: pci.device_name(),
        pci_address: pci,
        config: ValidConfig {
            mode,
            if_name: if_name.map(str::to_string),
            mtu: Some(1400),
            settings: Default::default(),
            addresses: None,
            routes: vec![RouteConfig {
                dst: "10.99.0.0/16".parse().unwrap(),
                gw: Some("10.1.0.1".parse().unwrap()),
            }],
            rdma_exclusive: false,
        },
        if_name: if_name.map(str::to_string),
        vf_settings: None,
        rdma_device: None,
        bind: None,
        addresses: address.map(|a| Allocation {
            owner,
            pool: Some("fronthaul".into()),
            addresses: vec![AssignedAddress {
                address: a.parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
            }],
            routes: vec![RouteConfig {
                dst: "10.99.0.0/16".parse().unwrap(),
                gw: Some("10.1.0.1".parse().unwrap()),
            }],
        }),
        cdi_device_id: None,
        policy: None,
    }
}

/// A fully prepared record of claim `ran/<name>` in boot `boot`, reserved
/// for [`POD`].
pub fn record(name: &str, devices: Vec<PreparedClaimDevice>) -> ClaimRecord {
    ClaimRecord {
        schema: CLAIM_SCHEMA_VERSION,
        uid: format!("uid-{name}"),
        namespace: "ran".into(),
        name: name.into(),
        phase: Phase::Prepared,
        devices,
        cdi_spec: None,
        boot_id: "boot".into(),
        reserved_for: vec![POD.into()],
    }
}

/// VF `n` of a PF at `0000:5b`.
pub fn pci(n: u8) -> PciAddress {
    PciAddress::new(0, 0x5b, 2, n).unwrap()
}
