//! The lab harness run as CI runs it: `hw-tests --simulate`.

use std::process::Command;

#[test]
fn simulated_run_reports_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.md");
    let out = Command::new(env!("CARGO_BIN_EXE_hw-tests"))
        .args(["--simulate", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&report).unwrap(), stdout);
    for case in [
        "vf-settings/mac",
        "vf-settings/vlan",
        "vf-settings/vlan-qos",
        "vf-settings/spoofchk-off",
        "vf-settings/trust-on",
        "vf-settings/link-state-disable",
        "vf-settings/link-state-enable",
        "vf-settings/max-tx-rate",
        "vf-settings/min-max-tx-rate",
        "bind/vfio-roundtrip",
        "policy/numvfs-resize",
    ] {
        assert!(
            stdout.contains(&format!("| `{case}` | pass |")),
            "{case} did not pass:\n{stdout}"
        );
    }
    // mlx5 refuses the 802.1ad outer tag; the harness reports it, cleanly rolled back.
    assert!(
        stdout.contains("| `vf-settings/vlan-802.1ad` | unsupported (EPROTONOSUPPORT) |"),
        "{stdout}"
    );
}

#[test]
fn real_mode_needs_a_pf() {
    let out = Command::new(env!("CARGO_BIN_EXE_hw-tests"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pf is required"));
}
