//! Checks pool definitions before anything is allocated from them, so a
//! typo in the node config is an error at start-up instead of a wrong
//! address in a pod.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use thiserror::Error;

use crate::address::Family;
use crate::config::{PoolConfig, PoolScope};
use crate::pool::{Pool, cidr_interval};

/// A pool definition that cannot be used; names the pool and the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("IPAM pool {pool:?}, field {field}: {reason}")]
pub struct PoolConfigError {
    /// Pool name as written in the config.
    pub pool: String,
    /// Path of the offending field, e.g. `subnets[0].gateway`.
    pub field: String,
    /// What is wrong and what was expected.
    pub reason: String,
}

fn err(pool: &str, field: impl Into<String>, reason: impl Into<String>) -> PoolConfigError {
    PoolConfigError {
        pool: pool.to_string(),
        field: field.into(),
        reason: reason.into(),
    }
}

fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    let (fa, ia) = cidr_interval(a);
    let (fb, ib) = cidr_interval(b);
    fa == fb && ia.start <= ib.end && ib.start <= ia.end
}

fn check_name(name: &str) -> Result<(), PoolConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(err(
            name,
            "name",
            "expected a DNS label: 1-63 lowercase letters, digits or '-'",
        ))
    }
}

fn check_in_subnet(
    pool: &str,
    field: String,
    subnet: &IpNetwork,
    ip: IpAddr,
) -> Result<(), PoolConfigError> {
    if subnet.contains(ip) {
        Ok(())
    } else {
        Err(err(pool, field, format!("{ip} is outside subnet {subnet}")))
    }
}

/// What a pool must say about its scope, word for word in every error, so
/// the reader learns both choices from whichever mistake they made.
const SCOPE_CHOICES: &str = "say `scope: node` (each node has its own segment; every node may \
     hand out the same addresses) or `scope: cluster` with `blockSize: {ipv4: N, ipv6: M}` \
     (the nodes share a segment; each node leases blocks of the pool through the API)";

/// Checks `scope` and `blockSize` against each other and the subnets.
fn check_scope(config: &PoolConfig) -> Result<(), PoolConfigError> {
    let name = config.name.as_str();
    let block_size = match (config.scope, config.block_size) {
        (None, _) => return Err(err(name, "scope", format!("missing: {SCOPE_CHOICES}"))),
        (Some(PoolScope::Node), None) => return Ok(()),
        (Some(PoolScope::Node), Some(_)) => {
            return Err(err(
                name,
                "blockSize",
                format!("only a cluster pool is leased in blocks: {SCOPE_CHOICES}"),
            ));
        }
        (Some(PoolScope::Cluster), None) => {
            return Err(err(
                name,
                "blockSize",
                format!("missing for `scope: cluster`: {SCOPE_CHOICES}"),
            ));
        }
        (Some(PoolScope::Cluster), Some(b)) => b,
    };
    for (family, label, given, max) in [
        (Family::V4, "blockSize.ipv4", block_size.ipv4, 32u8),
        (Family::V6, "blockSize.ipv6", block_size.ipv6, 128u8),
    ] {
        let subnets: Vec<&IpNetwork> = config
            .subnets
            .iter()
            .map(|s| &s.subnet)
            .filter(|s| Family::of(s.ip()) == family)
            .collect();
        match (given, subnets.iter().map(|s| s.prefix()).max()) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(err(
                    name,
                    label,
                    format!("the pool has no {family} subnet; remove it"),
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    name,
                    label,
                    format!(
                        "missing: the pool has {family} subnets, e.g. {}",
                        subnets[0]
                    ),
                ));
            }
            (Some(prefix), Some(longest)) => {
                if prefix > max || prefix < longest {
                    return Err(err(
                        name,
                        label,
                        format!(
                            "{prefix} is not a block of every {family} subnet: expected a prefix \
                             length from {longest} (the longest subnet prefix) to {max}"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Validates one pool on its own.
fn validate_pool(config: &PoolConfig) -> Result<Pool, PoolConfigError> {
    let name = config.name.as_str();
    check_name(name)?;
    if config.subnets.is_empty() {
        return Err(err(name, "subnets", "at least one subnet is required"));
    }
    check_scope(config)?;
    for (i, s) in config.subnets.iter().enumerate() {
        let field = |f: &str| format!("subnets[{i}].{f}");
        if s.subnet.ip() != s.subnet.network() {
            return Err(err(
                name,
                field("subnet"),
                format!(
                    "{} has host bits set; expected the network address {}/{}",
                    s.subnet,
                    s.subnet.network(),
                    s.subnet.prefix()
                ),
            ));
        }
        for (label, value) in [
            ("rangeStart", s.range_start),
            ("rangeEnd", s.range_end),
            ("gateway", s.gateway),
        ] {
            if let Some(ip) = value {
                check_in_subnet(name, field(label), &s.subnet, ip)?;
            }
        }
        if let (Some(a), Some(b)) = (s.range_start, s.range_end)
            && a > b
        {
            return Err(err(
                name,
                field("rangeEnd"),
                format!("range is empty: rangeEnd {b} is before rangeStart {a}"),
            ));
        }
        if crate::pool::subnet_range(s).is_empty() {
            return Err(err(
                name,
                field("subnet"),
                format!("{} has no host address in its range", s.subnet),
            ));
        }
        for (j, other) in config.subnets.iter().enumerate().skip(i + 1) {
            if overlaps(&s.subnet, &other.subnet) {
                return Err(err(
                    name,
                    format!("subnets[{j}].subnet"),
                    format!("{} overlaps subnets[{i}] {}", other.subnet, s.subnet),
                ));
            }
        }
    }
    for (i, ex) in config.exclude.iter().enumerate() {
        if !config.subnets.iter().any(|s| overlaps(&s.subnet, ex)) {
            return Err(err(
                name,
                format!("exclude[{i}]"),
                format!("{ex} is in none of the pool's subnets"),
            ));
        }
    }
    for (i, r) in config.routes.iter().enumerate() {
        if let Some(gw) = r.gw
            && Family::of(gw) != Family::of(r.dst.ip())
        {
            return Err(err(
                name,
                format!("routes[{i}].gw"),
                format!("{gw} is not of the same family as dst {}", r.dst),
            ));
        }
    }
    let pool = Pool::from_config(config.clone());
    for family in pool.families() {
        if pool.size(family) == 0 {
            return Err(err(
                name,
                "subnets",
                format!("no allocatable {family} address is left after gateway and excludes"),
            ));
        }
    }
    Ok(pool)
}

/// Validates all pools of a node: each on its own, names unique, and no
/// subnet shared between two pools (an address must belong to one pool).
pub fn validate_pools(configs: &[PoolConfig]) -> Result<Vec<Pool>, PoolConfigError> {
    let mut pools: Vec<Pool> = Vec::with_capacity(configs.len());
    for config in configs {
        let pool = validate_pool(config)?;
        for earlier in &pools {
            if earlier.name() == pool.name() {
                return Err(err(pool.name(), "name", "defined twice"));
            }
            for (i, s) in config.subnets.iter().enumerate() {
                if let Some(o) = earlier
                    .config()
                    .subnets
                    .iter()
                    .find(|o| overlaps(&o.subnet, &s.subnet))
                {
                    return Err(err(
                        pool.name(),
                        format!("subnets[{i}].subnet"),
                        format!(
                            "{} overlaps subnet {} of pool {:?}",
                            s.subnet,
                            o.subnet,
                            earlier.name()
                        ),
                    ));
                }
            }
        }
        pools.push(pool);
    }
    Ok(pools)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(json: &str) -> Result<Vec<Pool>, PoolConfigError> {
        validate_pools(&serde_json::from_str::<Vec<PoolConfig>>(json).unwrap())
    }

    #[test]
    fn a_good_dual_stack_pool_passes() {
        let p = pools(
            r#"[{"name":"fronthaul","scope":"node","subnets":[{"subnet":"10.0.0.0/24","gateway":"10.0.0.1"},{"subnet":"fd00::/64"}]}]"#,
        )
        .unwrap();
        assert_eq!(p[0].name(), "fronthaul");
    }

    #[test]
    fn gateway_outside_subnet_names_pool_and_field() {
        let e =
            pools(r#"[{"name":"a","scope":"node","subnets":[{"subnet":"10.0.0.0/24","gateway":"10.0.1.1"}]}]"#)
                .unwrap_err();
        assert_eq!(
            (e.pool.as_str(), e.field.as_str()),
            ("a", "subnets[0].gateway")
        );
        assert!(e.to_string().contains("outside subnet 10.0.0.0/24"), "{e}");
    }

    #[test]
    fn overlapping_pools_are_rejected_naming_both() {
        let e = pools(
            r#"[{"name":"a","scope":"node","subnets":[{"subnet":"10.0.0.0/16"}]},
                {"name":"b","scope":"node","subnets":[{"subnet":"10.0.5.0/24"}]}]"#,
        )
        .unwrap_err();
        assert_eq!(e.pool, "b");
        assert!(e.reason.contains("pool \"a\""), "{e}");
    }

    #[test]
    fn empty_ranges_are_rejected() {
        let reversed = pools(
            r#"[{"name":"a","scope":"node","subnets":[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.9","rangeEnd":"10.0.0.5"}]}]"#,
        )
        .unwrap_err();
        assert_eq!(reversed.field, "subnets[0].rangeEnd");
        let all_excluded = pools(
            r#"[{"name":"a","scope":"node","subnets":[{"subnet":"10.0.0.0/30","gateway":"10.0.0.1"}],"exclude":["10.0.0.2"]}]"#,
        )
        .unwrap_err();
        assert_eq!(all_excluded.field, "subnets");
    }

    #[test]
    fn a_pool_without_scope_names_itself_and_both_choices() {
        let e = pools(r#"[{"name":"midhaul","subnets":[{"subnet":"10.0.0.0/24"}]}]"#).unwrap_err();
        assert_eq!((e.pool.as_str(), e.field.as_str()), ("midhaul", "scope"));
        let msg = e.to_string();
        assert!(
            msg.contains("scope: node")
                && msg.contains("scope: cluster")
                && msg.contains("blockSize"),
            "{msg}"
        );
    }

    #[test]
    fn block_size_belongs_to_cluster_pools_and_fits_every_subnet() {
        let cases = [
            (r#""scope":"cluster""#, "blockSize", "missing"),
            (
                r#""scope":"node","blockSize":{"ipv4":26}"#,
                "blockSize",
                "only a cluster pool",
            ),
            (
                r#""scope":"cluster","blockSize":{"ipv6":120}"#,
                "blockSize.ipv4",
                "missing",
            ),
            (
                r#""scope":"cluster","blockSize":{"ipv4":20}"#,
                "blockSize.ipv4",
                "from 24",
            ),
            (
                r#""scope":"cluster","blockSize":{"ipv4":33}"#,
                "blockSize.ipv4",
                "to 32",
            ),
            (
                r#""scope":"cluster","blockSize":{"ipv4":26,"ipv6":120}"#,
                "blockSize.ipv6",
                "no IPv6 subnet",
            ),
        ];
        for (scope, field, reason) in cases {
            let json =
                format!(r#"[{{"name":"p",{scope},"subnets":[{{"subnet":"10.0.0.0/24"}}]}}]"#);
            let e = pools(&json).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
            assert!(e.reason.contains(reason), "{json}: {e}");
        }
        let ok = pools(
            r#"[{"name":"p","scope":"cluster","blockSize":{"ipv4":26,"ipv6":120},
                 "subnets":[{"subnet":"10.0.0.0/16"},{"subnet":"fd00::/64"}]}]"#,
        )
        .unwrap();
        assert_eq!(ok[0].block_prefix(Family::V4), Some(26));
        assert_eq!(ok[0].block_prefix(Family::V6), Some(120));
    }

    #[test]
    fn host_bits_duplicates_and_stray_excludes_are_rejected() {
        let e = pools(r#"[{"name":"a","scope":"node","subnets":[{"subnet":"10.0.0.5/24"}]}]"#)
            .unwrap_err();
        assert!(e.reason.contains("10.0.0.0/24"), "{e}");
        let e = pools(
            r#"[{"name":"a","scope":"node","subnets":[{"subnet":"10.0.0.0/24"}]},{"name":"a","scope":"node","subnets":[{"subnet":"10.1.0.0/24"}]}]"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "name");
        let e =
            pools(r#"[{"name":"a","scope":"node","subnets":[{"subnet":"10.0.0.0/24"}],"exclude":["10.9.0.1"]}]"#)
                .unwrap_err();
        assert_eq!(e.field, "exclude[0]");
        let e =
            pools(r#"[{"name":"Bad_Name","scope":"node","subnets":[{"subnet":"10.0.0.0/24"}]}]"#)
                .unwrap_err();
        assert_eq!(e.field, "name");
    }
}
