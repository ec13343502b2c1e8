//! `sriov-dra run` as an operator starts it, where it cannot go on: the
//! failure is one clear line, and nothing is left half set up.

use std::process::Command;

#[test]
fn run_without_a_cluster_says_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    let fixture = Command::new(env!("CARGO_BIN_EXE_sriov-dra"))
        .args(["fixture", "connectx6dx"])
        .arg(&sys)
        .status()
        .unwrap();
    assert!(fixture.success());
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "nodeName: worker-1\nsysfsRoot: {}\nstateDir: {}\nkubeletDir: {}\n",
            sys.display(),
            dir.path().join("state").display(),
            dir.path().join("kubelet").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sriov-dra"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot build a Kubernetes client"),
        "{stderr}"
    );
    assert_eq!(
        stderr
            .trim()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{stderr}"
    );
    // It opened (and created) the state store before giving up, and no
    // kubelet socket was created for a driver that is not running.
    assert!(dir.path().join("state/state.redb").exists());
    assert!(!dir.path().join("kubelet/plugins_registry").exists());
}

#[test]
fn a_bad_node_config_stops_run_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        format!("stateDir: {}\nipam: {{pols: []}}\n", dir.path().display()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sriov-dra"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("pols"), "{stderr}");
    assert!(!dir.path().join("state.redb").exists());
}
