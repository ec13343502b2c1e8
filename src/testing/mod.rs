//! Test doubles and stand-ins shared by the unit tests, the end-to-end
//! tests and the benchmarks. Compiled only for tests or with the
//! `test-support` feature: the release binary carries none of them.

pub mod claim_object;
pub mod device_ops;
pub mod driver_home;
pub mod driver_process;
pub mod driver_view;
pub mod exposition;
pub mod fake_api;
pub mod fake_api_http;
pub mod fake_leases;
pub mod fake_watch;
pub mod netns;
pub mod node;
pub mod nri_runtime;
pub mod records;
pub mod rng;
pub mod runtime_handshake;
pub mod sim_nic;
pub mod vf_place;
