//! Carrying out the attach and detach plans over two rtnetlink transports:
//! one in the host namespace, one opened inside the pod's.
//!
//! Written against [`RouteTransport`] so the order of requests and the
//! rollback are tested with recording transports; `mod.rs` wires in real
//! sockets.

use std::os::fd::RawFd;
use std::path::Path;

use netlink_packet_route::route::RouteScope;
use sriov::netlink::link::{self, LinkFacts};
use sriov::netlink::{NetlinkError, RouteTransport, address, route};

use super::find;
use super::plan::{self, AttachStep, DetachStep, HostState, MacAddress, PreparedDevice};
use super::{AttachCause, AttachError, Attachment, DetachError};

/// The two namespaces as open files: the pod's, target of the move in, and
/// the host's, target of the move back.
#[derive(Debug, Clone, Copy)]
pub(super) struct NetnsFds {
    /// The host network namespace.
    pub host: RawFd,
    /// The pod network namespace.
    pub pod: RawFd,
}

fn host_state(facts: &LinkFacts) -> Result<HostState, AttachCause> {
    let mac = MacAddress::try_from(facts.mac.as_slice()).map_err(|why| {
        AttachCause::Unsupported(format!("link {} is not Ethernet: {why}", facts.name))
    })?;
    Ok(HostState {
        name: facts.name.clone(),
        mtu: facts.mtu,
        mac,
        up: facts.up,
    })
}

/// Attaches `device` as `name` into the pod, or rolls back and says why.
pub(super) fn attach_with(
    host: &mut impl RouteTransport,
    pod: &mut impl RouteTransport,
    fds: NetnsFds,
    sysfs_root: &Path,
    device: &PreparedDevice,
    name: &str,
    netns: &Path,
) -> Result<Attachment, AttachError> {
    let fail = |step: &str, cause: AttachCause| AttachError {
        claim: device.claim.clone(),
        device: device.device.clone(),
        pci_address: device.pci_address,
        netns: netns.to_path_buf(),
        step: step.to_string(),
        cause,
        rollback: Vec::new(),
    };
    let steps = plan::attach_plan(device, name)
        .map_err(|e| fail("checking the device config", AttachCause::Plan(e)))?;
    const FINDING: &str = "finding the VF in the host";
    let found = find::find_in_host(host, sysfs_root, device.pci_address)
        .map_err(|e| fail(FINDING, AttachCause::Find(e)))?
        .ok_or_else(|| {
            fail(
                FINDING,
                AttachCause::Missing(format!(
                    "{} has no network interface in the host (bound to vfio-pci, or still in another pod?)",
                    device.pci_address
                )),
            )
        })?;
    let host_before = host_state(&found).map_err(|cause| fail(FINDING, cause))?;
    let mut attachment = Attachment {
        claim: device.claim.clone(),
        device: device.device.clone(),
        pci_address: device.pci_address,
        netns: netns.to_path_buf(),
        if_name: name.to_string(),
        pod_index: found.index,
        mac: host_before.mac,
        addresses: device.addresses.clone(),
        routes: device.routes.clone(),
        host: host_before,
    };

    for step in &steps {
        let op = format!("{step} ({} of claim {})", device.pci_address, device.claim);
        let done = match step {
            AttachStep::MoveAndRename { name } => host
                .request(
                    &op,
                    link::set_netns_message(found.index, fds.pod, Some(name)),
                    0,
                )
                .map(drop)
                .map_err(AttachCause::Netlink),
            AttachStep::SetMtu(mtu) => pod
                .request(&op, link::set_mtu_message(attachment.pod_index, *mtu), 0)
                .map(drop)
                .map_err(AttachCause::Netlink),
            AttachStep::SetMac(mac) => pod
                .request(&op, link::set_mac_message(attachment.pod_index, mac.0), 0)
                .map(drop)
                .map_err(AttachCause::Netlink),
            AttachStep::AddAddress(net) => pod
                .request(
                    &op,
                    address::new_address_message(attachment.pod_index, net.ip(), net.prefix()),
                    address::ADD_EXCLUSIVE,
                )
                .map(drop)
                .map_err(AttachCause::Netlink),
            AttachStep::Up => pod
                .request(&op, link::set_up_message(attachment.pod_index, true), 0)
                .map(drop)
                .map_err(AttachCause::Netlink),
            AttachStep::AddRoute(r) => {
                let scope = if r.gateway.is_some() {
                    RouteScope::Universe
                } else {
                    RouteScope::Link
                };
                pod.request(
                    &op,
                    route::new_route_message(
                        r.destination.network(),
                        r.destination.prefix(),
                        r.gateway,
                        attachment.pod_index,
                        scope,
                    ),
                    route::ADD_EXCLUSIVE,
                )
                .map(drop)
                .map_err(AttachCause::Netlink)
            }
        };
        match done {
            Ok(()) => match step {
                AttachStep::MoveAndRename { .. } => {
                    match find::find_in_pod(pod, &attachment.identity()) {
                        Ok(Some(facts)) => attachment.pod_index = facts.index,
                        Ok(None) => {
                            let cause = AttachCause::Missing(format!(
                                "{} is not in the pod after the move",
                                device.pci_address
                            ));
                            return Err(rolled_back(host, pod, fds, sysfs_root, &attachment, {
                                fail(&step.to_string(), cause)
                            }));
                        }
                        Err(e) => {
                            return Err(rolled_back(
                                host,
                                pod,
                                fds,
                                sysfs_root,
                                &attachment,
                                fail(&step.to_string(), AttachCause::Netlink(e)),
                            ));
                        }
                    }
                }
                AttachStep::SetMac(mac) => attachment.mac = *mac,
                _ => {}
            },
            Err(cause) => {
                return Err(rolled_back(
                    host,
                    pod,
                    fds,
                    sysfs_root,
                    &attachment,
                    fail(&step.to_string(), cause),
                ));
            }
        }
    }
    Ok(attachment)
}

/// Undoes whatever part of `attachment` happened and files the rollback's
/// own failures under `error`.
///
/// Also right after a failed move: the kernel may have moved the link and
/// then refused the new name, so the detach looks in the pod first.
fn rolled_back(
    host: &mut impl RouteTransport,
    pod: &mut impl RouteTransport,
    fds: NetnsFds,
    sysfs_root: &Path,
    attachment: &Attachment,
    mut error: AttachError,
) -> AttachError {
    error.rollback = detach_with(host, Some(pod), fds.host, sysfs_root, attachment);
    error
}

/// Moves the VF of `attachment` home and restores it; never stops early:
/// every failure is collected and the next step still runs. `pod` is `None`
/// when the pod's namespace is gone. An empty result means success.
pub(super) fn detach_with<P: RouteTransport>(
    host: &mut impl RouteTransport,
    pod: Option<&mut P>,
    host_fd: RawFd,
    sysfs_root: &Path,
    attachment: &Attachment,
) -> Vec<DetachError> {
    let mut errors = Vec::new();
    let pci = attachment.pci_address;
    if let Some(pod) = pod {
        match find::find_in_pod(pod, &attachment.identity()) {
            Ok(None) => {} // moved home already, or never left
            Err(e) => errors.push(DetachError::new(
                "finding the VF in the pod",
                AttachCause::Netlink(e),
            )),
            Ok(Some(in_pod)) => {
                for step in plan::leave_pod_plan(&attachment.host) {
                    let op = format!("{step} ({pci}, {} in the pod)", in_pod.name);
                    let message = match &step {
                        DetachStep::MoveToHost { name } => {
                            link::set_netns_message(in_pod.index, host_fd, Some(name))
                        }
                        _ => continue,
                    };
                    if let Err(e) = pod.request(&op, message, 0) {
                        errors.push(DetachError::new(&step.to_string(), AttachCause::Netlink(e)));
                    }
                }
            }
        }
    }

    const FINDING: &str = "finding the VF in the host";
    let now = match find::find_in_host(host, sysfs_root, pci) {
        Ok(Some(facts)) => facts,
        Ok(None) => {
            errors.push(DetachError::new(
                FINDING,
                AttachCause::Missing(format!("{pci} has no network interface in the host")),
            ));
            return errors;
        }
        Err(e) => {
            errors.push(DetachError::new(FINDING, AttachCause::Find(e)));
            return errors;
        }
    };
    let current = match host_state(&now) {
        Ok(state) => state,
        Err(cause) => {
            errors.push(DetachError::new(FINDING, cause));
            return errors;
        }
    };
    let listing = format!("listing the addresses of {} ({pci})", now.name);
    let addresses = match address::dump_addresses(host, &listing, now.index) {
        Ok(list) => list,
        Err(e) => {
            errors.push(DetachError::new(&listing, AttachCause::Netlink(e)));
            Vec::new()
        }
    };
    for step in plan::restore_host_plan(&attachment.host, &current, !addresses.is_empty()) {
        let op = format!("{step} ({pci}, now {} in the host)", now.name);
        let result = match &step {
            DetachStep::RestoreName { name } => {
                // The kernel renames only links that are down.
                let down = if current.up {
                    host.request(&op, link::set_up_message(now.index, false), 0)
                        .map(drop)
                } else {
                    Ok(())
                };
                down.and_then(|()| {
                    host.request(&op, link::rename_message(now.index, name), 0)
                        .map(drop)
                })
            }
            DetachStep::FlushAddresses => flush(host, &op, &addresses),
            DetachStep::RestoreMtu(mtu) => host
                .request(&op, link::set_mtu_message(now.index, *mtu), 0)
                .map(drop),
            DetachStep::RestoreMac(mac) => host
                .request(&op, link::set_mac_message(now.index, mac.0), 0)
                .map(drop),
            DetachStep::RestoreUp => host
                .request(&op, link::set_up_message(now.index, true), 0)
                .map(drop),
            DetachStep::MoveToHost { .. } => Ok(()),
        };
        if let Err(e) = result {
            errors.push(DetachError::new(&step.to_string(), AttachCause::Netlink(e)));
        }
    }
    errors
}

/// Deletes each address; one already gone (`EADDRNOTAVAIL`) is fine.
fn flush(
    host: &mut impl RouteTransport,
    op: &str,
    addresses: &[address::AddressFacts],
) -> Result<(), NetlinkError> {
    let mut first_error = None;
    for a in addresses {
        let message = address::del_address_message(a.index, a.address, a.prefix_len);
        match host.request(op, message, 0) {
            Ok(_) => {}
            Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::plan::RouteSpec;
    use crate::attach::test_support::{link_reply, stand_in_tree};
    use sriov::PciAddress;
    use sriov::netlink::RecordingTransport;

    const HOST_MAC: [u8; 6] = [2, 0xaa, 0, 0, 0, 3];
    const FDS: NetnsFds = NetnsFds { host: 3, pod: 4 };

    fn pci() -> PciAddress {
        "0000:3b:02.1".parse().unwrap()
    }

    fn device() -> PreparedDevice {
        PreparedDevice {
            claim: "telco/fronthaul".into(),
            device: "pci-0000-3b-02-1".into(),
            pci_address: pci(),
            if_name: None,
            mtu: Some(9000),
            mac: None,
            addresses: vec!["192.0.2.10/24".parse().unwrap()],
            routes: vec![RouteSpec {
                destination: "0.0.0.0/0".parse().unwrap(),
                gateway: Some("192.0.2.1".parse().unwrap()),
            }],
        }
    }

    fn ops(t: &RecordingTransport) -> Vec<&str> {
        t.requests.iter().map(|r| r.op.as_str()).collect()
    }

    #[test]
    fn attach_moves_with_the_host_socket_and_configures_with_the_pod_socket() {
        let tree = stand_in_tree(&[(pci(), Some("ens1f0v3"))]);
        let mut host = RecordingTransport::new();
        host.answer(vec![link_reply(40, "ens1f0v3", HOST_MAC, None)]);
        let mut pod = RecordingTransport::new();
        // The link keeps index 40 in the pod.
        pod.answer(vec![link_reply(40, "net1", HOST_MAC, None)]);
        let a = attach_with(
            &mut host,
            &mut pod,
            FDS,
            tree.path(),
            &device(),
            "net1",
            Path::new("/run/netns/p"),
        )
        .unwrap();
        assert_eq!(
            ops(&host),
            [
                "reading link ens1f0v3 of 0000:3b:02.1 in the host",
                "moving into the pod netns as net1 (0000:3b:02.1 of claim telco/fronthaul)",
            ]
        );
        assert_eq!(
            ops(&pod),
            [
                "reading link 40 in the pod (looking for 0000:3b:02.1)",
                "setting MTU 9000 (0000:3b:02.1 of claim telco/fronthaul)",
                "adding address 192.0.2.10/24 (0000:3b:02.1 of claim telco/fronthaul)",
                "bringing the link up (0000:3b:02.1 of claim telco/fronthaul)",
                "adding route 0.0.0.0/0 via 192.0.2.1 (0000:3b:02.1 of claim telco/fronthaul)",
            ]
        );
        assert_eq!(
            host.requests[1].message,
            link::set_netns_message(40, 4, Some("net1"))
        );
        assert_eq!((a.pod_index, a.if_name.as_str()), (40, "net1"));
        assert_eq!(a.host.name, "ens1f0v3");
    }

    #[test]
    fn a_refused_route_rolls_everything_back_and_names_claim_device_and_step() {
        let tree = stand_in_tree(&[(pci(), Some("ens1f0v3"))]);
        let mut host = RecordingTransport::new();
        host.answer(vec![link_reply(40, "ens1f0v3", HOST_MAC, None)]);
        host.answer(vec![]); // the move
        // Rollback, host side: the link is home again, still with MTU 9000.
        let mut home = link_reply(40, "ens1f0v3", HOST_MAC, None);
        if let netlink_packet_route::RouteNetlinkMessage::NewLink(l) = &mut home {
            l.attributes
                .push(netlink_packet_route::link::LinkAttribute::Mtu(9000));
        }
        host.answer(vec![home]);
        let mut pod = RecordingTransport::new();
        pod.answer(vec![link_reply(40, "net1", HOST_MAC, None)]);
        pod.answer(vec![]).answer(vec![]).answer(vec![]); // mtu, address, up
        pod.refuse(libc::ENETUNREACH);
        pod.answer(vec![link_reply(40, "net1", HOST_MAC, None)]); // rollback finds it
        let err = attach_with(
            &mut host,
            &mut pod,
            FDS,
            tree.path(),
            &device(),
            "net1",
            Path::new("/run/netns/p"),
        )
        .unwrap_err();
        assert_eq!(err.step, "adding route 0.0.0.0/0 via 192.0.2.1");
        let text = err.to_string();
        assert!(text.starts_with("attaching device pci-0000-3b-02-1 (0000:3b:02.1) of claim telco/fronthaul to /run/netns/p: adding route 0.0.0.0/0 via 192.0.2.1 (0000:3b:02.1 of claim telco/fronthaul): the kernel answered ENETUNREACH"), "{text}");
        assert!(err.rollback.is_empty(), "{:?}", err.rollback);
        assert_eq!(
            ops(&pod)[5..],
            [
                "reading link 40 in the pod (looking for 0000:3b:02.1)",
                "moving back to the host netns as ens1f0v3 (0000:3b:02.1, net1 in the pod)",
            ]
        );
        assert_eq!(
            pod.requests[6].message,
            link::set_netns_message(40, 3, Some("ens1f0v3"))
        );
        assert_eq!(
            ops(&host)[2..],
            [
                "reading link ens1f0v3 of 0000:3b:02.1 in the host",
                "listing the addresses of ens1f0v3 (0000:3b:02.1)",
                "restoring MTU 1500 (0000:3b:02.1, now ens1f0v3 in the host)",
            ]
        );
    }

    #[test]
    fn invalid_config_touches_nothing() {
        let tree = stand_in_tree(&[(pci(), Some("ens1f0v3"))]);
        let (mut host, mut pod) = (RecordingTransport::new(), RecordingTransport::new());
        let bad = PreparedDevice {
            mtu: Some(20),
            ..device()
        };
        let err = attach_with(
            &mut host,
            &mut pod,
            FDS,
            tree.path(),
            &bad,
            "net1",
            Path::new("/p"),
        )
        .unwrap_err();
        assert_eq!(err.step, "checking the device config");
        assert!(host.requests.is_empty() && pod.requests.is_empty());
    }

    #[test]
    fn detach_with_the_netns_gone_restores_the_returned_link_in_the_host() {
        let tree = stand_in_tree(&[(pci(), Some("net1"))]);
        let a = Attachment {
            claim: "telco/fronthaul".into(),
            device: "pci-0000-3b-02-1".into(),
            pci_address: pci(),
            netns: "/run/netns/gone".into(),
            if_name: "net1".into(),
            pod_index: 40,
            mac: MacAddress(HOST_MAC),
            addresses: vec![],
            routes: vec![],
            host: HostState {
                name: "ens1f0v3".into(),
                mtu: 1500,
                mac: MacAddress(HOST_MAC),
                up: false,
            },
        };
        let mut host = RecordingTransport::new();
        host.answer(vec![link_reply(40, "net1", HOST_MAC, None)]);
        let errors = detach_with::<RecordingTransport>(&mut host, None, 3, tree.path(), &a);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            ops(&host)[2],
            "restoring host name ens1f0v3 (0000:3b:02.1, now net1 in the host)"
        );
        assert_eq!(
            host.requests[2].message,
            link::rename_message(40, "ens1f0v3")
        );
    }
}
