//! How the allocator, which never talks to the API, tells the driver's
//! block leaser that a cluster-wide pool ran dry on this node, and learns
//! whether the whole pool is full.

use crate::address::Family;

/// What the leaser last learned of a pool that has no block left to lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterFull {
    /// Blocks leased cluster-wide (every block of the family).
    pub blocks: u128,
    /// Distinct nodes holding them.
    pub nodes: usize,
}

/// Receiver of "no free address in this node's blocks" from the allocator.
pub trait BlockDemand: Send + Sync {
    /// Called from inside the failing allocation (so it must not block):
    /// asks for a new block of `pool`/`family` and returns whether the
    /// pool is known to be full cluster-wide.
    fn exhausted(&self, pool: &str, family: Family) -> Option<ClusterFull>;
}
