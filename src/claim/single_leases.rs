//! Prepare's side of single-address leases: a static address of a
//! cluster-wide pool that no block of this node contains is leased as an
//! `IPBlock` of its own before it is recorded, and the lease is deleted
//! after the store commit that releases it. The protocol itself (create,
//! then check the block) is [`crate::kube::static_leases`].
//!
//! Prepare and Unprepare run on tokio's blocking pool; these calls block
//! that thread on the runtime that spawned it. They are the only API calls
//! in the Prepare path, and only claims with such addresses make them.

use std::net::IpAddr;

use ipam::Pool;
use tokio::runtime::Handle;

use crate::kube::node::node_owner;
use crate::kube::static_leases::{MarkGuard, StaticLeaseError, StaticLeases};

/// This node's single-address leases, for the claim path.
#[derive(Clone)]
pub struct SingleLeases {
    leases: StaticLeases,
    client: kube::Client,
    node: String,
    runtime: Handle,
}

/// A single-address lease Prepare holds for one address: marked (so the
/// leaser's reconcile leaves it alone) until this is dropped, after the
/// commit that records it or the rollback that deletes it.
#[derive(Debug)]
pub struct HeldSingle {
    /// Cluster pool of the address.
    pub pool: String,
    /// The address.
    pub address: IpAddr,
    /// The `IPBlock` object's name.
    pub lease: String,
    /// Whether this Prepare created the object (a failed Prepare deletes
    /// only those).
    pub created: bool,
    _mark: MarkGuard,
}

impl SingleLeases {
    /// Leases of `node` through `leases` (the leaser's, sharing its marks)
    /// and `client`, blocking on `runtime`.
    pub fn new(leases: StaticLeases, client: kube::Client, node: &str, runtime: Handle) -> Self {
        SingleLeases {
            leases,
            client,
            node: node.to_string(),
            runtime,
        }
    }

    /// Marks and leases `address` of cluster pool `pool` for this node.
    /// Blocks the calling thread, which must not be a runtime worker.
    pub fn acquire(&self, pool: &Pool, address: IpAddr) -> Result<HeldSingle, StaticLeaseError> {
        let mark = self.leases.preparing(pool.name(), address)?;
        let acquired = self.runtime.block_on(async {
            // The Node's current UID: a lease owned by a deleted Node's UID
            // would be collected under the pod.
            let owner = node_owner(&self.client, &self.node).await.ok_or_else(|| {
                StaticLeaseError::NoOwner {
                    node: self.node.clone(),
                }
            })?;
            self.leases.acquire(pool, address, &owner).await
        })?;
        Ok(HeldSingle {
            pool: pool.name().to_string(),
            address,
            lease: acquired.lease,
            created: acquired.created,
            _mark: mark,
        })
    }

    /// Deletes this node's lease of `address` in `pool`, if it holds one.
    /// Call after the store commit that released the address.
    pub fn release(&self, pool: &str, address: IpAddr) -> Result<bool, StaticLeaseError> {
        Ok(self.runtime.block_on(self.leases.release(pool, address))?)
    }
}
