//! Everything that speaks the Kubernetes API's types.

pub mod slices;
