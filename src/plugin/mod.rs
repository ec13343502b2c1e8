//! The kubelet side of the driver: plugin registration and (later) the DRA
//! node service, both gRPC over unix sockets in the kubelet's directories.

pub mod registration;
pub mod socket;
