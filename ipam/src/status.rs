//! Read-only views of the store for the CLI, the debug API and tests.

use std::collections::BTreeSet;

use redb::{ReadTransaction, ReadableTable};
use serde::Serialize;

use crate::address::Family;
use crate::allocation::Allocation;
use crate::allocator::Pools;
use crate::config::PoolConfig;
use crate::error::{IpamError, StoreContext};
use crate::free;
use crate::owner::Owner;
use crate::store::{BY_IP, BY_OWNER, FREE, decode_allocation};

/// Usage of one family of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyUsage {
    /// Family.
    pub family: Family,
    /// Allocatable addresses (of a cluster pool: in the blocks this node
    /// holds).
    pub size: u128,
    /// Allocatable addresses nobody holds.
    pub free: u128,
}

/// One pool as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// Pool name.
    pub name: String,
    /// Current definition; `None` if the pool was removed from the config
    /// but allocations from it remain.
    pub config: Option<PoolConfig>,
    /// Per-family counts (empty for a removed pool).
    pub usage: Vec<FamilyUsage>,
    /// Allocations from this pool that are inside its current ranges.
    pub allocations: Vec<Allocation>,
    /// Allocations from this pool that its current definition no longer
    /// covers: still held, never handed out again.
    pub orphaned: Vec<Allocation>,
}

/// Whether an allocation holds an address its pool no longer covers.
pub fn is_orphaned(pools: &Pools, a: &Allocation) -> bool {
    match &a.pool {
        None => false,
        Some(name) => match pools.get(name) {
            None => true,
            Some(pool) => a.ips().into_iter().any(|ip| !pool.is_allocatable(ip)),
        },
    }
}

/// Every allocation, ordered by owner key.
pub(crate) fn list(txn: &ReadTransaction) -> Result<Vec<Allocation>, IpamError> {
    let table = txn.open_table(BY_OWNER).ctx("open ipam_by_owner")?;
    let mut out = Vec::new();
    for entry in table.iter().ctx("read ipam_by_owner")? {
        let (k, v) = entry.ctx("read ipam_by_owner")?;
        out.push(decode_allocation(k.value(), v.value())?);
    }
    Ok(out)
}

/// What `owner` holds.
pub(crate) fn get(txn: &ReadTransaction, owner: &Owner) -> Result<Option<Allocation>, IpamError> {
    let table = txn.open_table(BY_OWNER).ctx("open ipam_by_owner")?;
    let key = owner.key();
    match table.get(key.as_str()).ctx("read ipam_by_owner")? {
        Some(v) => Ok(Some(decode_allocation(&key, v.value())?)),
        None => Ok(None),
    }
}

/// Owner key holding `ip`, straight from the by-IP table.
pub(crate) fn holder(
    txn: &ReadTransaction,
    ip: std::net::IpAddr,
) -> Result<Option<String>, IpamError> {
    let table = txn.open_table(BY_IP).ctx("open ipam_by_ip")?;
    let (fam, v) = crate::address::to_key(ip);
    Ok(table
        .get((fam.tag(), v))
        .ctx("read ipam_by_ip")?
        .map(|g| g.value().to_string()))
}

/// Status of every pool that is defined or still referenced by an allocation.
pub(crate) fn pools_status(
    txn: &ReadTransaction,
    pools: &Pools,
) -> Result<Vec<PoolStatus>, IpamError> {
    let all = list(txn)?;
    let free_table = txn.open_table(FREE).ctx("open ipam_free")?;
    let held = match txn.open_table(crate::store::BLOCKS) {
        Ok(t) => Some(t),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e).ctx("open ipam_blocks"),
    };
    let statics = match txn.open_table(crate::store::STATIC_LEASES) {
        Ok(t) => Some(t),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e).ctx("open ipam_static_leases"),
    };
    let mut names: BTreeSet<String> = pools.keys().cloned().collect();
    names.extend(all.iter().filter_map(|a| a.pool.clone()));
    let mut out = Vec::new();
    for name in names {
        let pool = pools.get(&name);
        let mut usage = Vec::new();
        if let Some(pool) = pool {
            for family in pool.families() {
                let size = match (&held, pool.is_cluster()) {
                    (Some(held), true) => {
                        crate::blocks::allowed(held, statics.as_ref(), pool, family)?
                            .iter()
                            .fold(0u128, |acc, iv| acc.saturating_add(iv.len()))
                    }
                    (None, true) => 0,
                    (_, false) => pool.size(family),
                };
                usage.push(FamilyUsage {
                    family,
                    size,
                    free: free::count(&free_table, &name, family)?,
                });
            }
        }
        let (orphaned, allocations): (Vec<Allocation>, Vec<Allocation>) = all
            .iter()
            .filter(|a| a.pool.as_deref() == Some(name.as_str()))
            .cloned()
            .partition(|a| is_orphaned(pools, a));
        out.push(PoolStatus {
            name,
            config: pool.map(|p| p.config().clone()),
            usage,
            allocations,
            orphaned,
        });
    }
    Ok(out)
}
