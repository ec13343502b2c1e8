//! Fixture sysfs trees, built by code the way the kernel lays them out.
//!
//! Tests across the workspace and `sriov-dra discover --fixture NAME` use
//! these to stand in for NICs this machine does not have. The layout follows
//! the kernel: device directories live under `devices/pciDDDD:BB/<bridge>/`,
//! `bus/pci/devices/<addr>` links to them, `subsystem`, `driver`, `iommu_group`,
//! `virtfnN` and `physfn` are relative symlinks, and interfaces sit in
//! `net/<ifname>/`.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::pci::PciAddress;

/// Where to put fixture trees: `/dev/shm` when writable, since sysfs is an
/// in-memory file system and a disk-backed temp dir makes scans of the
/// 2048-VF node measure the disk instead of our code; else the temp dir.
pub fn scratch_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let writable = fs::metadata(shm).is_ok_and(|m| m.is_dir() && !m.permissions().readonly());
    if writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// The named fixture nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    /// NVIDIA ConnectX-6 Dx: 2 PFs × 8 VFs, RoCE, PF0 in switchdev.
    ConnectX6Dx,
    /// Intel E810: ice PF, 4 iavf VFs, two of them bound to vfio-pci.
    E810,
    /// NVIDIA ConnectX-7 InfiniBand HCA with 4 VFs, NUMA unknown, one VF unbound.
    ConnectX7Ib,
    /// A virtio NIC without SR-IOV, as on a cloud VM.
    Virtio,
    /// 8 ConnectX-6 Dx PFs × 256 VFs, for benchmarks.
    Scale2048,
}

impl Fixture {
    /// Every fixture, in the order `--help` lists them.
    pub const ALL: [Fixture; 5] = [
        Fixture::ConnectX6Dx,
        Fixture::E810,
        Fixture::ConnectX7Ib,
        Fixture::Virtio,
        Fixture::Scale2048,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fixture::ConnectX6Dx => "connectx6dx",
            Fixture::E810 => "e810",
            Fixture::ConnectX7Ib => "connectx7-ib",
            Fixture::Virtio => "virtio",
            Fixture::Scale2048 => "scale-2048",
        }
    }

    /// Writes the fixture's tree under `root` (which should be empty).
    pub fn build(self, root: &Path) -> io::Result<()> {
        let mut t = TreeBuilder::new(root)?;
        match self {
            Fixture::ConnectX6Dx => connectx6dx(&mut t),
            Fixture::E810 => e810(&mut t),
            Fixture::ConnectX7Ib => connectx7_ib(&mut t),
            Fixture::Virtio => virtio(&mut t),
            Fixture::Scale2048 => scale_2048(&mut t),
        }
    }
}

impl fmt::Display for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fixture {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fixture::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Fixture::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fixture {s:?}; known: {}", names.join(", "))
            })
    }
}

/// One PCI function to lay out.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Its address.
    pub address: PciAddress,
    /// Path under `devices/` of the parent, e.g. `pci0000:3a/0000:3a:00.0`.
    pub parent: String,
    /// Vendor and device ID.
    pub ids: (u16, u16),
    /// Subsystem vendor and device ID.
    pub subsystem: (u16, u16),
    /// 24-bit class code.
    pub class: u32,
    /// Bound driver, if any.
    pub driver: Option<String>,
    /// `numa_node` content (`-1` for none).
    pub numa_node: i32,
    /// IOMMU group, if the platform has an IOMMU.
    pub iommu_group: Option<u32>,
    /// `sriov_totalvfs` for a PF.
    pub total_vfs: Option<u32>,
    /// The function's interface.
    pub netdev: Option<NetdevSpec>,
    /// Netdevs under a `virtioN/net/` child instead of `net/`.
    pub virtio_index: Option<u32>,
    /// The function's RDMA device.
    pub rdma: Option<RdmaSpec>,
}

/// A network interface of a function.
#[derive(Debug, Clone)]
pub struct NetdevSpec {
    /// Interface name.
    pub name: String,
    /// MAC as the kernel prints it.
    pub mac: String,
    /// MTU.
    pub mtu: u32,
    /// Speed in Mb/s; `None` writes `-1`, as for a down link.
    pub speed: Option<u32>,
    /// `operstate`; `carrier` is written to match it (`0` when down).
    pub operstate: &'static str,
    /// ARPHRD type: 1 Ethernet, 32 InfiniBand.
    pub arp_type: u32,
    /// `phys_port_name`; `None` leaves the file out.
    pub phys_port_name: Option<String>,
    /// mlx5's `compat/devlink/mode`.
    pub eswitch_mode: Option<&'static str>,
}

/// An RDMA device of a function, with its char devices.
#[derive(Debug, Clone)]
pub struct RdmaSpec {
    /// Device name (`mlx5_0`).
    pub name: String,
    /// `node_guid`.
    pub node_guid: String,
    /// Port 1's link layer: `Ethernet` or `InfiniBand`.
    pub link_layer: &'static str,
    /// Port 1's `state`.
    pub port_state: &'static str,
    /// N of `uverbsN`.
    pub verbs_index: u32,
    /// N of `umadN`/`issmN`; `None` for no MAD devices.
    pub mad_index: Option<u32>,
}

/// Writes device directories and links under a root.
pub struct TreeBuilder {
    root: PathBuf,
    next_ifindex: u32,
}

impl TreeBuilder {
    /// Starts a tree with the fixed directories every sysfs has.
    pub fn new(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("bus/pci/devices"))?;
        fs::create_dir_all(root.join("bus/pci/drivers"))?;
        fs::create_dir_all(root.join("kernel/iommu_groups"))?;
        fs::write(root.join("bus/pci/drivers_probe"), "")?;
        Ok(TreeBuilder {
            root: root.to_path_buf(),
            next_ifindex: 2,
        })
    }

    /// The tree's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The real device directory of `address` (after [`TreeBuilder::device`]).
    pub fn device_dir(&self, address: PciAddress) -> PathBuf {
        self.root.join("bus/pci/devices").join(address.to_string())
    }

    /// Lays out one function and returns its directory.
    pub fn device(&mut self, spec: &DeviceSpec) -> io::Result<PathBuf> {
        let addr = spec.address.to_string();
        let rel = format!("devices/{}/{addr}", spec.parent);
        let dir = self.root.join(&rel);
        fs::create_dir_all(&dir)?;
        // bus/pci/devices/<addr> -> ../../../devices/...
        symlink(
            format!("../../../{rel}"),
            self.root.join("bus/pci/devices").join(&addr),
        )?;
        let up = "../".repeat(rel.matches('/').count() + 1);
        // Every device the kernel makes links its bus; a scan that keeps
        // the directory open asks it whether the device is still there.
        symlink(format!("{up}bus/pci"), dir.join("subsystem"))?;
        write(&dir, "class", &format!("0x{:06x}", spec.class))?;
        write(&dir, "vendor", &format!("0x{:04x}", spec.ids.0))?;
        write(&dir, "device", &format!("0x{:04x}", spec.ids.1))?;
        write(
            &dir,
            "subsystem_vendor",
            &format!("0x{:04x}", spec.subsystem.0),
        )?;
        write(
            &dir,
            "subsystem_device",
            &format!("0x{:04x}", spec.subsystem.1),
        )?;
        write(&dir, "numa_node", &spec.numa_node.to_string())?;
        write(
            &dir,
            "uevent",
            &format!(
                "PCI_CLASS={:X}\nPCI_ID={:04X}:{:04X}\nPCI_SUBSYS_ID={:04X}:{:04X}\nPCI_SLOT_NAME={addr}",
                spec.class, spec.ids.0, spec.ids.1, spec.subsystem.0, spec.subsystem.1
            ),
        )?;
        write(&dir, "driver_override", "(null)")?;
        if let Some(driver) = &spec.driver {
            self.bind(spec.address, driver)?;
        }
        if let Some(group) = spec.iommu_group {
            fs::create_dir_all(
                self.root
                    .join(format!("kernel/iommu_groups/{group}/devices")),
            )?;
            symlink(
                format!("{up}kernel/iommu_groups/{group}"),
                dir.join("iommu_group"),
            )?;
        }
        if let Some(total) = spec.total_vfs {
            write(&dir, "sriov_totalvfs", &total.to_string())?;
            write(&dir, "sriov_numvfs", "0")?;
        }
        if let Some(nd) = &spec.netdev {
            let net_dir = match spec.virtio_index {
                Some(i) => dir.join(format!("virtio{i}/net")),
                None => dir.join("net"),
            };
            self.netdev(&net_dir, nd)?;
        }
        if let Some(rdma) = &spec.rdma {
            self.rdma(&dir, rdma, spec.netdev.as_ref().map(|n| n.name.as_str()))?;
        }
        Ok(dir)
    }

    /// Points `driver` at `bus/pci/drivers/<driver>`, creating the driver.
    pub fn bind(&mut self, address: PciAddress, driver: &str) -> io::Result<()> {
        let drv = self.root.join("bus/pci/drivers").join(driver);
        if !drv.exists() {
            fs::create_dir_all(&drv)?;
            write(&drv, "bind", "")?;
            write(&drv, "unbind", "")?;
            write(&drv, "new_id", "")?;
        }
        let dev = self.device_dir(address);
        let rel = fs::read_link(&dev)?;
        let depth = rel.to_string_lossy().matches('/').count() - 2;
        let link = dev.join("driver");
        let _ = fs::remove_file(&link);
        symlink(
            format!("{}bus/pci/drivers/{driver}", "../".repeat(depth)),
            link,
        )?;
        symlink(
            format!("../../../../devices/{}", rel_tail(&rel)),
            drv.join(address.to_string()),
        )
    }

    /// Records `vf` as VF `index` of `pf` (`virtfnN` and `physfn`) and bumps
    /// the PF's `sriov_numvfs`.
    pub fn link_vf(&mut self, pf: PciAddress, index: u32, vf: PciAddress) -> io::Result<()> {
        let pf_dir = self.device_dir(pf);
        symlink(format!("../{vf}"), pf_dir.join(format!("virtfn{index}")))?;
        symlink(format!("../{pf}"), self.device_dir(vf).join("physfn"))?;
        let num: u32 = fs::read_to_string(pf_dir.join("sriov_numvfs"))?
            .trim()
            .parse()
            .unwrap_or(0);
        write(&pf_dir, "sriov_numvfs", &(num + 1).to_string())
    }

    fn netdev(&mut self, net_dir: &Path, nd: &NetdevSpec) -> io::Result<()> {
        let dir = net_dir.join(&nd.name);
        fs::create_dir_all(&dir)?;
        class_link(&self.root, "net", &dir)?;
        write(&dir, "address", &nd.mac)?;
        write(&dir, "mtu", &nd.mtu.to_string())?;
        write(
            &dir,
            "speed",
            &nd.speed.map_or("-1".into(), |s| s.to_string()),
        )?;
        write(&dir, "operstate", nd.operstate)?;
        write(&dir, "carrier", carrier_of(nd.operstate))?;
        write(&dir, "type", &nd.arp_type.to_string())?;
        write(&dir, "ifindex", &self.next_ifindex.to_string())?;
        self.next_ifindex += 1;
        if let Some(port) = &nd.phys_port_name {
            write(&dir, "phys_port_name", port)?;
        }
        if let Some(mode) = nd.eswitch_mode {
            fs::create_dir_all(dir.join("compat/devlink"))?;
            write(&dir, "compat/devlink/mode", mode)?;
        }
        Ok(())
    }

    fn rdma(&mut self, dir: &Path, r: &RdmaSpec, netdev: Option<&str>) -> io::Result<()> {
        let ib = dir.join("infiniband").join(&r.name);
        let port = ib.join("ports/1");
        fs::create_dir_all(port.join("gid_attrs/ndevs"))?;
        class_link(&self.root, "infiniband", &ib)?;
        write(&ib, "node_guid", &r.node_guid)?;
        write(&ib, "node_type", "1: CA")?;
        write(&port, "state", r.port_state)?;
        write(&port, "link_layer", r.link_layer)?;
        write(&port, "rate", "100 Gb/sec (2X HDR)")?;
        if r.link_layer == "Ethernet" {
            write(&port, "gid_attrs/ndevs/0", netdev.unwrap_or(""))?;
        }
        let verbs = dir.join(format!("infiniband_verbs/uverbs{}", r.verbs_index));
        fs::create_dir_all(&verbs)?;
        write(&verbs, "ibdev", &r.name)?;
        write(&verbs, "dev", &format!("231:{}", 192 + r.verbs_index))?;
        if let Some(m) = r.mad_index {
            for kind in ["umad", "issm"] {
                let d = dir.join(format!("infiniband_mad/{kind}{m}"));
                fs::create_dir_all(&d)?;
                write(&d, "ibdev", &r.name)?;
                write(&d, "port", "1")?;
            }
        }
        Ok(())
    }
}

/// Links `<root>/class/<class>/<name>` to the device directory `dir` (under
/// `<root>/devices`), and `dir/device` to its parent device two levels up,
/// as the kernel does for each class device: trees that move or rename
/// interfaces keep `class/` in step with this.
pub fn class_link(root: &Path, class: &str, dir: &Path) -> io::Result<()> {
    // Either may be reached through links (`bus/pci/devices/<address>`).
    let (root, dir) = (fs::canonicalize(root)?, fs::canonicalize(dir)?);
    if fs::symlink_metadata(dir.join("device")).is_err() {
        symlink("../..", dir.join("device"))?;
    }
    let rel = dir.strip_prefix(&root).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not under {}", dir.display(), root.display()),
        )
    })?;
    let name = dir.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "a class device needs a name")
    })?;
    let class_dir = root.join("class").join(class);
    fs::create_dir_all(&class_dir)?;
    let link = class_dir.join(name);
    let _ = fs::remove_file(&link);
    symlink(Path::new("../..").join(rel), link)
}

/// Renames the class device at `dir` (an interface, an RDMA device) to
/// `new_name` in its directory and in `class/<class>/`, as the kernel does.
pub fn rename_class_device(
    root: &Path,
    class: &str,
    dir: &Path,
    new_name: &str,
) -> io::Result<PathBuf> {
    let old = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a class device needs a name"))?
        .to_string();
    let real = fs::canonicalize(dir)?;
    let renamed = real.with_file_name(new_name);
    fs::rename(&real, &renamed)?;
    class_unlink(root, class, &old)?;
    class_link(root, class, &renamed)?;
    Ok(renamed)
}

/// Removes a function's class directory (`<function>/net`,
/// `<function>/infiniband`) and its entries' links in `class/<class>/`, as
/// when a driver unbinds or the devices leave for another namespace.
pub fn remove_class_dir(root: &Path, class: &str, dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        class_unlink(root, class, &entry?.file_name().to_string_lossy())?;
    }
    fs::remove_dir_all(dir)
}

/// Takes `name` out of `<root>/class/<class>/`, as when the kernel removes
/// the device or it leaves for another network namespace.
pub fn class_unlink(root: &Path, class: &str, name: &str) -> io::Result<()> {
    match fs::remove_file(root.join("class").join(class).join(name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rel_tail(rel: &Path) -> String {
    rel.to_string_lossy()
        .trim_start_matches("../../../devices/")
        .to_string()
}

/// The `carrier` a kernel shows with `operstate`: a link down for want of
/// carrier has none (`0`); an up link, or one whose driver leaves
/// `operstate` at `unknown`, has it (`1`). A real interface that is
/// administratively down refuses the read (EINVAL), which a file cannot
/// do: `0` stands for it. A test wanting carrier to disagree with
/// `operstate` writes the file itself.
fn carrier_of(operstate: &str) -> &'static str {
    match operstate {
        "down" | "lowerlayerdown" | "notpresent" => "0",
        _ => "1",
    }
}

fn write(dir: &Path, name: &str, content: &str) -> io::Result<()> {
    fs::write(dir.join(name), format!("{content}\n"))
}

fn addr(domain: u32, bus: u8, device: u8, function: u8) -> PciAddress {
    PciAddress {
        domain,
        bus,
        device,
        function,
    }
}

const MELLANOX: u16 = 0x15b3;
const INTEL: u16 = 0x8086;

/// Builder state shared by the ConnectX fixtures.
struct Cx {
    iommu: u32,
    rdma: u32,
}

impl Cx {
    /// Lays out a ConnectX PF with `vfs` VFs right after it on the same bus
    /// (offset 2, stride 1, as mlx5 firmware assigns them), or on the next
    /// bus when `vf_bus` is given.
    #[allow(clippy::too_many_arguments)]
    fn pf(
        &mut self,
        t: &mut TreeBuilder,
        pf: PciAddress,
        parent: &str,
        numa: i32,
        ifname: &str,
        port: u32,
        eswitch: &'static str,
        vfs: u32,
        vf_bus: Option<u8>,
    ) -> io::Result<()> {
        let switchdev = eswitch == "switchdev";
        let rdma = self.rdma;
        self.rdma += 1;
        self.iommu += 1;
        t.device(&DeviceSpec {
            address: pf,
            parent: parent.into(),
            ids: (MELLANOX, 0x101d),
            subsystem: (MELLANOX, 0x0016),
            class: 0x020000,
            driver: Some("mlx5_core".into()),
            numa_node: numa,
            iommu_group: Some(self.iommu),
            total_vfs: Some(vfs.max(8)),
            netdev: Some(NetdevSpec {
                name: format!("{ifname}np{port}"),
                mac: format!(
                    "b8:ce:f6:{:02x}:{:02x}:{:02x}",
                    pf.bus, pf.device, pf.function
                ),
                mtu: 9000,
                speed: Some(100_000),
                operstate: "up",
                arp_type: 1,
                phys_port_name: Some(format!("p{port}")),
                eswitch_mode: Some(eswitch),
            }),
            virtio_index: None,
            rdma: Some(RdmaSpec {
                name: format!("mlx5_{rdma}"),
                node_guid: format!("b8ce:f603:00{:02x}:{:04x}", pf.bus, rdma),
                link_layer: "Ethernet",
                port_state: "4: ACTIVE",
                verbs_index: rdma,
                mad_index: None,
            }),
        })?;
        for i in 0..vfs {
            let vf = match vf_bus {
                Some(bus) => addr(pf.domain, bus, (i / 8) as u8, (i % 8) as u8),
                None => {
                    let n = u32::from(pf.device) * 8
                        + u32::from(pf.function)
                        + 2
                        + i
                        + if pf.function == 1 { 7 } else { 0 };
                    addr(pf.domain, pf.bus, (n / 8) as u8, (n % 8) as u8)
                }
            };
            let rdma = self.rdma;
            self.rdma += 1;
            self.iommu += 1;
            t.device(&DeviceSpec {
                address: vf,
                parent: parent.into(),
                ids: (MELLANOX, 0x101e),
                subsystem: (MELLANOX, 0x0016),
                class: 0x020000,
                driver: Some("mlx5_core".into()),
                numa_node: numa,
                iommu_group: Some(self.iommu),
                total_vfs: None,
                netdev: Some(NetdevSpec {
                    name: format!("{ifname}v{i}"),
                    mac: format!(
                        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                        pf.bus, pf.function, vf.bus, vf.device, vf.function
                    ),
                    mtu: 1500,
                    speed: Some(100_000),
                    operstate: "up",
                    arp_type: 1,
                    phys_port_name: None,
                    eswitch_mode: None,
                }),
                virtio_index: None,
                rdma: Some(RdmaSpec {
                    name: format!("mlx5_{rdma}"),
                    node_guid: format!("0000:0000:00{:02x}:{:04x}", vf.bus, rdma),
                    link_layer: "Ethernet",
                    port_state: "4: ACTIVE",
                    verbs_index: rdma,
                    mad_index: None,
                }),
            })?;
            t.link_vf(pf, i, vf)?;
            if switchdev {
                // The representor of VF i hangs off the PF.
                let rep = NetdevSpec {
                    name: format!("{ifname}r{i}"),
                    mac: format!("5a:11:22:33:{:02x}:{:02x}", port, i),
                    mtu: 1500,
                    speed: None,
                    operstate: "up",
                    arp_type: 1,
                    phys_port_name: Some(format!("pf{port}vf{i}")),
                    eswitch_mode: None,
                };
                let net_dir = t.device_dir(pf).join("net");
                t.netdev(&net_dir, &rep)?;
            }
        }
        Ok(())
    }
}

fn connectx6dx(t: &mut TreeBuilder) -> io::Result<()> {
    let mut cx = Cx { iommu: 20, rdma: 0 };
    let parent = "pci0000:3a/0000:3a:00.0";
    cx.pf(
        t,
        addr(0, 0x3b, 0, 0),
        parent,
        0,
        "ens1f0",
        0,
        "switchdev",
        8,
        None,
    )?;
    cx.pf(
        t,
        addr(0, 0x3b, 0, 1),
        parent,
        0,
        "ens1f1",
        1,
        "legacy",
        8,
        None,
    )
}

fn e810(t: &mut TreeBuilder) -> io::Result<()> {
    let parent = "pci0000:ae/0000:ae:00.0";
    let pf = addr(0, 0xaf, 0, 0);
    t.device(&DeviceSpec {
        address: pf,
        parent: parent.into(),
        ids: (INTEL, 0x1592),
        subsystem: (INTEL, 0x0002),
        class: 0x020000,
        driver: Some("ice".into()),
        numa_node: 1,
        iommu_group: Some(60),
        total_vfs: Some(128),
        netdev: Some(NetdevSpec {
            name: "ens3f0".into(),
            mac: "b4:96:91:aa:00:00".into(),
            mtu: 9000,
            speed: Some(100_000),
            operstate: "up",
            arp_type: 1,
            phys_port_name: None,
            eswitch_mode: None,
        }),
        virtio_index: None,
        rdma: None,
    })?;
    for i in 0..4u8 {
        let vf = addr(0, 0xaf, 1, i);
        let dpdk = i >= 2;
        t.device(&DeviceSpec {
            address: vf,
            parent: parent.into(),
            ids: (INTEL, 0x1889),
            subsystem: (INTEL, 0x0000),
            class: 0x020000,
            driver: Some(if dpdk { "vfio-pci" } else { "iavf" }.into()),
            numa_node: 1,
            iommu_group: Some(61 + u32::from(i)),
            total_vfs: None,
            netdev: (!dpdk).then(|| NetdevSpec {
                name: format!("ens3f0v{i}"),
                mac: format!("02:00:af:01:00:{i:02x}"),
                mtu: 1500,
                speed: None,
                operstate: "down",
                arp_type: 1,
                phys_port_name: None,
                eswitch_mode: None,
            }),
            virtio_index: None,
            rdma: None,
        })?;
        t.link_vf(pf, u32::from(i), vf)?;
    }
    Ok(())
}

fn connectx7_ib(t: &mut TreeBuilder) -> io::Result<()> {
    let parent = "pci0000:5d/0000:5d:00.0";
    let pf = addr(0, 0x5e, 0, 0);
    let ib = |name: &str, guid: &str, verbs| RdmaSpec {
        name: name.into(),
        node_guid: guid.into(),
        link_layer: "InfiniBand",
        port_state: "4: ACTIVE",
        verbs_index: verbs,
        mad_index: Some(verbs),
    };
    let ipoib = |name: String, mac: String| NetdevSpec {
        name,
        mac,
        mtu: 4092,
        speed: Some(400_000),
        operstate: "up",
        arp_type: 32,
        phys_port_name: None,
        eswitch_mode: None,
    };
    t.device(&DeviceSpec {
        address: pf,
        parent: parent.into(),
        ids: (MELLANOX, 0x1021),
        subsystem: (MELLANOX, 0x0041),
        class: 0x020700,
        driver: Some("mlx5_core".into()),
        numa_node: -1,
        iommu_group: Some(80),
        total_vfs: Some(16),
        netdev: Some(ipoib(
            "ibp94s0".into(),
            "00:00:10:49:fe:80:00:00:00:00:00:00:a0:88:c2:03:00:5e:00:00".into(),
        )),
        virtio_index: None,
        rdma: Some(ib("mlx5_ib0", "a088:c203:005e:0000", 0)),
    })?;
    for i in 0..4u8 {
        let vf = addr(0, 0x5e, 0, 1 + i);
        let unbound = i == 3;
        t.device(&DeviceSpec {
            address: vf,
            parent: parent.into(),
            ids: (MELLANOX, 0x101e),
            subsystem: (MELLANOX, 0x0041),
            class: 0x020700,
            driver: (!unbound).then(|| "mlx5_core".to_string()),
            numa_node: -1,
            iommu_group: Some(81 + u32::from(i)),
            total_vfs: None,
            netdev: (!unbound).then(|| {
                ipoib(
                    format!("ibp94s0v{i}"),
                    format!("00:00:10:49:fe:80:00:00:00:00:00:00:a0:88:c2:03:00:5e:01:{i:02x}"),
                )
            }),
            virtio_index: None,
            rdma: (!unbound).then(|| {
                ib(
                    &format!("mlx5_ib{}", 1 + i),
                    &format!("a088:c203:005e:01{i:02x}"),
                    1 + u32::from(i),
                )
            }),
        })?;
        t.link_vf(pf, u32::from(i), vf)?;
    }
    Ok(())
}

fn virtio(t: &mut TreeBuilder) -> io::Result<()> {
    t.device(&DeviceSpec {
        address: addr(0, 0, 3, 0),
        parent: "pci0000:00".into(),
        ids: (0x1af4, 0x1041),
        subsystem: (0x1af4, 0x1041),
        class: 0x020000,
        driver: Some("virtio-pci".into()),
        numa_node: -1,
        iommu_group: None,
        total_vfs: None,
        netdev: Some(NetdevSpec {
            name: "eth0".into(),
            mac: "02:fc:00:00:00:01".into(),
            mtu: 1400,
            speed: None,
            operstate: "up",
            arp_type: 1,
            phys_port_name: None,
            eswitch_mode: None,
        }),
        virtio_index: Some(2),
        rdma: None,
    })?;
    Ok(())
}

fn scale_2048(t: &mut TreeBuilder) -> io::Result<()> {
    let mut cx = Cx {
        iommu: 100,
        rdma: 0,
    };
    for p in 0..8u8 {
        let root_bus = 0x10 + p * 0x10;
        let parent = format!("pci0000:{root_bus:02x}/0000:{root_bus:02x}:00.0");
        let pf = addr(0, root_bus + 1, 0, 0);
        let numa = i32::from(p / 4);
        let name = format!("ens{}f0", p + 1);
        cx.pf(
            t,
            pf,
            &parent,
            numa,
            &name,
            0,
            "legacy",
            256,
            Some(root_bus + 2),
        )?;
    }
    Ok(())
}
