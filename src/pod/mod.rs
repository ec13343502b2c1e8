//! The pod workflow: what the driver does when the runtime starts and
//! stops a pod sandbox (NRI events), and which prepared claims a pod has.

pub mod claims;
pub mod error;
pub mod handler;

#[cfg(test)]
mod e2e_tests;
