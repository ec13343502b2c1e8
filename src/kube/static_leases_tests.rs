//! Single-address leases against the fake API with real JSON: two nodes,
//! each with its own store, sharing one cluster pool.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam::{Ipam, IpamError, Owner, PoolConfig};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::*;
use crate::kube::leaser::{BlockSignal, Leaser, LeaserConfig};
use crate::testing::fake_api::FakeApi;

/// One /28 block: 10.0.0.0/28, hosts .1–.14.
const ONE_BLOCK: &str = r#"[{"name":"mid","scope":"cluster","blockSize":{"ipv4":28},
    "subnets":[{"subnet":"10.0.0.0/28"}]}]"#;

struct Node {
    name: String,
    ipam: Arc<Ipam>,
    leaser: Leaser,
    statics: StaticLeases,
    _dir: tempfile::TempDir,
}

fn node(api: &FakeApi, name: &str) -> Node {
    api.put_node(name, &format!("uid-{name}"));
    let dir = tempfile::tempdir().unwrap();
    let pools: Vec<PoolConfig> = serde_json::from_str(ONE_BLOCK).unwrap();
    let ipam = Arc::new(Ipam::open(dir.path(), &pools).unwrap());
    let signal = Arc::new(BlockSignal::default());
    ipam.set_block_demand(signal.clone());
    let config = LeaserConfig {
        node: name.into(),
        min_free: 4,
        return_after: Duration::from_secs(60),
        interval: Duration::from_secs(1),
    };
    let leaser = Leaser::new(api.client(), ipam.clone(), config, signal);
    let statics = leaser.static_leases();
    Node {
        name: name.into(),
        ipam,
        leaser,
        statics,
        _dir: dir,
    }
}

fn owner_ref(node: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.into(),
        uid: format!("uid-{node}"),
        ..Default::default()
    }
}

fn claim(n: usize) -> Owner {
    Owner::new(format!("claim-{n}"), "req", "dev").unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

impl Node {
    fn pool(&self) -> Pool {
        self.ipam.pools().next().unwrap().clone()
    }

    /// What Prepare does for a static address outside the node's blocks:
    /// mark, lease (create, then check the block), record and allocate in
    /// one commit.
    async fn prepare_static(&self, n: usize, address: &str) -> Result<(), String> {
        let address = ip(address);
        let _mark = self
            .statics
            .preparing("mid", address)
            .map_err(|e| e.to_string())?;
        let got = self
            .statics
            .acquire(&self.pool(), address, &owner_ref(&self.name))
            .await
            .map_err(|e| e.to_string())?;
        let txn = self.ipam.database().begin_write().unwrap();
        self.ipam
            .record_static_lease_in(&txn, "mid", address, &got.lease)
            .unwrap();
        self.ipam
            .allocate_static_in(&txn, &claim(n), &[IpNetwork::new(address, 28).unwrap()])
            .unwrap();
        txn.commit().unwrap();
        Ok(())
    }

    /// What Unprepare does: release in the store, then delete the lease.
    async fn unprepare_static(&self, n: usize, address: &str) {
        self.ipam.release(&claim(n)).unwrap();
        self.statics.release("mid", ip(address)).await.unwrap();
    }
}

fn holders(api: &FakeApi) -> Vec<(String, String)> {
    api.ip_blocks()
        .all()
        .into_iter()
        .map(|(name, o)| (name, o["spec"]["nodeName"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn a_static_address_is_leased_as_a_single_address_object_and_released() {
    let api = FakeApi::new();
    let a = node(&api, "node-a");
    a.prepare_static(1, "10.0.0.5").await.unwrap();
    let objects = api.ip_blocks().all();
    let lease = &objects["mid-10-0-0-5-32"];
    assert_eq!(lease["spec"]["cidr"], "10.0.0.5/32");
    assert_eq!(lease["spec"]["nodeName"], "node-a");
    assert_eq!(lease["metadata"]["labels"][STATIC_LABEL], "true");
    assert_eq!(lease["metadata"]["labels"][BLOCK_LABEL], "mid-10-0-0-0-28");
    assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], "uid-node-a");
    // Re-prepare: the lease exists and is ours.
    let again = a
        .statics
        .acquire(&a.pool(), ip("10.0.0.5"), &owner_ref("node-a"))
        .await
        .unwrap();
    assert!(!again.created);
    a.unprepare_static(1, "10.0.0.5").await;
    assert!(api.ip_blocks().all().is_empty());
    assert!(a.ipam.static_leases().unwrap().is_empty());
}

#[tokio::test]
async fn two_nodes_racing_for_the_same_static_address_one_wins() {
    let api = FakeApi::new();
    let a = node(&api, "node-a");
    let b = node(&api, "node-b");
    let (ra, rb) = tokio::join!(
        a.prepare_static(1, "10.0.0.5"),
        b.prepare_static(1, "10.0.0.5")
    );
    let (winner, loser) = match (&ra, &rb) {
        (Ok(()), Err(e)) => ("node-a", e),
        (Err(e), Ok(())) => ("node-b", e),
        other => panic!("exactly one must win: {other:?}"),
    };
    assert!(loser.contains(&format!("held by node {winner}")), "{loser}");
    assert_eq!(
        holders(&api),
        [("mid-10-0-0-5-32".to_string(), winner.to_string())]
    );
}

#[tokio::test]
async fn a_static_address_inside_another_nodes_block_is_refused_block_first() {
    let api = FakeApi::new();
    let a = node(&api, "node-a");
    let mut b = node(&api, "node-b");
    b.leaser.step(Instant::now()).await.unwrap();
    let err = a.prepare_static(1, "10.0.0.5").await.unwrap_err();
    assert!(
        err.contains("lies in block 10.0.0.0/28, leased by node node-b (IPBlock mid-10-0-0-0-28)"),
        "{err}"
    );
    assert_eq!(
        holders(&api),
        [("mid-10-0-0-0-28".to_string(), "node-b".to_string())],
        "node-a's single-address lease is gone again"
    );
    assert!(a.ipam.list().unwrap().is_empty());
}

#[tokio::test]
async fn a_new_block_containing_another_nodes_static_address_never_hands_it_out() {
    let api = FakeApi::new();
    let a = node(&api, "node-a");
    let mut b = node(&api, "node-b");
    a.prepare_static(1, "10.0.0.5").await.unwrap();
    b.leaser.step(Instant::now()).await.unwrap();
    assert_eq!(b.ipam.blocks().unwrap().len(), 1, "the block is node-b's");
    let mut got = Vec::new();
    for n in 0..20 {
        match b.ipam.allocate(&claim(n), "mid") {
            Ok(alloc) => got.push(alloc.ips()[0]),
            Err(IpamError::BlocksExhausted { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got.len(), 13, "14 hosts, one of them node-a's");
    assert!(!got.contains(&ip("10.0.0.5")), "{got:?}");
    let err = b
        .ipam
        .allocate_static(&claim(99), &[IpNetwork::new(ip("10.0.0.5"), 28).unwrap()])
        .unwrap_err();
    assert!(err.to_string().contains("held by node node-a"), "{err}");
    assert!(b.ipam.verify().unwrap().is_empty());
}

#[tokio::test]
async fn reconcile_returns_a_lease_left_by_a_crash_and_re_creates_a_lost_one() {
    let api = FakeApi::new();
    let mut a = node(&api, "node-a");
    a.prepare_static(1, "10.0.0.5").await.unwrap();
    a.prepare_static(2, "10.0.0.6").await.unwrap();
    // Crash between the release's commit and the lease's delete.
    a.ipam.release(&claim(1)).unwrap();
    // And a lease deleted behind the node's back.
    let gone = a
        .statics
        .blocks
        .get("mid-10-0-0-6-32")
        .await
        .unwrap()
        .unwrap();
    a.statics.blocks.release(&gone).await.unwrap();
    let done = a.leaser.reconcile().await.unwrap();
    assert_eq!(done.statics_returned, ["mid-10-0-0-5-32"]);
    assert_eq!(done.statics_reclaimed, ["mid-10-0-0-6-32"]);
    assert_eq!(
        holders(&api),
        [("mid-10-0-0-6-32".to_string(), "node-a".to_string())]
    );
    let again = a.leaser.reconcile().await.unwrap();
    assert_eq!(again, crate::kube::leaser::Reconciled::default());
}

#[tokio::test]
async fn the_reconcile_never_returns_a_lease_a_prepare_holds() {
    let api = FakeApi::new();
    let mut a = node(&api, "node-a");
    let mark = a.statics.preparing("mid", ip("10.0.0.7")).unwrap();
    a.statics
        .acquire(&a.pool(), ip("10.0.0.7"), &owner_ref("node-a"))
        .await
        .unwrap();
    let done = a.leaser.reconcile().await.unwrap();
    assert!(done.statics_returned.is_empty(), "{done:?}");
    assert!(
        a.statics.preparing("mid", ip("10.0.0.7")).is_err(),
        "one Prepare of an address at a time"
    );
    drop(mark);
    let done = a.leaser.reconcile().await.unwrap();
    assert_eq!(
        done.statics_returned,
        ["mid-10-0-0-7-32"],
        "never recorded: returned"
    );
}

#[tokio::test]
async fn another_nodes_static_address_is_free_again_once_its_lease_is_gone() {
    let api = FakeApi::new();
    let a = node(&api, "node-a");
    let mut b = node(&api, "node-b");
    a.prepare_static(1, "10.0.0.5").await.unwrap();
    b.leaser.step(Instant::now()).await.unwrap();
    let requests = api.requests();
    let quiet = b.leaser.reconcile().await.unwrap();
    assert!(quiet.statics_forgotten.is_empty(), "{quiet:?}");
    // node-a's pod goes: store first, then the lease object.
    a.unprepare_static(1, "10.0.0.5").await;
    assert!(api.requests() > requests);
    let done = b.leaser.reconcile().await.unwrap();
    assert_eq!(done.statics_forgotten, ["mid-10-0-0-5-32"]);
    b.ipam
        .allocate_static(&claim(7), &[IpNetwork::new(ip("10.0.0.5"), 28).unwrap()])
        .expect("node-b may hand it out now");
    assert!(b.ipam.verify().unwrap().is_empty());
    let again = b.leaser.reconcile().await.unwrap();
    assert!(again.statics_forgotten.is_empty());
}
