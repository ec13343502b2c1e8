//! When a node leases another block of a cluster pool, and which of its
//! empty blocks it gives back: pure decisions over counts, so the driver's
//! leaser only carries them out.

use ipnetwork::IpNetwork;

/// Whether one family of a pool needs another block: fewer free addresses
/// in the node's blocks than the watermark.
pub fn wants_block(free: u128, min_free: u128) -> bool {
    free < min_free
}

/// A held block of one family as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockState {
    /// The block.
    pub cidr: IpNetwork,
    /// Addresses held in it.
    pub used: u128,
    /// Addresses it can still hand out.
    pub free: u128,
    /// Whether the pool's definition still covers it.
    pub in_pool: bool,
    /// Whether it has been empty for the whole grace period.
    pub empty_long_enough: bool,
}

/// Blocks to give back, highest address first: an empty block the pool no
/// longer covers at once; an empty block inside the pool once it has been
/// empty for the grace period and only while what stays free is still at or
/// above the watermark (otherwise the next round would lease again).
pub fn blocks_to_return(blocks: &[BlockState], min_free: u128) -> Vec<IpNetwork> {
    let mut free: u128 = blocks
        .iter()
        .filter(|b| b.in_pool)
        .fold(0, |acc, b| acc.saturating_add(b.free));
    let mut empty: Vec<&BlockState> = blocks.iter().filter(|b| b.used == 0).collect();
    empty.sort_by_key(|b| std::cmp::Reverse(b.cidr.ip()));
    let mut out = Vec::new();
    for b in empty {
        if !b.in_pool {
            out.push(b.cidr);
        } else if b.empty_long_enough && free.saturating_sub(b.free) >= min_free {
            free -= b.free;
            out.push(b.cidr);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cidr: &str, used: u128, in_pool: bool, long: bool) -> BlockState {
        BlockState {
            cidr: cidr.parse().unwrap(),
            used,
            free: if in_pool { 64 - used } else { 0 },
            in_pool,
            empty_long_enough: long,
        }
    }

    #[test]
    fn a_node_leases_below_the_watermark() {
        assert!(wants_block(15, 16));
        assert!(!wants_block(16, 16));
        assert!(wants_block(0, 1));
    }

    #[test]
    fn empty_blocks_go_back_after_the_grace_period_keeping_the_watermark() {
        let blocks = [
            block("10.0.0.0/26", 10, true, false),
            block("10.0.0.64/26", 0, true, true),
            block("10.0.0.128/26", 0, true, true),
            block("10.0.0.192/26", 0, true, false),
        ];
        // 54 + 3 × 64 = 246 free; watermark 100: both old empty blocks may
        // go (246 - 64 = 182 ≥ 100, then 118 ≥ 100).
        assert_eq!(
            blocks_to_return(&blocks, 100),
            [
                "10.0.0.128/26".parse::<IpNetwork>().unwrap(),
                "10.0.0.64/26".parse().unwrap()
            ]
        );
        assert_eq!(
            blocks_to_return(&blocks, 150),
            ["10.0.0.128/26".parse::<IpNetwork>().unwrap()],
            "the second would leave 114 < 150"
        );
    }

    #[test]
    fn an_empty_block_outside_a_shrunk_pool_goes_at_once_a_used_one_stays() {
        let blocks = [
            block("10.0.1.0/26", 0, false, false),
            block("10.0.1.64/26", 3, false, false),
            block("10.0.0.0/26", 0, true, false),
        ];
        assert_eq!(
            blocks_to_return(&blocks, 16),
            ["10.0.1.0/26".parse::<IpNetwork>().unwrap()]
        );
    }
}
