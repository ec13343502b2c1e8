//! The driver's own tables in the shared state file (`state.redb`), next to
//! the IPAM tables, so a claim's record and its addresses commit together.

pub mod attachments;
pub mod boot;
pub mod claims;
pub mod listing;

pub use claims::{ClaimRecord, Phase, PreparedDevice, StateError};
