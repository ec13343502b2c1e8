//! What a running driver's scans need not read again.
//!
//! Much of what a scan reads about a PCI function is fixed for as long as
//! the kernel object exists: its class and IDs, whether it is a VF and of
//! which PF, where it sits in the PCIe tree. So is the owner of a
//! `class/net` or `class/infiniband` entry. What can change while the
//! object lives (its driver, IOMMU group, interface, MAC, MTU, link state,
//! a PF's VF count) is read by every scan; a PF's `virtfnN` links are read
//! again when its VF count or any of its VFs changed.
//!
//! The NUMA node is the exception. Firmware sets it; only an admin's write
//! to `numa_node` (a firmware workaround, which the kernel logs and raises
//! no event for) changes it later. Each scan re-reads it for about one
//! function in [`NUMA_REREAD_EVERY`], picked by a hash of the address, so
//! such a write is published within that many scans at an even cost per
//! scan; it was a third of the files a remembering scan opened. An event
//! about a function makes the memo [`forget`](ScanMemo::forget) it, so a
//! partial re-read that saw a new node is never undone by a later scan's
//! remembered one.
//!
//! Identity comes free with the listing: sysfs gives each kernel object's
//! node an inode number that is never reused (kernfs ids carry a
//! generation, Linux 5.5 and later), and `getdents` returns it with the
//! name. tmpfs, where the fixtures live, does not reuse them either; a
//! disk file system (ext4) does at once, so a memo is for sysfs and tmpfs
//! trees only. A device removed
//! and added again at the same address, an interface deleted and created
//! again under the same name, has a new one, and is read afresh.
//!
//! A remembered network function keeps its directory open (`O_PATH`: no
//! read buffer, only the descriptor), so its reads walk one name instead
//! of the bus link. If the object went away after the listing, reads
//! through that descriptor find nothing; the read ends with the device's
//! `subsystem` link, the first thing the kernel removes of a device, so
//! found it says every read before it was of the live device (a tree
//! without the link asks `numa_node`, there while the device lives). A
//! gone function is read afresh through the bus, as a scan without a memo
//! would. Descriptors are budgeted against `RLIMIT_NOFILE`; a function over
//! the budget is simply read in full each time.
//!
//! The interface's own directory is not kept: a kept descriptor would
//! still read an interface renamed or moved to a pod's namespace after
//! the `class/net` listing, which the path through the function's `net/`
//! no longer finds, and telling the two apart costs a `stat` that saves
//! nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::class_index::{Class, ClassIndex, Member};
use crate::inventory::Identity;
use crate::pci::PciAddress;
use crate::sysfs::{Entry, SysDir};

/// At most this many directories stay open, however high the limit.
const MAX_KEPT_DIRS: usize = 65_536;

/// A remembering scan re-reads the NUMA node of one function in this many
/// (see the module's documentation).
pub const NUMA_REREAD_EVERY: u64 = 8;

/// Memory carried from one scan of a sysfs tree to the next.
///
/// A scan given a memo returns exactly what a scan without one returns,
/// but for a NUMA node written by hand since, which it may give as it was
/// for up to [`NUMA_REREAD_EVERY`] scans; it only reads less. Keep one per
/// tree: the driver's publish loop holds one for `/sys`.
#[derive(Debug)]
pub struct ScanMemo {
    functions: Mutex<HashMap<PciAddress, Known>>,
    net: Mutex<Remembered>,
    infiniband: Mutex<Remembered>,
    /// How many function directories may stay open.
    max_dirs: usize,
    /// How many scans have used it: which functions' NUMA nodes are due.
    rounds: AtomicU64,
}

impl Default for ScanMemo {
    /// A memo that may keep up to half the process's open-file limit.
    fn default() -> Self {
        ScanMemo::with_max_dirs(dir_budget())
    }
}

impl ScanMemo {
    /// A memo that keeps at most `max_dirs` directories open (`0`: it
    /// remembers only functions that need no directory, such as devices
    /// that are not network functions, and class entries' owners).
    pub fn with_max_dirs(max_dirs: usize) -> Self {
        ScanMemo {
            functions: Mutex::default(),
            net: Mutex::default(),
            infiniband: Mutex::default(),
            max_dirs,
            rounds: AtomicU64::new(0),
        }
    }

    /// How many functions it remembers (for tests and the debug log).
    pub fn functions_known(&self) -> usize {
        lock(&self.functions).len()
    }

    /// How many function directories it holds open.
    pub fn dirs_open(&self) -> usize {
        lock(&self.functions)
            .values()
            .filter(|k| k.dir.is_some())
            .count()
    }

    /// Lets go of what it knows of `addresses`, whose next scan reads
    /// them in full. For functions read elsewhere since (a partial re-read
    /// after an event): what the memo holds of them may be older than what
    /// was published.
    pub fn forget<'a>(&self, addresses: impl IntoIterator<Item = &'a PciAddress>) {
        let mut functions = lock(&self.functions);
        for address in addresses {
            functions.remove(address);
        }
    }

    /// The number of the scan starting now.
    pub(crate) fn next_round(&self) -> u64 {
        self.rounds.fetch_add(1, Ordering::Relaxed)
    }

    /// The remembered functions, for a scan to consult and replace. A
    /// second scan running at the same time finds the memo empty and reads
    /// in full, which is slower and still right.
    pub(crate) fn take_functions(&self) -> HashMap<PciAddress, Known> {
        std::mem::take(&mut *lock(&self.functions))
    }

    /// What the last scan learned, replacing what it took.
    pub(crate) fn put_functions(&self, functions: HashMap<PciAddress, Known>) {
        *lock(&self.functions) = functions;
    }

    /// A budget for the directories the next scan keeps open.
    pub(crate) fn dir_budget(&self) -> DirBudget {
        DirBudget(AtomicUsize::new(self.max_dirs))
    }

    /// The remembered owners of a class directory's entries.
    pub(crate) fn links(&self, class: Class) -> MutexGuard<'_, Remembered> {
        match class {
            Class::Net => lock(&self.net),
            Class::Infiniband => lock(&self.infiniband),
        }
    }
}

/// A poisoned memo is still a valid memo: every entry in it was whole when
/// it was put there.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Half the soft open-file limit, leaving the rest to the driver's
/// sockets, state store and API connections.
fn dir_budget() -> usize {
    // SAFETY: getrlimit only writes the struct it is given.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: RLIMIT_NOFILE with a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    usize::try_from(limit.rlim_cur / 2)
        .unwrap_or(usize::MAX)
        .min(MAX_KEPT_DIRS)
}

/// What is remembered about one PCI function.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    /// The inode number of its `bus/pci/devices` entry when it was read.
    pub ino: u64,
    /// Its directory, kept open; `None` for a function that is not a
    /// network function (nothing more is read from it).
    pub dir: Option<Arc<SysDir>>,
    /// What cannot change while the device exists; `None`: it is not a
    /// network function.
    pub identity: Option<Arc<Identity>>,
    /// A PF's VFs as its `virtfnN` links gave them.
    pub virtfns: Option<Arc<Virtfns>>,
    /// Its NUMA node as last read.
    pub numa_node: Option<u32>,
}

/// A PF's `virtfnN` links, valid while its VF count and every VF it names
/// are the same objects they were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Virtfns {
    /// `sriov_numvfs` when they were read.
    pub num_vfs: u32,
    /// The VFs in index order, each with its entry's inode number then.
    pub vfs: Vec<(PciAddress, u64)>,
}

impl Virtfns {
    /// Whether the links still hold: same count, and each VF is listed
    /// with the inode number it had (so none was removed and re-created).
    pub fn still_hold(&self, num_vfs: u32, ino_of: impl Fn(PciAddress) -> Option<u64>) -> bool {
        self.num_vfs == num_vfs && self.vfs.iter().all(|&(vf, ino)| ino_of(vf) == Some(ino))
    }
}

/// How many more directories a scan may keep open.
#[derive(Debug)]
pub(crate) struct DirBudget(AtomicUsize);

impl DirBudget {
    /// Takes one place; false when none is left.
    pub fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Whether any place is left: a scan with none (a one-off scan, or a
    /// large node past the limit) keeps no more directories, so it need
    /// not learn what only a kept directory's reads use.
    pub fn any_left(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// Remembered class entries by name: the entry's inode number and the
/// function it belongs to (`None`: a virtual or child device's).
pub(crate) type Links = HashMap<String, (u64, Option<(PciAddress, Member)>)>;

/// What is remembered of one class directory: its entries' owners, and
/// the index the last listing (sorted) made, given again while a listing
/// is the same.
#[derive(Debug, Default)]
pub(crate) struct Remembered {
    pub links: Links,
    pub index: Option<(Vec<Entry>, Arc<ClassIndex>)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class_index::Classes;
    use crate::fixture::{self, Fixture};
    use crate::inventory::{Inventory, scan, scan_remembering};
    use std::collections::BTreeSet;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};

    fn built(f: Fixture) -> tempfile::TempDir {
        let dir = tempfile::tempdir_in(fixture::scratch_base()).unwrap();
        f.build(dir.path()).unwrap();
        dir
    }

    fn remembering(root: &Path, memo: &ScanMemo) -> Inventory {
        scan_remembering(root, memo, |_, _, _: &Classes| Ok(()))
            .unwrap()
            .0
    }

    /// Scans with `memo` and checks the result against a scan without one.
    #[track_caller]
    fn same_as_fresh(root: &Path, memo: &ScanMemo, step: &str) -> Inventory {
        let with = remembering(root, memo);
        let fresh = scan(root).unwrap();
        assert_eq!(with.functions, fresh.functions, "after {step}");
        assert_eq!(with.skipped, fresh.skipped, "after {step}");
        with
    }

    fn device(root: &Path, address: &str) -> PathBuf {
        fs::canonicalize(root.join("bus/pci/devices").join(address)).unwrap()
    }

    /// Copies a device directory, links as links.
    fn copy_tree(from: &Path, to: &Path) {
        fs::create_dir(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let (src, dst) = (entry.path(), to.join(entry.file_name()));
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
            } else if kind.is_dir() {
                copy_tree(&src, &dst);
            } else {
                fs::copy(&src, &dst).unwrap();
            }
        }
    }

    /// Makes `dir` again with the same content, as a new object (only a
    /// test tree can): what was kept open of it reads nothing.
    fn replace_in_place(dir: &Path) {
        let copy = dir.with_file_name("replaced-in-place");
        copy_tree(dir, &copy);
        fs::remove_dir_all(dir).unwrap();
        fs::rename(&copy, dir).unwrap();
    }

    #[test]
    fn a_remembering_scan_reads_what_a_fresh_scan_reads_on_every_fixture() {
        for f in Fixture::ALL {
            let dir = built(f);
            let memo = ScanMemo::default();
            let first = same_as_fresh(dir.path(), &memo, "the first scan");
            let again = same_as_fresh(dir.path(), &memo, "a second scan");
            assert_eq!(again.functions, first.functions, "{f}");
            // Every network function is remembered with its directory.
            assert_eq!(memo.dirs_open(), first.functions.len(), "{f}");
            assert!(memo.functions_known() >= first.functions.len(), "{f}");
        }
    }

    #[test]
    fn what_can_change_is_read_again_by_every_scan() {
        let dir = built(Fixture::E810);
        let root = dir.path();
        let memo = ScanMemo::default();
        same_as_fresh(root, &memo, "the first scan");
        let vf = device(root, "0000:af:01.0");
        let pf = device(root, "0000:af:00.0");

        fs::write(vf.join("net/ens3f0v0/mtu"), "9000\n").unwrap();
        fs::write(vf.join("net/ens3f0v0/address"), "02:11:22:33:44:55\n").unwrap();
        fs::write(pf.join("net/ens3f0/operstate"), "down\n").unwrap();
        // A PF driver that sets its own VF limit when it binds.
        fs::write(pf.join("sriov_totalvfs"), "7\n").unwrap();
        let inv = same_as_fresh(root, &memo, "MTU, MAC, link state and VF limit writes");
        let f = inv
            .functions
            .iter()
            .find(|f| f.address.to_string() == "0000:af:01.0");
        assert_eq!(f.and_then(|f| f.netdev.as_ref()?.mtu), Some(9000));

        fs::remove_file(vf.join("driver")).unwrap();
        same_as_fresh(root, &memo, "an unbind");

        // The interface deleted and made again under its name, with
        // another MAC.
        let netdev = vf.join("net/ens3f0v0");
        replace_in_place(&netdev);
        fs::write(netdev.join("address"), "02:11:22:33:44:66\n").unwrap();
        let inv = same_as_fresh(root, &memo, "an interface made again");
        let f = inv
            .functions
            .iter()
            .find(|f| f.address.to_string() == "0000:af:01.0");
        let mac = f.and_then(|f| f.netdev.as_ref()?.mac.as_deref());
        assert_eq!(mac, Some("02:11:22:33:44:66"));

        fixture::rename_class_device(root, "net", &vf.join("net/ens3f0v0"), "fronthaul0").unwrap();
        same_as_fresh(root, &memo, "an interface rename");

        fixture::remove_class_dir(root, "net", &vf.join("net")).unwrap();
        same_as_fresh(root, &memo, "the interface leaving for a pod");

        // An IOMMU driver that came up late gives an existing device a group.
        let vf1 = device(root, "0000:af:01.1");
        let _ = fs::remove_file(vf1.join("iommu_group"));
        same_as_fresh(root, &memo, "a device without an IOMMU group");
        symlink(
            "../../../../kernel/iommu_groups/99",
            vf1.join("iommu_group"),
        )
        .unwrap();
        same_as_fresh(root, &memo, "its group appearing");
    }

    /// Writes `node` as the NUMA node of every network function in `inv`.
    fn write_numa(root: &Path, inv: &Inventory, node: u32) {
        for f in &inv.functions {
            let numa = device(root, &f.address.to_string()).join("numa_node");
            fs::write(numa, format!("{node}\n")).unwrap();
        }
    }

    #[test]
    fn a_numa_node_written_by_hand_is_published_within_the_reread_period() {
        let dir = built(Fixture::E810);
        let root = dir.path();
        let memo = ScanMemo::default();
        let first = same_as_fresh(root, &memo, "the first scan");
        // An admin's firmware workaround: no event says so.
        write_numa(root, &first, 3);
        let fresh = scan(root).unwrap();
        let moved = |inv: &Inventory| -> BTreeSet<PciAddress> {
            let on_3 = inv.functions.iter().filter(|f| f.numa_node == Some(3));
            on_3.map(|f| f.address).collect()
        };
        let mut seen = BTreeSet::new();
        for n in 1..=NUMA_REREAD_EVERY {
            let inv = remembering(root, &memo);
            // Only the node may lag, and a node once seen is kept.
            let without_numa = |inv: &Inventory| {
                let mut functions = inv.functions.clone();
                functions.iter_mut().for_each(|f| f.numa_node = None);
                functions
            };
            assert_eq!(without_numa(&inv), without_numa(&fresh), "scan {n}");
            let now = moved(&inv);
            assert!(now.is_superset(&seen), "scan {n} went back");
            if n == 1 {
                assert!(now.len() < fresh.functions.len(), "not all re-read at once");
            }
            seen = now;
        }
        assert_eq!(seen.len(), fresh.functions.len());
        same_as_fresh(root, &memo, "the re-read period");
    }

    #[test]
    fn a_forgotten_function_is_read_in_full_by_the_next_scan() {
        let dir = built(Fixture::E810);
        let root = dir.path();
        let memo = ScanMemo::default();
        let first = same_as_fresh(root, &memo, "the first scan");
        write_numa(root, &first, 2);
        memo.forget(first.functions.iter().map(|f| &f.address));
        assert_eq!(memo.dirs_open(), 0);
        same_as_fresh(root, &memo, "forgetting every function");
    }

    #[test]
    fn a_device_going_away_during_a_scan_is_not_published_half_read() {
        let dir = built(Fixture::ConnectX6Dx);
        let root = dir.path();
        let memo = ScanMemo::default();
        same_as_fresh(root, &memo, "the first scan");
        // The kernel's teardown of the second PF begins after the listing,
        // while the first PF is read: `bus_remove_device` removes the
        // `subsystem` link, then the bus link, then the attributes, the
        // driver and the interfaces. Caught after the first two, the
        // directory still reads as a whole PF.
        let pf1 = device(root, "0000:3b:00.1");
        let torn = std::sync::Once::new();
        let (inv, _) = scan_remembering(root, &memo, |_, address, _: &Classes| {
            if address == addr("0000:3b:00.0") {
                torn.call_once(|| {
                    fs::remove_file(pf1.join("subsystem")).unwrap();
                    fs::remove_file(root.join("bus/pci/devices/0000:3b:00.1")).unwrap();
                });
            }
            Ok(())
        })
        .unwrap();
        assert!(torn.is_completed());
        assert!(
            inv.functions
                .iter()
                .all(|f| f.address != addr("0000:3b:00.1"))
        );
        let skipped = inv.skipped.iter().find(|s| s.entry == "0000:3b:00.1");
        assert_eq!(
            skipped.map(|s| s.reason.as_str()),
            Some("device disappeared during the scan")
        );
    }

    #[test]
    fn a_tree_without_subsystem_links_asks_numa_node_whether_a_device_is_there() {
        let dir = built(Fixture::E810);
        let root = dir.path();
        let first = scan(root).unwrap();
        for f in &first.functions {
            fs::remove_file(device(root, &f.address.to_string()).join("subsystem")).unwrap();
        }
        let memo = ScanMemo::default();
        same_as_fresh(root, &memo, "the first scan");
        same_as_fresh(root, &memo, "a remembering scan");
        // A directory replaced in place: gone under the kept descriptor.
        let vf = device(root, "0000:af:01.2");
        replace_in_place(&vf);
        fs::remove_file(vf.join("physfn")).unwrap();
        same_as_fresh(root, &memo, "a directory replaced in place");
    }

    #[test]
    fn numa_re_reads_are_spread_over_the_rounds_whatever_the_layout() {
        // A VM's NICs, all function 0, and a NIC's VFs, all functions.
        let vm: Vec<PciAddress> = (0..64)
            .map(|slot| addr(&format!("0000:{:02x}:{:02x}.0", slot / 32, slot % 32)))
            .collect();
        let vfs: Vec<PciAddress> = (0..256u32)
            .map(|i| addr(&format!("0000:3b:{:02x}.{}", i / 8 % 32, i % 8)))
            .collect();
        for (layout, addresses) in [("vm", &vm), ("vfs", &vfs)] {
            let mut total = 0;
            for round in 0..NUMA_REREAD_EVERY {
                let due = addresses
                    .iter()
                    .filter(|&&a| crate::inventory::numa_due(a, round))
                    .count();
                let even = addresses.len() / NUMA_REREAD_EVERY as usize;
                assert!(due <= 2 * even + 2, "{layout} round {round}: {due}");
                total += due;
            }
            // Each address is due once in a period.
            assert_eq!(total, addresses.len(), "{layout}");
        }
    }

    #[test]
    fn a_device_that_lost_its_iommu_group_is_still_read_whole() {
        let dir = built(Fixture::E810);
        let root = dir.path();
        let memo = ScanMemo::default();
        same_as_fresh(root, &memo, "the first scan");
        // A group gone with the device still there: `numa_node` says so.
        let vf = device(root, "0000:af:01.1");
        fs::remove_file(vf.join("iommu_group")).unwrap();
        for n in 0..NUMA_REREAD_EVERY {
            same_as_fresh(root, &memo, &format!("scan {n} without the group"));
        }
    }

    #[test]
    fn a_device_added_again_at_the_same_address_is_read_afresh() {
        let dir = built(Fixture::E810);
        let root = dir.path();
        let memo = ScanMemo::default();
        same_as_fresh(root, &memo, "the first scan");
        // Re-created as the kernel does it: a new bus link (a new inode
        // number), here with another subsystem ID and without SR-IOV's
        // `physfn`, so what the memo holds would be wrong.
        let link = root.join("bus/pci/devices/0000:af:01.2");
        let target = fs::read_link(&link).unwrap();
        let vf = device(root, "0000:af:01.2");
        fs::remove_file(&link).unwrap();
        symlink(&target, &link).unwrap();
        let uevent = fs::read_to_string(vf.join("uevent")).unwrap();
        let old_ids = uevent
            .lines()
            .find_map(|l| l.strip_prefix("PCI_SUBSYS_ID="))
            .unwrap()
            .to_string();
        fs::write(vf.join("uevent"), uevent.replace(&old_ids, "1234:5678")).unwrap();
        fs::write(vf.join("subsystem_vendor"), "0x1234\n").unwrap();
        fs::write(vf.join("subsystem_device"), "0x5678\n").unwrap();
        let inv = same_as_fresh(root, &memo, "a re-created device");
        let f = inv
            .functions
            .iter()
            .find(|f| f.address.to_string() == "0000:af:01.2");
        assert_eq!(f.map(|f| f.subsystem_device_id), Some(0x5678));

        // A directory replaced under the same link (only a test tree can):
        // reads through the kept descriptor find nothing, and the device is
        // read through the bus.
        replace_in_place(&vf);
        fs::write(vf.join("numa_node"), "0\n").unwrap();
        fs::remove_file(vf.join("physfn")).unwrap();
        same_as_fresh(root, &memo, "a directory replaced in place");
    }

    #[test]
    fn a_pfs_vfs_are_read_again_when_they_change() {
        let dir = built(Fixture::E810);
        let root = dir.path();
        let memo = ScanMemo::default();
        same_as_fresh(root, &memo, "the first scan");
        let pf = device(root, "0000:af:00.0");
        let last = |pf: &Path| {
            let n: u32 = fs::read_to_string(pf.join("sriov_numvfs"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            n - 1
        };
        // The last VF torn down: link, directory, count.
        let n = last(&pf);
        let vf = fs::canonicalize(pf.join(format!("virtfn{n}"))).unwrap();
        let name = vf.file_name().unwrap().to_owned();
        fs::remove_file(pf.join(format!("virtfn{n}"))).unwrap();
        fs::remove_file(root.join("bus/pci/devices").join(&name)).unwrap();
        fixture::remove_class_dir(root, "net", &vf.join("net")).unwrap();
        fs::remove_dir_all(&vf).unwrap();
        fs::write(pf.join("sriov_numvfs"), format!("{n}\n")).unwrap();
        let inv = same_as_fresh(root, &memo, "a VF torn down");
        assert!(
            inv.functions
                .iter()
                .all(|f| f.address.to_string() != name.to_string_lossy())
        );

        // Same count, one VF re-created (a new bus link): its index is
        // read from the links again.
        let n = last(&pf);
        let link = root.join("bus/pci/devices").join(
            fs::read_link(pf.join(format!("virtfn{n}")))
                .unwrap()
                .file_name()
                .unwrap(),
        );
        let target = fs::read_link(&link).unwrap();
        fs::remove_file(&link).unwrap();
        symlink(&target, &link).unwrap();
        same_as_fresh(root, &memo, "a VF re-created");
    }

    #[test]
    fn a_memo_keeps_no_more_directories_than_its_budget() {
        let dir = built(Fixture::ConnectX6Dx);
        let memo = ScanMemo::with_max_dirs(3);
        same_as_fresh(dir.path(), &memo, "the first scan");
        same_as_fresh(dir.path(), &memo, "a second scan");
        assert_eq!(memo.dirs_open(), 3);
        let none = ScanMemo::with_max_dirs(0);
        same_as_fresh(dir.path(), &none, "a scan that keeps nothing open");
        assert_eq!(none.dirs_open(), 0);
    }

    #[test]
    fn an_unchanged_class_gives_the_same_index_and_a_changed_one_a_new_one() {
        let dir = built(Fixture::ConnectX6Dx);
        let root = dir.path();
        let memo = ScanMemo::default();
        let first = ClassIndex::read_remembering(root, Class::Net, &memo).unwrap();
        let again = ClassIndex::read_remembering(root, Class::Net, &memo).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let vf = device(root, "0000:3b:00.2");
        let old = fs::read_dir(vf.join("net"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        fixture::rename_class_device(root, "net", &old, "fronthaul0").unwrap();
        let renamed = ClassIndex::read_remembering(root, Class::Net, &memo).unwrap();
        assert!(!Arc::ptr_eq(&first, &renamed));
        let names: Vec<&str> = renamed
            .members("0000:3b:00.2".parse().unwrap())
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["fronthaul0"]);
        assert_eq!(
            renamed.members("0000:3b:00.2".parse().unwrap()),
            ClassIndex::read(root, Class::Net)
                .unwrap()
                .members("0000:3b:00.2".parse().unwrap())
        );
    }

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn virtfns_hold_while_the_count_and_every_vf_are_the_same() {
        let v = Virtfns {
            num_vfs: 2,
            vfs: vec![(addr("0000:3b:00.2"), 10), (addr("0000:3b:00.3"), 11)],
        };
        let listed = |a: PciAddress| match a.to_string().as_str() {
            "0000:3b:00.2" => Some(10),
            "0000:3b:00.3" => Some(11),
            _ => None,
        };
        assert!(v.still_hold(2, listed));
        assert!(!v.still_hold(3, listed), "the VF count changed");
        // A VF re-created at the same address has a new inode number.
        assert!(!v.still_hold(2, |a| listed(a).map(|ino| ino + 100)));
        assert!(!v.still_hold(2, |_| None), "the VFs are gone");
    }

    #[test]
    fn a_budget_hands_out_only_what_it_has() {
        let budget = ScanMemo::with_max_dirs(2).dir_budget();
        assert!(budget.take() && budget.take());
        assert!(!budget.take());
        assert!(!ScanMemo::with_max_dirs(0).dir_budget().take());
    }

    #[test]
    fn the_default_budget_is_within_the_open_file_limit() {
        let budget = dir_budget();
        assert!(budget <= MAX_KEPT_DIRS);
    }
}
