//! Which failpoints each crash case arms on this node, and which it
//! cannot, with why: a pure function of the case and of what the node has
//! (a real PF for PF-side settings, vfio-pci for a DPDK claim, physical
//! netdevs). The list itself is the driver's (`sriov_dra::failpoints::ALL`),
//! so a failpoint added there is armed here without a change.

use sriov_dra::failpoints::{ALL, Failpoint, Needs};

/// The lab's crash cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashCase {
    /// The driver dies while preparing a claim (PF-side settings, vfio
    /// bind, addresses, CDI spec, record) or undoing it at unprepare.
    MidPrepare,
    /// The driver dies while moving a prepared VF into a pod's netns, or
    /// home again when the pod stops.
    MidAttach,
}

impl CrashCase {
    /// Both, in report order.
    pub const ALL: [CrashCase; 2] = [CrashCase::MidPrepare, CrashCase::MidAttach];

    /// The report line's name.
    pub fn name(self) -> &'static str {
        match self {
            CrashCase::MidPrepare => "crash/mid-prepare",
            CrashCase::MidAttach => "crash/mid-attach",
        }
    }

    /// Whether `failpoint` belongs to this case (by its workflow).
    fn covers(self, failpoint: &Failpoint) -> bool {
        let workflow = failpoint.name.split("::").next().unwrap_or_default();
        match self {
            CrashCase::MidPrepare => matches!(workflow, "prepare" | "cdi" | "unprepare"),
            CrashCase::MidAttach => matches!(workflow, "attach" | "detach"),
        }
    }
}

/// What this run's node gives the driver to work on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// A real PF: the claims carry PF-side settings (VLAN, trust).
    pub pf_netlink: bool,
    /// vfio-pci and an IOMMU group, and the profile allows DPDK: one
    /// claim asks for `mode: dpdk`.
    pub vfio: bool,
    /// The VF is a physical netdev (a stand-in is a macvlan).
    pub physical: bool,
}

impl Reach {
    /// What a simulated run has: stand-ins only.
    pub const STAND_INS: Reach = Reach {
        pf_netlink: false,
        vfio: false,
        physical: false,
    };

    /// `Err(why)` when the step a failpoint guards cannot run here.
    fn reaches(&self, failpoint: &Failpoint) -> Result<(), &'static str> {
        match failpoint.name {
            // The lifecycle stops the pod before it unprepares; these fire
            // only when the driver missed the stop (tests/crash does that).
            "unprepare::detach_from_pod" | "unprepare::pod_record_commit" => {
                return Err("only after a pod stop the driver missed; tests/crash covers it");
            }
            // A claim MAC would hide the VF from the check, which finds it
            // by its MAC in whichever namespace it is.
            "attach::mac" | "detach::mac" => return Err("the crash claims set no MAC"),
            _ => {}
        }
        match failpoint.needs {
            Needs::StandIns => Ok(()),
            Needs::PfNetlink if self.pf_netlink => Ok(()),
            Needs::PfNetlink => Err("PF-side VF settings need a real PF"),
            Needs::Vfio if self.vfio => Ok(()),
            Needs::Vfio => Err("a DPDK claim needs allow_dpdk, vfio-pci and an IOMMU group"),
            Needs::Rdma => Err("the crash claims move no RDMA device"),
            Needs::PhysicalNetdev if self.physical => Ok(()),
            Needs::PhysicalNetdev => Err("needs a physical netdev"),
        }
    }
}

/// One case's rounds on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The failpoints armed, one round each, in the driver's order.
    pub armed: Vec<&'static str>,
    /// The case's failpoints left out here, with why.
    pub left_out: Vec<(&'static str, &'static str)>,
    /// Rounds with a SIGKILL at a random moment of the case's steps.
    pub kills: u32,
}

/// The rounds of `case` on a node that has `reach`.
pub fn plan(case: CrashCase, reach: Reach, kills: u32) -> Plan {
    let mut armed = Vec::new();
    let mut left_out = Vec::new();
    for f in ALL.iter().filter(|f| case.covers(f)) {
        match reach.reaches(f) {
            Ok(()) => armed.push(f.name),
            Err(why) => left_out.push((f.name, why)),
        }
    }
    Plan {
        armed,
        left_out,
        kills,
    }
}

impl Plan {
    /// The left-out failpoints for the report: `a, b (why); c (why)`,
    /// failpoints with the same reason together.
    pub fn left_out_text(&self) -> String {
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for (name, why) in &self.left_out {
            match groups.iter_mut().find(|(w, _)| w == why) {
                Some((_, names)) => names.push(name),
                None => groups.push((why, vec![name])),
            }
        }
        groups
            .iter()
            .map(|(why, names)| format!("{} ({why})", names.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_arm_only_what_stand_ins_reach() {
        let p = plan(CrashCase::MidPrepare, Reach::STAND_INS, 2);
        assert_eq!(
            p.armed,
            [
                "prepare::address_commit",
                "prepare::cdi_write",
                "cdi::rename",
                "prepare::record_commit",
                "prepare::answer",
                "unprepare::cdi_remove",
                "unprepare::release_commit",
            ]
        );
        assert!(
            p.left_out
                .contains(&("prepare::vf_setting", "PF-side VF settings need a real PF"))
        );
        assert!(p.left_out_text().contains("prepare::record_plan, prepare::vfio_bind, unprepare::driver_restore (a DPDK claim needs allow_dpdk, vfio-pci and an IOMMU group)"), "{}", p.left_out_text());
        let a = plan(CrashCase::MidAttach, Reach::STAND_INS, 2);
        assert!(a.armed.contains(&"attach::netns_move") && a.armed.contains(&"detach::up"));
        assert!(!a.armed.iter().any(|n| n.starts_with("prepare")));
    }

    #[test]
    fn a_lab_node_with_dpdk_arms_the_pf_settings_their_undo_and_vfio() {
        let reach = Reach {
            pf_netlink: true,
            vfio: true,
            physical: true,
        };
        let p = plan(CrashCase::MidPrepare, reach, 5);
        for name in [
            "prepare::record_plan",
            "prepare::vf_setting",
            "prepare::vfio_bind",
            "unprepare::driver_restore",
            "unprepare::vf_restore",
        ] {
            assert!(p.armed.contains(&name), "{name}: {p:?}");
        }
        let a = plan(CrashCase::MidAttach, reach, 5);
        assert!(a.armed.contains(&"detach::rename"), "{a:?}");
        assert_eq!(
            a.left_out_text(),
            "attach::rdma_move, detach::rdma_move (the crash claims move no RDMA device); attach::mac, detach::mac (the crash claims set no MAC)"
        );
    }

    #[test]
    fn every_prepare_attach_and_undo_failpoint_belongs_to_one_case() {
        for f in ALL {
            let cases = CrashCase::ALL.iter().filter(|c| c.covers(f)).count();
            let expected =
                usize::from(!f.name.starts_with("startup::") && !f.name.starts_with("recover::"));
            assert_eq!(cases, expected, "{}", f.name);
        }
    }
}
