//! The Node object this driver runs on, as the owner of its slices.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use tracing::warn;

/// The Node object as the slices' owner, so they go when the node goes.
pub async fn node_owner(client: &kube::Client, node: &str) -> Option<OwnerReference> {
    let api: Api<Node> = Api::all(client.clone());
    match api.get(node).await {
        // The API refuses an owner reference without a UID.
        Ok(n) => n
            .metadata
            .uid
            .filter(|uid| !uid.is_empty())
            .map(|uid| OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.to_string(),
                uid,
                ..Default::default()
            }),
        Err(e) => {
            warn!(node, error = %e, "cannot read the Node object; slices will have no owner");
            None
        }
    }
}
