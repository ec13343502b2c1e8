//! RDMA devices of a node, read from sysfs, and the char devices a pod
//! needs to use them.
//!
//! An RDMA device belongs to a PCI function: `<pci>/infiniband/<name>`. Its
//! user-space entry points are char devices the kernel names in sibling
//! directories (`infiniband_verbs/uverbsN`, `infiniband_mad/umadN` and
//! `issmN`), each with an `ibdev` file naming the device it serves.
//!
//! [`netlink`] moves a device between network namespaces (RDMA-exclusive
//! pods) over the kernel's RDMA netlink interface.

pub mod inventory;
pub mod netlink;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use inventory::{
    LinkLayer, RdmaDetails, RdmaDevice, RdmaError, RdmaPort, details_of, for_pci_device, scan,
};
