//! What attaching a prepared device to a pod means, step by step, and what
//! undoing it means: pure functions, so the order and the validation are
//! tested without a kernel.
//!
//! Attach order: one `RTM_NEWLINK` moves the link into the pod and renames
//! it; then MTU and MAC (both while the link is still down: many VF drivers
//! refuse a MAC change on a running link), the addresses, up, and only then
//! the routes, because the kernel accepts a route via a gateway only when
//! the gateway is reachable through an address on a link that is up.
//!
//! An RDMA-exclusive device also moves its RDMA device, right after the
//! netdev (before the netdev is configured, so a refusal undoes little);
//! the detach returns the RDMA device first, then the netdev.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use sriov::PciAddress;

/// Longest interface name the kernel takes (`IFNAMSIZ` - 1).
pub use sriov::ifname::MAX_IFNAME_LEN;
/// Smallest MTU an IPv4 link may have (RFC 791); IPv6 needs 1280.
const MIN_MTU_V4: u32 = 68;
const MIN_MTU_V6: u32 = 1280;
/// Largest MTU any Ethernet VF driver accepts (jumbo frames).
const MAX_MTU: u32 = 9702;

/// A netdevice-mode VF as attach needs it, built from its claim record's
/// [`crate::state::PreparedDevice`]: which PCI function, and how the pod
/// should see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodDevice {
    /// The claim, as `namespace/name`, for error messages.
    pub claim: String,
    /// The DRA device name (`pci-0000-3b-02-1`).
    pub device: String,
    /// The VF's PCI address: the only identity we trust, names change.
    pub pci_address: PciAddress,
    /// Interface name in the pod; `net1`, `net2`, … by order when absent.
    pub if_name: Option<String>,
    /// MTU to set in the pod.
    pub mtu: Option<u32>,
    /// MAC to set in the pod.
    pub mac: Option<MacAddress>,
    /// Addresses with their prefix, v4 and v6.
    pub addresses: Vec<IpNetwork>,
    /// Routes out of this interface.
    pub routes: Vec<RouteSpec>,
    /// The VF's RDMA device (`mlx5_3`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma_device: Option<String>,
    /// Move the RDMA device into the pod as well (`rdma.exclusive`): the
    /// pod then owns it alone, which needs the RDMA subsystem in exclusive
    /// netns mode.
    #[serde(default)]
    pub rdma_exclusive: bool,
}

/// A route out of the pod interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// Destination network (`0.0.0.0/0` for a default route).
    pub destination: IpNetwork,
    /// Next hop; without one the route is on-link (scope link).
    pub gateway: Option<IpAddr>,
}

/// MACs are the VF settings' type: one parser and printer for the project.
pub use sriov::vf_config::MacAddress;

/// One kernel change of the attach, in the order it must happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachStep {
    /// Move into the pod netns and take `name` there, in one `RTM_NEWLINK`.
    MoveAndRename {
        /// The pod-side interface name.
        name: String,
    },
    /// Move the VF's RDMA device into the pod netns (exclusive RDMA).
    MoveRdma {
        /// The RDMA device name.
        device: String,
    },
    /// Set the MTU.
    SetMtu(u32),
    /// Set the MAC.
    SetMac(MacAddress),
    /// Add an address (v6 without duplicate-address detection).
    AddAddress(IpNetwork),
    /// Bring the link up.
    Up,
    /// Add a route out of the link.
    AddRoute(RouteSpec),
}

impl fmt::Display for AttachStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachStep::MoveAndRename { name } => {
                write!(f, "moving into the pod netns as {name}")
            }
            AttachStep::MoveRdma { device } => {
                write!(f, "moving RDMA device {device} into the pod netns")
            }
            AttachStep::SetMtu(mtu) => write!(f, "setting MTU {mtu}"),
            AttachStep::SetMac(mac) => write!(f, "setting MAC {mac}"),
            AttachStep::AddAddress(net) => write!(f, "adding address {net}"),
            AttachStep::Up => f.write_str("bringing the link up"),
            AttachStep::AddRoute(r) => match r.gateway {
                Some(gw) => write!(f, "adding route {} via {gw}", r.destination),
                None => write!(f, "adding on-link route {}", r.destination),
            },
        }
    }
}

/// One kernel change of the detach (also the attach's rollback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetachStep {
    /// From the pod: move the RDMA device back to the host netns.
    ReturnRdma {
        /// The RDMA device name.
        device: String,
    },
    /// From the pod: move back to the host netns under the original name.
    MoveToHost {
        /// The host name to restore.
        name: String,
    },
    /// In the host: rename back, for when the link came home under another
    /// name (netns deleted, or the move's rename half failed).
    RestoreName {
        /// The host name to restore.
        name: String,
    },
    /// In the host: remove every address the link still has.
    FlushAddresses,
    /// In the host: put back the MTU it had before the attach.
    RestoreMtu(u32),
    /// In the host: put back the MAC it had before the attach.
    RestoreMac(MacAddress),
    /// In the host: bring it up again if it was up before the attach.
    RestoreUp,
}

impl fmt::Display for DetachStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DetachStep::ReturnRdma { device } => {
                write!(f, "moving RDMA device {device} back to the host netns")
            }
            DetachStep::MoveToHost { name } => {
                write!(f, "moving back to the host netns as {name}")
            }
            DetachStep::RestoreName { name } => write!(f, "restoring host name {name}"),
            DetachStep::FlushAddresses => f.write_str("flushing addresses"),
            DetachStep::RestoreMtu(mtu) => write!(f, "restoring MTU {mtu}"),
            DetachStep::RestoreMac(mac) => write!(f, "restoring MAC {mac}"),
            DetachStep::RestoreUp => f.write_str("bringing the link up again"),
        }
    }
}

/// What the link looked like in the host before the attach: the detach puts
/// it back like this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostState {
    /// Interface name in the host.
    pub name: String,
    /// MTU in the host.
    pub mtu: u32,
    /// MAC in the host.
    pub mac: MacAddress,
    /// Whether it was up.
    pub up: bool,
}

/// Why a prepared device cannot be attached as asked; found before any
/// kernel change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The interface name is not one the kernel would accept.
    #[error("ifName {name:?}: {why}")]
    BadName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The MTU is out of range for the addresses asked for.
    #[error("mtu {mtu}: expected {min}..={MAX_MTU}")]
    BadMtu {
        /// The MTU asked for.
        mtu: u32,
        /// The smallest allowed with these addresses.
        min: u32,
    },
    /// The MAC is not a unicast address.
    #[error("mac {0}: expected a unicast, non-zero address")]
    BadMac(MacAddress),
    /// The same address is asked for twice.
    #[error("addresses: {0} is listed twice")]
    DuplicateAddress(IpNetwork),
    /// A route's gateway is of the other IP family than its destination.
    #[error("routes: gateway {gateway} does not match destination {destination}")]
    RouteFamily {
        /// The route's destination.
        destination: IpNetwork,
        /// Its gateway.
        gateway: IpAddr,
    },
    /// `rdma.exclusive` on a VF without an RDMA device.
    #[error("rdma.exclusive: the VF has no RDMA device; expected an RDMA-capable VF")]
    NoRdmaDevice,
    /// Two devices of one pod would get the same interface name.
    #[error("ifName {0:?} is used by two devices of the pod")]
    DuplicateName(String),
}

/// Checks `name` the way the kernel's `dev_valid_name` does.
pub fn check_if_name(name: &str) -> Result<(), PlanError> {
    match sriov::ifname::ifname_problem(name) {
        None => Ok(()),
        Some(why) => Err(PlanError::BadName {
            name: name.to_string(),
            why,
        }),
    }
}

/// The interface name of the device at position `order` (0-based) among
/// the pod's devices: its own `ifName`, else `net<order+1>`.
pub fn interface_name(device: &PodDevice, order: usize) -> String {
    device
        .if_name
        .clone()
        .unwrap_or_else(|| format!("net{}", order + 1))
}

/// The names the pod's devices get: explicit `ifName`s as given, the rest
/// `net1`, `net2`, … in order, skipping names set explicitly; two devices
/// asking for the same name is an error.
pub fn pod_interface_names(devices: &[PodDevice]) -> Result<Vec<String>, PlanError> {
    let explicit: Vec<&str> = devices
        .iter()
        .filter_map(|d| d.if_name.as_deref())
        .collect();
    let mut next = 1;
    let mut names: Vec<String> = Vec::with_capacity(devices.len());
    for d in devices {
        let name = match &d.if_name {
            Some(n) => n.clone(),
            None => {
                while explicit.contains(&format!("net{next}").as_str()) {
                    next += 1;
                }
                next += 1;
                format!("net{}", next - 1)
            }
        };
        if names.contains(&name) {
            return Err(PlanError::DuplicateName(name));
        }
        names.push(name);
    }
    Ok(names)
}

/// The attach steps for `device` under interface name `name`, after
/// checking every field.
pub fn attach_plan(device: &PodDevice, name: &str) -> Result<Vec<AttachStep>, PlanError> {
    check_if_name(name)?;
    if let Some(mtu) = device.mtu {
        let min = if device.addresses.iter().any(IpNetwork::is_ipv6) {
            MIN_MTU_V6
        } else {
            MIN_MTU_V4
        };
        if !(min..=MAX_MTU).contains(&mtu) {
            return Err(PlanError::BadMtu { mtu, min });
        }
    }
    if let Some(mac) = device.mac {
        // Bit 0 of the first octet marks group (multicast) addresses.
        if mac.0[0] & 1 == 1 || mac.0 == [0; 6] {
            return Err(PlanError::BadMac(mac));
        }
    }
    for (i, net) in device.addresses.iter().enumerate() {
        if device.addresses[..i].contains(net) {
            return Err(PlanError::DuplicateAddress(*net));
        }
    }
    for route in &device.routes {
        if let Some(gateway) = route.gateway
            && gateway.is_ipv4() != route.destination.is_ipv4()
        {
            return Err(PlanError::RouteFamily {
                destination: route.destination,
                gateway,
            });
        }
    }

    let rdma = match (device.rdma_exclusive, &device.rdma_device) {
        (false, _) => None,
        (true, None) => return Err(PlanError::NoRdmaDevice),
        (true, Some(rdma)) => Some(AttachStep::MoveRdma {
            device: rdma.clone(),
        }),
    };

    let mut steps = vec![AttachStep::MoveAndRename {
        name: name.to_string(),
    }];
    steps.extend(rdma);
    steps.extend(device.mtu.map(AttachStep::SetMtu));
    steps.extend(device.mac.map(AttachStep::SetMac));
    steps.extend(device.addresses.iter().copied().map(AttachStep::AddAddress));
    steps.push(AttachStep::Up);
    steps.extend(device.routes.iter().copied().map(AttachStep::AddRoute));
    Ok(steps)
}

/// The steps that take the link out of the pod: the RDMA device moved in
/// with it, if any, goes home first (the reverse of the attach); then one
/// `RTM_NEWLINK` moves the link home under its host name.
///
/// No "down" before it: the kernel closes a link it moves between
/// namespaces anyway, and a separate down costs a full RCU grace period
/// (6-10 ms measured here), a third of the whole detach.
pub fn leave_pod_plan(host: &HostState, rdma_device: Option<&str>) -> Vec<DetachStep> {
    let mut steps: Vec<DetachStep> = rdma_device
        .map(|d| DetachStep::ReturnRdma {
            device: d.to_string(),
        })
        .into_iter()
        .collect();
    steps.push(DetachStep::MoveToHost {
        name: host.name.clone(),
    });
    steps
}

/// The steps that give the link in the host back its state from before the
/// attach (`host`), given what it looks like now (`current`). Steps whose
/// target already holds are left out, so a second detach plans nothing.
pub fn restore_host_plan(
    host: &HostState,
    current: &HostState,
    has_addresses: bool,
) -> Vec<DetachStep> {
    let mut steps = Vec::new();
    if current.name != host.name {
        steps.push(DetachStep::RestoreName {
            name: host.name.clone(),
        });
    }
    if has_addresses {
        steps.push(DetachStep::FlushAddresses);
    }
    if current.mtu != host.mtu {
        steps.push(DetachStep::RestoreMtu(host.mtu));
    }
    if current.mac != host.mac {
        steps.push(DetachStep::RestoreMac(host.mac));
    }
    if host.up && !current.up {
        steps.push(DetachStep::RestoreUp);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> PodDevice {
        PodDevice {
            claim: "telco/fronthaul".into(),
            device: "pci-0000-3b-02-1".into(),
            pci_address: "0000:3b:02.1".parse().unwrap(),
            if_name: None,
            mtu: Some(9000),
            mac: Some("02:00:00:00:00:01".parse().unwrap()),
            addresses: vec![
                "192.0.2.10/24".parse().unwrap(),
                "2001:db8::10/64".parse().unwrap(),
            ],
            routes: vec![RouteSpec {
                destination: "198.51.100.0/24".parse().unwrap(),
                gateway: Some("192.0.2.1".parse().unwrap()),
            }],
            rdma_device: Some("mlx5_3".into()),
            rdma_exclusive: false,
        }
    }

    #[test]
    fn full_attach_plan_in_kernel_order() {
        let d = device();
        let steps = attach_plan(&d, &interface_name(&d, 0)).unwrap();
        let text: Vec<String> = steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "moving into the pod netns as net1",
                "setting MTU 9000",
                "setting MAC 02:00:00:00:00:01",
                "adding address 192.0.2.10/24",
                "adding address 2001:db8::10/64",
                "bringing the link up",
                "adding route 198.51.100.0/24 via 192.0.2.1",
            ]
        );
    }

    #[test]
    fn minimal_device_is_moved_and_brought_up() {
        let d = PodDevice {
            mtu: None,
            mac: None,
            addresses: vec![],
            routes: vec![],
            if_name: Some("fh0".into()),
            ..device()
        };
        assert_eq!(
            attach_plan(&d, &interface_name(&d, 3)).unwrap(),
            [
                AttachStep::MoveAndRename { name: "fh0".into() },
                AttachStep::Up
            ]
        );
    }

    #[test]
    fn exclusive_rdma_moves_right_after_the_netdev_and_returns_first() {
        let d = PodDevice {
            rdma_exclusive: true,
            ..device()
        };
        let text: Vec<String> = attach_plan(&d, "net1")
            .unwrap()
            .iter()
            .take(3)
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "moving into the pod netns as net1",
                "moving RDMA device mlx5_3 into the pod netns",
                "setting MTU 9000",
            ]
        );
        // Without rdma.exclusive the RDMA device stays shared in the host.
        assert!(
            !attach_plan(&device(), "net1")
                .unwrap()
                .iter()
                .any(|s| matches!(s, AttachStep::MoveRdma { .. }))
        );
        assert_eq!(
            leave_pod_plan(&host(), Some("mlx5_3")),
            [
                DetachStep::ReturnRdma {
                    device: "mlx5_3".into()
                },
                DetachStep::MoveToHost {
                    name: "ens1f0v3".into()
                },
            ]
        );
    }

    #[test]
    fn exclusive_rdma_without_an_rdma_device_is_refused() {
        let d = PodDevice {
            rdma_exclusive: true,
            rdma_device: None,
            ..device()
        };
        assert_eq!(
            attach_plan(&d, "net1").unwrap_err().to_string(),
            "rdma.exclusive: the VF has no RDMA device; expected an RDMA-capable VF"
        );
    }

    #[test]
    fn default_names_follow_order_skip_explicit_ones_and_clashes_are_refused() {
        let mut devices = vec![device(), device(), device()];
        assert_eq!(
            pod_interface_names(&devices).unwrap(),
            ["net1", "net2", "net3"]
        );
        devices[2].if_name = Some("net1".into());
        assert_eq!(
            pod_interface_names(&devices).unwrap(),
            ["net2", "net3", "net1"]
        );
        devices[0].if_name = Some("fh0".into());
        devices[1].if_name = Some("fh0".into());
        assert_eq!(
            pod_interface_names(&devices).unwrap_err(),
            PlanError::DuplicateName("fh0".into())
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let d = device();
        for (name, why) in [
            ("", "is empty"),
            ("a-very-long-ifname", "is longer than 15 bytes"),
            (
                "net 1",
                "contains '/', ':', whitespace or a control character",
            ),
            (
                "net%d",
                "contains '%', which the kernel would expand into a number",
            ),
        ] {
            assert_eq!(
                attach_plan(&d, name).unwrap_err(),
                PlanError::BadName {
                    name: name.into(),
                    why
                }
            );
        }
        let small = PodDevice {
            mtu: Some(1000),
            ..device()
        };
        assert_eq!(
            attach_plan(&small, "net1").unwrap_err().to_string(),
            "mtu 1000: expected 1280..=9702"
        );
        let multicast = PodDevice {
            mac: Some("01:00:5e:00:00:01".parse().unwrap()),
            ..device()
        };
        assert!(matches!(
            attach_plan(&multicast, "net1"),
            Err(PlanError::BadMac(_))
        ));
        let mixed = PodDevice {
            routes: vec![RouteSpec {
                destination: "0.0.0.0/0".parse().unwrap(),
                gateway: Some("2001:db8::1".parse().unwrap()),
            }],
            ..device()
        };
        assert_eq!(
            attach_plan(&mixed, "net1").unwrap_err().to_string(),
            "routes: gateway 2001:db8::1 does not match destination 0.0.0.0/0"
        );
        let twice = PodDevice {
            addresses: vec!["10.0.0.1/8".parse().unwrap(); 2],
            ..device()
        };
        assert_eq!(
            attach_plan(&twice, "net1").unwrap_err().to_string(),
            "addresses: 10.0.0.1/8 is listed twice"
        );
    }

    fn host() -> HostState {
        HostState {
            name: "ens1f0v3".into(),
            mtu: 1500,
            mac: "02:aa:00:00:00:03".parse().unwrap(),
            up: false,
        }
    }

    #[test]
    fn detach_from_a_live_pod_moves_then_restores() {
        let attached = HostState {
            name: "ens1f0v3".into(),
            mtu: 9000,
            mac: "02:00:00:00:00:01".parse().unwrap(),
            up: false,
        };
        assert_eq!(
            leave_pod_plan(&host(), None),
            [DetachStep::MoveToHost {
                name: "ens1f0v3".into()
            }]
        );
        assert_eq!(
            restore_host_plan(&host(), &attached, true),
            [
                DetachStep::FlushAddresses,
                DetachStep::RestoreMtu(1500),
                DetachStep::RestoreMac("02:aa:00:00:00:03".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn netns_gone_restores_the_name_the_kernel_gave_back() {
        let returned = HostState {
            name: "net1".into(),
            up: false,
            ..host()
        };
        let was_up = HostState { up: true, ..host() };
        assert_eq!(
            restore_host_plan(&was_up, &returned, false),
            [
                DetachStep::RestoreName {
                    name: "ens1f0v3".into()
                },
                DetachStep::RestoreUp,
            ]
        );
    }

    #[test]
    fn second_detach_plans_nothing() {
        assert_eq!(restore_host_plan(&host(), &host(), false), []);
    }

    #[test]
    fn mac_parses_prints_and_round_trips_through_json() {
        let mac: MacAddress = "02:AB:00:00:00:0f".parse().unwrap();
        assert_eq!(mac.to_string(), "02:ab:00:00:00:0f");
        assert_eq!(
            serde_json::from_str::<MacAddress>(&serde_json::to_string(&mac).unwrap()).unwrap(),
            mac
        );
        assert!("02:ab:00:00:00".parse::<MacAddress>().is_err());
        assert!("02:ab:00:00:00:00:00".parse::<MacAddress>().is_err());
        assert!("02:ab:00:00:00:zz".parse::<MacAddress>().is_err());
        assert!(MacAddress::try_from(&[1u8, 2, 3][..]).is_err());
    }
}
