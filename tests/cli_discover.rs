//! The `discover` command as an operator runs it: on this host, on
//! fixtures, and with bad input.

use std::collections::BTreeSet;
use std::process::Command;

fn sriov_dra(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sriov-dra"))
        .args(args)
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `(address, vendor:device)` of every network function `lspci -Dnn` lists.
fn lspci_network_functions() -> Option<BTreeSet<(String, String)>> {
    let out = Command::new("lspci").arg("-Dnn").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut set = BTreeSet::new();
    for line in text.lines() {
        // 0000:00:03.0 Ethernet controller [0200]: Red Hat, Inc. Virtio ... [1af4:1041] (rev 01)
        let Some((addr, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some(class) = rest.split('[').nth(1).and_then(|c| c.get(..4)) else {
            continue;
        };
        if !class.starts_with("02") {
            continue;
        }
        let ids = rest
            .rsplit('[')
            .find(|s| s.len() >= 10 && s.as_bytes()[4] == b':')
            .map(|s| s[..9].to_string());
        if let Some(ids) = ids {
            set.insert((addr.to_string(), ids));
        }
    }
    Some(set)
}

#[test]
fn host_inventory_agrees_with_lspci() {
    let Some(want) = lspci_network_functions() else {
        let msg =
            "lspci (package pciutils) is not installed: cannot cross-check the host inventory";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED LOUDLY: {msg}");
        return;
    };
    let (ok, stdout, stderr) = sriov_dra(&["discover", "-o", "json"]);
    assert!(ok, "{stderr}");
    let inv: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let got: BTreeSet<(String, String)> = inv["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["address"].as_str().unwrap().to_string(),
                format!(
                    "{}:{}",
                    d["vendorId"].as_str().unwrap(),
                    d["deviceId"].as_str().unwrap()
                ),
            )
        })
        .collect();
    assert_eq!(got, want, "discover and lspci -Dnn disagree");
}

#[test]
fn fixture_slices_print_sixteen_vfs() {
    let (ok, stdout, stderr) = sriov_dra(&[
        "discover",
        "--fixture",
        "connectx6dx",
        "-o",
        "slices",
        "--node-name",
        "w1",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.matches("- attributes:").count(), 16);
    assert!(stdout.contains("sriov.dra.dev/vfIndex"));
}

#[test]
fn bad_input_is_one_clear_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.yaml");
    std::fs::write(&config, "selectors:\n  - vendorz: [\"15b3\"]\n").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["discover", "--config", config.to_str().unwrap()],
            "vendorz",
        ),
        (
            &["discover", "--sysfs-root", "/nonexistent"],
            "/nonexistent/bus/pci/devices",
        ),
        (&["discover", "--fixture", "connectx9"], "connectx9"),
        (
            &[
                "discover",
                "--fixture",
                "virtio",
                "--node-name",
                "Bad_Name",
                "-o",
                "slices",
            ],
            "nodeName",
        ),
    ];
    for (args, needle) in cases {
        let (ok, _, stderr) = sriov_dra(args);
        assert!(!ok, "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        if !args.contains(&"connectx9") {
            assert_eq!(
                stderr.trim().lines().count(),
                1,
                "{args:?}: one line, got {stderr}"
            );
        }
    }
}

/// `sriov-dra discover | head -1`: the reader leaves after one line, and
/// the command ends quietly instead of panicking on the closed pipe.
#[test]
fn a_reader_that_leaves_early_is_a_normal_end() {
    use std::io::Read;
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_sriov-dra"))
        .args(["discover", "--fixture", "scale-2048", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut first = [0u8; 1];
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_exact(&mut first)
        .expect("some output");
    // The read end is closed here (dropped), as `head -1` closes it.
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    let status = child.wait().expect("the binary ends");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status:?}: {stderr}");
}
