//! Single-address leases of cluster-wide pools: a static address of a
//! cluster pool outside every block this node holds is leased as an
//! `IPBlock` of its own (`<pool>-10-20-0-5-32`, a /32 or /128), labelled
//! static and with the name of the block lease that would contain it.
//!
//! Correctness in one paragraph: every node creates its own lease before it
//! checks for the other kind. A node wanting static address X creates the
//! single-address lease S(X) (AlreadyExists held by another node: refused),
//! then GETs the block lease B(X) that would contain X; a node leasing the
//! block B creates B, then LISTs the single-address leases labelled with
//! B's name and keeps every one held by another node out of its free map
//! before any address of B is handed out. The API server orders the two
//! creates and the two reads: if S(X) was created before B's LIST, that
//! LIST sees it and B's holder never hands X out; otherwise B's create
//! came before S(X)'s create, hence before the GET of B(X), which then
//! sees B held by the other node, and the static node deletes S(X) and
//! fails. Either way X is handed out by at most one node, with no lock.
//!
//! This is the one API call in the Prepare path, and only for static
//! addresses outside the node's blocks.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ipam::{IpNetwork, Pool, lease_name};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::PostParams;

use crate::kube::leases::{
    GROUP, IpBlock, IpBlockSpec, IpBlocks, Lease, LeaseError, NODE_LABEL, POOL_LABEL, VERSION,
};

/// Label marking a single-address lease (`"true"`).
pub const STATIC_LABEL: &str = "sriov.dra.dev/static";
/// Label naming the block lease that would contain a single-address
/// lease's address: what a node leasing that block lists.
pub const BLOCK_LABEL: &str = "sriov.dra.dev/block";

/// Why a static address of a cluster pool cannot be leased.
#[derive(Debug, thiserror::Error)]
pub enum StaticLeaseError {
    /// Another node leases the address itself.
    #[error(
        "static address {address} of cluster-wide pool {pool:?} is held by node {node} \
         (IPBlock {lease})"
    )]
    Held {
        /// The address.
        address: IpAddr,
        /// The pool.
        pool: String,
        /// The holder.
        node: String,
        /// Its lease object.
        lease: String,
    },
    /// Another node leases the block containing the address.
    #[error(
        "static address {address} of cluster-wide pool {pool:?} lies in block {block}, \
         leased by node {node} (IPBlock {lease})"
    )]
    InBlock {
        /// The address.
        address: IpAddr,
        /// The pool.
        pool: String,
        /// The block.
        block: IpNetwork,
        /// The block's holder.
        node: String,
        /// The block's lease object.
        lease: String,
    },
    /// The pool has no block size for the address's family.
    #[error("static address {address} is not in a family cluster-wide pool {pool:?} leases")]
    NoBlockSize {
        /// The address.
        address: IpAddr,
        /// The pool.
        pool: String,
    },
    /// The lease is in flight in this process (being returned, or another
    /// Prepare of the same address).
    #[error("IPBlock {lease} is being changed by this node; retry")]
    Busy {
        /// The lease object.
        lease: String,
    },
    /// The Node, owner of every lease, could not be read.
    #[error("cannot lease a static address: the Node {node} (owner of its IPBlock) is unreadable")]
    NoOwner {
        /// The node.
        node: String,
    },
    /// The API call failed.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// A single-address lease this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    /// Its object name.
    pub lease: String,
    /// Whether this call created it (a failed Prepare deletes only those).
    pub created: bool,
}

/// The single address `address` as a network (/32 or /128).
pub fn single(address: IpAddr) -> IpNetwork {
    IpNetwork::from(address)
}

/// The block of `pool` that would contain `address`, from its `blockSize`.
pub fn block_of(pool: &Pool, address: IpAddr) -> Option<IpNetwork> {
    let prefix = pool.block_prefix(ipam::Family::of(address))?;
    let net = IpNetwork::new(address, prefix).ok()?;
    IpNetwork::new(net.network(), prefix).ok()
}

/// What is being done to a single-address lease in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// A Prepare is between creating the lease and committing its record.
    Preparing,
    /// The reconcile is between checking the store and deleting the lease.
    Returning,
}

/// Marks of this process's single-address leases in flight, by name.
type Marks = Arc<Mutex<BTreeMap<String, Mark>>>;

/// A mark on one lease; dropping it lifts the mark.
#[derive(Debug)]
pub struct MarkGuard {
    marks: Marks,
    name: String,
}

impl Drop for MarkGuard {
    fn drop(&mut self) {
        lock(&self.marks).remove(&self.name);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The single-address leases of one node, through one client. Clones
/// share the marks that keep the reconcile from deleting a lease a Prepare
/// has created but not yet recorded.
#[derive(Clone)]
pub struct StaticLeases {
    api: Api<IpBlock>,
    blocks: IpBlocks,
    node: String,
    marks: Marks,
}

impl StaticLeases {
    /// Single-address leases of `node` through `client`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        StaticLeases {
            api: Api::all(client.clone()),
            blocks: IpBlocks::new(client),
            node: node.to_string(),
            marks: Marks::default(),
        }
    }

    fn mark(&self, name: String, mark: Mark) -> Option<MarkGuard> {
        let mut marks = lock(&self.marks);
        if marks.contains_key(&name) {
            return None;
        }
        marks.insert(name.clone(), mark);
        Some(MarkGuard {
            marks: self.marks.clone(),
            name,
        })
    }

    /// Marks `address` of `pool` as being prepared: hold the guard from
    /// before [`StaticLeases::acquire`] until the store commit that records
    /// the lease (or the failure that deletes it). Refused while the
    /// reconcile is returning that lease or another Prepare holds it.
    pub fn preparing(&self, pool: &str, address: IpAddr) -> Result<MarkGuard, StaticLeaseError> {
        let name = lease_name(pool, &single(address));
        self.mark(name.clone(), Mark::Preparing)
            .ok_or_else(|| StaticLeaseError::Busy { lease: name })
    }

    /// Marks the lease `name` as being returned by the reconcile; `None`
    /// while a Prepare holds it (then it is not returned this round).
    pub fn returning(&self, name: &str) -> Option<MarkGuard> {
        self.mark(name.to_string(), Mark::Returning)
    }

    fn object(&self, pool: &str, address: IpAddr, block: &str, owner: &OwnerReference) -> IpBlock {
        IpBlock {
            api_version: format!("{GROUP}/{VERSION}"),
            kind: "IPBlock".into(),
            metadata: ObjectMeta {
                name: Some(lease_name(pool, &single(address))),
                labels: Some(
                    [
                        (POOL_LABEL.to_string(), pool.to_string()),
                        (NODE_LABEL.to_string(), self.node.clone()),
                        (STATIC_LABEL.to_string(), "true".to_string()),
                        (BLOCK_LABEL.to_string(), block.to_string()),
                    ]
                    .into(),
                ),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            spec: IpBlockSpec {
                pool: pool.into(),
                cidr: single(address).to_string(),
                node_name: self.node.clone(),
            },
        }
    }

    /// Leases `address` of cluster pool `pool` for this node: create, then
    /// check the block that would contain it (see the module doc). A lease
    /// this node already holds (a re-prepare) is success.
    pub async fn acquire(
        &self,
        pool: &Pool,
        address: IpAddr,
        owner: &OwnerReference,
    ) -> Result<Acquired, StaticLeaseError> {
        let block = block_of(pool, address).ok_or_else(|| StaticLeaseError::NoBlockSize {
            address,
            pool: pool.name().to_string(),
        })?;
        let block_lease = lease_name(pool.name(), &block);
        let name = lease_name(pool.name(), &single(address));
        let object = self.object(pool.name(), address, &block_lease, owner);
        let created = match self.api.create(&PostParams::default(), &object).await {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.code == 409 => false,
            Err(source) => return Err(LeaseError::Api { name, source }.into()),
        };
        if !created {
            match self.blocks.get(&name).await? {
                Some(l) if l.node == self.node => {}
                Some(l) => {
                    return Err(StaticLeaseError::Held {
                        address,
                        pool: pool.name().to_string(),
                        node: l.node,
                        lease: name,
                    });
                }
                // Deleted between our create and our read: its holder let
                // go; the caller's retry (the kubelet's) creates it.
                None => {
                    return Err(LeaseError::Invalid {
                        name,
                        reason: "deleted while this node tried to lease it; retry".into(),
                    }
                    .into());
                }
            }
        }
        match self.blocks.get(&block_lease).await {
            Ok(Some(b)) if b.node != self.node => {
                if created {
                    self.release(pool.name(), address).await?;
                }
                Err(StaticLeaseError::InBlock {
                    address,
                    pool: pool.name().to_string(),
                    block,
                    node: b.node,
                    lease: block_lease,
                })
            }
            Ok(_) => Ok(Acquired {
                lease: name,
                created,
            }),
            Err(e) => {
                if created {
                    self.release(pool.name(), address).await?;
                }
                Err(e.into())
            }
        }
    }

    /// Deletes this node's lease of `address` in `pool`, if it holds one
    /// (UID precondition: never another node's re-created object). Call
    /// after the store commit that released the address.
    pub async fn release(&self, pool: &str, address: IpAddr) -> Result<bool, LeaseError> {
        let name = lease_name(pool, &single(address));
        match self.blocks.get(&name).await? {
            Some(lease) if lease.node == self.node => {
                self.blocks.release(&lease).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Every single-address lease whose address lies in the block leased
    /// as `block_lease`, whoever holds it.
    pub async fn in_block(&self, block_lease: &str) -> Result<Vec<Lease>, LeaseError> {
        self.list(&format!("{BLOCK_LABEL}={block_lease},{STATIC_LABEL}=true"))
            .await
    }

    /// This node's single-address leases.
    pub async fn of_node(&self) -> Result<Vec<Lease>, LeaseError> {
        self.list(&format!("{NODE_LABEL}={},{STATIC_LABEL}=true", self.node))
            .await
    }

    async fn list(&self, selector: &str) -> Result<Vec<Lease>, LeaseError> {
        super::leases::list_leases(&self.api, selector).await
    }
}

/// Whether an `IPBlock` object is a single-address lease.
pub fn is_static(object: &IpBlock) -> bool {
    object
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(STATIC_LABEL))
        .is_some_and(|v| v == "true")
}

#[cfg(test)]
#[path = "static_leases_tests.rs"]
mod tests;
