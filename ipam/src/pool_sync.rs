//! Bringing the store in line with the pools of the node config at start.
//!
//! A pool that is new or whose definition changed gets its free map rebuilt
//! from its allocatable set minus the addresses held in the store. Live
//! allocations are never touched: one that now falls outside its pool is
//! an orphan — it stays held (the pod still uses it), is listed by
//! `status::orphans`, and since it is in no free map it is never handed out
//! again, even after release.

use redb::WriteTransaction;

use crate::allocator::Pools;
use crate::blocks;
use crate::error::{IpamError, StoreContext};
use crate::free;
use crate::store::{BLOCKS, BY_IP, CURSOR, FREE, POOLS, STATIC_LEASES, read_snapshot};

/// Names of pools whose free map was rebuilt or dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PoolChanges {
    /// Pools that are new or changed.
    pub rebuilt: Vec<String>,
    /// Pools no longer defined; their allocations are now orphans.
    pub removed: Vec<String>,
}

/// Applies `pools` to the store in `txn`.
pub(crate) fn apply(txn: &WriteTransaction, pools: &Pools) -> Result<PoolChanges, IpamError> {
    let mut snapshot_table = txn.open_table(POOLS).ctx("open ipam_pools")?;
    let snapshot = read_snapshot(&snapshot_table)?;
    let by_ip = txn.open_table(BY_IP).ctx("open ipam_by_ip")?;
    let mut free_table = txn.open_table(FREE).ctx("open ipam_free")?;
    let mut cursor = txn.open_table(CURSOR).ctx("open ipam_cursor")?;
    let held = txn.open_table(BLOCKS).ctx("open ipam_blocks")?;
    let statics = txn
        .open_table(STATIC_LEASES)
        .ctx("open ipam_static_leases")?;
    let mut changes = PoolChanges::default();
    for (name, pool) in pools {
        if snapshot.get(name) == Some(pool.config()) {
            continue;
        }
        let mut allowed = std::collections::BTreeMap::new();
        for fam in crate::Family::ALL {
            allowed.insert(fam, blocks::allowed(&held, Some(&statics), pool, fam)?);
        }
        free::rebuild(&mut free_table, &by_ip, pool, |fam| {
            allowed.get(&fam).cloned().unwrap_or_default()
        })?;
        let bytes = serde_json::to_vec(pool.config()).map_err(|e| IpamError::Inconsistent {
            detail: format!("pool {name:?} does not encode: {e}"),
        })?;
        snapshot_table
            .insert(name.as_str(), bytes.as_slice())
            .ctx("write ipam_pools")?;
        changes.rebuilt.push(name.clone());
    }
    for name in snapshot.keys().filter(|n| !pools.contains_key(*n)) {
        free::clear(&mut free_table, name)?;
        cursor
            .retain_in((name.as_str(), 0u8)..=(name.as_str(), u8::MAX), |_, _| {
                false
            })
            .ctx("clear ipam_cursor")?;
        snapshot_table
            .remove(name.as_str())
            .ctx("write ipam_pools")?;
        changes.removed.push(name.clone());
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use crate::handle::Ipam;
    use crate::test_support::{SMALL, ipam, owner, pools};

    #[test]
    fn shrunk_pool_keeps_live_allocations_as_orphans_and_never_reuses_them() {
        let (dir, ipam) = ipam(SMALL);
        let a = ipam.allocate(&owner(1), "small").unwrap(); // .2
        ipam.allocate(&owner(2), "small").unwrap(); // .3
        drop(ipam);
        // .2 is now excluded.
        let shrunk = r#"[{"name":"small","scope":"node","subnets":[{"subnet":"10.0.0.0/29","gateway":"10.0.0.1"}],"exclude":["10.0.0.2"]}]"#;
        let ipam = Ipam::open(dir.path(), &pools(shrunk)).unwrap();
        assert_eq!(ipam.pool_changes().rebuilt, ["small"]);
        assert_eq!(ipam.get(&owner(1)).unwrap(), Some(a.clone()), "kept");
        assert_eq!(ipam.orphans().unwrap(), std::slice::from_ref(&a));
        let status = ipam.status().unwrap();
        assert_eq!(status[0].orphaned, [a]);
        ipam.release(&owner(1)).unwrap();
        for n in 10..13 {
            let got = ipam.allocate(&owner(n), "small").unwrap().ips()[0];
            assert_ne!(got.to_string(), "10.0.0.2");
        }
        assert!(matches!(
            ipam.allocate(&owner(20), "small"),
            Err(crate::IpamError::PoolExhausted { size: 4, .. })
        ));
        assert!(ipam.verify().unwrap().is_empty());
    }

    #[test]
    fn removed_pool_turns_its_allocations_into_orphans() {
        let (dir, ipam) = ipam(SMALL);
        ipam.allocate(&owner(1), "small").unwrap();
        drop(ipam);
        let other = r#"[{"name":"other","scope":"node","subnets":[{"subnet":"10.1.0.0/24"}]}]"#;
        let ipam = Ipam::open(dir.path(), &pools(other)).unwrap();
        assert_eq!(ipam.pool_changes().removed, ["small"]);
        assert_eq!(ipam.orphans().unwrap().len(), 1);
        let status = ipam.status().unwrap();
        let small = status.iter().find(|s| s.name == "small").unwrap();
        assert_eq!((small.config.is_none(), small.orphaned.len()), (true, 1));
        assert!(ipam.verify().unwrap().is_empty());
    }

    #[test]
    fn grown_pool_hands_out_new_addresses_but_not_held_ones() {
        let (dir, ipam) = ipam(SMALL);
        for n in 0..5 {
            ipam.allocate(&owner(n), "small").unwrap();
        }
        drop(ipam);
        let grown = r#"[{"name":"small","scope":"node","subnets":[{"subnet":"10.0.0.0/28","gateway":"10.0.0.1"}]}]"#;
        let ipam = Ipam::open(dir.path(), &pools(grown)).unwrap();
        let next = ipam.allocate(&owner(9), "small").unwrap().ips()[0];
        assert_eq!(
            next.to_string(),
            "10.0.0.7",
            "first address after the held ones"
        );
        assert!(ipam.orphans().unwrap().is_empty());
        assert!(ipam.verify().unwrap().is_empty());
    }
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    use proptest::prelude::*;

    use crate::handle::Ipam;
    use crate::test_support::{owner, pools};

    fn pool_json(start: u8, end: u8, exclude: &BTreeSet<u8>) -> String {
        let exclude: Vec<String> = exclude.iter().map(|e| format!("\"10.0.0.{e}\"")).collect();
        format!(
            r#"[{{"name":"p","scope":"node","subnets":[{{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.{start}","rangeEnd":"10.0.0.{end}"}}],"exclude":[{}]}}]"#,
            exclude.join(",")
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

        /// Whatever the pool becomes, held addresses stay with their owners,
        /// new allocations never collide with them, and orphans are exactly
        /// the held addresses the new definition does not cover.
        #[test]
        fn redefining_a_pool_never_hands_out_a_held_address(
            held in 1usize..30,
            start in 1u8..40,
            len in 5u8..60,
            exclude in proptest::collection::btree_set(1u8..100, 0..10),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let before = pools(&pool_json(1, 100, &BTreeSet::new()));
            let ipam = Ipam::open(dir.path(), &before).unwrap();
            let mut taken: BTreeSet<IpAddr> = BTreeSet::new();
            for n in 0..held {
                taken.insert(ipam.allocate(&owner(n), "p").unwrap().ips()[0]);
            }
            drop(ipam);
            let end = start.saturating_add(len).min(254);
            let mut exclude = exclude;
            exclude.retain(|e| *e >= start && *e <= end);
            if exclude.len() as u32 > u32::from(end - start) {
                return Ok(()); // would be an empty pool: rejected by validation
            }
            let ipam = Ipam::open(dir.path(), &pools(&pool_json(start, end, &exclude))).unwrap();
            let pool = ipam.pools().next().unwrap().clone();
            let orphans: BTreeSet<IpAddr> =
                ipam.orphans().unwrap().iter().map(|a| a.ips()[0]).collect();
            let expected: BTreeSet<IpAddr> =
                taken.iter().copied().filter(|ip| !pool.is_allocatable(*ip)).collect();
            prop_assert_eq!(orphans, expected);
            for n in 100..400 {
                match ipam.allocate(&owner(n), "p") {
                    Ok(a) => {
                        let ip = a.ips()[0];
                        prop_assert!(!taken.contains(&ip), "{} handed out twice", ip);
                        prop_assert!(pool.is_allocatable(ip));
                    }
                    Err(crate::IpamError::PoolExhausted { .. }) => break,
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
            }
            for n in 0..held {
                prop_assert!(ipam.get(&owner(n)).unwrap().is_some());
            }
            let problems = ipam.verify().unwrap();
            prop_assert!(problems.is_empty(), "{:?}", problems);
        }
    }
}
