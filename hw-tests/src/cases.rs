//! The lab's cases: each sets something on real hardware (or the simulated
//! NIC), reads it back, restores it and checks the restore.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use sriov::PciAddress;
use sriov::bind::{DriverBinder, SysfsWriter};
use sriov::netlink::RouteTransport;
use sriov::policy::{self, NumVfsPlan, PfPolicy, PfSelector, PfStatus};
use sriov::vf_config::{
    self, LinkState, MacAddress, VfConfigError, VfSettings, VfSettingsRequest, VfState, VfTarget,
    VlanProto,
};

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Set, read back, restored, read back again: all as expected.
    Pass,
    /// The driver refused the setting cleanly (errno named); nothing left changed.
    Unsupported(String),
    /// Something did not match or an unexpected error occurred.
    Fail(String),
    /// Not run, and why.
    Skipped(String),
    /// The case's prerequisite is hardware this run does not have (a
    /// simulated run, a missing NIC, tool or kernel mode), and what it is.
    NeedsHardware(String),
    /// Ran against the simulated NIC only: it checks the harness and our
    /// message round trip, never the hardware, so it is not a pass.
    Simulated(String),
    /// Passed, with the figures measured (a benchmark-like case).
    Measured(String),
}

impl Outcome {
    /// The result column: `pass`, `unsupported`, `FAIL`, `skipped`,
    /// `needs hardware`, `simulated`.
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Pass | Outcome::Measured(_) => "pass",
            Outcome::Unsupported(_) => "unsupported",
            Outcome::Fail(_) => "FAIL",
            Outcome::Skipped(_) => "skipped",
            Outcome::NeedsHardware(_) => "needs hardware",
            Outcome::Simulated(_) => "simulated",
        }
    }

    /// The reason column (empty for a plain pass).
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Pass => "",
            Outcome::Unsupported(r)
            | Outcome::Fail(r)
            | Outcome::Skipped(r)
            | Outcome::NeedsHardware(r)
            | Outcome::Simulated(r)
            | Outcome::Measured(r) => r,
        }
    }

    /// What a case that ran on the simulated NIC (`source`) reports
    /// instead: never a pass. A pass says what was `done`; a refusal the
    /// simulated driver copies from the real one is reported as simulated
    /// too; a failure stays a failure (it is the harness's or our code's).
    pub fn as_simulated(self, source: &str, done: &str) -> Outcome {
        match self {
            Outcome::Pass => Outcome::Simulated(format!("{source}: {done}")),
            Outcome::Unsupported(errno) => Outcome::Simulated(format!(
                "{source}: refused with {errno} as the real driver does, rolled back"
            )),
            other => other,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass => f.write_str("pass"),
            Outcome::Unsupported(e) => write!(f, "unsupported ({e})"),
            Outcome::Fail(e) => write!(f, "FAIL: {e}"),
            Outcome::Skipped(e) => write!(f, "skipped: {e}"),
            Outcome::NeedsHardware(e) => write!(f, "needs hardware: {e}"),
            Outcome::Simulated(e) => write!(f, "simulated: {e}"),
            Outcome::Measured(e) => write!(f, "pass: {e}"),
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// `vf-settings/vlan-qos`, `bind/vfio-roundtrip`, ….
    pub name: String,
    /// How it went.
    pub outcome: Outcome,
}

/// A VF setting case: what to ask for.
pub struct SettingCase {
    /// Case name after `vf-settings/`.
    pub name: &'static str,
    /// The request.
    pub request: VfSettingsRequest,
}

/// Every PF-side setting the driver supports, one case each.
pub fn setting_cases() -> Vec<SettingCase> {
    let base = VfSettingsRequest::default;
    vec![
        SettingCase {
            name: "mac",
            request: VfSettingsRequest {
                mac: Some(MacAddress([0x02, 0x00, 0x5e, 0x10, 0x20, 0x30])),
                ..base()
            },
        },
        SettingCase {
            name: "vlan",
            request: VfSettingsRequest {
                vlan: Some(100),
                ..base()
            },
        },
        SettingCase {
            name: "vlan-qos",
            request: VfSettingsRequest {
                vlan: Some(101),
                vlan_qos: Some(5),
                ..base()
            },
        },
        SettingCase {
            name: "vlan-802.1ad",
            request: VfSettingsRequest {
                vlan: Some(102),
                vlan_proto: Some(VlanProto::Dot1Ad),
                ..base()
            },
        },
        SettingCase {
            name: "spoofchk-off",
            request: VfSettingsRequest {
                spoof_chk: Some(false),
                ..base()
            },
        },
        SettingCase {
            name: "trust-on",
            request: VfSettingsRequest {
                trust: Some(true),
                ..base()
            },
        },
        SettingCase {
            name: "link-state-disable",
            request: VfSettingsRequest {
                link_state: Some(LinkState::Disable),
                ..base()
            },
        },
        SettingCase {
            name: "link-state-enable",
            request: VfSettingsRequest {
                link_state: Some(LinkState::Enable),
                ..base()
            },
        },
        SettingCase {
            name: "max-tx-rate",
            request: VfSettingsRequest {
                max_tx_rate_mbps: Some(1000),
                ..base()
            },
        },
        SettingCase {
            name: "min-max-tx-rate",
            request: VfSettingsRequest {
                min_tx_rate_mbps: Some(100),
                max_tx_rate_mbps: Some(1000),
                ..base()
            },
        },
    ]
}

/// Reads a VF's settings a second, independent way (on real hardware:
/// `ip -j link show`), to catch a bug shared by our encoder and parser.
pub trait IndependentReader {
    /// The VF's state, or why it could not be read.
    fn read(&mut self, target: &VfTarget) -> Result<VfState, String>;
}

/// No second reader (the simulated NIC).
pub struct NoIndependentReader;

impl IndependentReader for NoIndependentReader {
    fn read(&mut self, _: &VfTarget) -> Result<VfState, String> {
        Err("no independent reader".into())
    }
}

/// True if every field `desired` sets has that value in `state`.
fn has_settings(state: &VfState, desired: &VfSettings) -> Result<(), String> {
    let mut wrong = Vec::new();
    if let Some(mac) = desired.mac()
        && state.mac != mac
    {
        wrong.push(format!("mac is {}", state.mac));
    }
    if let Some(vlan) = desired.vlan()
        && state.vlan != vlan
    {
        wrong.push(format!("vlan is {}", state.vlan));
    }
    if let Some(on) = desired.spoof_chk()
        && state.spoof_chk != on
    {
        wrong.push(format!("spoofchk is {}", state.spoof_chk));
    }
    if let Some(on) = desired.trust()
        && state.trust != on
    {
        wrong.push(format!("trust is {}", state.trust));
    }
    if let Some(ls) = desired.link_state()
        && state.link_state != Some(ls)
    {
        wrong.push(format!("link state is {:?}", state.link_state));
    }
    if let Some(max) = desired.max_tx_rate_mbps()
        && state.max_tx_rate_mbps != max
    {
        wrong.push(format!("max rate is {}", state.max_tx_rate_mbps));
    }
    if let Some(min) = desired.min_tx_rate_mbps()
        && state.min_tx_rate_mbps != min
    {
        wrong.push(format!("min rate is {}", state.min_tx_rate_mbps));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join(", "))
    }
}

/// Sets one case on `target`, reads it back (both ways when an independent
/// reader works), restores, and checks the VF is as it was.
pub fn run_setting_case(
    t: &mut impl RouteTransport,
    reader: &mut impl IndependentReader,
    target: &VfTarget,
    case: &SettingCase,
) -> CaseResult {
    let name = format!("vf-settings/{}", case.name);
    let outcome = (|| {
        let desired = match VfSettings::new(case.request.clone()) {
            Ok(d) => d,
            Err(e) => return Outcome::Fail(format!("case is invalid: {e}")),
        };
        let before = match vf_config::read_vf_state(t, target) {
            Ok(s) => s,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        let mut stored = None;
        let record =
            match vf_config::configure(t, target, &desired, &mut |r: &vf_config::VfConfigRecord| {
                stored = Some(r.clone());
                Ok::<(), String>(())
            }) {
                Ok(r) => r,
                Err(VfConfigError::Refused {
                    errno, rollback, ..
                }) => {
                    let after = vf_config::read_vf_state(t, target);
                    if after.as_ref().ok() != Some(&before) {
                        return Outcome::Fail(format!(
                            "refused, and the rollback left the VF changed ({rollback})"
                        ));
                    }
                    let errno = errno.map_or("no errno".into(), sriov::netlink::errno_name);
                    return Outcome::Unsupported(errno);
                }
                Err(e) => return Outcome::Fail(e.to_string()),
            };
        // Check, then restore whatever the check found: the NIC is put back
        // on every path, a failed readback included.
        let checked = match vf_config::read_vf_state(t, target) {
            Err(e) => Err(format!("read back: {e}")),
            Ok(readback) => has_settings(&readback, &desired)
                .map_err(|e| format!("read back over netlink: {e}"))
                .and_then(|()| match reader.read(target) {
                    Ok(independent) => has_settings(&independent, &desired)
                        .map_err(|e| format!("read back with ip link: {e}")),
                    Err(_) => Ok(()),
                }),
        };
        let restored = vf_config::restore(t, &record);
        if let Err(e) = checked {
            return Outcome::Fail(match restored {
                Ok(()) => format!("{e} (restored)"),
                Err(r) => format!("{e}; restore failed too: {r}"),
            });
        }
        if let Err(e) = restored {
            return Outcome::Fail(format!("restore: {e}"));
        }
        match vf_config::read_vf_state(t, target) {
            Ok(after) if after == before => Outcome::Pass,
            Ok(after) => Outcome::Fail(format!("restore left {after:?}, was {before:?}")),
            Err(e) => Outcome::Fail(format!("read after restore: {e}")),
        }
    })();
    CaseResult { name, outcome }
}

/// Binds the VF to vfio-pci and back, checking the driver each time.
pub fn run_bind_case<W: SysfsWriter>(binder: &mut DriverBinder<W>, vf: PciAddress) -> CaseResult {
    let outcome = (|| {
        let before = match binder.current_driver(vf) {
            Ok(d) => d,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        let record = match binder.bind_to_vfio(vf) {
            Ok(r) => r,
            Err(
                e @ (sriov::bind::BindError::VfioNotLoaded { .. }
                | sriov::bind::BindError::NoIommuGroup { .. }),
            ) => {
                return Outcome::Skipped(e.to_string());
            }
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        let bound = binder.current_driver(vf);
        // What DPDK opens: the group's char device must be there while bound.
        let device_node = record.vfio_device.exists();
        let restored = binder.restore(&record);
        match bound {
            Ok(Some(d)) if d == "vfio-pci" => {}
            other => {
                return Outcome::Fail(format!(
                    "after bind the driver is {other:?} (restore: {restored:?})"
                ));
            }
        }
        if !device_node {
            return Outcome::Fail(format!(
                "bound to vfio-pci but {} does not exist (restore: {restored:?})",
                record.vfio_device.display()
            ));
        }
        if let Err(e) = restored {
            return Outcome::Fail(format!("restore: {e}"));
        }
        match binder.current_driver(vf) {
            Ok(d) if d == before => Outcome::Pass,
            other => Outcome::Fail(format!(
                "after restore the driver is {other:?}, was {before:?}"
            )),
        }
    })();
    CaseResult {
        name: "bind/vfio-roundtrip".into(),
        outcome,
    }
}

/// Resizes the PF's VFs (down by one, or up by one from 0) and back.
pub fn run_resize_case(
    writer: &mut impl SysfsWriter,
    sysfs_root: &Path,
    pf: PciAddress,
) -> CaseResult {
    let outcome = (|| {
        let status = match PfStatus::read(sysfs_root, pf) {
            Ok(s) => s,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        let original = status.num_vfs;
        let target = if original > 0 {
            original - 1
        } else {
            1.min(status.total_vfs)
        };
        for (step, want) in [("resize", target), ("restore", original)] {
            let status = match PfStatus::read(sysfs_root, pf) {
                Ok(s) => s,
                Err(e) => return Outcome::Fail(e.to_string()),
            };
            let policy = PfPolicy {
                selector: PfSelector::PciAddress(pf),
                num_vfs: want,
            };
            let plan = match policy::plan_num_vfs(&policy, &status, &BTreeMap::new()) {
                Ok(p) => p,
                Err(e) => return Outcome::Fail(format!("{step}: {e}")),
            };
            if let Err(e) = policy::apply_num_vfs(writer, &status, &plan) {
                return Outcome::Fail(format!("{step}: {e}"));
            }
            match PfStatus::read(sysfs_root, pf) {
                Ok(s) if s.num_vfs == want => {}
                Ok(s) => {
                    return Outcome::Fail(format!(
                        "{step}: sriov_numvfs is {} not {want}",
                        s.num_vfs
                    ));
                }
                Err(e) => return Outcome::Fail(e.to_string()),
            }
            if plan == NumVfsPlan::Unchanged {
                break;
            }
        }
        Outcome::Pass
    })();
    CaseResult {
        name: "policy/numvfs-resize".into(),
        outcome,
    }
}
