//! Applying planned changes to a VF through its PF, with a write-ahead
//! record so that a crash at any point can be undone exactly.

use std::fmt;

use netlink_packet_route::RouteNetlinkMessage;
use serde::{Deserialize, Serialize};

use crate::netlink::{NetlinkError, RouteTransport, errno_name};

use super::message::{get_vfs_message, set_vf_message};
use super::plan::{Setting, VfChange, plan, restore_plan};
use super::settings::VfSettings;
use super::state::{VfState, vf_states};

/// A VF addressed the way the PF-side API addresses it: PF netdev + index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VfTarget {
    /// The PF's netdev name in the host namespace (e.g. `ens1f0`).
    pub pf: String,
    /// The VF index on that PF.
    pub vf: u32,
}

impl fmt::Display for VfTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VF {} of PF {}", self.vf, self.pf)
    }
}

/// What a claim's record stores about one VF's PF-side settings: the state
/// before we touched it and every change we started to apply.
///
/// The plan is recorded *before* its first change is sent, so after a crash
/// the list may name changes the kernel never saw; restoring those settings
/// to their saved values is harmless, forgetting one that was sent would not
/// be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfConfigRecord {
    /// Which VF.
    pub target: VfTarget,
    /// Its settings before the claim.
    pub saved: VfState,
    /// Changes applied (or being applied), in order.
    pub applied: Vec<VfChange>,
}

/// How the rollback after a refused setting went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollback {
    /// Nothing had been applied before the refused setting.
    NothingApplied,
    /// These settings were applied and have been restored.
    Restored(Vec<Setting>),
    /// Restoring failed; each entry says which setting and why.
    Failed(Vec<String>),
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rollback::NothingApplied => f.write_str("nothing had been applied"),
            Rollback::Restored(s) => {
                let names: Vec<String> = s.iter().map(|s| s.to_string()).collect();
                write!(f, "restored {}", names.join(", "))
            }
            Rollback::Failed(e) => write!(f, "ROLLBACK FAILED: {}", e.join("; ")),
        }
    }
}

/// Why configuring or restoring a VF failed.
#[derive(Debug, thiserror::Error)]
pub enum VfConfigError {
    /// The PF could not be read.
    #[error("reading the VF settings of PF {pf}: {source}")]
    Read {
        /// PF name.
        pf: String,
        /// The netlink failure.
        #[source]
        source: NetlinkError,
    },
    /// The PF does not report this VF (wrong index, no SR-IOV, VFs gone).
    #[error("{target}: the PF reports {count} VFs and none with index {}", .target.vf)]
    NoSuchVf {
        /// The VF asked for.
        target: VfTarget,
        /// How many VFs the PF reported.
        count: usize,
    },
    /// The kernel or driver refused one setting; earlier ones were rolled back.
    #[error("{target}: setting {setting} ({change}) failed with {}{}; {rollback}", errno_label(*.errno), kernel_text(source))]
    Refused {
        /// The VF.
        target: VfTarget,
        /// The refused setting.
        setting: Setting,
        /// The exact change that was refused.
        change: VfChange,
        /// The kernel's errno (`EOPNOTSUPP` = 95), when it sent one.
        errno: Option<i32>,
        /// What happened to the settings applied before it.
        rollback: Rollback,
        /// The underlying failure.
        #[source]
        source: Box<NetlinkError>,
    },
    /// The claim record could not be saved, so nothing more was sent.
    #[error("{target}: saving the claim record failed, stopped and {rollback}: {source}")]
    Persist {
        /// The VF.
        target: VfTarget,
        /// What happened to the settings applied so far.
        rollback: Rollback,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Restoring saved settings failed for some settings.
    #[error("{target}: restoring saved settings failed: {}", .failures.join("; "))]
    Restore {
        /// The VF.
        target: VfTarget,
        /// One entry per setting that could not be restored.
        failures: Vec<String>,
    },
}

fn errno_label(errno: Option<i32>) -> String {
    errno.map_or_else(|| "no errno".to_string(), errno_name)
}

fn kernel_text(source: &NetlinkError) -> String {
    match source {
        NetlinkError::Kernel {
            message: Some(m), ..
        } => format!(" ({m})"),
        _ => String::new(),
    }
}

fn send_change(
    t: &mut impl RouteTransport,
    target: &VfTarget,
    change: &VfChange,
) -> Result<(), NetlinkError> {
    let op = format!("setting {change} on {target}");
    t.request(&op, set_vf_message(&target.pf, target.vf, change), 0)
        .map(|_| ())
}

/// Reads the current PF-side settings of one VF.
pub fn read_vf_state(
    t: &mut impl RouteTransport,
    target: &VfTarget,
) -> Result<VfState, VfConfigError> {
    let op = format!("reading the VF list of PF {}", target.pf);
    let replies = t
        .request(&op, get_vfs_message(&target.pf), 0)
        .map_err(|source| VfConfigError::Read {
            pf: target.pf.clone(),
            source,
        })?;
    let mut vfs = Vec::new();
    for reply in &replies {
        if let RouteNetlinkMessage::NewLink(link) = reply {
            vfs.extend(vf_states(link));
        }
    }
    let count = vfs.len();
    vfs.into_iter()
        .find(|vf| vf.index == target.vf)
        .ok_or_else(|| VfConfigError::NoSuchVf {
            target: target.clone(),
            count,
        })
}

/// Undoes `applied` (restoring the saved values), collecting failures.
fn undo(t: &mut impl RouteTransport, record: &VfConfigRecord, applied: &[VfChange]) -> Rollback {
    let undo = restore_plan(&record.saved, applied);
    if undo.is_empty() {
        return Rollback::NothingApplied;
    }
    let mut failures = Vec::new();
    for change in &undo {
        if let Err(e) = send_change(t, &record.target, change) {
            failures.push(format!("{}: {e}", change.setting()));
        }
    }
    if failures.is_empty() {
        Rollback::Restored(undo.iter().map(VfChange::setting).collect())
    } else {
        Rollback::Failed(failures)
    }
}

/// Applies `changes` one message each, in order, on top of `record`.
///
/// The whole plan is appended to `record.applied` and `persist` is called
/// once before the first message goes out: one durable write per VF instead
/// of one per setting, and the stored record still covers everything the
/// kernel may have done (a crash leaves it naming changes never sent, whose
/// restore writes back the value the VF already has). On the first refusal
/// the changes this call sent are restored and the error names the VF, the
/// setting and the errno; the record then lists only what is still applied.
pub fn apply_changes<E>(
    t: &mut impl RouteTransport,
    record: &mut VfConfigRecord,
    changes: &[VfChange],
    persist: &mut impl FnMut(&VfConfigRecord) -> Result<(), E>,
) -> Result<(), VfConfigError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let first_new = record.applied.len();
    record.applied.extend_from_slice(changes);
    if let Err(e) = persist(record) {
        record.applied.truncate(first_new);
        return Err(VfConfigError::Persist {
            target: record.target.clone(),
            rollback: Rollback::NothingApplied,
            source: e.into(),
        });
    }
    for (i, change) in changes.iter().enumerate() {
        if let Err(source) = send_change(t, &record.target, change) {
            // The refused change and those after it were never sent.
            record.applied.truncate(first_new + i);
            let rollback = undo(t, record, &record.applied[first_new..]);
            if !matches!(rollback, Rollback::Failed(_)) {
                record.applied.truncate(first_new);
            }
            // Best effort: the stored list only over-approximates if this fails.
            let _ = persist(record);
            return Err(VfConfigError::Refused {
                target: record.target.clone(),
                setting: change.setting(),
                change: *change,
                errno: source.errno(),
                rollback,
                source: Box::new(source),
            });
        }
    }
    Ok(())
}

/// Reads the VF, saves its state, plans and applies `desired`.
///
/// `persist` stores the record in the claim's state (it is called once,
/// with the saved state and the whole plan, before anything changes, and
/// again after a refusal with what is still applied). Returns
/// the final record, which [`restore`] takes on release. `persist` may fail
/// with anything that converts into a boxed error (`io::Error`,
/// `anyhow::Error`, a `String`); nothing more is sent after a failed save.
pub fn configure<E>(
    t: &mut impl RouteTransport,
    target: &VfTarget,
    desired: &VfSettings,
    persist: &mut impl FnMut(&VfConfigRecord) -> Result<(), E>,
) -> Result<VfConfigRecord, VfConfigError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let saved = read_vf_state(t, target)?;
    let changes = plan(&saved, desired);
    let mut record = VfConfigRecord {
        target: target.clone(),
        saved,
        applied: Vec::new(),
    };
    apply_changes(t, &mut record, &changes, persist)?;
    Ok(record)
}

/// Puts back the saved value of every setting the record says we touched,
/// and nothing else. Tries every setting even when one fails; safe to
/// repeat (after a crash during release, say).
pub fn restore(t: &mut impl RouteTransport, record: &VfConfigRecord) -> Result<(), VfConfigError> {
    match undo(t, record, &record.applied) {
        Rollback::Failed(failures) => Err(VfConfigError::Restore {
            target: record.target.clone(),
            failures,
        }),
        Rollback::NothingApplied | Rollback::Restored(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::RecordingTransport;
    use crate::vf_config::settings::{LinkState, VfSettingsRequest};
    use netlink_packet_route::link::{
        LinkAttribute, LinkMessage, LinkVfInfo, VfInfo, VfInfoMac, VfInfoTrust,
    };
    use std::convert::Infallible;

    fn target() -> VfTarget {
        VfTarget {
            pf: "ens1f0".into(),
            vf: 3,
        }
    }

    /// A GETLINK answer for a PF with VFs 0..=3, all unconfigured.
    fn pf_reply() -> Vec<RouteNetlinkMessage> {
        let mut link = LinkMessage::default();
        link.attributes = vec![LinkAttribute::VfInfoList(
            (0..4)
                .map(|vf| {
                    LinkVfInfo(vec![
                        VfInfo::Mac(VfInfoMac::new(vf, &[0; 6])),
                        VfInfo::Trust(VfInfoTrust::new(vf, false)),
                    ])
                })
                .collect(),
        )];
        vec![RouteNetlinkMessage::NewLink(link)]
    }

    fn desired() -> VfSettings {
        VfSettings::new(VfSettingsRequest {
            mac: Some("02:00:00:00:00:03".parse().unwrap()),
            vlan: Some(100),
            trust: Some(true),
            link_state: Some(LinkState::Enable),
            ..Default::default()
        })
        .unwrap()
    }

    fn ops(t: &RecordingTransport) -> Vec<&str> {
        t.requests.iter().map(|r| r.op.as_str()).collect()
    }

    #[test]
    fn configure_reads_then_applies_one_message_per_setting() {
        let mut t = RecordingTransport::new();
        t.answer(pf_reply());
        let mut stored = Vec::new();
        let record = configure(&mut t, &target(), &desired(), &mut |r: &VfConfigRecord| {
            stored.push(r.clone());
            Ok::<_, Infallible>(())
        })
        .unwrap();
        assert_eq!(
            ops(&t),
            [
                "reading the VF list of PF ens1f0",
                "setting mac 02:00:00:00:00:03 on VF 3 of PF ens1f0",
                "setting vlan 100 qos 0 proto 802.1Q on VF 3 of PF ens1f0",
                "setting trust on on VF 3 of PF ens1f0",
                "setting state enable on VF 3 of PF ens1f0",
            ]
        );
        assert_eq!(record.applied.len(), 4);
        // Saved once, with the whole plan, before the first change.
        assert_eq!(stored, [record]);
    }

    #[test]
    fn refused_setting_names_vf_setting_errno_and_rolls_back() {
        let mut t = RecordingTransport::new();
        t.answer(pf_reply())
            .answer(vec![])
            .answer(vec![])
            .refuse(libc::EOPNOTSUPP);
        let mut last = None;
        let err = configure(&mut t, &target(), &desired(), &mut |r: &VfConfigRecord| {
            last = Some(r.clone());
            Ok::<_, Infallible>(())
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "VF 3 of PF ens1f0: setting trust (trust on) failed with EOPNOTSUPP; restored vlan, mac"
        );
        // The two applied settings were put back, newest first, with the saved values.
        assert_eq!(
            &ops(&t)[4..],
            [
                "setting vlan 0 qos 0 proto 802.1Q on VF 3 of PF ens1f0",
                "setting mac 00:00:00:00:00:00 on VF 3 of PF ens1f0",
            ]
        );
        assert!(
            last.unwrap().applied.is_empty(),
            "record still lists applied changes"
        );
    }

    #[test]
    fn a_vf_the_pf_does_not_have_is_reported_with_the_count() {
        let mut t = RecordingTransport::new();
        t.answer(pf_reply());
        let target = VfTarget {
            pf: "ens1f0".into(),
            vf: 9,
        };
        let err = read_vf_state(&mut t, &target).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VF 9 of PF ens1f0: the PF reports 4 VFs and none with index 9"
        );
    }

    #[test]
    fn restore_after_a_crash_between_two_settings() {
        // The plan was stored before the first change; the process then died
        // with two of the four changes sent. Only the stored JSON survives.
        let mut t = RecordingTransport::new();
        t.answer(pf_reply())
            .answer(vec![])
            .answer(vec![])
            .refuse(libc::EINTR);
        let mut stored: Vec<String> = Vec::new();
        let _ = configure(&mut t, &target(), &desired(), &mut |r: &VfConfigRecord| {
            stored.push(serde_json::to_string(r).unwrap());
            Ok::<_, Infallible>(())
        });
        let written_before_the_crash = &stored[0];

        let record: VfConfigRecord = serde_json::from_str(written_before_the_crash).unwrap();
        assert_eq!(record.applied.len(), 4, "the whole plan is on disk");
        let mut fresh = RecordingTransport::new();
        restore(&mut fresh, &record).unwrap();
        // Every planned setting goes back to its saved value, newest first;
        // the two never sent are rewritten with the value they still have.
        assert_eq!(
            ops(&fresh),
            [
                "setting state auto on VF 3 of PF ens1f0",
                "setting trust off on VF 3 of PF ens1f0",
                "setting vlan 0 qos 0 proto 802.1Q on VF 3 of PF ens1f0",
                "setting mac 00:00:00:00:00:00 on VF 3 of PF ens1f0",
            ]
        );
    }

    #[test]
    fn restore_tries_every_setting_and_reports_each_failure() {
        let record = VfConfigRecord {
            target: target(),
            saved: VfState::unconfigured(3),
            applied: vec![
                VfChange::Trust { enabled: true },
                VfChange::SpoofChk { enabled: false },
            ],
        };
        let mut t = RecordingTransport::new();
        t.refuse(libc::ENODEV);
        let err = restore(&mut t, &record).unwrap_err();
        assert_eq!(t.requests.len(), 2);
        let text = err.to_string();
        assert!(
            text.starts_with("VF 3 of PF ens1f0: restoring saved settings failed: spoofchk: "),
            "{text}"
        );
        assert!(text.contains("ENODEV"), "{text}");
    }

    /// Real-kernel checks; they need root (CAP_NET_ADMIN) to create a veth.
    mod kernel {
        use super::*;
        use crate::netlink::{RouteSocket, link};
        use crate::testing::have_root;

        /// A veth pair, made through our own rtnetlink client, deleted when
        /// dropped.
        struct Veth(String);

        impl Veth {
            fn new(tag: &str) -> Veth {
                let name = format!("sv{tag}{}", std::process::id() % 100_000);
                let msg = link::new_veth_message(&name, &format!("{name}p"));
                RouteSocket::new()
                    .unwrap()
                    .request("creating a test veth", msg, link::CREATE_EXCLUSIVE)
                    .unwrap();
                Veth(name)
            }
        }

        impl Drop for Veth {
            fn drop(&mut self) {
                if let Ok(mut s) = RouteSocket::new() {
                    let _ = s.request("deleting a test veth", link::del_link_message(&self.0), 0);
                }
            }
        }

        #[test]
        fn veth_refuses_a_vf_setting_and_the_error_names_vf_setting_and_errno() {
            if !have_root("veth_refuses_a_vf_setting") {
                return;
            }
            let veth = Veth::new("a");
            let mut socket = RouteSocket::new().unwrap();
            let mut record = VfConfigRecord {
                target: VfTarget {
                    pf: veth.0.clone(),
                    vf: 0,
                },
                saved: VfState::unconfigured(0),
                applied: Vec::new(),
            };
            let changes = [VfChange::Trust { enabled: true }];
            let err = apply_changes(
                &mut socket,
                &mut record,
                &changes,
                &mut |_: &VfConfigRecord| Ok::<_, Infallible>(()),
            )
            .unwrap_err();
            let text = err.to_string();
            // veth has no ndo_set_vf_trust: rtnetlink's do_setvfinfo answers
            // EOPNOTSUPP (checked with `ip link set <veth> vf 0 trust on`).
            assert!(
                text.starts_with(&format!(
                    "VF 0 of PF {}: setting trust (trust on) failed with EOPNOTSUPP",
                    veth.0
                )),
                "{text}"
            );
            assert!(text.ends_with("nothing had been applied"), "{text}");
            assert!(record.applied.is_empty());
        }

        #[test]
        fn reading_vfs_of_a_link_without_sriov_reports_zero_vfs() {
            if !have_root("reading_vfs_of_a_link_without_sriov") {
                return;
            }
            let veth = Veth::new("b");
            let mut socket = RouteSocket::new().unwrap();
            let target = VfTarget {
                pf: veth.0.clone(),
                vf: 0,
            };
            let err = read_vf_state(&mut socket, &target).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "VF 0 of PF {}: the PF reports 0 VFs and none with index 0",
                    veth.0
                )
            );
        }

        #[test]
        fn a_missing_pf_is_a_read_error_naming_it() {
            if !have_root("a_missing_pf_is_a_read_error") {
                return;
            }
            let mut socket = RouteSocket::new().unwrap();
            let target = VfTarget {
                pf: "nosuchpf0".into(),
                vf: 0,
            };
            let err = read_vf_state(&mut socket, &target).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("reading the VF settings of PF nosuchpf0: reading the VF list of PF nosuchpf0: the kernel answered ENODEV"), "{text}");
        }
    }
}
