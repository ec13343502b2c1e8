//! Finding a VF's network interface by what cannot change: its PCI address.
//!
//! Names change (udev, the pod, the kernel handing a link back as `devN`)
//! and so do interface indexes, so a stored name is never trusted.
//!
//! - **In the host** the PCI device's sysfs directory lists its interface:
//!   `<sysfs>/bus/pci/devices/<addr>/net/<name>`. sysfs shows only the
//!   links of the namespace it was mounted in, the host's, which is exactly
//!   the question "is it in the host, and under which name"; the name is
//!   then resolved to an index with `RTM_GETLINK`, at the moment of use.
//! - **In the pod** there is no sysfs of ours, so the link is identified
//!   over rtnetlink by [`PodIdentity`]: the kernel's `IFLA_PARENT_DEV_NAME`
//!   (since Linux 5.16 every link with a bus device reports it, e.g.
//!   `0000:3b:02.1`), which must equal the PCI address; links without a
//!   parent device (older kernels, and the veth/macvlan stand-ins of the
//!   tests) are matched by the MAC recorded at attach. The index recorded at
//!   attach is only where we look first.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sriov::PciAddress;
use sriov::netlink::link::{self, LinkFacts};
use sriov::netlink::{NetlinkError, RouteTransport};

use super::plan::MacAddress;

/// Why the host side of a VF could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// No such PCI device: wrong address, or the VF was destroyed.
    #[error("PCI device {pci} is not in {path}")]
    NoPciDevice {
        /// The VF.
        pci: PciAddress,
        /// The directory looked for.
        path: PathBuf,
    },
    /// Its directory could not be read.
    #[error("reading {path}: {source}")]
    Sysfs {
        /// What was read.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Asking the kernel for the link failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// The interface names sysfs lists for `pci` in the host namespace; empty
/// when the device has no netdev there (in a pod, or bound to vfio-pci).
pub fn host_netdev_names(sysfs_root: &Path, pci: PciAddress) -> Result<Vec<String>, FindError> {
    let dev = sysfs_root.join("bus/pci/devices").join(pci.to_string());
    if !dev.exists() {
        return Err(FindError::NoPciDevice { pci, path: dev });
    }
    let net = dev.join("net");
    let entries = match fs::read_dir(&net) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(FindError::Sysfs { path: net, source }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| FindError::Sysfs {
            path: net.clone(),
            source,
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// The VF's link in the host namespace, if it is there.
pub fn find_in_host(
    host: &mut impl RouteTransport,
    sysfs_root: &Path,
    pci: PciAddress,
) -> Result<Option<LinkFacts>, FindError> {
    for name in host_netdev_names(sysfs_root, pci)? {
        let op = format!("reading link {name} of {pci} in the host");
        let Some(facts) = link::get_link(host, &op, link::get_link_by_name_message(&name))? else {
            continue;
        };
        // Between the sysfs read and the request the name may have passed
        // to another link; when the kernel names the link's bus device,
        // that settles it.
        if facts
            .parent_device
            .as_ref()
            .is_none_or(|parent| *parent == pci.to_string())
        {
            return Ok(Some(facts));
        }
    }
    Ok(None)
}

/// How to recognise a VF's link inside a pod namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// The VF.
    pub pci: PciAddress,
    /// Its MAC in the pod, for links without a parent device.
    pub mac: MacAddress,
    /// Where to look first.
    pub index_hint: u32,
}

impl PodIdentity {
    /// Whether `facts` describe this VF.
    pub fn matches(&self, facts: &LinkFacts) -> bool {
        match &facts.parent_device {
            Some(parent) => parent == &self.pci.to_string(),
            None => facts.mac == self.mac.0,
        }
    }
}

/// The VF's link in the namespace of `pod` (a socket opened inside it).
pub fn find_in_pod(
    pod: &mut impl RouteTransport,
    identity: &PodIdentity,
) -> Result<Option<LinkFacts>, NetlinkError> {
    let op = format!(
        "reading link {} in the pod (looking for {})",
        identity.index_hint, identity.pci
    );
    if let Some(facts) = link::get_link(
        pod,
        &op,
        link::get_link_by_index_message(identity.index_hint),
    )? && identity.matches(&facts)
    {
        return Ok(Some(facts));
    }
    let op = format!("listing the pod's links to find {}", identity.pci);
    Ok(link::dump_links(pod, &op)?
        .into_iter()
        .find(|facts| identity.matches(facts)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::netns::{link_reply, stand_in_tree};
    use sriov::testing::RecordingTransport;

    #[test]
    fn host_names_come_from_the_pci_devices_net_directory() {
        let pci: PciAddress = "0000:3b:02.1".parse().unwrap();
        let tree = stand_in_tree(&[(pci, Some("ens1f0v3"))]);
        assert_eq!(host_netdev_names(tree.path(), pci).unwrap(), ["ens1f0v3"]);
    }

    #[test]
    fn device_without_netdev_has_no_names_and_unknown_device_is_an_error() {
        let pci: PciAddress = "0000:3b:02.1".parse().unwrap();
        let tree = stand_in_tree(&[(pci, None)]);
        assert!(host_netdev_names(tree.path(), pci).unwrap().is_empty());
        let other: PciAddress = "0000:3b:02.2".parse().unwrap();
        let err = host_netdev_names(tree.path(), other).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("PCI device 0000:3b:02.2 is not in "),
            "{err}"
        );
    }

    #[test]
    fn host_lookup_resolves_the_sysfs_name_over_netlink() {
        let pci: PciAddress = "0000:3b:02.1".parse().unwrap();
        let tree = stand_in_tree(&[(pci, Some("ens1f0v3"))]);
        let mut host = RecordingTransport::new();
        host.answer(vec![link_reply(12, "ens1f0v3", [2, 0, 0, 0, 0, 3], None)]);
        let found = find_in_host(&mut host, tree.path(), pci).unwrap().unwrap();
        assert_eq!(found.index, 12);
        assert_eq!(
            host.requests[0].op,
            "reading link ens1f0v3 of 0000:3b:02.1 in the host"
        );

        // The name now belongs to another PCI function's link: not ours.
        let mut host = RecordingTransport::new();
        host.answer(vec![link_reply(
            12,
            "ens1f0v3",
            [2, 0, 0, 0, 0, 3],
            Some("0000:3b:02.2"),
        )]);
        assert_eq!(find_in_host(&mut host, tree.path(), pci).unwrap(), None);

        // Listed in sysfs but gone from the kernel: not in the host.
        let mut host = RecordingTransport::new();
        host.refuse(libc::ENODEV);
        assert_eq!(find_in_host(&mut host, tree.path(), pci).unwrap(), None);
    }

    #[test]
    fn pod_identity_prefers_the_parent_device_over_the_mac() {
        let identity = PodIdentity {
            pci: "0000:3b:02.1".parse().unwrap(),
            mac: MacAddress([2, 0, 0, 0, 0, 1]),
            index_hint: 7,
        };
        assert!(identity.matches(&link_facts(7, [2, 0, 0, 0, 0, 1], None)));
        assert!(identity.matches(&link_facts(7, [9, 9, 9, 9, 9, 9], Some("0000:3b:02.1"))));
        assert!(!identity.matches(&link_facts(7, [2, 0, 0, 0, 0, 1], Some("0000:3b:02.2"))));
    }

    #[test]
    fn pod_lookup_falls_back_to_a_dump_when_the_index_is_someone_else() {
        let identity = PodIdentity {
            pci: "0000:3b:02.1".parse().unwrap(),
            mac: MacAddress([2, 0, 0, 0, 0, 1]),
            index_hint: 7,
        };
        let mut pod = RecordingTransport::new();
        pod.answer(vec![link_reply(7, "eth0", [2, 9, 9, 9, 9, 9], None)]);
        pod.answer(vec![
            link_reply(1, "lo", [0; 6], None),
            link_reply(7, "eth0", [2, 9, 9, 9, 9, 9], None),
            link_reply(31, "net1", [2, 0, 0, 0, 0, 1], None),
        ]);
        let found = find_in_pod(&mut pod, &identity).unwrap().unwrap();
        assert_eq!((found.index, found.name.as_str()), (31, "net1"));
        assert_eq!(pod.requests.len(), 2);
    }

    fn link_facts(index: u32, mac: [u8; 6], parent: Option<&str>) -> LinkFacts {
        LinkFacts::from_reply(&link_reply(index, "x", mac, parent)).unwrap()
    }
}
