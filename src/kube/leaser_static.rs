//! The leaser's part of single-address leases (protocol in
//! [`crate::kube::static_leases`]): a block it records keeps other nodes'
//! single addresses inside it out of its free map, and the reconcile
//! brings this node's single-address leases and the store in line.

use ipam::{Holder, IpNetwork, IpamError, StaticLease};
use tracing::{error, info};

use super::{Leaser, Reconciled};
use crate::kube::leases::Lease;
use crate::kube::static_leases::StaticLeaseError;

impl Leaser {
    /// Other nodes' single-address leases inside `cidr` of `pool`, listed
    /// by the block's lease name (after that lease exists).
    async fn foreign_in(
        &mut self,
        pool: &str,
        cidr: IpNetwork,
        lease: &str,
    ) -> anyhow::Result<Vec<StaticLease>> {
        let inside = self.statics.in_block(lease).await?;
        self.stats.lists += 1;
        Ok(inside
            .into_iter()
            .filter(|l| l.node != self.config.node && l.pool == pool && cidr.contains(l.cidr.ip()))
            .map(|l| StaticLease {
                pool: l.pool,
                address: l.cidr.ip(),
                lease: l.name,
                holder: Holder::Node(l.node),
            })
            .collect())
    }

    /// Records a block whose lease this node holds, with other nodes'
    /// single addresses in it reserved, in one commit. The outer error is
    /// the API's, the inner the store's.
    pub(super) async fn record_block(
        &mut self,
        pool: &str,
        cidr: IpNetwork,
        lease: &str,
    ) -> anyhow::Result<Result<bool, IpamError>> {
        let foreign = self.foreign_in(pool, cidr, lease).await?;
        Ok(self.ipam.add_block_reserving(pool, cidr, lease, &foreign))
    }

    /// Reserves other nodes' single addresses inside a held block whose
    /// lease was re-created; one this node has handed out meanwhile is
    /// reported (both nodes may now use it).
    pub(super) async fn reserve_statics_in(
        &mut self,
        pool: &str,
        cidr: IpNetwork,
        lease: &str,
    ) -> anyhow::Result<()> {
        for f in self.foreign_in(pool, cidr, lease).await? {
            let Holder::Node(other) = &f.holder else {
                continue;
            };
            if let Err(e) = self.ipam.reserve_foreign(pool, f.address, &f.lease, other) {
                error!(node = %self.config.node, pool = %pool, block = %cidr, address = %f.address,
                    holder = %other, error = %e,
                    "another node leased a single address of a block this node re-claimed");
            }
        }
        Ok(())
    }

    /// Other nodes' single addresses the store keeps out of this node's
    /// blocks, against the API: one whose object is gone was released by
    /// its node (store first, then the object), so it is free here again.
    /// Lists only blocks that hold such records: no call at all on a node
    /// without them.
    pub(super) async fn forget_gone_foreign(&mut self, out: &mut Reconciled) -> anyhow::Result<()> {
        let foreign: Vec<StaticLease> = self
            .ipam
            .static_leases()?
            .into_iter()
            .filter(|r| matches!(r.holder, Holder::Node(_)))
            .collect();
        if foreign.is_empty() {
            return Ok(());
        }
        let blocks = self.ipam.blocks()?;
        for b in &blocks {
            let inside: Vec<&StaticLease> = foreign
                .iter()
                .filter(|r| r.pool == b.block.pool && b.block.cidr.contains(r.address))
                .collect();
            if inside.is_empty() {
                continue;
            }
            let listed = self.statics.in_block(&b.block.lease).await?;
            self.stats.lists += 1;
            for r in inside {
                if listed.iter().any(|l| l.name == r.lease) {
                    continue;
                }
                if self.ipam.forget_foreign(&r.pool, r.address)? {
                    info!(node = %self.config.node, pool = %r.pool, address = %r.address, lease = %r.lease,
                        "another node's single-address lease is gone; the address is free here again");
                    out.statics_forgotten.push(r.lease.clone());
                }
            }
        }
        Ok(())
    }

    /// This node's single-address leases (`api`) against the store's
    /// records: a lease no record holds is deleted (unless a Prepare is
    /// using it), a record whose lease is gone is leased again.
    pub(super) async fn reconcile_statics(
        &mut self,
        api: &[Lease],
        out: &mut Reconciled,
    ) -> anyhow::Result<()> {
        let node = self.config.node.clone();
        let own = |l: &StaticLease, name: &str| l.lease == name && l.holder == Holder::ThisNode;
        for lease in api {
            let Some(_mark) = self.statics.returning(&lease.name) else {
                continue;
            };
            // Read after the mark: a Prepare that committed before it is
            // seen here, and none can start on this lease until it lifts.
            if self
                .ipam
                .static_leases()?
                .iter()
                .any(|r| own(r, &lease.name))
            {
                continue;
            }
            self.api.release(lease).await?;
            self.stats.returned += 1;
            info!(node = %node, pool = %lease.pool, address = %lease.cidr, lease = %lease.name,
                "returned a single-address lease no allocation holds");
            out.statics_returned.push(lease.name.clone());
        }
        let recorded: Vec<StaticLease> = self
            .ipam
            .static_leases()?
            .into_iter()
            .filter(|r| r.holder == Holder::ThisNode)
            .collect();
        for r in recorded {
            if api.iter().any(|l| l.name == r.lease) {
                continue;
            }
            let Some(pool) = self.ipam.pools().find(|p| p.name() == r.pool).cloned() else {
                continue;
            };
            let owner = self.owner().await?;
            match self.statics.acquire(&pool, r.address, &owner).await {
                Ok(_) => {
                    self.stats.created += 1;
                    info!(node = %node, pool = %r.pool, address = %r.address, lease = %r.lease,
                        "re-created a single-address lease that was gone");
                    out.statics_reclaimed.push(r.lease);
                }
                Err(
                    StaticLeaseError::Held { node: other, .. }
                    | StaticLeaseError::InBlock { node: other, .. },
                ) => {
                    error!(node = %node, pool = %r.pool, address = %r.address, holder = %other,
                        "another node holds a static address this node's store had; its owner keeps it");
                    out.statics_lost.push((r.lease, other));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
