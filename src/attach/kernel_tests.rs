//! Attach and detach against the real kernel: pinned network namespaces
//! play pods, macvlan links on host-resident veth parents play VFs, and a
//! fixture sysfs maps each fake VF's PCI address to its stand-in's name.

use std::net::IpAddr;
use std::path::Path;

use ipnetwork::IpNetwork;
use sriov::PciAddress;
use sriov::netlink::address::{AddressFacts, dump_addresses};
use sriov::netlink::link::{self, LinkFacts};
use sriov::netlink::route::{RouteFacts, dump_routes};
use sriov::netlink::{RouteSocket, RouteTransport};
use tempfile::TempDir;

use super::netns::{PinnedNetns, run_in_netns};
use super::plan::{PodDevice, RouteSpec};
use super::{AttachCause, Attacher, Attachment};
use crate::testing::netns::{StandIn, facts, have_root, rename_in_tree, stand_in_tree};

fn pci(n: u8) -> PciAddress {
    PciAddress::new(0, 0x3b, 2 + n / 8, n % 8).unwrap()
}

fn device(n: u8, addresses: &[&str], routes: Vec<RouteSpec>) -> PodDevice {
    PodDevice {
        claim: format!("telco/claim-{n}"),
        device: pci(n).device_name(),
        pci_address: pci(n),
        if_name: None,
        mtu: None,
        mac: None,
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        routes,
        rdma_device: None,
        rdma_exclusive: false,
    }
}

/// What the pod's namespace holds, read over a socket opened inside it.
struct PodView {
    links: Vec<LinkFacts>,
    addresses: Vec<AddressFacts>,
    routes: Vec<RouteFacts>,
}

fn look_inside(netns: &Path) -> PodView {
    let mut s: RouteSocket = run_in_netns(netns, RouteSocket::new).unwrap().unwrap();
    let links = link::dump_links(&mut s, "pod links").unwrap();
    let mut addresses = Vec::new();
    for l in &links {
        addresses.extend(dump_addresses(&mut s, "pod addresses", l.index).unwrap());
    }
    let routes = dump_routes(&mut s, "pod routes").unwrap();
    PodView {
        links,
        addresses,
        routes,
    }
}

impl PodView {
    fn link(&self, name: &str) -> Option<&LinkFacts> {
        self.links.iter().find(|l| l.name == name)
    }

    fn has_address(&self, index: u32, net: &str) -> bool {
        let net: IpNetwork = net.parse().unwrap();
        self.addresses.iter().any(|a| {
            a.index == index
                && a.address == net.ip()
                && a.prefix_len == net.prefix()
                && !a.tentative
        })
    }
}

struct Pod {
    _dir: TempDir,
    ns: PinnedNetns,
}

fn pod() -> Pod {
    let dir = tempfile::tempdir().unwrap();
    let ns = PinnedNetns::create(&dir.path().join("pod")).unwrap();
    Pod { _dir: dir, ns }
}

/// The stand-in as the host sees it now, if it is in the host.
fn in_host(name: &str) -> Option<LinkFacts> {
    facts(&mut RouteSocket::new().unwrap(), name)
}

fn host_addresses(index: u32) -> Vec<AddressFacts> {
    dump_addresses(&mut RouteSocket::new().unwrap(), "host addresses", index).unwrap()
}

#[test]
fn two_devices_with_v4_v6_and_a_route_then_back() {
    if !have_root("two_devices_with_v4_v6_and_a_route_then_back") {
        return;
    }
    let mut host = RouteSocket::new().unwrap();
    let vfs = [StandIn::new(&mut host), StandIn::new(&mut host)];
    let before: Vec<LinkFacts> = vfs.iter().map(|v| in_host(&v.name).unwrap()).collect();
    let tree = stand_in_tree(&[(pci(0), Some(&vfs[0].name)), (pci(1), Some(&vfs[1].name))]);
    let pod = pod();
    let mut first = device(
        0,
        &["192.0.2.10/24", "2001:db8:1::10/64"],
        vec![
            RouteSpec {
                destination: "198.51.100.0/24".parse().unwrap(),
                gateway: Some("192.0.2.1".parse().unwrap()),
            },
            RouteSpec {
                destination: "2001:db8:99::/48".parse().unwrap(),
                gateway: Some("2001:db8:1::1".parse().unwrap()),
            },
        ],
    );
    first.mtu = Some(1400);
    first.mac = Some("02:00:00:00:aa:01".parse().unwrap());
    let second = device(1, &["203.0.113.5/28", "2001:db8:2::5/64"], vec![]);
    let attacher = Attacher::new(tree.path());

    let attached = attacher
        .attach_pod(&[first.clone(), second.clone()], pod.ns.path())
        .unwrap();

    let view = look_inside(pod.ns.path());
    let net1 = view.link("net1").expect("net1 in the pod");
    let net2 = view.link("net2").expect("net2 in the pod");
    assert!(net1.up && net2.up);
    assert_eq!(
        (net1.mtu, net1.mac.as_slice()),
        (1400, &[2, 0, 0, 0, 0xaa, 1][..])
    );
    assert!(view.has_address(net1.index, "192.0.2.10/24"));
    assert!(
        view.has_address(net1.index, "2001:db8:1::10/64"),
        "v6 usable at once (NODAD)"
    );
    assert!(view.has_address(net2.index, "203.0.113.5/28"));
    assert!(view.has_address(net2.index, "2001:db8:2::5/64"));
    let via = |dest: &str, gw: &str| {
        let dest: IpAddr = dest.parse().unwrap();
        let gw: IpAddr = gw.parse().unwrap();
        view.routes
            .iter()
            .any(|r| r.destination == dest && r.gateway == Some(gw) && r.oif == Some(net1.index))
    };
    assert!(via("198.51.100.0", "192.0.2.1"));
    assert!(via("2001:db8:99::", "2001:db8:1::1"));
    for v in &vfs {
        assert!(in_host(&v.name).is_none(), "{} left the host", v.name);
    }
    assert_eq!(attached[0].if_name, "net1");
    assert_eq!(attached[0].host.name, vfs[0].name);

    for a in &attached {
        attacher.detach(a).unwrap();
    }
    let view = look_inside(pod.ns.path());
    assert!(view.link("net1").is_none() && view.link("net2").is_none());
    for (v, was) in vfs.iter().zip(&before) {
        let now = in_host(&v.name).expect("back in the host under its own name");
        assert_eq!((now.mtu, &now.mac, now.up), (was.mtu, &was.mac, was.up));
        assert!(host_addresses(now.index).is_empty(), "addresses flushed");
    }
    // Idempotent: a second detach finds everything in place.
    for a in &attached {
        attacher.detach(a).unwrap();
    }
}

#[test]
fn pod_netns_deleted_before_detach() {
    if !have_root("pod_netns_deleted_before_detach") {
        return;
    }
    let mut host = RouteSocket::new().unwrap();
    let vf = StandIn::new(&mut host);
    let tree = stand_in_tree(&[(pci(0), Some(&vf.name))]);
    let pod = pod();
    let attacher = Attacher::new(tree.path());
    let mut d = device(0, &["192.0.2.20/24"], vec![]);
    d.if_name = Some(format!("r{}", &vf.name[2..]));
    let a = attacher.attach(&d, 0, pod.ns.path()).unwrap();

    // A physical VF is handed back to the host when its namespace dies,
    // keeping its pod name (a virtual link would be destroyed instead). Play
    // the kernel: move the stand-in home under its pod name, as sysfs would
    // then list it, and delete the namespace.
    let host_ns = super::netns::current_netns().unwrap();
    let mut in_pod: RouteSocket = run_in_netns(pod.ns.path(), RouteSocket::new)
        .unwrap()
        .unwrap();
    in_pod
        .request(
            "kernel refund",
            link::set_netns_message(a.pod_index, std::os::fd::AsRawFd::as_raw_fd(&host_ns), None),
            0,
        )
        .unwrap();
    rename_in_tree(&tree, pci(0), &a.if_name);
    drop(in_pod);
    drop(pod);

    attacher.detach(&a).unwrap();
    let back = in_host(&vf.name).expect("restored under its host name");
    assert!(host_addresses(back.index).is_empty());
    rename_in_tree(&tree, pci(0), &vf.name);
    attacher.detach(&a).unwrap();
}

#[test]
fn a_vf_destroyed_with_its_netns_is_reported_missing() {
    if !have_root("a_vf_destroyed_with_its_netns_is_reported_missing") {
        return;
    }
    let mut host = RouteSocket::new().unwrap();
    let vf = StandIn::new(&mut host);
    let tree = stand_in_tree(&[(pci(0), Some(&vf.name))]);
    let pod = pod();
    let attacher = Attacher::new(tree.path());
    let a = attacher
        .attach(&device(0, &[], vec![]), 0, pod.ns.path())
        .unwrap();
    drop(pod); // the macvlan dies with the namespace
    let err = attacher.detach(&a).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert!(
        err.to_string().ends_with(
            "finding the VF in the host: 0000:3b:02.0 has no network interface in the host"
        ),
        "{err}"
    );
}

#[test]
fn interface_name_taken_in_the_pod_is_a_clean_error_and_rolled_back() {
    if !have_root("interface_name_taken_in_the_pod") {
        return;
    }
    let mut host = RouteSocket::new().unwrap();
    let vf = StandIn::new(&mut host);
    let before = in_host(&vf.name).unwrap();
    let tree = stand_in_tree(&[(pci(0), Some(&vf.name))]);
    let pod = pod();
    let mut s: RouteSocket = run_in_netns(pod.ns.path(), RouteSocket::new)
        .unwrap()
        .unwrap();
    s.request(
        "squatter",
        link::new_veth_message("net1", "squat1"),
        link::CREATE_EXCLUSIVE,
    )
    .unwrap();
    let mut d = device(0, &["192.0.2.30/24"], vec![]);
    d.mtu = Some(1300);

    let err = Attacher::new(tree.path())
        .attach(&d, 0, pod.ns.path())
        .unwrap_err();

    assert_eq!(err.step, "moving into the pod netns as net1");
    assert!(
        matches!(&err.cause, AttachCause::Netlink(e) if e.errno() == Some(libc::EEXIST)),
        "{err}"
    );
    assert!(err.rollback.is_empty(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("device pci-0000-3b-02-0 (0000:3b:02.0) of claim telco/claim-0"),
        "{text}"
    );
    assert!(text.ends_with("(rolled back)"), "{text}");
    let now = in_host(&vf.name).expect("still, or again, in the host");
    assert_eq!((now.mtu, &now.mac), (before.mtu, &before.mac));
    let view = look_inside(pod.ns.path());
    assert_eq!(view.links.len(), 3, "lo and the squatter pair only");
}

#[test]
fn unreachable_gateway_rolls_back_a_configured_device() {
    if !have_root("unreachable_gateway_rolls_back_a_configured_device") {
        return;
    }
    let mut host = RouteSocket::new().unwrap();
    let vf = StandIn::new(&mut host);
    let before = in_host(&vf.name).unwrap();
    let tree = stand_in_tree(&[(pci(0), Some(&vf.name))]);
    let pod = pod();
    let mut d = device(
        0,
        &["192.0.2.40/24"],
        vec![RouteSpec {
            destination: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("10.9.9.9".parse().unwrap()),
        }],
    );
    d.mtu = Some(1280);
    d.mac = Some("02:00:00:00:bb:01".parse().unwrap());

    let err = Attacher::new(tree.path())
        .attach(&d, 0, pod.ns.path())
        .unwrap_err();

    assert_eq!(err.step, "adding route 0.0.0.0/0 via 10.9.9.9");
    assert!(err.rollback.is_empty(), "{err}");
    let now = in_host(&vf.name).expect("back in the host");
    assert_eq!(
        (now.mtu, &now.mac, now.up),
        (before.mtu, &before.mac, before.up)
    );
    assert!(host_addresses(now.index).is_empty());
    assert!(look_inside(pod.ns.path()).link("net1").is_none());
}

#[test]
fn missing_devices_are_errors_that_name_them() {
    if !have_root("missing_devices_are_errors_that_name_them") {
        return;
    }
    let tree = stand_in_tree(&[(pci(0), None), (pci(1), Some("nosuchlink9"))]);
    let pod = pod();
    let attacher = Attacher::new(tree.path());
    for (n, expect) in [
        (0, "0000:3b:02.0 has no network interface in the host"),
        (1, "0000:3b:02.1 has no network interface in the host"),
        (2, "PCI device 0000:3b:02.2 is not in "),
    ] {
        let err = attacher
            .attach(&device(n, &[], vec![]), 0, pod.ns.path())
            .unwrap_err();
        assert_eq!(err.step, "finding the VF in the host");
        assert!(err.to_string().contains(expect), "{err}");
    }
    let err = attacher
        .attach(&device(0, &[], vec![]), 0, Path::new("/nonexistent/netns"))
        .unwrap_err();
    assert!(
        matches!(err.cause, AttachCause::Netns(ref e) if e.is_gone()),
        "{err}"
    );
}

#[test]
fn fifty_pods_attached_concurrently_then_all_detached() {
    if !have_root("fifty_pods_attached_concurrently_then_all_detached") {
        return;
    }
    const PODS: u8 = 50;
    let mut host = RouteSocket::new().unwrap();
    let vfs: Vec<StandIn> = (0..PODS).map(|_| StandIn::new(&mut host)).collect();
    let entries: Vec<(PciAddress, Option<&str>)> = vfs
        .iter()
        .enumerate()
        .map(|(i, v)| (pci(i as u8), Some(v.name.as_str())))
        .collect();
    let tree = stand_in_tree(&entries);
    let pods: Vec<Pod> = (0..PODS).map(|_| pod()).collect();
    let attacher = Attacher::new(tree.path());

    let attached: Vec<Attachment> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let attacher = &attacher;
                s.spawn(move || {
                    let d = device(
                        i as u8,
                        &[
                            &format!("10.77.{i}.2/24"),
                            &format!("2001:db8:77:{i:x}::2/64"),
                        ],
                        vec![],
                    );
                    attacher.attach(&d, 0, p.ns.path())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });

    for (i, (p, a)) in pods.iter().zip(&attached).enumerate() {
        let view = look_inside(p.ns.path());
        let net1 = view.link("net1").expect("each pod has its net1");
        assert_eq!(a.host.name, vfs[i].name);
        assert!(net1.up);
        assert!(view.has_address(net1.index, &format!("10.77.{i}.2/24")));
        assert!(view.has_address(net1.index, &format!("2001:db8:77:{i:x}::2/64")));
        assert_eq!(view.links.len(), 2, "lo and net1 only");
    }

    std::thread::scope(|s| {
        for a in &attached {
            let attacher = &attacher;
            s.spawn(move || attacher.detach(a).unwrap());
        }
    });
    for (p, v) in pods.iter().zip(&vfs) {
        assert!(look_inside(p.ns.path()).link("net1").is_none());
        let back = in_host(&v.name).expect("back home");
        assert!(host_addresses(back.index).is_empty());
    }
}

#[test]
fn a_failing_second_device_takes_the_first_back_out() {
    if !have_root("a_failing_second_device_takes_the_first_back_out") {
        return;
    }
    let mut host = RouteSocket::new().unwrap();
    let vf = StandIn::new(&mut host);
    // The second device's PCI function has no netdev (bound to vfio-pci).
    let tree = stand_in_tree(&[(pci(0), Some(&vf.name)), (pci(1), None)]);
    let pod = pod();
    let devices = [
        device(0, &["192.0.2.50/24"], vec![]),
        device(1, &["192.0.2.51/24"], vec![]),
    ];

    let err = Attacher::new(tree.path())
        .attach_pod(&devices, pod.ns.path())
        .unwrap_err();

    assert_eq!(
        (err.device.as_str(), err.step.as_str()),
        ("pci-0000-3b-02-1", "finding the VF in the host")
    );
    assert!(err.rollback.is_empty(), "{err}");
    let back = in_host(&vf.name).expect("the first VF is home again");
    assert!(host_addresses(back.index).is_empty());
    assert_eq!(
        look_inside(pod.ns.path()).links.len(),
        1,
        "only lo is left in the pod"
    );
}

/// This kernel has no RDMA core (no `rdma_rxe` module either, so no real
/// RDMA move can be tried here): an RDMA-exclusive attach must then fail
/// before touching anything, and the detach of a record naming an RDMA
/// device must still bring the netdev home and report the RDMA part.
#[test]
fn exclusive_rdma_without_an_rdma_kernel_fails_cleanly_and_detach_keeps_going() {
    if !have_root("exclusive_rdma_without_an_rdma_kernel_fails_cleanly_and_detach_keeps_going") {
        return;
    }
    if rdma::netlink::RdmaSocket::new().is_ok() {
        eprintln!("\n!!!!! this kernel has RDMA netlink: the no-RDMA case was NOT checked !!!!!\n");
        return;
    }
    let mut host = RouteSocket::new().unwrap();
    let vf = StandIn::new(&mut host);
    let tree = stand_in_tree(&[(pci(0), Some(&vf.name))]);
    let pod = pod();
    let attacher = Attacher::new(tree.path());
    let mut d = device(0, &["192.0.2.30/24"], vec![]);
    d.rdma_device = Some("rxe0".into());
    d.rdma_exclusive = true;

    let err = attacher.attach(&d, 0, pod.ns.path()).unwrap_err();
    assert_eq!(err.step, "opening netlink sockets");
    assert!(
        matches!(&err.cause, AttachCause::Rdma(e) if e.errno() == Some(libc::EPROTONOSUPPORT)),
        "{err}"
    );
    assert!(in_host(&vf.name).is_some(), "the VF never left the host");
    assert!(look_inside(pod.ns.path()).link("net1").is_none());

    // A record that says an RDMA device went with the VF: the netdev comes
    // home, the RDMA part is reported, not skipped silently.
    d.rdma_exclusive = false;
    let mut a = attacher.attach(&d, 0, pod.ns.path()).unwrap();
    a.rdma_device = Some("rxe0".into());
    let errors = attacher.detach(&a).unwrap_err().errors;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].step, "opening the pod's RDMA netlink socket");
    assert!(in_host(&vf.name).is_some(), "the netdev came home anyway");

    // The pod's netns gone: the kernel has returned any RDMA device itself.
    let gone = Attachment {
        netns: pod.ns.path().with_file_name("gone"),
        ..a
    };
    attacher.detach(&gone).unwrap();
}
