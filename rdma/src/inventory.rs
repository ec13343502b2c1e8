//! Reading RDMA devices and their char devices from sysfs.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sriov::PciAddress;
use sriov::sysfs::{self, SysDir, SysfsError};

/// The connection manager char device, shared by every RDMA device.
pub const RDMA_CM: &str = "/dev/infiniband/rdma_cm";

/// An RDMA device (`mlx5_0`) of a PCI function.
///
/// A node scan reads only its name, which is what a slice publishes
/// (`rdma`, `rdmaDevice`); the rest ([`RdmaDetails`]) costs a dozen reads
/// per device and is read for the one device a claim prepares, or for an
/// operator's full view ([`details_of`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RdmaDevice {
    /// Kernel name, as `rdma link` shows it.
    pub name: String,
    /// The PCI function it belongs to.
    pub pci_address: PciAddress,
    /// Ports, GUID and char devices, when they were read.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub details: Option<RdmaDetails>,
}

/// What a container needs of an RDMA device, and what an operator looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RdmaDetails {
    /// `node_guid`, if exposed.
    pub node_guid: Option<String>,
    /// Ports in number order.
    pub ports: Vec<RdmaPort>,
    /// Char devices a container needs, under `/dev/infiniband`, sorted.
    pub char_devices: Vec<PathBuf>,
}

/// One port of an RDMA device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RdmaPort {
    /// Port number (from 1).
    pub number: u32,
    /// `state` without its numeric prefix (`ACTIVE`, `DOWN`).
    pub state: Option<String>,
    /// Ethernet (RoCE) or InfiniBand.
    pub link_layer: LinkLayer,
    /// The netdev a RoCE port is bound to.
    pub netdev: Option<String>,
}

/// A port's link layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LinkLayer {
    /// RoCE.
    Ethernet,
    /// Native InfiniBand.
    InfiniBand,
    /// Anything else the kernel reports (iWARP drivers print nothing useful).
    Unknown,
}

/// Why RDMA devices could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    /// A file that must be readable was not, or held garbage.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    /// The root has no `bus/pci/devices`.
    #[error("{0} does not exist: is the sysfs root right?")]
    NoPciBus(PathBuf),
    /// The device a scan found is no longer there.
    #[error("RDMA device {name} of PCI function {address} is gone (looked for {path})")]
    Gone {
        /// Its kernel name.
        name: String,
        /// Its PCI function.
        address: PciAddress,
        /// Where it was looked for.
        path: PathBuf,
    },
}

impl RdmaDetails {
    /// True if any port runs InfiniBand (needs `umad`/`issm` for the SM).
    pub fn is_infiniband(&self) -> bool {
        self.ports
            .iter()
            .any(|p| p.link_layer == LinkLayer::InfiniBand)
    }
}

/// Every RDMA device under `sysfs_root`, in PCI address order.
pub fn scan(sysfs_root: &Path) -> Result<Vec<RdmaDevice>, RdmaError> {
    let devices = sysfs_root.join("bus/pci/devices");
    if !devices.is_dir() {
        return Err(RdmaError::NoPciBus(devices));
    }
    let mut out = Vec::new();
    for entry in sysfs::list_dir(&devices)? {
        let Ok(address) = entry.parse::<PciAddress>() else {
            continue;
        };
        out.extend(for_pci_device(sysfs_root, address)?);
    }
    out.sort_by(|a, b| (a.pci_address, &a.name).cmp(&(b.pci_address, &b.name)));
    Ok(out)
}

/// The RDMA devices of one PCI function (usually zero or one).
pub fn for_pci_device(
    sysfs_root: &Path,
    address: PciAddress,
) -> Result<Vec<RdmaDevice>, RdmaError> {
    let dir = sysfs_root.join("bus/pci/devices").join(address.to_string());
    match SysDir::open(&dir)? {
        Some(dir) => Ok(for_pci_dir(&dir, address)?),
        None => Ok(Vec::new()),
    }
}

/// [`for_pci_device`] for a PCI function's directory that is already open,
/// so a scan that has read the function resolves its path only once.
pub fn for_pci_dir(dir: &SysDir, address: PciAddress) -> Result<Vec<RdmaDevice>, SysfsError> {
    let names = dir.list("infiniband")?;
    let only_device = names.len() == 1;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(RdmaDevice {
            details: Some(read_details(dir, &name, only_device)?),
            name,
            pci_address: address,
        });
    }
    Ok(out)
}

/// The RDMA devices of a PCI function's open directory, by name only: what
/// a scan publishes, for a function the `class/infiniband` index has
/// nothing on (or a tree without one) and for partial rescans.
pub fn names_in(dir: &SysDir, address: PciAddress) -> Result<Vec<RdmaDevice>, SysfsError> {
    Ok(dir
        .list("infiniband")?
        .into_iter()
        .map(|name| RdmaDevice {
            name,
            pci_address: address,
            details: None,
        })
        .collect())
}

/// Ports, GUID and char devices of `device`, read now: for the one device a
/// claim prepares (its char devices go into the CDI spec), never per scan.
pub fn details_of(sysfs_root: &Path, device: &RdmaDevice) -> Result<RdmaDetails, RdmaError> {
    let path = sysfs_root
        .join("bus/pci/devices")
        .join(device.pci_address.to_string());
    let gone = || RdmaError::Gone {
        name: device.name.clone(),
        address: device.pci_address,
        path: path.join("infiniband").join(&device.name),
    };
    let Some(dir) = SysDir::open(&path)? else {
        return Err(gone());
    };
    let names = dir.list("infiniband")?;
    if !names.contains(&device.name) {
        return Err(gone());
    }
    Ok(read_details(&dir, &device.name, names.len() == 1)?)
}

/// The details of RDMA device `name` under the open PCI directory `dir`.
fn read_details(dir: &SysDir, name: &str, only_device: bool) -> Result<RdmaDetails, SysfsError> {
    let ib = format!("infiniband/{name}");
    Ok(RdmaDetails {
        ports: read_ports(dir, &ib)?,
        node_guid: dir.read_optional(&format!("{ib}/node_guid"))?,
        char_devices: char_devices(dir, name, only_device)?,
    })
}

/// The ports of the RDMA device at `ib` (relative to `dir`), in number order.
///
/// An HCA numbers its ports from 1 without gaps, so they are found by
/// probing `ports/1`, `ports/2`, … (one lookup per port plus one) instead
/// of listing `ports` (four syscalls). Anything else (a switch's port 0, a
/// device without ports) is listed as before.
fn read_ports(dir: &SysDir, ib: &str) -> Result<Vec<RdmaPort>, SysfsError> {
    let mut ports = Vec::new();
    let mut number = 1u32;
    while dir.exists(&format!("{ib}/ports/{number}")) {
        ports.push(read_port(dir, &format!("{ib}/ports/{number}"), number)?);
        number += 1;
    }
    if ports.is_empty() {
        for port in dir.list(&format!("{ib}/ports"))? {
            let port_dir = format!("{ib}/ports/{port}");
            let number = sysfs::parse_decimal(&dir.join(&port_dir), &port)?;
            ports.push(read_port(dir, &port_dir, number)?);
        }
        ports.sort_by_key(|p| p.number);
    }
    Ok(ports)
}

/// One port; `port_dir` is relative to `dir`.
fn read_port(dir: &SysDir, port_dir: &str, number: u32) -> Result<RdmaPort, SysfsError> {
    // `state` reads like "4: ACTIVE".
    let state = dir
        .read_optional(&format!("{port_dir}/state"))?
        .map(|s| s.rsplit(' ').next().unwrap_or_default().to_string());
    let link_layer = match dir
        .read_optional(&format!("{port_dir}/link_layer"))?
        .as_deref()
    {
        Some("Ethernet") => LinkLayer::Ethernet,
        Some("InfiniBand") => LinkLayer::InfiniBand,
        _ => LinkLayer::Unknown,
    };
    // GID 0's netdev is the RoCE port's interface; the kernel answers
    // EINVAL/ENODATA for IB ports and empty GIDs, which means "none".
    let netdev = dir
        .read_lenient(&format!("{port_dir}/gid_attrs/ndevs/0"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    Ok(RdmaPort {
        number,
        state,
        link_layer,
        netdev,
    })
}

/// `uverbsN`, `umadN`, `issmN` serving `ibdev`, plus `rdma_cm`.
///
/// When the function has a single RDMA device, every char device under it
/// serves that device and the `ibdev` reads are skipped (a third of the
/// RDMA part of a scan of a 2048-VF node).
fn char_devices(
    pci_dir: &SysDir,
    ibdev: &str,
    only_device: bool,
) -> Result<Vec<PathBuf>, SysfsError> {
    let mut out = vec![PathBuf::from(RDMA_CM)];
    for class in ["infiniband_verbs", "infiniband_mad"] {
        for node in pci_dir.list(class)? {
            if only_device {
                out.push(Path::new("/dev/infiniband").join(node));
                continue;
            }
            let owner = pci_dir.read_optional(&format!("{class}/{node}/ibdev"))?;
            if owner.as_deref() == Some(ibdev) {
                out.push(Path::new("/dev/infiniband").join(node));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sriov::fixture::Fixture;

    /// The details a full read (`scan`, `for_pci_device`) always has.
    fn details(d: &RdmaDevice) -> &RdmaDetails {
        d.details.as_ref().expect("a full read has details")
    }

    fn tree(f: Fixture) -> tempfile::TempDir {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        f.build(dir.path()).unwrap();
        dir
    }

    #[test]
    fn roce_devices_name_their_netdev_and_verbs_node() {
        let dir = tree(Fixture::ConnectX6Dx);
        let devs = scan(dir.path()).unwrap();
        assert_eq!(devs.len(), 18, "2 PFs + 16 VFs each have an RDMA device");
        let pf0 = &devs[0];
        assert_eq!(pf0.name, "mlx5_0");
        assert_eq!(pf0.pci_address.to_string(), "0000:3b:00.0");
        assert_eq!(details(pf0).ports[0].link_layer, LinkLayer::Ethernet);
        assert_eq!(details(pf0).ports[0].netdev.as_deref(), Some("ens1f0np0"));
        assert_eq!(details(pf0).ports[0].state.as_deref(), Some("ACTIVE"));
        assert_eq!(
            details(pf0).char_devices,
            [
                PathBuf::from("/dev/infiniband/rdma_cm"),
                PathBuf::from("/dev/infiniband/uverbs0")
            ]
        );
        assert!(!details(pf0).is_infiniband());
    }

    #[test]
    fn infiniband_devices_have_mad_nodes_and_no_netdev_port() {
        let dir = tree(Fixture::ConnectX7Ib);
        let devs = scan(dir.path()).unwrap();
        assert_eq!(devs.len(), 4, "PF + 3 bound VFs; the unbound VF has none");
        let pf = &devs[0];
        assert!(details(pf).is_infiniband());
        assert_eq!(details(pf).ports[0].netdev, None);
        let names: Vec<String> = details(pf)
            .char_devices
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "/dev/infiniband/issm0",
                "/dev/infiniband/rdma_cm",
                "/dev/infiniband/umad0",
                "/dev/infiniband/uverbs0"
            ]
        );
        assert_eq!(
            details(pf).node_guid.as_deref(),
            Some("a088:c203:005e:0000")
        );
    }

    #[test]
    fn ports_not_numbered_from_one_are_found_by_listing() {
        let dir = tree(Fixture::ConnectX7Ib);
        let pf = &scan(dir.path()).unwrap()[0];
        let ports = dir
            .path()
            .join("bus/pci/devices")
            .join(pf.pci_address.to_string())
            .join("infiniband")
            .join(&pf.name)
            .join("ports");
        // A switch numbers its management port 0.
        std::fs::rename(ports.join("1"), ports.join("0")).unwrap();
        let pf = &scan(dir.path()).unwrap()[0];
        assert_eq!(details(pf).ports.len(), 1);
        assert_eq!(details(pf).ports[0].number, 0);
        assert_eq!(details(pf).ports[0].link_layer, LinkLayer::InfiniBand);
    }

    #[test]
    fn a_scan_reads_names_and_a_prepare_reads_the_details_of_one_device() {
        let dir = tree(Fixture::ConnectX6Dx);
        let vf: PciAddress = "0000:3b:00.2".parse().unwrap();
        let pci = SysDir::open(&dir.path().join("bus/pci/devices/0000:3b:00.2"))
            .unwrap()
            .unwrap();
        let named = names_in(&pci, vf).unwrap();
        assert_eq!(named.len(), 1);
        assert_eq!(
            (named[0].name.as_str(), named[0].details.as_ref()),
            ("mlx5_1", None)
        );

        let full = details_of(dir.path(), &named[0]).unwrap();
        assert_eq!(
            Some(&full),
            for_pci_device(dir.path(), vf).unwrap()[0].details.as_ref()
        );
        assert_eq!(full.ports[0].link_layer, LinkLayer::Ethernet);
        assert!(full.char_devices.contains(&PathBuf::from(RDMA_CM)));
    }

    #[test]
    fn details_of_a_device_gone_since_the_scan_name_it() {
        let dir = tree(Fixture::ConnectX6Dx);
        let vf: PciAddress = "0000:3b:00.2".parse().unwrap();
        let gone = RdmaDevice {
            name: "mlx5_9".into(),
            pci_address: vf,
            details: None,
        };
        let err = details_of(dir.path(), &gone).unwrap_err().to_string();
        assert!(
            err.contains("mlx5_9") && err.contains("0000:3b:00.2"),
            "{err}"
        );
        let elsewhere = RdmaDevice {
            pci_address: "0000:99:00.0".parse().unwrap(),
            ..gone
        };
        let err = details_of(dir.path(), &elsewhere).unwrap_err().to_string();
        assert!(err.contains("is gone"), "{err}");
    }

    #[test]
    fn nics_without_rdma_have_none() {
        for f in [Fixture::Virtio, Fixture::E810] {
            assert!(scan(tree(f).path()).unwrap().is_empty(), "{f}");
        }
    }

    #[test]
    fn a_wrong_root_is_a_clear_error() {
        let err = scan(Path::new("/nonexistent")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/bus/pci/devices"), "{err}");
    }
}
