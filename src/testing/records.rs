//! Claim records as prepare writes them, for tests of what reads them.

use ipam::{Allocation, AssignedAddress, Owner, RouteConfig};
use sriov::PciAddress;

use crate::apis::{Mode, ValidConfig};
use crate::attach::Attachment;
use crate::attach::plan::{HostState, MacAddress};
use crate::state::attachments::{AttachState, PodAttachments};
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

/// A pod's attachment record as attach commits it: VF `0000:3b:00.2`
/// (`pci-0000-3b-00-2`) in the pod as `net1` with one address.
pub fn attached_pod(uid: &str) -> PodAttachments {
    PodAttachments {
        pod_uid: uid.into(),
        sandbox_id: "a".repeat(64),
        pod: "ran/du-0".into(),
        netns: "/var/run/netns/cni-1".into(),
        state: AttachState::Attached,
        attachments: vec![Attachment {
            claim: "ran/fronthaul".into(),
            device: "pci-0000-3b-00-2".into(),
            pci_address: "0000:3b:00.2".parse().unwrap(),
            netns: "/var/run/netns/cni-1".into(),
            if_name: "net1".into(),
            pod_index: 7,
            mac: MacAddress([2, 0, 0, 0, 0, 1]),
            addresses: vec!["10.1.0.5/24".parse().unwrap()],
            routes: Vec::new(),
            host: HostState {
                name: "ens1f0v0".into(),
                mtu: 1500,
                mac: MacAddress([2, 0, 0, 0, 0, 1]),
                up: false,
            },
            rdma_device: None,
        }],
    }
}
