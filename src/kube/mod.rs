//! Everything that speaks the Kubernetes API's types.

pub mod claim_status;
pub mod claims;
pub mod client;
pub mod leaser;
pub mod leases;
pub mod node;
pub mod publish;
pub mod republish;
pub mod slice_watch;
pub mod slices;
pub mod static_leases;
pub mod taints;
