//! The PCI network functions of a node, read from a sysfs tree.
//!
//! [`scan`] is a pure function of the tree under its root: the driver points
//! it at `/sys`, tests and `discover --fixture` at a tree built by
//! [`crate::fixture`]. It reads only; acting on devices lives elsewhere.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use std::sync::Arc;

use crate::class_index::{Class, ClassIndex, Classes, Member};
use crate::fan_out::map_chunks;
use crate::ids::NameCache;
use crate::memo::{DirBudget, Known, NUMA_REREAD_EVERY, ScanMemo, Virtfns};
use crate::pci::PciAddress;
use crate::sysfs::{self, Entry, JoinedPath, SysDir, SysfsError};

/// PCI base class of network controllers (`0x02xxxx`).
const CLASS_NETWORK: u32 = 0x02;
/// Network subclass of InfiniBand controllers (`0x0207xx`).
const SUBCLASS_INFINIBAND: u32 = 0x0207;
/// `ARPHRD_INFINIBAND` from `include/uapi/linux/if_arp.h`.
const ARPHRD_INFINIBAND: u32 = 32;

/// Everything a scan found: the functions, and what it had to pass over.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    /// Network functions in PCI address order.
    pub functions: Vec<PciFunction>,
    /// Entries that could not be inventoried but did not fail the scan.
    pub skipped: Vec<Skipped>,
}

/// A device the scan passed over, and why (it vanished, or is malformed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The directory entry's name under `bus/pci/devices`.
    pub entry: String,
    /// Human-readable reason.
    pub reason: String,
}

/// One PCI network function (PF, VF or a NIC without SR-IOV).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PciFunction {
    /// Address, also the sysfs directory name.
    pub address: PciAddress,
    /// PCI vendor ID.
    #[serde(serialize_with = "hex16")]
    pub vendor_id: u16,
    /// PCI device ID.
    #[serde(serialize_with = "hex16")]
    pub device_id: u16,
    /// Subsystem vendor ID.
    #[serde(serialize_with = "hex16")]
    pub subsystem_vendor_id: u16,
    /// Subsystem device ID.
    #[serde(serialize_with = "hex16")]
    pub subsystem_device_id: u16,
    /// Vendor name from the PCI ID database, if it knows the vendor.
    pub vendor_name: Option<String>,
    /// Device name from the PCI ID database, if it knows the device.
    pub device_name: Option<String>,
    /// 24-bit class code (`0x020000` Ethernet, `0x020700` InfiniBand).
    #[serde(serialize_with = "hex_class")]
    pub class: u32,
    /// Bound kernel driver; `None` when unbound.
    pub driver: Option<String>,
    /// NUMA node; `None` when the platform reports `-1`.
    pub numa_node: Option<u32>,
    /// IOMMU group; `None` without an IOMMU.
    pub iommu_group: Option<u32>,
    /// PCIe root complex, `pciDDDD:BB`, from the device's path under `/sys/devices`.
    pub pcie_root: Option<String>,
    /// PF, VF or plain function.
    pub role: Role,
    /// The function's own network interface, if a kernel driver made one.
    pub netdev: Option<NetDev>,
    /// Ethernet or InfiniBand.
    pub link_type: LinkType,
    /// E-switch mode of the PF (a VF reports its PF's).
    pub eswitch_mode: EswitchMode,
}

/// How a function relates to SR-IOV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Role {
    /// A physical function that can create VFs.
    #[serde(rename_all = "camelCase")]
    Pf {
        /// `sriov_totalvfs`.
        total_vfs: u32,
        /// `sriov_numvfs`.
        num_vfs: u32,
        /// VF addresses by index, from `virtfnN`.
        vfs: Vec<PciAddress>,
    },
    /// A virtual function of `pf`.
    Vf {
        /// The parent PF, from `physfn`.
        pf: PciAddress,
        /// The N of the PF's `virtfnN` link to this VF.
        index: u32,
    },
    /// A function without SR-IOV (a virtio NIC, an old NIC).
    Plain,
}

/// A kernel network interface of a PCI function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetDev {
    /// Interface name at scan time (names change; PCI addresses do not).
    pub name: String,
    /// Hardware address as the kernel prints it.
    pub mac: Option<String>,
    /// MTU in bytes.
    pub mtu: Option<u32>,
    /// Link speed in Mb/s; `None` when down or unknown.
    pub speed_mbps: Option<u32>,
    /// `operstate` (`up`, `down`, …).
    pub operstate: Option<String>,
    /// Whether the link has carrier (the kernel's `carrier`, `1` or `0`).
    /// Read because some drivers never set `operstate` (it stays
    /// `unknown`) though their carrier drops with the cable. `None` when not
    /// read (a VF), when the kernel refuses the read (EINVAL for an
    /// interface that is administratively down, whose `operstate` says
    /// `down` anyway) or when it holds anything but `0` or `1`.
    pub carrier: Option<bool>,
}

/// The link layer a function speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    /// Ethernet (including RoCE).
    Ethernet,
    /// InfiniBand.
    Infiniband,
}

impl LinkType {
    /// The attribute value published in slices.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkType::Ethernet => "ethernet",
            LinkType::Infiniband => "infiniband",
        }
    }
}

/// The PF's embedded switch mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EswitchMode {
    /// VFs switched by the NIC's legacy L2 switch.
    Legacy,
    /// Switchdev: VF traffic goes through representors.
    Switchdev,
    /// Not exposed in sysfs (devlink only) or not applicable.
    Unknown,
}

impl EswitchMode {
    /// The attribute value published in slices.
    pub fn as_str(self) -> &'static str {
        match self {
            EswitchMode::Legacy => "legacy",
            EswitchMode::Switchdev => "switchdev",
            EswitchMode::Unknown => "unknown",
        }
    }
}

impl PciFunction {
    /// True for VFs.
    pub fn is_vf(&self) -> bool {
        matches!(self.role, Role::Vf { .. })
    }

    /// The VF's PF and index, if it is a VF.
    pub fn vf_of(&self) -> Option<(PciAddress, u32)> {
        match self.role {
            Role::Vf { pf, index } => Some((pf, index)),
            _ => None,
        }
    }
}

/// IDs print as `lspci -nn` shows them (`15b3`), not as decimal numbers.
fn hex16<S: serde::Serializer>(id: &u16, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{id:04x}"))
}

fn hex_class<S: serde::Serializer>(class: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("0x{class:06x}"))
}

/// Why a scan failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The root has no `bus/pci/devices`.
    #[error("{0} does not exist: is the sysfs root right?")]
    NoPciBus(PathBuf),
    /// A file that must be readable was not.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
}

/// Reads every PCI network function under `sysfs_root`.
///
/// A device whose directory disappears while it is read is listed in
/// [`Inventory::skipped`]; any other unreadable or malformed file fails the
/// scan with an error naming the file, since a half-read device must not be
/// published.
pub fn scan(sysfs_root: &Path) -> Result<Inventory, InventoryError> {
    scan_with(sysfs_root, |_, _, _| Ok(())).map(|(inventory, _)| inventory)
}

/// [`scan`] that also reads more of each network function while its
/// directory is open (its RDMA devices, say), on the scan's threads.
///
/// `extra` runs once per network function, with the class indexes the
/// scan read (so an RDMA device is looked up, not listed); its results
/// are keyed by address and hold an entry for every function in the
/// inventory. Its errors are handled like the scan's own: a vanished
/// device is skipped, anything else fails the scan.
pub fn scan_with<T, F>(
    sysfs_root: &Path,
    extra: F,
) -> Result<(Inventory, HashMap<PciAddress, T>), InventoryError>
where
    T: Send,
    F: Fn(&SysDir, PciAddress, &Classes) -> Result<T, SysfsError> + Sync,
{
    // A one-off scan keeps nothing open: its memo is dropped with it.
    scan_remembering(sysfs_root, &ScanMemo::with_max_dirs(0), extra)
}

/// [`scan_with`] that reads only what can have changed since the scans
/// `memo` remembers, and leaves in it what this one learned. The result
/// is the same as without the memo, but for a NUMA node written by hand
/// since, published within a few scans (see [`crate::memo`]).
pub fn scan_remembering<T, F>(
    sysfs_root: &Path,
    memo: &ScanMemo,
    extra: F,
) -> Result<(Inventory, HashMap<PciAddress, T>), InventoryError>
where
    T: Send,
    F: Fn(&SysDir, PciAddress, &Classes) -> Result<T, SysfsError> + Sync,
{
    let devices_dir = sysfs_root.join("bus/pci/devices");
    let Some(devices) = SysDir::open(&devices_dir)? else {
        return Err(InventoryError::NoPciBus(devices_dir));
    };
    // Every function's interfaces and RDMA devices from one pass over each
    // class directory, instead of listing each function's `net/` and
    // `infiniband/`. The three listings are independent: read at once.
    let (entries, classes) = std::thread::scope(|s| {
        let net = s.spawn(|| ClassIndex::read_remembering(sysfs_root, Class::Net, memo));
        let infiniband =
            s.spawn(|| ClassIndex::read_remembering(sysfs_root, Class::Infiniband, memo));
        let entries = devices.entries_unsorted(".");
        let join = |h: std::thread::ScopedJoinHandle<'_, _>| {
            h.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        let classes = Classes {
            net: join(net),
            infiniband: join(infiniband),
        };
        (entries, classes)
    });
    let Some(entries) = entries? else {
        return Err(InventoryError::NoPciBus(devices_dir));
    };
    // In address order (the names' order, for the names the kernel gives),
    // sorted by the parsed address: comparing thousands of names that
    // share their first five bytes costs more than the listing.
    let mut keyed: Vec<(Option<PciAddress>, Entry)> = entries
        .into_iter()
        .map(|e| (e.name.parse().ok(), e))
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    let inos: Vec<(PciAddress, u64)> = keyed
        .iter()
        .filter_map(|(address, e)| Some(((*address)?, e.ino)))
        .collect();
    // Each entry goes on with its parsed address: parsed once.
    let entries = keyed;
    let known = memo.take_functions();
    let scope = Scope {
        devices: &devices,
        classes: &classes,
        known: &known,
        inos: Some(&inos),
        dirs: memo.dir_budget(),
        round: memo.next_round(),
    };
    let results: Vec<Result<Part<T>, SysfsError>> =
        map_chunks(&entries, 64, |part| scan_entries(&scope, part, &extra));
    // Sized up front: a `PciFunction` is large, and a list grown by
    // doubling copies a large node's functions over again.
    let mut inventory = Inventory {
        functions: Vec::with_capacity(entries.len()),
        skipped: Vec::new(),
    };
    let mut extras = HashMap::with_capacity(entries.len());
    let mut learned = HashMap::with_capacity(entries.len());
    let mut failed = None;
    for part in results {
        match part {
            Ok(part) => {
                inventory.functions.extend(part.found.functions);
                inventory.skipped.extend(part.found.skipped);
                extras.extend(part.extras);
                learned.extend(part.learned);
            }
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    // What was read before a failure is still true; what was known of the
    // rest is let go (with its directories, so the budget holds).
    drop(known);
    memo.put_functions(learned);
    if let Some(e) = failed {
        return Err(e.into());
    }
    inventory.functions.sort_by_key(|f| f.address);
    link_vfs_to_pfs(&mut inventory);
    extras.retain(|address, _| {
        inventory
            .functions
            .binary_search_by_key(address, |f| f.address)
            .is_ok()
    });
    Ok((inventory, extras))
}

/// What one chunk of a scan found, and what it learned for the memo.
struct Part<T> {
    found: Inventory,
    extras: Vec<(PciAddress, T)>,
    learned: Vec<(PciAddress, Known)>,
}

/// What every chunk of one scan shares.
struct Scope<'a> {
    /// `bus/pci/devices`.
    devices: &'a SysDir,
    /// The class indexes, where the tree has them.
    classes: &'a Classes,
    /// What earlier scans learned.
    known: &'a HashMap<PciAddress, Known>,
    /// Each listed entry's inode number; `None` in a partial read, which
    /// lists nothing and remembers nothing.
    inos: Option<&'a [(PciAddress, u64)]>,
    /// How many more directories may stay open.
    dirs: DirBudget,
    /// The memo's count of scans, which says whose NUMA node is due.
    round: u64,
}

impl Scope<'_> {
    fn ino_of(&self, address: PciAddress) -> Option<u64> {
        let inos = self.inos?;
        let at = inos.binary_search_by_key(&address, |&(a, _)| a).ok()?;
        Some(inos[at].1)
    }
}

/// What a partial read found: the functions at the addresses it was asked
/// to read, for [`merge`] into the last full inventory.
#[derive(Debug, Clone, Default)]
pub struct Reread {
    /// Every address read, whether a network function is there now or not:
    /// [`merge`] replaces what the last inventory said about each.
    pub addresses: BTreeSet<PciAddress>,
    /// The network functions among them, read as a full scan reads them
    /// but not yet joined to their PFs (a VF's index, e-switch mode and
    /// PCIe root come from its PF in [`merge`]), and the oddities passed over.
    pub found: Inventory,
}

impl Reread {
    /// The function read at `address`, if one is there now.
    pub fn get(&self, address: PciAddress) -> Option<&PciFunction> {
        self.found.functions.iter().find(|f| f.address == address)
    }

    /// Adds a later read of other addresses to this one.
    pub fn extend(&mut self, more: Reread) {
        self.addresses.extend(more.addresses);
        self.found.functions.extend(more.found.functions);
        self.found.skipped.extend(more.found.skipped);
    }
}

/// Reads only `addresses` under `sysfs_root`, with the per-function code
/// of [`scan_with`] (and `extra` for each function found): after a kernel
/// event, the few functions it touched instead of the whole node. Their
/// interfaces come from listing their own directories, not `class/net`.
///
/// An address with no device now is simply not found (the device left);
/// one whose directory vanishes while it is read is skipped, as in a scan.
pub fn read_with<T, F>(
    sysfs_root: &Path,
    addresses: &BTreeSet<PciAddress>,
    extra: F,
) -> Result<(Reread, HashMap<PciAddress, T>), InventoryError>
where
    F: Fn(&SysDir, PciAddress) -> Result<T, SysfsError>,
{
    let devices_dir = sysfs_root.join("bus/pci/devices");
    let Some(devices) = SysDir::open(&devices_dir)? else {
        return Err(InventoryError::NoPciBus(devices_dir));
    };
    // A handful of functions: one thread, no fan-out, no memo (the tree
    // is read as it is now).
    let present: Vec<(Option<PciAddress>, Entry)> = addresses
        .iter()
        .map(|&address| (address, address.to_string()))
        .filter(|(_, entry)| devices.exists(entry))
        .map(|(address, name)| (Some(address), Entry { name, ino: 0 }))
        .collect();
    // Listing the few functions' own directories is cheaper than the
    // class index, and sees the tree as it is now.
    let scope = Scope {
        devices: &devices,
        classes: &Classes::default(),
        known: &HashMap::new(),
        inos: None,
        dirs: ScanMemo::with_max_dirs(0).dir_budget(),
        round: 0,
    };
    let part = scan_entries(&scope, &present, &|dir, address, _| extra(dir, address))?;
    let reread = Reread {
        addresses: addresses.clone(),
        found: part.found,
    };
    Ok((reread, part.extras.into_iter().collect()))
}

/// The last inventory with what `reread` found in place of what it said
/// about the re-read addresses, VFs joined to their PFs again: equal to a
/// full scan when every function that changed was re-read.
///
/// Pure. A VF whose PF no longer lists it is skipped, as in a scan.
pub fn merge(last: Inventory, reread: Reread) -> Inventory {
    let Reread { addresses, found } = reread;
    let mut functions: Vec<PciFunction> = last
        .functions
        .into_iter()
        .filter(|f| !addresses.contains(&f.address))
        .chain(found.functions)
        .collect();
    functions.sort_by_key(|f| f.address);
    let reread_entry = |s: &Skipped| {
        s.entry
            .parse::<PciAddress>()
            .is_ok_and(|a| addresses.contains(&a))
    };
    let skipped = last
        .skipped
        .into_iter()
        .filter(|s| !reread_entry(s))
        .chain(found.skipped)
        .collect();
    let mut inventory = Inventory { functions, skipped };
    link_vfs_to_pfs(&mut inventory);
    inventory
}

/// Scans some entries of `bus/pci/devices`, each with its name parsed as
/// an address (`None`: it is not one).
fn scan_entries<T>(
    scope: &Scope<'_>,
    entries: &[(Option<PciAddress>, Entry)],
    extra: &impl Fn(&SysDir, PciAddress, &Classes) -> Result<T, SysfsError>,
) -> Result<Part<T>, SysfsError> {
    let mut names = NameCache::default();
    let mut part = Part {
        found: Inventory {
            functions: Vec::with_capacity(entries.len()),
            skipped: Vec::new(),
        },
        extras: Vec::with_capacity(entries.len()),
        learned: Vec::with_capacity(entries.len()),
    };
    for (address, entry) in entries {
        let Some(address) = *address else {
            part.found.skipped.push(Skipped {
                entry: entry.name.clone(),
                reason: "name is not a PCI address".into(),
            });
            continue;
        };
        match read_entry(scope, entry, address, &mut names, extra)? {
            Some(read) => {
                if let Some((f, more)) = read.function {
                    part.found.functions.push(f);
                    part.extras.push((address, more));
                }
                part.learned.extend(read.known.map(|k| (address, k)));
            }
            None => part.found.skipped.push(Skipped {
                entry: entry.name.clone(),
                reason: "device disappeared during the scan".into(),
            }),
        }
    }
    Ok(part)
}

/// What reading one entry gave: the network function with its extra
/// (`None`: the device is not a network function), and what to remember.
struct EntryRead<T> {
    function: Option<(PciFunction, T)>,
    known: Option<Known>,
}

/// Reads one entry of `bus/pci/devices`, from what is remembered of it
/// where it is the same object; `Ok(None)` when it vanished meanwhile.
fn read_entry<T>(
    scope: &Scope<'_>,
    entry: &Entry,
    address: PciAddress,
    names: &mut NameCache,
    extra: &impl Fn(&SysDir, PciAddress, &Classes) -> Result<T, SysfsError>,
) -> Result<Option<EntryRead<T>>, SysfsError> {
    let remembered = scope
        .known
        .get(&address)
        .filter(|k| scope.inos.is_some() && k.ino == entry.ino);
    if let Some(known) = remembered {
        match read_remembered(scope, known, address, extra) {
            Ok(Some(read)) => return Ok(Some(read)),
            Ok(None) => {}
            // Gone under the kept descriptor: read it afresh through the
            // bus, which tells a vanished device from a re-created one.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    // One lookup through the bus link; every read below is relative.
    let Some(dir) = scope.devices.open_dir(&entry.name)? else {
        return Ok(None);
    };
    let read = identify(scope.devices, &dir, &entry.name, names).and_then(|identity| {
        let Some(identity) = identity else {
            return Ok(EntryRead {
                function: None,
                known: scope.inos.is_some().then(|| Known {
                    ino: entry.ino,
                    dir: None,
                    identity: None,
                    virtfns: None,
                    numa_node: None,
                }),
            });
        };
        let Current {
            function,
            virtfns,
            has_numa_node,
            has_subsystem,
        } = read_current(
            scope,
            &dir,
            &identity,
            address,
            None,
            scope.inos.is_some() && scope.dirs.any_left(),
        )?;
        let identity = Identity {
            has_numa_node,
            has_subsystem,
            ..identity
        };
        let more = extra(&dir, address, scope.classes)?;
        // Kept only within the budget: past it, the function is read in
        // full each time.
        let known = (scope.inos.is_some() && scope.dirs.take()).then(|| Known {
            ino: entry.ino,
            dir: None,
            identity: Some(Arc::new(identity)),
            virtfns,
            numa_node: function.numa_node,
        });
        Ok(EntryRead {
            function: Some((function, more)),
            known,
        })
    });
    match read {
        Ok(mut read) => {
            if let Some(known) = &mut read.known
                && known.identity.is_some()
            {
                known.dir = Some(Arc::new(dir));
            }
            Ok(Some(read))
        }
        Err(e) if e.is_not_found() && !dir.path().exists() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads what can change of a function the memo knows; `Ok(None)` when
/// the memo cannot answer (no directory kept).
fn read_remembered<T>(
    scope: &Scope<'_>,
    known: &Known,
    address: PciAddress,
    extra: &impl Fn(&SysDir, PciAddress, &Classes) -> Result<T, SysfsError>,
) -> Result<Option<EntryRead<T>>, SysfsError> {
    let Some(identity) = &known.identity else {
        // Not a network function, and never will be while it exists.
        return Ok(Some(EntryRead {
            function: None,
            known: Some(known.clone()),
        }));
    };
    let Some(dir) = &known.dir else {
        return Ok(None);
    };
    if !scope.dirs.take() {
        return Ok(None);
    }
    let Current {
        function, virtfns, ..
    } = read_current(scope, dir, identity, address, Some(known), true)?;
    let more = extra(dir, address, scope.classes)?;
    Ok(Some(EntryRead {
        known: Some(Known {
            virtfns,
            numa_node: function.numa_node,
            ..known.clone()
        }),
        function: Some((function, more)),
    }))
}

/// The identity fields of a PCI device's `uevent`: one read instead of
/// five. Each field falls back to its own attribute file when absent.
#[derive(Default)]
struct Uevent {
    class: Option<u32>,
    ids: Option<(u16, u16)>,
    subsystem: Option<(u16, u16)>,
}

impl Uevent {
    fn read(dir: &SysDir) -> Result<Uevent, SysfsError> {
        let Some(text) = dir.read_optional("uevent")? else {
            return Ok(Uevent::default());
        };
        let pair = |v: &str| {
            let (a, b) = v.split_once(':')?;
            Some((
                u16::from_str_radix(a, 16).ok()?,
                u16::from_str_radix(b, 16).ok()?,
            ))
        };
        let mut u = Uevent::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("PCI_CLASS", v)) => u.class = u32::from_str_radix(v, 16).ok(),
                Some(("PCI_ID", v)) => u.ids = pair(v),
                Some(("PCI_SUBSYS_ID", v)) => u.subsystem = pair(v),
                _ => {}
            }
        }
        Ok(u)
    }
}

/// What cannot change about a network function while the device exists:
/// read once per device by a scan with a [`ScanMemo`].
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    class: u32,
    vendor_id: u16,
    device_id: u16,
    subsystem_vendor_id: u16,
    subsystem_device_id: u16,
    vendor_name: Option<String>,
    device_name: Option<String>,
    /// Whether the device has a `numa_node` file (every PCI device of a
    /// NUMA kernel does): read through a kept directory (in the rounds it
    /// is due, and on every round in a tree without `subsystem` links),
    /// its absence means the directory is gone.
    has_numa_node: bool,
    /// Whether the device has a `subsystem` link (every device the kernel
    /// made does; a hand-built tree may not): see [`read_current`].
    has_subsystem: bool,
    kind: Kind,
    /// A VF's is its PF's (filled in by `link_vfs_to_pfs`).
    pcie_root: Option<String>,
}

/// The SR-IOV role without what a PF's can change (its VF count and VFs).
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Its `sriov_totalvfs` is read each time: a driver sets its own limit
    /// when it binds and the kernel resets it when it unbinds.
    Pf,
    Vf {
        pf: PciAddress,
    },
    Plain,
}

/// Reads what cannot change about the device in `dir`; `Ok(None)` when it
/// is not a network function.
///
/// `entry` is the device's link in `devices`.
fn identify(
    devices: &SysDir,
    dir: &SysDir,
    entry: &str,
    names: &mut NameCache,
) -> Result<Option<Identity>, SysfsError> {
    let uevent = Uevent::read(dir)?;
    let class = match uevent.class {
        Some(c) => c,
        None => sysfs::parse_hex(&dir.path().join("class"), &dir.read_required("class")?)?,
    };
    if class >> 16 != CLASS_NETWORK {
        return Ok(None);
    }
    let (vendor_id, device_id) = match uevent.ids {
        Some(ids) => ids,
        None => (dir.read_id16("vendor")?, dir.read_id16("device")?),
    };
    let (subsystem_vendor_id, subsystem_device_id) = match uevent.subsystem {
        Some(ids) => ids,
        None => (
            dir.read_id16("subsystem_vendor")?,
            dir.read_id16("subsystem_device")?,
        ),
    };
    let (vendor_name, device_name) = names.lookup(vendor_id, device_id);
    let kind = read_kind(dir)?;
    Ok(Some(Identity {
        class,
        vendor_id,
        device_id,
        subsystem_vendor_id,
        subsystem_device_id,
        vendor_name,
        device_name,
        // Learned by the first `read_current`.
        has_numa_node: false,
        has_subsystem: false,
        kind,
        // A VF sits under its PF's root complex: filled in from the PF by
        // `link_vfs_to_pfs`, which saves a link read per VF.
        pcie_root: match kind {
            Kind::Vf { .. } => None,
            _ => pcie_root(devices, entry)?,
        },
    }))
}

/// The device's IOMMU group, `None` without one.
fn read_iommu_group(dir: &SysDir) -> Result<Option<u32>, SysfsError> {
    // Parsed where the link was read; the path is built only for an error.
    let parsed = dir.with_link_target_name("iommu_group", |name| {
        name.trim().parse::<u32>().map_err(|_| name.to_string())
    })?;
    parsed.transpose().map_err(|content| SysfsError::Parse {
        path: dir.join("iommu_group"),
        content,
        expected: "a decimal number",
    })
}

/// Whether a remembering scan re-reads `address`'s NUMA node this round:
/// one function in [`NUMA_REREAD_EVERY`], picked by a hash of the whole
/// address, so every round re-reads about as many whatever the layout (a
/// VM's NICs are all function 0, a large NIC's VFs all of them).
pub(crate) fn numa_due(address: PciAddress, round: u64) -> bool {
    let key = u64::from(address.domain) << 16
        | u64::from(address.bus) << 8
        | u64::from(address.device) << 3
        | u64::from(address.function);
    // Multiplicative hashing: the product's top bits mix every bit of the
    // key, and scaling them picks the slot.
    let top = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let slot = (top * NUMA_REREAD_EVERY) >> 32;
    slot.wrapping_add(round).is_multiple_of(NUMA_REREAD_EVERY)
}

/// Reads the NUMA node; a `numa_node` the device had and has no more
/// means its directory is gone (reported as not found).
fn read_numa_node(dir: &SysDir, id: &Identity) -> Result<Option<i64>, SysfsError> {
    let numa = dir.read_optional_decimal::<i64>("numa_node")?;
    if numa.is_none() && id.has_numa_node {
        return Err(gone(dir, "numa_node"));
    }
    Ok(numa)
}

/// `name` of the device in `dir` is gone, and with it the device.
fn gone(dir: &SysDir, name: &str) -> SysfsError {
    SysfsError::Read {
        path: dir.join(name),
        source: std::io::ErrorKind::NotFound.into(),
    }
}

/// Reads what can change about a network function while it exists: its
/// driver, NUMA node, interface and, for a PF, its VFs.
///
/// `last`: what the memo knows of it, read through a kept directory (a
/// PF's VFs, used again while they still hold; its NUMA node, unless due).
/// `learn`: the memo will keep it, so learn what such reads need.
///
/// A kept directory reads nothing once its device is gone, and every file
/// but a few is optional, so such a read ends by asking whether the
/// device is still there: by its `subsystem` link, the first thing the
/// kernel removes of a device (`bus_remove_device`, before the bus's
/// attributes, the driver and the interfaces), so found after the other
/// reads it says they were all of the live device. A tree without the
/// link asks `numa_node`.
fn read_current(
    scope: &Scope<'_>,
    dir: &SysDir,
    id: &Identity,
    address: PciAddress,
    last: Option<&Known>,
    learn: bool,
) -> Result<Current, SysfsError> {
    let virtfns = last.and_then(|k| k.virtfns.as_deref());
    let numa_read = match last {
        Some(_) if !numa_due(address, scope.round) => None,
        _ => Some(read_numa_node(dir, id)?),
    };
    // Read each time, though it seldom changes: a group leaves with its
    // IOMMU (a driver unloaded), comes with one loaded late, and a wrong
    // one sends a DPDK pod to another device's /dev/vfio node.
    let iommu_group = read_iommu_group(dir)?;
    // Only an InfiniBand-class function can run Ethernet instead (a VPI
    // port set to Ethernet): ask its netdev's ARPHRD type; the rest are
    // Ethernet, which saves a read per function on large nodes.
    let ib_class = id.class >> 8 == SUBCLASS_INFINIBAND;
    let (role, virtfns) = match id.kind {
        Kind::Vf { pf } => (
            Role::Vf {
                pf,
                // From the PF's virtfnN links in `link_vfs_to_pfs`.
                index: u32::MAX,
            },
            None,
        ),
        Kind::Plain => (Role::Plain, None),
        Kind::Pf => {
            let total_vfs = dir.read_optional_decimal("sriov_totalvfs")?.unwrap_or(0);
            let num_vfs = dir.read_optional_decimal("sriov_numvfs")?.unwrap_or(0);
            let still = virtfns.filter(|v| v.still_hold(num_vfs, |vf| scope.ino_of(vf)));
            let virtfns = match still {
                Some(v) => v.clone(),
                None => Virtfns {
                    num_vfs,
                    vfs: read_virtfns(dir)?
                        .into_iter()
                        .map(|vf| (vf, scope.ino_of(vf).unwrap_or(0)))
                        .collect(),
                },
            };
            let role = Role::Pf {
                total_vfs,
                num_vfs,
                vfs: virtfns.vfs.iter().map(|&(vf, _)| vf).collect(),
            };
            (role, Some(Arc::new(virtfns)))
        }
    };
    let is_vf = matches!(role, Role::Vf { .. });
    // The index is trusted for what it lists; a function it lists nothing
    // for is asked (one failed open where it truly has none), so an
    // interface that appeared or was renamed after the class pass is seen.
    let known = scope
        .classes
        .net
        .as_ref()
        .map(|index| index.members(address))
        .filter(|members| !members.is_empty());
    // A VF's own link speed and state are neither published nor judged
    // (its health is its PF's link), so they are not read.
    let netdev = read_netdev(dir, known, ib_class, !is_vf)?;
    let link_type = match &netdev {
        Some((_, Some(ty))) if *ty != ARPHRD_INFINIBAND => LinkType::Ethernet,
        _ if ib_class => LinkType::Infiniband,
        _ => LinkType::Ethernet,
    };
    // A VF reports its PF's mode (filled in by `link_vfs_to_pfs`).
    let eswitch_mode = match (&netdev, &role) {
        (Some((nd, _)), Role::Pf { .. }) => read_eswitch_mode(dir, &nd.name),
        _ => EswitchMode::Unknown,
    };
    let driver = dir.link_target_name("driver")?;
    // Last: whether the device was there for every read above.
    let has_subsystem = match last {
        Some(_) if id.has_subsystem => {
            if dir.with_link_target_name("subsystem", |_| ())?.is_none() {
                return Err(gone(dir, "subsystem"));
            }
            true
        }
        Some(_) => false,
        None => learn && dir.with_link_target_name("subsystem", |_| ())?.is_some(),
    };
    let numa_read = match numa_read {
        None if !has_subsystem => Some(read_numa_node(dir, id)?),
        read => read,
    };
    let (numa_node, has_numa_node) = match numa_read {
        Some(numa) => (numa.and_then(|n| u32::try_from(n).ok()), numa.is_some()),
        None => (last.and_then(|k| k.numa_node), id.has_numa_node),
    };
    let function = PciFunction {
        address,
        vendor_id: id.vendor_id,
        device_id: id.device_id,
        subsystem_vendor_id: id.subsystem_vendor_id,
        subsystem_device_id: id.subsystem_device_id,
        vendor_name: id.vendor_name.clone(),
        device_name: id.device_name.clone(),
        class: id.class,
        driver,
        numa_node,
        iommu_group,
        pcie_root: id.pcie_root.clone(),
        role,
        netdev: netdev.map(|(nd, _)| nd),
        link_type,
        eswitch_mode,
    };
    Ok(Current {
        function,
        virtfns,
        has_numa_node,
        has_subsystem,
    })
}

/// What [`read_current`] read, with what the memo keeps of it.
struct Current {
    function: PciFunction,
    /// A PF's VFs as read now.
    virtfns: Option<Arc<Virtfns>>,
    /// Whether `numa_node` was there.
    has_numa_node: bool,
    /// Whether the `subsystem` link was there (asked only of a function
    /// the memo will keep).
    has_subsystem: bool,
}

/// PF, VF or plain, from the SR-IOV files and links.
fn read_kind(dir: &SysDir) -> Result<Kind, SysfsError> {
    if let Some(pf) = dir.link_target_name("physfn")? {
        let pf = pf.parse().map_err(|_| SysfsError::Parse {
            path: dir.path().join("physfn"),
            content: pf,
            expected: "a link to the PF's PCI directory",
        })?;
        return Ok(Kind::Vf { pf });
    }
    Ok(if dir.exists("sriov_totalvfs") {
        Kind::Pf
    } else {
        Kind::Plain
    })
}

/// The PF's VFs in index order, from `virtfn0`, `virtfn1`, ….
fn read_virtfns(pf_dir: &SysDir) -> Result<Vec<PciAddress>, SysfsError> {
    let mut vfs: Vec<(u32, PciAddress)> = Vec::new();
    for name in pf_dir.list(".")? {
        let Some(index) = name.strip_prefix("virtfn") else {
            continue;
        };
        let link = pf_dir.path().join(&name);
        let index: u32 = sysfs::parse_decimal(&link, index)?;
        let Some(target) = pf_dir.link_target_name(&name)? else {
            continue;
        };
        let vf = target.parse().map_err(|_| SysfsError::Parse {
            path: link.clone(),
            content: target,
            expected: "a link to the VF's PCI directory",
        })?;
        vfs.push((index, vf));
    }
    vfs.sort();
    Ok(vfs.into_iter().map(|(_, vf)| vf).collect())
}

/// Fills in each VF's index from its PF's `virtfnN` list and its e-switch
/// mode from the PF. A VF whose PF does not list it is a sysfs oddity (a VF
/// being torn down): it is moved to `skipped`. The functions must be sorted
/// by address.
fn link_vfs_to_pfs(inventory: &mut Inventory) {
    // Functions are sorted by address, so each PF's VFs are found by a
    // search: no map of 2048 VFs built and hashed every scan.
    let functions = &mut inventory.functions;
    debug_assert!(functions.is_sorted_by_key(|f| f.address));
    let mut linked = vec![false; functions.len()];
    for p in 0..functions.len() {
        let pf = &functions[p];
        let Role::Pf { vfs, .. } = &pf.role else {
            continue;
        };
        let (vfs, mode, root) = (vfs.clone(), pf.eswitch_mode, pf.pcie_root.clone());
        for (i, vf) in vfs.iter().enumerate() {
            // Every function at the address (one, but for names that spell
            // the same address twice).
            let first = functions.partition_point(|f| f.address < *vf);
            for v in first..functions.len() {
                let f = &mut functions[v];
                if f.address != *vf {
                    break;
                }
                if let Role::Vf { index, .. } = &mut f.role {
                    *index = i as u32;
                    f.eswitch_mode = mode;
                    f.pcie_root.clone_from(&root);
                    linked[v] = true;
                }
            }
        }
    }
    let mut skipped = Vec::new();
    let mut position = 0;
    functions.retain(|f| {
        let keep = linked[position] || !f.is_vf();
        position += 1;
        if !keep && let Role::Vf { pf, .. } = &f.role {
            skipped.push(Skipped {
                entry: f.address.to_string(),
                reason: format!("its PF {pf} is not a scanned PF that lists it as a virtfn"),
            });
        }
        keep
    });
    inventory.skipped.extend(skipped);
}

/// The `pciDDDD:BB` root complex from the device's path under `/sys/devices`.
fn pcie_root(devices: &SysDir, entry: &str) -> Result<Option<String>, SysfsError> {
    let target = match devices.link_target(entry) {
        Ok(Some(t)) => t,
        // Gone since it was opened: the reads that follow notice.
        Ok(None) => return Ok(None),
        // Not a symlink (some test trees, some containers): no root known.
        Err(SysfsError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::InvalidInput =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Ok(target
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .find(|c| c.starts_with("pci") && c.contains(':'))
        .map(str::to_string))
}

/// The function's own netdev and, when asked, its ARPHRD type.
///
/// Most drivers put interfaces in `<dev>/net/`; virtio-net puts them under
/// `<dev>/virtioN/net/`. A switchdev PF also lists its VF representors
/// there, which carry a `phys_port_name` like `pf0vf3`: the uplink is the
/// one with no port name or a `pN` one.
///
/// `known`: the function's interfaces from the `class/net` index, or
/// `None` to list its directories. An indexed interface that is gone by
/// now (renamed, moved to another namespace), or several indexed ones with
/// no uplink among them (the uplink renamed during the class pass), send it
/// to the listing.
///
/// `link_facts`: read the link's speed, `operstate` and `carrier` too (PFs
/// and plain functions; a VF's are `None`).
fn read_netdev(
    dir: &SysDir,
    known: Option<&[Member]>,
    read_type: bool,
    link_facts: bool,
) -> Result<Option<(NetDev, Option<u32>)>, SysfsError> {
    let listed;
    let candidates = match known {
        Some(members) => members,
        None => {
            listed = list_netdevs(dir)?;
            listed.as_slice()
        }
    };
    // The first directory that holds any: `net` before `virtioN/net`.
    let Some(first_dir) = candidates.iter().map(|m| &m.dir).min() else {
        return Ok(None);
    };
    let in_first = || candidates.iter().filter(move |m| &m.dir == first_dir);
    // Only a PF with representors has more than one; skip the reads otherwise.
    let several = in_first().nth(1).is_some();
    let uplink = in_first().filter(|_| several).find(|m| {
        let port = dir.read_lenient(&format!("{}/{}/phys_port_name", m.dir, m.name));
        match port.as_deref() {
            None | Some("") => true,
            Some(p) => p
                .strip_prefix('p')
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())),
        }
    });
    if uplink.is_none() && several && known.is_some() {
        return read_netdev(dir, None, read_type, link_facts);
    }
    let Some(chosen) = uplink.or_else(|| in_first().next()) else {
        return Ok(None);
    };
    // Relative paths through `net/<if>/` cost less than opening it.
    let attr = |file: &str| JoinedPath::new(&[&chosen.dir, "/", &chosen.name, "/", file]);
    let mac = dir.read_optional(attr("address").as_str())?;
    if mac.is_none() && known.is_some() && !dir.exists(&format!("{}/{}", chosen.dir, chosen.name)) {
        return read_netdev(dir, None, read_type, link_facts);
    }
    let netdev = NetDev {
        name: chosen.name.clone(),
        mac,
        mtu: dir.read_optional_decimal(attr("mtu").as_str())?,
        // The kernel answers EINVAL for the speed of a down link and
        // prints -1 when unknown: neither is an error for us.
        speed_mbps: link_facts
            .then(|| dir.read_lenient(attr("speed").as_str()))
            .flatten()
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|s| u32::try_from(s).ok()),
        operstate: if link_facts {
            dir.read_optional(attr("operstate").as_str())?
        } else {
            None
        },
        // Read like `speed`, not like `operstate`: the kernel answers
        // EINVAL for the carrier of an interface that is administratively
        // down, so a failed read is no value, and so is text other than
        // `0`/`1`, as for an unparsable speed. It is only a health hint:
        // an error here would fail the read of the PF and every VF with
        // it, where `None` leaves the judging to `operstate`.
        carrier: link_facts
            .then(|| dir.read_lenient(attr("carrier").as_str()))
            .flatten()
            .and_then(|c| parse_carrier(&c)),
    };
    let arp_type = if read_type {
        dir.read_optional_decimal(attr("type").as_str())?
    } else {
        None
    };
    Ok(Some((netdev, arp_type)))
}

/// The kernel's `carrier` text: `1` has carrier, `0` has none.
fn parse_carrier(text: &str) -> Option<bool> {
    match text.trim() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// The interfaces in a function's own directories: `net/`, or where it
/// has none, each `virtioN/net/`.
fn list_netdevs(dir: &SysDir) -> Result<Vec<Member>, SysfsError> {
    fn in_dir(net_dir: &str, names: Vec<String>) -> impl Iterator<Item = Member> + '_ {
        names.into_iter().map(move |name| Member {
            dir: net_dir.to_string(),
            name,
        })
    }
    // Listing `net` also answers whether it exists.
    if let Some(names) = dir.list_present("net")? {
        return Ok(in_dir("net", names).collect());
    }
    let mut found = Vec::new();
    for virtio in dir
        .list(".")?
        .into_iter()
        .filter(|n| n.starts_with("virtio"))
    {
        let net_dir = format!("{virtio}/net");
        let names = dir.list(&net_dir)?;
        found.extend(in_dir(&net_dir, names));
    }
    Ok(found)
}

/// mlx5 exposes the e-switch mode at `net/<pf>/compat/devlink/mode`; other
/// drivers only through devlink netlink, which is reported as unknown.
fn read_eswitch_mode(dir: &SysDir, ifname: &str) -> EswitchMode {
    match dir
        .read_lenient(&format!("net/{ifname}/compat/devlink/mode"))
        .as_deref()
    {
        Some("legacy") => EswitchMode::Legacy,
        Some("switchdev") => EswitchMode::Switchdev,
        _ => EswitchMode::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;
    use std::fs;

    fn built(f: Fixture) -> tempfile::TempDir {
        let dir = tempfile::tempdir_in(crate::fixture::scratch_base()).unwrap();
        f.build(dir.path()).unwrap();
        dir
    }

    fn get<'a>(inv: &'a Inventory, addr: &str) -> &'a PciFunction {
        inv.functions
            .iter()
            .find(|f| f.address.to_string() == addr)
            .unwrap_or_else(|| panic!("{addr} not in inventory"))
    }

    #[test]
    fn connectx6dx_has_two_pfs_with_eight_vfs_each() {
        let dir = built(Fixture::ConnectX6Dx);
        let inv = scan(dir.path()).unwrap();
        assert_eq!(inv.functions.len(), 18);
        assert!(inv.skipped.is_empty(), "{:?}", inv.skipped);

        let pf0 = get(&inv, "0000:3b:00.0");
        let Role::Pf {
            total_vfs,
            num_vfs,
            vfs,
        } = &pf0.role
        else {
            panic!("PF expected: {:?}", pf0.role)
        };
        assert_eq!((*total_vfs, *num_vfs, vfs.len()), (8, 8, 8));
        assert_eq!(vfs[7].to_string(), "0000:3b:01.1");
        assert_eq!(pf0.eswitch_mode, EswitchMode::Switchdev);
        // The uplink, not a representor, is the PF's netdev.
        assert_eq!(pf0.netdev.as_ref().unwrap().name, "ens1f0np0");
        assert_eq!(pf0.vendor_name.as_deref(), Some("Mellanox Technologies"));
        assert_eq!(
            pf0.device_name.as_deref(),
            Some("MT2892 Family [ConnectX-6 Dx]")
        );

        let vf = get(&inv, "0000:3b:02.1");
        assert_eq!(vf.vf_of(), Some(("0000:3b:00.1".parse().unwrap(), 7)));
        assert_eq!(vf.eswitch_mode, EswitchMode::Legacy, "inherited from PF1");
        assert_eq!(vf.driver.as_deref(), Some("mlx5_core"));
        assert_eq!(vf.numa_node, Some(0));
        assert_eq!(vf.pcie_root.as_deref(), Some("pci0000:3a"));
        assert_eq!(vf.iommu_group, Some(38));
        assert_eq!(vf.link_type, LinkType::Ethernet);
        let nd = vf.netdev.as_ref().unwrap();
        // A VF's own speed and link state are not read: nothing uses them.
        assert_eq!(
            (
                nd.name.as_str(),
                nd.mtu,
                nd.speed_mbps,
                nd.operstate.as_deref()
            ),
            ("ens1f1v7", Some(1500), None, None)
        );
        let pf1 = get(&inv, "0000:3b:00.1").netdev.as_ref().unwrap();
        assert_eq!(
            (pf1.speed_mbps, pf1.operstate.as_deref()),
            (Some(100_000), Some("up")),
            "a PF's are: its link is its VFs' health"
        );
    }

    /// The `carrier` the last scan read of `address`'s interface.
    fn carrier_of(inv: &Inventory, address: &str) -> Option<bool> {
        get(inv, address).netdev.as_ref().unwrap().carrier
    }

    #[test]
    fn a_pf_reads_its_carrier_and_a_vf_does_not() {
        let dir = built(Fixture::ConnectX6Dx);
        let pf1 = dir.path().join("bus/pci/devices/0000:3b:00.1");
        fs::write(pf1.join("net/ens1f1np1/carrier"), "0\n").unwrap();
        let inv = scan(dir.path()).unwrap();
        assert_eq!(carrier_of(&inv, "0000:3b:00.0"), Some(true));
        assert_eq!(carrier_of(&inv, "0000:3b:00.1"), Some(false), "cable out");
        assert_eq!(
            carrier_of(&inv, "0000:3b:02.1"),
            None,
            "a VF's file is there but not read: a VF's health is its PF's link"
        );
    }

    #[test]
    fn a_carrier_that_cannot_be_read_or_understood_is_none() {
        let dir = built(Fixture::E810);
        let carrier = dir
            .path()
            .join("bus/pci/devices/0000:af:00.0/net/ens3f0/carrier");
        // The kernel refuses the read (EINVAL) for an interface that is
        // administratively down. A file cannot; a directory in its place
        // fails the read too (EISDIR), which `operstate` would not survive.
        fs::remove_file(&carrier).unwrap();
        fs::create_dir(&carrier).unwrap();
        let inv = scan(dir.path()).unwrap();
        assert_eq!(carrier_of(&inv, "0000:af:00.0"), None, "a failed read");
        fs::remove_dir(&carrier).unwrap();
        fs::write(&carrier, "2\n").unwrap();
        let inv = scan(dir.path()).unwrap();
        assert_eq!(carrier_of(&inv, "0000:af:00.0"), None, "neither 0 nor 1");
        fs::remove_file(&carrier).unwrap();
        let inv = scan(dir.path()).unwrap();
        assert_eq!(carrier_of(&inv, "0000:af:00.0"), None, "no file");
    }

    #[test]
    fn a_remembering_scan_reads_a_pf_carrier_again() {
        let dir = built(Fixture::E810);
        let memo = ScanMemo::default();
        let remembering = || {
            scan_remembering(dir.path(), &memo, |_, _, _| Ok(()))
                .unwrap()
                .0
        };
        assert_eq!(carrier_of(&remembering(), "0000:af:00.0"), Some(true));
        assert!(
            memo.dirs_open() > 0,
            "the next scan reads through kept dirs"
        );
        let pf = dir.path().join("bus/pci/devices/0000:af:00.0");
        fs::write(pf.join("net/ens3f0/carrier"), "0\n").unwrap();
        assert_eq!(carrier_of(&remembering(), "0000:af:00.0"), Some(false));
    }

    #[test]
    fn e810_vfio_vfs_have_no_netdev() {
        let dir = built(Fixture::E810);
        let inv = scan(dir.path()).unwrap();
        let vf = get(&inv, "0000:af:01.2");
        assert_eq!(vf.driver.as_deref(), Some("vfio-pci"));
        assert_eq!(vf.netdev, None);
        assert_eq!(vf.iommu_group, Some(63));
        assert_eq!(vf.numa_node, Some(1));
        let iavf = get(&inv, "0000:af:01.0");
        assert_eq!(
            iavf.netdev.as_ref().unwrap().speed_mbps,
            None,
            "a VF's speed is not read (its file says -1 here)"
        );
        assert_eq!(get(&inv, "0000:af:00.0").eswitch_mode, EswitchMode::Unknown);
    }

    #[test]
    fn a_pf_speed_the_kernel_does_not_know_is_none() {
        let dir = built(Fixture::E810);
        let speed = dir
            .path()
            .join("bus/pci/devices/0000:af:00.0/net/ens3f0/speed");
        let pf_speed = |dir: &tempfile::TempDir| {
            let inv = scan(dir.path()).unwrap();
            get(&inv, "0000:af:00.0")
                .netdev
                .as_ref()
                .unwrap()
                .speed_mbps
        };
        assert_eq!(pf_speed(&dir), Some(100_000));
        // Printed for a link whose speed is unknown (and a down link's
        // read fails with EINVAL, as a directory's does here).
        fs::write(&speed, "-1\n").unwrap();
        assert_eq!(pf_speed(&dir), None);
        fs::remove_file(&speed).unwrap();
        fs::create_dir(&speed).unwrap();
        assert_eq!(pf_speed(&dir), None);
    }

    #[test]
    fn infiniband_hca_with_unknown_numa_and_an_unbound_vf() {
        let dir = built(Fixture::ConnectX7Ib);
        let inv = scan(dir.path()).unwrap();
        assert_eq!(inv.functions.len(), 5);
        for f in &inv.functions {
            assert_eq!(f.numa_node, None, "numa_node -1 means unknown");
            assert_eq!(f.link_type, LinkType::Infiniband);
        }
        let unbound = get(&inv, "0000:5e:00.4");
        assert_eq!(unbound.driver, None);
        assert_eq!(unbound.netdev, None);
        assert_eq!(unbound.vf_of().map(|(_, i)| i), Some(3));
    }

    #[test]
    fn virtio_netdev_lives_under_the_virtio_child() {
        let dir = built(Fixture::Virtio);
        let inv = scan(dir.path()).unwrap();
        let f = get(&inv, "0000:00:03.0");
        assert_eq!(f.role, Role::Plain);
        assert_eq!(f.netdev.as_ref().unwrap().name, "eth0");
        assert_eq!(f.iommu_group, None);
        assert_eq!(f.pcie_root.as_deref(), Some("pci0000:00"));
        assert_eq!((f.vendor_id, f.device_id), (0x1af4, 0x1041));
    }

    #[test]
    fn non_network_devices_are_left_out() {
        let dir = built(Fixture::Virtio);
        let mut t = crate::fixture::TreeBuilder::new(dir.path()).unwrap();
        t.device(&crate::fixture::DeviceSpec {
            address: "0000:00:02.0".parse().unwrap(),
            parent: "pci0000:00".into(),
            ids: (0x1af4, 0x1042),
            subsystem: (0x1af4, 0x1100),
            class: 0x018000,
            driver: Some("virtio-pci".into()),
            numa_node: -1,
            iommu_group: None,
            total_vfs: None,
            netdev: None,
            virtio_index: None,
            rdma: None,
        })
        .unwrap();
        assert_eq!(scan(dir.path()).unwrap().functions.len(), 1);
    }

    #[test]
    fn missing_optional_files_are_none() {
        let dir = built(Fixture::E810);
        let vf = dir.path().join("bus/pci/devices/0000:af:01.0");
        fs::remove_file(vf.join("numa_node")).unwrap();
        fs::remove_file(vf.join("iommu_group")).unwrap();
        fs::remove_file(vf.join("net/ens3f0v0/mtu")).unwrap();
        let inv = scan(dir.path()).unwrap();
        let f = get(&inv, "0000:af:01.0");
        assert_eq!((f.numa_node, f.iommu_group), (None, None));
        assert_eq!(f.netdev.as_ref().unwrap().mtu, None);
    }

    #[test]
    fn a_device_that_vanishes_mid_scan_is_skipped() {
        let dir = built(Fixture::E810);
        // The bus link survives a moment longer than the device directory.
        let link = dir.path().join("bus/pci/devices/0000:af:01.3");
        fs::remove_dir_all(fs::canonicalize(&link).unwrap()).unwrap();
        let inv = scan(dir.path()).unwrap();
        assert_eq!(inv.functions.len(), 4);
        assert_eq!(inv.skipped[0].entry, "0000:af:01.3");
        assert!(inv.skipped[0].reason.contains("disappeared"));
    }

    #[test]
    fn an_unreadable_file_fails_the_scan_naming_the_path() {
        let dir = built(Fixture::E810);
        let uevent = dir.path().join("bus/pci/devices/0000:af:01.1/uevent");
        // Root reads any mode, so make it unreadable the other way.
        fs::remove_file(&uevent).unwrap();
        fs::create_dir(&uevent).unwrap();
        let err = scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("0000:af:01.1/uevent"), "{err}");
    }

    #[test]
    fn without_uevent_the_identity_comes_from_the_attribute_files() {
        let dir = built(Fixture::E810);
        let dev = dir.path().join("bus/pci/devices/0000:af:01.1");
        fs::remove_file(dev.join("uevent")).unwrap();
        let inv = scan(dir.path()).unwrap();
        let f = get(&inv, "0000:af:01.1");
        assert_eq!(
            (f.vendor_id, f.device_id, f.class),
            (0x8086, 0x1889, 0x020000)
        );
        fs::write(dev.join("vendor"), "0xnope\n").unwrap();
        let err = scan(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("0000:af:01.1/vendor") && err.contains("0xnope"),
            "{err}"
        );
    }

    #[test]
    fn malformed_content_names_the_file() {
        let dir = built(Fixture::E810);
        let numa = dir.path().join("bus/pci/devices/0000:af:01.1/numa_node");
        fs::write(&numa, "zero\n").unwrap();
        let err = scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("numa_node") && err.contains("zero"), "{err}");
    }

    #[test]
    fn oddities_are_skipped_with_a_reason() {
        let dir = built(Fixture::E810);
        let devices = dir.path().join("bus/pci/devices");
        fs::create_dir(devices.join("not-a-device")).unwrap();
        // A VF whose PF no longer lists it (VFs being torn down).
        fs::remove_file(devices.join("0000:af:00.0/virtfn1")).unwrap();
        let inv = scan(dir.path()).unwrap();
        let entries: Vec<&str> = inv.skipped.iter().map(|s| s.entry.as_str()).collect();
        assert_eq!(entries, ["not-a-device", "0000:af:01.1"]);
    }

    #[test]
    fn scan_with_reads_more_of_every_function_it_keeps() {
        let dir = built(Fixture::E810);
        // A VF its PF no longer lists is skipped, and its extra with it.
        fs::remove_file(dir.path().join("bus/pci/devices/0000:af:00.0/virtfn1")).unwrap();
        let (inv, extras) = scan_with(dir.path(), |d, _, _| d.read_optional("numa_node")).unwrap();
        assert_eq!(extras.len(), inv.functions.len());
        let addr = |a: &str| a.parse::<PciAddress>().unwrap();
        assert!(!extras.contains_key(&addr("0000:af:01.1")));
        assert_eq!(extras[&addr("0000:af:01.0")].as_deref(), Some("1"));
    }

    fn addrs(list: &[&str]) -> BTreeSet<PciAddress> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_partial_read_merged_into_the_last_scan_equals_a_new_scan() {
        let dir = built(Fixture::E810);
        let last = scan(dir.path()).unwrap();
        let devices = dir.path().join("bus/pci/devices");
        fs::write(devices.join("0000:af:00.0/net/ens3f0/operstate"), "down\n").unwrap();
        fs::write(devices.join("0000:af:01.0/net/ens3f0v0/mtu"), "9000\n").unwrap();
        let (reread, extras) = read_with(
            dir.path(),
            &addrs(&["0000:af:00.0", "0000:af:01.0"]),
            |_, a| Ok(a),
        )
        .unwrap();
        assert_eq!(reread.found.functions.len(), 2);
        assert_eq!(extras.len(), 2);
        let vf = reread.get("0000:af:01.0".parse().unwrap()).unwrap();
        assert_eq!(
            vf.vf_of().map(|(_, i)| i),
            Some(u32::MAX),
            "read alone, a VF does not know its index yet"
        );
        let merged = merge(last.clone(), reread);
        assert_eq!(merged.functions, scan(dir.path()).unwrap().functions);
        assert_ne!(merged.functions, last.functions);
    }

    #[test]
    fn a_read_address_with_no_device_is_removed_and_its_pf_no_longer_lists_it() {
        let dir = built(Fixture::E810);
        let last = scan(dir.path()).unwrap();
        // VF 3 removed: its directory, its bus link and the PF's virtfn3.
        let devices = dir.path().join("bus/pci/devices");
        let vf = devices.join("0000:af:01.3");
        fs::remove_dir_all(fs::canonicalize(&vf).unwrap()).unwrap();
        fs::remove_file(&vf).unwrap();
        fs::remove_file(devices.join("0000:af:00.0/virtfn3")).unwrap();
        fs::write(devices.join("0000:af:00.0/sriov_numvfs"), "3\n").unwrap();
        let (reread, _) = read_with(
            dir.path(),
            &addrs(&["0000:af:01.3", "0000:af:00.0"]),
            |_, _| Ok(()),
        )
        .unwrap();
        assert!(reread.get("0000:af:01.3".parse().unwrap()).is_none());
        let merged = merge(last, reread);
        let full = scan(dir.path()).unwrap();
        assert_eq!(merged.functions, full.functions);
        assert_eq!((merged.functions.len(), merged.skipped), (4, vec![]));
    }

    #[test]
    fn merge_skips_a_vf_its_reread_pf_no_longer_lists_as_a_scan_does() {
        let dir = built(Fixture::E810);
        let last = scan(dir.path()).unwrap();
        fs::remove_file(dir.path().join("bus/pci/devices/0000:af:00.0/virtfn1")).unwrap();
        let (reread, _) = read_with(
            dir.path(),
            &addrs(&["0000:af:00.0", "0000:af:01.1"]),
            |_, _| Ok(()),
        )
        .unwrap();
        let merged = merge(last, reread);
        let full = scan(dir.path()).unwrap();
        assert_eq!(merged.functions, full.functions);
        assert_eq!(merged.skipped, full.skipped);
        assert_eq!(merged.skipped[0].entry, "0000:af:01.1");
    }

    #[test]
    fn vfs_take_index_mode_and_root_from_the_pf_that_lists_them_and_orphans_are_skipped() {
        let dir = built(Fixture::Scale2048);
        let scanned = scan(dir.path()).unwrap();
        let mut pfs = scanned.functions.iter().filter(|f| !f.is_vf());
        let (kept_pf, dropped_pf) = (pfs.next().unwrap().address, pfs.next().unwrap().address);
        // As the per-function reads leave them: nothing from the PF yet.
        let mut functions: Vec<PciFunction> = scanned
            .functions
            .iter()
            .filter(|f| f.address != dropped_pf)
            .cloned()
            .collect();
        for f in &mut functions {
            if let Role::Vf { index, .. } = &mut f.role {
                *index = u32::MAX;
                f.eswitch_mode = EswitchMode::Unknown;
                f.pcie_root = None;
            }
        }
        let mut inventory = Inventory {
            functions,
            skipped: Vec::new(),
        };
        link_vfs_to_pfs(&mut inventory);
        let of = |pf: PciAddress| move |f: &&PciFunction| f.vf_of().is_some_and(|(p, _)| p == pf);
        let expected: Vec<&PciFunction> = scanned.functions.iter().filter(of(kept_pf)).collect();
        let linked: Vec<&PciFunction> = inventory.functions.iter().filter(of(kept_pf)).collect();
        assert_eq!(linked, expected);
        assert!(!inventory.functions.iter().any(|f| of(dropped_pf)(&f)));
        let orphans = scanned.functions.iter().filter(of(dropped_pf)).count();
        assert_eq!(inventory.skipped.len(), orphans);
        assert!(
            inventory.skipped[0]
                .reason
                .contains(&dropped_pf.to_string())
        );
    }

    #[test]
    fn a_wrong_root_says_so() {
        let err = scan(Path::new("/nonexistent")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/bus/pci/devices") && err.contains("sysfs root"));
    }

    #[test]
    fn scale_fixture_has_2048_vfs() {
        let dir = built(Fixture::Scale2048);
        let inv = scan(dir.path()).unwrap();
        assert_eq!(inv.functions.iter().filter(|f| f.is_vf()).count(), 2048);
        assert_eq!(inv.functions.len(), 2056);
    }

    #[test]
    fn the_class_net_index_reads_what_listing_each_function_reads() {
        for fixture in Fixture::ALL {
            let dir = built(fixture);
            let indexed = scan(dir.path()).unwrap();
            // Without `class/` (a tree that mounts only `bus/` and `devices/`), each
            // function's own directories are listed instead.
            fs::remove_dir_all(dir.path().join("class")).unwrap();
            let listed = scan(dir.path()).unwrap();
            assert_eq!(indexed.functions, listed.functions, "{fixture}");
            assert_eq!(indexed.skipped, listed.skipped, "{fixture}");
        }
    }

    #[test]
    fn an_interface_renamed_after_the_class_was_listed_is_found_by_its_function() {
        // What a scan sees when a rename lands between its pass over
        // `class/net` and its read of the function: the old name is gone.
        let dir = built(Fixture::E810);
        let vf = dir.path().join("bus/pci/devices/0000:af:01.0/net");
        let old = fs::read_dir(&vf).unwrap().next().unwrap().unwrap().path();
        fs::rename(&old, vf.join("fronthaul0")).unwrap();
        let inv = scan(dir.path()).unwrap();
        let netdev = get(&inv, "0000:af:01.0").netdev.as_ref().unwrap();
        assert_eq!(netdev.name, "fronthaul0");
        assert!(netdev.mac.is_some() && netdev.mtu.is_some(), "{netdev:?}");
    }

    #[test]
    fn a_function_the_index_lists_nothing_for_is_asked_itself() {
        // An interface that appeared (a VF back from a pod) after the pass
        // over `class/net`.
        let dir = built(Fixture::E810);
        let before = scan(dir.path()).unwrap();
        let name = get(&before, "0000:af:01.0")
            .netdev
            .as_ref()
            .unwrap()
            .name
            .clone();
        fs::remove_file(dir.path().join("class/net").join(&name)).unwrap();
        let after = scan(dir.path()).unwrap();
        assert_eq!(after.functions, before.functions);
    }

    #[test]
    fn a_switchdev_pf_whose_uplink_the_index_missed_is_listed() {
        // The uplink renamed during the class pass: the index holds only
        // the PF's representors, none of which may stand for the PF.
        let dir = built(Fixture::ConnectX6Dx);
        let before = scan(dir.path()).unwrap();
        fs::remove_file(dir.path().join("class/net/ens1f0np0")).unwrap();
        let after = scan(dir.path()).unwrap();
        assert_eq!(
            get(&after, "0000:3b:00.0").netdev.as_ref().unwrap().name,
            "ens1f0np0"
        );
        assert_eq!(after.functions, before.functions);
    }
}
