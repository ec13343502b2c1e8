//! Pod attach and detach: ours against the reference CNI `host-device`
//! plugin with `host-local` IPAM doing the same work (move a link into a
//! pod netns, rename it, add one IPv4 address, bring it up; and back).
//!
//! Needs root. A macvlan on a host-resident veth end plays the VF for both.
//! Run with `cargo bench --features test-support --bench attach`; target: ours ≥ 10× faster.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sriov::PciAddress;
use sriov::netlink::link;
use sriov::netlink::{RouteSocket, RouteTransport};
use sriov_dra::attach::Attacher;
use sriov_dra::attach::find;
use sriov_dra::attach::netns::{self, PinnedNetns};
use sriov_dra::attach::plan::PodDevice;
use sriov_dra::testing::netns::{StandIn, have_root, stand_in_tree};

const OURS_RUNS: usize = 300;
const CNI_RUNS: usize = 40;
const CNI_DIR: &str = "/usr/lib/cni";

fn main() {
    if !have_root("attach benchmark (network namespaces)") {
        return;
    }
    let vf = StandIn::new(&mut RouteSocket::new().expect("rtnetlink socket"));
    let pci = PciAddress::new(0, 0x3b, 2, 0).expect("valid address");
    let tree = stand_in_tree(&[(pci, Some(&vf.name))]);
    let ns_dir = tempfile::tempdir().expect("temp dir");
    let pod = PinnedNetns::create(&ns_dir.path().join("pod")).expect("pod netns");

    let (pod_socket, host_find) = userspace_parts(tree.path(), pci, pod.path());
    let (floor_in, floor_out) = kernel_floor(&vf.name, pod.path());
    let (attach, detach) = ours(tree.path(), pci, pod.path());
    println!("attach = move + rename + one IPv4 address + up; detach = move back + restore name\n");
    report("ours: pod socket (thread + setns)", &pod_socket);
    report("ours: host socket + sysfs find", &host_find);
    report("kernel floor: same requests, in", &floor_in);
    report("kernel floor: same requests, out", &floor_out);
    report("sriov-dra attach", &attach);
    report("sriov-dra detach", &detach);

    let plugin = Path::new(CNI_DIR).join("host-device");
    if !plugin.exists() || !Path::new(CNI_DIR).join("host-local").exists() {
        println!(
            "\nreference CNI plugins not found in {CNI_DIR} (Debian package \
             containernetworking-plugins); only our figures above"
        );
        return;
    }
    let (cni_attach, cni_detach) = reference(&vf.name, pod.path());
    report("CNI host-device+host-local ADD", &cni_attach);
    report("CNI host-device+host-local DEL", &cni_detach);
    println!();
    ratio("attach", &attach, &cni_attach);
    ratio("detach", &detach, &cni_detach);
    println!(
        "\nThe kernel floor (mostly the namespace move: one RTM_NEWLINK with IFLA_NET_NS_FD, \
         which closes the link and waits for RCU) is paid by every implementation. Beyond it:"
    );
    let parts = median(&pod_socket).as_secs_f64() + median(&host_find).as_secs_f64();
    overhead("attach", &attach, &cni_attach, &floor_in, parts);
    overhead("detach", &detach, &cni_detach, &floor_out, parts);
}

/// Our fixed costs around the kernel requests: opening the pod's socket on
/// a throw-away thread that enters the namespace, and finding the VF by PCI
/// address (host socket, sysfs, one `RTM_GETLINK`).
fn userspace_parts(sysfs: &Path, pci: PciAddress, netns: &Path) -> (Vec<Duration>, Vec<Duration>) {
    let (mut pod_socket, mut host_find) = (Vec::new(), Vec::new());
    for _ in 0..OURS_RUNS {
        let t = Instant::now();
        let socket: RouteSocket = netns::run_in_netns(netns, RouteSocket::new)
            .expect("enter pod netns")
            .expect("pod socket");
        pod_socket.push(t.elapsed());
        drop(socket);
        let t = Instant::now();
        let mut host = RouteSocket::new().expect("host socket");
        find::find_in_host(&mut host, sysfs, pci)
            .expect("find")
            .expect("VF in the host");
        host_find.push(t.elapsed());
    }
    (pod_socket, host_find)
}

/// The same kernel requests as our attach and detach (move + rename, one
/// address, up; move back + rename), sent on sockets opened once, with no
/// lookups: what any implementation pays on this kernel.
fn kernel_floor(name: &str, netns: &Path) -> (Vec<Duration>, Vec<Duration>) {
    use sriov::netlink::address;
    use std::os::fd::AsRawFd;
    let pod_ns = netns::open_netns(netns).expect("open pod netns");
    let host_ns = netns::current_netns().expect("open host netns");
    let mut host = RouteSocket::new().expect("host socket");
    let mut pod: RouteSocket = netns::run_in_netns(netns, RouteSocket::new)
        .expect("enter pod netns")
        .expect("pod socket");
    let (mut moves_in, mut moves_out) = (Vec::new(), Vec::new());
    for _ in 0..OURS_RUNS / 3 {
        let index = link::get_link(&mut host, "find", link::get_link_by_name_message(name))
            .expect("read link")
            .expect("link in host")
            .index;
        let t = Instant::now();
        host.request(
            "move in",
            link::set_netns_message(index, pod_ns.as_raw_fd(), Some("net1")),
            0,
        )
        .expect("move in");
        // The index stays when it is free in the pod, as it is here.
        pod.request(
            "address",
            address::new_address_message(index, "10.96.0.2".parse().expect("IP"), 24),
            address::ADD_EXCLUSIVE,
        )
        .expect("address");
        pod.request("up", link::set_up_message(index, true), 0)
            .expect("up");
        moves_in.push(t.elapsed());
        let t = Instant::now();
        pod.request(
            "move out",
            link::set_netns_message(index, host_ns.as_raw_fd(), Some(name)),
            0,
        )
        .expect("move out");
        moves_out.push(t.elapsed());
    }
    (moves_in, moves_out)
}

fn overhead(what: &str, ours: &[Duration], reference: &[Duration], floor: &[Duration], parts: f64) {
    let floor = median(floor).as_secs_f64();
    let ours_beyond = median(ours).as_secs_f64() - floor;
    let reference_beyond = median(reference).as_secs_f64() - floor;
    println!(
        "{what}: host-device+host-local {:.3} ms; sriov-dra {:.3} ms by medians (within the \
         kernel's 4 ms jiffy noise), {:.3} ms measured (thread + sockets + find): {:.0}x less",
        reference_beyond * 1000.0,
        ours_beyond * 1000.0,
        parts * 1000.0,
        reference_beyond / parts
    );
}

fn ours(sysfs: &Path, pci: PciAddress, netns: &Path) -> (Vec<Duration>, Vec<Duration>) {
    let attacher = Attacher::new(sysfs);
    let device = PodDevice {
        claim: "bench/claim".into(),
        device: pci.device_name(),
        pci_address: pci,
        if_name: Some("net1".into()),
        mtu: None,
        mac: None,
        addresses: vec!["10.98.0.2/24".parse().expect("valid CIDR")],
        routes: vec![],
        rdma_device: None,
        rdma_exclusive: false,
    };
    let (mut attach, mut detach) = (Vec::new(), Vec::new());
    for _ in 0..OURS_RUNS {
        let t = Instant::now();
        let a = attacher.attach(&device, 0, netns).expect("attach");
        attach.push(t.elapsed());
        let t = Instant::now();
        attacher.detach(&a).expect("detach");
        detach.push(t.elapsed());
    }
    (attach, detach)
}

fn reference(device: &str, netns: &Path) -> (Vec<Duration>, Vec<Duration>) {
    let data = tempfile::tempdir().expect("temp dir");
    let config = format!(
        r#"{{"cniVersion":"1.0.0","name":"bench","type":"host-device","device":"{device}",
"ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.97.0.0/24"}}]],"dataDir":"{}"}}}}"#,
        data.path().display()
    );
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for i in 0..CNI_RUNS {
        let id = format!("bench-{i}");
        let t = Instant::now();
        cni("ADD", &id, netns, &config);
        add.push(t.elapsed());
        let t = Instant::now();
        cni("DEL", &id, netns, &config);
        del.push(t.elapsed());
    }
    (add, del)
}

/// One CNI call as a runtime makes it (CNI spec: parameters in the
/// environment, the network config on stdin).
fn cni(command: &str, container: &str, netns: &Path, config: &str) {
    let mut child = Command::new(Path::new(CNI_DIR).join("host-device"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", CNI_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn host-device");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(config.as_bytes())
        .expect("write config");
    let out = child.wait_with_output().expect("host-device ran");
    assert!(
        out.status.success(),
        "CNI {command} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn report(name: &str, v: &[Duration]) {
    let mut s = v.to_vec();
    s.sort();
    println!(
        "{name:<34} median {:>7.3} ms   p90 {:>7.3} ms   best {:>7.3} ms   ({} runs)",
        ms(s[s.len() / 2]),
        ms(s[s.len() * 9 / 10]),
        ms(s[0]),
        s.len()
    );
}

fn ratio(what: &str, ours: &[Duration], reference: &[Duration]) {
    let r = median(reference).as_secs_f64() / median(ours).as_secs_f64();
    let verdict = if r >= 10.0 { "meets" } else { "MISSES" };
    println!(
        "{what}: sriov-dra is {r:.1}x faster than host-device+host-local ({verdict} the 10x target)"
    );
}
