//! CDI specs: how the container runtime learns which device nodes and
//! environment a claim's containers get.
//!
//! One spec file per claim (`<cdi-dir>/<driver>-<claimUID>.json`, kind
//! `<driver>/vf`), written atomically so the runtime never reads half a
//! spec, and deleted on unprepare. Device names start with the claim UID,
//! which may begin with a digit, so the spec declares CDI 0.5.0 — the
//! lowest version allowing that, read by every runtime of k8s ≥1.34
//! (containerd 1.7/2.x, CRI-O).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::apis::Mode;
use crate::failpoints::failpoint;
use crate::state::PreparedDevice;

/// `cdiVersion` of the specs we write.
pub const CDI_VERSION: &str = "0.5.0";
/// Class part of the CDI kind (`sriov.dra.dev/vf`).
pub const CDI_CLASS: &str = "vf";
/// The vfio container device every DPDK application needs.
pub const VFIO_CONTAINER: &str = "/dev/vfio/vfio";
/// Prefix of every environment variable we set.
pub const ENV_PREFIX: &str = "SRIOV_DRA_";

/// Why a spec could not be written or removed; names the file.
#[derive(Debug, thiserror::Error)]
#[error("CDI spec {path}: {action}: {source}")]
pub struct CdiError {
    /// The spec file (or its temporary).
    pub path: PathBuf,
    /// What failed.
    pub action: &'static str,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// One CDI device: its name in the spec and its container edits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CdiDevice {
    /// Name within the kind (`<claimUID>-pci-0000-3b-02-1`).
    pub name: String,
    /// Edits applied when the device is injected.
    #[serde(rename = "containerEdits")]
    pub edits: ContainerEdits,
}

/// The edits we use: environment and device nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerEdits {
    /// `NAME=value` entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Device nodes; the runtime fills type and numbers from the host node.
    #[serde(rename = "deviceNodes", skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNode>,
}

/// A device node by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceNode {
    /// Path on the host and in the container.
    pub path: String,
}

#[derive(Serialize)]
struct Spec<'a> {
    #[serde(rename = "cdiVersion")]
    cdi_version: &'static str,
    kind: &'a str,
    devices: &'a [CdiDevice],
}

/// The request a device's variables are named after: a subrequest
/// (`nic/fast`) uses its parent (`nic`), so the application reads the same
/// names whichever alternative the scheduler picked.
pub fn env_request(request: &str) -> &str {
    request.split('/').next().unwrap_or(request)
}

/// `nic` → `NIC`, `fast-nic` → `FAST_NIC`: a valid env name part.
pub fn env_name_part(request: &str) -> String {
    request
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The edits for one prepared device. `index` is its position among the
/// devices of the same (parent) request when that request got more than one
/// (`SRIOV_DRA_NIC_0_PCI_ADDRESS`), `None` otherwise (`SRIOV_DRA_NIC_…`).
/// `rdma_nodes` are the RDMA char devices to hand over (netdevice mode).
pub fn device_edits(
    dev: &PreparedDevice,
    index: Option<usize>,
    rdma_nodes: &[PathBuf],
) -> ContainerEdits {
    let mut prefix = format!("{ENV_PREFIX}{}_", env_name_part(env_request(&dev.request)));
    if let Some(i) = index {
        prefix.push_str(&format!("{i}_"));
    }
    let mut edits = ContainerEdits::default();
    let mut env = |name: &str, value: String| edits.env.push(format!("{prefix}{name}={value}"));
    env("PCI_ADDRESS", dev.pci_address.to_string());
    env("MODE", dev.config.mode.to_string());
    if let Some(name) = &dev.if_name {
        env("IFNAME", name.clone());
    }
    if let Some(mac) = dev.config.settings.mac() {
        env("MAC", mac.to_string());
    }
    if let Some(alloc) = &dev.addresses {
        let ips: Vec<String> = alloc
            .addresses
            .iter()
            .map(|a| a.address.to_string())
            .collect();
        env("IPS", ips.join(","));
    }
    if let Some(rdma) = &dev.rdma_device
        && dev.config.mode == Mode::Netdevice
    {
        env("RDMA_DEVICE", rdma.clone());
    }
    if let Some(bind) = &dev.bind {
        let group = bind.vfio_device.to_string_lossy().into_owned();
        env("VFIO_DEVICE", group.clone());
        edits.device_nodes.push(DeviceNode {
            path: VFIO_CONTAINER.to_string(),
        });
        edits.device_nodes.push(DeviceNode { path: group });
    } else {
        edits
            .device_nodes
            .extend(rdma_nodes.iter().map(|p| DeviceNode {
                path: p.to_string_lossy().into_owned(),
            }));
    }
    edits
}

/// Writes and removes the claims' spec files in one CDI directory.
#[derive(Debug, Clone)]
pub struct CdiWriter {
    dir: PathBuf,
    kind: String,
    driver: String,
}

impl CdiWriter {
    /// Specs of `driver` in `dir` (normally `/var/run/cdi`).
    pub fn new(dir: impl Into<PathBuf>, driver: &str) -> Self {
        CdiWriter {
            dir: dir.into(),
            kind: format!("{driver}/{CDI_CLASS}"),
            driver: driver.to_string(),
        }
    }

    /// `<driver>/vf`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The spec file of a claim.
    pub fn spec_path(&self, claim_uid: &str) -> PathBuf {
        self.dir.join(format!("{}-{claim_uid}.json", self.driver))
    }

    /// The device's name in the spec: unique across claims.
    pub fn device_name(claim_uid: &str, device: &str) -> String {
        format!("{claim_uid}-{device}")
    }

    /// The fully qualified ID the kubelet passes to the runtime.
    pub fn device_id(&self, claim_uid: &str, device: &str) -> String {
        format!("{}={}", self.kind, Self::device_name(claim_uid, device))
    }

    /// Writes the claim's spec: temporary file, fsync, rename, fsync of the
    /// directory. Replaces an older spec of the same claim.
    pub fn write(&self, claim_uid: &str, devices: &[CdiDevice]) -> Result<PathBuf, CdiError> {
        let path = self.spec_path(claim_uid);
        let err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| CdiError {
                path,
                action,
                source,
            }
        };
        std::fs::create_dir_all(&self.dir).map_err(err("create directory", &self.dir))?;
        let spec = Spec {
            cdi_version: CDI_VERSION,
            kind: &self.kind,
            devices,
        };
        let json = serde_json::to_vec_pretty(&spec).map_err(|e| CdiError {
            path: path.clone(),
            action: "encode",
            source: std::io::Error::other(e),
        })?;
        let tmp = self.tmp_path(claim_uid);
        let written = (|| {
            let mut file = std::fs::File::create(&tmp).map_err(err("create", &tmp))?;
            file.write_all(&json).map_err(err("write", &tmp))?;
            file.sync_all().map_err(err("fsync", &tmp))?;
            failpoint!("cdi::rename");
            std::fs::rename(&tmp, &path).map_err(err("rename into place", &path))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err("fsync directory", &self.dir))?;
        Ok(path)
    }

    /// Where a spec is written before it is renamed into place. Runtimes
    /// only read `*.json` and `*.yaml`; a dot name is invisible too.
    fn tmp_path(&self, claim_uid: &str) -> PathBuf {
        self.dir
            .join(format!(".{}-{claim_uid}.json.tmp", self.driver))
    }

    /// Deletes the claim's spec, and the temporary a driver that died
    /// before renaming it into place left; missing ones are fine.
    pub fn remove(&self, claim_uid: &str) -> Result<(), CdiError> {
        for path in [self.tmp_path(claim_uid), self.spec_path(claim_uid)] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CdiError {
                        path,
                        action: "remove",
                        source: e,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::{ValidConfig, validate};
    use sriov::bind::BindRecord;

    fn device(request: &str, mode: &str) -> PreparedDevice {
        let cfg: crate::apis::VfConfig = serde_json::from_value(serde_json::json!({
            "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfConfig", "mode": mode,
        }))
        .unwrap();
        let config: ValidConfig = validate(&cfg).unwrap();
        PreparedDevice {
            request: request.into(),
            pool: "node-1".into(),
            device: "pci-0000-af-01-2".into(),
            pci_address: "0000:af:01.2".parse().unwrap(),
            config,
            if_name: None,
            rdma_device: None,
            vf_settings: None,
            bind: None,
            addresses: None,
            cdi_device_id: None,
            policy: None,
        }
    }

    #[test]
    fn dpdk_device_gets_the_vfio_nodes_and_env() {
        let mut dev = device("dpdk-nic", "dpdk");
        dev.bind = Some(BindRecord {
            address: dev.pci_address,
            changed: true,
            original_driver: Some("iavf".into()),
            original_override: None,
            netdevs: vec![],
            iommu_group: 63,
            no_iommu: false,
            vfio_device: "/dev/vfio/63".into(),
        });
        let edits = device_edits(&dev, Some(1), &[]);
        assert_eq!(
            edits.env,
            [
                "SRIOV_DRA_DPDK_NIC_1_PCI_ADDRESS=0000:af:01.2",
                "SRIOV_DRA_DPDK_NIC_1_MODE=dpdk",
                "SRIOV_DRA_DPDK_NIC_1_VFIO_DEVICE=/dev/vfio/63",
            ]
        );
        let paths: Vec<&str> = edits.device_nodes.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(paths, ["/dev/vfio/vfio", "/dev/vfio/63"]);
    }

    #[test]
    fn netdevice_with_rdma_gets_char_devices_and_addresses() {
        let mut dev = device("nic", "netdevice");
        dev.if_name = Some("net1".into());
        dev.rdma_device = Some("mlx5_3".into());
        dev.addresses = Some(ipam::Allocation {
            owner: ipam::Owner::new("u", "nic", "pci-0000-af-01-2").unwrap(),
            pool: Some("p".into()),
            addresses: vec![ipam::AssignedAddress {
                address: "10.1.0.5/24".parse().unwrap(),
                gateway: None,
            }],
            routes: vec![],
        });
        let nodes = [
            PathBuf::from("/dev/infiniband/rdma_cm"),
            PathBuf::from("/dev/infiniband/uverbs3"),
        ];
        let edits = device_edits(&dev, None, &nodes);
        assert!(edits.env.contains(&"SRIOV_DRA_NIC_IFNAME=net1".to_string()));
        assert!(
            edits
                .env
                .contains(&"SRIOV_DRA_NIC_IPS=10.1.0.5/24".to_string())
        );
        assert!(
            edits
                .env
                .contains(&"SRIOV_DRA_NIC_RDMA_DEVICE=mlx5_3".to_string())
        );
        assert_eq!(edits.device_nodes.len(), 2);
    }

    #[test]
    fn a_subrequest_is_named_after_its_parent_request() {
        let edits = device_edits(&device("fast-nic/a", "netdevice"), None, &[]);
        assert_eq!(edits.env[0], "SRIOV_DRA_FAST_NIC_PCI_ADDRESS=0000:af:01.2");
    }

    #[test]
    fn spec_is_written_atomically_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cdi = CdiWriter::new(dir.path(), "sriov.dra.dev");
        let dev = CdiDevice {
            name: CdiWriter::device_name("1f0c-uid", "pci-0000-af-01-2"),
            edits: device_edits(&device("nic", "netdevice"), None, &[]),
        };
        let path = cdi.write("1f0c-uid", &[dev]).unwrap();
        assert_eq!(path, dir.path().join("sriov.dra.dev-1f0c-uid.json"));
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(spec["cdiVersion"], "0.5.0");
        assert_eq!(spec["kind"], "sriov.dra.dev/vf");
        assert_eq!(spec["devices"][0]["name"], "1f0c-uid-pci-0000-af-01-2");
        assert_eq!(
            cdi.device_id("1f0c-uid", "pci-0000-af-01-2"),
            "sriov.dra.dev/vf=1f0c-uid-pci-0000-af-01-2"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary left: {names:?}");
        cdi.remove("1f0c-uid").unwrap();
        assert!(!path.exists());
        cdi.remove("1f0c-uid").unwrap();
    }

    #[test]
    fn remove_also_deletes_the_temporary_a_crash_before_the_rename_left() {
        let dir = tempfile::tempdir().unwrap();
        let cdi = CdiWriter::new(dir.path(), "sriov.dra.dev");
        // What a driver killed between the fsync and the rename leaves.
        let tmp = dir.path().join(".sriov.dra.dev-1f0c-uid.json.tmp");
        std::fs::write(&tmp, b"{").unwrap();
        cdi.remove("1f0c-uid").unwrap();
        assert!(!tmp.exists(), "the claim's temporary is gone with it");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
