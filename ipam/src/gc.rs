//! Garbage collection: after a restart the driver knows which claims are
//! still prepared; everything else in the store is a leak.

use std::collections::BTreeSet;

use redb::{ReadableTable, WriteTransaction};

use crate::allocation::Allocation;
use crate::allocator::{Pools, Tables, release_key};
use crate::error::{IpamError, StoreContext};
use crate::owner::Owner;

/// Releases every allocation whose owner is not in `live`; returns them.
pub(crate) fn gc(
    txn: &WriteTransaction,
    pools: &Pools,
    live: &BTreeSet<Owner>,
) -> Result<Vec<Allocation>, IpamError> {
    let mut t = Tables::open(txn)?;
    let live_keys: BTreeSet<String> = live.iter().map(Owner::key).collect();
    let mut dead = Vec::new();
    for entry in t.by_owner.iter().ctx("read ipam_by_owner")? {
        let (k, _) = entry.ctx("read ipam_by_owner")?;
        if !live_keys.contains(k.value()) {
            dead.push(k.value().to_string());
        }
    }
    let mut released = Vec::new();
    for key in dead {
        released.extend(release_key(&mut t, pools, &key)?);
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{SMALL, ipam, owner};

    #[test]
    fn gc_releases_everything_not_live_and_returns_it() {
        let (_dir, ipam) = ipam(SMALL);
        for n in 0..4 {
            ipam.allocate(&owner(n), "small").unwrap();
        }
        let live: BTreeSet<Owner> = [owner(1), owner(3)].into();
        let released = ipam.gc(&live).unwrap();
        let gone: Vec<Owner> = released.into_iter().map(|a| a.owner).collect();
        assert_eq!(gone, [owner(0), owner(2)]);
        assert_eq!(ipam.list().unwrap().len(), 2);
        assert!(
            ipam.gc(&live).unwrap().is_empty(),
            "nothing left to collect"
        );
        assert!(ipam.verify().unwrap().is_empty());
    }
}
