//! Subcommands of the `sriov-dra` binary, one module each.

pub mod demo;
pub mod discover;
pub mod ipam;
