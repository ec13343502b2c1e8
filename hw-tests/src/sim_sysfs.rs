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
}

impl SimSysfs {
    /// A writer over the tree at `root`.
    pub fn new(root: &Path, inner: RecordingSysfsWriter) -> Self {
        SimSysfs {
            root: root.to_path_buf(),
            inner,
        }
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
        self.inner.write(rel_path, value)
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
