//! Carrying out the attach and detach plans over two rtnetlink transports:
//! one in the host namespace, one opened inside the pod's.
//!
//! Written against [`RouteTransport`] (and [`RdmaTransport`] for a device
//! whose RDMA device moves too) so the order of requests and the rollback
//! are tested with recording transports; `mod.rs` wires in real sockets.

use std::os::fd::RawFd;
use std::path::Path;

use netlink_packet_route::route::RouteScope;
use rdma::netlink::{self as rdma_netlink, NetnsMode, RdmaNetlinkError, RdmaTransport};
use sriov::PciAddress;
use sriov::netlink::link::{self, LinkFacts};
use sriov::netlink::{NetlinkError, RouteTransport, address, route};

use super::find;
use super::plan::{self, AttachStep, DetachStep, HostState, MacAddress, PodDevice};
use super::{AttachCause, AttachError, Attachment, DetachError};
use crate::failpoints::failpoint;

/// The two namespaces as open files: the pod's, target of the move in, and
/// the host's, target of the move back.
#[derive(Debug, Clone, Copy)]
pub(super) struct NetnsFds {
    /// The host network namespace.
    pub host: RawFd,
    /// The pod network namespace.
    pub pod: RawFd,
}

/// The RDMA netlink transports of an attach that moves an RDMA device:
/// the host's checks the netns mode, finds the device and moves it in; the
/// pod's finds it there and moves it back on rollback (in exclusive mode a
/// socket sees only its own namespace's devices).
pub(super) struct RdmaSides<'a> {
    /// Opened in the host namespace.
    pub host: &'a mut (dyn RdmaTransport + 'a),
    /// Opened inside the pod's namespace.
    pub pod: &'a mut (dyn RdmaTransport + 'a),
}

pub(super) fn host_state(facts: &LinkFacts) -> Result<HostState, AttachCause> {
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
/// `rdma` is needed only when the device moves its RDMA device.
#[allow(clippy::too_many_arguments)]
pub(super) fn attach_with(
    host: &mut impl RouteTransport,
    pod: &mut impl RouteTransport,
    mut rdma: Option<RdmaSides<'_>>,
    fds: NetnsFds,
    sysfs_root: &Path,
    device: &PodDevice,
    name: &str,
    netns: &Path,
) -> Result<Attachment, AttachError> {
    let fail = |step: &str, cause: AttachCause| AttachError::new(device, netns, step, cause);
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
    let rdma_index = check_rdma(&steps, rdma.as_mut())
        .map_err(|cause| fail("checking the RDMA device in the host", cause))?;
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
        rdma_device: None,
    };

    for step in &steps {
        attach_failpoint(step);
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
            AttachStep::MoveRdma { device: rdma_name } => {
                // Recorded before the move: a rollback looks for it in the
                // pod, and not finding it there is fine.
                attachment.rdma_device = Some(rdma_name.clone());
                match (rdma.as_mut(), rdma_index) {
                    (Some(sides), Some(index)) => rdma_netlink::move_to_netns(
                        &mut *sides.host,
                        rdma_name,
                        index,
                        fds.pod,
                        &format!(
                            "the pod netns ({} of claim {})",
                            device.pci_address, device.claim
                        ),
                    )
                    .map_err(AttachCause::Rdma),
                    _ => Err(no_rdma_socket()),
                }
            }
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
                            return Err(rolled_back(
                                host,
                                pod,
                                &mut rdma,
                                fds,
                                sysfs_root,
                                &attachment,
                                fail(&step.to_string(), cause),
                            ));
                        }
                        Err(e) => {
                            return Err(rolled_back(
                                host,
                                pod,
                                &mut rdma,
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
                    &mut rdma,
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
    rdma: &mut Option<RdmaSides<'_>>,
    fds: NetnsFds,
    sysfs_root: &Path,
    attachment: &Attachment,
    mut error: AttachError,
) -> AttachError {
    let rdma_pod = rdma.as_mut().map(|s| &mut *s.pod);
    error.rollback = detach_with(host, Some(pod), rdma_pod, fds.host, sysfs_root, attachment);
    error
}

fn no_rdma_socket() -> AttachCause {
    AttachCause::Missing("no RDMA netlink socket was opened for an RDMA-exclusive device".into())
}

/// Before any change: when the plan moves an RDMA device, the subsystem
/// must be in exclusive netns mode and the device visible in the host.
/// Returns its index there.
fn check_rdma(
    steps: &[AttachStep],
    rdma: Option<&mut RdmaSides<'_>>,
) -> Result<Option<u32>, AttachCause> {
    let Some(name) = steps.iter().find_map(|s| match s {
        AttachStep::MoveRdma { device } => Some(device),
        _ => None,
    }) else {
        return Ok(None);
    };
    let sides = rdma.ok_or_else(no_rdma_socket)?;
    match rdma_netlink::netns_mode(&mut *sides.host)? {
        NetnsMode::Exclusive => {}
        NetnsMode::Shared => {
            return Err(AttachCause::RdmaShared {
                device: name.clone(),
            });
        }
    }
    Ok(Some(rdma_netlink::device_index(&mut *sides.host, name)?))
}

/// Moves RDMA device `device` out of the pod (as the pod's socket sees it)
/// into the namespace open as `host_fd`. Not finding it in the pod means
/// it is home already: never moved, or returned by the kernel.
fn return_rdma(
    pod: &mut (dyn RdmaTransport + '_),
    device: &str,
    host_fd: RawFd,
    pci: PciAddress,
) -> Result<(), RdmaNetlinkError> {
    match rdma_netlink::find_device(pod, device)? {
        None => Ok(()),
        Some(index) => rdma_netlink::move_to_netns(
            pod,
            device,
            index,
            host_fd,
            &format!("the host netns ({pci})"),
        ),
    }
}

/// Moves the VF of `attachment` (and its RDMA device, first) home and
/// restores it; never stops early: every failure is collected and the next
/// step still runs. `pod` and `rdma_pod` are `None` when the pod's
/// namespace is gone (the kernel has given both back by then); `rdma_pod`
/// also when its socket could not be opened, which the caller reports. An
/// empty result means success.
pub(super) fn detach_with<P: RouteTransport>(
    host: &mut impl RouteTransport,
    mut pod: Option<&mut P>,
    mut rdma_pod: Option<&mut (dyn RdmaTransport + '_)>,
    host_fd: RawFd,
    sysfs_root: &Path,
    attachment: &Attachment,
) -> Vec<DetachError> {
    let mut errors = Vec::new();
    let pci = attachment.pci_address;
    for step in plan::leave_pod_plan(&attachment.host, attachment.rdma_device.as_deref()) {
        detach_failpoint(&step);
        match &step {
            DetachStep::ReturnRdma { device } => {
                let Some(rdma) = rdma_pod.as_deref_mut() else {
                    continue;
                };
                if let Err(e) = return_rdma(rdma, device, host_fd, pci) {
                    errors.push(DetachError::new(&step.to_string(), AttachCause::Rdma(e)));
                }
            }
            DetachStep::MoveToHost { name } => {
                let Some(pod) = pod.as_deref_mut() else {
                    continue;
                };
                match find::find_in_pod(pod, &attachment.identity()) {
                    Ok(None) => {} // moved home already, or never left
                    Err(e) => errors.push(DetachError::new(
                        "finding the VF in the pod",
                        AttachCause::Netlink(e),
                    )),
                    Ok(Some(in_pod)) => {
                        let op = format!("{step} ({pci}, {} in the pod)", in_pod.name);
                        let message = link::set_netns_message(in_pod.index, host_fd, Some(name));
                        if let Err(e) = pod.request(&op, message, 0) {
                            errors
                                .push(DetachError::new(&step.to_string(), AttachCause::Netlink(e)));
                        }
                    }
                }
            }
            _ => {}
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
        detach_failpoint(&step);
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
            DetachStep::MoveToHost { .. } | DetachStep::ReturnRdma { .. } => Ok(()),
        };
        if let Err(e) = result {
            errors.push(DetachError::new(&step.to_string(), AttachCause::Netlink(e)));
        }
    }
    errors
}

/// The failpoint before an attach step ([`crate::failpoints`]).
fn attach_failpoint(step: &AttachStep) {
    match step {
        AttachStep::MoveAndRename { .. } => failpoint!("attach::netns_move"),
        AttachStep::MoveRdma { .. } => failpoint!("attach::rdma_move"),
        AttachStep::SetMtu(_) => failpoint!("attach::mtu"),
        AttachStep::SetMac(_) => failpoint!("attach::mac"),
        AttachStep::AddAddress(_) => failpoint!("attach::address"),
        AttachStep::Up => failpoint!("attach::up"),
        AttachStep::AddRoute(_) => failpoint!("attach::route"),
    }
}

/// The failpoint before a detach step ([`crate::failpoints`]).
fn detach_failpoint(step: &DetachStep) {
    match step {
        DetachStep::ReturnRdma { .. } => failpoint!("detach::rdma_move"),
        DetachStep::MoveToHost { .. } => failpoint!("detach::netns_move"),
        DetachStep::RestoreName { .. } => failpoint!("detach::rename"),
        DetachStep::FlushAddresses => failpoint!("detach::address_flush"),
        DetachStep::RestoreMtu(_) => failpoint!("detach::mtu"),
        DetachStep::RestoreMac(_) => failpoint!("detach::mac"),
        DetachStep::RestoreUp => failpoint!("detach::up"),
    }
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
    use crate::testing::netns::{Journal, link_reply, stand_in_tree};
    use rdma::netlink::{NldevReply, nldev};
    use rdma::testing::RecordingRdma;
    use sriov::testing::RecordingTransport;

    const HOST_MAC: [u8; 6] = [2, 0xaa, 0, 0, 0, 3];
    const FDS: NetnsFds = NetnsFds { host: 3, pod: 4 };

    fn pci() -> PciAddress {
        "0000:3b:02.1".parse().unwrap()
    }

    fn device() -> PodDevice {
        PodDevice {
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
            rdma_device: Some("mlx5_3".into()),
            rdma_exclusive: false,
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
            None,
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
            None,
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

    fn exclusive() -> PodDevice {
        PodDevice {
            rdma_exclusive: true,
            ..device()
        }
    }

    /// A host RDMA side that finds the subsystem exclusive and `mlx5_3` at
    /// index 4, then acknowledges the move.
    fn host_rdma_exclusive() -> RecordingRdma {
        let mut rdma = RecordingRdma::new();
        rdma.answer(vec![NldevReply::system(NetnsMode::Exclusive)])
            .answer(vec![
                NldevReply::device(1, "mlx5_0"),
                NldevReply::device(4, "mlx5_3"),
            ]);
        rdma
    }

    const RDMA_OP_IN: &str = "rdma host: moving RDMA device mlx5_3 (index 4) into the pod netns \
                              (0000:3b:02.1 of claim telco/fronthaul)";
    const NETDEV_OP_IN: &str =
        "host: moving into the pod netns as net1 (0000:3b:02.1 of claim telco/fronthaul)";

    #[test]
    fn exclusive_rdma_checks_first_then_moves_the_netdev_then_the_rdma_device() {
        let tree = stand_in_tree(&[(pci(), Some("ens1f0v3"))]);
        let (mut host, mut pod) = (RecordingTransport::new(), RecordingTransport::new());
        host.answer(vec![link_reply(40, "ens1f0v3", HOST_MAC, None)]);
        pod.answer(vec![link_reply(40, "net1", HOST_MAC, None)]);
        let (mut host_rdma, mut pod_rdma) = (host_rdma_exclusive(), RecordingRdma::new());
        let journal = Journal::default();
        let a = {
            let (mut h, mut p) = (
                journal.wrap("host", &mut host),
                journal.wrap("pod", &mut pod),
            );
            let (mut hr, mut pr) = (
                journal.wrap("rdma host", &mut host_rdma),
                journal.wrap("rdma pod", &mut pod_rdma),
            );
            let sides = RdmaSides {
                host: &mut hr,
                pod: &mut pr,
            };
            attach_with(
                &mut h,
                &mut p,
                Some(sides),
                FDS,
                tree.path(),
                &exclusive(),
                "net1",
                Path::new("/run/netns/p"),
            )
            .unwrap()
        };
        assert_eq!(
            journal.entries()[..6],
            [
                "host: reading link ens1f0v3 of 0000:3b:02.1 in the host",
                "rdma host: reading the RDMA subsystem's netns mode",
                "rdma host: looking up RDMA device mlx5_3",
                NETDEV_OP_IN,
                "pod: reading link 40 in the pod (looking for 0000:3b:02.1)",
                RDMA_OP_IN,
            ]
        );
        assert_eq!(
            journal.entries()[6],
            "pod: setting MTU 9000 (0000:3b:02.1 of claim telco/fronthaul)"
        );
        // Moved by index, from the host, into the pod's netns fd.
        assert_eq!(
            host_rdma.requests[2].request,
            nldev::set_netns_request(4, FDS.pod)
        );
        assert!(pod_rdma.requests.is_empty());
        assert_eq!(a.rdma_device.as_deref(), Some("mlx5_3"));
    }

    #[test]
    fn shared_rdma_mode_refuses_before_anything_moves_and_says_what_to_do() {
        let tree = stand_in_tree(&[(pci(), Some("ens1f0v3"))]);
        let (mut host, mut pod) = (RecordingTransport::new(), RecordingTransport::new());
        host.answer(vec![link_reply(40, "ens1f0v3", HOST_MAC, None)]);
        let (mut host_rdma, mut pod_rdma) = (RecordingRdma::new(), RecordingRdma::new());
        host_rdma.answer(vec![NldevReply::system(NetnsMode::Shared)]);
        let err = attach_with(
            &mut host,
            &mut pod,
            Some(RdmaSides {
                host: &mut host_rdma,
                pod: &mut pod_rdma,
            }),
            FDS,
            tree.path(),
            &exclusive(),
            "net1",
            Path::new("/run/netns/p"),
        )
        .unwrap_err();
        assert_eq!(err.step, "checking the RDMA device in the host");
        assert_eq!(
            err.to_string(),
            "attaching device pci-0000-3b-02-1 (0000:3b:02.1) of claim telco/fronthaul to \
             /run/netns/p: RDMA device mlx5_3 cannot move into the pod: the RDMA subsystem is \
             in shared netns mode; exclusive RDMA needs `rdma system set netns exclusive` at \
             boot, before any other network namespace exists (or ib_core loaded with \
             netns_mode=0) (rolled back)"
        );
        assert_eq!(
            ops(&host),
            ["reading link ens1f0v3 of 0000:3b:02.1 in the host"]
        );
        assert!(pod.requests.is_empty() && pod_rdma.requests.is_empty());
        assert_eq!(host_rdma.requests.len(), 1);
    }

    #[test]
    fn an_rdma_device_missing_from_the_host_is_refused_before_anything_moves() {
        let tree = stand_in_tree(&[(pci(), Some("ens1f0v3"))]);
        let (mut host, mut pod) = (RecordingTransport::new(), RecordingTransport::new());
        host.answer(vec![link_reply(40, "ens1f0v3", HOST_MAC, None)]);
        let (mut host_rdma, mut pod_rdma) = (RecordingRdma::new(), RecordingRdma::new());
        host_rdma
            .answer(vec![NldevReply::system(NetnsMode::Exclusive)])
            .answer(vec![NldevReply::device(1, "mlx5_0")]);
        let err = attach_with(
            &mut host,
            &mut pod,
            Some(RdmaSides {
                host: &mut host_rdma,
                pod: &mut pod_rdma,
            }),
            FDS,
            tree.path(),
            &exclusive(),
            "net1",
            Path::new("/run/netns/p"),
        )
        .unwrap_err();
        assert!(
            err.to_string().ends_with(
                "looking up RDMA device mlx5_3: no RDMA device mlx5_3 in this network namespace \
                 (rolled back)"
            ),
            "{err}"
        );
        assert_eq!(host.requests.len(), 1);
        assert!(pod.requests.is_empty());
    }

    #[test]
    fn a_failure_after_the_rdma_move_rolls_back_both_rdma_first() {
        let tree = stand_in_tree(&[(pci(), Some("ens1f0v3"))]);
        let (mut host, mut pod) = (RecordingTransport::new(), RecordingTransport::new());
        host.answer(vec![link_reply(40, "ens1f0v3", HOST_MAC, None)]);
        host.answer(vec![]); // the move
        host.answer(vec![link_reply(40, "ens1f0v3", HOST_MAC, None)]); // home again
        pod.answer(vec![link_reply(40, "net1", HOST_MAC, None)]);
        pod.refuse(libc::EINVAL); // MTU 9000
        pod.answer(vec![link_reply(40, "net1", HOST_MAC, None)]); // rollback finds it
        let (mut host_rdma, mut pod_rdma) = (host_rdma_exclusive(), RecordingRdma::new());
        pod_rdma.answer(vec![NldevReply::device(4, "mlx5_3")]);
        let journal = Journal::default();
        let err = {
            let (mut h, mut p) = (
                journal.wrap("host", &mut host),
                journal.wrap("pod", &mut pod),
            );
            let (mut hr, mut pr) = (
                journal.wrap("rdma host", &mut host_rdma),
                journal.wrap("rdma pod", &mut pod_rdma),
            );
            attach_with(
                &mut h,
                &mut p,
                Some(RdmaSides {
                    host: &mut hr,
                    pod: &mut pr,
                }),
                FDS,
                tree.path(),
                &exclusive(),
                "net1",
                Path::new("/run/netns/p"),
            )
            .unwrap_err()
        };
        assert_eq!(err.step, "setting MTU 9000");
        assert!(err.rollback.is_empty(), "{:?}", err.rollback);
        assert_eq!(
            journal.entries()[7..11],
            [
                "rdma pod: looking up RDMA device mlx5_3",
                "rdma pod: moving RDMA device mlx5_3 (index 4) into the host netns (0000:3b:02.1)",
                "pod: reading link 40 in the pod (looking for 0000:3b:02.1)",
                "pod: moving back to the host netns as ens1f0v3 (0000:3b:02.1, net1 in the pod)",
            ]
        );
        // Back by index, from the pod's socket, into the host's netns fd.
        assert_eq!(
            pod_rdma.requests[1].request,
            nldev::set_netns_request(4, FDS.host)
        );
    }

    #[test]
    fn a_refused_rdma_move_rolls_the_netdev_back_and_names_the_device() {
        let tree = stand_in_tree(&[(pci(), Some("ens1f0v3"))]);
        let (mut host, mut pod) = (RecordingTransport::new(), RecordingTransport::new());
        host.answer(vec![link_reply(40, "ens1f0v3", HOST_MAC, None)]);
        host.answer(vec![]); // the move
        host.answer(vec![link_reply(40, "ens1f0v3", HOST_MAC, None)]); // home again
        pod.answer(vec![link_reply(40, "net1", HOST_MAC, None)]);
        pod.answer(vec![link_reply(40, "net1", HOST_MAC, None)]); // rollback finds it
        let mut host_rdma = host_rdma_exclusive();
        host_rdma.refuse(libc::EOPNOTSUPP);
        let mut pod_rdma = RecordingRdma::new();
        pod_rdma.answer(vec![]); // not in the pod: nothing to move back
        let err = attach_with(
            &mut host,
            &mut pod,
            Some(RdmaSides {
                host: &mut host_rdma,
                pod: &mut pod_rdma,
            }),
            FDS,
            tree.path(),
            &exclusive(),
            "net1",
            Path::new("/run/netns/p"),
        )
        .unwrap_err();
        assert_eq!(err.step, "moving RDMA device mlx5_3 into the pod netns");
        assert!(
            err.to_string().contains(
                "moving RDMA device mlx5_3 (index 4) into the pod netns (0000:3b:02.1 of claim \
                 telco/fronthaul): the kernel answered EOPNOTSUPP"
            ),
            "{err}"
        );
        assert!(err.rollback.is_empty(), "{:?}", err.rollback);
        assert_eq!(pod_rdma.ops(), ["looking up RDMA device mlx5_3"]);
        assert_eq!(
            ops(&pod)[2],
            "moving back to the host netns as ens1f0v3 (0000:3b:02.1, net1 in the pod)"
        );
    }

    fn attached_with_rdma() -> Attachment {
        Attachment {
            claim: "telco/fronthaul".into(),
            device: "pci-0000-3b-02-1".into(),
            pci_address: pci(),
            netns: "/run/netns/p".into(),
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
            rdma_device: Some("mlx5_3".into()),
        }
    }

    #[test]
    fn detach_moves_the_rdma_device_home_before_the_netdev() {
        let tree = stand_in_tree(&[(pci(), Some("ens1f0v3"))]);
        let mut host = RecordingTransport::new();
        host.answer(vec![link_reply(40, "ens1f0v3", HOST_MAC, None)]);
        let mut pod = RecordingTransport::new();
        pod.answer(vec![link_reply(40, "net1", HOST_MAC, None)]);
        let mut pod_rdma = RecordingRdma::new();
        pod_rdma.answer(vec![NldevReply::device(4, "mlx5_3")]);
        let journal = Journal::default();
        let errors = {
            let (mut h, mut p) = (
                journal.wrap("host", &mut host),
                journal.wrap("pod", &mut pod),
            );
            let mut pr = journal.wrap("rdma pod", &mut pod_rdma);
            detach_with(
                &mut h,
                Some(&mut p),
                Some(&mut pr),
                3,
                tree.path(),
                &attached_with_rdma(),
            )
        };
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            journal.entries()[..4],
            [
                "rdma pod: looking up RDMA device mlx5_3",
                "rdma pod: moving RDMA device mlx5_3 (index 4) into the host netns (0000:3b:02.1)",
                "pod: reading link 40 in the pod (looking for 0000:3b:02.1)",
                "pod: moving back to the host netns as ens1f0v3 (0000:3b:02.1, net1 in the pod)",
            ]
        );
        assert_eq!(pod_rdma.requests[1].request, nldev::set_netns_request(4, 3));
    }

    #[test]
    fn detach_keeps_going_when_the_rdma_device_will_not_move_and_reports_it() {
        let tree = stand_in_tree(&[(pci(), Some("ens1f0v3"))]);
        let mut host = RecordingTransport::new();
        host.answer(vec![link_reply(40, "ens1f0v3", HOST_MAC, None)]);
        let mut pod = RecordingTransport::new();
        pod.answer(vec![link_reply(40, "net1", HOST_MAC, None)]);
        let mut pod_rdma = RecordingRdma::new();
        pod_rdma
            .answer(vec![NldevReply::device(4, "mlx5_3")])
            .refuse(libc::EBUSY);
        let errors = detach_with(
            &mut host,
            Some(&mut pod),
            Some(&mut pod_rdma),
            3,
            tree.path(),
            &attached_with_rdma(),
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].to_string().starts_with(
                "moving RDMA device mlx5_3 back to the host netns: moving RDMA device mlx5_3 \
                 (index 4) into the host netns (0000:3b:02.1): the kernel answered EBUSY"
            ),
            "{}",
            errors[0]
        );
        // The netdev still went home.
        assert_eq!(
            ops(&pod)[1],
            "moving back to the host netns as ens1f0v3 (0000:3b:02.1, net1 in the pod)"
        );
    }

    #[test]
    fn an_rdma_device_not_in_the_pod_counts_as_home() {
        let tree = stand_in_tree(&[(pci(), Some("ens1f0v3"))]);
        let mut host = RecordingTransport::new();
        host.answer(vec![link_reply(40, "ens1f0v3", HOST_MAC, None)]);
        let mut pod = RecordingTransport::new();
        pod.answer(vec![link_reply(40, "net1", HOST_MAC, None)]);
        let mut pod_rdma = RecordingRdma::new();
        pod_rdma.answer(vec![]); // e.g. its move in was refused
        let errors = detach_with(
            &mut host,
            Some(&mut pod),
            Some(&mut pod_rdma),
            3,
            tree.path(),
            &attached_with_rdma(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(pod_rdma.ops(), ["looking up RDMA device mlx5_3"]);
    }

    #[test]
    fn invalid_config_touches_nothing() {
        let tree = stand_in_tree(&[(pci(), Some("ens1f0v3"))]);
        let (mut host, mut pod) = (RecordingTransport::new(), RecordingTransport::new());
        let bad = PodDevice {
            mtu: Some(20),
            ..device()
        };
        let err = attach_with(
            &mut host,
            &mut pod,
            None,
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
            // The kernel gives RDMA devices back to the initial netns when
            // the pod's goes: with no pod socket there is nothing to do.
            rdma_device: Some("mlx5_3".into()),
        };
        let mut host = RecordingTransport::new();
        host.answer(vec![link_reply(40, "net1", HOST_MAC, None)]);
        let errors = detach_with::<RecordingTransport>(&mut host, None, None, 3, tree.path(), &a);
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
