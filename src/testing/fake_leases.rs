//! The `IPBlock` lease objects of the fake API server: create (409
//! AlreadyExists with the API server's `Status` body when the name is
//! taken), get, list by label selector, delete with a UID precondition, and
//! the garbage collector's part when a Node goes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::fake_api::{lock, percent_decode};

/// The lease collection's path.
const IP_BLOCKS: &str = "/apis/sriov.dra.dev/v1alpha1/ipblocks";

/// Lease objects by name, as JSON.
#[derive(Clone, Default)]
pub struct FakeIpBlocks {
    objects: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
    next_uid: Arc<AtomicU64>,
}

type Answer = (http::StatusCode, Vec<u8>);

fn json(code: http::StatusCode, v: &serde_json::Value) -> Answer {
    (code, serde_json::to_vec(v).unwrap_or_default())
}

/// A `Status` failure body as the API server sends it.
fn status(code: u16, reason: &str, name: &str, message: String) -> Answer {
    json(
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
        &serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason,
            "details": {"name": name, "group": "sriov.dra.dev", "kind": "ipblocks"},
            "code": code,
        }),
    )
}

/// The `key=value` terms of a `labelSelector` query parameter.
fn label_selector(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("labelSelector="))
        .flat_map(|sel| {
            percent_decode(sel)
                .split(',')
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

impl FakeIpBlocks {
    /// Answers a request for an `IPBlock` path; `None` for any other path.
    pub(super) fn answer(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Option<Answer> {
        let rest = path.strip_prefix(IP_BLOCKS)?;
        let name = rest.trim_start_matches('/');
        let mut objects = lock(&self.objects);
        Some(match (method, name.is_empty()) {
            ("POST", true) => {
                let mut object: serde_json::Value = match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return Some(status(400, "BadRequest", "", e.to_string())),
                };
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if objects.contains_key(&name) {
                    return Some(status(
                        409,
                        "AlreadyExists",
                        &name,
                        format!("ipblocks.sriov.dra.dev \"{name}\" already exists"),
                    ));
                }
                let uid = self.next_uid.fetch_add(1, Ordering::Relaxed);
                object["metadata"]["uid"] = format!("ipblock-uid-{uid}").into();
                object["metadata"]["resourceVersion"] = uid.to_string().into();
                object["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z".into();
                objects.insert(name, object.clone());
                json(http::StatusCode::CREATED, &object)
            }
            ("GET", false) => match objects.get(name) {
                Some(o) => json(http::StatusCode::OK, o),
                None => status(404, "NotFound", name, format!("\"{name}\" not found")),
            },
            ("GET", true) => {
                let wanted = label_selector(query);
                let items: Vec<&serde_json::Value> = objects
                    .values()
                    .filter(|o| {
                        wanted
                            .iter()
                            .all(|(k, v)| o["metadata"]["labels"][k].as_str() == Some(v.as_str()))
                    })
                    .collect();
                json(
                    http::StatusCode::OK,
                    &serde_json::json!({
                        "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "IPBlockList",
                        "metadata": {}, "items": items,
                    }),
                )
            }
            ("DELETE", false) => {
                let options: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
                let want_uid = options["preconditions"]["uid"].as_str();
                match objects.get(name) {
                    None => status(404, "NotFound", name, format!("\"{name}\" not found")),
                    Some(o) if want_uid.is_some() && o["metadata"]["uid"].as_str() != want_uid => {
                        status(409, "Conflict", name, "precondition failed: UID".into())
                    }
                    Some(_) => {
                        let gone = objects.remove(name).unwrap_or_default();
                        json(http::StatusCode::OK, &gone)
                    }
                }
            }
            _ => status(405, "MethodNotAllowed", name, format!("{method} {path}")),
        })
    }

    /// Every lease object, by name.
    pub fn all(&self) -> BTreeMap<String, serde_json::Value> {
        lock(&self.objects).clone()
    }

    /// Stores an object as if some client had created it.
    pub fn put(&self, object: &serde_json::Value) {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        lock(&self.objects).insert(name, object.clone());
    }

    /// Plays the garbage collector for a deleted owner: removes every
    /// object with an ownerReference to `uid`; returns their names.
    pub fn collect_owned_by(&self, uid: &str) -> Vec<String> {
        let mut objects = lock(&self.objects);
        let owned: Vec<String> = objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid)))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in &owned {
            objects.remove(name);
        }
        owned
    }
}

#[cfg(test)]
mod tests {
    use crate::kube::leases::{Claimed, IpBlocks};
    use crate::testing::fake_api::FakeApi;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: "n".into(),
            uid: uid.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn create_arbitrates_lists_filter_by_label_and_node_deletion_collects() {
        let api = FakeApi::new();
        api.put_node("node-a", "uid-a");
        let blocks = IpBlocks::new(api.client());
        let block = "10.0.0.64/26".parse().unwrap();
        assert_eq!(
            blocks
                .claim("mid", block, "node-a", &owner("uid-a"))
                .await
                .unwrap(),
            Claimed::Created
        );
        assert_eq!(
            blocks
                .claim("mid", block, "node-b", &owner("uid-b"))
                .await
                .unwrap(),
            Claimed::Exists,
            "409 AlreadyExists"
        );
        let lease = blocks.get("mid-10-0-0-64-26").await.unwrap().unwrap();
        assert_eq!((lease.node.as_str(), lease.cidr), ("node-a", block));
        assert_eq!(blocks.of_node("node-a").await.unwrap().len(), 1);
        assert!(blocks.of_node("node-b").await.unwrap().is_empty());
        assert_eq!(blocks.of_pool("mid").await.unwrap().len(), 1);
        assert_eq!(api.delete_node("node-a"), ["mid-10-0-0-64-26"]);
        assert!(blocks.get("mid-10-0-0-64-26").await.unwrap().is_none());
        let calls = api.calls();
        assert_eq!(calls[0].method, "POST");
        assert!(calls[4].query.contains("labelSelector="), "{:?}", calls[4]);
    }

    #[tokio::test]
    async fn a_delete_never_hits_a_re_created_object_of_the_same_name() {
        let api = FakeApi::new();
        let blocks = IpBlocks::new(api.client());
        let block = "10.0.0.0/26".parse().unwrap();
        blocks
            .claim("mid", block, "node-a", &owner("a"))
            .await
            .unwrap();
        let old = blocks.get("mid-10-0-0-0-26").await.unwrap().unwrap();
        api.ip_blocks().collect_owned_by("a");
        blocks
            .claim("mid", block, "node-b", &owner("b"))
            .await
            .unwrap();
        blocks.release(&old).await.unwrap();
        let now = blocks.get("mid-10-0-0-0-26").await.unwrap().unwrap();
        assert_eq!(
            now.node, "node-b",
            "node-b's lease survived node-a's stale delete"
        );
    }
}
