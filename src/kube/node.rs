//! The Node object this driver runs on, as the owner of its slices.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use tracing::warn;

/// What reading this node's Node object gave.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeLookup {
    /// It exists: the owner reference to it (with its current UID).
    Found(OwnerReference),
    /// The API server says there is none: deleted (by hand, by an
    /// autoscaler), until the kubelet registers it again with a new UID.
    /// Anything owned by the old one is collected, so nothing should be
    /// written meanwhile.
    Gone,
    /// It could not be read (the API server failed, or the object has no
    /// UID): nothing is known.
    Unknown,
}

/// Reads the Node object `node`.
pub async fn lookup_node(client: &kube::Client, node: &str) -> NodeLookup {
    let api: Api<Node> = Api::all(client.clone());
    match api.get(node).await {
        // The API refuses an owner reference without a UID.
        Ok(n) => match n.metadata.uid.filter(|uid| !uid.is_empty()) {
            Some(uid) => NodeLookup::Found(OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.to_string(),
                uid,
                ..Default::default()
            }),
            None => {
                warn!(node, "the Node object has no UID");
                NodeLookup::Unknown
            }
        },
        // Logged by the caller, which knows whether it is news.
        Err(kube::Error::Api(status)) if status.code == 404 => NodeLookup::Gone,
        Err(e) => {
            warn!(node, error = %e, "cannot read the Node object");
            NodeLookup::Unknown
        }
    }
}

/// The Node object as the slices' owner, so they go when the node goes;
/// `None` when it cannot be read or does not exist.
pub async fn node_owner(client: &kube::Client, node: &str) -> Option<OwnerReference> {
    match lookup_node(client, node).await {
        NodeLookup::Found(owner) => Some(owner),
        NodeLookup::Gone => {
            warn!(node, "the Node object does not exist");
            None
        }
        NodeLookup::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fake_api::FakeApi;

    #[tokio::test]
    async fn a_node_is_found_with_its_uid_and_a_deleted_one_is_gone() {
        let api = FakeApi::new();
        api.put_node("node-a", "uid-1");
        match lookup_node(&api.client(), "node-a").await {
            NodeLookup::Found(owner) => {
                assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Node", "uid-1"))
            }
            other => panic!("{other:?}"),
        }
        api.delete_node("node-a");
        assert_eq!(lookup_node(&api.client(), "node-a").await, NodeLookup::Gone);
        assert_eq!(node_owner(&api.client(), "node-a").await, None);
    }
}
