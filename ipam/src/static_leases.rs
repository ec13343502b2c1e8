//! Single-address leases of cluster-wide pools in the store: a static
//! address of a cluster pool outside every block this node holds is leased
//! through its own `IPBlock` (a /32 or /128), and a block this node leases
//! may contain addresses other nodes hold that way.
//!
//! Two kinds of record, one table:
//! - [`Holder::ThisNode`]: this node leased the address; it may be given to
//!   a static owner although no held block contains it. Recorded in the
//!   transaction that allocates it (after the lease object exists, before
//!   the address is handed out); dropped in the transaction that releases
//!   it (before the lease object is deleted).
//! - [`Holder::Node`]: another node leased the address and it lies inside
//!   a block this node holds (or is about to). It is kept out of the free
//!   map, so it is never handed out here; recorded in the transaction that
//!   records the block, before any of the block's addresses is handed out.
//!
//! The protocol that makes two racing nodes safe (each creates its lease
//! before it checks the other kind) lives in the driver; this module is
//! what the store must remember for it.

use std::net::IpAddr;

use redb::{ReadTransaction, ReadableTable, Table, TableError, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::address::{Family, to_key};
use crate::allocator::Pools;
use crate::blocks;
use crate::error::{IpamError, StoreContext};
use crate::free::{self, FreeTable};
use crate::pool::{Interval, normalize};
use crate::store::{BLOCKS, BY_IP, FREE, STATIC_LEASES};

/// The single-address lease table, open in a write transaction.
pub(crate) type StaticTable<'t> = Table<'t, (&'static str, u8, u128), &'static [u8]>;

/// Who holds a single-address lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "node")]
pub enum Holder {
    /// This node: the address may go to one of its static owners.
    ThisNode,
    /// Another node, named: the address is never handed out here.
    Node(String),
}

/// A single-address lease the store knows of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticLease {
    /// Cluster pool of the address.
    pub pool: String,
    /// The leased address.
    pub address: IpAddr,
    /// Name of the `IPBlock` object leasing it.
    pub lease: String,
    /// Who holds it.
    pub holder: Holder,
}

fn decode(bytes: &[u8]) -> Result<StaticLease, IpamError> {
    serde_json::from_slice(bytes).map_err(|e| IpamError::Inconsistent {
        detail: format!("record in ipam_static_leases does not decode: {e}"),
    })
}

/// The record of `address` in `pool`, if any.
pub(crate) fn get(
    table: &impl ReadableTable<(&'static str, u8, u128), &'static [u8]>,
    pool: &str,
    address: IpAddr,
) -> Result<Option<StaticLease>, IpamError> {
    let (fam, v) = to_key(address);
    match table
        .get((pool, fam.tag(), v))
        .ctx("read ipam_static_leases")?
    {
        Some(g) => decode(g.value()).map(Some),
        None => Ok(None),
    }
}

fn put(table: &mut StaticTable<'_>, lease: &StaticLease) -> Result<(), IpamError> {
    let (fam, v) = to_key(lease.address);
    let bytes = serde_json::to_vec(lease).map_err(|e| IpamError::Inconsistent {
        detail: format!(
            "single-address lease of {} does not encode: {e}",
            lease.address
        ),
    })?;
    table
        .insert((lease.pool.as_str(), fam.tag(), v), bytes.as_slice())
        .ctx("write ipam_static_leases")?;
    Ok(())
}

/// Checks that `address` is one `pool_name` (a cluster pool) may hand out.
fn check_address(pools: &Pools, pool_name: &str, address: IpAddr) -> Result<(), IpamError> {
    let invalid = |reason: &str| IpamError::InvalidStaticLease {
        pool: pool_name.to_string(),
        address,
        reason: reason.to_string(),
    };
    let pool = pools
        .get(pool_name)
        .ok_or_else(|| invalid("the pool is not defined in this node's config"))?;
    if !pool.is_cluster() {
        return Err(invalid("the pool is not cluster-wide"));
    }
    if !pool.is_allocatable(address) {
        return Err(invalid("not an allocatable address of the pool"));
    }
    Ok(())
}

/// Records that this node leases `address` of `pool_name` under `lease`.
/// `Ok(false)` when already recorded so (a re-prepare). Refused when the
/// store says another node holds it.
pub(crate) fn record_own(
    txn: &WriteTransaction,
    pools: &Pools,
    pool_name: &str,
    address: IpAddr,
    lease: &str,
) -> Result<bool, IpamError> {
    check_address(pools, pool_name, address)?;
    let mut table = txn
        .open_table(STATIC_LEASES)
        .ctx("open ipam_static_leases")?;
    let wanted = StaticLease {
        pool: pool_name.to_string(),
        address,
        lease: lease.to_string(),
        holder: Holder::ThisNode,
    };
    match get(&table, pool_name, address)? {
        Some(existing) if existing == wanted => return Ok(false),
        Some(existing) => {
            return Err(IpamError::InvalidStaticLease {
                pool: pool_name.to_string(),
                address,
                reason: match existing.holder {
                    Holder::Node(node) => {
                        format!("node {node} holds it (IPBlock {})", existing.lease)
                    }
                    Holder::ThisNode => format!("already leased here as {}", existing.lease),
                },
            });
        }
        None => {}
    }
    put(&mut table, &wanted)?;
    Ok(true)
}

/// Records that `node` holds `address` of `pool_name` under `lease` and
/// takes the address out of the free map, so it is never handed out here.
/// `Ok(false)` when already recorded so. Refused when this node holds or
/// has handed out the address (the caller reports the conflict).
pub(crate) fn reserve_foreign(
    txn: &WriteTransaction,
    pools: &Pools,
    pool_name: &str,
    address: IpAddr,
    lease: &str,
    node: &str,
) -> Result<bool, IpamError> {
    check_address(pools, pool_name, address)?;
    let invalid = |reason: String| IpamError::InvalidStaticLease {
        pool: pool_name.to_string(),
        address,
        reason,
    };
    let mut table = txn
        .open_table(STATIC_LEASES)
        .ctx("open ipam_static_leases")?;
    let wanted = StaticLease {
        pool: pool_name.to_string(),
        address,
        lease: lease.to_string(),
        holder: Holder::Node(node.to_string()),
    };
    match get(&table, pool_name, address)? {
        Some(existing) if existing == wanted => return Ok(false),
        Some(existing) if existing.holder == Holder::ThisNode => {
            return Err(invalid(format!(
                "node {node} claims it (IPBlock {lease}) but this node leases it as {}",
                existing.lease
            )));
        }
        _ => {}
    }
    let (fam, v) = to_key(address);
    let by_ip = txn.open_table(BY_IP).ctx("open ipam_by_ip")?;
    if let Some(holder) = by_ip.get((fam.tag(), v)).ctx("read ipam_by_ip")? {
        return Err(invalid(format!(
            "node {node} holds it (IPBlock {lease}) but it is allocated here to {}",
            holder.value()
        )));
    }
    put(&mut table, &wanted)?;
    let mut free_table: FreeTable<'_> = txn.open_table(FREE).ctx("open ipam_free")?;
    free::cut(&mut free_table, pool_name, fam, v, v)?;
    Ok(true)
}

/// Drops this node's record of `address` in `pool` (its owner released
/// it); returns the record so the caller deletes the lease object after
/// the commit. Another node's record is left alone.
pub(crate) fn drop_own(
    table: &mut StaticTable<'_>,
    pool: &str,
    address: IpAddr,
) -> Result<Option<StaticLease>, IpamError> {
    match get(table, pool, address)? {
        Some(lease) if lease.holder == Holder::ThisNode => {
            let (fam, v) = to_key(address);
            table
                .remove((pool, fam.tag(), v))
                .ctx("write ipam_static_leases")?;
            Ok(Some(lease))
        }
        _ => Ok(None),
    }
}

/// Forgets another node's record of `address` in `pool` (its lease object
/// is gone) and makes the address free again if a held block contains it.
/// `Ok(false)` when there was no such record.
pub(crate) fn forget_foreign(
    txn: &WriteTransaction,
    pools: &Pools,
    pool_name: &str,
    address: IpAddr,
) -> Result<bool, IpamError> {
    let mut table = txn
        .open_table(STATIC_LEASES)
        .ctx("open ipam_static_leases")?;
    if !matches!(
        get(&table, pool_name, address)?.map(|l| l.holder),
        Some(Holder::Node(_))
    ) {
        return Ok(false);
    }
    let (fam, v) = to_key(address);
    table
        .remove((pool_name, fam.tag(), v))
        .ctx("write ipam_static_leases")?;
    let blocks = txn.open_table(BLOCKS).ctx("open ipam_blocks")?;
    let held = blocks::containing(&blocks, pool_name, fam, v)?.is_some();
    let allocatable = pools
        .get(pool_name)
        .is_some_and(|p| p.is_allocatable(address));
    if held && allocatable {
        let mut free_table: FreeTable<'_> = txn.open_table(FREE).ctx("open ipam_free")?;
        free::give_back(&mut free_table, pool_name, fam, v)?;
    }
    Ok(true)
}

/// Forgets other nodes' records inside `iv` of `pool` (the block that
/// contained them is no longer held here; a later lease of it lists them
/// again).
pub(crate) fn forget_foreign_in(
    txn: &WriteTransaction,
    pool: &str,
    fam: Family,
    iv: Interval,
) -> Result<(), IpamError> {
    let mut table = txn
        .open_table(STATIC_LEASES)
        .ctx("open ipam_static_leases")?;
    table
        .retain_in(
            (pool, fam.tag(), iv.start)..=(pool, fam.tag(), iv.end),
            |_, v| decode(v).map_or(true, |l| l.holder == Holder::ThisNode),
        )
        .ctx("write ipam_static_leases")?;
    Ok(())
}

/// Addresses of `pool`/`fam` other nodes hold, as sorted intervals.
pub(crate) fn foreign(
    table: &impl ReadableTable<(&'static str, u8, u128), &'static [u8]>,
    pool: &str,
    fam: Family,
) -> Result<Vec<Interval>, IpamError> {
    let tag = fam.tag();
    let mut out = Vec::new();
    for entry in table
        .range((pool, tag, 0u128)..=(pool, tag, u128::MAX))
        .ctx("read ipam_static_leases")?
    {
        let (k, v) = entry.ctx("read ipam_static_leases")?;
        if matches!(decode(v.value())?.holder, Holder::Node(_)) {
            let value = k.value().2;
            out.push(Interval {
                start: value,
                end: value,
            });
        }
    }
    Ok(normalize(out))
}

/// Whether this node leases `address` of `pool` on its own.
pub(crate) fn is_own(
    table: &impl ReadableTable<(&'static str, u8, u128), &'static [u8]>,
    pool: &str,
    address: IpAddr,
) -> Result<bool, IpamError> {
    Ok(get(table, pool, address)?.is_some_and(|l| l.holder == Holder::ThisNode))
}

/// Every single-address lease the store knows, by pool then address; a
/// file written before them has none.
pub(crate) fn list(txn: &ReadTransaction) -> Result<Vec<StaticLease>, IpamError> {
    let table = match txn.open_table(STATIC_LEASES) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx("open ipam_static_leases"),
    };
    let mut out = Vec::new();
    for entry in table.iter().ctx("read ipam_static_leases")? {
        let (_, v) = entry.ctx("read ipam_static_leases")?;
        out.push(decode(v.value())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::Ipam;
    use crate::test_support::{ipam, owner, pools};
    use ipnetwork::IpNetwork;

    /// 10.0.0.0/24 in /29 blocks.
    const CLUSTER: &str = r#"[{"name":"mid","scope":"cluster","blockSize":{"ipv4":29},
        "subnets":[{"subnet":"10.0.0.0/24","gateway":"10.0.0.1"}]}]"#;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// What Prepare does for a static address outside the node's blocks,
    /// once the lease object exists: record it and allocate, one commit.
    fn prepare_static(
        ipam: &Ipam,
        n: usize,
        address: &str,
    ) -> Result<crate::Allocation, IpamError> {
        let txn = ipam.database().begin_write().unwrap();
        let lease = crate::lease_name("mid", &net(&format!("{address}/32")));
        ipam.record_static_lease_in(&txn, "mid", ip(address), &lease)?;
        let got = ipam.allocate_static_in(&txn, &owner(n), &[net(&format!("{address}/24"))])?;
        txn.commit().unwrap();
        Ok(got)
    }

    fn foreign(address: &str, node: &str) -> StaticLease {
        StaticLease {
            pool: "mid".into(),
            address: ip(address),
            lease: crate::lease_name("mid", &net(&format!("{address}/32"))),
            holder: Holder::Node(node.into()),
        }
    }

    #[test]
    fn a_static_address_outside_the_blocks_needs_its_own_lease_and_gives_it_up_on_release() {
        let (_dir, ipam) = ipam(CLUSTER);
        let err = ipam
            .allocate_static(&owner(1), &[net("10.0.0.77/24")])
            .unwrap_err();
        assert!(matches!(err, IpamError::NotLeased { .. }), "{err}");
        let got = prepare_static(&ipam, 1, "10.0.0.77").unwrap();
        assert_eq!(got.ips(), [ip("10.0.0.77")]);
        let again = prepare_static(&ipam, 1, "10.0.0.77").unwrap();
        assert_eq!(again, got, "a re-prepare changes nothing");
        assert_eq!(
            ipam.static_leases().unwrap(),
            [StaticLease {
                pool: "mid".into(),
                address: ip("10.0.0.77"),
                lease: "mid-10-0-0-77-32".into(),
                holder: Holder::ThisNode,
            }]
        );
        assert!(ipam.verify().unwrap().is_empty(), "{:?}", ipam.verify());
        ipam.release(&owner(1)).unwrap();
        assert!(
            ipam.static_leases().unwrap().is_empty(),
            "the record goes with the release"
        );
        assert_eq!(
            ipam.free_count("mid", Family::V4).unwrap(),
            0,
            "an address of no held block is not free afterwards"
        );
        assert!(ipam.verify().unwrap().is_empty(), "{:?}", ipam.verify());
    }

    #[test]
    fn another_nodes_static_address_in_a_new_block_is_never_handed_out() {
        let (dir, ipam) = ipam(CLUSTER);
        ipam.add_block_reserving(
            "mid",
            net("10.0.0.8/29"),
            "mid-10-0-0-8-29",
            &[foreign("10.0.0.10", "node-b")],
        )
        .unwrap();
        assert_eq!(ipam.blocks().unwrap()[0].free, 7);
        let got: Vec<IpAddr> = (1..=7)
            .map(|n| ipam.allocate(&owner(n), "mid").unwrap().ips()[0])
            .collect();
        assert!(!got.contains(&ip("10.0.0.10")), "{got:?}");
        assert!(matches!(
            ipam.allocate(&owner(8), "mid"),
            Err(IpamError::BlocksExhausted { .. })
        ));
        let err = ipam
            .allocate_static(&owner(9), &[net("10.0.0.10/24")])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("held by node node-b (IPBlock mid-10-0-0-10-32)"),
            "{err}"
        );
        // A changed pool rebuilds the free map: the address stays out.
        drop(ipam);
        let widened = CLUSTER.replace("10.0.0.0/24", "10.0.0.0/23");
        let ipam = Ipam::open(dir.path(), &pools(&widened)).unwrap();
        for n in 1..=7 {
            ipam.release(&owner(n)).unwrap();
        }
        assert_eq!(ipam.blocks().unwrap()[0].free, 7);
        assert!(ipam.verify().unwrap().is_empty(), "{:?}", ipam.verify());
    }

    #[test]
    fn a_foreign_lease_gone_frees_its_address_and_a_returned_block_forgets_them() {
        let (_dir, ipam) = ipam(CLUSTER);
        ipam.add_block_reserving(
            "mid",
            net("10.0.0.8/29"),
            "a",
            &[
                foreign("10.0.0.10", "node-b"),
                foreign("10.0.0.11", "node-c"),
            ],
        )
        .unwrap();
        assert!(ipam.forget_foreign("mid", ip("10.0.0.10")).unwrap());
        assert!(!ipam.forget_foreign("mid", ip("10.0.0.10")).unwrap());
        assert_eq!(ipam.blocks().unwrap()[0].free, 7);
        ipam.remove_block("mid", net("10.0.0.8/29"), false).unwrap();
        assert!(ipam.static_leases().unwrap().is_empty());
        assert!(ipam.verify().unwrap().is_empty(), "{:?}", ipam.verify());
    }

    #[test]
    fn a_block_leased_around_this_nodes_static_address_keeps_it_and_reuses_it_after() {
        let (_dir, ipam) = ipam(CLUSTER);
        prepare_static(&ipam, 1, "10.0.0.12").unwrap();
        ipam.add_block("mid", net("10.0.0.8/29"), "mid-10-0-0-8-29")
            .unwrap();
        assert_eq!(ipam.blocks().unwrap()[0].free, 7);
        ipam.release(&owner(1)).unwrap();
        assert_eq!(ipam.blocks().unwrap()[0].free, 8);
        assert!(ipam.static_leases().unwrap().is_empty());
        assert!(ipam.verify().unwrap().is_empty(), "{:?}", ipam.verify());
    }

    #[test]
    fn conflicting_records_are_refused_naming_the_other_side() {
        let (_dir, ipam) = ipam(CLUSTER);
        ipam.add_block("mid", net("10.0.0.8/29"), "a").unwrap();
        ipam.allocate_static(&owner(1), &[net("10.0.0.9/24")])
            .unwrap();
        let err = ipam
            .reserve_foreign("mid", ip("10.0.0.9"), "mid-10-0-0-9-32", "node-b")
            .unwrap_err();
        assert!(err.to_string().contains("allocated here to"), "{err}");
        prepare_static(&ipam, 2, "10.0.0.40").unwrap();
        let err = ipam
            .reserve_foreign("mid", ip("10.0.0.40"), "mid-10-0-0-40-32", "node-b")
            .unwrap_err();
        assert!(err.to_string().contains("this node leases it"), "{err}");
        ipam.reserve_foreign("mid", ip("10.0.0.50"), "mid-10-0-0-50-32", "node-b")
            .unwrap();
        let err = prepare_static(&ipam, 3, "10.0.0.50").unwrap_err();
        assert!(err.to_string().contains("node node-b holds it"), "{err}");
        let err = ipam
            .add_block_reserving(
                "mid",
                net("10.0.0.16/29"),
                "b",
                &[foreign("10.0.0.99", "x")],
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("not another node's lease inside"),
            "{err}"
        );
        assert_eq!(ipam.blocks().unwrap().len(), 1, "nothing half-applied");
        assert!(ipam.verify().unwrap().is_empty(), "{:?}", ipam.verify());
    }
}
