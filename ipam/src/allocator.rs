//! Allocation and release inside one write transaction.
//!
//! Each function either completes or returns an error; on error the caller
//! drops (aborts) the transaction, so nothing is half-applied. The by-IP
//! table is the single source of truth for "who holds this address": every
//! insert checks it, so no address can get two owners.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use redb::{ReadableTable, Table, WriteTransaction};

use crate::address::{Family, from_key, to_key};
use crate::allocation::{Allocation, AssignedAddress};
use crate::blocks::{self, BlockTable};
use crate::demand::BlockDemand;
use crate::error::{IpamError, StoreContext};
use crate::free::{self, FreeTable};
use crate::owner::Owner;
use crate::pool::Pool;
use crate::static_leases::{self, Holder, StaticLease, StaticTable};
use crate::store::{
    BLOCKS, BY_IP, BY_OWNER, CURSOR, FREE, STATIC_LEASES, decode_allocation, encode_allocation,
};

/// Pools by name.
pub(crate) type Pools = BTreeMap<String, Pool>;

/// The tables an allocation touches, open in one transaction.
pub(crate) struct Tables<'t> {
    pub by_ip: Table<'t, (u8, u128), &'static str>,
    pub by_owner: Table<'t, &'static str, &'static [u8]>,
    pub free: FreeTable<'t>,
    pub cursor: Table<'t, (&'static str, u8), u128>,
    pub blocks: BlockTable<'t>,
    pub statics: StaticTable<'t>,
}

impl<'t> Tables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Tables<'t>, IpamError> {
        Ok(Tables {
            by_ip: txn.open_table(BY_IP).ctx("open ipam_by_ip")?,
            by_owner: txn.open_table(BY_OWNER).ctx("open ipam_by_owner")?,
            free: txn.open_table(FREE).ctx("open ipam_free")?,
            cursor: txn.open_table(CURSOR).ctx("open ipam_cursor")?,
            blocks: txn.open_table(BLOCKS).ctx("open ipam_blocks")?,
            statics: txn
                .open_table(STATIC_LEASES)
                .ctx("open ipam_static_leases")?,
        })
    }

    fn existing(&self, owner: &Owner) -> Result<Option<Allocation>, IpamError> {
        let key = owner.key();
        match self.by_owner.get(key.as_str()).ctx("read ipam_by_owner")? {
            Some(v) => Ok(Some(decode_allocation(&key, v.value())?)),
            None => Ok(None),
        }
    }

    fn holder(&self, ip: IpAddr) -> Result<Option<String>, IpamError> {
        let (fam, v) = to_key(ip);
        Ok(self
            .by_ip
            .get((fam.tag(), v))
            .ctx("read ipam_by_ip")?
            .map(|g| g.value().to_string()))
    }

    fn claim_address(&mut self, ip: IpAddr, owner_key: &str) -> Result<(), IpamError> {
        let (fam, v) = to_key(ip);
        let previous = self
            .by_ip
            .insert((fam.tag(), v), owner_key)
            .ctx("write ipam_by_ip")?
            .map(|g| g.value().to_string());
        match previous {
            None => Ok(()),
            Some(other) => Err(IpamError::Inconsistent {
                detail: format!(
                    "{ip} was free in the pool's free map but is held by {other} (wanted by {owner_key})"
                ),
            }),
        }
    }

    fn store(&mut self, a: &Allocation) -> Result<(), IpamError> {
        let bytes = encode_allocation(a)?;
        self.by_owner
            .insert(a.owner.key().as_str(), bytes.as_slice())
            .ctx("write ipam_by_owner")?;
        Ok(())
    }
}

fn assigned(pool: &Pool, ip: IpAddr) -> Result<AssignedAddress, IpamError> {
    let subnet = pool.subnet_of(ip).ok_or_else(|| IpamError::Inconsistent {
        detail: format!(
            "{ip} was allocated from pool {:?} but is in none of its subnets",
            pool.name()
        ),
    })?;
    let address =
        IpNetwork::new(ip, subnet.subnet.prefix()).map_err(|e| IpamError::Inconsistent {
            detail: format!("{ip}/{}: {e}", subnet.subnet.prefix()),
        })?;
    Ok(AssignedAddress {
        address,
        gateway: subnet.gateway,
    })
}

/// The error for a pool with nothing free in `fam`: for a cluster pool the
/// leaser is asked for a block and says whether the pool is full everywhere.
fn exhausted(
    t: &Tables<'_>,
    pool: &Pool,
    fam: Family,
    demand: Option<&dyn BlockDemand>,
) -> Result<IpamError, IpamError> {
    if !pool.is_cluster() {
        return Ok(IpamError::PoolExhausted {
            pool: pool.name().to_string(),
            family: fam,
            size: pool.size(fam),
        });
    }
    if let Some(full) = demand.and_then(|d| d.exhausted(pool.name(), fam)) {
        return Ok(IpamError::ClusterExhausted {
            pool: pool.name().to_string(),
            blocks: full.blocks,
            nodes: full.nodes,
        });
    }
    let tag = fam.tag();
    let held = t
        .blocks
        .range((pool.name(), tag, 0u128)..=(pool.name(), tag, u128::MAX))
        .ctx("read ipam_blocks")?
        .count();
    Ok(IpamError::BlocksExhausted {
        pool: pool.name().to_string(),
        family: fam,
        blocks: held,
    })
}

/// Gives `owner` one address of each family of `pool_name`, or returns what
/// it already holds from that pool (idempotent).
pub(crate) fn allocate(
    txn: &WriteTransaction,
    pools: &Pools,
    owner: &Owner,
    pool_name: &str,
    demand: Option<&dyn BlockDemand>,
) -> Result<Allocation, IpamError> {
    let mut t = Tables::open(txn)?;
    if let Some(existing) = t.existing(owner)? {
        if existing.pool.as_deref() == Some(pool_name) {
            return Ok(existing);
        }
        return Err(IpamError::OwnerHoldsOther {
            owner: owner.key(),
            existing: existing.to_string(),
            requested: format!("an address from pool {pool_name:?}"),
        });
    }
    let pool = pools.get(pool_name).ok_or_else(|| IpamError::UnknownPool {
        pool: pool_name.to_string(),
    })?;
    let key = owner.key();
    let mut addresses = Vec::new();
    for fam in pool.families() {
        let cursor_key = (pool.name(), fam.tag());
        let after = t
            .cursor
            .get(cursor_key)
            .ctx("read ipam_cursor")?
            .map(|g| g.value());
        let Some(value) = free::take_next(&mut t.free, pool.name(), fam, after)? else {
            return Err(exhausted(&t, pool, fam, demand)?);
        };
        let ip = from_key(fam, value).ok_or_else(|| IpamError::Inconsistent {
            detail: format!(
                "free map of pool {:?} holds {value}, not an {fam} address",
                pool.name()
            ),
        })?;
        t.claim_address(ip, &key)?;
        t.cursor
            .insert(cursor_key, value)
            .ctx("write ipam_cursor")?;
        addresses.push(assigned(pool, ip)?);
    }
    let allocation = Allocation {
        owner: owner.clone(),
        pool: Some(pool.name().to_string()),
        addresses,
        routes: pool.config().routes.clone(),
    };
    t.store(&allocation)?;
    Ok(allocation)
}

/// Gives `owner` exactly the `requested` addresses (prefix as written), or
/// returns them if it already holds exactly those (idempotent).
pub(crate) fn allocate_static(
    txn: &WriteTransaction,
    pools: &Pools,
    owner: &Owner,
    requested: &[IpNetwork],
) -> Result<Allocation, IpamError> {
    let key = owner.key();
    let invalid = |reason: String| IpamError::InvalidStatic {
        owner: key.clone(),
        reason,
    };
    if requested.is_empty() {
        return Err(invalid("no address given".into()));
    }
    let unique: BTreeSet<IpAddr> = requested.iter().map(|n| n.ip()).collect();
    if unique.len() != requested.len() {
        return Err(invalid("the same address is listed twice".into()));
    }
    let mut t = Tables::open(txn)?;
    if let Some(existing) = t.existing(owner)? {
        let held: BTreeSet<IpNetwork> = existing.addresses.iter().map(|a| a.address).collect();
        let wanted: BTreeSet<IpNetwork> = requested.iter().copied().collect();
        if existing.pool.is_none() && held == wanted {
            return Ok(existing);
        }
        let list: Vec<String> = requested.iter().map(|n| n.to_string()).collect();
        return Err(IpamError::OwnerHoldsOther {
            owner: key,
            existing: existing.to_string(),
            requested: format!("static {}", list.join(", ")),
        });
    }
    let mut addresses = Vec::new();
    for net in requested {
        let ip = net.ip();
        if let Some(holder) = t.holder(ip)? {
            return Err(IpamError::AddressInUse {
                address: ip,
                owner: key,
                holder,
            });
        }
        let pool = pools.values().find(|p| p.subnet_of(ip).is_some());
        let mut gateway = None;
        if let Some(pool) = pool {
            if let Some(what) = pool.reserved_reason(ip) {
                return Err(IpamError::AddressReserved {
                    address: ip,
                    owner: key,
                    pool: pool.name().to_string(),
                    what,
                });
            }
            gateway = pool.subnet_of(ip).and_then(|s| s.gateway);
            let (fam, v) = to_key(ip);
            // A cluster pool's address comes out of a held block's free
            // map, or is this node's by a single-address lease (then no
            // held block contains it and it is in no free map).
            let mut from_free_map = true;
            if pool.is_cluster() {
                let lease = static_leases::get(&t.statics, pool.name(), ip)?;
                if let Some(StaticLease {
                    holder: Holder::Node(node),
                    lease,
                    ..
                }) = lease
                {
                    return Err(IpamError::HeldByNode {
                        address: ip,
                        owner: key,
                        pool: pool.name().to_string(),
                        node,
                        lease,
                    });
                }
                if blocks::containing(&t.blocks, pool.name(), fam, v)?.is_none() {
                    if !static_leases::is_own(&t.statics, pool.name(), ip)? {
                        return Err(IpamError::NotLeased {
                            address: ip,
                            owner: key,
                            pool: pool.name().to_string(),
                        });
                    }
                    from_free_map = false;
                }
            }
            if from_free_map
                && pool.is_allocatable(ip)
                && !free::take_exact(&mut t.free, pool.name(), fam, v)?
            {
                return Err(IpamError::Inconsistent {
                    detail: format!(
                        "{ip} is held by nobody but missing from the free map of pool {:?}",
                        pool.name()
                    ),
                });
            }
        }
        t.claim_address(ip, &key)?;
        addresses.push(AssignedAddress {
            address: *net,
            gateway,
        });
    }
    addresses.sort_by_key(|a| Family::of(a.address.ip()));
    let allocation = Allocation {
        owner: owner.clone(),
        pool: None,
        addresses,
        routes: Vec::new(),
    };
    t.store(&allocation)?;
    Ok(allocation)
}

/// Releases what the owner under `key` holds; `None` if nothing.
pub(crate) fn release_key(
    t: &mut Tables<'_>,
    pools: &Pools,
    key: &str,
) -> Result<Option<Allocation>, IpamError> {
    let allocation = match t.by_owner.remove(key).ctx("write ipam_by_owner")? {
        Some(v) => decode_allocation(key, v.value())?,
        None => return Ok(None),
    };
    for a in &allocation.addresses {
        let ip = a.address.ip();
        let (fam, v) = to_key(ip);
        let removed = t
            .by_ip
            .remove((fam.tag(), v))
            .ctx("write ipam_by_ip")?
            .map(|g| g.value().to_string());
        if removed.as_deref() != Some(key) {
            return Err(IpamError::Inconsistent {
                detail: format!(
                    "{key} lists {ip} but ipam_by_ip says it is held by {}",
                    removed.as_deref().unwrap_or("nobody")
                ),
            });
        }
        // Only addresses the current pools may hand out go back; orphans
        // (outside every pool now) simply disappear.
        if let Some(pool) = pools.values().find(|p| p.is_allocatable(ip)) {
            if allocation.pool.is_none() && pool.is_cluster() {
                // Its single-address lease (if any) goes after the commit.
                static_leases::drop_own(&mut t.statics, pool.name(), ip)?;
            }
            if blocks::may_reuse(&t.blocks, &t.statics, pool, fam, v)? {
                free::give_back(&mut t.free, pool.name(), fam, v)?;
            }
        }
    }
    Ok(Some(allocation))
}

/// Releases what `owner` holds; `None` if nothing (idempotent).
pub(crate) fn release(
    txn: &WriteTransaction,
    pools: &Pools,
    owner: &Owner,
) -> Result<Option<Allocation>, IpamError> {
    let mut t = Tables::open(txn)?;
    release_key(&mut t, pools, &owner.key())
}

/// Owner keys of every allocation of a claim, found by prefix range.
pub(crate) fn claim_keys(
    by_owner: &impl ReadableTable<&'static str, &'static [u8]>,
    claim_uid: &str,
) -> Result<Vec<String>, IpamError> {
    let prefix = Owner::claim_prefix(claim_uid);
    let mut keys = Vec::new();
    for entry in by_owner
        .range(prefix.as_str()..)
        .ctx("read ipam_by_owner")?
    {
        let (k, _) = entry.ctx("read ipam_by_owner")?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        keys.push(k.value().to_string());
    }
    Ok(keys)
}

/// Releases every allocation of a claim.
pub(crate) fn release_claim(
    txn: &WriteTransaction,
    pools: &Pools,
    claim_uid: &str,
) -> Result<Vec<Allocation>, IpamError> {
    let mut t = Tables::open(txn)?;
    let keys = claim_keys(&t.by_owner, claim_uid)?;
    let mut released = Vec::new();
    for key in keys {
        released.extend(release_key(&mut t, pools, &key)?);
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::handle::Ipam;
    use crate::test_support::{SMALL, ipam, owner};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_come_in_order_skipping_gateway_and_carry_prefix_and_gateway() {
        let (_dir, ipam) = ipam(SMALL);
        let a = ipam.allocate(&owner(1), "small").unwrap();
        assert_eq!(a.addresses[0].address.to_string(), "10.0.0.2/29");
        assert_eq!(a.addresses[0].gateway, Some(ip("10.0.0.1")));
        let b = ipam.allocate(&owner(2), "small").unwrap();
        assert_eq!(b.ips(), [ip("10.0.0.3")]);
    }

    #[test]
    fn the_commit_observer_hears_each_durable_write_of_the_handle() {
        static COMMITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let (_dir, ipam) = ipam(SMALL);
        ipam.observe_commits(|_| {
            COMMITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        ipam.allocate(&owner(1), "small").unwrap();
        ipam.release(&owner(1)).unwrap();
        assert_eq!(COMMITS.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A write refused before its commit was not a commit.
        assert!(ipam.allocate(&owner(2), "no-such-pool").is_err());
        assert_eq!(COMMITS.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn allocation_is_idempotent_per_owner() {
        let (_dir, ipam) = ipam(SMALL);
        let first = ipam.allocate(&owner(1), "small").unwrap();
        let again = ipam.allocate(&owner(1), "small").unwrap();
        assert_eq!(first, again);
        assert_eq!(ipam.list().unwrap().len(), 1);
    }

    #[test]
    fn dual_stack_pool_gives_one_address_of_each_family() {
        let (_dir, ipam) = ipam(
            r#"[{"name":"ds","scope":"node","subnets":[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64","gateway":"fd00::1"}],
                 "routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.254"}]}]"#,
        );
        let a = ipam.allocate(&owner(1), "ds").unwrap();
        assert_eq!(a.ips(), [ip("10.0.0.1"), ip("fd00::2")]);
        assert_eq!(
            a.routes.len(),
            1,
            "routes of the pool come with the address"
        );
    }

    #[test]
    fn freed_address_is_not_reused_until_the_cursor_wraps() {
        let (_dir, ipam) = ipam(SMALL);
        ipam.allocate(&owner(1), "small").unwrap(); // .2
        ipam.allocate(&owner(2), "small").unwrap(); // .3
        ipam.release(&owner(1)).unwrap();
        assert_eq!(
            ipam.allocate(&owner(3), "small").unwrap().ips(),
            [ip("10.0.0.4")]
        );
        ipam.allocate(&owner(4), "small").unwrap(); // .5
        ipam.allocate(&owner(5), "small").unwrap(); // .6
        assert_eq!(
            ipam.allocate(&owner(6), "small").unwrap().ips(),
            [ip("10.0.0.2")],
            "wraps around to the freed address"
        );
    }

    #[test]
    fn full_pool_reports_exhaustion_with_its_size_and_changes_nothing() {
        let (_dir, ipam) = ipam(SMALL);
        for n in 0..5 {
            ipam.allocate(&owner(n), "small").unwrap();
        }
        match ipam.allocate(&owner(99), "small") {
            Err(IpamError::PoolExhausted { pool, family, size }) => {
                assert_eq!((pool.as_str(), family, size), ("small", Family::V4, 5));
            }
            other => panic!("expected PoolExhausted, got {other:?}"),
        }
        assert_eq!(ipam.get(&owner(99)).unwrap(), None);
        assert!(ipam.verify().unwrap().is_empty());
    }

    #[test]
    fn exhausted_v6_half_of_dual_stack_leaves_no_v4_behind() {
        let (_dir, ipam) = ipam(
            r#"[{"name":"ds","scope":"node","subnets":[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/127"}]}]"#,
        );
        ipam.allocate(&owner(1), "ds").unwrap();
        ipam.allocate(&owner(2), "ds").unwrap();
        let err = ipam.allocate(&owner(3), "ds").unwrap_err();
        assert!(
            matches!(
                err,
                IpamError::PoolExhausted {
                    family: Family::V6,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(ipam.holder(ip("10.0.0.3")).unwrap(), None);
    }

    #[test]
    fn unknown_pool_and_owner_holding_another_pool_are_errors() {
        let (_dir, ipam) = ipam(SMALL);
        assert!(matches!(
            ipam.allocate(&owner(1), "nope"),
            Err(IpamError::UnknownPool { .. })
        ));
        let nets = ["10.9.0.1/24".parse().unwrap()];
        ipam.allocate_static(&owner(1), &nets).unwrap();
        let err = ipam.allocate(&owner(1), "small").unwrap_err();
        assert!(
            err.to_string()
                .contains("already holds static: 10.9.0.1/24"),
            "{err}"
        );
    }

    #[test]
    fn static_requests_conflict_with_holders_and_reserved_addresses() {
        let (_dir, ipam) = ipam(SMALL);
        let dynamic = ipam.allocate(&owner(1), "small").unwrap();
        let taken: IpNetwork = IpNetwork::new(dynamic.ips()[0], 29).unwrap();
        match ipam.allocate_static(&owner(2), &[taken]) {
            Err(IpamError::AddressInUse { holder, .. }) => assert_eq!(holder, owner(1).key()),
            other => panic!("expected AddressInUse, got {other:?}"),
        }
        let gw = "10.0.0.1/29".parse().unwrap();
        assert!(matches!(
            ipam.allocate_static(&owner(2), &[gw]),
            Err(IpamError::AddressReserved {
                what: "the gateway",
                ..
            })
        ));
        let broadcast = "10.0.0.7/29".parse().unwrap();
        assert!(matches!(
            ipam.allocate_static(&owner(2), &[broadcast]),
            Err(IpamError::AddressReserved { .. })
        ));
    }

    #[test]
    fn static_address_inside_a_pool_is_never_handed_out_dynamically() {
        let (_dir, ipam) = ipam(SMALL);
        let nets = ["10.0.0.2/29".parse().unwrap()];
        let s = ipam.allocate_static(&owner(1), &nets).unwrap();
        assert_eq!(s.addresses[0].gateway, Some(ip("10.0.0.1")));
        assert_eq!(
            ipam.allocate_static(&owner(1), &nets).unwrap(),
            s,
            "idempotent"
        );
        assert_eq!(
            ipam.allocate(&owner(2), "small").unwrap().ips(),
            [ip("10.0.0.3")]
        );
        ipam.release(&owner(1)).unwrap();
        assert!(ipam.verify().unwrap().is_empty());
    }

    #[test]
    fn release_by_owner_and_by_claim() {
        let (_dir, ipam) = ipam(SMALL);
        let a = Owner::new("uid-a", "r1", "dev1").unwrap();
        let b = Owner::new("uid-a", "r2", "dev2").unwrap();
        let other = Owner::new("uid-ab", "r1", "dev1").unwrap();
        for o in [&a, &b, &other] {
            ipam.allocate(o, "small").unwrap();
        }
        assert!(ipam.release(&a).unwrap().is_some());
        assert_eq!(ipam.release(&a).unwrap(), None, "second release is a no-op");
        let released = ipam.release_claim("uid-a").unwrap();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].owner, b);
        assert!(
            ipam.get(&other).unwrap().is_some(),
            "prefix uid-ab is another claim"
        );
    }

    #[test]
    fn allocations_survive_reopen() {
        let (dir, ipam) = ipam(SMALL);
        let a = ipam.allocate(&owner(1), "small").unwrap();
        drop(ipam);
        let reopened = Ipam::open(dir.path(), &crate::test_support::pools(SMALL)).unwrap();
        assert_eq!(reopened.get(&owner(1)).unwrap(), Some(a));
        assert_eq!(
            reopened.allocate(&owner(2), "small").unwrap().ips(),
            [ip("10.0.0.3")],
            "cursor persisted"
        );
    }

    #[test]
    fn a_thousand_concurrent_allocations_are_all_distinct() {
        let (_dir, ipam) =
            ipam(r#"[{"name":"big","scope":"node","subnets":[{"subnet":"10.0.0.0/16"}]}]"#);
        let ipam = Arc::new(ipam);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let ipam = Arc::clone(&ipam);
                std::thread::spawn(move || {
                    (0..125)
                        .map(|i| ipam.allocate(&owner(t * 1000 + i), "big").unwrap().ips()[0])
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = HashSet::new();
        for t in threads {
            for ip in t.join().unwrap() {
                assert!(all.insert(ip), "{ip} handed out twice");
            }
        }
        assert_eq!(all.len(), 1000);
        assert!(ipam.verify().unwrap().is_empty());
    }

    #[test]
    fn ipam_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Ipam>();
    }
}

#[cfg(test)]
mod properties {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::test_support::{ipam, owner};

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(usize),
        Release(usize),
        ReleaseClaim(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0usize..40).prop_map(Op::Allocate),
            2 => (0usize..40).prop_map(Op::Release),
            1 => (0usize..40).prop_map(Op::ReleaseClaim),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

        /// Against a model: every owner holds at most one address, addresses
        /// are unique, inside the pool, never the gateway; the pool is full
        /// exactly when the model says so; store tables stay consistent.
        #[test]
        fn allocator_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
            // 10.0.0.0/27 minus network, broadcast, gateway .1 and .8/30 = 25.
            let (_dir, ipam) = ipam(
                r#"[{"name":"p","scope":"node","subnets":[{"subnet":"10.0.0.0/27","gateway":"10.0.0.1"}],"exclude":["10.0.0.8/30"]}]"#,
            );
            let pool = ipam.pools().next().unwrap().clone();
            let size = pool.size(Family::V4);
            prop_assert_eq!(size, 25);
            let mut model: BTreeMap<usize, IpAddr> = BTreeMap::new();
            // Naive reference for next-free: scan every allocatable address.
            let allocatable: Vec<IpAddr> = (0u32..32)
                .map(|i| IpAddr::from([10, 0, 0, i as u8]))
                .filter(|ip| pool.is_allocatable(*ip))
                .collect();
            let mut cursor: Option<IpAddr> = None;
            for op in ops {
                match op {
                    Op::Allocate(n) => match ipam.allocate(&owner(n), "p") {
                        Ok(a) => {
                            let got = a.ips()[0];
                            if let Some(prev) = model.get(&n) {
                                prop_assert_eq!(*prev, got, "idempotent");
                            } else {
                                let held: BTreeSet<IpAddr> = model.values().copied().collect();
                                let free = |ip: &&IpAddr| !held.contains(*ip);
                                let expected = allocatable
                                    .iter()
                                    .filter(free)
                                    .find(|ip| cursor.is_none_or(|c| **ip > c))
                                    .or_else(|| allocatable.iter().find(free));
                                prop_assert_eq!(Some(&got), expected, "next free after the cursor");
                                cursor = Some(got);
                            }
                            prop_assert!(pool.is_allocatable(got));
                            model.insert(n, got);
                        }
                        Err(IpamError::PoolExhausted { size: s, .. }) => {
                            prop_assert_eq!(s, size);
                            prop_assert!(!model.contains_key(&n));
                            prop_assert_eq!(model.len() as u128, size);
                        }
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    },
                    Op::Release(n) => {
                        let released = ipam.release(&owner(n)).unwrap();
                        prop_assert_eq!(released.map(|a| a.ips()[0]), model.remove(&n));
                    }
                    Op::ReleaseClaim(n) => {
                        let released = ipam.release_claim(&format!("claim-{n}")).unwrap();
                        prop_assert_eq!(released.len(), usize::from(model.remove(&n).is_some()));
                    }
                }
                let distinct: BTreeSet<IpAddr> = model.values().copied().collect();
                prop_assert_eq!(distinct.len(), model.len());
            }
            let problems = ipam.verify().unwrap();
            prop_assert!(problems.is_empty(), "{:?}", problems);
            let stored: BTreeMap<String, IpAddr> = ipam
                .list()
                .unwrap()
                .into_iter()
                .map(|a| (a.owner.key(), a.ips()[0]))
                .collect();
            let expected: BTreeMap<String, IpAddr> =
                model.iter().map(|(n, ip)| (owner(*n).key(), *ip)).collect();
            prop_assert_eq!(stored, expected);
        }

        /// The free map never loses or invents an address: free + held =
        /// pool size after any sequence.
        #[test]
        fn free_plus_held_is_pool_size(ops in proptest::collection::vec(op(), 1..60)) {
            let (_dir, ipam) = ipam(
                r#"[{"name":"p","scope":"node","subnets":[{"subnet":"10.0.0.0/28"},{"subnet":"fd00::/124"}]}]"#,
            );
            for op in ops {
                let _ = match op {
                    Op::Allocate(n) => ipam.allocate(&owner(n), "p").map(|_| ()),
                    Op::Release(n) => ipam.release(&owner(n)).map(|_| ()),
                    Op::ReleaseClaim(n) => ipam.release_claim(&format!("claim-{n}")).map(|_| ()),
                };
            }
            let status = &ipam.status().unwrap()[0];
            for usage in &status.usage {
                prop_assert_eq!(usage.free + status.allocations.len() as u128, usage.size);
            }
        }
    }
}
