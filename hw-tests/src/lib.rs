//! The bare-metal lab harness: what works on this node's NICs.
//!
//! A lab profile ([`profile`], TOML) names the node's NIC models, their
//! PFs and VF counts, the cases to run and the addresses to use; the
//! [`runner`] runs every case per model and the [`report`] prints it as
//! Markdown and JSON. Each case checks its prerequisites first and reports
//! `needs hardware` or `skipped: <reason>` instead of a pass when it cannot
//! run. In CI the same cases run against a simulated NIC
//! ([`sim::SimulatedPf`]) and a fixture sysfs, reported as `simulated`:
//! that checks the harness and the encode/decode round trip, not hardware.

pub mod cases;
pub mod discovery;
pub mod iproute;
pub mod pair;
pub mod profile;
pub mod report;
pub mod runner;
pub mod sim;
pub mod sim_sysfs;
pub mod tools;
