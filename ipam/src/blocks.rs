//! The blocks of cluster-wide pools this node holds, in the store.
//!
//! A cluster pool's free map holds only addresses inside these blocks, so
//! the allocator hands out nothing the node has not leased. A block is
//! recorded here (and its addresses made free) in the same commit, after its
//! lease object exists in the API and before any address of it is handed
//! out; it is dropped here before its lease object is deleted.

use redb::{ReadTransaction, ReadableTable, Table, TableError, WriteTransaction};
use serde::{Deserialize, Serialize};

use ipnetwork::IpNetwork;

use crate::address::Family;
use crate::allocator::Pools;
use crate::block_space::BlockSpace;
use crate::error::{IpamError, StoreContext};
use crate::free::{self, FreeTable};
use crate::pool::{Interval, Pool, cidr_interval, normalize, subtract};
use crate::static_leases;
use crate::store::{BLOCKS, BY_IP, FREE, STATIC_LEASES};

/// The block table, open in a write transaction.
pub(crate) type BlockTable<'t> = Table<'t, (&'static str, u8, u128), &'static [u8]>;
/// The block table, open in a read transaction.
type ReadBlockTable = redb::ReadOnlyTable<(&'static str, u8, u128), &'static [u8]>;

/// A block of a cluster pool this node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldBlock {
    /// Pool the block belongs to.
    pub pool: String,
    /// The block.
    pub cidr: IpNetwork,
    /// Name of the API object that leases it.
    pub lease: String,
}

/// A held block with what is used of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockUsage {
    /// The block and its lease.
    #[serde(flatten)]
    pub block: HeldBlock,
    /// Addresses of the block held by owners.
    pub used: u128,
    /// Addresses of the block that can still be handed out.
    pub free: u128,
    /// Whether the pool's current definition still covers the block (after
    /// a pool shrinks, a block outside it is returned once empty).
    pub in_pool: bool,
}

fn decode(bytes: &[u8]) -> Result<HeldBlock, IpamError> {
    serde_json::from_slice(bytes).map_err(|e| IpamError::Inconsistent {
        detail: format!("record in ipam_blocks does not decode: {e}"),
    })
}

/// The held block of `pool`/`fam` containing `value`.
pub(crate) fn containing(
    blocks: &impl ReadableTable<(&'static str, u8, u128), &'static [u8]>,
    pool: &str,
    fam: Family,
    value: u128,
) -> Result<Option<HeldBlock>, IpamError> {
    let tag = fam.tag();
    let mut range = blocks
        .range((pool, tag, 0u128)..=(pool, tag, value))
        .ctx("read ipam_blocks")?;
    match range.next_back() {
        Some(entry) => {
            let (_, v) = entry.ctx("read ipam_blocks")?;
            let block = decode(v.value())?;
            let (_, iv) = cidr_interval(&block.cidr);
            Ok(iv.contains(value).then_some(block))
        }
        None => Ok(None),
    }
}

/// Held blocks of `pool`/`fam` as sorted intervals.
fn intervals(
    blocks: &impl ReadableTable<(&'static str, u8, u128), &'static [u8]>,
    pool: &str,
    fam: Family,
) -> Result<Vec<Interval>, IpamError> {
    let tag = fam.tag();
    let mut out = Vec::new();
    for entry in blocks
        .range((pool, tag, 0u128)..=(pool, tag, u128::MAX))
        .ctx("read ipam_blocks")?
    {
        let (_, v) = entry.ctx("read ipam_blocks")?;
        out.push(cidr_interval(&decode(v.value())?.cidr).1);
    }
    Ok(out)
}

/// `set` ∩ `within`, both sorted and disjoint.
pub(crate) fn intersect(set: &[Interval], within: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::new();
    for w in within {
        for iv in set {
            let start = iv.start.max(w.start);
            let end = iv.end.min(w.end);
            if start <= end {
                out.push(Interval { start, end });
            }
        }
    }
    normalize(out)
}

/// `set` without the single addresses of `holes` (both sorted).
fn without(set: Vec<Interval>, holes: &[Interval]) -> Vec<Interval> {
    holes.iter().fold(set, |acc, h| subtract(&acc, *h))
}

/// What `pool` may hand out on this node for `fam`: everything for a node
/// pool; for a cluster pool its allocatable set inside the held blocks,
/// without the addresses other nodes hold by single-address leases.
pub(crate) fn allowed(
    blocks: &impl ReadableTable<(&'static str, u8, u128), &'static [u8]>,
    statics: Option<&impl ReadableTable<(&'static str, u8, u128), &'static [u8]>>,
    pool: &Pool,
    fam: Family,
) -> Result<Vec<Interval>, IpamError> {
    if !pool.is_cluster() {
        return Ok(pool.allocatable(fam).to_vec());
    }
    let inside = intersect(pool.allocatable(fam), &intervals(blocks, pool.name(), fam)?);
    Ok(match statics {
        Some(statics) => without(inside, &static_leases::foreign(statics, pool.name(), fam)?),
        // A file from before single-address leases has none.
        None => inside,
    })
}

/// Whether `value` may go back to `pool`'s free map on release: for a
/// cluster pool only inside a held block and not held by another node.
pub(crate) fn may_reuse(
    blocks: &impl ReadableTable<(&'static str, u8, u128), &'static [u8]>,
    statics: &impl ReadableTable<(&'static str, u8, u128), &'static [u8]>,
    pool: &Pool,
    fam: Family,
    value: u128,
) -> Result<bool, IpamError> {
    if !pool.is_cluster() {
        return Ok(true);
    }
    let foreign = static_leases::foreign(statics, pool.name(), fam)?;
    Ok(containing(blocks, pool.name(), fam, value)?.is_some()
        && !foreign.iter().any(|iv| iv.contains(value)))
}

/// Free runs of `within` given the addresses held in `by_ip`.
fn free_runs(
    by_ip: &impl ReadableTable<(u8, u128), &'static str>,
    fam: Family,
    within: &[Interval],
) -> Result<Vec<Interval>, IpamError> {
    let mut runs = within.to_vec();
    for iv in within {
        for entry in by_ip
            .range((fam.tag(), iv.start)..=(fam.tag(), iv.end))
            .ctx("read ipam_by_ip")?
        {
            let (k, _) = entry.ctx("read ipam_by_ip")?;
            let v = k.value().1;
            runs = subtract(&runs, Interval { start: v, end: v });
        }
    }
    Ok(runs)
}

/// Records `cidr` of cluster pool `pool_name` as held under `lease` and
/// makes its free addresses allocatable. `Ok(false)` when it is already
/// recorded with that lease (adopting twice changes nothing).
pub(crate) fn add(
    txn: &WriteTransaction,
    pools: &Pools,
    pool_name: &str,
    cidr: IpNetwork,
    lease: &str,
) -> Result<bool, IpamError> {
    let invalid = |reason: String| IpamError::InvalidBlock {
        pool: pool_name.to_string(),
        block: cidr,
        reason,
    };
    let pool = pools
        .get(pool_name)
        .ok_or_else(|| invalid("the pool is not defined in this node's config".into()))?;
    let (fam, iv) = cidr_interval(&cidr);
    let space = BlockSpace::of(pool, fam)
        .ok_or_else(|| invalid("the pool is not a cluster pool of this family".into()))?;
    if !space.contains(&cidr) {
        return Err(invalid(format!(
            "not an aligned /{} block inside the pool's subnets",
            space.prefix()
        )));
    }
    let mut blocks = txn.open_table(BLOCKS).ctx("open ipam_blocks")?;
    let held = HeldBlock {
        pool: pool_name.to_string(),
        cidr,
        lease: lease.to_string(),
    };
    if let Some(existing) = containing(&blocks, pool_name, fam, iv.start)? {
        if existing == held {
            return Ok(false);
        }
        return Err(invalid(format!(
            "overlaps held block {} (lease {})",
            existing.cidr, existing.lease
        )));
    }
    let bytes = serde_json::to_vec(&held).map_err(|e| invalid(e.to_string()))?;
    blocks
        .insert((pool_name, fam.tag(), iv.start), bytes.as_slice())
        .ctx("write ipam_blocks")?;
    let by_ip = txn.open_table(BY_IP).ctx("open ipam_by_ip")?;
    let statics = txn
        .open_table(STATIC_LEASES)
        .ctx("open ipam_static_leases")?;
    let mut free_table: FreeTable<'_> = txn.open_table(FREE).ctx("open ipam_free")?;
    let within = without(
        intersect(pool.allocatable(fam), &[iv]),
        &static_leases::foreign(&statics, pool_name, fam)?,
    );
    for run in free_runs(&by_ip, fam, &within)? {
        free::give_back_interval(&mut free_table, pool_name, fam, run.start, run.end)?;
    }
    Ok(true)
}

/// Drops the record of `cidr` of `pool_name` and its free addresses. With
/// `force` false a block that still holds addresses is refused
/// ([`IpamError::BlockInUse`]); with `force` (the API says another node
/// holds it) the allocations stay but are never handed out again.
/// Returns the owner keys holding addresses of the block.
pub(crate) fn remove(
    txn: &WriteTransaction,
    pool_name: &str,
    cidr: IpNetwork,
    force: bool,
) -> Result<Vec<String>, IpamError> {
    let (fam, iv) = cidr_interval(&cidr);
    let mut blocks = txn.open_table(BLOCKS).ctx("open ipam_blocks")?;
    let by_ip = txn.open_table(BY_IP).ctx("open ipam_by_ip")?;
    let mut holders = Vec::new();
    for entry in by_ip
        .range((fam.tag(), iv.start)..=(fam.tag(), iv.end))
        .ctx("read ipam_by_ip")?
    {
        let (_, v) = entry.ctx("read ipam_by_ip")?;
        holders.push(v.value().to_string());
    }
    if !holders.is_empty() && !force {
        return Err(IpamError::BlockInUse {
            pool: pool_name.to_string(),
            block: cidr,
            used: holders.len(),
        });
    }
    let existed = blocks
        .remove((pool_name, fam.tag(), iv.start))
        .ctx("write ipam_blocks")?
        .is_some();
    if existed {
        let mut free_table: FreeTable<'_> = txn.open_table(FREE).ctx("open ipam_free")?;
        free::cut(&mut free_table, pool_name, fam, iv.start, iv.end)?;
        static_leases::forget_foreign_in(txn, pool_name, fam, iv)?;
    }
    Ok(holders)
}

/// Opens the block table for reading; a file written before cluster pools
/// has none, which means no blocks.
fn open_read(txn: &ReadTransaction) -> Result<Option<ReadBlockTable>, IpamError> {
    match txn.open_table(BLOCKS) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e).ctx("open ipam_blocks"),
    }
}

/// Every held block with its usage, by pool then address.
pub(crate) fn usage(txn: &ReadTransaction, pools: &Pools) -> Result<Vec<BlockUsage>, IpamError> {
    let Some(blocks) = open_read(txn)? else {
        return Ok(Vec::new());
    };
    let by_ip = txn.open_table(BY_IP).ctx("open ipam_by_ip")?;
    let free_table = txn.open_table(FREE).ctx("open ipam_free")?;
    let mut out = Vec::new();
    for entry in blocks.iter().ctx("read ipam_blocks")? {
        let (_, v) = entry.ctx("read ipam_blocks")?;
        let block = decode(v.value())?;
        let (fam, iv) = cidr_interval(&block.cidr);
        let used = by_ip
            .range((fam.tag(), iv.start)..=(fam.tag(), iv.end))
            .ctx("read ipam_by_ip")?
            .count() as u128;
        let mut free = 0u128;
        for entry in free_table
            .range(
                (block.pool.as_str(), fam.tag(), 0u128)..=(block.pool.as_str(), fam.tag(), iv.end),
            )
            .ctx("read ipam_free")?
            .rev()
        {
            let (k, v) = entry.ctx("read ipam_free")?;
            let (start, end) = (k.value().2.max(iv.start), v.value().min(iv.end));
            if v.value() < iv.start {
                break;
            }
            if start <= end {
                free += end - start + 1;
            }
        }
        let in_pool = pools
            .get(&block.pool)
            .and_then(|p| BlockSpace::of(p, fam))
            .is_some_and(|s| s.contains(&block.cidr));
        out.push(BlockUsage {
            block,
            used,
            free,
            in_pool,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::Ipam;
    use crate::test_support::{ipam, owner, pools};

    const CLUSTER: &str = r#"[{"name":"mid","scope":"cluster","blockSize":{"ipv4":29},
        "subnets":[{"subnet":"10.0.0.0/24","gateway":"10.0.0.1"}]}]"#;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn a_cluster_pool_hands_out_only_addresses_of_held_blocks() {
        let (_dir, ipam) = ipam(CLUSTER);
        let err = ipam.allocate(&owner(1), "mid").unwrap_err();
        assert!(
            matches!(err, IpamError::BlocksExhausted { blocks: 0, .. }),
            "{err}"
        );
        assert!(
            ipam.add_block("mid", net("10.0.0.8/29"), "mid-10-0-0-8-29")
                .unwrap()
        );
        assert!(
            !ipam
                .add_block("mid", net("10.0.0.8/29"), "mid-10-0-0-8-29")
                .unwrap()
        );
        let got: Vec<String> = (1..=8)
            .map(|n| ipam.allocate(&owner(n), "mid").unwrap().ips()[0].to_string())
            .collect();
        assert_eq!(
            got[0], "10.0.0.8",
            "the subnet's network address is elsewhere"
        );
        assert_eq!(got[7], "10.0.0.15");
        assert!(matches!(
            ipam.allocate(&owner(9), "mid"),
            Err(IpamError::BlocksExhausted { blocks: 1, .. })
        ));
        assert_eq!(ipam.status().unwrap()[0].usage[0].size, 8);
        assert!(ipam.verify().unwrap().is_empty(), "{:?}", ipam.verify());
    }

    #[test]
    fn a_block_in_use_is_kept_and_an_empty_one_goes_with_its_free_addresses() {
        let (_dir, ipam) = ipam(CLUSTER);
        ipam.add_block("mid", net("10.0.0.8/29"), "a").unwrap();
        ipam.add_block("mid", net("10.0.0.16/29"), "b").unwrap();
        ipam.allocate(&owner(1), "mid").unwrap();
        let err = ipam
            .remove_block("mid", net("10.0.0.8/29"), false)
            .unwrap_err();
        assert!(
            matches!(err, IpamError::BlockInUse { used: 1, .. }),
            "{err}"
        );
        ipam.remove_block("mid", net("10.0.0.16/29"), false)
            .unwrap();
        let usage = ipam.blocks().unwrap();
        assert_eq!(usage.len(), 1);
        assert_eq!(
            (usage[0].used, usage[0].free, usage[0].in_pool),
            (1, 7, true)
        );
        ipam.release(&owner(1)).unwrap();
        assert_eq!(
            ipam.blocks().unwrap()[0].free,
            8,
            "released address is reusable"
        );
        assert!(ipam.verify().unwrap().is_empty(), "{:?}", ipam.verify());
    }

    #[test]
    fn a_forced_removal_keeps_allocations_but_never_reuses_them() {
        let (_dir, ipam) = ipam(CLUSTER);
        ipam.add_block("mid", net("10.0.0.8/29"), "a").unwrap();
        ipam.allocate(&owner(1), "mid").unwrap();
        let holders = ipam.remove_block("mid", net("10.0.0.8/29"), true).unwrap();
        assert_eq!(holders, [owner(1).key()]);
        assert!(ipam.get(&owner(1)).unwrap().is_some());
        ipam.release(&owner(1)).unwrap();
        assert!(matches!(
            ipam.allocate(&owner(2), "mid"),
            Err(IpamError::BlocksExhausted { .. })
        ));
        assert!(ipam.verify().unwrap().is_empty(), "{:?}", ipam.verify());
    }

    #[test]
    fn unaligned_foreign_and_overlapping_blocks_are_refused() {
        let (_dir, ipam) = ipam(CLUSTER);
        for (pool, block) in [
            ("mid", "10.0.0.4/29"),
            ("mid", "10.0.1.0/29"),
            ("nope", "10.0.0.8/29"),
        ] {
            let err = ipam.add_block(pool, net(block), "x").unwrap_err();
            assert!(matches!(err, IpamError::InvalidBlock { .. }), "{err}");
        }
        ipam.add_block("mid", net("10.0.0.8/29"), "a").unwrap();
        let err = ipam
            .add_block("mid", net("10.0.0.8/29"), "other-name")
            .unwrap_err();
        assert!(err.to_string().contains("overlaps held block"), "{err}");
    }

    #[test]
    fn blocks_survive_reopen_and_a_pool_change_keeps_them() {
        let (dir, ipam) = ipam(CLUSTER);
        ipam.add_block("mid", net("10.0.0.8/29"), "a").unwrap();
        ipam.allocate(&owner(1), "mid").unwrap();
        drop(ipam);
        let shrunk = CLUSTER.replace(
            r#""gateway":"10.0.0.1"}]"#,
            r#""gateway":"10.0.0.1"}],"exclude":["10.0.0.12/30"]"#,
        );
        let ipam = Ipam::open(dir.path(), &pools(&shrunk)).unwrap();
        let usage = ipam.blocks().unwrap();
        assert_eq!(
            (usage[0].used, usage[0].free),
            (1, 3),
            ".9-.11 free, .12-.15 excluded"
        );
        assert!(ipam.verify().unwrap().is_empty(), "{:?}", ipam.verify());
    }
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::test_support::{ipam, owner};

    #[derive(Debug, Clone)]
    enum Op {
        Lease(u8),
        Return(u8),
        Allocate(usize),
        Release(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0u8..8).prop_map(Op::Lease),
            1 => (0u8..8).prop_map(Op::Return),
            4 => (0usize..40).prop_map(Op::Allocate),
            2 => (0usize..40).prop_map(Op::Release),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// Whatever blocks come and go, a cluster pool hands out only
        /// addresses of blocks held at that moment, never one twice, and
        /// runs dry exactly when its held blocks are full.
        #[test]
        fn a_cluster_pool_allocates_only_inside_held_blocks(ops in proptest::collection::vec(op(), 1..80)) {
            // 10.0.0.0/26 in /29 blocks: 8 blocks; .0 and .63 are not hosts.
            let (_dir, ipam) = ipam(
                r#"[{"name":"c","scope":"cluster","blockSize":{"ipv4":29},"subnets":[{"subnet":"10.0.0.0/26"}]}]"#,
            );
            let block = |i: u8| -> IpNetwork { format!("10.0.0.{}/29", i * 8).parse().unwrap() };
            let mut held: BTreeMap<u8, IpNetwork> = BTreeMap::new();
            let mut model: BTreeMap<usize, std::net::IpAddr> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Lease(i) => {
                        ipam.add_block("c", block(i), &format!("c-{i}")).unwrap();
                        held.insert(i, block(i));
                    }
                    Op::Return(i) => {
                        let in_use = model.values().any(|ip| block(i).contains(*ip));
                        match ipam.remove_block("c", block(i), false) {
                            Ok(_) => {
                                prop_assert!(!in_use);
                                held.remove(&i);
                            }
                            Err(IpamError::BlockInUse { .. }) => prop_assert!(in_use),
                            Err(e) => return Err(TestCaseError::fail(e.to_string())),
                        }
                    }
                    Op::Allocate(n) => match ipam.allocate(&owner(n), "c") {
                        Ok(a) => {
                            let ip = a.ips()[0];
                            if let Some(prev) = model.get(&n) {
                                prop_assert_eq!(*prev, ip);
                            } else {
                                prop_assert!(held.values().any(|b| b.contains(ip)), "{} outside held blocks", ip);
                                prop_assert!(!model.values().any(|x| *x == ip), "{} twice", ip);
                                model.insert(n, ip);
                            }
                        }
                        Err(IpamError::BlocksExhausted { .. }) => {
                            let room: usize = held
                                .values()
                                .map(|b| b.iter().filter(|ip| ip.to_string() != "10.0.0.0" && ip.to_string() != "10.0.0.63").count())
                                .sum();
                            let used = model.values().filter(|ip| held.values().any(|b| b.contains(**ip))).count();
                            prop_assert_eq!(used, room, "dry only when the held blocks are full");
                        }
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    },
                    Op::Release(n) => {
                        ipam.release(&owner(n)).unwrap();
                        model.remove(&n);
                    }
                }
            }
            let problems = ipam.verify().unwrap();
            prop_assert!(problems.is_empty(), "{:?}", problems);
        }
    }
}
