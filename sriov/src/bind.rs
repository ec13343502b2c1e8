//! Moving a VF between kernel drivers through sysfs: to `vfio-pci` for a
//! DPDK claim, and back to the driver it had on release.
//!
//! The kernel's protocol is: write the wanted driver to `driver_override`,
//! unbind from the current driver, then ask `drivers_probe` to match the
//! device again, which now only `vfio-pci` may claim. Release does the same
//! in reverse with the override cleared. Every write goes through
//! [`SysfsWriter`], so tests check the exact order on a recorded tree.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::PciAddress;
use crate::sysfs::{SysfsError, link_target_name, list_dir, read_optional};

/// The driver DPDK applications need.
pub const VFIO_PCI: &str = "vfio-pci";

/// Writes one value to a sysfs attribute, addressed relative to the sysfs
/// root (`bus/pci/drivers_probe`). The only way this module changes state.
pub trait SysfsWriter {
    /// Writes `value` in one `write(2)`, never creating the file.
    fn write(&mut self, rel_path: &Path, value: &str) -> io::Result<()>;
}

impl<W: SysfsWriter + ?Sized> SysfsWriter for &mut W {
    fn write(&mut self, rel_path: &Path, value: &str) -> io::Result<()> {
        (**self).write(rel_path, value)
    }
}

/// The real writer, rooted at the sysfs mount (normally `/sys`).
#[derive(Debug, Clone)]
pub struct FsSysfsWriter {
    root: PathBuf,
}

impl FsSysfsWriter {
    /// A writer for the sysfs tree at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsSysfsWriter { root: root.into() }
    }
}

impl SysfsWriter for FsSysfsWriter {
    fn write(&mut self, rel_path: &Path, value: &str) -> io::Result<()> {
        // No O_CREAT: a missing attribute must be an error, as in sysfs.
        let mut file = OpenOptions::new()
            .write(true)
            .open(self.root.join(rel_path))?;
        file.write_all(value.as_bytes())
    }
}

/// Why binding or restoring a driver failed; each names the device.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// No such PCI device under the sysfs root.
    #[error("{address}: no such PCI device ({path} is missing)")]
    DeviceNotFound {
        /// The device.
        address: PciAddress,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The vfio-pci driver is not registered.
    #[error(
        "{address}: the vfio-pci driver is not loaded ({path} is missing); run `modprobe vfio-pci`"
    )]
    VfioNotLoaded {
        /// The device.
        address: PciAddress,
        /// The missing driver directory.
        path: PathBuf,
    },
    /// The device has no IOMMU group, so vfio cannot hand it to user space.
    #[error(
        "{address}: no IOMMU group ({path} is missing); enable the IOMMU (intel_iommu=on or amd_iommu=on) or load vfio with enable_unsafe_noiommu_mode=1"
    )]
    NoIommuGroup {
        /// The device.
        address: PciAddress,
        /// The missing link.
        path: PathBuf,
    },
    /// A sysfs write failed.
    #[error("{address}: writing {value:?} to {path} failed: {source}")]
    Write {
        /// The device.
        address: PciAddress,
        /// The attribute, relative to the sysfs root.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A sysfs read failed.
    #[error("{address}: {source}")]
    Read {
        /// The device.
        address: PciAddress,
        /// The read failure.
        #[source]
        source: SysfsError,
    },
    /// The device did not reach the expected state in time.
    #[error("{address}: gave up after {timeout:?} waiting for {what}")]
    Timeout {
        /// The device.
        address: PciAddress,
        /// What was awaited ("driver vfio-pci to bind").
        what: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// Binding failed and the device was put back (or could not be).
    #[error("{cause}; {}", match .undo_error { None => "the device was given back to its driver".to_string(), Some(e) => format!("giving the device back ALSO FAILED: {e}") })]
    Aborted {
        /// The failure.
        #[source]
        cause: Box<BindError>,
        /// Why undoing failed, if it did.
        undo_error: Option<String>,
    },
}

/// What a claim's record keeps about a binding, to undo it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindRecord {
    /// The device.
    pub address: PciAddress,
    /// False when the device already used vfio-pci: release leaves it so.
    pub changed: bool,
    /// The driver before binding (`iavf`, `mlx5_core`), if any.
    pub original_driver: Option<String>,
    /// `driver_override` before binding, if one was set.
    pub original_override: Option<String>,
    /// Netdevs the device had before, to wait for on release.
    pub netdevs: Vec<String>,
    /// IOMMU group at bind time; it can change across reboots, so the value
    /// used for the CDI spec must be this one.
    pub iommu_group: u32,
    /// True in vfio no-IOMMU mode (`/dev/vfio/noiommu-N`): no DMA isolation.
    pub no_iommu: bool,
    /// The vfio group device to hand to the container.
    pub vfio_device: PathBuf,
}

/// Binds devices to vfio-pci and back, reading from a sysfs root and a dev
/// root and writing through a [`SysfsWriter`].
#[derive(Debug)]
pub struct DriverBinder<W> {
    sysfs_root: PathBuf,
    dev_root: PathBuf,
    writer: W,
    timeout: Duration,
    poll: Duration,
}

impl<W: SysfsWriter> DriverBinder<W> {
    /// A binder for the tree at `sysfs_root` (`/sys`) and `dev_root`
    /// (`/dev`), waiting at most 10 s for each driver change.
    pub fn new(sysfs_root: impl Into<PathBuf>, dev_root: impl Into<PathBuf>, writer: W) -> Self {
        DriverBinder {
            sysfs_root: sysfs_root.into(),
            dev_root: dev_root.into(),
            writer,
            timeout: Duration::from_secs(10),
            poll: Duration::from_millis(20),
        }
    }

    /// Changes the bound on each wait (driver bind/unbind, netdev appearing).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The writer, for tests that inspect what was written.
    pub fn writer(&self) -> &W {
        &self.writer
    }

    fn device_rel(address: PciAddress) -> PathBuf {
        Path::new("bus/pci/devices").join(address.to_string())
    }

    fn device_dir(&self, address: PciAddress) -> PathBuf {
        self.sysfs_root.join(Self::device_rel(address))
    }

    fn read<T>(address: PciAddress, r: Result<T, SysfsError>) -> Result<T, BindError> {
        r.map_err(|source| BindError::Read { address, source })
    }

    /// The driver the device is bound to now.
    pub fn current_driver(&self, address: PciAddress) -> Result<Option<String>, BindError> {
        Self::read(
            address,
            link_target_name(&self.device_dir(address).join("driver")),
        )
    }

    /// The device's IOMMU group number, `None` without an IOMMU group.
    pub fn iommu_group(&self, address: PciAddress) -> Result<Option<u32>, BindError> {
        let link = self.device_dir(address).join("iommu_group");
        let name = Self::read(address, link_target_name(&link))?;
        match name {
            None => Ok(None),
            Some(n) => n.parse().map(Some).map_err(|_| BindError::Read {
                address,
                source: SysfsError::Parse {
                    path: link,
                    content: n,
                    expected: "a link to kernel/iommu_groups/<number>",
                },
            }),
        }
    }

    /// True when vfio runs in no-IOMMU mode for `group`: the kernel then
    /// names the group device `/dev/vfio/noiommu-N`.
    pub fn is_no_iommu(&self, group: u32) -> bool {
        self.dev_root
            .join("vfio")
            .join(format!("noiommu-{group}"))
            .exists()
    }

    fn netdevs(&self, address: PciAddress) -> Result<Vec<String>, BindError> {
        Self::read(address, list_dir(&self.device_dir(address).join("net")))
    }

    fn write(&mut self, address: PciAddress, rel: PathBuf, value: &str) -> Result<(), BindError> {
        self.writer
            .write(&rel, value)
            .map_err(|source| BindError::Write {
                address,
                path: rel,
                value: value.to_string(),
                source,
            })
    }

    fn wait_for(
        &self,
        address: PciAddress,
        what: &str,
        mut done: impl FnMut() -> Result<bool, BindError>,
    ) -> Result<(), BindError> {
        let start = Instant::now();
        loop {
            if done()? {
                return Ok(());
            }
            if start.elapsed() >= self.timeout {
                return Err(BindError::Timeout {
                    address,
                    what: what.to_string(),
                    timeout: self.timeout,
                });
            }
            std::thread::sleep(self.poll);
        }
    }

    fn wait_driver(&self, address: PciAddress, want: Option<&str>) -> Result<(), BindError> {
        let what = match want {
            Some(d) => format!("driver {d} to bind"),
            None => "the driver to unbind".to_string(),
        };
        self.wait_for(address, &what, || {
            Ok(self.current_driver(address)?.as_deref() == want)
        })
    }

    /// Binds `address` to vfio-pci and returns what release needs:
    /// [`DriverBinder::plan_vfio`] then [`DriverBinder::apply_vfio`], for
    /// callers with nothing to save in between.
    pub fn bind_to_vfio(&mut self, address: PciAddress) -> Result<BindRecord, BindError> {
        let planned = self.plan_vfio(address)?;
        self.apply_vfio(planned)
    }

    /// Reads what a bind to vfio-pci would change, changing nothing: the
    /// record to save *before* [`DriverBinder::apply_vfio`], so a crash in
    /// the middle of the switch leaves a record that [`DriverBinder::restore`]
    /// can undo (restoring a device still on its own driver is harmless).
    ///
    /// Checks that vfio-pci is loaded and the device has an IOMMU group, so
    /// a misconfigured node fails before anything changes. A device already
    /// on vfio-pci gets `changed: false` and is left alone.
    pub fn plan_vfio(&self, address: PciAddress) -> Result<BindRecord, BindError> {
        let dev = self.device_dir(address);
        if !dev.exists() {
            return Err(BindError::DeviceNotFound { address, path: dev });
        }
        let vfio = self.sysfs_root.join("bus/pci/drivers").join(VFIO_PCI);
        if !vfio.is_dir() {
            return Err(BindError::VfioNotLoaded {
                address,
                path: vfio,
            });
        }
        let iommu_group = self
            .iommu_group(address)?
            .ok_or_else(|| BindError::NoIommuGroup {
                address,
                path: dev.join("iommu_group"),
            })?;
        let original_driver = self.current_driver(address)?;
        let original_override = Self::read(address, read_optional(&dev.join("driver_override")))?
            .filter(|v| !v.is_empty() && v != "(null)");
        Ok(BindRecord {
            address,
            changed: original_driver.as_deref() != Some(VFIO_PCI),
            original_driver,
            original_override,
            netdevs: self.netdevs(address)?,
            iommu_group,
            no_iommu: false,
            vfio_device: self.vfio_device(iommu_group),
        })
    }

    /// Carries out a planned bind and returns the final record (the vfio
    /// group device is known once vfio-pci has the device). If a step fails
    /// after the override was written, the device is given back to its
    /// original driver before the error is returned.
    pub fn apply_vfio(&mut self, mut record: BindRecord) -> Result<BindRecord, BindError> {
        if record.changed
            && let Err(cause) = self.switch_to_vfio(&record)
        {
            let undo_error = self.restore(&record).err().map(|e| e.to_string());
            return Err(BindError::Aborted {
                cause: Box::new(cause),
                undo_error,
            });
        }
        record.no_iommu = self.is_no_iommu(record.iommu_group);
        record.vfio_device = self.vfio_device(record.iommu_group);
        Ok(record)
    }

    /// `/dev/vfio/N`, or `/dev/vfio/noiommu-N` in no-IOMMU mode.
    fn vfio_device(&self, group: u32) -> PathBuf {
        let name = if self.is_no_iommu(group) {
            format!("noiommu-{group}")
        } else {
            group.to_string()
        };
        self.dev_root.join("vfio").join(name)
    }

    fn switch_to_vfio(&mut self, record: &BindRecord) -> Result<(), BindError> {
        let address = record.address;
        let addr = address.to_string();
        self.write(
            address,
            Self::device_rel(address).join("driver_override"),
            VFIO_PCI,
        )?;
        if let Some(driver) = &record.original_driver {
            let unbind = Path::new("bus/pci/drivers").join(driver).join("unbind");
            self.write(address, unbind, &addr)?;
            self.wait_driver(address, None)?;
            if !record.netdevs.is_empty() {
                self.wait_for(address, "its netdev to disappear", || {
                    Ok(self.netdevs(address)?.is_empty())
                })?;
            }
        }
        self.write(address, "bus/pci/drivers_probe".into(), &addr)?;
        self.wait_driver(address, Some(VFIO_PCI))
    }

    /// Gives the device back: restores `driver_override`, unbinds vfio-pci,
    /// re-probes so the original driver takes it, and waits for its netdev.
    /// Safe to repeat; a record with `changed: false` does nothing.
    pub fn restore(&mut self, record: &BindRecord) -> Result<(), BindError> {
        if !record.changed {
            return Ok(());
        }
        let address = record.address;
        let addr = address.to_string();
        let override_value = record
            .original_override
            .clone()
            .unwrap_or_else(|| "\n".into());
        self.write(
            address,
            Self::device_rel(address).join("driver_override"),
            &override_value,
        )?;
        let current = self.current_driver(address)?;
        if current.is_some() && current != record.original_driver {
            if let Some(driver) = &current {
                let unbind = Path::new("bus/pci/drivers").join(driver).join("unbind");
                self.write(address, unbind, &addr)?;
            }
            self.wait_driver(address, None)?;
        }
        let Some(original) = record.original_driver.as_deref() else {
            return Ok(());
        };
        if self.current_driver(address)?.is_none() {
            self.write(address, "bus/pci/drivers_probe".into(), &addr)?;
            if self.wait_driver(address, Some(original)).is_err()
                && self.current_driver(address)?.is_none()
            {
                // Another driver may match first without an override; ask
                // the original one by name.
                let bind = Path::new("bus/pci/drivers").join(original).join("bind");
                self.write(address, bind, &addr)?;
                self.wait_driver(address, Some(original))?;
            }
        }
        if self.current_driver(address)?.as_deref() != Some(original) {
            self.wait_driver(address, Some(original))?;
        }
        if !record.netdevs.is_empty() {
            self.wait_for(address, "its netdev to reappear", || {
                Ok(!self.netdevs(address)?.is_empty())
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::RecordingSysfsWriter;
    use std::fs;
    use std::os::unix::fs::symlink;

    const VF: &str = "0000:3b:02.1";

    fn vf() -> PciAddress {
        VF.parse().unwrap()
    }

    /// A kernel-shaped tree: one iavf VF with netdev `ens1f0v1` in IOMMU
    /// group 42, drivers iavf and (optionally) vfio-pci registered.
    fn tree(vfio_loaded: bool, iommu: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let real = root.join("devices/pci0000:3b/0000:3b:00.0").join(VF);
        fs::create_dir_all(real.join("net/ens1f0v1")).unwrap();
        fs::write(real.join("driver_override"), "(null)\n").unwrap();
        fs::create_dir_all(root.join("bus/pci/devices")).unwrap();
        symlink(
            format!("../../../devices/pci0000:3b/0000:3b:00.0/{VF}"),
            root.join("bus/pci/devices").join(VF),
        )
        .unwrap();
        fs::write(root.join("bus/pci/drivers_probe"), "").unwrap();
        let mut drivers = vec!["iavf"];
        if vfio_loaded {
            drivers.push(VFIO_PCI);
        }
        for d in drivers {
            let dd = root.join("bus/pci/drivers").join(d);
            fs::create_dir_all(&dd).unwrap();
            fs::write(dd.join("bind"), "").unwrap();
            fs::write(dd.join("unbind"), "").unwrap();
        }
        symlink("../../../../bus/pci/drivers/iavf", real.join("driver")).unwrap();
        if iommu {
            fs::create_dir_all(root.join("kernel/iommu_groups/42")).unwrap();
            symlink(
                "../../../../kernel/iommu_groups/42",
                real.join("iommu_group"),
            )
            .unwrap();
        }
        fs::create_dir_all(root.join("dev/vfio")).unwrap();
        dir
    }

    fn binder(dir: &tempfile::TempDir) -> DriverBinder<RecordingSysfsWriter> {
        let writer = RecordingSysfsWriter::new(dir.path()).with_default_driver(vf(), "iavf");
        DriverBinder::new(dir.path(), dir.path().join("dev"), writer)
    }

    #[test]
    fn binds_with_override_unbind_probe_in_that_order() {
        let dir = tree(true, true);
        let mut b = binder(&dir);
        let record = b.bind_to_vfio(vf()).unwrap();
        assert_eq!(
            b.writer().log(),
            [
                format!("bus/pci/devices/{VF}/driver_override=vfio-pci"),
                format!("bus/pci/drivers/iavf/unbind={VF}"),
                format!("bus/pci/drivers_probe={VF}"),
            ]
        );
        assert_eq!(b.current_driver(vf()).unwrap().as_deref(), Some(VFIO_PCI));
        assert_eq!(
            record,
            BindRecord {
                address: vf(),
                changed: true,
                original_driver: Some("iavf".into()),
                original_override: None,
                netdevs: vec!["ens1f0v1".into()],
                iommu_group: 42,
                no_iommu: false,
                vfio_device: dir.path().join("dev/vfio/42"),
            }
        );
    }

    #[test]
    fn a_crash_between_plan_and_switch_leaves_a_record_restore_can_use() {
        let dir = tree(true, true);
        let mut b = binder(&dir);
        let planned = b.plan_vfio(vf()).unwrap();
        assert!(b.writer().log().is_empty(), "planning writes nothing");
        assert!(planned.changed);
        // The driver died here, with only `planned` on disk; on release:
        let planned: BindRecord =
            serde_json::from_str(&serde_json::to_string(&planned).unwrap()).unwrap();
        b.restore(&planned).unwrap();
        assert_eq!(
            b.writer().log(),
            [format!("bus/pci/devices/{VF}/driver_override=\\n")],
            "only the override is written back; the device never left iavf"
        );
        assert_eq!(b.current_driver(vf()).unwrap().as_deref(), Some("iavf"));
    }

    #[test]
    fn restore_clears_override_unbinds_vfio_and_reprobes() {
        let dir = tree(true, true);
        let mut b = binder(&dir);
        let record = b.bind_to_vfio(vf()).unwrap();
        // The record survives a restart as JSON in the claim's state.
        let record: BindRecord =
            serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        b.restore(&record).unwrap();
        assert_eq!(
            &b.writer().log()[3..],
            [
                format!("bus/pci/devices/{VF}/driver_override=\\n"),
                format!("bus/pci/drivers/vfio-pci/unbind={VF}"),
                format!("bus/pci/drivers_probe={VF}"),
            ]
        );
        assert_eq!(b.current_driver(vf()).unwrap().as_deref(), Some("iavf"));
        assert!(
            dir.path()
                .join("bus/pci/devices")
                .join(VF)
                .join("net/ens1f0v1")
                .exists()
        );
        // A second restore (crash during release) changes the driver no more.
        b.restore(&record).unwrap();
        assert_eq!(b.writer().writes.len(), 7, "{:?}", b.writer().log());
    }

    #[test]
    fn a_device_already_on_vfio_is_left_alone() {
        let dir = tree(true, true);
        let dev = dir.path().join("bus/pci/devices").join(VF);
        fs::remove_file(dev.join("driver")).unwrap();
        symlink("../../../../bus/pci/drivers/vfio-pci", dev.join("driver")).unwrap();
        let mut b = binder(&dir);
        let record = b.bind_to_vfio(vf()).unwrap();
        assert!(!record.changed);
        b.restore(&record).unwrap();
        assert!(b.writer().writes.is_empty());
    }

    #[test]
    fn vfio_not_loaded_is_a_clear_error_before_any_write() {
        let dir = tree(false, true);
        let mut b = binder(&dir);
        let err = b.bind_to_vfio(vf()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{VF}: the vfio-pci driver is not loaded")),
            "{err}"
        );
        assert!(err.ends_with("run `modprobe vfio-pci`"), "{err}");
        assert!(b.writer().writes.is_empty());
    }

    #[test]
    fn missing_iommu_group_is_a_clear_error_before_any_write() {
        let dir = tree(true, false);
        let mut b = binder(&dir);
        let err = b.bind_to_vfio(vf()).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{VF}: no IOMMU group")), "{err}");
        assert!(b.writer().writes.is_empty());
    }

    #[test]
    fn no_iommu_mode_is_detected_from_the_group_device() {
        let dir = tree(true, true);
        fs::write(dir.path().join("dev/vfio/noiommu-42"), "").unwrap();
        let mut b = binder(&dir);
        let record = b.bind_to_vfio(vf()).unwrap();
        assert!(record.no_iommu);
        assert_eq!(record.vfio_device, dir.path().join("dev/vfio/noiommu-42"));
    }

    #[test]
    fn a_kernel_that_never_binds_times_out_and_the_device_is_given_back() {
        let dir = tree(true, true);
        let writer = RecordingSysfsWriter::inert(dir.path());
        let mut b = DriverBinder::new(dir.path(), dir.path().join("dev"), writer)
            .with_timeout(Duration::from_millis(50));
        let err = b.bind_to_vfio(vf()).unwrap_err().to_string();
        // The inert kernel never drops iavf, so the first wait gives up, and
        // the undo (which finds iavf still bound) succeeds.
        assert!(
            err.starts_with(&format!("{VF}: gave up after 50ms waiting for the driver to unbind; the device was given back")),
            "{err}"
        );
        let log = b.writer().log();
        assert_eq!(
            log[2],
            format!("bus/pci/devices/{VF}/driver_override=\\n"),
            "{log:?}"
        );
    }

    #[test]
    fn the_real_writer_writes_in_place_and_never_creates_files() {
        let dir = tree(true, true);
        let mut w = FsSysfsWriter::new(dir.path());
        w.write(Path::new("bus/pci/drivers_probe"), VF).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("bus/pci/drivers_probe")).unwrap(),
            VF
        );
        let err = w
            .write(Path::new("bus/pci/drivers/nosuch/bind"), VF)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!dir.path().join("bus/pci/drivers/nosuch").exists());
    }

    #[test]
    fn unknown_device_is_named() {
        let dir = tree(true, true);
        let mut b = binder(&dir);
        let other: PciAddress = "0000:3b:02.7".parse().unwrap();
        let err = b.bind_to_vfio(other).unwrap_err().to_string();
        assert!(err.starts_with("0000:3b:02.7: no such PCI device"), "{err}");
    }
}
