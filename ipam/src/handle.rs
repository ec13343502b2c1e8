//! The handles the driver and the CLI hold: [`Ipam`] (read-write, one
//! process) and [`IpamReader`] (read-only, for the CLI while the driver is
//! stopped; any number may read at once).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ipnetwork::IpNetwork;
use redb::{Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, WriteTransaction};

use crate::address::Family;
use crate::allocation::Allocation;
use crate::allocator::{self, Pools};
use crate::blocks::{self, BlockUsage};
use crate::config::PoolConfig;
use crate::demand::BlockDemand;
use crate::error::{IpamError, StoreContext};
use crate::gc;
use crate::owner::Owner;
use crate::pool::Pool;
use crate::pool_sync::{self, PoolChanges};
use crate::static_leases::{self, Holder, StaticLease};
use crate::status::{self, PoolStatus};
use crate::store::{self, POOLS, read_snapshot};
use crate::validate::validate_pools;

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "state.redb";

/// Path of the state file for `state_dir`.
pub fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

fn pools_by_name(pools: Vec<Pool>) -> Pools {
    pools
        .into_iter()
        .map(|p| (p.name().to_string(), p))
        .collect()
}

/// Read-write IPAM over the state file. Every mutating call has committed
/// durably (fsync) when it returns. `Send + Sync`: share it behind an `Arc`;
/// redb serialises writers, so concurrent calls are safe.
pub struct Ipam {
    db: Database,
    pools: Pools,
    path: PathBuf,
    changes: PoolChanges,
    demand: OnceLock<Arc<dyn BlockDemand>>,
    /// Told how long each durable commit of [`Ipam::write`] took.
    commits: OnceLock<fn(std::time::Duration)>,
}

impl Ipam {
    /// Opens or creates `<state_dir>/state.redb` and applies `pools` (see
    /// [`PoolChanges`]). Invalid pools fail before the file is touched.
    pub fn open(state_dir: &Path, pools: &[PoolConfig]) -> Result<Ipam, IpamError> {
        let pools = pools_by_name(validate_pools(pools)?);
        std::fs::create_dir_all(state_dir).map_err(|source| IpamError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_file(state_dir);
        let db = store::open_write(&path, true)?;
        Ipam::with_pools(db, pools, path)
    }

    /// A store in memory with `pools`, for simulations of many nodes in one
    /// process (the cluster-pool benchmark): the same tables and code paths
    /// as [`Ipam::open`], without a file or fsync.
    #[cfg(feature = "test-support")]
    pub fn open_in_memory(pools: &[PoolConfig]) -> Result<Ipam, IpamError> {
        let pools = pools_by_name(validate_pools(pools)?);
        let path = PathBuf::from(":memory:");
        let db = store::create_in_memory(&path)?;
        Ipam::with_pools(db, pools, path)
    }

    /// The store `db` (at `path`) with `pools` applied, whether it lives
    /// in a file or in memory.
    fn with_pools(db: Database, pools: Pools, path: PathBuf) -> Result<Ipam, IpamError> {
        let txn = db.begin_write().ctx("begin write")?;
        let changes = pool_sync::apply(&txn, &pools)?;
        if changes == PoolChanges::default() {
            // Nothing changed: skip the fsync of an empty commit.
            txn.abort().ctx("abort")?;
        } else {
            store::commit(txn)?;
        }
        Ok(Ipam {
            db,
            pools,
            path,
            changes,
            demand: OnceLock::new(),
            commits: OnceLock::new(),
        })
    }

    /// Installs who is told how long each commit of this handle's own
    /// writes took (block records, releases, repairs: the driver's store
    /// commit metric); set once, later calls are ignored. Writes made in
    /// the driver's transactions (the `*_in` methods) are its to time.
    pub fn observe_commits(&self, observer: fn(std::time::Duration)) {
        let _ = self.commits.set(observer);
    }

    /// Installs who is told when a cluster pool runs dry on this node (the
    /// driver's block leaser); set once, later calls are ignored.
    pub fn set_block_demand(&self, demand: Arc<dyn BlockDemand>) {
        let _ = self.demand.set(demand);
    }

    /// Opens an existing state file with the pools last applied to it (for
    /// the CLI, which has no node config).
    pub fn open_existing(state_dir: &Path) -> Result<Ipam, IpamError> {
        let path = state_file(state_dir);
        let db = store::open_write(&path, false)?;
        let configs = {
            let txn = db.begin_read().ctx("begin read")?;
            let table = txn.open_table(POOLS).ctx("open ipam_pools")?;
            read_snapshot(&table)?
        };
        let configs: Vec<PoolConfig> = configs.into_values().collect();
        let pools = pools_by_name(validate_pools(&configs)?);
        Ok(Ipam {
            db,
            pools,
            path,
            changes: PoolChanges::default(),
            demand: OnceLock::new(),
            commits: OnceLock::new(),
        })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What [`Ipam::open`] changed in the store's pools.
    pub fn pool_changes(&self) -> &PoolChanges {
        &self.changes
    }

    /// Pools in effect.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values()
    }

    /// The database, for the driver's own tables in the same file; use the
    /// `*_in` methods to change addresses in the driver's transaction.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn write<T>(
        &self,
        op: impl FnOnce(&WriteTransaction) -> Result<T, IpamError>,
    ) -> Result<T, IpamError> {
        let txn = self.db.begin_write().ctx("begin write")?;
        // On error `txn` is dropped, which aborts it: nothing half-applied.
        let out = op(&txn)?;
        let started = std::time::Instant::now();
        let committed = store::commit(txn);
        if let Some(observe) = self.commits.get() {
            observe(started.elapsed());
        }
        committed?;
        Ok(out)
    }

    fn read(&self) -> Result<ReadTransaction, IpamError> {
        self.db.begin_read().ctx("begin read")
    }

    /// One address of each family of `pool` for `owner`; a retry returns the
    /// same addresses.
    pub fn allocate(&self, owner: &Owner, pool: &str) -> Result<Allocation, IpamError> {
        self.write(|txn| self.allocate_in(txn, owner, pool))
    }

    /// [`Ipam::allocate`] inside the caller's transaction; abort it on error.
    pub fn allocate_in(
        &self,
        txn: &WriteTransaction,
        owner: &Owner,
        pool: &str,
    ) -> Result<Allocation, IpamError> {
        allocator::allocate(
            txn,
            &self.pools,
            owner,
            pool,
            self.demand.get().map(|d| d.as_ref()),
        )
    }

    /// Exactly `addresses` for `owner`; conflicts are errors naming the holder.
    pub fn allocate_static(
        &self,
        owner: &Owner,
        addresses: &[IpNetwork],
    ) -> Result<Allocation, IpamError> {
        self.write(|txn| self.allocate_static_in(txn, owner, addresses))
    }

    /// [`Ipam::allocate_static`] inside the caller's transaction.
    pub fn allocate_static_in(
        &self,
        txn: &WriteTransaction,
        owner: &Owner,
        addresses: &[IpNetwork],
    ) -> Result<Allocation, IpamError> {
        allocator::allocate_static(txn, &self.pools, owner, addresses)
    }

    /// Releases what `owner` holds; `None` if it held nothing.
    pub fn release(&self, owner: &Owner) -> Result<Option<Allocation>, IpamError> {
        self.write(|txn| self.release_in(txn, owner))
    }

    /// [`Ipam::release`] inside the caller's transaction.
    pub fn release_in(
        &self,
        txn: &WriteTransaction,
        owner: &Owner,
    ) -> Result<Option<Allocation>, IpamError> {
        allocator::release(txn, &self.pools, owner)
    }

    /// Releases every allocation of a claim.
    pub fn release_claim(&self, claim_uid: &str) -> Result<Vec<Allocation>, IpamError> {
        self.write(|txn| self.release_claim_in(txn, claim_uid))
    }

    /// [`Ipam::release_claim`] inside the caller's transaction.
    pub fn release_claim_in(
        &self,
        txn: &WriteTransaction,
        claim_uid: &str,
    ) -> Result<Vec<Allocation>, IpamError> {
        allocator::release_claim(txn, &self.pools, claim_uid)
    }

    /// Releases everything not owned by `live`; returns what was released.
    pub fn gc(&self, live: &BTreeSet<Owner>) -> Result<Vec<Allocation>, IpamError> {
        self.write(|txn| gc::gc(txn, &self.pools, live))
    }

    /// Records `block` of cluster pool `pool`, leased under the API object
    /// `lease`, and makes its free addresses allocatable (durable when this
    /// returns). `Ok(false)` if it was already recorded.
    pub fn add_block(&self, pool: &str, block: IpNetwork, lease: &str) -> Result<bool, IpamError> {
        self.write(|txn| blocks::add(txn, &self.pools, pool, block, lease))
    }

    /// Forgets `block` of `pool` so nothing more is handed out of it; call
    /// before deleting its lease. Refuses a block in use unless `force`
    /// (another node holds it: its allocations stay, listed in the result,
    /// and are never handed out again). Returns the owner keys in the block.
    pub fn remove_block(
        &self,
        pool: &str,
        block: IpNetwork,
        force: bool,
    ) -> Result<Vec<String>, IpamError> {
        self.write(|txn| blocks::remove(txn, pool, block, force))
    }

    /// Every block this node holds, with usage.
    pub fn blocks(&self) -> Result<Vec<BlockUsage>, IpamError> {
        blocks::usage(&self.read()?, &self.pools)
    }

    /// Records, in the caller's transaction, that this node leases the
    /// static `address` of cluster pool `pool` under the object `lease`;
    /// call after the lease exists and before [`Ipam::allocate_static_in`]
    /// in the same transaction. `Ok(false)` if already recorded.
    pub fn record_static_lease_in(
        &self,
        txn: &WriteTransaction,
        pool: &str,
        address: IpAddr,
        lease: &str,
    ) -> Result<bool, IpamError> {
        static_leases::record_own(txn, &self.pools, pool, address, lease)
    }

    /// The cluster pool a static `address` must be leased from on its own:
    /// `Some` when a cluster pool may hand it out, no block this node holds
    /// contains it and the store does not already record it as this node's
    /// single-address lease. `None` for addresses of node pools, of held
    /// blocks, already leased, or in no pool (those need no API call).
    pub fn needs_single_lease(&self, address: IpAddr) -> Result<Option<&Pool>, IpamError> {
        let Some(pool) = self
            .pools
            .values()
            .find(|p| p.is_cluster() && p.is_allocatable(address))
        else {
            return Ok(None);
        };
        let txn = self.read()?;
        let held = txn.open_table(store::BLOCKS).ctx("open ipam_blocks")?;
        let (fam, v) = crate::address::to_key(address);
        if blocks::containing(&held, pool.name(), fam, v)?.is_some() {
            return Ok(None);
        }
        let statics = txn
            .open_table(store::STATIC_LEASES)
            .ctx("open ipam_static_leases")?;
        if static_leases::is_own(&statics, pool.name(), address)? {
            return Ok(None);
        }
        Ok(Some(pool))
    }

    /// [`Ipam::add_block`], keeping the addresses of `foreign` (other
    /// nodes' single-address leases inside the block, as the API listed
    /// them after the block's lease was created) out of the free map, all
    /// in one commit.
    pub fn add_block_reserving(
        &self,
        pool: &str,
        block: IpNetwork,
        lease: &str,
        foreign: &[StaticLease],
    ) -> Result<bool, IpamError> {
        self.write(|txn| {
            for f in foreign {
                let node = match &f.holder {
                    Holder::Node(node) if f.pool == pool && block.contains(f.address) => node,
                    _ => {
                        return Err(IpamError::InvalidStaticLease {
                            pool: f.pool.clone(),
                            address: f.address,
                            reason: format!(
                                "not another node's lease inside block {block} of pool {pool:?}"
                            ),
                        });
                    }
                };
                static_leases::reserve_foreign(txn, &self.pools, pool, f.address, &f.lease, node)?;
            }
            blocks::add(txn, &self.pools, pool, block, lease)
        })
    }

    /// Records that `node` holds `address` of `pool` under `lease`, so it is
    /// never handed out here (durable when this returns).
    pub fn reserve_foreign(
        &self,
        pool: &str,
        address: IpAddr,
        lease: &str,
        node: &str,
    ) -> Result<bool, IpamError> {
        self.write(|txn| {
            static_leases::reserve_foreign(txn, &self.pools, pool, address, lease, node)
        })
    }

    /// Forgets another node's single-address lease of `address` in `pool`
    /// (its object is gone): the address is free again if a held block
    /// contains it. `Ok(false)` if there was none.
    pub fn forget_foreign(&self, pool: &str, address: IpAddr) -> Result<bool, IpamError> {
        self.write(|txn| static_leases::forget_foreign(txn, &self.pools, pool, address))
    }

    /// Every single-address lease the store knows, this node's and others'.
    pub fn static_leases(&self) -> Result<Vec<StaticLease>, IpamError> {
        static_leases::list(&self.read()?)
    }

    /// Free addresses of `pool`/`family` (for a cluster pool: in the blocks
    /// this node holds). Reads every free interval of the pool.
    pub fn free_count(&self, pool: &str, family: Family) -> Result<u128, IpamError> {
        let txn = self.read()?;
        let table = txn.open_table(crate::store::FREE).ctx("open ipam_free")?;
        crate::free::count(&table, pool, family)
    }

    /// What `owner` holds.
    pub fn get(&self, owner: &Owner) -> Result<Option<Allocation>, IpamError> {
        status::get(&self.read()?, owner)
    }

    /// Owner key holding `ip`.
    pub fn holder(&self, ip: IpAddr) -> Result<Option<String>, IpamError> {
        status::holder(&self.read()?, ip)
    }

    /// Every allocation, by owner key.
    pub fn list(&self) -> Result<Vec<Allocation>, IpamError> {
        status::list(&self.read()?)
    }

    /// Every pool with usage, allocations and orphans.
    pub fn status(&self) -> Result<Vec<PoolStatus>, IpamError> {
        status::pools_status(&self.read()?, &self.pools)
    }

    /// Broken invariants of the store (empty when consistent); see the
    /// crash test.
    pub fn verify(&self) -> Result<Vec<String>, IpamError> {
        crate::verify::verify(&self.read()?, &self.pools)
    }

    /// Allocations that their pool's current definition no longer covers.
    pub fn orphans(&self) -> Result<Vec<Allocation>, IpamError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|a| status::is_orphaned(&self.pools, a))
            .collect())
    }
}

/// Read-only view of the state file. It cannot open while the driver holds
/// the file ([`IpamError::Locked`]); it never repairs or changes the file.
pub struct IpamReader {
    db: ReadOnlyDatabase,
    pools: Pools,
    initialised: bool,
}

impl IpamReader {
    /// Opens `<state_dir>/state.redb` read-only. A file left by a crashed
    /// driver is first recovered the way the driver would on start (redb's
    /// own repair; no allocation changes), since redb cannot read it
    /// read-only before that.
    pub fn open(state_dir: &Path) -> Result<IpamReader, IpamError> {
        let path = state_file(state_dir);
        let db = match store::open_read(&path) {
            Err(IpamError::NeedsRecovery { .. }) => {
                drop(store::open_write(&path, false)?);
                store::open_read(&path)?
            }
            other => other?,
        };
        let txn = db.begin_read().ctx("begin read")?;
        let initialised = store::check_schema_read(&path, &txn)?;
        let pools = if initialised {
            let table = txn.open_table(POOLS).ctx("open ipam_pools")?;
            let configs: Vec<PoolConfig> = read_snapshot(&table)?.into_values().collect();
            pools_by_name(validate_pools(&configs)?)
        } else {
            Pools::new()
        };
        drop(txn);
        Ok(IpamReader {
            db,
            pools,
            initialised,
        })
    }

    fn read(&self) -> Result<ReadTransaction, IpamError> {
        self.db.begin_read().ctx("begin read")
    }

    /// Every allocation, by owner key.
    pub fn list(&self) -> Result<Vec<Allocation>, IpamError> {
        if !self.initialised {
            return Ok(Vec::new());
        }
        status::list(&self.read()?)
    }

    /// Every pool with usage, allocations and orphans.
    pub fn status(&self) -> Result<Vec<PoolStatus>, IpamError> {
        if !self.initialised {
            return Ok(Vec::new());
        }
        status::pools_status(&self.read()?, &self.pools)
    }

    /// Every block of a cluster pool this node holds, with usage.
    pub fn blocks(&self) -> Result<Vec<BlockUsage>, IpamError> {
        if !self.initialised {
            return Ok(Vec::new());
        }
        blocks::usage(&self.read()?, &self.pools)
    }

    /// Every single-address lease the store knows, this node's and others'.
    pub fn static_leases(&self) -> Result<Vec<StaticLease>, IpamError> {
        if !self.initialised {
            return Ok(Vec::new());
        }
        static_leases::list(&self.read()?)
    }

    /// Allocations that their pool's current definition no longer covers.
    pub fn orphans(&self) -> Result<Vec<Allocation>, IpamError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|a| status::is_orphaned(&self.pools, a))
            .collect())
    }
}
