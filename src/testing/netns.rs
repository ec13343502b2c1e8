//! Helpers the attach tests and benchmarks share: the root check, fixture trees naming
//! stand-in links, scripted link replies, a journal of requests across
//! transports, and real stand-in "VFs".

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rdma::netlink::{NldevReply, NldevRequest, RdmaNetlinkError, RdmaTransport};
use sriov::PciAddress;
use sriov::fixture::{DeviceSpec, NetdevSpec, TreeBuilder};
use sriov::netlink::link::{self, CREATE_EXCLUSIVE, LinkFacts};
use sriov::netlink::{NetlinkError, RouteSocket, RouteTransport};
use tempfile::TempDir;

/// The one root check of the project's tests: see [`sriov::testing::have_root`].
pub use sriov::testing::have_root;

/// A fixture sysfs with one Ethernet VF per entry, whose `net/` lists the
/// given interface (none: no netdev, as when bound to vfio-pci).
pub fn stand_in_tree(devices: &[(PciAddress, Option<&str>)]) -> TempDir {
    let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
    let mut tree = TreeBuilder::new(dir.path()).unwrap();
    for (pci, name) in devices {
        tree.device(&DeviceSpec {
            address: *pci,
            parent: "pci0000:3a/0000:3a:00.0".into(),
            ids: (0x15b3, 0x101e),
            subsystem: (0x15b3, 0x0016),
            class: 0x020000,
            driver: Some("mlx5_core".into()),
            numa_node: 0,
            iommu_group: None,
            total_vfs: None,
            netdev: name.map(|n| NetdevSpec {
                name: n.to_string(),
                mac: "02:00:00:00:00:00".into(),
                mtu: 1500,
                speed: None,
                operstate: "down",
                arp_type: 1,
                phys_port_name: None,
                eswitch_mode: None,
            }),
            virtio_index: None,
            rdma: None,
        })
        .unwrap();
    }
    dir
}

/// Points the fixture's `net/` entry of `pci` at `name`, as sysfs would
/// show it after the kernel renamed the link.
pub fn rename_in_tree(tree: &TempDir, pci: PciAddress, name: &str) {
    let net = tree
        .path()
        .join("bus/pci/devices")
        .join(pci.to_string())
        .join("net");
    sriov::fixture::remove_class_dir(tree.path(), "net", &net).unwrap();
    std::fs::create_dir_all(net.join(name)).unwrap();
    sriov::fixture::class_link(tree.path(), "net", &net.join(name)).unwrap();
}

/// An `RTM_NEWLINK` reply as the kernel sends it for a 1500-byte-MTU link.
pub fn link_reply(
    index: u32,
    name: &str,
    mac: [u8; 6],
    parent: Option<&str>,
) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.attributes = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::Address(mac.to_vec()),
        LinkAttribute::Mtu(1500),
    ];
    if let Some(parent) = parent {
        link.attributes
            .push(LinkAttribute::ParentDevName(parent.to_string()));
    }
    RouteNetlinkMessage::NewLink(link)
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for link names of this test process.
pub fn unique_tag() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:05}{n:03}", std::process::id() % 100_000)
}

/// A stand-in VF in the host: a macvlan on a host-resident veth end.
///
/// Unlike a veth end, a macvlan moved into a pod keeps working and dies only
/// with its parent, which stays in the host; dropping the stand-in deletes
/// the parent and with it the macvlan, wherever it is.
pub struct StandIn {
    /// The macvlan: the "VF" netdev.
    pub name: String,
    parent: String,
}

impl StandIn {
    /// Creates `sv<tag>` on parent `sp<tag>` (up, so the VF has carrier).
    pub fn new(host: &mut RouteSocket) -> StandIn {
        let tag = unique_tag();
        let (name, parent) = (format!("sv{tag}"), format!("sp{tag}"));
        host.request(
            "creating a stand-in parent",
            link::new_veth_message(&parent, &format!("sq{tag}")),
            CREATE_EXCLUSIVE,
        )
        .unwrap();
        let p = facts(host, &parent).unwrap();
        host.request("parent up", link::set_up_message(p.index, true), 0)
            .unwrap();
        host.request(
            "creating a stand-in VF",
            link::new_macvlan_message(&name, p.index),
            CREATE_EXCLUSIVE,
        )
        .unwrap();
        StandIn { name, parent }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Ok(mut host) = RouteSocket::new() {
            let _ = host.request(
                "deleting a stand-in",
                link::del_link_message(&self.parent),
                0,
            );
        }
    }
}

/// The link called `name` in the socket's namespace, if any.
pub fn facts(socket: &mut impl RouteTransport, name: &str) -> Option<LinkFacts> {
    link::get_link(socket, "test lookup", link::get_link_by_name_message(name)).unwrap()
}

/// The order of requests across several transports (each recording
/// transport only knows its own): every wrapped request is written down as
/// `"<side>: <op>"`.
#[derive(Debug, Default, Clone)]
pub struct Journal(Rc<RefCell<Vec<String>>>);

impl Journal {
    /// Wraps `inner` so that its requests go into this journal as `side`.
    pub fn wrap<'a, T>(&self, side: &'static str, inner: &'a mut T) -> Logged<'a, T> {
        Logged {
            inner,
            side,
            journal: self.clone(),
        }
    }

    /// Every request so far, in order.
    pub fn entries(&self) -> Vec<String> {
        self.0.borrow().clone()
    }

    fn note(&self, side: &str, op: &str) {
        self.0.borrow_mut().push(format!("{side}: {op}"));
    }
}

/// A transport whose requests are also written into a [`Journal`].
pub struct Logged<'a, T> {
    inner: &'a mut T,
    side: &'static str,
    journal: Journal,
}

impl<T: RouteTransport> RouteTransport for Logged<'_, T> {
    fn request(
        &mut self,
        op: &str,
        request: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.journal.note(self.side, op);
        self.inner.request(op, request, extra_flags)
    }
}

impl<T: RdmaTransport> RdmaTransport for Logged<'_, T> {
    fn request(
        &mut self,
        op: &str,
        request: &NldevRequest,
    ) -> Result<Vec<NldevReply>, RdmaNetlinkError> {
        self.journal.note(self.side, op);
        self.inner.request(op, request)
    }
}
