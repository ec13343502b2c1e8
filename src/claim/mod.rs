//! The claim workflow: check an allocated claim against the node and its
//! configs, change the devices it names (PF-side VF settings, vfio-pci),
//! take its addresses, write its CDI spec, record it; and undo all of that
//! on unprepare or when recovery finds the claim gone.

pub mod cdi;
pub mod device_ops;
pub mod locks;
pub mod prepare;
pub mod recover;
pub mod single_leases;

#[cfg(test)]
mod cluster_pool_tests;
