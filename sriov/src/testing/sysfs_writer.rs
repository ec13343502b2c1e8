//! A [`SysfsWriter`] over a fixture tree that records every write and plays
//! the kernel's part, so driver binding is tested without root or hardware.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::PciAddress;
use crate::bind::{SysfsWriter, VFIO_PCI};
use crate::sysfs::{list_dir, read_optional};

/// One recorded write: attribute path relative to the sysfs root, value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedWrite {
    /// E.g. `bus/pci/drivers/iavf/unbind`.
    pub path: String,
    /// E.g. `0000:3b:02.1`.
    pub value: String,
}

/// A test [`SysfsWriter`] over a fixture tree: records every write and,
/// unless built with [`RecordingSysfsWriter::inert`], plays the kernel's
/// part (driver links and netdevs follow bind, unbind and probe) so that a
/// binder's waits see the result at once.
#[derive(Debug)]
pub struct RecordingSysfsWriter {
    root: PathBuf,
    emulate: bool,
    /// Every write, in order.
    pub writes: Vec<RecordedWrite>,
    default_drivers: HashMap<String, String>,
    parked_netdevs: HashMap<String, Vec<String>>,
}

impl RecordingSysfsWriter {
    /// A recording writer that emulates the kernel on the tree at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RecordingSysfsWriter {
            root: root.into(),
            emulate: true,
            writes: Vec::new(),
            default_drivers: HashMap::new(),
            parked_netdevs: HashMap::new(),
        }
    }

    /// A recording writer that changes nothing, like a kernel that ignores
    /// every request (for timeout paths).
    pub fn inert(root: impl Into<PathBuf>) -> Self {
        RecordingSysfsWriter {
            emulate: false,
            ..Self::new(root)
        }
    }

    /// The driver a probe without override picks for `address`.
    pub fn with_default_driver(mut self, address: PciAddress, driver: &str) -> Self {
        self.default_drivers
            .insert(address.to_string(), driver.to_string());
        self
    }

    /// The writes as `path=value` lines, for compact assertions.
    pub fn log(&self) -> Vec<String> {
        self.writes
            .iter()
            .map(|w| format!("{}={}", w.path, w.value.escape_debug()))
            .collect()
    }

    fn device(&self, addr: &str) -> PathBuf {
        self.root.join("bus/pci/devices").join(addr)
    }

    fn bind(&mut self, addr: &str, driver: &str) -> io::Result<()> {
        let dev = self.device(addr);
        if dev.join("driver").exists() {
            return Ok(());
        }
        let driver_dir = self.root.join("bus/pci/drivers").join(driver);
        if !driver_dir.is_dir() {
            return Ok(()); // no such driver loaded: the device stays unbound
        }
        std::os::unix::fs::symlink(&driver_dir, dev.join("driver"))?;
        if driver != VFIO_PCI {
            for name in self.parked_netdevs.remove(addr).unwrap_or_default() {
                let netdev = dev.join("net").join(name);
                fs::create_dir_all(&netdev)?;
                // A hand-built tree without `class/` stays without it.
                if self.root.join("class/net").is_dir() {
                    crate::fixture::class_link(&self.root, "net", &netdev)?;
                }
            }
        }
        Ok(())
    }

    fn unbind(&mut self, addr: &str) -> io::Result<()> {
        let dev = self.device(addr);
        if fs::symlink_metadata(dev.join("driver")).is_ok() {
            fs::remove_file(dev.join("driver"))?;
        }
        let names = list_dir(&dev.join("net")).map_err(io::Error::other)?;
        for name in &names {
            fs::remove_dir_all(dev.join("net").join(name))?;
            crate::fixture::class_unlink(&self.root, "net", name)?;
        }
        if !names.is_empty() {
            self.parked_netdevs.insert(addr.to_string(), names);
        }
        Ok(())
    }

    fn emulate(&mut self, rel: &Path, value: &str) -> io::Result<()> {
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        match parts[..] {
            ["bus", "pci", "devices", _, "driver_override"] => {
                let v = value.trim();
                let content = if v.is_empty() { "(null)" } else { v };
                fs::write(self.root.join(rel), format!("{content}\n"))
            }
            ["bus", "pci", "drivers", _, "unbind"] => self.unbind(value),
            ["bus", "pci", "drivers", driver, "bind"] => {
                let driver = driver.to_string();
                self.bind(value, &driver)
            }
            ["bus", "pci", "drivers_probe"] => {
                let over = read_optional(&self.device(value).join("driver_override"))
                    .map_err(io::Error::other)?
                    .filter(|v| !v.is_empty() && v != "(null)");
                match over.or_else(|| self.default_drivers.get(value).cloned()) {
                    Some(driver) => self.bind(value, &driver),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

impl SysfsWriter for RecordingSysfsWriter {
    fn write(&mut self, rel_path: &Path, value: &str) -> io::Result<()> {
        let path = self.root.join(rel_path);
        if !path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", path.display()),
            ));
        }
        self.writes.push(RecordedWrite {
            path: rel_path.to_string_lossy().into_owned(),
            value: value.to_string(),
        });
        if self.emulate {
            self.emulate(rel_path, value)?;
        }
        Ok(())
    }
}
