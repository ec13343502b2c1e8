//! The outside tools the cases use (iproute2, rdma, lspci, perftest) and
//! the prerequisite checks built on them: each says what is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The tool's path on `$PATH`, if there.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// `Ok` when every tool is on `$PATH`, else which are not.
pub fn need_tools(tools: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("{} not on PATH", missing.join(", ")))
    }
}

/// `Ok` when running as root.
pub fn need_root() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err("needs root".into())
    }
}

/// Runs `program args…`; its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The netdev name of VF `index` of the PF called `pf`, from sysfs.
pub fn vf_netdev(sysfs_root: &Path, pf: &str, index: u32) -> Result<String, String> {
    let net = sysfs_root
        .join("class/net")
        .join(pf)
        .join("device")
        .join(format!("virtfn{index}"))
        .join("net");
    first_entry(&net).map_err(|e| format!("VF {index} of {pf} has no netdev ({e})"))
}

/// The RDMA device of VF `index` of `pf`, from sysfs (`infiniband/<dev>`).
pub fn vf_rdma_device(sysfs_root: &Path, pf: &str, index: u32) -> Result<String, String> {
    let ib = sysfs_root
        .join("class/net")
        .join(pf)
        .join("device")
        .join(format!("virtfn{index}"))
        .join("infiniband");
    first_entry(&ib).map_err(|e| format!("VF {index} of {pf} has no RDMA device ({e})"))
}

fn first_entry(dir: &Path) -> Result<String, String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .ok_or_else(|| format!("{} is empty", dir.display()))
}

/// Whether `rdma system` reports the exclusive netns mode (a device can
/// then be moved into one namespace, as `rdma.exclusive` claims need).
pub fn rdma_netns_exclusive(rdma_system: &str) -> bool {
    rdma_system.contains("netns exclusive")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_named() {
        let err = need_tools(&["sh", "no-such-tool-hw-tests"]).unwrap_err();
        assert_eq!(err, "no-such-tool-hw-tests not on PATH");
        assert!(need_tools(&["sh"]).is_ok());
    }

    #[test]
    fn rdma_system_modes() {
        assert!(rdma_netns_exclusive("netns exclusive copy-on-fork on\n"));
        assert!(!rdma_netns_exclusive("netns shared copy-on-fork on\n"));
    }

    #[test]
    fn vf_netdevs_come_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        sriov::fixture::Fixture::E810.build(dir.path()).unwrap();
        // The fixture has no class/net links: the reason names the path.
        let err = vf_netdev(dir.path(), "ens2f0", 0).unwrap_err();
        assert!(err.contains("VF 0 of ens2f0 has no netdev"), "{err}");
    }
}
