//! Everything that can go wrong in the IPAM, worded for the person who has
//! to act on it.

use std::net::IpAddr;
use std::path::PathBuf;

use thiserror::Error;

use crate::address::Family;
use crate::owner::OwnerError;
use crate::validate::PoolConfigError;

/// Error of any IPAM operation. A failed operation changed nothing.
#[derive(Debug, Error)]
pub enum IpamError {
    /// A pool definition is invalid.
    #[error(transparent)]
    Config(#[from] PoolConfigError),
    /// An owner cannot be keyed.
    #[error(transparent)]
    Owner(#[from] OwnerError),
    /// A claim asked for a pool this node does not define.
    #[error("IPAM pool {pool:?} is not defined in this node's config")]
    UnknownPool {
        /// Requested pool.
        pool: String,
    },
    /// No free address is left.
    #[error(
        "IPAM pool {pool:?} is exhausted: all {size} allocatable {family} addresses are in use"
    )]
    PoolExhausted {
        /// Pool name.
        pool: String,
        /// Family that ran out.
        family: Family,
        /// Number of allocatable addresses of that family.
        size: u128,
    },
    /// A cluster pool has no free address left in the blocks this node
    /// holds; the driver leases another block in the background.
    #[error(
        "IPAM pool {pool:?} has no free {family} address in the {blocks} block(s) this node \
         leases; a new block is being leased in the background, retry shortly"
    )]
    BlocksExhausted {
        /// Pool name.
        pool: String,
        /// Family that ran out.
        family: Family,
        /// Blocks of that family this node holds.
        blocks: usize,
    },
    /// Every block of a cluster pool is leased by some node.
    #[error(
        "IPAM pool {pool:?} is exhausted cluster-wide: {blocks} blocks leased by {nodes} nodes"
    )]
    ClusterExhausted {
        /// Pool name.
        pool: String,
        /// Blocks leased.
        blocks: u128,
        /// Nodes holding them.
        nodes: usize,
    },
    /// A block cannot be recorded for a pool.
    #[error("IPAM pool {pool:?}, block {block}: {reason}")]
    InvalidBlock {
        /// Pool name.
        pool: String,
        /// The block.
        block: ipnetwork::IpNetwork,
        /// What is wrong.
        reason: String,
    },
    /// A block still holds addresses and cannot be given back.
    #[error("IPAM pool {pool:?}, block {block}: {used} address(es) still in use")]
    BlockInUse {
        /// Pool name.
        pool: String,
        /// The block.
        block: ipnetwork::IpNetwork,
        /// Addresses held.
        used: usize,
    },
    /// A static address of a cluster pool outside every block this node holds.
    #[error(
        "address {address} requested by {owner} is in cluster-wide pool {pool:?} but in no \
         block this node leases; another node may hold it"
    )]
    NotLeased {
        /// Requested address.
        address: IpAddr,
        /// Requesting owner key.
        owner: String,
        /// The cluster pool.
        pool: String,
    },
    /// A static address of a cluster pool that another node's
    /// single-address lease holds.
    #[error(
        "address {address} requested by {owner} in cluster-wide pool {pool:?} is held by \
         node {node} (IPBlock {lease})"
    )]
    HeldByNode {
        /// Requested address.
        address: IpAddr,
        /// Requesting owner key.
        owner: String,
        /// The cluster pool.
        pool: String,
        /// The node holding it.
        node: String,
        /// Its lease object.
        lease: String,
    },
    /// A single-address lease cannot be recorded.
    #[error("IPAM pool {pool:?}, single-address lease of {address}: {reason}")]
    InvalidStaticLease {
        /// Pool name.
        pool: String,
        /// The address.
        address: IpAddr,
        /// What is wrong.
        reason: String,
    },
    /// A static request names an address someone else holds.
    #[error("address {address} requested by {owner} is already allocated to {holder}")]
    AddressInUse {
        /// Requested address.
        address: IpAddr,
        /// Requesting owner key.
        owner: String,
        /// Owner key holding it.
        holder: String,
    },
    /// A static request names an address that belongs to the network itself.
    #[error(
        "address {address} requested by {owner} is {what} of pool {pool:?} and is never assigned"
    )]
    AddressReserved {
        /// Requested address.
        address: IpAddr,
        /// Requesting owner key.
        owner: String,
        /// Pool whose subnet holds the address.
        pool: String,
        /// "the gateway", "the network address", ...
        what: &'static str,
    },
    /// A static request is malformed.
    #[error("static addresses requested by {owner}: {reason}")]
    InvalidStatic {
        /// Requesting owner key.
        owner: String,
        /// What is wrong.
        reason: String,
    },
    /// The owner already holds a different allocation.
    #[error("{owner} already holds {existing}; release it before asking for {requested}")]
    OwnerHoldsOther {
        /// Owner key.
        owner: String,
        /// What it holds.
        existing: String,
        /// What was asked for now.
        requested: String,
    },
    /// Another process (normally the running driver) has the store open.
    #[error(
        "IPAM state file {path} is locked by another process: the driver is running \
         (or another `sriov-dra ipam` command). While the driver runs, read the state through \
         its debug API (http://127.0.0.1:9464 by default); stop it to change the state here"
    )]
    Locked {
        /// State file.
        path: PathBuf,
    },
    /// The state file does not exist.
    #[error(
        "IPAM state file {path} does not exist (wrong --state-dir, or the driver never ran here)"
    )]
    Missing {
        /// State file.
        path: PathBuf,
    },
    /// A read-only open found a file that a crashed writer left behind.
    #[error(
        "IPAM state file {path} needs recovery after a crash and cannot be read read-only; \
         start the driver (it recovers the file when it opens it) or run a write command \
         such as `sriov-dra ipam gc` while the driver is stopped"
    )]
    NeedsRecovery {
        /// State file.
        path: PathBuf,
    },
    /// The state file cannot be read as a redb database or fails its checks.
    #[error(
        "IPAM state file {path} is corrupt ({detail}). It was left untouched. Keep a copy for \
         diagnosis; to start over stop the driver, move the file aside and restart it: the \
         driver then forgets every address it handed out, so first make sure no pod on this \
         node still uses one"
    )]
    Corrupt {
        /// State file.
        path: PathBuf,
        /// What redb or the schema check found.
        detail: String,
    },
    /// The state file was written by a different schema version.
    #[error(
        "IPAM state file {path} has schema version {found}; this sriov-dra understands \
         version {supported}. It was left untouched: run a sriov-dra release that knows \
         version {found}"
    )]
    UnsupportedSchema {
        /// State file.
        path: PathBuf,
        /// Version in the file.
        found: u64,
        /// Version this build writes.
        supported: u64,
    },
    /// The state directory or file cannot be accessed.
    #[error("IPAM state {path}: {source}")]
    Io {
        /// Path being accessed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A stored record contradicts another; nothing was changed.
    #[error("IPAM state is inconsistent: {detail}")]
    Inconsistent {
        /// What contradicts what.
        detail: String,
    },
    /// redb failed during an operation.
    #[error("IPAM store: {context}: {source}")]
    Store {
        /// Operation that failed.
        context: &'static str,
        /// redb's error.
        source: redb::Error,
    },
}

/// Attaches the operation name to redb errors.
pub(crate) trait StoreContext<T> {
    fn ctx(self, context: &'static str) -> Result<T, IpamError>;
}

impl<T, E: Into<redb::Error>> StoreContext<T> for Result<T, E> {
    fn ctx(self, context: &'static str) -> Result<T, IpamError> {
        self.map_err(|e| IpamError::Store {
            context,
            source: e.into(),
        })
    }
}
