//! A NIC for `sriov-dra demo` and tests whose VF netdevs are real links
//! (veth/macvlan stand-ins) but whose PF side is simulated: a stand-in has
//! no PF to hold a VLAN or a rate, so VF settings go through the real
//! `sriov::vf_config` code and the netlink wire format into a
//! [`SimulatedPf`], which records them. Moving VFs home from a pod is the
//! real [`Attacher`]; there is no `vfio-pci` to bind to.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use sriov::PciAddress;
use sriov::bind::{BindError, BindRecord};
use sriov::testing::sim_pf::SimulatedPf;
use sriov::vf_config::{
    self, VfConfigError, VfConfigRecord, VfSettings, VfState, VfTarget, configure,
};

use crate::attach::{Attacher, Attachment};
use crate::claim::device_ops::{BindOpError, DeviceOps, Persist, PersistBind, pci_device_present};
use crate::inventory::NodeDevice;

/// Device operations on a node whose PF is a [`SimulatedPf`].
pub struct SimulatedNicOps {
    pf: Mutex<SimulatedPf>,
    sysfs_root: PathBuf,
    attacher: Attacher,
}

impl SimulatedNicOps {
    /// Devices under the fixture tree `sysfs_root`, whose PF is `pf`.
    pub fn new(sysfs_root: impl Into<PathBuf>, pf: SimulatedPf) -> Self {
        let sysfs_root = sysfs_root.into();
        SimulatedNicOps {
            pf: Mutex::new(pf),
            attacher: Attacher::new(&sysfs_root),
            sysfs_root,
        }
    }

    /// A VF's PF-side settings as the simulated PF reports them, read
    /// through the wire format as `ip link show <pf>` would.
    pub fn vf_state(&self, target: &VfTarget) -> Result<VfState, VfConfigError> {
        let mut pf = self.pf.lock().unwrap_or_else(PoisonError::into_inner);
        vf_config::read_vf_state(&mut *pf, target)
    }
}

impl DeviceOps for SimulatedNicOps {
    fn configure_vf(
        &self,
        target: &VfTarget,
        desired: &VfSettings,
        persist: &mut Persist<'_>,
    ) -> Result<VfConfigRecord, VfConfigError> {
        let mut pf = self.pf.lock().unwrap_or_else(PoisonError::into_inner);
        configure(&mut *pf, target, desired, &mut |r: &VfConfigRecord| {
            persist(r)
        })
    }

    fn restore_vf(&self, record: &VfConfigRecord) -> Result<(), VfConfigError> {
        let mut pf = self.pf.lock().unwrap_or_else(PoisonError::into_inner);
        vf_config::restore(&mut *pf, record)
    }

    fn bind_vfio(
        &self,
        device: &NodeDevice,
        _persist: &mut PersistBind<'_>,
    ) -> Result<BindRecord, BindOpError> {
        Err(BindError::VfioNotLoaded {
            address: device.function.address,
            path: "the simulated NIC has no vfio-pci".into(),
        }
        .into())
    }

    fn restore_driver(&self, _record: &BindRecord) -> Result<(), BindError> {
        // Nothing is ever bound (see bind_vfio), so nothing to give back.
        Ok(())
    }

    fn detach_from_pod(&self, attachment: &Attachment) -> Result<(), String> {
        self.attacher.detach(attachment).map_err(|e| e.to_string())
    }

    fn device_present(&self, address: PciAddress) -> bool {
        pci_device_present(&self.sysfs_root, address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sriov::testing::sim_pf::DriverProfile;
    use sriov::vf_config::VfSettingsRequest;

    #[test]
    fn a_vlan_is_recorded_by_the_simulated_pf_and_restored() {
        let ops = SimulatedNicOps::new(
            "/nonexistent",
            SimulatedPf::new("pf0", 2, DriverProfile::mlx5_legacy()),
        );
        let target = VfTarget {
            pf: "pf0".into(),
            vf: 0,
        };
        let desired = VfSettings::new(VfSettingsRequest {
            vlan: Some(100),
            ..Default::default()
        })
        .unwrap();
        let mut saved = Vec::new();
        let record = ops
            .configure_vf(&target, &desired, &mut |r| {
                saved.push(r.clone());
                Ok(())
            })
            .unwrap();
        assert!(!saved.is_empty(), "the record was saved before the change");
        assert_eq!(ops.vf_state(&target).unwrap().vlan.id, 100);
        ops.restore_vf(&record).unwrap();
        assert_eq!(ops.vf_state(&target).unwrap(), VfState::unconfigured(0));
        assert!(!ops.device_present("0000:3b:00.2".parse().unwrap()));
    }
}
