//! Rendering the node's offered devices as `resource.k8s.io/v1`
//! ResourceSlices.
//!
//! A pure function of the inventory and config, so the same input always
//! gives byte-identical slices: the publisher compares renders to decide
//! whether to bump the pool generation, and must never flap.

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{
    Device, DeviceAttribute, ResourcePool, ResourceSlice, ResourceSliceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sriov::fan_out::map_chunks;
use sriov::inventory::{PciFunction, Role};

use crate::config::NodeConfig;
use crate::inventory::{NodeDevice, NodeInventory};

/// Devices per slice (`ResourceSliceMaxDevices`).
pub const MAX_DEVICES_PER_SLICE: usize = 128;
/// Longest string attribute value the API accepts.
const MAX_ATTRIBUTE_VALUE: usize = 64;
/// Domain of the standard, driver-independent attributes.
const STANDARD_DOMAIN: &str = "resource.kubernetes.io";
/// DraNet's domain, kept for selectors written against it.
const DRANET_DOMAIN: &str = "dra.net";

/// What a render needs besides the devices.
#[derive(Debug, Clone)]
pub struct SliceParams {
    /// DRA driver name (`spec.driver`).
    pub driver: String,
    /// Node name: `spec.nodeName` and the pool name.
    pub node: String,
    /// Pool generation; the publisher bumps it when the render changes.
    pub generation: i64,
    /// The Node object, so slices are garbage-collected with it.
    pub owner: Option<OwnerReference>,
}

impl SliceParams {
    /// Parameters for a config and node with generation 1 and no owner.
    pub fn new(config: &NodeConfig, node: &str) -> Self {
        SliceParams {
            driver: config.driver_name.clone(),
            node: node.to_string(),
            generation: 1,
            owner: None,
        }
    }
}

/// The slices that publish every offered device, at most 128 per slice, in
/// PCI address order. A node with nothing to offer still gets one empty
/// slice, so the scheduler sees the pool and knows it is empty.
pub fn render(
    inventory: &NodeInventory,
    config: &NodeConfig,
    params: &SliceParams,
) -> Vec<ResourceSlice> {
    assemble(devices(inventory, config, &params.driver), params)
}

/// Every offered device as published, in PCI address order.
pub fn devices(inventory: &NodeInventory, config: &NodeConfig, driver: &str) -> Vec<Device> {
    // Sized up front: a `Device` is large, and growing the list by
    // doubling would copy a large node's devices twice over.
    let mut devices = Vec::with_capacity(inventory.devices.len());
    devices.extend(inventory.offered(config).map(|d| device(d, driver)));
    devices
}

/// Packs devices, already in order, into the pool's slices.
pub fn assemble(
    devices: impl IntoIterator<Item = Device>,
    params: &SliceParams,
) -> Vec<ResourceSlice> {
    // Devices are moved into their slice, not cloned: 22 attributes each
    // make a copy of a large node's devices cost as much as building them.
    let devices: Vec<Device> = devices.into_iter().collect();
    let per_slice = devices_per_slice(&devices);
    let mut devices = devices.into_iter().peekable();
    let mut chunks: Vec<Vec<Device>> = Vec::new();
    while devices.peek().is_some() {
        chunks.push(devices.by_ref().take(per_slice).collect());
    }
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    let count = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| slice_of(params, i, count, chunk))
        .collect()
}

/// [`render`] one slice at a time, handing each to `each` and letting it
/// go: the same slices in the same order, without holding a large node's
/// devices all at once (the CLI prints them as they come).
pub fn render_each(
    inventory: &NodeInventory,
    config: &NodeConfig,
    params: &SliceParams,
    mut each: impl FnMut(ResourceSlice) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let offered: Vec<&NodeDevice> = inventory.offered(config).collect();
    let count = offered.len().div_ceil(MAX_DEVICES_PER_SLICE).max(1);
    if offered.is_empty() {
        return each(slice_of(params, 0, count, Vec::new()));
    }
    for (i, chunk) in offered.chunks(MAX_DEVICES_PER_SLICE).enumerate() {
        let devices = chunk.iter().map(|d| device(d, &params.driver)).collect();
        each(slice_of(params, i, count, devices))?;
    }
    Ok(())
}

/// [`render_each`] with each slice built, and turned into a `T` by
/// `build` (the CLI's YAML text), on a thread of its own, as many at a time
/// as there are cores; `each` gets them in slice order.
///
/// A 2048-VF node's sixteen slices cost about as much to print as the node
/// costs to scan, and they are independent of each other. At most one
/// slice per core is held at a time.
pub fn render_each_parallel<T: Send>(
    inventory: &NodeInventory,
    config: &NodeConfig,
    params: &SliceParams,
    build: impl Fn(ResourceSlice) -> anyhow::Result<T> + Sync,
    mut each: impl FnMut(T) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let offered: Vec<&NodeDevice> = inventory.offered(config).collect();
    if offered.is_empty() {
        return each(build(slice_of(params, 0, 1, Vec::new()))?);
    }
    let chunks: Vec<(usize, &[&NodeDevice])> =
        offered.chunks(MAX_DEVICES_PER_SLICE).enumerate().collect();
    let count = chunks.len();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    for group in chunks.chunks(threads) {
        // One slice per thread: each part holds one chunk.
        let built = map_chunks(group, 1, |part| {
            part.iter()
                .map(|(index, chunk)| {
                    let devices = chunk.iter().map(|d| device(d, &params.driver)).collect();
                    build(slice_of(params, *index, count, devices))
                })
                .collect::<Vec<_>>()
        });
        for b in built.into_iter().flatten() {
            each(b?)?;
        }
    }
    Ok(())
}

/// Slice `index` of `count` of the pool, holding `devices`.
fn slice_of(
    params: &SliceParams,
    index: usize,
    count: usize,
    devices: Vec<Device>,
) -> ResourceSlice {
    ResourceSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(&params.node, &params.driver, index)),
            owner_references: params.owner.clone().map(|o| vec![o]),
            ..Default::default()
        },
        spec: ResourceSliceSpec {
            driver: params.driver.clone(),
            node_name: Some(params.node.clone()),
            pool: ResourcePool {
                name: params.node.clone(),
                generation: params.generation,
                resource_slice_count: i64::try_from(count).unwrap_or(i64::MAX),
            },
            devices: Some(devices),
            ..Default::default()
        },
    }
}

/// How many devices go in each slice of a pool: 128, or 64 once any
/// device carries a taint (the API server's lower limit for those).
pub fn devices_per_slice(devices: &[Device]) -> usize {
    if devices
        .iter()
        .any(|d| d.taints.as_ref().is_some_and(|t| !t.is_empty()))
    {
        crate::kube::taints::MAX_TAINTED_DEVICES_PER_SLICE
    } else {
        MAX_DEVICES_PER_SLICE
    }
}

/// How many slices a pool of `devices` takes (at least one).
pub fn slice_count(devices: &[Device]) -> usize {
    devices.len().div_ceil(devices_per_slice(devices)).max(1)
}

/// `<node>-<driver with dots as dashes>-<index>`, within the 253-character
/// limit of object names.
pub fn slice_name(node: &str, driver: &str, index: usize) -> String {
    let suffix = format!("-{}-{index}", driver.replace('.', "-"));
    let keep = node.len().min(253usize.saturating_sub(suffix.len()));
    format!("{}{suffix}", node[..keep].trim_end_matches(['-', '.']))
}

/// One device with every attribute DESIGN.md names; unknown values are
/// left out rather than published as empty.
pub fn device(dev: &NodeDevice, driver: &str) -> Device {
    Device {
        name: dev.name(),
        attributes: Some(attributes(dev, driver).into_map()),
        ..Default::default()
    }
}

/// The attributes of `dev`, in the order they are added.
fn attributes<'a>(dev: &NodeDevice, driver: &'a str) -> Attributes<'a> {
    let f: &PciFunction = &dev.function;
    let address = f.address.to_string();
    let (pf_address, vf_index, pf_name) = match &f.role {
        Role::Vf { pf, index } => (Some(pf), Some(index), dev.pf_name.clone()),
        Role::Pf { .. } | Role::Plain => (None, None, f.netdev.as_ref().map(|n| n.name.clone())),
    };
    // Added in key order for driver names after `resource.kubernetes.io`
    // (the default among them), so the map is built without sorting;
    // other names sort, with the same result.
    let mut a = Attributes::new(driver);
    if let Some(numa) = f.numa_node {
        a.qualified(DRANET_DOMAIN, "numaNode", int(i64::from(numa)));
    }
    a.qualified(STANDARD_DOMAIN, "pciBusID", string(address.clone()));
    if let Some(root) = &f.pcie_root {
        a.qualified(STANDARD_DOMAIN, "pcieRoot", string(root.clone()));
    }
    a.string("deviceID", hex4(f.device_id));
    a.opt_string("deviceName", f.device_name.clone());
    a.string("eswitchMode", f.eswitch_mode.as_str().to_string());
    if let Some(nd) = &f.netdev {
        a.string("ifName", nd.name.clone());
    }
    if let Some(group) = f.iommu_group {
        a.int("iommuGroup", i64::from(group));
    }
    a.boolean("isVf", f.is_vf());
    a.opt_string("kernelDriver", f.driver.clone());
    a.string("linkType", f.link_type.as_str().to_string());
    if let Some(nd) = &f.netdev {
        a.opt_string("mac", nd.mac.clone());
        if let Some(mtu) = nd.mtu {
            a.int("mtu", i64::from(mtu));
        }
    }
    if let Some(numa) = f.numa_node {
        a.int("numaNode", i64::from(numa));
    }
    a.string("pciAddress", address);
    a.opt_string("pfName", pf_name);
    if let Some(pf) = pf_address {
        a.string("pfPciAddress", pf.to_string());
    }
    a.boolean("rdma", dev.rdma.is_some());
    if let Some(r) = &dev.rdma {
        a.string("rdmaDevice", r.name.clone());
    }
    a.string("vendorID", hex4(f.vendor_id));
    a.opt_string("vendorName", f.vendor_name.clone());
    if let Some(index) = vf_index {
        a.int("vfIndex", i64::from(*index));
    }
    a
}

/// A 16-bit ID as the four lower-case hex digits `lspci -n` shows.
fn hex4(id: u16) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(4);
    for shift in [12, 8, 4, 0] {
        text.push(char::from(DIGITS[usize::from((id >> shift) & 0xf)]));
    }
    text
}

/// Builds a device's attribute map under the driver's domain.
struct Attributes<'a> {
    driver: &'a str,
    /// The attributes as added; a map only at the end.
    list: Vec<(String, DeviceAttribute)>,
}

impl<'a> Attributes<'a> {
    fn new(driver: &'a str) -> Self {
        Attributes {
            driver,
            list: Vec::with_capacity(24),
        }
    }

    /// The map, built in one pass from the list (`collect` sorts it first,
    /// which for a list already in order is one look along it): a 2048-VF
    /// node has 45 000 attributes, and inserting them one by one costs a
    /// search, a node split now and then, and moves of the 96-byte entries,
    /// which made up half of a render. A key added twice keeps one value:
    /// only a driver named `dra.net` repeats one (`numaNode`), with the
    /// same value both times.
    fn into_map(self) -> BTreeMap<String, DeviceAttribute> {
        self.list.into_iter().collect()
    }

    fn qualified(&mut self, domain: &str, name: &str, value: DeviceAttribute) {
        // Not `format!`: this runs ~45 000 times for a 2048-VF node.
        let mut key = String::with_capacity(domain.len() + 1 + name.len());
        key.push_str(domain);
        key.push('/');
        key.push_str(name);
        self.list.push((key, value));
    }

    fn string(&mut self, name: &str, value: String) {
        self.qualified(self.driver, name, string(value));
    }

    fn opt_string(&mut self, name: &str, value: Option<String>) {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.string(name, v);
        }
    }

    fn int(&mut self, name: &str, value: i64) {
        self.qualified(self.driver, name, int(value));
    }

    fn boolean(&mut self, name: &str, value: bool) {
        self.qualified(
            self.driver,
            name,
            DeviceAttribute {
                bool: Some(value),
                ..Default::default()
            },
        );
    }
}

/// A string attribute, cut to the API's 64-character limit (PCI database
/// names can be longer).
fn string(mut value: String) -> DeviceAttribute {
    if value.len() > MAX_ATTRIBUTE_VALUE {
        let mut cut = MAX_ATTRIBUTE_VALUE;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        value.truncate(cut);
    }
    DeviceAttribute {
        string: Some(value),
        ..Default::default()
    }
}

fn int(value: i64) -> DeviceAttribute {
    DeviceAttribute {
        int: Some(value),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sriov::fixture::Fixture;
    use std::path::PathBuf;

    fn render_fixture(f: Fixture, yaml: &str) -> Vec<ResourceSlice> {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        f.build(dir.path()).unwrap();
        let inv = NodeInventory::discover(dir.path()).unwrap();
        let config = NodeConfig::parse(yaml, "test").unwrap();
        render(&inv, &config, &SliceParams::new(&config, "node-a"))
    }

    fn attr<'a>(d: &'a Device, key: &str) -> &'a DeviceAttribute {
        d.attributes
            .as_ref()
            .and_then(|m| m.get(key))
            .unwrap_or_else(|| panic!("{} has no {key}", d.name))
    }

    #[test]
    fn attributes_are_added_in_key_order_for_the_default_driver_name() {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        Fixture::ConnectX6Dx.build(dir.path()).unwrap();
        let inv = NodeInventory::discover(dir.path()).unwrap();
        let driver = NodeConfig::default().driver_name;
        for dev in &inv.devices {
            let added = attributes(dev, &driver);
            let keys: Vec<&str> = added.list.iter().map(|(k, _)| k.as_str()).collect();
            assert!(keys.is_sorted(), "{}: {keys:?}", dev.name());
        }
        // Any other name gives the same map, only sorted on the way.
        let rdma_first = inv.devices.iter().find(|d| d.rdma.is_some()).unwrap();
        let map = device(rdma_first, "a.example.com").attributes.unwrap();
        let keys: Vec<&String> = map.keys().collect();
        assert_eq!(
            keys.len(),
            attributes(rdma_first, "a.example.com").list.len()
        );
        assert_eq!(keys[0], "a.example.com/deviceID");
        assert!(map.contains_key("resource.kubernetes.io/pciBusID"));
    }

    #[test]
    fn connectx6dx_vfs_carry_the_contract_attributes() {
        let slices = render_fixture(Fixture::ConnectX6Dx, "");
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(s.metadata.name.as_deref(), Some("node-a-sriov-dra-dev-0"));
        assert_eq!(s.spec.driver, "sriov.dra.dev");
        assert_eq!(s.spec.node_name.as_deref(), Some("node-a"));
        assert_eq!(s.spec.pool.name, "node-a");
        let devices = s.spec.devices.as_ref().unwrap();
        assert_eq!(devices.len(), 16);
        let d = devices
            .iter()
            .find(|d| d.name == "pci-0000-3b-02-1")
            .unwrap();
        assert_eq!(
            attr(d, "sriov.dra.dev/pciAddress").string.as_deref(),
            Some("0000:3b:02.1")
        );
        assert_eq!(
            attr(d, "sriov.dra.dev/pfName").string.as_deref(),
            Some("ens1f1np1")
        );
        assert_eq!(
            attr(d, "sriov.dra.dev/pfPciAddress").string.as_deref(),
            Some("0000:3b:00.1")
        );
        assert_eq!(attr(d, "sriov.dra.dev/vfIndex").int, Some(7));
        assert_eq!(attr(d, "sriov.dra.dev/numaNode").int, Some(0));
        assert_eq!(attr(d, "dra.net/numaNode").int, Some(0));
        assert_eq!(attr(d, "sriov.dra.dev/rdma").bool, Some(true));
        assert_eq!(
            attr(d, "sriov.dra.dev/rdmaDevice").string.as_deref(),
            Some("mlx5_17")
        );
        assert_eq!(attr(d, "sriov.dra.dev/isVf").bool, Some(true));
        assert_eq!(
            attr(d, "resource.kubernetes.io/pcieRoot").string.as_deref(),
            Some("pci0000:3a")
        );
        assert_eq!(
            attr(d, "resource.kubernetes.io/pciBusID").string.as_deref(),
            Some("0000:3b:02.1")
        );
        assert!(d.attributes.as_ref().unwrap().len() <= 32);
    }

    #[test]
    fn unknown_values_are_left_out() {
        let slices = render_fixture(Fixture::ConnectX7Ib, "");
        let devices = slices[0].spec.devices.as_ref().unwrap();
        let unbound = devices
            .iter()
            .find(|d| d.name == "pci-0000-5e-00-4")
            .unwrap();
        let keys = unbound.attributes.as_ref().unwrap();
        for absent in [
            "sriov.dra.dev/numaNode",
            "sriov.dra.dev/kernelDriver",
            "sriov.dra.dev/ifName",
            "sriov.dra.dev/rdmaDevice",
        ] {
            assert!(!keys.contains_key(absent), "{absent}");
        }
        assert_eq!(
            attr(unbound, "sriov.dra.dev/linkType").string.as_deref(),
            Some("infiniband")
        );
    }

    #[test]
    fn at_most_128_devices_per_slice_and_the_count_is_right() {
        let slices = render_fixture(Fixture::Scale2048, "");
        assert_eq!(slices.len(), 16);
        for (i, s) in slices.iter().enumerate() {
            assert_eq!(s.spec.devices.as_ref().unwrap().len(), 128);
            assert_eq!(s.spec.pool.resource_slice_count, 16);
            assert_eq!(
                s.metadata.name.as_deref(),
                Some(format!("node-a-sriov-dra-dev-{i}").as_str())
            );
        }
        let mut names: Vec<&str> = slices
            .iter()
            .flat_map(|s| {
                s.spec
                    .devices
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|d| d.name.as_str())
            })
            .collect();
        let before = names.clone();
        names.sort();
        names.dedup();
        assert_eq!(names, before, "names unique and already in order");
    }

    #[test]
    fn rendering_one_slice_at_a_time_gives_the_same_slices() {
        for f in [Fixture::Scale2048, Fixture::Virtio] {
            let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
            f.build(dir.path()).unwrap();
            let inv = NodeInventory::discover(dir.path()).unwrap();
            let config = NodeConfig::default();
            let params = SliceParams::new(&config, "node-a");
            let mut each = Vec::new();
            render_each(&inv, &config, &params, |s| {
                each.push(s);
                Ok(())
            })
            .unwrap();
            assert_eq!(each, render(&inv, &config, &params), "{f}");
            let mut parallel = Vec::new();
            render_each_parallel(&inv, &config, &params, Ok, |s| {
                parallel.push(s);
                Ok(())
            })
            .unwrap();
            assert_eq!(parallel, each, "{f}: on threads, in the same order");
        }
    }

    #[test]
    fn nothing_to_offer_is_one_empty_slice() {
        let slices = render_fixture(Fixture::Virtio, "");
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].spec.devices.as_deref(), Some(&[][..]));
    }

    #[test]
    fn long_strings_are_cut_to_the_api_limit() {
        let long = "x".repeat(70) + "é";
        assert_eq!(string(long).string.unwrap().len(), 64);
        assert!(slice_name(&"n".repeat(253), "sriov.dra.dev", 3).len() <= 253);
    }

    /// Golden files: `UPDATE_GOLDEN=1 cargo test` rewrites them; review the
    /// diff, since it is the wire contract the scheduler sees.
    #[test]
    fn renders_match_golden_files() {
        let golden_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/kube/testdata");
        for f in [
            Fixture::ConnectX6Dx,
            Fixture::E810,
            Fixture::ConnectX7Ib,
            Fixture::Virtio,
        ] {
            let yaml = render_fixture(f, "offerPfs: true")
                .iter()
                .map(|s| serde_yaml::to_string(s).unwrap())
                .collect::<Vec<_>>()
                .join("---\n");
            let path = golden_dir.join(format!("slices-{f}.yaml"));
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::create_dir_all(&golden_dir).unwrap();
                std::fs::write(&path, &yaml).unwrap();
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
            assert_eq!(yaml, want, "{f} render differs from {}", path.display());
        }
    }
}
