//! Embedded IPAM of sriov-dra: address pools from the node config, an
//! allocator keyed by owner (claim, request, device), and a crash-safe redb
//! store on the node, so no cluster-wide lock sits in the pod start path and
//! no address is ever given twice or lost after a crash.
//!
//! Start with [`Ipam::open`]; the CLI reads through [`IpamReader`].

#![warn(missing_docs)]

mod address;
mod allocation;
mod allocator;
mod block_space;
mod blocks;
mod config;
mod demand;
mod error;
mod free;
mod gc;
mod handle;
mod lease_plan;
mod owner;
mod pool;
mod pool_sync;
mod static_leases;
mod status;
mod store;
mod validate;
mod verify;

pub use address::Family;
pub use allocation::{Allocation, AssignedAddress};
pub use block_space::{BlockSpace, lease_name, spread_start};
pub use blocks::{BlockUsage, HeldBlock};
pub use config::{BlockSize, PoolConfig, PoolScope, RouteConfig, SubnetConfig};
pub use demand::{BlockDemand, ClusterFull};
pub use error::IpamError;
pub use handle::{Ipam, IpamReader, STATE_FILE, state_file};
pub use ipnetwork::IpNetwork;
pub use lease_plan::{BlockState, blocks_to_return, wants_block};
pub use owner::{Owner, OwnerError};
pub use pool::{Interval, Pool};
pub use pool_sync::PoolChanges;
pub use static_leases::{Holder, StaticLease};
pub use status::{FamilyUsage, PoolStatus};
pub use store::SCHEMA_VERSION;
pub use validate::{PoolConfigError, validate_pools};

#[cfg(test)]
mod test_support;
