//! The narrow interface through which prepare changes devices: PF-side VF
//! settings and the vfio-pci binding. [`SystemDeviceOps`] drives the kernel
//! through the `sriov` crate; [`RecordingDeviceOps`] records the calls and
//! answers like a cooperative NIC, for tests and benchmarks (PF-side
//! netlink cannot run without the hardware).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use sriov::PciAddress;
use sriov::bind::{BindError, BindRecord, DriverBinder, FsSysfsWriter, VFIO_PCI};
use sriov::netlink::RouteSocket;
use sriov::vf_config::{
    VfChange, VfConfigError, VfConfigRecord, VfSettings, VfState, VfTarget, configure, plan,
    restore,
};

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

    /// Whether the PCI function still exists. A VF destroyed since prepare
    /// (its PF reset, `sriov_numvfs` changed) took its settings and binding
    /// with it: there is nothing left to restore, and unprepare must not
    /// fail forever trying.
    fn device_present(&self, address: PciAddress) -> bool;
}

/// The real thing: rtnetlink on the PF and sysfs driver binding.
pub struct SystemDeviceOps {
    sysfs_root: PathBuf,
    dev_root: PathBuf,
    socket: Mutex<Option<RouteSocket>>,
}

impl SystemDeviceOps {
    /// Devices under `sysfs_root` (`/sys`) with device nodes under
    /// `dev_root` (`/dev`).
    pub fn new(sysfs_root: impl Into<PathBuf>, dev_root: impl Into<PathBuf>) -> Self {
        SystemDeviceOps {
            sysfs_root: sysfs_root.into(),
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

    fn device_present(&self, address: PciAddress) -> bool {
        self.sysfs_root
            .join("bus/pci/devices")
            .join(address.to_string())
            .exists()
    }
}

/// One call a [`RecordingDeviceOps`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCall {
    /// VF settings applied (the planned changes).
    ConfigureVf(VfTarget, Vec<VfChange>),
    /// VF settings restored.
    RestoreVf(VfTarget),
    /// Bound to vfio-pci.
    BindVfio(PciAddress),
    /// Driver given back.
    RestoreDriver(PciAddress),
}

/// Records calls and answers as a NIC whose VFs start unconfigured would;
/// can be told to refuse a device, to exercise rollback.
#[derive(Debug, Default)]
pub struct RecordingDeviceOps {
    calls: Mutex<Vec<DeviceCall>>,
    refuse_vf: Mutex<HashSet<VfTarget>>,
    refuse_bind: Mutex<HashSet<PciAddress>>,
    refuse_restore: Mutex<bool>,
    removed: Mutex<HashSet<PciAddress>>,
}

impl RecordingDeviceOps {
    /// A cooperative NIC.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<DeviceCall> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes configuring this VF fail (as a PF that no longer has it).
    pub fn refuse_vf(&self, target: VfTarget) {
        self.refuse_vf
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target);
    }

    /// Makes binding this device fail (as when vfio-pci is not loaded).
    pub fn refuse_bind(&self, address: PciAddress) {
        self.refuse_bind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(address);
    }

    /// Makes every VF restore fail (or succeed again), as a PF whose
    /// driver was unloaded would.
    pub fn refuse_restores(&self, refuse: bool) {
        *self
            .refuse_restore
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = refuse;
    }

    /// Makes the device gone, as after its PF destroyed its VFs.
    pub fn remove_device(&self, address: PciAddress) {
        self.removed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(address);
    }

    fn record(&self, call: DeviceCall) {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(call);
    }
}

impl DeviceOps for RecordingDeviceOps {
    fn configure_vf(
        &self,
        target: &VfTarget,
        desired: &VfSettings,
        persist: &mut Persist<'_>,
    ) -> Result<VfConfigRecord, VfConfigError> {
        let refused = self
            .refuse_vf
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(target);
        if refused {
            return Err(VfConfigError::NoSuchVf {
                target: target.clone(),
                count: 0,
            });
        }
        let saved = VfState::unconfigured(target.vf);
        let changes = plan(&saved, desired);
        // Like the real apply: the whole plan is saved once, before any change.
        let record = VfConfigRecord {
            target: target.clone(),
            saved,
            applied: changes.clone(),
        };
        persist(&record).map_err(|e| VfConfigError::Persist {
            target: record.target.clone(),
            rollback: sriov::vf_config::Rollback::NothingApplied,
            source: Box::new(e),
        })?;
        self.record(DeviceCall::ConfigureVf(target.clone(), changes));
        Ok(record)
    }

    fn restore_vf(&self, record: &VfConfigRecord) -> Result<(), VfConfigError> {
        if *self
            .refuse_restore
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            return Err(VfConfigError::Restore {
                target: record.target.clone(),
                failures: vec!["vlan: EIO".into()],
            });
        }
        self.record(DeviceCall::RestoreVf(record.target.clone()));
        Ok(())
    }

    fn bind_vfio(
        &self,
        device: &NodeDevice,
        persist: &mut PersistBind<'_>,
    ) -> Result<BindRecord, BindOpError> {
        let address = device.function.address;
        let refused = self
            .refuse_bind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&address);
        if refused {
            return Err(BindError::VfioNotLoaded {
                address,
                path: "bus/pci/drivers/vfio-pci".into(),
            }
            .into());
        }
        let Some(group) = device.function.iommu_group else {
            return Err(BindError::NoIommuGroup {
                address,
                path: format!("bus/pci/devices/{address}/iommu_group").into(),
            }
            .into());
        };
        let record = BindRecord {
            address,
            changed: device.function.driver.as_deref() != Some(VFIO_PCI),
            original_driver: device.function.driver.clone(),
            original_override: None,
            netdevs: device
                .function
                .netdev
                .iter()
                .map(|n| n.name.clone())
                .collect(),
            iommu_group: group,
            no_iommu: false,
            vfio_device: format!("/dev/vfio/{group}").into(),
        };
        // Like the real binder: the plan is saved before the switch.
        persist(&record)?;
        self.record(DeviceCall::BindVfio(address));
        Ok(record)
    }

    fn restore_driver(&self, record: &BindRecord) -> Result<(), BindError> {
        self.record(DeviceCall::RestoreDriver(record.address));
        Ok(())
    }

    fn device_present(&self, address: PciAddress) -> bool {
        !self
            .removed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&address)
    }
}
