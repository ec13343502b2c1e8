//! sriov-dra: a Kubernetes DRA node driver for SR-IOV virtual functions and
//! RDMA devices.
//!
//! The library crates (`sriov`, `rdma`, `ipam`, `proto`) know nothing of
//! Kubernetes; this crate glues them to the API, the kubelet and the
//! container runtime. `main.rs` only parses the command line.

pub mod apis;
pub mod attach;
pub mod blocking;
pub mod cdi;
pub mod cli;
pub mod config;
pub mod debug_api;
pub mod driver;
pub mod inventory;
pub mod kube;
pub mod nri;
pub mod plugin;
pub mod pod_network;
pub mod recover;
pub mod state;
