//! Everything that speaks the Kubernetes API's types.

pub mod claims;
pub mod fake_api;
pub mod publish;
pub mod slices;
