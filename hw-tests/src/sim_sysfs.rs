//! A sysfs writer for the simulated node: driver binding as the kernel does
//! it (through [`RecordingSysfsWriter`]), plus `sriov_numvfs` with the
//! kernel's refusal to go from N to M VFs without passing through 0.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sriov::bind::SysfsWriter;
use sriov::testing::RecordingSysfsWriter;

/// Kernel-like writes on a fixture tree.
pub struct SimSysfs {
    root: PathBuf,
    inner: RecordingSysfsWriter,
    dev: Option<PathBuf>,
}

impl SimSysfs {
    /// A writer over the tree at `root`.
    pub fn new(root: &Path, inner: RecordingSysfsWriter) -> Self {
        SimSysfs {
            root: root.to_path_buf(),
            inner,
            dev: None,
        }
    }

    /// Also keeps `<dev>/vfio/<group>` as vfio-pci does: there while a
    /// device of the group is bound to it.
    pub fn with_dev(mut self, dev: &Path) -> Self {
        self.dev = Some(dev.to_path_buf());
        self
    }

    fn vfio_node(&self, address: &str) -> io::Result<Option<PathBuf>> {
        let Some(dev) = &self.dev else {
            return Ok(None);
        };
        let group = fs::read_link(
            self.root
                .join("bus/pci/devices")
                .join(address.trim())
                .join("iommu_group"),
        )?;
        Ok(group.file_name().map(|g| dev.join("vfio").join(g)))
    }

    /// Every write, as `path=value`.
    pub fn log(&self) -> Vec<String> {
        self.inner.log()
    }
}

impl SysfsWriter for SimSysfs {
    fn write(&mut self, rel_path: &Path, value: &str) -> io::Result<()> {
        if rel_path.file_name().is_some_and(|n| n == "sriov_numvfs") {
            let path = self.root.join(rel_path);
            let current: u32 = fs::read_to_string(&path)?
                .trim()
                .parse()
                .map_err(io::Error::other)?;
            let wanted: u32 = value.trim().parse().map_err(io::Error::other)?;
            if current != 0 && wanted != 0 && current != wanted {
                // sriov_numvfs_store(): "%d VFs already enabled".
                return Err(io::Error::from_raw_os_error(libc::EBUSY));
            }
            fs::write(&path, format!("{wanted}\n"))?;
        }
        self.inner.write(rel_path, value)?;
        let rebinding = rel_path
            .file_name()
            .is_some_and(|n| n == "bind" || n == "unbind" || n == "drivers_probe");
        if rebinding && let Some(node) = self.vfio_node(value)? {
            let driver = fs::read_link(
                self.root
                    .join("bus/pci/devices")
                    .join(value.trim())
                    .join("driver"),
            )
            .ok();
            if driver.is_some_and(|d| d.file_name().is_some_and(|n| n == "vfio-pci")) {
                if let Some(dir) = node.parent() {
                    fs::create_dir_all(dir)?;
                }
                fs::write(&node, "")?;
            } else {
                let _ = fs::remove_file(node);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sriov::fixture::Fixture;

    #[test]
    fn numvfs_n_to_m_is_ebusy_as_in_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        Fixture::E810.build(dir.path()).unwrap();
        let mut w = SimSysfs::new(dir.path(), RecordingSysfsWriter::new(dir.path()));
        let rel = Path::new("bus/pci/devices/0000:af:00.0/sriov_numvfs");
        let err = w.write(rel, "2").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
        w.write(rel, "0").unwrap();
        w.write(rel, "2").unwrap();
        assert_eq!(
            w.log(),
            [
                "bus/pci/devices/0000:af:00.0/sriov_numvfs=0",
                "bus/pci/devices/0000:af:00.0/sriov_numvfs=2"
            ]
        );
    }
}
