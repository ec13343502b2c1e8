//! The bare-metal lab harness: what works on this node's NICs.
//!
//! On a lab node it sets every PF-side VF setting on a real VF, reads it back
//! over netlink and with iproute2, restores it, binds the VF to vfio-pci and
//! back, and (when allowed) resizes the PF's VFs and back, then prints a
//! Markdown report. In CI the same cases run against a simulated NIC
//! ([`sim::SimulatedPf`]) and a fixture sysfs, which checks the harness and
//! the encode/decode round trip, not the hardware.

pub mod cases;
pub mod iproute;
pub mod sim;
pub mod sim_sysfs;
