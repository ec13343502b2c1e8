//! sriov-dra: a Kubernetes DRA node driver for SR-IOV virtual functions and
//! RDMA devices.
//!
//! The library crates (`sriov`, `rdma`, `ipam`, `proto`) know nothing of
//! Kubernetes; this crate glues them to the API, the kubelet and the
//! container runtime. `main.rs` only parses the command line.

pub mod apis;
pub mod attach;
pub mod backoff;
pub mod block_yaml;
pub mod blocking;
pub mod build_info;
pub mod claim;
pub mod cli;
pub mod config;
pub mod debug_api;
#[cfg(feature = "demo")]
pub mod demo;
pub mod driver;
pub mod events;
pub mod failpoints;
pub mod health;
pub mod inventory;
pub mod kube;
pub mod kubelet;
pub mod metrics;
pub mod nri;
pub mod pf_policies;
pub mod pod;
pub mod readiness;
pub mod state;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
