//! PCI and SR-IOV facts of a node, read from sysfs, and the PF-side actions
//! on its virtual functions.
//!
//! Nothing here knows about Kubernetes: the node driver glues this crate to
//! the API. Every reader takes a sysfs root so tests run on fixture trees.

pub mod bind;
pub mod class_index;
pub mod fan_out;
pub mod fixture;
mod ids;
pub mod ifname;
pub mod inventory;
pub mod memo;
pub mod netlink;
pub mod pci;
pub mod policy;
pub mod sysfs;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod vf_config;

pub use inventory::{Inventory, InventoryError, PciFunction, Role, scan};
pub use pci::{ParsePciAddressError, PciAddress};
