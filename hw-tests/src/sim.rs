//! The simulated PF the lab's cases run against in CI. It lives in
//! `sriov::testing` (the demo uses it too); these tests run the lab's
//! cases through it.

pub use sriov::testing::sim_pf::{DriverProfile, SimulatedPf};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{NoIndependentReader, Outcome, run_setting_case, setting_cases};
    use sriov::vf_config::VfTarget;
    use sriov::vf_config::{Setting, VfState};

    fn target() -> VfTarget {
        VfTarget {
            pf: "ens1f0".into(),
            vf: 2,
        }
    }

    #[test]
    fn a_refused_setting_is_unsupported_and_leaves_the_vf_as_it_was() {
        let profile = DriverProfile {
            refuses: vec![(Setting::Trust, libc::EOPNOTSUPP)],
            no_qinq: true,
        };
        let mut pf = SimulatedPf::new("ens1f0", 4, profile);
        let before = pf.vfs().to_vec();
        let cases = setting_cases();
        let trust = cases.iter().find(|c| c.name == "trust-on").unwrap();
        let r = run_setting_case(&mut pf, &mut NoIndependentReader, &target(), trust);
        assert_eq!(r.outcome, Outcome::Unsupported("EOPNOTSUPP".into()));
        assert_eq!(pf.vfs(), &before[..]);
    }

    #[test]
    fn every_request_crossed_the_wire_format() {
        let mut pf = SimulatedPf::new("ens1f0", 4, DriverProfile::mlx5_legacy());
        for case in setting_cases() {
            run_setting_case(&mut pf, &mut NoIndependentReader, &target(), &case);
        }
        assert!(pf.wire_log.len() > 40, "{} requests", pf.wire_log.len());
        // RTM_GETLINK = 18, RTM_SETLINK = 19 at bytes 4..6 of each header.
        for bytes in &pf.wire_log {
            let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
            assert!(kind == 18 || kind == 19, "type {kind}");
        }
        assert_eq!(
            pf.vfs()[2],
            VfState::unconfigured(2),
            "every case restored the VF"
        );
    }
}
