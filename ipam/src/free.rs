//! The free-interval map of each pool: which allocatable addresses nobody
//! holds, as (pool, family, first) → last in an ordered table.
//!
//! Every operation is a constant number of B-tree lookups, so finding the
//! next free address costs O(log n) whatever the number of allocations. The
//! invariant is: free ∪ allocated-in-pool = allocatable(pool), disjoint.
//! Addresses outside the pool's allocatable set (orphans after a pool
//! change) are never in the map, so they are never handed out.

use redb::{ReadableTable, Table};

use crate::address::Family;
use crate::error::{IpamError, StoreContext};
use crate::pool::{Interval, Pool};

/// The free-interval table, open in a write transaction.
pub(crate) type FreeTable<'t> = Table<'t, (&'static str, u8, u128), u128>;

/// The free interval of `pool`/`family` that contains `value`, if any.
fn containing(
    free: &FreeTable<'_>,
    pool: &str,
    fam: Family,
    value: u128,
) -> Result<Option<Interval>, IpamError> {
    let tag = fam.tag();
    let mut range = free
        .range((pool, tag, 0u128)..=(pool, tag, value))
        .ctx("read ipam_free")?;
    match range.next_back() {
        Some(entry) => {
            let (k, v) = entry.ctx("read ipam_free")?;
            let iv = Interval {
                start: k.value().2,
                end: v.value(),
            };
            Ok(iv.contains(value).then_some(iv))
        }
        None => Ok(None),
    }
}

/// First free interval of `pool`/`family` starting at or after `value`.
fn first_from(
    free: &FreeTable<'_>,
    pool: &str,
    fam: Family,
    value: u128,
) -> Result<Option<Interval>, IpamError> {
    let tag = fam.tag();
    let mut range = free
        .range((pool, tag, value)..=(pool, tag, u128::MAX))
        .ctx("read ipam_free")?;
    match range.next() {
        Some(entry) => {
            let (k, v) = entry.ctx("read ipam_free")?;
            Ok(Some(Interval {
                start: k.value().2,
                end: v.value(),
            }))
        }
        None => Ok(None),
    }
}

/// Removes `value` from the free interval `iv` that contains it.
fn split(
    free: &mut FreeTable<'_>,
    pool: &str,
    fam: Family,
    iv: Interval,
    value: u128,
) -> Result<(), IpamError> {
    let tag = fam.tag();
    free.remove((pool, tag, iv.start)).ctx("write ipam_free")?;
    if iv.start < value {
        free.insert((pool, tag, iv.start), value - 1)
            .ctx("write ipam_free")?;
    }
    if value < iv.end {
        free.insert((pool, tag, value + 1), iv.end)
            .ctx("write ipam_free")?;
    }
    Ok(())
}

/// Takes the first free address after `after` (the pool's cursor), wrapping
/// around to the lowest one; `None` when the pool has none left.
pub(crate) fn take_next(
    free: &mut FreeTable<'_>,
    pool: &str,
    fam: Family,
    after: Option<u128>,
) -> Result<Option<u128>, IpamError> {
    let start = after.and_then(|c| c.checked_add(1)).unwrap_or(0);
    let found = match containing(free, pool, fam, start)? {
        Some(iv) => Some((iv, start)),
        None => match first_from(free, pool, fam, start)? {
            Some(iv) => Some((iv, iv.start)),
            None => first_from(free, pool, fam, 0)?.map(|iv| (iv, iv.start)),
        },
    };
    match found {
        Some((iv, value)) => {
            split(free, pool, fam, iv, value)?;
            Ok(Some(value))
        }
        None => Ok(None),
    }
}

/// Takes `value` if it is free; `false` if it is not in the map.
pub(crate) fn take_exact(
    free: &mut FreeTable<'_>,
    pool: &str,
    fam: Family,
    value: u128,
) -> Result<bool, IpamError> {
    match containing(free, pool, fam, value)? {
        Some(iv) => {
            split(free, pool, fam, iv, value)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Returns `value` to the map, merging with its neighbours.
pub(crate) fn give_back(
    free: &mut FreeTable<'_>,
    pool: &str,
    fam: Family,
    value: u128,
) -> Result<(), IpamError> {
    if containing(free, pool, fam, value)?.is_some() {
        return Err(IpamError::Inconsistent {
            detail: format!("address value {value} of pool {pool:?} released but already free"),
        });
    }
    merge_in(free, pool, fam, value, value)
}

/// Returns the whole interval `start..=end` to the map, merging with its
/// neighbours; an overlap with a free interval is an inconsistency.
pub(crate) fn give_back_interval(
    free: &mut FreeTable<'_>,
    pool: &str,
    fam: Family,
    start: u128,
    end: u128,
) -> Result<(), IpamError> {
    let overlapping = containing(free, pool, fam, start)?.is_some()
        || first_from(free, pool, fam, start)?.is_some_and(|next| next.start <= end);
    if overlapping {
        return Err(IpamError::Inconsistent {
            detail: format!("values {start}..={end} of pool {pool:?} given back but partly free"),
        });
    }
    merge_in(free, pool, fam, start, end)
}

/// Inserts `start..=end`, known to overlap no free interval, as one
/// interval with the free intervals that touch it on either side: the map
/// never holds two adjacent intervals.
fn merge_in(
    free: &mut FreeTable<'_>,
    pool: &str,
    fam: Family,
    start: u128,
    end: u128,
) -> Result<(), IpamError> {
    let tag = fam.tag();
    let mut first = start;
    let mut last = end;
    if start > 0
        && let Some(prev) = containing(free, pool, fam, start - 1)?
    {
        free.remove((pool, tag, prev.start))
            .ctx("write ipam_free")?;
        first = prev.start;
    }
    if let Some(next) = end.checked_add(1)
        && let Some(succ_end) = free.remove((pool, tag, next)).ctx("write ipam_free")?
    {
        last = succ_end.value();
    }
    free.insert((pool, tag, first), last)
        .ctx("write ipam_free")?;
    Ok(())
}

/// Removes `start..=end` from the map, keeping the parts of free intervals
/// that reach outside it.
pub(crate) fn cut(
    free: &mut FreeTable<'_>,
    pool: &str,
    fam: Family,
    start: u128,
    end: u128,
) -> Result<(), IpamError> {
    let tag = fam.tag();
    let mut hit = Vec::new();
    if let Some(iv) = containing(free, pool, fam, start)? {
        hit.push(iv);
    }
    for entry in free
        .range((pool, tag, start)..=(pool, tag, end))
        .ctx("read ipam_free")?
    {
        let (k, v) = entry.ctx("read ipam_free")?;
        hit.push(Interval {
            start: k.value().2,
            end: v.value(),
        });
    }
    hit.dedup();
    for iv in hit {
        free.remove((pool, tag, iv.start)).ctx("write ipam_free")?;
        if iv.start < start {
            free.insert((pool, tag, iv.start), start - 1)
                .ctx("write ipam_free")?;
        }
        if iv.end > end {
            free.insert((pool, tag, end + 1), iv.end)
                .ctx("write ipam_free")?;
        }
    }
    Ok(())
}

/// Drops every free interval of `pool`.
pub(crate) fn clear(free: &mut FreeTable<'_>, pool: &str) -> Result<(), IpamError> {
    free.retain_in((pool, 0u8, 0u128)..=(pool, u8::MAX, u128::MAX), |_, _| {
        false
    })
    .ctx("clear ipam_free")
}

/// Recomputes the map of `pool` from the addresses it may hand out on this
/// node (`allowed`: its allocatable set, for a cluster pool narrowed to the
/// blocks this node holds) and the addresses held in `by_ip`: used when a
/// pool is new or its definition changed.
pub(crate) fn rebuild(
    free: &mut FreeTable<'_>,
    by_ip: &impl ReadableTable<(u8, u128), &'static str>,
    pool: &Pool,
    allowed: impl Fn(Family) -> Vec<Interval>,
) -> Result<(), IpamError> {
    clear(free, pool.name())?;
    for fam in Family::ALL {
        let tag = fam.tag();
        for iv in &allowed(fam) {
            let mut next = Some(iv.start);
            for entry in by_ip
                .range((tag, iv.start)..=(tag, iv.end))
                .ctx("read ipam_by_ip")?
            {
                let (k, _) = entry.ctx("read ipam_by_ip")?;
                let held = k.value().1;
                if let Some(n) = next
                    && n < held
                {
                    free.insert((pool.name(), tag, n), held - 1)
                        .ctx("write ipam_free")?;
                }
                next = held.checked_add(1);
            }
            if let Some(n) = next
                && n <= iv.end
            {
                free.insert((pool.name(), tag, n), iv.end)
                    .ctx("write ipam_free")?;
            }
        }
    }
    Ok(())
}

/// Number of free addresses of `pool`/`family` (reads every interval; for
/// status output, not the allocation path).
pub(crate) fn count(
    free: &impl ReadableTable<(&'static str, u8, u128), u128>,
    pool: &str,
    fam: Family,
) -> Result<u128, IpamError> {
    let tag = fam.tag();
    let mut total = 0u128;
    for entry in free
        .range((pool, tag, 0u128)..=(pool, tag, u128::MAX))
        .ctx("read ipam_free")?
    {
        let (k, v) = entry.ctx("read ipam_free")?;
        let iv = Interval {
            start: k.value().2,
            end: v.value(),
        };
        total = total.saturating_add(iv.len());
    }
    Ok(total)
}
