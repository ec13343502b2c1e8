//! Pure planning: which settings to write to reach the desired state, and
//! which to write to go back to the saved one.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::mac::MacAddress;
use super::settings::{LinkState, VfSettings, Vlan};
use super::state::VfState;

/// One PF-side setting, the unit of apply, rollback and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Setting {
    /// `IFLA_VF_MAC`.
    Mac,
    /// `IFLA_VF_VLAN` / `IFLA_VF_VLAN_LIST`.
    Vlan,
    /// `IFLA_VF_RATE`.
    TxRate,
    /// `IFLA_VF_SPOOFCHK`.
    SpoofChk,
    /// `IFLA_VF_TRUST`.
    Trust,
    /// `IFLA_VF_LINK_STATE`.
    LinkState,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Setting::Mac => "mac",
            Setting::Vlan => "vlan",
            Setting::TxRate => "tx rate",
            Setting::SpoofChk => "spoofchk",
            Setting::Trust => "trust",
            Setting::LinkState => "link state",
        })
    }
}

/// One write to one VF setting; serialisable so the claim record can list
/// what was applied and a restarted driver can undo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "setting", rename_all = "camelCase")]
pub enum VfChange {
    /// Set the administrative MAC.
    Mac {
        /// New address (zero clears it on drivers that allow that).
        mac: MacAddress,
    },
    /// Set VLAN id, QoS and protocol.
    Vlan {
        /// New VLAN.
        vlan: Vlan,
    },
    /// Set both TX rate limits (the kernel takes them as a pair).
    TxRate {
        /// Minimum in Mbps.
        min_mbps: u32,
        /// Maximum in Mbps, 0 = unlimited.
        max_mbps: u32,
    },
    /// Spoof checking on or off.
    SpoofChk {
        /// On?
        enabled: bool,
    },
    /// Trusted mode on or off.
    Trust {
        /// On?
        enabled: bool,
    },
    /// Link state.
    LinkState {
        /// New state.
        state: LinkState,
    },
}

impl VfChange {
    /// Which setting this change writes.
    pub fn setting(&self) -> Setting {
        match self {
            VfChange::Mac { .. } => Setting::Mac,
            VfChange::Vlan { .. } => Setting::Vlan,
            VfChange::TxRate { .. } => Setting::TxRate,
            VfChange::SpoofChk { .. } => Setting::SpoofChk,
            VfChange::Trust { .. } => Setting::Trust,
            VfChange::LinkState { .. } => Setting::LinkState,
        }
    }
}

impl fmt::Display for VfChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        match self {
            VfChange::Mac { mac } => write!(f, "mac {mac}"),
            VfChange::Vlan { vlan } => write!(f, "{vlan}"),
            VfChange::TxRate { min_mbps, max_mbps } => {
                write!(f, "min_tx_rate {min_mbps} max_tx_rate {max_mbps}")
            }
            VfChange::SpoofChk { enabled } => write!(f, "spoofchk {}", on(*enabled)),
            VfChange::Trust { enabled } => write!(f, "trust {}", on(*enabled)),
            VfChange::LinkState { state } => write!(f, "state {state}"),
        }
    }
}

fn same_vlan(a: &Vlan, b: &Vlan) -> bool {
    // Without a VLAN the protocol means nothing; drivers report either.
    a.id == b.id && a.qos == b.qos && (a.id == 0 || a.proto == b.proto)
}

/// The changes that take `current` to `desired`, one per setting that
/// differs, in the order they are applied: identity (MAC, VLAN) and rates
/// first, then the policy bits, the link state last so the VF's link comes up
/// only once it is configured.
pub fn plan(current: &VfState, desired: &VfSettings) -> Vec<VfChange> {
    let mut out = Vec::new();
    if let Some(mac) = desired.mac().filter(|m| *m != current.mac) {
        out.push(VfChange::Mac { mac });
    }
    if let Some(vlan) = desired.vlan().filter(|v| !same_vlan(v, &current.vlan)) {
        out.push(VfChange::Vlan { vlan });
    }
    if desired.min_tx_rate_mbps().is_some() || desired.max_tx_rate_mbps().is_some() {
        let min_mbps = desired
            .min_tx_rate_mbps()
            .unwrap_or(current.min_tx_rate_mbps);
        let max_mbps = desired
            .max_tx_rate_mbps()
            .unwrap_or(current.max_tx_rate_mbps);
        if (min_mbps, max_mbps) != (current.min_tx_rate_mbps, current.max_tx_rate_mbps) {
            out.push(VfChange::TxRate { min_mbps, max_mbps });
        }
    }
    if let Some(enabled) = desired.spoof_chk().filter(|s| *s != current.spoof_chk) {
        out.push(VfChange::SpoofChk { enabled });
    }
    if let Some(enabled) = desired.trust().filter(|t| *t != current.trust) {
        out.push(VfChange::Trust { enabled });
    }
    if let Some(state) = desired
        .link_state()
        .filter(|s| Some(*s) != current.link_state)
    {
        out.push(VfChange::LinkState { state });
    }
    out
}

/// The changes that undo `applied`, restoring each touched setting to its
/// value in `saved` and leaving every other setting alone. Undone in
/// reverse order of application; a setting written twice is restored once.
/// A link state the kernel reported in a form we do not know cannot be
/// written back and is skipped.
pub fn restore_plan(saved: &VfState, applied: &[VfChange]) -> Vec<VfChange> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for change in applied.iter().rev() {
        let setting = change.setting();
        if seen.contains(&setting) {
            continue;
        }
        seen.push(setting);
        let undo = match setting {
            Setting::Mac => VfChange::Mac { mac: saved.mac },
            Setting::Vlan => VfChange::Vlan { vlan: saved.vlan },
            Setting::TxRate => VfChange::TxRate {
                min_mbps: saved.min_tx_rate_mbps,
                max_mbps: saved.max_tx_rate_mbps,
            },
            Setting::SpoofChk => VfChange::SpoofChk {
                enabled: saved.spoof_chk,
            },
            Setting::Trust => VfChange::Trust {
                enabled: saved.trust,
            },
            Setting::LinkState => match saved.link_state {
                Some(state) => VfChange::LinkState { state },
                None => continue,
            },
        };
        out.push(undo);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vf_config::settings::{VfSettingsRequest, VlanProto};

    fn settings(req: VfSettingsRequest) -> VfSettings {
        VfSettings::new(req).unwrap()
    }

    #[test]
    fn plans_only_what_differs_in_apply_order() {
        let current = VfState::unconfigured(3);
        let desired = settings(VfSettingsRequest {
            link_state: Some(LinkState::Enable),
            trust: Some(true),
            spoof_chk: Some(true), // already on: no change
            vlan: Some(100),
            mac: Some("02:00:00:00:00:03".parse().unwrap()),
            max_tx_rate_mbps: Some(2000),
            ..Default::default()
        });
        assert_eq!(
            plan(&current, &desired),
            vec![
                VfChange::Mac {
                    mac: "02:00:00:00:00:03".parse().unwrap()
                },
                VfChange::Vlan {
                    vlan: Vlan {
                        id: 100,
                        qos: 0,
                        proto: VlanProto::Dot1Q
                    }
                },
                VfChange::TxRate {
                    min_mbps: 0,
                    max_mbps: 2000
                },
                VfChange::Trust { enabled: true },
                VfChange::LinkState {
                    state: LinkState::Enable
                },
            ]
        );
    }

    #[test]
    fn nothing_to_do_when_already_configured() {
        let mut current = VfState::unconfigured(0);
        current.vlan = Vlan {
            id: 10,
            qos: 0,
            proto: VlanProto::Dot1Q,
        };
        let desired = settings(VfSettingsRequest {
            vlan: Some(10),
            spoof_chk: Some(true),
            ..Default::default()
        });
        assert!(plan(&current, &desired).is_empty());
    }

    #[test]
    fn a_partial_rate_keeps_the_other_limit() {
        let mut current = VfState::unconfigured(0);
        current.min_tx_rate_mbps = 100;
        let desired = settings(VfSettingsRequest {
            max_tx_rate_mbps: Some(900),
            ..Default::default()
        });
        assert_eq!(
            plan(&current, &desired),
            vec![VfChange::TxRate {
                min_mbps: 100,
                max_mbps: 900
            }]
        );
    }

    #[test]
    fn restore_touches_only_applied_settings_in_reverse() {
        let mut saved = VfState::unconfigured(2);
        saved.mac = "02:00:00:00:00:aa".parse().unwrap();
        saved.max_tx_rate_mbps = 500; // not applied below: must not be restored
        let applied = [
            VfChange::Mac {
                mac: "02:00:00:00:00:bb".parse().unwrap(),
            },
            VfChange::Trust { enabled: true },
        ];
        assert_eq!(
            restore_plan(&saved, &applied),
            vec![
                VfChange::Trust { enabled: false },
                VfChange::Mac {
                    mac: "02:00:00:00:00:aa".parse().unwrap()
                },
            ]
        );
    }

    #[test]
    fn plan_then_restore_is_the_identity_on_state() {
        let saved = VfState::unconfigured(1);
        let desired = settings(VfSettingsRequest {
            vlan: Some(7),
            vlan_qos: Some(2),
            spoof_chk: Some(false),
            link_state: Some(LinkState::Disable),
            ..Default::default()
        });
        let changes = plan(&saved, &desired);
        let mut state = saved.clone();
        for c in changes.iter().chain(restore_plan(&saved, &changes).iter()) {
            match *c {
                VfChange::Mac { mac } => state.mac = mac,
                VfChange::Vlan { vlan } => state.vlan = vlan,
                VfChange::TxRate { min_mbps, max_mbps } => {
                    state.min_tx_rate_mbps = min_mbps;
                    state.max_tx_rate_mbps = max_mbps;
                }
                VfChange::SpoofChk { enabled } => state.spoof_chk = enabled,
                VfChange::Trust { enabled } => state.trust = enabled,
                VfChange::LinkState { state: s } => state.link_state = Some(s),
            }
        }
        assert_eq!(state, saved);
    }

    #[test]
    fn changes_serialise_with_a_setting_tag() {
        let change = VfChange::TxRate {
            min_mbps: 1,
            max_mbps: 2,
        };
        let json = serde_json::to_string(&change).unwrap();
        assert_eq!(json, r#"{"setting":"txRate","min_mbps":1,"max_mbps":2}"#);
        assert_eq!(serde_json::from_str::<VfChange>(&json).unwrap(), change);
    }
}
