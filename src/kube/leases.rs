//! The lease objects of cluster-wide IPAM pools: one `IPBlock`
//! (`sriov.dra.dev/v1alpha1`, cluster-scoped, CRD in the chart) per block a
//! node holds, named deterministically from pool and block
//! ([`ipam::lease_name`]), owned by the Node.
//!
//! Arbitration is the API server's: a node claims a block with a plain
//! `create`, and AlreadyExists means another node was first. No lock, no
//! update, no lease renewal: the object lives as long as the node holds the
//! block, and garbage collection removes it with the Node.

use std::borrow::Cow;

use ipnetwork::IpNetwork;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use serde::{Deserialize, Serialize};

/// API group of the lease objects (the driver's config API group).
pub const GROUP: &str = "sriov.dra.dev";
/// API version of the lease objects.
pub const VERSION: &str = "v1alpha1";
/// Label naming the pool, for listing a pool's leases.
pub const POOL_LABEL: &str = "sriov.dra.dev/pool";
/// Label naming the node, for listing a node's leases at start.
pub const NODE_LABEL: &str = "sriov.dra.dev/node";

/// An `IPBlock` object as it travels: `spec` fields are strings so one
/// malformed object (hand-edited) is an error naming it instead of breaking
/// the decoding of a whole list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpBlock {
    /// `sriov.dra.dev/v1alpha1`.
    pub api_version: String,
    /// `IPBlock`.
    pub kind: String,
    /// Name, labels, owner reference to the Node.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What is leased to whom.
    #[serde(default)]
    pub spec: IpBlockSpec,
}

/// The `spec` of an [`IpBlock`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpBlockSpec {
    /// Pool the block belongs to.
    #[serde(default)]
    pub pool: String,
    /// The block in CIDR form.
    #[serde(default)]
    pub cidr: String,
    /// The node holding it.
    #[serde(default)]
    pub node_name: String,
}

impl kube::Resource for IpBlock {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "IPBlock".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "ipblocks".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A lease object, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Object name.
    pub name: String,
    /// Object UID (for a delete that cannot hit a re-created object).
    pub uid: Option<String>,
    /// Pool.
    pub pool: String,
    /// The block.
    pub cidr: IpNetwork,
    /// Holder.
    pub node: String,
    /// Whether it leases a single static address
    /// ([`crate::kube::static_leases`]) rather than a block.
    pub single_address: bool,
}

impl Lease {
    /// Checks an object from the API.
    pub fn from_object(object: &IpBlock) -> Result<Lease, LeaseError> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let invalid = |reason: String| LeaseError::Invalid {
            name: name.clone(),
            reason,
        };
        let cidr: IpNetwork = object
            .spec
            .cidr
            .parse()
            .map_err(|e| invalid(format!("spec.cidr {:?}: {e}", object.spec.cidr)))?;
        if object.spec.pool.is_empty() || object.spec.node_name.is_empty() {
            return Err(invalid("spec.pool and spec.nodeName must be set".into()));
        }
        Ok(Lease {
            name: name.clone(),
            uid: object.metadata.uid.clone(),
            pool: object.spec.pool.clone(),
            cidr,
            node: object.spec.node_name.clone(),
            single_address: crate::kube::static_leases::is_static(object),
        })
    }
}

/// What a lease call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API server refused or could not be reached.
    #[error("IPBlock {name}: {source}")]
    Api {
        /// Object (or `*` for a list).
        name: String,
        /// The client's error.
        source: kube::Error,
    },
    /// An object in the API does not say what a lease must.
    #[error("IPBlock {name} is malformed: {reason}")]
    Invalid {
        /// Object name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This node now holds the block.
    Created,
    /// The object exists already (another node was first, or this node
    /// before a lost state file).
    Exists,
}

/// The `IPBlock` objects, through one client.
#[derive(Clone)]
pub struct IpBlocks {
    api: Api<IpBlock>,
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl IpBlocks {
    /// Lease objects through `client`.
    pub fn new(client: kube::Client) -> Self {
        IpBlocks {
            api: Api::all(client),
        }
    }

    /// Claims `cidr` of `pool` for `node` with a create; the API server's
    /// AlreadyExists is the only arbitration.
    pub async fn claim(
        &self,
        pool: &str,
        cidr: IpNetwork,
        node: &str,
        owner: &OwnerReference,
    ) -> Result<Claimed, LeaseError> {
        let name = ipam::lease_name(pool, &cidr);
        let object = IpBlock {
            api_version: format!("{GROUP}/{VERSION}"),
            kind: "IPBlock".into(),
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    [
                        (POOL_LABEL.to_string(), pool.to_string()),
                        (NODE_LABEL.to_string(), node.to_string()),
                    ]
                    .into(),
                ),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            spec: IpBlockSpec {
                pool: pool.into(),
                cidr: cidr.to_string(),
                node_name: node.into(),
            },
        };
        match self.api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(Claimed::Created),
            Err(e) if is_status(&e, 409) => Ok(Claimed::Exists),
            Err(source) => Err(LeaseError::Api { name, source }),
        }
    }

    /// The lease named `name`, if it exists.
    pub async fn get(&self, name: &str) -> Result<Option<Lease>, LeaseError> {
        match self.api.get_opt(name).await {
            Ok(Some(object)) => Lease::from_object(&object).map(Some),
            Ok(None) => Ok(None),
            Err(source) => Err(LeaseError::Api {
                name: name.into(),
                source,
            }),
        }
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<Lease>, LeaseError> {
        list_leases(&self.api, &format!("{label}={value}")).await
    }

    /// The leases `node` holds.
    pub async fn of_node(&self, node: &str) -> Result<Vec<Lease>, LeaseError> {
        self.list(NODE_LABEL, node).await
    }

    /// Every lease of `pool`, whoever holds it.
    pub async fn of_pool(&self, pool: &str) -> Result<Vec<Lease>, LeaseError> {
        self.list(POOL_LABEL, pool).await
    }

    /// Deletes `lease` if it is still the object this node holds (UID
    /// precondition: a re-created object of the same name is another
    /// node's). A lease already gone is success.
    pub async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let params = DeleteParams {
            preconditions: lease.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api.delete(&lease.name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(source) => Err(LeaseError::Api {
                name: lease.name.clone(),
                source,
            }),
        }
    }
}

/// The IPBlocks `selector` picks, as leases. Shared by block and
/// single-address leases: both are IPBlocks and both pass over objects
/// that do not parse the same way.
pub(crate) async fn list_leases(
    api: &Api<IpBlock>,
    selector: &str,
) -> Result<Vec<Lease>, LeaseError> {
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|source| LeaseError::Api {
            name: "*".into(),
            source,
        })?;
    let mut out = Vec::new();
    for object in &list.items {
        match Lease::from_object(object) {
            Ok(lease) => out.push(lease),
            // Someone else's hand-made object: its name still blocks a
            // create of the same name, so nothing is handed out twice.
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed IPBlock"),
        }
    }
    Ok(out)
}
