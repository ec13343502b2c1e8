//! The kubelet transport: plugin registration and the DRA node service
//! (v1 and v1beta1), both gRPC over unix sockets in the kubelet's
//! directories. What a Prepare does lives in [`crate::claim`].

pub mod health_service;
pub mod node_service;
pub mod registration;
pub mod socket;

#[cfg(test)]
mod policy_tests;
