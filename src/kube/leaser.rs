//! The background leaser of cluster-wide IPAM pools: keeps enough free
//! addresses in the blocks this node holds, gives back blocks that stayed
//! empty, and at start reconciles the node's lease objects with its store.
//!
//! The pod start path never waits for it: Prepare allocates from the store
//! alone, and when a pool has run dry on this node it fails fast and wakes
//! the leaser through [`BlockSignal`]. Order of durability: a block is
//! claimed in the API, then recorded in the store, then handed out; it is
//! dropped from the store before its lease is deleted. A crash between the
//! steps leaves a lease without a record, which the next start adopts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use ipam::{
    BlockDemand, BlockSpace, BlockState, ClusterFull, Family, IpNetwork, Ipam, IpamError, Pool,
    blocks_to_return, lease_name, spread_start, wants_block,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::config::NodeConfig;
use crate::kube::leases::{Claimed, IpBlocks, Lease};
use crate::kube::static_leases::StaticLeases;

/// Conflicts in a row after which the leaser lists the pool's leases
/// instead of trying the next block blind.
const RELIST_AFTER_CONFLICTS: u32 = 8;
/// Blocks one family of a pool may lease in one round.
const MAX_LEASES_PER_ROUND: usize = 8;
/// How often the running leaser reconciles again: a Node deleted and
/// re-created under a running driver takes the old leases with it (garbage
/// collection), and the blocks must be claimed again under the new UID
/// before another node leases them.
const RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// How the leaser behaves; from the node config's `ipam.blockLeasing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaserConfig {
    /// This node: the lease holder.
    pub node: String,
    /// Lease another block when fewer addresses than this are free in the
    /// node's blocks of a pool and family.
    pub min_free: u128,
    /// Give back a block that has been empty this long.
    pub return_after: Duration,
    /// How often the watermark is checked without a wake-up.
    pub interval: Duration,
}

impl LeaserConfig {
    /// The leasing settings of `config` for `node`.
    pub fn from_node_config(config: &NodeConfig, node: &str) -> Self {
        let leasing = &config.ipam.block_leasing;
        LeaserConfig {
            node: node.to_string(),
            min_free: u128::from(leasing.min_free),
            return_after: Duration::from_secs(leasing.return_empty_after_seconds),
            interval: Duration::from_secs(leasing.check_interval_seconds),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Between the allocator (which never waits) and the leaser: a wake-up
/// when a pool ran dry, and what the leaser learned of full pools.
#[derive(Debug, Default)]
pub struct BlockSignal {
    wake: Notify,
    full: Mutex<HashMap<(String, Family), ClusterFull>>,
}

impl BlockDemand for BlockSignal {
    fn exhausted(&self, pool: &str, family: Family) -> Option<ClusterFull> {
        self.wake.notify_one();
        lock(&self.full).get(&(pool.to_string(), family)).copied()
    }
}

impl BlockSignal {
    /// Resolves when an allocation asked for a block.
    pub async fn wanted(&self) {
        self.wake.notified().await
    }

    fn set_full(&self, pool: &str, family: Family, full: ClusterFull) {
        lock(&self.full).insert((pool.to_string(), family), full);
    }

    fn clear_full(&self, pool: &str, family: Family) {
        lock(&self.full).remove(&(pool.to_string(), family));
    }
}

/// API traffic of a leaser, for logs and the simulation benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LeaserStats {
    /// Blocks claimed.
    pub created: u64,
    /// Creates answered AlreadyExists.
    pub conflicts: u64,
    /// Leases deleted.
    pub returned: u64,
    /// Lists of a pool's or the node's leases.
    pub lists: u64,
}

impl LeaserStats {
    /// Writes sent to the API (creates, refused or not, and deletes).
    pub fn writes(&self) -> u64 {
        self.created + self.conflicts + self.returned
    }
}

/// What the start-up reconciliation did, by lease name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Leases of this node the store did not know (a lost state file, or a
    /// crash between claim and record): recorded now.
    pub adopted: Vec<String>,
    /// Blocks in the store whose lease was gone: claimed again.
    pub reclaimed: Vec<String>,
    /// Leases of this node no configured pool covers and the store does
    /// not use: deleted.
    pub released: Vec<String>,
    /// Blocks in the store another node now holds, with the owners of
    /// addresses in them: nothing more is handed out of them.
    pub lost: Vec<(String, Vec<String>)>,
    /// This node's single-address leases no allocation in the store holds
    /// (a crash between the release's commit and the lease's delete, or a
    /// Prepare that failed mid-way): deleted.
    pub statics_returned: Vec<String>,
    /// Single-address leases the store records as this node's whose object
    /// was gone: created again.
    pub statics_reclaimed: Vec<String>,
    /// Single-address leases the store records as this node's that another
    /// node now holds (alone or through the block): the owners keep the
    /// address, which the other node may also hand out.
    pub statics_lost: Vec<(String, String)>,
    /// Other nodes' single-address leases inside this node's blocks whose
    /// object is gone (their node released the address): free here again.
    pub statics_forgotten: Vec<String>,
}

/// The leaser of one node.
pub struct Leaser {
    api: IpBlocks,
    client: kube::Client,
    ipam: Arc<Ipam>,
    config: LeaserConfig,
    signal: Arc<BlockSignal>,
    owner: Option<OwnerReference>,
    /// Blocks known to be held by other nodes, per pool and family.
    taken: HashMap<(String, Family), BTreeSet<IpNetwork>>,
    empty_since: HashMap<(String, IpNetwork), Instant>,
    stats: LeaserStats,
    statics: StaticLeases,
}

impl Leaser {
    /// A leaser for `config.node` over `ipam`; install `signal` in the
    /// store with [`Ipam::set_block_demand`] so Prepare can wake it.
    pub fn new(
        client: kube::Client,
        ipam: Arc<Ipam>,
        config: LeaserConfig,
        signal: Arc<BlockSignal>,
    ) -> Self {
        Leaser {
            api: IpBlocks::new(client.clone()),
            statics: StaticLeases::new(client.clone(), &config.node),
            client,
            ipam,
            config,
            signal,
            owner: None,
            taken: HashMap::new(),
            empty_since: HashMap::new(),
            stats: LeaserStats::default(),
        }
    }

    /// The node's single-address leases, sharing the leaser's marks (what
    /// Prepare uses, so the reconcile never returns a lease in flight).
    pub fn static_leases(&self) -> StaticLeases {
        self.statics.clone()
    }

    /// API traffic so far.
    pub fn stats(&self) -> LeaserStats {
        self.stats
    }

    /// The Node as the leases' owner: without it a deleted node's blocks
    /// would never be collected, so no block is claimed without it.
    async fn owner(&mut self) -> anyhow::Result<OwnerReference> {
        if self.owner.is_none() {
            self.owner = crate::kube::node::node_owner(&self.client, &self.config.node).await;
        }
        self.owner.clone().with_context(|| {
            format!(
                "cannot lease IPAM blocks: the Node {} (their owner) is unreadable",
                self.config.node
            )
        })
    }

    /// Brings the node's leases and its store in line, both ways.
    pub async fn reconcile(&mut self) -> anyhow::Result<Reconciled> {
        let node = self.config.node.clone();
        // The Node may have been re-created: claim under its current UID.
        self.owner = None;
        let (singles, leases): (Vec<Lease>, Vec<Lease>) = self
            .api
            .of_node(&node)
            .await?
            .into_iter()
            .partition(|l| l.single_address);
        self.stats.lists += 1;
        let held = self.ipam.blocks()?;
        let mut out = Reconciled::default();
        self.reconcile_statics(&singles, &mut out).await?;
        self.forget_gone_foreign(&mut out).await?;
        for lease in &leases {
            if held
                .iter()
                .any(|b| b.block.pool == lease.pool && b.block.cidr == lease.cidr)
            {
                continue;
            }
            match self
                .record_block(&lease.pool, lease.cidr, &lease.name)
                .await?
            {
                Ok(_) => {
                    info!(node = %node, pool = %lease.pool, block = %lease.cidr, lease = %lease.name,
                        "adopted a lease the store did not record");
                    out.adopted.push(lease.name.clone());
                }
                Err(IpamError::InvalidBlock { reason, .. }) => {
                    info!(node = %node, pool = %lease.pool, block = %lease.cidr, lease = %lease.name,
                        %reason, "releasing a lease no configured pool covers");
                    self.api.release(lease).await?;
                    self.stats.returned += 1;
                    out.released.push(lease.name.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        for b in &held {
            let (pool, cidr) = (&b.block.pool, b.block.cidr);
            if leases.iter().any(|l| &l.pool == pool && l.cidr == cidr) {
                continue;
            }
            let owner = self.owner().await?;
            match self.api.claim(pool, cidr, &node, &owner).await? {
                Claimed::Created => {
                    self.stats.created += 1;
                    // While the lease was gone, other nodes may have leased
                    // single addresses in it.
                    self.reserve_statics_in(pool, cidr, &b.block.lease).await?;
                    info!(node = %node, pool = %pool, block = %cidr, "re-claimed a block whose lease was gone");
                    out.reclaimed.push(b.block.lease.clone());
                }
                Claimed::Exists => {
                    self.stats.conflicts += 1;
                    let holder = self.api.get(&b.block.lease).await?;
                    if holder.as_ref().is_some_and(|l| l.node == node) {
                        continue;
                    }
                    let owners = self.ipam.remove_block(pool, cidr, true)?;
                    error!(node = %node, pool = %pool, block = %cidr,
                        holder = holder.as_ref().map(|l| l.node.as_str()).unwrap_or("?"),
                        owners = ?owners,
                        "another node holds a block this node's store had: nothing more is handed out of it; \
                         the listed claims hold addresses the other node may give out too");
                    out.lost.push((b.block.lease.clone(), owners));
                }
            }
        }
        Ok(out)
    }

    /// One round: lease where a pool runs low, give back blocks that stayed
    /// empty for the grace period.
    pub async fn step(&mut self, now: Instant) -> anyhow::Result<()> {
        let pools: Vec<Pool> = self
            .ipam
            .pools()
            .filter(|p| p.is_cluster())
            .cloned()
            .collect();
        for pool in &pools {
            for family in pool.families() {
                for _ in 0..MAX_LEASES_PER_ROUND {
                    let free = self.ipam.free_count(pool.name(), family)?;
                    if !wants_block(free, self.config.min_free)
                        || !self.lease_one(pool, family).await?
                    {
                        break;
                    }
                }
            }
        }
        self.return_empty(now).await
    }

    /// Claims the next free block of `pool`/`family`; `false` when every
    /// block is leased (remembered for Prepare's error).
    async fn lease_one(&mut self, pool: &Pool, family: Family) -> anyhow::Result<bool> {
        let Some(space) = BlockSpace::of(pool, family) else {
            return Ok(false);
        };
        let node = self.config.node.clone();
        let start = spread_start(&node, space.len());
        let mine: BTreeSet<IpNetwork> = self
            .ipam
            .blocks()?
            .into_iter()
            .filter(|b| b.block.pool == pool.name())
            .map(|b| b.block.cidr)
            .collect();
        let key = (pool.name().to_string(), family);
        let mut listed: Option<Vec<Lease>> = None;
        let mut conflicts = 0u32;
        loop {
            let mut skip = self.taken.get(&key).cloned().unwrap_or_default();
            skip.extend(mine.iter().copied());
            let candidate = space.candidates(pool, start, &skip).next();
            let Some(block) = candidate else {
                if let Some(leases) = &listed {
                    let of_family: Vec<&Lease> = leases
                        .iter()
                        .filter(|l| Family::of(l.cidr.ip()) == family)
                        .collect();
                    let nodes: BTreeSet<&str> = of_family.iter().map(|l| l.node.as_str()).collect();
                    let full = ClusterFull {
                        blocks: of_family.len() as u128,
                        nodes: nodes.len(),
                    };
                    warn!(node = %node, pool = %pool.name(), %family, blocks = full.blocks,
                        nodes = full.nodes, "IPAM pool is exhausted cluster-wide");
                    self.signal.set_full(pool.name(), family, full);
                    return Ok(false);
                }
                listed = Some(self.refresh_taken(pool, family).await?);
                continue;
            };
            let owner = self.owner().await?;
            match self.api.claim(pool.name(), block, &node, &owner).await? {
                Claimed::Created => {
                    self.stats.created += 1;
                    let name = lease_name(pool.name(), &block);
                    // Durable in the store before any address of it is
                    // handed out; if that fails, the lease goes again (a
                    // crash here leaves it for the next start to adopt).
                    // Other nodes' single addresses in it are listed after
                    // the create and kept out (see kube::static_leases).
                    let recorded = match self.record_block(pool.name(), block, &name).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(anyhow::Error::from(e)),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = recorded {
                        if let Ok(Some(lease)) = self.api.get(&name).await {
                            let _ = self.api.release(&lease).await;
                        }
                        return Err(e);
                    }
                    self.signal.clear_full(pool.name(), family);
                    info!(node = %node, pool = %pool.name(), block = %block, lease = %name, "leased an IPAM block");
                    return Ok(true);
                }
                Claimed::Exists => {
                    self.stats.conflicts += 1;
                    conflicts += 1;
                    self.taken.entry(key.clone()).or_default().insert(block);
                    if conflicts >= RELIST_AFTER_CONFLICTS && listed.is_none() {
                        listed = Some(self.refresh_taken(pool, family).await?);
                    }
                }
            }
        }
    }

    /// Lists `pool`'s leases and replaces what is known to be taken.
    async fn refresh_taken(&mut self, pool: &Pool, family: Family) -> anyhow::Result<Vec<Lease>> {
        let leases: Vec<Lease> = self
            .api
            .of_pool(pool.name())
            .await?
            .into_iter()
            .filter(|l| !l.single_address)
            .collect();
        self.stats.lists += 1;
        let taken = leases
            .iter()
            .filter(|l| Family::of(l.cidr.ip()) == family)
            .map(|l| l.cidr)
            .collect();
        self.taken.insert((pool.name().to_string(), family), taken);
        Ok(leases)
    }

    /// Gives back what [`blocks_to_return`] says: store first, then the lease.
    async fn return_empty(&mut self, now: Instant) -> anyhow::Result<()> {
        let usage = self.ipam.blocks()?;
        let empty: BTreeSet<(String, IpNetwork)> = usage
            .iter()
            .filter(|b| b.used == 0)
            .map(|b| (b.block.pool.clone(), b.block.cidr))
            .collect();
        self.empty_since.retain(|k, _| empty.contains(k));
        for k in empty {
            self.empty_since.entry(k).or_insert(now);
        }
        let mut groups: BTreeMap<(String, Family), Vec<BlockState>> = BTreeMap::new();
        for b in &usage {
            let since = self.empty_since.get(&(b.block.pool.clone(), b.block.cidr));
            groups
                .entry((b.block.pool.clone(), Family::of(b.block.cidr.ip())))
                .or_default()
                .push(BlockState {
                    cidr: b.block.cidr,
                    used: b.used,
                    free: b.free,
                    in_pool: b.in_pool,
                    empty_long_enough: since.is_some_and(|s| {
                        now.saturating_duration_since(*s) >= self.config.return_after
                    }),
                });
        }
        for ((pool, _), states) in groups {
            for cidr in blocks_to_return(&states, self.config.min_free) {
                self.ipam.remove_block(&pool, cidr, false)?;
                self.empty_since.remove(&(pool.clone(), cidr));
                let name = lease_name(&pool, &cidr);
                if let Some(lease) = self.api.get(&name).await?
                    && lease.node == self.config.node
                {
                    self.api.release(&lease).await?;
                    self.stats.returned += 1;
                }
                info!(node = %self.config.node, pool = %pool, block = %cidr, lease = %name, "returned an empty IPAM block");
            }
        }
        Ok(())
    }

    /// Reconciles (retrying until the API answers), then keeps leasing and
    /// returning until `stop` resolves.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            match self.reconcile().await {
                Ok(done) => {
                    info!(node = %self.config.node, ?done, "IPAM leases reconciled with the store");
                    break;
                }
                Err(e) => warn!(node = %self.config.node, error = format!("{e:#}"),
                    "cannot reconcile IPAM leases yet; retrying"),
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
        let mut reconciled = Instant::now();
        loop {
            if reconciled.elapsed() >= RECONCILE_EVERY {
                match self.reconcile().await {
                    Ok(done) if done != Reconciled::default() => {
                        warn!(node = %self.config.node, ?done, "IPAM leases and store disagreed; reconciled");
                    }
                    Ok(_) => {}
                    Err(e) => warn!(node = %self.config.node, error = format!("{e:#}"),
                        "cannot reconcile IPAM leases; retrying"),
                }
                reconciled = Instant::now();
            }
            if let Err(e) = self.step(Instant::now()).await {
                warn!(node = %self.config.node, error = format!("{e:#}"), "leasing IPAM blocks failed; retrying");
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = self.signal.wanted() => {}
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }
}

#[path = "leaser_static.rs"]
mod statics;

#[cfg(test)]
#[path = "leaser_tests.rs"]
mod tests;
