//! The pair cases' real code path without a NIC: a sysfs root whose PF
//! lists a veth pair as its VFs 0 and 1. The cases move them into two
//! namespaces, address them from the profile and ping both ways over v4
//! and v6; deleting the namespaces takes the veths with them (a real VF
//! would come home instead). Needs root, `ip` and `ping`.

use std::path::Path;
use std::process::Command;

use hw_tests::cases::Outcome;
use hw_tests::pair::ping_cases;
use hw_tests::profile::Profile;
use sriov::testing::have_root;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `class/net/<pf>/device/virtfnN/net/<vf>` and `class/net/<vf>`.
fn sysfs_with_vfs(root: &Path, pf: &str, vfs: &[&str]) {
    for (i, vf) in vfs.iter().enumerate() {
        let dir = root.join(format!("class/net/{pf}/device/virtfn{i}/net/{vf}"));
        std::fs::create_dir_all(dir).unwrap();
        std::fs::create_dir_all(root.join("class/net").join(vf)).unwrap();
    }
}

#[test]
fn two_vfs_in_two_namespaces_ping_each_other_v4_and_v6() {
    if !have_root("two_vfs_in_two_namespaces_ping_each_other_v4_and_v6") {
        return;
    }
    let pid = std::process::id();
    let (a, b) = (format!("hwa{pid}"), format!("hwb{pid}"));
    ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
    let root = tempfile::tempdir().unwrap();
    sysfs_with_vfs(root.path(), "pf0", &[&a, &b]);
    let profile = Profile::parse(
        r#"
[node]
name = "veth"
[[nic]]
model = "veth pair"
vendor_id = "0000"
device_id = "0000"
driver = "veth"
pfs = ["pf0"]
num_vfs = 2
cases = ["ping-pair"]
[nic.peer]
ipv4 = ["192.0.2.1/24", "192.0.2.2/24"]
ipv6 = ["2001:db8:17::1/64", "2001:db8:17::2/64"]
"#,
        "test",
    )
    .unwrap();
    let entries = ping_cases(root.path(), &profile.nics[0]);
    let _ = Command::new("ip").args(["link", "del", &a]).output();
    let cases: Vec<(&str, &Outcome)> = entries
        .iter()
        .map(|e| (e.case.as_str(), &e.outcome))
        .collect();
    if matches!(entries[0].outcome, Outcome::NeedsHardware(_)) {
        // No `ping` here: the case says so instead of passing.
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{cases:?}");
        eprintln!("!!!!! ping pair NOT RUN: {:?}", entries[0].outcome);
        return;
    }
    assert_eq!(
        cases,
        [
            ("traffic/ping-v4", &Outcome::Pass),
            ("traffic/ping-v6", &Outcome::Pass)
        ]
    );
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains(&format!("hwt-{pid}-")),
        "the namespaces are gone"
    );
}

#[test]
fn rdma_cases_on_vfs_without_rdma_devices_need_hardware() {
    if !have_root("rdma_cases_on_vfs_without_rdma_devices_need_hardware") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    sysfs_with_vfs(root.path(), "pf0", &["nosuchvf0", "nosuchvf1"]);
    let profile = Profile::parse(
        r#"
[node]
name = "no rdma"
[[nic]]
model = "plain"
vendor_id = "0000"
device_id = "0000"
driver = "none"
pfs = ["pf0"]
num_vfs = 2
cases = ["rdma-exclusive", "rdma-perf"]
[nic.peer]
ipv4 = ["192.0.2.1/24", "192.0.2.2/24"]
"#,
        "test",
    )
    .unwrap();
    let moved = hw_tests::pair::rdma_move_case(root.path(), &profile.nics[0]);
    assert!(
        matches!(&moved.outcome, Outcome::NeedsHardware(r)
            if r.contains("rdma") || r.contains("RDMA")),
        "{:?}",
        moved.outcome
    );
    for perf in hw_tests::pair::perf_cases(root.path(), &profile.nics[0]) {
        assert!(
            matches!(perf.outcome, Outcome::NeedsHardware(_)),
            "{}: {:?}",
            perf.case,
            perf.outcome
        );
    }
}
