//! The demo's simulated node and everything it makes on the host: a
//! temporary directory (fixture sysfs, state store, CDI specs, kubelet and
//! NRI sockets), macvlan links playing the VFs' netdevs, and the pod's
//! network namespace under `/run/netns` (so `ip -n` finds it).
//!
//! Each thing is written down here the moment it exists, and
//! [`DemoNode::teardown`] removes whatever exists, in any state the demo
//! was stopped in; it also runs on drop (a panic unwinding included).

use std::path::{Path, PathBuf};

use anyhow::Context;
use sriov::PciAddress;
use sriov::fixture::{DeviceSpec, NetdevSpec, TreeBuilder};
use sriov::netlink::link::{self, CREATE_EXCLUSIVE};
use sriov::netlink::{RouteSocket, RouteTransport};

use crate::attach::netns::PinnedNetns;

/// The simulated PF's interface name. No such link exists: its VF table is
/// a `SimulatedPf`, which is why the demo says so when it shows a VLAN.
pub const PF_NAME: &str = "demo-pf0";
/// The PF's PCI address in the fixture tree.
pub const PF_PCI: &str = "0000:5d:00.0";
/// How many VFs the PF has.
pub const VF_COUNT: u32 = 2;

/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// One VF of the demo node: its PCI address and the link playing its netdev.
#[derive(Debug, Clone)]
pub struct DemoVf {
    /// VF index on the PF.
    pub index: u32,
    /// The VF's PCI address in the fixture tree.
    pub pci: PciAddress,
    /// The macvlan link in the host that plays its netdev.
    pub if_name: String,
    /// The veth whose deletion takes the macvlan with it, wherever it is.
    parent: String,
}

impl DemoVf {
    /// The DRA device name (`pci-0000-5d-00-2`).
    pub fn device(&self) -> String {
        self.pci.device_name()
    }
}

/// The names this process's demo uses, derived from its PID so that two
/// demos (or a demo and the tests) never collide and a test can check that
/// exactly these are gone.
#[derive(Debug, Clone)]
pub struct DemoNames {
    /// `sriov-dra-demo-<pid>`: the netns and the temp dir's prefix.
    pub base: String,
    pid: u32,
}

impl DemoNames {
    /// Names for process `pid`.
    pub fn for_pid(pid: u32) -> Self {
        DemoNames {
            base: format!("sriov-dra-demo-{pid}"),
            pid,
        }
    }

    /// `(macvlan, veth parent, veth peer)` of VF `index` (≤ 15 bytes each).
    pub fn vf_links(&self, index: u32) -> (String, String, String) {
        let tag = format!("{}-{index}", self.pid);
        (format!("dv{tag}"), format!("dp{tag}"), format!("dq{tag}"))
    }

    /// The pod's netns path.
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.base)
    }
}

/// The demo node and the host resources it holds.
pub struct DemoNode {
    /// Its names.
    pub names: DemoNames,
    /// The temporary directory, until removed.
    dir: Option<tempfile::TempDir>,
    /// The VFs whose links exist.
    pub vfs: Vec<DemoVf>,
    netns: Option<PinnedNetns>,
    made_netns_dir: bool,
}

impl DemoNode {
    /// An empty node: makes nothing yet.
    pub fn new(names: DemoNames) -> Self {
        DemoNode {
            names,
            dir: None,
            vfs: Vec::new(),
            netns: None,
            made_netns_dir: false,
        }
    }

    /// The temporary directory (after [`DemoNode::build`]).
    pub fn dir(&self) -> anyhow::Result<&Path> {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .context("the demo node has no directory yet")
    }

    /// The fixture sysfs root.
    pub fn sysfs(&self) -> anyhow::Result<PathBuf> {
        Ok(self.dir()?.join("sys"))
    }

    /// The pod's netns, once created.
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_ref().map(|n| n.path())
    }

    /// Makes the temp dir, the VF links and the fixture sysfs naming them.
    pub fn build(&mut self) -> anyhow::Result<()> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", self.names.base))
            .tempdir_in(sriov::fixture::scratch_base())
            .context("cannot create the demo's temporary directory")?;
        self.dir = Some(dir);
        let mut host = RouteSocket::new().context("cannot open a netlink socket")?;
        let pf: PciAddress = PF_PCI.parse().context("PF address")?;
        for index in 0..VF_COUNT {
            let (name, parent, peer) = self.names.vf_links(index);
            host.request(
                "creating a veth for a stand-in VF",
                link::new_veth_message(&parent, &peer),
                CREATE_EXCLUSIVE,
            )
            .with_context(|| format!("cannot create veth {parent}"))?;
            let pci =
                PciAddress::new(pf.domain, pf.bus, 0, 2 + index as u8).context("VF address")?;
            self.vfs.push(DemoVf {
                index,
                pci,
                if_name: name.clone(),
                parent: parent.clone(),
            });
            let parent_link = link::get_link(
                &mut host,
                "looking up the veth",
                link::get_link_by_name_message(&parent),
            )?
            .with_context(|| format!("veth {parent} vanished"))?;
            // Both ends up, so the VF has carrier in the pod.
            for end in [&parent, &peer] {
                let index = link::get_link(
                    &mut host,
                    "looking up the veth",
                    link::get_link_by_name_message(end),
                )?
                .with_context(|| format!("veth {end} vanished"))?
                .index;
                host.request("setting the veth up", link::set_up_message(index, true), 0)?;
            }
            host.request(
                "creating a stand-in VF",
                link::new_macvlan_message(&name, parent_link.index),
                CREATE_EXCLUSIVE,
            )
            .with_context(|| format!("cannot create macvlan {name}"))?;
        }
        self.write_tree(&mut host, pf)
    }

    /// Lays out the PF and its VFs, the VFs' `net/` naming the links.
    fn write_tree(&self, host: &mut RouteSocket, pf: PciAddress) -> anyhow::Result<()> {
        let sysfs = self.sysfs()?;
        let mut tree = TreeBuilder::new(&sysfs).context("fixture sysfs")?;
        let parent = "pci0000:5d/0000:5d:00.0".to_string();
        let spec = |address, netdev, total_vfs, group| DeviceSpec {
            address,
            parent: parent.clone(),
            ids: (0x15b3, 0x101d),
            subsystem: (0x15b3, 0x0016),
            class: 0x020000,
            driver: Some("mlx5_core".into()),
            numa_node: 0,
            iommu_group: Some(group),
            total_vfs,
            netdev: Some(netdev),
            virtio_index: None,
            rdma: None,
        };
        let netdev = |name: &str, mac: String, mtu| NetdevSpec {
            name: name.to_string(),
            mac,
            mtu,
            speed: Some(100_000),
            operstate: "up",
            arp_type: 1,
            phys_port_name: None,
            eswitch_mode: Some("legacy"),
        };
        tree.device(&spec(
            pf,
            netdev(PF_NAME, "b8:ce:f6:5d:00:00".into(), 9000),
            Some(VF_COUNT),
            40,
        ))
        .context("fixture PF")?;
        for vf in &self.vfs {
            let facts = link::get_link(
                host,
                "reading a stand-in VF",
                link::get_link_by_name_message(&vf.if_name),
            )?
            .with_context(|| format!("macvlan {} vanished", vf.if_name))?;
            let mac = facts
                .mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            tree.device(&spec(
                vf.pci,
                netdev(&vf.if_name, mac, 1500),
                None,
                41 + vf.index,
            ))
            .context("fixture VF")?;
            tree.link_vf(pf, vf.index, vf.pci)
                .context("fixture VF link")?;
        }
        Ok(())
    }

    /// Creates the pod's netns at `/run/netns/<base>`.
    ///
    /// Another demo ending at the same moment may remove `/run/netns` if it
    /// made it and found it empty; the directory is then made again.
    pub fn create_netns(&mut self) -> anyhow::Result<&Path> {
        let path = self.names.netns_path();
        let mut attempts = 0;
        let ns = loop {
            if !Path::new(NETNS_DIR).exists() {
                std::fs::create_dir_all(NETNS_DIR)
                    .with_context(|| format!("cannot create {NETNS_DIR}"))?;
                self.made_netns_dir = true;
            }
            attempts += 1;
            match PinnedNetns::create(&path) {
                Ok(ns) => break ns,
                Err(_) if attempts < 3 && !Path::new(NETNS_DIR).exists() => continue,
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "cannot create network namespace {}",
                        path.display()
                    )));
                }
            }
        };
        Ok(self.netns.insert(ns).path())
    }

    /// Removes everything that exists, and says what it removed. Safe to
    /// call again (and in any state).
    pub fn teardown(&mut self) -> Vec<String> {
        let mut done = Vec::new();
        if let Some(ns) = self.netns.take() {
            done.push(format!("network namespace {}", ns.path().display()));
            drop(ns);
        }
        if !self.vfs.is_empty() {
            match RouteSocket::new() {
                Ok(mut host) => {
                    for vf in self.vfs.drain(..) {
                        // Deleting the veth takes its peer and the macvlan
                        // (wherever it is now) with it.
                        match host.request(
                            "deleting a stand-in VF's veth",
                            link::del_link_message(&vf.parent),
                            0,
                        ) {
                            Ok(_) => done.push(format!("links {} and {}", vf.parent, vf.if_name)),
                            Err(e) if e.errno() == Some(libc::ENODEV) => {}
                            Err(e) => done.push(format!("could NOT delete {}: {e}", vf.parent)),
                        }
                    }
                }
                Err(e) => done.push(format!("could NOT open netlink to delete the links: {e}")),
            }
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().display().to_string();
            match dir.close() {
                Ok(()) => done.push(format!("directory {path} (sysfs, state, sockets, CDI)")),
                Err(e) => done.push(format!("could NOT remove {path}: {e}")),
            }
        }
        if self.made_netns_dir {
            self.made_netns_dir = false;
            // Only if empty: another tool may have put a namespace there since.
            if std::fs::remove_dir(NETNS_DIR).is_ok() {
                done.push(format!("{NETNS_DIR} (it did not exist before)"));
            }
        }
        done
    }
}

impl Drop for DemoNode {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_in_an_interface_name_and_carry_the_pid() {
        let names = DemoNames::for_pid(4_194_304);
        let (vf, parent, peer) = names.vf_links(1);
        for name in [&vf, &parent, &peer] {
            assert!(name.len() <= 15, "{name}");
            assert!(name.contains("4194304"), "{name}");
        }
        assert_eq!(
            names.netns_path(),
            Path::new("/run/netns/sriov-dra-demo-4194304")
        );
    }

    #[test]
    fn an_empty_node_tears_down_to_nothing() {
        let mut node = DemoNode::new(DemoNames::for_pid(1));
        assert!(node.teardown().is_empty());
    }
}
