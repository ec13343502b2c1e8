//! Pool definitions as they appear in the node config.
//!
//! These types are only the shape of the input; `validate` turns them into
//! [`crate::Pool`]s. They are also what the store keeps as the pool snapshot,
//! so the CLI can show pools without reading the node config.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// One named address pool; a pool with both IPv4 and IPv6 subnets is
/// dual-stack and gives one address of each family per allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolConfig {
    /// Name that claims refer to (`ipam.pool`).
    pub name: String,
    /// Whether the same addresses may be used on every node (`node`) or
    /// must be unique across the cluster (`cluster`). Required: a missing
    /// scope is a validation error naming both choices, so a config the
    /// chart renders to many nodes never silently hands one address to two
    /// pods on a shared segment. Optional here only so that the error can
    /// say that instead of serde's "missing field".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<PoolScope>,
    /// Prefix length per family of the blocks a `cluster` pool is leased
    /// in; required for `cluster`, refused for `node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<BlockSize>,
    /// Subnets addresses are taken from, IPv4 and/or IPv6.
    pub subnets: Vec<SubnetConfig>,
    /// Addresses or CIDRs that are never handed out dynamically (they may
    /// still be requested statically).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<IpNetwork>,
    /// Routes handed to the pod together with the address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
}

/// Where a pool's addresses must be unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolScope {
    /// Each node has its own segment: every node hands out the whole pool.
    Node,
    /// The nodes share a segment: each node leases blocks of the pool
    /// through the Kubernetes API and hands out addresses only from those.
    Cluster,
}

/// Block prefix lengths of a cluster pool, e.g. `{ipv4: 26, ipv6: 120}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockSize {
    /// Prefix length of IPv4 blocks; required when the pool has an IPv4 subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<u8>,
    /// Prefix length of IPv6 blocks; required when the pool has an IPv6 subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<u8>,
}

/// A subnet of a pool, optionally narrowed to a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubnetConfig {
    /// The subnet in CIDR form; its prefix length is the one given to pods.
    pub subnet: IpNetwork,
    /// First address that may be allocated (default: first host address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<IpAddr>,
    /// Last address that may be allocated (default: last host address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<IpAddr>,
    /// Gateway of this subnet; never allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// A route given to the pod with its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination prefix, e.g. `0.0.0.0/0`.
    pub dst: IpNetwork,
    /// Next hop; when absent the route is on-link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dual_stack_pool_reads_from_camel_case_json() {
        let pool: PoolConfig = serde_json::from_str(
            r#"{"name":"fronthaul","scope":"node",
                "subnets":[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.10","rangeEnd":"10.1.0.99","gateway":"10.1.0.1"},
                           {"subnet":"fd00:1::/64"}],
                "exclude":["10.1.0.50","10.1.0.64/28"],
                "routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}]}"#,
        )
        .unwrap();
        assert_eq!(pool.subnets.len(), 2);
        assert_eq!(
            pool.subnets[0].range_start,
            Some("10.1.0.10".parse().unwrap())
        );
        assert_eq!(pool.exclude[0].prefix(), 32, "a bare address is a /32");
        assert_eq!(pool.routes[0].gw, Some("10.1.0.1".parse().unwrap()));
    }

    #[test]
    fn unknown_field_is_an_error_naming_the_field() {
        let err = serde_json::from_str::<PoolConfig>(
            r#"{"name":"a","scope":"node","subnets":[{"subnet":"10.0.0.0/24","gatway":"10.0.0.1"}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("gatway"), "{err}");
    }

    #[test]
    fn snapshot_round_trips() {
        let pool = PoolConfig {
            name: "p".into(),
            scope: Some(PoolScope::Cluster),
            block_size: Some(BlockSize {
                ipv4: Some(28),
                ipv6: None,
            }),
            subnets: vec![SubnetConfig {
                subnet: "10.0.0.0/24".parse().unwrap(),
                range_start: None,
                range_end: None,
                gateway: Some("10.0.0.1".parse().unwrap()),
            }],
            exclude: vec![],
            routes: vec![],
        };
        let json = serde_json::to_string(&pool).unwrap();
        assert_eq!(serde_json::from_str::<PoolConfig>(&json).unwrap(), pool);
    }
}
