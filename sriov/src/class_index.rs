//! Which PCI function owns each entry of a sysfs class directory
//! (`class/net`, `class/infiniband`), read in one pass over the class.
//!
//! A full scan needs every function's interfaces and RDMA devices. Listing
//! each function's `net/` and `infiniband/` costs an open, two `getdents`
//! and a close per function, most of them for directories that hold one
//! name; the class directory lists the same kernel objects once, and one
//! `readlink` per entry says whose each is. The kernel keeps the two views
//! in step (they are the same kobjects, filtered by the same network
//! namespace), so either answers the same question.
//!
//! A tree without the class directory (a hand-built test tree, a container
//! that bind-mounts only `bus/` and `devices/`) has no index: callers list
//! per function. The index is trusted for what it lists; a function it
//! lists nothing for is still asked, since an interface can appear while
//! a scan runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::fan_out::map_chunks;
use crate::memo::{Links, Remembered, ScanMemo};
use crate::pci::PciAddress;
use crate::sysfs::{Entry, SysDir, SysfsError};

/// A sysfs class whose entries hang off PCI functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Network interfaces: `<function>/net/<if>`, or
    /// `<function>/virtioN/net/<if>` for virtio-net.
    Net,
    /// RDMA devices: `<function>/infiniband/<dev>`.
    Infiniband,
}

impl Class {
    /// The directory name under `class/` and under a function.
    pub fn dir(self) -> &'static str {
        match self {
            Class::Net => "net",
            Class::Infiniband => "infiniband",
        }
    }
}

/// One class entry of a function: where it sits under the function's
/// directory and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The directory under the function that holds it (`net`,
    /// `virtio2/net`, `infiniband`).
    pub dir: String,
    /// The entry's name (`ens1f0v3`, `mlx5_4`).
    pub name: String,
}

/// The class indexes a scan reads: `None` where the tree has no such
/// directory (then each function's own directory is listed).
#[derive(Debug, Clone, Default)]
pub struct Classes {
    /// `class/net`.
    pub net: Option<Arc<ClassIndex>>,
    /// `class/infiniband`.
    pub infiniband: Option<Arc<ClassIndex>>,
}

/// The members of one class, by the PCI function they belong to.
#[derive(Debug, Clone, Default)]
pub struct ClassIndex {
    by_function: HashMap<PciAddress, Vec<Member>>,
}

impl ClassIndex {
    /// Reads `<sysfs_root>/class/<class>`: `None` when the tree has no such
    /// directory or it cannot be read. No index is never an error: callers
    /// then list each function's own directory, whose reads report whatever
    /// is wrong with the device it belongs to.
    ///
    /// An entry that vanishes while it is read is left out (a scan reads a
    /// moving tree; the event it caused brings a rescan). Entries of
    /// virtual devices and of devices other than PCI functions (USB NICs,
    /// mlx5 sub-functions) are not any function's own and are left out too.
    pub fn read(sysfs_root: &Path, class: Class) -> Option<Arc<ClassIndex>> {
        Self::try_read(sysfs_root, class, &mut Remembered::default())
            .ok()
            .flatten()
    }

    /// [`read`](Self::read) that resolves the entries `memo` has seen
    /// before without a `readlink` (an entry with the same name and inode
    /// number is the same link, pointing where it did), and remembers the
    /// rest for next time. A class whose entries are all as they were
    /// gives the same index again.
    pub fn read_remembering(
        sysfs_root: &Path,
        class: Class,
        memo: &ScanMemo,
    ) -> Option<Arc<ClassIndex>> {
        let mut remembered = memo.links(class);
        match Self::try_read(sysfs_root, class, &mut remembered) {
            Ok(index) => index,
            Err(_) => {
                *remembered = Remembered::default();
                None
            }
        }
    }

    /// Reads the class with `remembered` as what is known of its entries,
    /// and leaves in it what is known now.
    fn try_read(
        sysfs_root: &Path,
        class: Class,
        remembered: &mut Remembered,
    ) -> Result<Option<Arc<ClassIndex>>, SysfsError> {
        let path = sysfs_root.join("class").join(class.dir());
        let listed = match SysDir::open(&path)? {
            // Unsorted: the index is built from a map, and an unchanged
            // directory lists in the same order, so the comparison below
            // still finds it unchanged (a mere reorder would rebuild it).
            Some(dir) => dir.entries_unsorted(".")?.map(|entries| (dir, entries)),
            None => None,
        };
        let Some((dir, entries)) = listed else {
            *remembered = Remembered::default();
            return Ok(None);
        };
        // The same entries as last time, each the same link: the same index.
        if let Some((listed, index)) = &remembered.index
            && *listed == entries
        {
            return Ok(Some(index.clone()));
        }
        let links = &mut remembered.links;
        let mut known = Links::with_capacity(entries.len());
        let mut unknown = Vec::new();
        let listed = entries.clone();
        for entry in entries {
            match links.remove(&entry.name) {
                Some((ino, owner)) if ino == entry.ino => {
                    known.insert(entry.name, (ino, owner));
                }
                _ => unknown.push(entry),
            }
        }
        // One readlink per new entry, spread over the cores like the scan.
        type Part = Result<Vec<(Entry, Option<(PciAddress, Member)>)>, SysfsError>;
        let parts: Vec<Part> = map_chunks(&unknown, 256, |part| {
            let mut read = Vec::with_capacity(part.len());
            for entry in part {
                let target = match dir.link_target(&entry.name) {
                    Ok(Some(target)) => target,
                    // Gone since the listing.
                    Ok(None) => continue,
                    // Not a link: no device's entry (the kernel makes only
                    // links here; a test tree may not).
                    Err(SysfsError::Read { source, .. })
                        if source.kind() == std::io::ErrorKind::InvalidInput =>
                    {
                        read.push((entry.clone(), None));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                // Lossy, as a function's own listing reads names.
                read.push((entry.clone(), owner(&target.to_string_lossy(), class)));
            }
            Ok(read)
        });
        for part in parts {
            for (entry, owner) in part? {
                known.insert(entry.name, (entry.ino, owner));
            }
        }
        let mut by_function: HashMap<PciAddress, Vec<Member>> = HashMap::new();
        for (function, member) in known.values().filter_map(|(_, owner)| owner.clone()) {
            by_function.entry(function).or_default().push(member);
        }
        for members in by_function.values_mut() {
            members.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let index = Arc::new(ClassIndex { by_function });
        *remembered = Remembered {
            links: known,
            index: Some((listed, index.clone())),
        };
        Ok(Some(index))
    }

    /// The members of `function`, sorted by name; empty when it has none.
    pub fn members(&self, function: PciAddress) -> &[Member] {
        self.by_function
            .get(&function)
            .map_or(&[], |members| members.as_slice())
    }
}

/// The PCI function a class entry belongs to, from its link's target
/// (`../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/net/ens1f0v0`).
///
/// Pure. Only the layouts a function's own directory has count: the
/// entry right under `<function>/<class>/`, or for interfaces also under
/// `<function>/virtioN/net/`; anything deeper belongs to a child device.
pub fn owner(target: &str, class: Class) -> Option<(PciAddress, Member)> {
    let mut parts = target.rsplit('/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    if parts.next()? != class.dir() {
        return None;
    }
    let parent = parts.next()?;
    let member = |dir: String| Member {
        dir,
        name: name.to_string(),
    };
    if let Ok(function) = parent.parse::<PciAddress>() {
        return Some((function, member(class.dir().to_string())));
    }
    let virtio = parent
        .strip_prefix("virtio")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if class == Class::Net && virtio {
        let function = parts.next()?.parse::<PciAddress>().ok()?;
        return Some((function, member(format!("{parent}/net"))));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn an_interface_belongs_to_the_function_whose_net_dir_holds_it() {
        let (function, member) = owner(
            "../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/net/ens1f0v0",
            Class::Net,
        )
        .unwrap();
        assert_eq!(function, addr("0000:3b:00.2"));
        assert_eq!(member.dir, "net");
        assert_eq!(member.name, "ens1f0v0");
    }

    #[test]
    fn virtio_net_interfaces_belong_to_the_pci_function_above_the_virtio_device() {
        let (function, member) = owner(
            "../../devices/pci0000:00/0000:00:03.0/virtio2/net/eth0",
            Class::Net,
        )
        .unwrap();
        assert_eq!(function, addr("0000:00:03.0"));
        assert_eq!(member.dir, "virtio2/net");
    }

    #[test]
    fn entries_of_virtual_and_child_devices_are_no_functions_own() {
        for target in [
            "../../devices/virtual/net/lo",
            // A USB NIC under a PCI USB controller.
            "../../devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/net/usb0",
            // An mlx5 sub-function's interface under its PF.
            "../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0/mlx5_core.sf.2/net/en3s0f0s2",
            "../../devices/pci0000:00/0000:00:03.0/virtio/net/eth0",
            "",
        ] {
            assert_eq!(owner(target, Class::Net), None, "{target}");
        }
        // virtio holds interfaces, never RDMA devices.
        assert_eq!(
            owner(
                "../../devices/pci0000:00/0000:00:03.0/virtio2/infiniband/x",
                Class::Infiniband
            ),
            None
        );
    }

    #[test]
    fn an_rdma_device_belongs_to_the_function_whose_infiniband_dir_holds_it() {
        let (function, member) = owner(
            "../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/infiniband/mlx5_2",
            Class::Infiniband,
        )
        .unwrap();
        assert_eq!(
            (function, member.name.as_str()),
            (addr("0000:3b:00.2"), "mlx5_2")
        );
        // An interface's link is not an RDMA device's.
        assert_eq!(
            owner(
                "../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/net/ens1f0v0",
                Class::Infiniband
            ),
            None
        );
    }

    #[test]
    fn an_index_lists_each_functions_members_sorted_and_skips_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let class = root.path().join("class/net");
        std::fs::create_dir_all(&class).unwrap();
        for (name, target) in [
            (
                "pf0vf1",
                "../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0/net/pf0vf1",
            ),
            (
                "ens1f0np0",
                "../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0/net/ens1f0np0",
            ),
            ("lo", "../../devices/virtual/net/lo"),
        ] {
            std::os::unix::fs::symlink(target, class.join(name)).unwrap();
        }
        std::fs::create_dir(class.join("not-a-link")).unwrap();
        let index = ClassIndex::read(root.path(), Class::Net).unwrap();
        let names: Vec<&str> = index
            .members(addr("0000:3b:00.0"))
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["ens1f0np0", "pf0vf1"]);
        assert!(index.members(addr("0000:3b:00.1")).is_empty());
        // No class/infiniband in this tree: no index, list per function.
        assert!(ClassIndex::read(root.path(), Class::Infiniband).is_none());
    }
}
