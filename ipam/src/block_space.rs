//! The blocks a cluster-wide pool is split into, their lease names, and the
//! order a node tries them in.
//!
//! Pure arithmetic over a validated [`Pool`]: block `i` of a family is the
//! `i`-th aligned prefix of the block length inside the pool's subnets of
//! that family, in address order. Nothing is enumerated up front (an IPv6
//! /64 in /120 blocks has 2^56 of them); callers walk lazily from a start.

use std::collections::BTreeSet;

use ipnetwork::IpNetwork;

use crate::address::{Family, from_key, to_key};
use crate::pool::{Pool, cidr_interval};

/// The aligned blocks of one family of a cluster pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpace {
    family: Family,
    prefix: u8,
    /// Per subnet in address order: first block's start and block count.
    runs: Vec<(u128, u128)>,
    len: u128,
}

fn host_bits(family: Family) -> u8 {
    match family {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

impl BlockSpace {
    /// The blocks of `family` of `pool`; `None` for a node pool or a family
    /// the pool does not have.
    pub fn of(pool: &Pool, family: Family) -> Option<BlockSpace> {
        let prefix = pool.block_prefix(family)?;
        let mut subnets: Vec<IpNetwork> = pool
            .config()
            .subnets
            .iter()
            .map(|s| s.subnet)
            .filter(|s| Family::of(s.ip()) == family)
            .collect();
        if subnets.is_empty() {
            return None;
        }
        subnets.sort_by_key(|s| to_key(s.ip()).1);
        let runs: Vec<(u128, u128)> = subnets
            .iter()
            .map(|s| {
                let (_, iv) = cidr_interval(s);
                let count = 1u128
                    .checked_shl(u32::from(prefix.saturating_sub(s.prefix())))
                    .unwrap_or(u128::MAX);
                (iv.start, count)
            })
            .collect();
        let len = runs.iter().fold(0u128, |acc, r| acc.saturating_add(r.1));
        Some(BlockSpace {
            family,
            prefix,
            runs,
            len,
        })
    }

    /// Family of these blocks.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Prefix length of every block.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Number of blocks (saturating).
    pub fn len(&self) -> u128 {
        self.len
    }

    /// Never true: a validated cluster pool has at least one block per family.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn block_span(&self) -> u128 {
        1u128
            .checked_shl(u32::from(host_bits(self.family) - self.prefix))
            .unwrap_or(0)
            .wrapping_sub(1)
    }

    /// Block number `index`, or `None` past the end.
    pub fn block(&self, index: u128) -> Option<IpNetwork> {
        let mut rest = index;
        for (start, count) in &self.runs {
            if rest < *count {
                let first =
                    start.checked_add(rest.checked_mul(self.block_span().checked_add(1)?)?)?;
                let ip = from_key(self.family, first)?;
                return IpNetwork::new(ip, self.prefix).ok();
            }
            rest -= count;
        }
        None
    }

    /// Whether `block` is one of these blocks (aligned, right length,
    /// inside a subnet of the pool).
    pub fn contains(&self, block: &IpNetwork) -> bool {
        if block.prefix() != self.prefix || Family::of(block.ip()) != self.family {
            return false;
        }
        let (_, iv) = cidr_interval(block);
        iv.start == to_key(block.ip()).1
            && self.runs.iter().any(|(start, count)| {
                let span = self.block_span().saturating_add(1);
                iv.start >= *start && (iv.start - start) / span < *count
            })
    }

    /// Whether `block` holds at least one address the pool may hand out
    /// (ranges and excludes can leave whole blocks empty: never leased).
    pub fn usable(pool: &Pool, block: &IpNetwork) -> bool {
        let (family, iv) = cidr_interval(block);
        let set = pool.allocatable(family);
        let idx = set.partition_point(|a| a.end < iv.start);
        set.get(idx).is_some_and(|a| a.start <= iv.end)
    }

    /// Usable blocks not in `skip`, starting at block `start` and wrapping
    /// around once.
    pub fn candidates<'a>(
        &'a self,
        pool: &'a Pool,
        start: u128,
        skip: &'a BTreeSet<IpNetwork>,
    ) -> impl Iterator<Item = IpNetwork> + 'a {
        let len = self.len;
        let start = if len == 0 { 0 } else { start % len };
        (0..len)
            .map(move |i| {
                if i < len - start {
                    start + i
                } else {
                    i - (len - start)
                }
            })
            .filter_map(|i| self.block(i))
            .filter(move |b| !skip.contains(b) && Self::usable(pool, b))
    }
}

/// Name of the API object that leases `block` of `pool`: pool name, then the
/// block with `.` and `:` as `-`, then the prefix length, e.g.
/// `fronthaul-10-20-0-64-26` or `fronthaul-fd00-1--40-120`. Deterministic,
/// so two nodes wanting the same block create the same name and the API
/// server's AlreadyExists decides between them.
pub fn lease_name(pool: &str, block: &IpNetwork) -> String {
    let ip = block.ip().to_string().replace(['.', ':'], "-");
    format!("{pool}-{ip}-{}", block.prefix())
}

/// Where `node` starts looking in a space of `len` blocks: a stable hash
/// (FNV-1a) of its name, so nodes spread over the pool instead of all
/// racing for block 0.
pub fn spread_start(node: &str, len: u128) -> u128 {
    if len == 0 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    u128::from(hash) % len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::pools;
    use crate::validate::validate_pools;

    fn pool(json: &str) -> Pool {
        validate_pools(&pools(json)).unwrap().remove(0)
    }

    const FRONTHAUL: &str = r#"[{"name":"fronthaul","scope":"cluster","blockSize":{"ipv4":26,"ipv6":120},
        "subnets":[{"subnet":"10.20.1.0/24"},{"subnet":"10.20.0.0/24","gateway":"10.20.0.1"},{"subnet":"fd00:1::/64"}]}]"#;

    #[test]
    fn blocks_are_aligned_prefixes_in_address_order_across_subnets() {
        let p = pool(FRONTHAUL);
        let v4 = BlockSpace::of(&p, Family::V4).unwrap();
        assert_eq!(v4.len(), 8);
        let names: Vec<String> = (0..9)
            .filter_map(|i| v4.block(i))
            .map(|b| b.to_string())
            .collect();
        assert_eq!(names[0], "10.20.0.0/26");
        assert_eq!(names[3], "10.20.0.192/26");
        assert_eq!(names[4], "10.20.1.0/26");
        assert_eq!(names.len(), 8, "no block past the end");
        assert!(v4.contains(&"10.20.1.64/26".parse().unwrap()));
        assert!(!v4.contains(&"10.20.1.32/26".parse().unwrap()), "unaligned");
        assert!(!v4.contains(&"10.20.2.0/26".parse().unwrap()), "outside");
        let v6 = BlockSpace::of(&p, Family::V6).unwrap();
        assert_eq!(v6.len(), 1 << 56);
        assert_eq!(v6.block(1).unwrap().to_string(), "fd00:1::100/120");
    }

    #[test]
    fn lease_names_are_deterministic_dns_names() {
        assert_eq!(
            lease_name("fronthaul", &"10.20.0.64/26".parse().unwrap()),
            "fronthaul-10-20-0-64-26"
        );
        assert_eq!(
            lease_name("fronthaul", &"fd00:1::40/120".parse().unwrap()),
            "fronthaul-fd00-1--40-120"
        );
    }

    #[test]
    fn candidates_wrap_skip_taken_and_blocks_without_allocatable_addresses() {
        let p = pool(
            r#"[{"name":"p","scope":"cluster","blockSize":{"ipv4":26},
                "subnets":[{"subnet":"10.0.0.0/24"}],"exclude":["10.0.0.64/26"]}]"#,
        );
        let space = BlockSpace::of(&p, Family::V4).unwrap();
        let taken: BTreeSet<IpNetwork> = ["10.0.0.192/26".parse().unwrap()].into();
        let order: Vec<String> = space
            .candidates(&p, 3, &taken)
            .map(|b| b.to_string())
            .collect();
        assert_eq!(order, ["10.0.0.0/26", "10.0.0.128/26"]);
    }

    #[test]
    fn nodes_start_at_different_blocks() {
        let starts: BTreeSet<u128> = (0..50)
            .map(|n| spread_start(&format!("worker-{n}"), 1024))
            .collect();
        assert!(starts.len() > 40, "{starts:?}");
        assert_eq!(
            spread_start("worker-1", 1024),
            spread_start("worker-1", 1024)
        );
        assert_eq!(spread_start("x", 0), 0);
    }
}
