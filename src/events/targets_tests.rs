//! The plan on its own, and plan + partial rescan against a full scan
//! after random edits of fixture trees: a test plays the kernel by editing
//! the tree and sending the nudges the kernel's events would have caused.

use super::*;
use std::fs;
use std::path::PathBuf;

use proptest::prelude::*;
use sriov::fixture::{
    DeviceSpec, Fixture, NetdevSpec, TreeBuilder, remove_class_dir, rename_class_device,
};
use tempfile::TempDir;

fn built(f: Fixture) -> (TempDir, NodeInventory) {
    let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
    f.build(dir.path()).unwrap();
    let inv = NodeInventory::discover(dir.path()).unwrap();
    (dir, inv)
}

fn addrs(list: &[&str]) -> BTreeSet<PciAddress> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn link(name: &str) -> Nudge {
    Nudge::Link { name: name.into() }
}

fn pci(action: &str, device: &str) -> Nudge {
    Nudge::Pci {
        action: action.into(),
        device: device.into(),
    }
}

/// Answers as sysfs would for an interface it does not have.
fn nowhere(_: &str) -> LinkOwner {
    LinkOwner::Gone
}

#[test]
fn a_pf_link_event_plans_that_pf_alone_and_a_vf_event_adds_its_pf() {
    let (_dir, last) = built(Fixture::E810);
    let plan_of = |nudges: &[Nudge]| plan(&nudges.iter().cloned().collect(), &last, nowhere);
    assert_eq!(
        plan_of(&[link("ens3f0")]),
        Plan::Partial(addrs(&["0000:af:00.0"]))
    );
    assert_eq!(
        plan_of(&[pci("unbind", "0000:af:01.2")]),
        Plan::Partial(addrs(&["0000:af:00.0", "0000:af:01.2"]))
    );
    // A new function: only what it is says where its PF is (rescan's job).
    assert_eq!(
        plan_of(&[pci("add", "0000:af:01.4")]),
        Plan::Partial(addrs(&["0000:af:01.4"]))
    );
    // A VF netdev's own uevent names the interface.
    assert_eq!(
        plan_of(&[pci("remove", "ens3f0v1"), link("ens3f0v1")]),
        Plan::Partial(addrs(&["0000:af:01.1"]))
    );
}

#[test]
fn slice_nudges_and_non_pci_links_read_nothing_and_unknowable_ones_read_everything() {
    let (_dir, last) = built(Fixture::E810);
    let slice = Nudge::Slice { name: "s".into() };
    assert_eq!(
        plan(&BTreeSet::from([slice.clone()]), &last, nowhere),
        Plan::Partial(BTreeSet::new())
    );
    let veth = |_: &str| LinkOwner::NotPci;
    assert_eq!(
        plan(&BTreeSet::from([slice, link("veth12ab")]), &last, veth),
        Plan::Partial(BTreeSet::new())
    );
    for unknowable in [
        Nudge::Overrun,
        link("#12"),
        link("gone0"),
        pci("remove", "gone0"),
    ] {
        let nudges = BTreeSet::from([link("ens3f0"), unknowable.clone()]);
        assert!(
            matches!(plan(&nudges, &last, nowhere), Plan::Full { .. }),
            "{unknowable:?}"
        );
    }
}

#[test]
fn a_renamed_interface_is_found_through_class_net() {
    let (_dir, last) = built(Fixture::E810);
    let vf1: PciAddress = "0000:af:01.1".parse().unwrap();
    let now_vf1 = |n: &str| {
        if n == "fronthaul0" {
            LinkOwner::Pci(vf1)
        } else {
            LinkOwner::Gone
        }
    };
    assert_eq!(
        plan(&BTreeSet::from([link("fronthaul0")]), &last, now_vf1),
        Plan::Partial(BTreeSet::from([vf1]))
    );
    // The old name is known, and another function has it now: both.
    let swapped = |_: &str| LinkOwner::Pci(vf1);
    assert_eq!(
        plan(&BTreeSet::from([link("ens3f0v0")]), &last, swapped),
        Plan::Partial(addrs(&["0000:af:01.0", "0000:af:01.1"]))
    );
}

#[test]
fn link_owner_reads_class_net() {
    // The fixture lists eth0 of virtio-net as the kernel does:
    // class/net/eth0 -> .../0000:00:03.0/virtio2/net/eth0, whose device is
    // virtio2.
    let (dir, _) = built(Fixture::Virtio);
    let root = dir.path();
    // A virtual interface has no device.
    fs::create_dir_all(root.join("class/net/veth0")).unwrap();
    assert_eq!(
        link_owner(root, "eth0"),
        LinkOwner::Pci("0000:00:03.0".parse().unwrap())
    );
    assert_eq!(link_owner(root, "veth0"), LinkOwner::NotPci);
    for gone in ["eth9", "#3", "..", "", "a/b"] {
        assert_eq!(link_owner(root, gone), LinkOwner::Gone, "{gone:?}");
    }
}

// ---------------------------------------------------------------------------
// Random edits: last inventory + partial rescan == full scan.

/// One change the kernel could make, on the `pick`-th candidate function.
#[derive(Debug, Clone)]
enum Edit {
    /// A PF's link goes up or down.
    LinkState { pick: usize, up: bool },
    /// An interface's MTU changes.
    Mtu { pick: usize, mtu: u32 },
    /// A VF's driver is unbound: its netdev and RDMA device go with it.
    Unbind { pick: usize },
    /// A VF is removed from its PF.
    RemoveVf { pick: usize },
    /// A PF gets a new VF with a netdev.
    AddVf { pick: usize },
    /// An interface is renamed.
    Rename { pick: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    let pick = 0..64usize;
    prop_oneof![
        (pick.clone(), any::<bool>()).prop_map(|(pick, up)| Edit::LinkState { pick, up }),
        (pick.clone(), 1280..9216u32).prop_map(|(pick, mtu)| Edit::Mtu { pick, mtu }),
        pick.clone().prop_map(|pick| Edit::Unbind { pick }),
        pick.clone().prop_map(|pick| Edit::RemoveVf { pick }),
        pick.clone().prop_map(|pick| Edit::AddVf { pick }),
        pick.prop_map(|pick| Edit::Rename { pick }),
    ]
}

/// A fixture tree being edited, and the names it handed out.
struct Kernel {
    root: PathBuf,
    made: u32,
}

impl Kernel {
    fn dev(&self, a: PciAddress) -> PathBuf {
        fs::canonicalize(self.root.join("bus/pci/devices").join(a.to_string())).unwrap()
    }

    fn write(&self, a: PciAddress, file: &str, content: &str) {
        fs::write(self.dev(a).join(file), format!("{content}\n")).unwrap();
    }

    /// Removes the function's interfaces and RDMA devices, from its
    /// directory and from `class/`.
    fn forget_class_devices(&self, a: PciAddress) {
        for class in ["net", "infiniband"] {
            remove_class_dir(&self.root, class, &self.dev(a).join(class)).unwrap();
        }
    }

    /// Applies `edit` to the tree `now` describes; the kernel's nudges, or
    /// none when the fixture has no candidate.
    fn apply(&mut self, now: &NodeInventory, edit: &Edit) -> Vec<Nudge> {
        let pick = |f: &dyn Fn(&crate::inventory::NodeDevice) -> bool, i: usize| {
            let c: Vec<_> = now.devices.iter().filter(|d| f(d)).collect();
            (!c.is_empty()).then(|| c[i % c.len()].clone())
        };
        let netdev = |d: &crate::inventory::NodeDevice| d.function.netdev.clone();
        match *edit {
            Edit::LinkState { pick: i, up } => {
                let Some(d) = pick(&|d| !d.function.is_vf() && netdev(d).is_some(), i) else {
                    return vec![];
                };
                let name = netdev(&d).unwrap().name;
                let state = if up { "up" } else { "down" };
                self.write(d.function.address, &format!("net/{name}/operstate"), state);
                vec![link(&name)]
            }
            Edit::Mtu { pick: i, mtu } => {
                let Some(d) = pick(&|d| netdev(d).is_some(), i) else {
                    return vec![];
                };
                let name = netdev(&d).unwrap().name;
                self.write(
                    d.function.address,
                    &format!("net/{name}/mtu"),
                    &mtu.to_string(),
                );
                vec![link(&name)]
            }
            Edit::Unbind { pick: i } => {
                let Some(d) = pick(&|d| d.function.is_vf() && d.function.driver.is_some(), i)
                else {
                    return vec![];
                };
                let a = d.function.address;
                fs::remove_file(self.dev(a).join("driver")).unwrap();
                self.forget_class_devices(a);
                let mut nudges = vec![pci("unbind", &a.to_string())];
                nudges.extend(netdev(&d).map(|n| link(&n.name)));
                nudges
            }
            Edit::RemoveVf { pick: i } => {
                let Some(d) = pick(&|d| d.function.is_vf(), i) else {
                    return vec![];
                };
                let a = d.function.address;
                let (pf, _) = d.function.vf_of().unwrap();
                self.forget_class_devices(a);
                fs::remove_dir_all(self.dev(a)).unwrap();
                fs::remove_file(self.root.join("bus/pci/devices").join(a.to_string())).unwrap();
                for entry in fs::read_dir(self.dev(pf)).unwrap().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let target = fs::read_link(entry.path()).ok();
                    if name.starts_with("virtfn")
                        && target.is_some_and(|t| t.ends_with(a.to_string()))
                    {
                        fs::remove_file(entry.path()).unwrap();
                    }
                }
                let vfs = self.virtfns(pf).len();
                self.write(pf, "sriov_numvfs", &vfs.to_string());
                let mut nudges = vec![pci("remove", &a.to_string())];
                nudges.extend(netdev(&d).map(|n| link(&n.name)));
                nudges
            }
            Edit::AddVf { pick: i } => {
                let Some(d) = pick(&|d| matches!(d.function.role, sriov::Role::Pf { .. }), i)
                else {
                    return vec![];
                };
                let pf = d.function.address;
                self.made += 1;
                let vf: PciAddress = format!("0000:c0:{:02x}.0", self.made).parse().unwrap();
                let name = format!("new{}", self.made);
                let devices = fs::canonicalize(self.root.join("devices")).unwrap();
                let parent = self.dev(pf).parent().unwrap().to_path_buf();
                let parent = parent.strip_prefix(&devices).unwrap().to_string_lossy();
                let mut tree = TreeBuilder::new(&self.root).unwrap();
                tree.device(&DeviceSpec {
                    address: vf,
                    parent: parent.into_owned(),
                    ids: (d.function.vendor_id, d.function.device_id + 1),
                    subsystem: (d.function.subsystem_vendor_id, 0),
                    class: 0x020000,
                    driver: d.function.driver.clone(),
                    numa_node: 0,
                    iommu_group: Some(200 + self.made),
                    total_vfs: None,
                    netdev: Some(NetdevSpec {
                        name: name.clone(),
                        mac: format!("02:00:00:00:00:{:02x}", self.made),
                        mtu: 1500,
                        speed: None,
                        operstate: "up",
                        arp_type: 1,
                        phys_port_name: None,
                        eswitch_mode: None,
                    }),
                    virtio_index: None,
                    rdma: None,
                })
                .unwrap();
                let index = self.virtfns(pf).iter().max().map_or(0, |m| m + 1);
                tree.link_vf(pf, index, vf).unwrap();
                vec![pci("add", &vf.to_string()), link(&name)]
            }
            Edit::Rename { pick: i } => {
                let Some(d) = pick(&|d| netdev(d).is_some(), i) else {
                    return vec![];
                };
                let a = d.function.address;
                let old = netdev(&d).unwrap().name;
                self.made += 1;
                let new = format!("ren{}", self.made);
                let dir = self.dev(a).join("net").join(&old);
                rename_class_device(&self.root, "net", &dir, &new).unwrap();
                vec![link(&new)]
            }
        }
    }

    fn virtfns(&self, pf: PciAddress) -> Vec<u32> {
        fs::read_dir(self.dev(pf))
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("virtfn")?.parse().ok())
            .collect()
    }
}

fn sorted_skipped(inv: &NodeInventory) -> Vec<(String, String)> {
    let mut s: Vec<_> = inv
        .skipped
        .iter()
        .map(|s| (s.entry.clone(), s.reason.clone()))
        .collect();
    s.sort();
    s
}

/// Applies the batches of edits, each followed by the round the loop would
/// run, and checks each merged inventory against a full scan. Returns how
/// many rounds were partial and how many functions they read.
fn run(fixture: Fixture, batches: &[Vec<Edit>]) -> (usize, usize) {
    let (dir, mut last) = built(fixture);
    let mut kernel = Kernel {
        root: dir.path().to_path_buf(),
        made: 0,
    };
    let (mut partial, mut read) = (0, 0);
    for batch in batches {
        let mut nudges = BTreeSet::new();
        for edit in batch {
            let now = NodeInventory::discover(dir.path()).unwrap();
            nudges.extend(kernel.apply(&now, edit));
        }
        let full = NodeInventory::discover(dir.path()).unwrap();
        last = match plan(&nudges, &last, |n| link_owner(dir.path(), n)) {
            Plan::Partial(targets) => {
                let r = last.rescan(&targets).unwrap();
                partial += 1;
                read += r.read.len();
                assert_eq!(
                    serde_json::to_value(&r.inventory.devices).unwrap(),
                    serde_json::to_value(&full.devices).unwrap(),
                    "{batch:?} with {nudges:?}: read {:?}",
                    r.read
                );
                assert_eq!(sorted_skipped(&r.inventory), sorted_skipped(&full));
                r.inventory
            }
            // An interface named in this batch (a new VF's, a rename) and
            // gone again before the round: nothing says whose it was.
            Plan::Full { why } => {
                assert!(
                    batch
                        .iter()
                        .any(|e| matches!(e, Edit::Rename { .. } | Edit::AddVf { .. })),
                    "{why}: {batch:?}"
                );
                full
            }
        };
    }
    (partial, read)
}

#[test]
fn every_kind_of_edit_alone_is_a_partial_round_equal_to_a_full_scan() {
    let edits = [
        Edit::LinkState { pick: 1, up: false },
        Edit::Mtu { pick: 3, mtu: 9000 },
        Edit::Unbind { pick: 2 },
        Edit::RemoveVf { pick: 5 },
        Edit::AddVf { pick: 1 },
        Edit::Rename { pick: 0 },
    ];
    for fixture in [Fixture::ConnectX6Dx, Fixture::E810] {
        for edit in &edits {
            let (partial, read) = run(fixture, &[vec![edit.clone()]]);
            assert_eq!(partial, 1, "{fixture} {edit:?}");
            assert!((1..=3).contains(&read), "{fixture} {edit:?}: read {read}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn after_random_edits_last_inventory_plus_partial_rescan_equals_a_full_scan(
        cx6 in any::<bool>(),
        batches in prop::collection::vec(prop::collection::vec(edit(), 1..5), 1..4),
    ) {
        let fixture = if cx6 { Fixture::ConnectX6Dx } else { Fixture::E810 };
        run(fixture, &batches);
    }
}
