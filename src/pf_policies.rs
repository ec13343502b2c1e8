//! PF policies at start-up: create the VFs the node config asks for
//! (`sriov_numvfs`), never under a VF that a claim of this boot holds.

use std::collections::{BTreeMap, BTreeSet};

use ipam::Ipam;
use sriov::PciAddress;
use sriov::bind::FsSysfsWriter;
use sriov::inventory::Role;
use sriov::policy::{self, NumVfsPlan, PfStatus};
use tracing::{error, info};

use crate::config::NodeConfig;
use crate::failpoints::failpoint;
use crate::state::boot;

/// Sets `sriov_numvfs` where a policy asks for a different count, never on
/// a PF with a VF prepared for a claim in this boot (that is logged as an
/// error and the PF left alone; a record from before a reboot holds no VF).
pub fn apply_pf_policies(config: &NodeConfig, ipam: &Ipam, boot_id: &str) {
    if config.pf_policies.is_empty() {
        return;
    }
    let prepared: BTreeMap<PciAddress, String> =
        match boot::claims_of_this_boot(ipam.database(), boot_id) {
            Ok(records) => records
                .into_iter()
                .flat_map(|r| {
                    let label = format!("{}/{}", r.namespace, r.name);
                    r.devices
                        .into_iter()
                        .map(move |d| (d.pci_address, label.clone()))
                })
                .collect(),
            Err(e) => {
                error!(error = %e, "cannot read prepared claims; not applying pfPolicies");
                return;
            }
        };
    let inventory = match sriov::scan(&config.sysfs_root) {
        Ok(i) => i,
        Err(e) => {
            error!(error = %e, "cannot read PFs; not applying pfPolicies");
            return;
        }
    };
    let mut writer = FsSysfsWriter::new(&config.sysfs_root);
    let pfs: BTreeSet<PciAddress> = inventory
        .functions
        .iter()
        .filter(|f| matches!(f.role, Role::Pf { .. }))
        .map(|f| f.address)
        .collect();
    for pf in pfs {
        let result = (|| {
            let status = PfStatus::read(&config.sysfs_root, pf)?;
            let Some(policy) = policy::policy_for(&config.pf_policies, &status)? else {
                return Ok(None);
            };
            let plan = policy::plan_num_vfs(policy, &status, &prepared)?;
            failpoint!("startup::num_vfs");
            policy::apply_num_vfs(&mut writer, &status, &plan)?;
            Ok::<_, policy::PolicyError>(Some(plan))
        })();
        match result {
            Ok(Some(NumVfsPlan::Resize { from, to, .. })) => {
                info!(%pf, from, to, "sriov_numvfs changed")
            }
            Ok(_) => {}
            Err(e) => error!(%pf, error = %e, "pfPolicies not applied"),
        }
    }
}
