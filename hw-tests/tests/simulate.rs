//! The lab harness run as CI runs it: `hw-tests --simulate`.

use std::path::Path;
use std::process::Command;

#[test]
fn simulated_run_reports_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.md");
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_hw-tests"))
        .args(["--simulate", "--report"])
        .arg(&report)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&report).unwrap(), stdout);
    // Every case that ran touched only the simulation: none is a pass.
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
        "policy/vf-count",
        "policy/numvfs-resize",
    ] {
        assert!(
            stdout.contains(&format!("| `{case}` | simulated | ")),
            "{case} did not run simulated:\n{stdout}"
        );
    }
    assert!(!stdout.contains("| pass |"), "{stdout}");
    // mlx5 refuses the 802.1ad outer tag; the harness reports it, cleanly rolled back.
    assert!(
        stdout.contains("| `vf-settings/vlan-802.1ad` | simulated | simulated mlx5 PF over the netlink wire format: refused with EPROTONOSUPPORT"),
        "{stdout}"
    );
    for case in [
        "discovery/matches-lspci-ip",
        "traffic/ping-v4",
        "traffic/ping-v6",
        "rdma/exclusive-move",
        "rdma/ib_write_bw",
        "rdma/ib_send_lat",
    ] {
        assert!(
            stdout.contains(&format!("| `{case}` | needs hardware | ")),
            "{case}:\n{stdout}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(json["simulated"], true);
    assert_eq!(json["summary"]["pass"], 0);
    assert_eq!(json["summary"]["FAIL"], 0);
}

#[test]
fn the_sample_profiles_parse_and_need_hardware_here() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    for name in ["connectx6dx.toml", "e810.toml"] {
        let path = dir.join(name);
        let root = tempfile::tempdir().unwrap();
        // An empty sysfs root: a node without the profile's NICs.
        let out = Command::new(env!("CARGO_BIN_EXE_hw-tests"))
            .arg("--profile")
            .arg(&path)
            .arg("--sysfs-root")
            .arg(root.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("| needs hardware | PF "),
            "{name}: {stdout}"
        );
        assert!(!stdout.contains("| pass |"), "{name}: {stdout}");
    }
}

#[test]
fn real_mode_needs_a_pf() {
    let out = Command::new(env!("CARGO_BIN_EXE_hw-tests"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--profile FILE or --pf NAME is required")
    );
}
