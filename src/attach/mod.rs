//! Pod attach: moving prepared netdevice-mode VFs into a pod's network
//! namespace, configured, and back out again.
//!
//! The NRI plugin calls [`Attacher::attach_pod`] on `RunPodSandbox` and
//! [`Attacher::detach`] on `StopPodSandbox` / `RemovePodSandbox`, storing
//! each [`Attachment`] in the state store before it answers the runtime.
//!
//! Everything is synchronous and blocking (a few rtnetlink round trips and
//! one short-lived thread per pod namespace); async callers run it under
//! `tokio::task::spawn_blocking`. No thread we keep ever changes namespace:
//! see [`netns`].

// AttachError carries the claim, device, namespace, step and rollback
// failures an operator needs; it is built at most once per failed attach,
// which costs milliseconds anyway, so its size does not matter.
#![allow(clippy::result_large_err)]

mod apply;
pub mod find;
#[cfg(test)]
mod kernel_tests;
pub mod netns;
pub mod plan;

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use rdma::netlink::{RdmaNetlinkError, RdmaSocket, RdmaTransport};
use serde::{Deserialize, Serialize};
use sriov::PciAddress;
use sriov::netlink::{NetlinkError, RouteSocket};

use apply::{NetnsFds, RdmaSides};
use find::{FindError, PodIdentity};
use netns::NetnsError;
use plan::{HostState, MacAddress, PlanError, PodDevice, RouteSpec};

/// A VF as it sits in a pod: enough to report the claim's `networkData`
/// and to find and restore the VF later, even after a driver restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The claim, `namespace/name`.
    pub claim: String,
    /// The DRA device name.
    pub device: String,
    /// The VF.
    pub pci_address: PciAddress,
    /// The pod's network namespace path.
    pub netns: PathBuf,
    /// Interface name in the pod.
    pub if_name: String,
    /// Interface index in the pod when attached (a hint, not an identity).
    pub pod_index: u32,
    /// MAC in the pod.
    pub mac: MacAddress,
    /// Addresses added in the pod.
    pub addresses: Vec<IpNetwork>,
    /// Routes added in the pod.
    pub routes: Vec<RouteSpec>,
    /// The link as it was in the host, to restore.
    pub host: HostState,
    /// The RDMA device moved into the pod with the VF (exclusive RDMA),
    /// to move back on detach. Absent in records from before RDMA moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma_device: Option<String>,
}

impl Attachment {
    /// How to recognise the VF in the pod.
    pub fn identity(&self) -> PodIdentity {
        PodIdentity {
            pci: self.pci_address,
            mac: self.mac,
            index_hint: self.pod_index,
        }
    }
}

/// What went wrong in one step of an attach or detach.
#[derive(Debug, thiserror::Error)]
pub enum AttachCause {
    /// The device's config is invalid; nothing was touched.
    #[error("invalid device config: {0}")]
    Plan(#[from] PlanError),
    /// Reading the VF's host side failed.
    #[error(transparent)]
    Find(#[from] FindError),
    /// The pod's namespace could not be opened or entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The kernel refused a request (its text names the step).
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// An RDMA netlink request failed (its text names the step and device).
    #[error(transparent)]
    Rdma(#[from] RdmaNetlinkError),
    /// The RDMA subsystem shares its devices with every namespace, so
    /// none can be given to one pod.
    #[error(
        "RDMA device {device} cannot move into the pod: the RDMA subsystem is in shared \
         netns mode; exclusive RDMA needs `rdma system set netns exclusive` at boot, before \
         any other network namespace exists (or ib_core loaded with netns_mode=0)"
    )]
    RdmaShared {
        /// The RDMA device asked for.
        device: String,
    },
    /// The VF is not where it must be.
    #[error("{0}")]
    Missing(String),
    /// The link is of a kind we do not handle.
    #[error("{0}")]
    Unsupported(String),
}

/// A failed attach, after its rollback.
#[derive(Debug, thiserror::Error)]
#[error(
    "attaching device {device} ({pci_address}) of claim {claim} to {}: {cause}{}",
    netns.display(),
    RollbackText(rollback)
)]
pub struct AttachError {
    /// The claim, `namespace/name`.
    pub claim: String,
    /// The DRA device name.
    pub device: String,
    /// The VF.
    pub pci_address: PciAddress,
    /// The pod's network namespace path.
    pub netns: PathBuf,
    /// The step that failed, e.g. "adding address 192.0.2.10/24".
    pub step: String,
    /// Why it failed.
    #[source]
    pub cause: AttachCause,
    /// Failures of the rollback itself (empty: everything was undone).
    pub rollback: Vec<DetachError>,
}

impl AttachError {
    /// A failure of `step` for `device`, with nothing yet rolled back.
    pub fn new(device: &PodDevice, netns: &Path, step: &str, cause: AttachCause) -> Self {
        AttachError {
            claim: device.claim.clone(),
            device: device.device.clone(),
            pci_address: device.pci_address,
            netns: netns.to_path_buf(),
            step: step.to_string(),
            cause,
            rollback: Vec::new(),
        }
    }
}

/// The pod's interface names, or an error naming the device that clashes.
fn pod_names(devices: &[PodDevice], netns: &Path) -> Result<Vec<String>, AttachError> {
    plan::pod_interface_names(devices).map_err(|e| {
        let clash = match &e {
            PlanError::DuplicateName(n) => devices
                .iter()
                .rposition(|d| d.if_name.as_deref() == Some(n)),
            _ => None,
        };
        let d = &devices[clash.unwrap_or(0)];
        AttachError::new(
            d,
            netns,
            "checking the pod's interface names",
            AttachCause::Plan(e),
        )
    })
}

struct RollbackText<'a>(&'a [DetachError]);

impl fmt::Display for RollbackText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(" (rolled back)");
        }
        f.write_str(" (rollback incomplete: ")?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        f.write_str(")")
    }
}

/// One failed step of a detach.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {cause}")]
pub struct DetachError {
    /// The step, e.g. "restoring host name ens1f0v3".
    pub step: String,
    /// Why it failed.
    #[source]
    pub cause: AttachCause,
}

impl DetachError {
    fn new(step: &str, cause: AttachCause) -> Self {
        DetachError {
            step: step.to_string(),
            cause,
        }
    }
}

/// Every failure of one detach: it keeps going after a failure, so a
/// caller sees all that is left to fix, not just the first.
#[derive(Debug, thiserror::Error)]
#[error(
    "detaching device {device} ({pci_address}) of claim {claim}: {}",
    ErrorList(errors)
)]
pub struct DetachErrors {
    /// The claim, `namespace/name`.
    pub claim: String,
    /// The DRA device name.
    pub device: String,
    /// The VF.
    pub pci_address: PciAddress,
    /// Each failed step, in order.
    pub errors: Vec<DetachError>,
}

struct ErrorList<'a>(&'a [DetachError]);

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Attaches and detaches VFs against the real kernel, finding them under a
/// sysfs root (`/sys`, or a fixture tree in tests).
#[derive(Debug, Clone)]
pub struct Attacher {
    sysfs_root: PathBuf,
}

impl Attacher {
    /// An attacher reading PCI devices under `sysfs_root`.
    pub fn new(sysfs_root: impl Into<PathBuf>) -> Self {
        Attacher {
            sysfs_root: sysfs_root.into(),
        }
    }

    /// Attaches `device`, the pod's device number `order` (0-based, which
    /// picks the default name `net<order+1>`), into the namespace at
    /// `netns`. On failure everything done is undone before returning.
    pub fn attach(
        &self,
        device: &PodDevice,
        order: usize,
        netns: &Path,
    ) -> Result<Attachment, AttachError> {
        self.attach_named(device, &plan::interface_name(device, order), netns)
    }

    /// What each device's attachment will be, read before anything moves:
    /// the caller records it first, so a driver that dies in the middle of
    /// an attach still knows what to move back (detaching a VF that never
    /// left the host changes nothing). The pod index is the host one, a hint
    /// only: the VF is found by PCI address.
    pub fn provisional(
        &self,
        devices: &[PodDevice],
        netns: &Path,
    ) -> Result<Vec<Attachment>, AttachError> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let names = pod_names(devices, netns)?;
        let step = "reading the VF's state in the host";
        let mut host =
            RouteSocket::new().map_err(|e| AttachError::new(&devices[0], netns, step, e.into()))?;
        let mut out = Vec::with_capacity(devices.len());
        for (device, name) in devices.iter().zip(names) {
            let fail = |cause| AttachError::new(device, netns, step, cause);
            let found = find::find_in_host(&mut host, &self.sysfs_root, device.pci_address)
                .map_err(|e| fail(AttachCause::Find(e)))?
                .ok_or_else(|| {
                    fail(AttachCause::Missing(format!(
                        "{} has no network interface in the host (bound to vfio-pci, or still in another pod?)",
                        device.pci_address
                    )))
                })?;
            let host_before = apply::host_state(&found).map_err(fail)?;
            out.push(Attachment {
                claim: device.claim.clone(),
                device: device.device.clone(),
                pci_address: device.pci_address,
                netns: netns.to_path_buf(),
                if_name: name,
                pod_index: found.index,
                mac: device.mac.unwrap_or(host_before.mac),
                addresses: device.addresses.clone(),
                routes: device.routes.clone(),
                host: host_before,
                rdma_device: device.rdma_device.clone().filter(|_| device.rdma_exclusive),
            });
        }
        Ok(out)
    }

    /// Attaches all of a pod's devices in order; if one fails, the ones
    /// already attached are detached again and their failures, if any, are
    /// added to the error's rollback list.
    pub fn attach_pod(
        &self,
        devices: &[PodDevice],
        netns: &Path,
    ) -> Result<Vec<Attachment>, AttachError> {
        let names = pod_names(devices, netns)?;
        let mut done = Vec::with_capacity(devices.len());
        for (device, name) in devices.iter().zip(&names) {
            match self.attach_named(device, name, netns) {
                Ok(a) => done.push(a),
                Err(mut err) => {
                    for a in done.iter().rev() {
                        if let Err(d) = self.detach(a) {
                            err.rollback.extend(d.errors);
                        }
                    }
                    return Err(err);
                }
            }
        }
        Ok(done)
    }

    fn attach_named(
        &self,
        device: &PodDevice,
        name: &str,
        netns: &Path,
    ) -> Result<Attachment, AttachError> {
        let fail = |step: &str, cause: AttachCause| AttachError::new(device, netns, step, cause);
        let opening = "opening the namespaces";
        let host_ns = netns::current_netns().map_err(|e| fail(opening, e.into()))?;
        let pod_ns = netns::open_netns(netns).map_err(|e| fail(opening, e.into()))?;
        let rdma = device.rdma_exclusive;
        let mut sockets = self
            .sockets(netns, rdma)
            .map_err(|cause| fail("opening netlink sockets", cause))?;
        let rdma = sockets.rdma.as_mut().map(|(host, pod)| RdmaSides {
            host: host as &mut dyn RdmaTransport,
            pod: pod as &mut dyn RdmaTransport,
        });
        apply::attach_with(
            &mut sockets.host,
            &mut sockets.pod,
            rdma,
            fds(&host_ns, &pod_ns),
            &self.sysfs_root,
            device,
            name,
            netns,
        )
    }

    /// A host rtnetlink socket and one created inside `netns` on a
    /// throw-away thread; with `rdma`, the same pair of RDMA netlink
    /// sockets (opened only then: most kernels without RDMA hardware have
    /// no RDMA netlink at all).
    fn sockets(&self, netns: &Path, rdma: bool) -> Result<Sockets, AttachCause> {
        let host = RouteSocket::new()?;
        let host_rdma = rdma.then(RdmaSocket::new).transpose()?;
        let (pod, pod_rdma) = netns::run_in_netns(netns, move || {
            (RouteSocket::new(), rdma.then(RdmaSocket::new))
        })?;
        Ok(Sockets {
            host,
            pod: pod?,
            rdma: host_rdma.zip(pod_rdma.transpose()?),
        })
    }

    /// Moves the VF of `attachment` back to the host, and its RDMA device
    /// first if it moved one, restores its name, MTU, MAC and up state and
    /// flushes its addresses. Works when the pod's namespace is gone (the
    /// kernel hands a physical VF back to the host, possibly renamed; it is
    /// found by PCI address; RDMA devices go back to the initial namespace
    /// by themselves). Idempotent: detaching a detached VF succeeds without
    /// a change.
    pub fn detach(&self, attachment: &Attachment) -> Result<(), DetachErrors> {
        let mut errors = Vec::new();
        let result = (|| {
            let host_ns = netns::current_netns()?;
            let host = RouteSocket::new()?;
            Ok::<_, AttachCause>((host_ns, host))
        })();
        let (host_ns, mut host) = match result {
            Ok(pair) => pair,
            Err(cause) => {
                errors.push(DetachError::new("opening the host namespace", cause));
                return Err(self.detach_errors(attachment, errors));
            }
        };
        let rdma = attachment.rdma_device.is_some();
        let opened = netns::run_in_netns(&attachment.netns, move || {
            (RouteSocket::new(), rdma.then(RdmaSocket::new))
        });
        let (mut pod, mut pod_rdma) = match opened {
            Ok((route, rdma)) => {
                let route = route
                    .map_err(|e| {
                        errors.push(DetachError::new("opening the pod's socket", e.into()))
                    })
                    .ok();
                let rdma = rdma.and_then(|r| {
                    r.map_err(|e| {
                        errors.push(DetachError::new(
                            "opening the pod's RDMA netlink socket",
                            e.into(),
                        ))
                    })
                    .ok()
                });
                (route, rdma)
            }
            // Gone, or a leftover file that is no namespace any more
            // (setns says EINVAL): the kernel has handed the VF back, and
            // its RDMA device to the initial namespace.
            Err(e) if e.is_gone() || is_not_a_netns(&e) => (None, None),
            Err(e) => {
                errors.push(DetachError::new("entering the pod's namespace", e.into()));
                (None, None)
            }
        };
        errors.extend(apply::detach_with(
            &mut host,
            pod.as_mut(),
            pod_rdma.as_mut().map(|s| s as &mut dyn RdmaTransport),
            host_ns.as_raw_fd(),
            &self.sysfs_root,
            attachment,
        ));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(self.detach_errors(attachment, errors))
        }
    }

    fn detach_errors(&self, a: &Attachment, errors: Vec<DetachError>) -> DetachErrors {
        DetachErrors {
            claim: a.claim.clone(),
            device: a.device.clone(),
            pci_address: a.pci_address,
            errors,
        }
    }
}

/// The sockets of one attach: rtnetlink in the host and in the pod, and
/// RDMA netlink in both (host, pod) when the device moves its RDMA device.
struct Sockets {
    host: RouteSocket,
    pod: RouteSocket,
    rdma: Option<(RdmaSocket, RdmaSocket)>,
}

fn is_not_a_netns(e: &NetnsError) -> bool {
    matches!(e, NetnsError::Enter { source, .. } if source.raw_os_error() == Some(libc::EINVAL))
}

fn fds(host: &File, pod: &File) -> NetnsFds {
    NetnsFds {
        host: host.as_raw_fd(),
        pod: pod.as_raw_fd(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_round_trips_through_json_for_the_state_store() {
        let a = Attachment {
            claim: "telco/fronthaul".into(),
            device: "pci-0000-3b-02-1".into(),
            pci_address: "0000:3b:02.1".parse().unwrap(),
            netns: "/var/run/netns/cni-1234".into(),
            if_name: "net1".into(),
            pod_index: 17,
            mac: "02:00:00:00:00:01".parse().unwrap(),
            addresses: vec![
                "192.0.2.10/24".parse().unwrap(),
                "2001:db8::a/64".parse().unwrap(),
            ],
            routes: vec![RouteSpec {
                destination: "0.0.0.0/0".parse().unwrap(),
                gateway: Some("192.0.2.1".parse().unwrap()),
            }],
            host: HostState {
                name: "ens1f0v3".into(),
                mtu: 1500,
                mac: "02:aa:00:00:00:03".parse().unwrap(),
                up: false,
            },
            rdma_device: Some("mlx5_3".into()),
        };
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains(r#""pciAddress":"0000:3b:02.1""#), "{json}");
        assert!(
            json.contains(r#""addresses":["192.0.2.10/24","2001:db8::a/64"]"#),
            "{json}"
        );
        assert!(json.contains(r#""rdmaDevice":"mlx5_3""#), "{json}");
        assert_eq!(serde_json::from_str::<Attachment>(&json).unwrap(), a);
    }

    #[test]
    fn a_record_from_before_rdma_moves_loads_without_an_rdma_device() {
        let old = r#"{"claim":"telco/fronthaul","device":"pci-0000-3b-02-1",
            "pciAddress":"0000:3b:02.1","netns":"/var/run/netns/cni-1","ifName":"net1",
            "podIndex":17,"mac":"02:00:00:00:00:01","addresses":[],"routes":[],
            "host":{"name":"ens1f0v3","mtu":1500,"mac":"02:aa:00:00:00:03","up":false}}"#;
        let a: Attachment = serde_json::from_str(old).unwrap();
        assert_eq!(a.rdma_device, None);
        assert!(!serde_json::to_string(&a).unwrap().contains("rdmaDevice"));
    }

    #[test]
    fn detach_errors_list_every_failed_step() {
        let errors = DetachErrors {
            claim: "telco/fronthaul".into(),
            device: "pci-0000-3b-02-1".into(),
            pci_address: "0000:3b:02.1".parse().unwrap(),
            errors: vec![
                DetachError::new("restoring MTU 1500", AttachCause::Missing("a".into())),
                DetachError::new(
                    "restoring MAC 02:00:00:00:00:01",
                    AttachCause::Missing("b".into()),
                ),
            ],
        };
        assert_eq!(
            errors.to_string(),
            "detaching device pci-0000-3b-02-1 (0000:3b:02.1) of claim telco/fronthaul: \
             restoring MTU 1500: a; restoring MAC 02:00:00:00:00:01: b"
        );
    }
}
