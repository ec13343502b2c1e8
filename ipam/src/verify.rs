//! Cross-checks of the store's tables, for tests, the crash test and the
//! CLI: the invariants every committed state must satisfy.

use std::collections::BTreeMap;

use redb::{ReadTransaction, ReadableTable};

use crate::address::{Family, from_key, to_key};
use crate::allocator::Pools;
use crate::error::{IpamError, StoreContext};
use crate::store::{BY_IP, BY_OWNER, FREE, decode_allocation};
use crate::{blocks, pool::Interval};

/// Lists every broken invariant; empty means consistent:
/// each address in `ipam_by_ip` has one owner and that owner's record lists
/// it; each record's addresses point back to it; no free interval holds an
/// allocated address or lies outside its pool (for a cluster pool: outside
/// the blocks this node holds).
pub(crate) fn verify(txn: &ReadTransaction, pools: &Pools) -> Result<Vec<String>, IpamError> {
    let by_ip = txn.open_table(BY_IP).ctx("open ipam_by_ip")?;
    let by_owner = txn.open_table(BY_OWNER).ctx("open ipam_by_owner")?;
    let free = txn.open_table(FREE).ctx("open ipam_free")?;
    let held = txn
        .open_table(crate::store::BLOCKS)
        .ctx("open ipam_blocks")?;
    let statics = txn
        .open_table(crate::store::STATIC_LEASES)
        .ctx("open ipam_static_leases")?;
    let mut allowed: BTreeMap<(String, u8), Vec<Interval>> = BTreeMap::new();
    for (name, pool) in pools {
        for fam in Family::ALL {
            allowed.insert(
                (name.clone(), fam.tag()),
                blocks::allowed(&held, Some(&statics), pool, fam)?,
            );
        }
    }
    let mut problems = Vec::new();
    let mut listed: BTreeMap<(u8, u128), String> = BTreeMap::new();
    for entry in by_owner.iter().ctx("read ipam_by_owner")? {
        let (k, v) = entry.ctx("read ipam_by_owner")?;
        let key = k.value();
        let a = decode_allocation(key, v.value())?;
        if a.owner.key() != key {
            problems.push(format!("record under {key} names owner {}", a.owner));
        }
        for ip in a.ips() {
            let (fam, val) = to_key(ip);
            if let Some(other) = listed.insert((fam.tag(), val), key.to_string()) {
                problems.push(format!("{ip} is listed by both {other} and {key}"));
            }
            match by_ip.get((fam.tag(), val)).ctx("read ipam_by_ip")? {
                Some(h) if h.value() == key => {}
                Some(h) => problems.push(format!("{key} lists {ip}, by-IP says {}", h.value())),
                None => problems.push(format!("{key} lists {ip}, by-IP has no entry")),
            }
        }
    }
    for entry in by_ip.iter().ctx("read ipam_by_ip")? {
        let (k, v) = entry.ctx("read ipam_by_ip")?;
        let (tag, val) = k.value();
        let ip = Family::from_tag(tag).and_then(|f| from_key(f, val));
        if listed.get(&(tag, val)).map(String::as_str) != Some(v.value()) {
            problems.push(format!(
                "by-IP {ip:?} → {} is not listed by that owner's record",
                v.value()
            ));
        }
    }
    for entry in free.iter().ctx("read ipam_free")? {
        let (k, v) = entry.ctx("read ipam_free")?;
        let (pool, tag, start) = k.value();
        let end = v.value();
        if let Some(held) = by_ip
            .range((tag, start)..=(tag, end))
            .ctx("read ipam_by_ip")?
            .next()
        {
            let (hk, hv) = held.ctx("read ipam_by_ip")?;
            problems.push(format!(
                "free interval {start}..={end} of pool {pool} holds {:?} owned by {}",
                hk.value(),
                hv.value()
            ));
        }
        let inside = allowed
            .get(&(pool.to_string(), tag))
            .is_some_and(|set| set.iter().any(|iv| iv.start <= start && end <= iv.end));
        if !inside {
            problems.push(format!(
                "free interval {start}..={end} (family tag {tag}) is outside pool {pool}"
            ));
        }
    }
    Ok(problems)
}
