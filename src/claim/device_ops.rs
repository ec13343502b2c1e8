//! The narrow interface through which prepare changes devices: PF-side VF
//! settings and the vfio-pci binding. [`SystemDeviceOps`] drives the kernel
//! through the `sriov` crate; tests and benchmarks use
//! `testing::device_ops::RecordingDeviceOps`, which records the calls and
//! answers like a cooperative NIC (PF-side netlink cannot run without the
//! hardware).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use sriov::PciAddress;
use sriov::bind::{BindError, BindRecord, DriverBinder, FsSysfsWriter};
use sriov::netlink::RouteSocket;
use sriov::vf_config::{VfConfigError, VfConfigRecord, VfSettings, VfTarget, configure, restore};

use crate::attach::{Attacher, Attachment};
use crate::inventory::NodeDevice;
use crate::state::StateError;

/// Saves a VF's record before each change is sent (write-ahead).
pub type Persist<'a> = dyn FnMut(&VfConfigRecord) -> Result<(), StateError> + 'a;

/// Saves a binding's planned record before the driver is switched.
pub type PersistBind<'a> = dyn FnMut(&BindRecord) -> Result<(), StateError> + 'a;

/// Why binding to vfio-pci failed.
#[derive(Debug, thiserror::Error)]
pub enum BindOpError {
    /// The kernel or sysfs refused.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The planned record could not be saved; nothing was changed.
    #[error("saving the planned binding: {0}")]
    Persist(#[from] StateError),
}

/// What prepare and unprepare may do to a device. Blocking; called from
/// tokio's blocking pool.
pub trait DeviceOps: Send + Sync {
    /// Saves the VF's PF-side state, then applies `desired`, calling
    /// `persist` once, with the saved state and the whole plan, before anything changes.
    fn configure_vf(
        &self,
        target: &VfTarget,
        desired: &VfSettings,
        persist: &mut Persist<'_>,
    ) -> Result<VfConfigRecord, VfConfigError>;

    /// Puts back what `record` changed.
    fn restore_vf(&self, record: &VfConfigRecord) -> Result<(), VfConfigError>;

    /// Binds the device to vfio-pci, calling `persist` with the planned
    /// record before the driver is switched (write-ahead, like the VF
    /// settings), so a crash mid-switch leaves a record release can undo.
    fn bind_vfio(
        &self,
        device: &NodeDevice,
        persist: &mut PersistBind<'_>,
    ) -> Result<BindRecord, BindOpError>;

    /// Gives the device back to its original driver.
    fn restore_driver(&self, record: &BindRecord) -> Result<(), BindError>;

    /// Moves a VF that is still recorded in a pod back to the host (the
    /// pod's Stop was missed: the kubelet unprepares only after the pod's
    /// sandbox is gone). Keeps going past failures and reports them all.
    fn detach_from_pod(&self, attachment: &Attachment) -> Result<(), String>;

    /// Whether the PCI function still exists. A VF destroyed since prepare
    /// (its PF reset, `sriov_numvfs` changed) took its settings and binding
    /// with it: there is nothing left to restore, and unprepare must not
    /// fail forever trying.
    fn device_present(&self, address: PciAddress) -> bool;
}

/// Whether the PCI function `address` still exists under `sysfs_root`:
/// [`DeviceOps::device_present`] of every implementation that reads sysfs
/// (the real one and the simulated NIC), so both judge a vanished VF alike.
pub fn pci_device_present(sysfs_root: &Path, address: PciAddress) -> bool {
    sysfs_root
        .join("bus/pci/devices")
        .join(address.to_string())
        .exists()
}

/// The real thing: rtnetlink on the PF and sysfs driver binding.
pub struct SystemDeviceOps {
    sysfs_root: PathBuf,
    dev_root: PathBuf,
    socket: Mutex<Option<RouteSocket>>,
    attacher: Attacher,
}

impl SystemDeviceOps {
    /// Devices under `sysfs_root` (`/sys`) with device nodes under
    /// `dev_root` (`/dev`).
    pub fn new(sysfs_root: impl Into<PathBuf>, dev_root: impl Into<PathBuf>) -> Self {
        let sysfs_root = sysfs_root.into();
        SystemDeviceOps {
            attacher: Attacher::new(&sysfs_root),
            sysfs_root,
            dev_root: dev_root.into(),
            socket: Mutex::new(None),
        }
    }

    fn binder(&self) -> DriverBinder<FsSysfsWriter> {
        DriverBinder::new(
            &self.sysfs_root,
            &self.dev_root,
            FsSysfsWriter::new(&self.sysfs_root),
        )
    }

    /// Runs `f` on the (lazily opened, then reused) rtnetlink socket.
    fn with_socket<T>(
        &self,
        pf: &str,
        f: impl FnOnce(&mut RouteSocket) -> Result<T, VfConfigError>,
    ) -> Result<T, VfConfigError> {
        let mut slot = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(socket) = slot.as_mut() {
            return f(socket);
        }
        let socket = RouteSocket::new().map_err(|source| VfConfigError::Read {
            pf: pf.to_string(),
            source,
        })?;
        f(slot.insert(socket))
    }
}

impl DeviceOps for SystemDeviceOps {
    fn configure_vf(
        &self,
        target: &VfTarget,
        desired: &VfSettings,
        persist: &mut Persist<'_>,
    ) -> Result<VfConfigRecord, VfConfigError> {
        self.with_socket(&target.pf, |socket| {
            configure(socket, target, desired, &mut |r: &VfConfigRecord| {
                persist(r)
            })
        })
    }

    fn restore_vf(&self, record: &VfConfigRecord) -> Result<(), VfConfigError> {
        self.with_socket(&record.target.pf, |socket| restore(socket, record))
    }

    fn bind_vfio(
        &self,
        device: &NodeDevice,
        persist: &mut PersistBind<'_>,
    ) -> Result<BindRecord, BindOpError> {
        let mut binder = self.binder();
        let planned = binder.plan_vfio(device.function.address)?;
        persist(&planned)?;
        Ok(binder.apply_vfio(planned)?)
    }

    fn restore_driver(&self, record: &BindRecord) -> Result<(), BindError> {
        self.binder().restore(record)
    }

    fn detach_from_pod(&self, attachment: &Attachment) -> Result<(), String> {
        self.attacher.detach(attachment).map_err(|e| e.to_string())
    }

    fn device_present(&self, address: PciAddress) -> bool {
        pci_device_present(&self.sysfs_root, address)
    }
}
