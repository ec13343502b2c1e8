//! Helpers shared by the unit tests: pools from JSON, owners, temp stores.

use tempfile::TempDir;

use crate::config::PoolConfig;
use crate::handle::Ipam;
use crate::owner::Owner;

/// Pools parsed from a JSON array.
pub(crate) fn pools(json: &str) -> Vec<PoolConfig> {
    serde_json::from_str(json).expect("test pool JSON")
}

/// Owner `claim-<n>/dev/req`.
pub(crate) fn owner(n: usize) -> Owner {
    Owner::new(format!("claim-{n}"), "req", "dev").expect("valid test owner")
}

/// A fresh store in a temp dir with `json` pools.
pub(crate) fn ipam(json: &str) -> (TempDir, Ipam) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ipam = Ipam::open(dir.path(), &pools(json)).expect("open store");
    (dir, ipam)
}

/// A /29 with gateway: allocatable .2 .3 .4 .5 .6.
pub(crate) const SMALL: &str = r#"[{"name":"small","scope":"node","subnets":[{"subnet":"10.0.0.0/29","gateway":"10.0.0.1"}]}]"#;
