//! The kubelet side of the driver: plugin registration and the DRA node
//! service, both gRPC over unix sockets in the kubelet's directories.

pub mod device_ops;
pub mod node_service;
pub mod prepare;
pub mod registration;
pub mod socket;
