//! A stand-in for the NIC's PF side: records what prepare asks of the
//! devices and answers as a NIC whose VFs start unconfigured would.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use sriov::PciAddress;
use sriov::bind::{BindError, BindRecord, VFIO_PCI};
use sriov::vf_config::{
    VfChange, VfConfigError, VfConfigRecord, VfSettings, VfState, VfTarget, plan,
};

use crate::attach::Attachment;
use crate::claim::device_ops::{BindOpError, DeviceOps, Persist, PersistBind};
use crate::inventory::NodeDevice;

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
    /// Moved home from a pod.
    DetachFromPod(PciAddress),
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

    fn detach_from_pod(&self, attachment: &Attachment) -> Result<(), String> {
        self.record(DeviceCall::DetachFromPod(attachment.pci_address));
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
