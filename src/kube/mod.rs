//! Everything that speaks the Kubernetes API's types.

pub mod claim_status;
pub mod claims;
pub mod fake_api;
pub mod publish;
pub mod slices;
