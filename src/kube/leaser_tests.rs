//! The leaser against the fake API with real JSON: several nodes, each with
//! its own store, sharing one cluster pool.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipam::{Owner, PoolConfig};
use tempfile::TempDir;

use super::*;
use crate::testing::fake_api::FakeApi;

/// 10.0.0.0/24 in /28 blocks: 16 blocks of 16 addresses (the subnet's
/// network and broadcast addresses are in the first and last block).
const MID: &str = r#"[{"name":"mid","scope":"cluster","blockSize":{"ipv4":28},
    "subnets":[{"subnet":"10.0.0.0/24"}]}]"#;

struct TestNode {
    ipam: Arc<Ipam>,
    leaser: Leaser,
    dir: TempDir,
}

fn pools(json: &str) -> Vec<PoolConfig> {
    serde_json::from_str(json).unwrap()
}

fn config(node: &str) -> LeaserConfig {
    LeaserConfig {
        node: node.into(),
        min_free: 4,
        return_after: Duration::from_secs(60),
        interval: Duration::from_secs(1),
    }
}

fn start(api: &FakeApi, node: &str, pools_json: &str, dir: TempDir) -> TestNode {
    let ipam = Arc::new(Ipam::open(dir.path(), &pools(pools_json)).unwrap());
    let signal = Arc::new(BlockSignal::default());
    ipam.set_block_demand(signal.clone());
    let leaser = Leaser::new(api.client(), ipam.clone(), config(node), signal);
    TestNode { ipam, leaser, dir }
}

fn new_node(api: &FakeApi, node: &str, pools_json: &str) -> TestNode {
    api.put_node(node, &format!("uid-{node}"));
    start(api, node, pools_json, tempfile::tempdir().unwrap())
}

fn owner(n: usize) -> Owner {
    Owner::new(format!("claim-{n}"), "req", "dev").unwrap()
}

fn held(node: &TestNode) -> Vec<String> {
    node.ipam
        .blocks()
        .unwrap()
        .iter()
        .map(|b| b.block.cidr.to_string())
        .collect()
}

/// Every address the node's claims hold.
fn addresses(node: &TestNode) -> BTreeSet<IpAddr> {
    node.ipam
        .list()
        .unwrap()
        .iter()
        .flat_map(|x| x.ips())
        .collect()
}

fn lease_holders(api: &FakeApi) -> Vec<(String, String)> {
    api.ip_blocks()
        .all()
        .values()
        .map(|o| {
            (
                o["spec"]["cidr"].as_str().unwrap().to_string(),
                o["spec"]["nodeName"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Two node names whose first choice in a space of `len` blocks is the same.
fn colliding_names(len: u128) -> (String, String) {
    let names: Vec<String> = (0..100).map(|n| format!("node-{n}")).collect();
    for a in &names {
        for b in &names {
            if a < b && spread_start(a, len) == spread_start(b, len) {
                return (a.clone(), b.clone());
            }
        }
    }
    panic!("no two of 100 names share a start in {len} blocks");
}

#[tokio::test]
async fn two_nodes_racing_for_the_same_block_one_wins_the_other_takes_the_next() {
    let api = FakeApi::new();
    let (a, b) = colliding_names(16);
    let mut na = new_node(&api, &a, MID);
    let mut nb = new_node(&api, &b, MID);
    let now = Instant::now();
    let (ra, rb) = tokio::join!(na.leaser.step(now), nb.leaser.step(now));
    ra.unwrap();
    rb.unwrap();
    let (ha, hb) = (held(&na), held(&nb));
    assert_eq!((ha.len(), hb.len()), (1, 1), "{ha:?} {hb:?}");
    assert_ne!(ha, hb);
    let conflicts = na.leaser.stats().conflicts + nb.leaser.stats().conflicts;
    assert_eq!(conflicts, 1, "exactly one create was refused");
    let first = ipam::BlockSpace::of(na.ipam.pools().next().unwrap(), ipam::Family::V4)
        .unwrap()
        .block(spread_start(&a, 16))
        .unwrap()
        .to_string();
    let second: BTreeSet<String> = ha.into_iter().chain(hb).collect();
    assert!(
        second.contains(&first),
        "someone got the first choice {first}: {second:?}"
    );
    // The leases say the same as the stores.
    assert_eq!(lease_holders(&api).len(), 2);
    for (cidr, node) in lease_holders(&api) {
        let holder = if node == a { &na } else { &nb };
        assert_eq!(held(holder), [cidr]);
    }
}

#[tokio::test]
async fn a_restarted_node_without_its_state_file_adopts_its_leases_and_never_takes_anothers_address()
 {
    let api = FakeApi::new();
    let mut a = new_node(&api, "node-a", MID);
    let mut b = new_node(&api, "node-b", MID);
    let now = Instant::now();
    a.leaser.step(now).await.unwrap();
    b.leaser.step(now).await.unwrap();
    for n in 0..10 {
        b.ipam.allocate(&owner(n), "mid").unwrap();
    }
    let before = held(&a);
    // Node a restarts with its state file moved aside.
    let state = ipam::state_file(a.dir.path());
    drop(a.leaser);
    drop(a.ipam);
    std::fs::rename(&state, state.with_extension("aside")).unwrap();
    let mut a = start(&api, "node-a", MID, a.dir);
    assert!(held(&a).is_empty(), "the new store knows nothing");
    let done = a.leaser.reconcile().await.unwrap();
    assert_eq!(done.adopted.len(), 1, "{done:?}");
    assert_eq!(held(&a), before);
    let b_blocks: Vec<ipam::IpNetwork> = b
        .ipam
        .blocks()
        .unwrap()
        .iter()
        .map(|u| u.block.cidr)
        .collect();
    for n in 100..140 {
        match a.ipam.allocate(&owner(n), "mid") {
            Ok(got) => {
                let ip = got.ips()[0];
                assert!(
                    !b_blocks.iter().any(|blk| blk.contains(ip)),
                    "{ip} is node-b's"
                );
            }
            Err(IpamError::BlocksExhausted { .. }) => a.leaser.step(Instant::now()).await.unwrap(),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(addresses(&a).is_disjoint(&addresses(&b)));
    assert!(a.ipam.verify().unwrap().is_empty());
}

#[tokio::test]
async fn a_full_pool_fails_prepare_with_the_cluster_count_and_a_deleted_nodes_blocks_come_back() {
    let api = FakeApi::new();
    let two_blocks = r#"[{"name":"mid","scope":"cluster","blockSize":{"ipv4":29},
        "subnets":[{"subnet":"10.0.0.0/28"}]}]"#;
    let mut a = new_node(&api, "node-a", two_blocks);
    let mut b = new_node(&api, "node-b", two_blocks);
    let mut c = new_node(&api, "node-c", two_blocks);
    let now = Instant::now();
    a.leaser.step(now).await.unwrap();
    b.leaser.step(now).await.unwrap();
    let err = c.ipam.allocate(&owner(1), "mid").unwrap_err();
    assert!(
        matches!(err, IpamError::BlocksExhausted { blocks: 0, .. }),
        "{err}"
    );
    c.leaser.step(now).await.unwrap();
    let err = c.ipam.allocate(&owner(1), "mid").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"IPAM pool "mid" is exhausted cluster-wide: 2 blocks leased by 2 nodes"#
    );
    let b_block = held(&b);
    assert_eq!(
        api.delete_node("node-b").len(),
        1,
        "the GC took node-b's lease"
    );
    c.leaser.step(now).await.unwrap();
    assert_eq!(held(&c), b_block, "node-c leased the reclaimed block");
    assert!(c.ipam.allocate(&owner(1), "mid").is_ok());
}

#[tokio::test]
async fn a_shrunk_pool_returns_blocks_outside_it_once_empty_and_leases_inside() {
    let api = FakeApi::new();
    let wide = r#"[{"name":"mid","scope":"cluster","blockSize":{"ipv4":28},
        "subnets":[{"subnet":"10.0.0.0/24"},{"subnet":"10.0.1.0/24"}]}]"#;
    let narrow = r#"[{"name":"mid","scope":"cluster","blockSize":{"ipv4":28},
        "subnets":[{"subnet":"10.0.0.0/24"}]}]"#;
    let a = new_node(&api, "node-a", wide);
    // Pin node-a's blocks in 10.0.1.0/24 by taking them through the store
    // and the API as the leaser would.
    for (block, n) in [("10.0.1.0/28", Some(1)), ("10.0.1.16/28", None)] {
        let cidr: ipam::IpNetwork = block.parse().unwrap();
        let owner_ref = crate::kube::node::node_owner(&api.client(), "node-a")
            .await
            .unwrap();
        IpBlocks::new(api.client())
            .claim("mid", cidr, "node-a", &owner_ref)
            .await
            .unwrap();
        a.ipam
            .add_block("mid", cidr, &lease_name("mid", &cidr))
            .unwrap();
        if let Some(n) = n {
            a.ipam.allocate(&owner(n), "mid").unwrap();
        }
    }
    drop(a.leaser);
    drop(a.ipam);
    let mut a = start(&api, "node-a", narrow, a.dir);
    assert_eq!(a.leaser.reconcile().await.unwrap(), Reconciled::default());
    a.leaser.step(Instant::now()).await.unwrap();
    let leases: BTreeSet<String> = lease_holders(&api).into_iter().map(|(c, _)| c).collect();
    assert!(leases.contains("10.0.1.0/28"), "in use: kept");
    assert!(
        !leases.contains("10.0.1.16/28"),
        "empty and outside: returned at once"
    );
    let inside: Vec<String> = leases
        .iter()
        .filter(|c| c.starts_with("10.0.0."))
        .cloned()
        .collect();
    assert_eq!(
        inside.len(),
        1,
        "a block of the shrunk pool was leased: {leases:?}"
    );
    a.ipam.release(&owner(1)).unwrap();
    a.leaser.step(Instant::now()).await.unwrap();
    let leases: Vec<String> = lease_holders(&api).into_iter().map(|(c, _)| c).collect();
    assert_eq!(leases, inside, "the last block outside went once empty");
    assert!(a.ipam.verify().unwrap().is_empty());
}

#[tokio::test]
async fn an_empty_block_goes_back_after_the_grace_period_store_first() {
    let api = FakeApi::new();
    let mut a = new_node(&api, "node-a", MID);
    let t0 = Instant::now();
    a.leaser.step(t0).await.unwrap();
    for n in 0..14 {
        a.ipam.allocate(&owner(n), "mid").unwrap();
    }
    a.leaser.step(t0).await.unwrap();
    assert_eq!(held(&a).len(), 2, "2 free < 4: a second block");
    for n in 0..14 {
        a.ipam.release(&owner(n)).unwrap();
    }
    a.leaser.step(t0).await.unwrap();
    assert_eq!(held(&a).len(), 2, "empty, but not for long yet");
    a.leaser.step(t0 + Duration::from_secs(61)).await.unwrap();
    assert_eq!(
        held(&a).len(),
        1,
        "one went back; the other keeps the watermark"
    );
    assert_eq!(lease_holders(&api).len(), 1);
    assert_eq!(a.leaser.stats().returned, 1);
}

#[tokio::test]
async fn a_block_whose_lease_vanished_is_reclaimed_or_given_up_if_another_node_took_it() {
    let api = FakeApi::new();
    let mut a = new_node(&api, "node-a", MID);
    a.leaser.step(Instant::now()).await.unwrap();
    a.ipam.allocate(&owner(1), "mid").unwrap();
    let name = a.ipam.blocks().unwrap()[0].block.lease.clone();
    let cidr = a.ipam.blocks().unwrap()[0].block.cidr;
    // Someone deleted the lease: node-a claims it again.
    api.ip_blocks().collect_owned_by("uid-node-a");
    let done = a.leaser.reconcile().await.unwrap();
    assert_eq!(done.reclaimed, std::slice::from_ref(&name));
    // Now node-b holds it (deleted again and taken before node-a looked).
    api.ip_blocks().collect_owned_by("uid-node-a");
    api.put_node("node-b", "uid-node-b");
    let b_owner = crate::kube::node::node_owner(&api.client(), "node-b")
        .await
        .unwrap();
    IpBlocks::new(api.client())
        .claim("mid", cidr, "node-b", &b_owner)
        .await
        .unwrap();
    let done = a.leaser.reconcile().await.unwrap();
    assert_eq!(done.lost, [(name, vec![owner(1).key()])]);
    assert!(held(&a).is_empty(), "nothing more is handed out of it");
    assert!(
        a.ipam.get(&owner(1)).unwrap().is_some(),
        "the pod keeps its address"
    );
}

#[tokio::test]
async fn a_re_created_node_claims_its_blocks_again_under_the_new_uid() {
    let api = FakeApi::new();
    let mut a = new_node(&api, "node-a", MID);
    a.leaser.step(Instant::now()).await.unwrap();
    a.ipam.allocate(&owner(1), "mid").unwrap();
    // The Node is deleted (the GC takes the lease) and registers again.
    assert_eq!(api.delete_node("node-a").len(), 1);
    api.put_node("node-a", "uid-node-a-2");
    let done = a.leaser.reconcile().await.unwrap();
    assert_eq!(done.reclaimed.len(), 1, "{done:?}");
    let lease = api.ip_blocks().all().into_values().next().unwrap();
    assert_eq!(
        lease["metadata"]["ownerReferences"][0]["uid"],
        "uid-node-a-2"
    );
}

#[test]
fn leaser_settings_come_from_the_node_config() {
    let config = NodeConfig::parse(
        "ipam:\n  blockLeasing: {minFree: 32, returnEmptyAfterSeconds: 30, checkIntervalSeconds: 2}\n",
        "node.yaml",
    )
    .unwrap();
    let c = LeaserConfig::from_node_config(&config, "n");
    assert_eq!(
        (c.min_free, c.return_after, c.interval),
        (32, Duration::from_secs(30), Duration::from_secs(2))
    );
    let err = NodeConfig::parse(
        "ipam:\n  blockLeasing: {checkIntervalSeconds: 0}\n",
        "node.yaml",
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("checkIntervalSeconds"),
        "{err:#}"
    );
}
