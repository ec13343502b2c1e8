//! A validated pool: exactly which addresses may be handed out.
//!
//! The allocatable set of a family is kept as sorted, disjoint, inclusive
//! intervals: the subnets (narrowed to their ranges) minus network and
//! broadcast, gateways and excludes. Everything else in the crate asks this
//! type, so the rule "never allocate the gateway" lives in one place.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::address::{Family, to_key};
use crate::config::{PoolConfig, PoolScope, SubnetConfig};

/// Inclusive interval of address values of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    /// First address value.
    pub start: u128,
    /// Last address value (inclusive).
    pub end: u128,
}

impl Interval {
    /// Number of addresses, saturating at `u128::MAX`.
    pub fn len(&self) -> u128 {
        (self.end - self.start).saturating_add(1)
    }

    /// Never true: an interval holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `value` lies inside.
    pub fn contains(&self, value: u128) -> bool {
        self.start <= value && value <= self.end
    }
}

/// Interval covered by a CIDR.
pub(crate) fn cidr_interval(net: &IpNetwork) -> (Family, Interval) {
    let (family, start) = to_key(net.network());
    let host_bits = match net {
        IpNetwork::V4(n) => 32 - u32::from(n.prefix()),
        IpNetwork::V6(n) => 128 - u32::from(n.prefix()),
    };
    let span = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    (
        family,
        Interval {
            start,
            end: start.saturating_add(span),
        },
    )
}

/// Removes `cut` from sorted disjoint `set`.
pub(crate) fn subtract(set: &[Interval], cut: Interval) -> Vec<Interval> {
    let mut out = Vec::with_capacity(set.len() + 1);
    for iv in set {
        if iv.end < cut.start || iv.start > cut.end {
            out.push(*iv);
            continue;
        }
        if iv.start < cut.start {
            out.push(Interval {
                start: iv.start,
                end: cut.start - 1,
            });
        }
        if iv.end > cut.end {
            out.push(Interval {
                start: cut.end + 1,
                end: iv.end,
            });
        }
    }
    out
}

/// Sorts and merges overlapping or adjacent intervals.
pub(crate) fn normalize(mut set: Vec<Interval>) -> Vec<Interval> {
    set.sort();
    let mut out: Vec<Interval> = Vec::with_capacity(set.len());
    for iv in set {
        match out.last_mut() {
            Some(last) if last.end == u128::MAX || iv.start <= last.end + 1 => {
                last.end = last.end.max(iv.end);
            }
            _ => out.push(iv),
        }
    }
    out
}

/// Addresses of a subnet that are not host addresses: the IPv4 network and
/// broadcast addresses (for prefixes up to /30) and the IPv6 subnet-router
/// anycast address (for prefixes up to /126).
pub(crate) fn non_host_addresses(net: &IpNetwork) -> Vec<u128> {
    let (_, iv) = cidr_interval(net);
    match net {
        IpNetwork::V4(n) if n.prefix() <= 30 => vec![iv.start, iv.end],
        IpNetwork::V6(n) if n.prefix() <= 126 => vec![iv.start],
        _ => vec![],
    }
}

/// Allocatable interval of one subnet before gateways and excludes.
pub(crate) fn subnet_range(subnet: &SubnetConfig) -> Vec<Interval> {
    let (_, full) = cidr_interval(&subnet.subnet);
    let start = subnet.range_start.map_or(full.start, |ip| to_key(ip).1);
    let end = subnet.range_end.map_or(full.end, |ip| to_key(ip).1);
    if start > end {
        return vec![];
    }
    let mut set = vec![Interval { start, end }];
    for value in non_host_addresses(&subnet.subnet) {
        set = subtract(
            &set,
            Interval {
                start: value,
                end: value,
            },
        );
    }
    set
}

/// A pool whose definition passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    config: PoolConfig,
    v4: Vec<Interval>,
    v6: Vec<Interval>,
}

impl Pool {
    /// Computes the allocatable sets; callers validate first
    /// (see [`crate::validate_pools`]), otherwise sets may come out empty.
    pub(crate) fn from_config(config: PoolConfig) -> Pool {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for subnet in &config.subnets {
            let set = subnet_range(subnet);
            match Family::of(subnet.subnet.ip()) {
                Family::V4 => v4.extend(set),
                Family::V6 => v6.extend(set),
            }
        }
        let mut v4 = normalize(v4);
        let mut v6 = normalize(v6);
        let cuts = config
            .subnets
            .iter()
            .filter_map(|s| s.gateway)
            .map(|gw| {
                let (fam, v) = to_key(gw);
                (fam, Interval { start: v, end: v })
            })
            .chain(config.exclude.iter().map(cidr_interval));
        for (fam, cut) in cuts {
            match fam {
                Family::V4 => v4 = subtract(&v4, cut),
                Family::V6 => v6 = subtract(&v6, cut),
            }
        }
        Pool { config, v4, v6 }
    }

    /// Pool name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The definition this pool was built from.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Whether nodes lease this pool in blocks (`scope: cluster`).
    pub fn is_cluster(&self) -> bool {
        self.config.scope == Some(PoolScope::Cluster)
    }

    /// Prefix length of `family`'s blocks; `None` for a node pool.
    pub fn block_prefix(&self, family: Family) -> Option<u8> {
        if !self.is_cluster() {
            return None;
        }
        let sizes = self.config.block_size?;
        match family {
            Family::V4 => sizes.ipv4,
            Family::V6 => sizes.ipv6,
        }
    }

    /// Families this pool hands out, one address each per allocation.
    pub fn families(&self) -> Vec<Family> {
        Family::ALL
            .into_iter()
            .filter(|f| {
                self.config
                    .subnets
                    .iter()
                    .any(|s| Family::of(s.subnet.ip()) == *f)
            })
            .collect()
    }

    /// Allocatable addresses of `family` as sorted disjoint intervals.
    pub fn allocatable(&self, family: Family) -> &[Interval] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// Number of allocatable addresses of `family` (saturating).
    pub fn size(&self, family: Family) -> u128 {
        self.allocatable(family)
            .iter()
            .fold(0u128, |acc, iv| acc.saturating_add(iv.len()))
    }

    /// Whether the allocator may hand out `ip` from this pool.
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        let (fam, v) = to_key(ip);
        let set = self.allocatable(fam);
        let idx = set.partition_point(|iv| iv.end < v);
        set.get(idx).is_some_and(|iv| iv.contains(v))
    }

    /// The subnet of this pool that contains `ip`.
    pub fn subnet_of(&self, ip: IpAddr) -> Option<&SubnetConfig> {
        self.config.subnets.iter().find(|s| s.subnet.contains(ip))
    }

    /// Why `ip` may never be assigned even statically, if it is one of the
    /// addresses that belong to the network itself.
    pub fn reserved_reason(&self, ip: IpAddr) -> Option<&'static str> {
        let subnet = self.subnet_of(ip)?;
        if subnet.gateway == Some(ip) {
            return Some("the gateway");
        }
        let (_, v) = to_key(ip);
        let non_host = non_host_addresses(&subnet.subnet);
        if non_host.first() == Some(&v) {
            return Some("the network address");
        }
        if non_host.len() == 2 && non_host.last() == Some(&v) {
            return Some("the broadcast address");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(json: &str) -> Pool {
        Pool::from_config(serde_json::from_str(json).unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn network_broadcast_gateway_and_excludes_are_never_allocatable() {
        let p = pool(
            r#"{"name":"p","scope":"node","subnets":[{"subnet":"10.0.0.0/29","gateway":"10.0.0.1"}],
                "exclude":["10.0.0.4"]}"#,
        );
        let allocatable: Vec<bool> = (0..8)
            .map(|i| p.is_allocatable(ip(&format!("10.0.0.{i}"))))
            .collect();
        assert_eq!(
            allocatable,
            [false, false, true, true, false, true, true, false]
        );
        assert_eq!(p.size(Family::V4), 4);
        assert_eq!(
            p.reserved_reason(ip("10.0.0.7")),
            Some("the broadcast address")
        );
        assert_eq!(p.reserved_reason(ip("10.0.0.1")), Some("the gateway"));
        assert_eq!(
            p.reserved_reason(ip("10.0.0.4")),
            None,
            "excluded is not reserved"
        );
    }

    #[test]
    fn range_narrows_the_subnet_and_excluded_cidr_splits_it() {
        let p = pool(
            r#"{"name":"p","scope":"node","subnets":[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.10","rangeEnd":"10.0.0.40"}],
                "exclude":["10.0.0.16/29"]}"#,
        );
        let v = |s: &str| to_key(ip(s)).1;
        assert_eq!(
            p.allocatable(Family::V4),
            [
                Interval {
                    start: v("10.0.0.10"),
                    end: v("10.0.0.15")
                },
                Interval {
                    start: v("10.0.0.24"),
                    end: v("10.0.0.40")
                },
            ]
        );
    }

    #[test]
    fn dual_stack_pool_has_both_families_and_huge_v6_size() {
        let p = pool(
            r#"{"name":"p","scope":"node","subnets":[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]}"#,
        );
        assert_eq!(p.families(), [Family::V4, Family::V6]);
        assert_eq!(p.size(Family::V4), 254);
        assert_eq!(p.size(Family::V6), (1u128 << 64) - 1);
        assert!(!p.is_allocatable(ip("fd00::")));
        assert!(p.is_allocatable(ip("fd00::1")));
    }

    #[test]
    fn subtract_and_normalize_handle_edges() {
        let set = vec![Interval { start: 0, end: 10 }];
        assert_eq!(
            subtract(&set, Interval { start: 0, end: 0 }),
            [Interval { start: 1, end: 10 }]
        );
        assert_eq!(subtract(&set, Interval { start: 0, end: 10 }), []);
        assert_eq!(
            normalize(vec![
                Interval { start: 5, end: 9 },
                Interval { start: 0, end: 4 }
            ]),
            [Interval { start: 0, end: 9 }]
        );
    }
}
