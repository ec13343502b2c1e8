//! An in-process stand-in for the parts of the API server the driver talks
//! to (ResourceClaims and their status, ResourceSlices, Nodes), as a `tower`
//! service behind a real `kube::Client`: tests and benchmarks get the
//! client's real request building, JSON decoding and error mapping without
//! a cluster.
//!
//! Every request is recorded (method, path, query, content type), so a test
//! can hold the driver's API calls against the chart's RBAC rules.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kube::client::Body;

use super::fake_watch::{self, WatchLog};

/// Path prefix of namespaced `resource.k8s.io/v1` objects.
const PREFIX: &str = "/apis/resource.k8s.io/v1/namespaces/";
/// The cluster-scoped ResourceSlice collection.
const SLICES: &str = "/apis/resource.k8s.io/v1/resourceslices";
/// The Node collection.
const NODES: &str = "/api/v1/nodes/";

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCall {
    /// `GET`, `PATCH`, `DELETE`, ...
    pub method: String,
    /// The URL path, e.g. `/api/v1/nodes/node-a`.
    pub path: String,
    /// The URL query, without `?` (empty when none).
    pub query: String,
    /// The request's `Content-Type`, when it had one (server-side apply is
    /// `application/apply-patch+yaml`).
    pub content_type: Option<String>,
}

impl ApiCall {
    /// The call a request's head makes, whichever transport carried it
    /// (the in-process client, the HTTP front).
    pub fn from_parts(parts: &http::request::Parts) -> ApiCall {
        ApiCall {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }
}

/// Shared state of a fake API server.
#[derive(Clone, Default)]
pub struct FakeApi {
    /// Claims by `namespace/name`, as JSON.
    claims: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    /// ResourceSlices by name.
    slices: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
    /// Nodes by name.
    nodes: Arc<Mutex<HashMap<String, serde_json::Value>>>,
    calls: Arc<Mutex<Vec<ApiCall>>>,
    requests: Arc<AtomicUsize>,
    /// Every ResourceSlice write, for watches.
    slice_events: WatchLog,
    /// IPAM lease objects (`fake_leases`).
    ip_blocks: super::fake_leases::FakeIpBlocks,
    /// How many of the next ResourceSlice writes fail with a 500.
    failing_slice_writes: Arc<AtomicUsize>,
}

/// Locks `m`, carrying on after a panic elsewhere (the fake's data stays
/// usable for the test that reads it).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeApi {
    /// An API server without objects.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores (or replaces) a ResourceClaim given as its JSON; the key is its
    /// `metadata.namespace` and `metadata.name`.
    pub fn put_claim(&self, claim: &serde_json::Value) {
        let ns = claim["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = claim["metadata"]["name"].as_str().unwrap_or_default();
        let body = serde_json::to_vec(claim).unwrap_or_default();
        lock(&self.claims).insert(format!("{ns}/{name}"), body);
    }

    /// A stored claim, with the status the driver applied.
    pub fn claim(&self, namespace: &str, name: &str) -> Option<serde_json::Value> {
        lock(&self.claims)
            .get(&format!("{namespace}/{name}"))
            .and_then(|b| serde_json::from_slice(b).ok())
    }

    /// Deletes a claim.
    pub fn delete_claim(&self, namespace: &str, name: &str) {
        lock(&self.claims).remove(&format!("{namespace}/{name}"));
    }

    /// Stores a Node object with `uid`.
    pub fn put_node(&self, name: &str, uid: &str) {
        lock(&self.nodes).insert(
            name.to_string(),
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "uid": uid},
            }),
        );
    }

    /// Deletes a Node and, playing the garbage collector, every IPAM lease
    /// it owns; returns the names of the collected leases. A node
    /// re-created gets a new UID with [`Self::put_node`].
    pub fn delete_node(&self, name: &str) -> Vec<String> {
        let node = lock(&self.nodes).remove(name);
        match node.as_ref().and_then(|n| n["metadata"]["uid"].as_str()) {
            Some(uid) => self.ip_blocks.collect_owned_by(uid),
            None => Vec::new(),
        }
    }

    /// The IPAM lease objects.
    pub fn ip_blocks(&self) -> &super::fake_leases::FakeIpBlocks {
        &self.ip_blocks
    }

    /// Stores (or replaces) a ResourceSlice given as its JSON, by its
    /// `metadata.name`: a slice some earlier run left behind.
    pub fn put_slice(&self, slice: &serde_json::Value) {
        let name = slice["metadata"]["name"].as_str().unwrap_or_default();
        let mut slice = slice.clone();
        let mut slices = lock(&self.slices);
        let kind = if slices.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.slice_events.record(kind, &mut slice);
        slices.insert(name.to_string(), slice);
    }

    /// Deletes a ResourceSlice as someone else would (an operator, the
    /// kubelet); watchers see it.
    pub fn delete_slice(&self, name: &str) -> Option<serde_json::Value> {
        let mut gone = lock(&self.slices).remove(name)?;
        self.slice_events.record("DELETED", &mut gone);
        Some(gone)
    }

    /// Makes the next `n` ResourceSlice writes (apply or delete) fail with
    /// an internal error, as an overloaded API server's do.
    pub fn fail_slice_writes(&self, n: usize) {
        self.failing_slice_writes.store(n, Ordering::SeqCst);
    }

    /// How many of the writes [`FakeApi::fail_slice_writes`] asked to
    /// fail are still to come.
    pub fn slice_writes_to_fail(&self) -> usize {
        self.failing_slice_writes.load(Ordering::SeqCst)
    }

    /// The ResourceSlices in the fake, by name.
    pub fn slices(&self) -> BTreeMap<String, serde_json::Value> {
        lock(&self.slices).clone()
    }

    /// How many requests the fake has answered.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<ApiCall> {
        lock(&self.calls).clone()
    }

    /// Answers one request (also served over HTTP by `fake_api_http`).
    pub(crate) fn answer(&self, call: ApiCall, body: &[u8]) -> (http::StatusCode, Vec<u8>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let (method, path) = (call.method.clone(), call.path.clone());
        let query = call.query.clone();
        lock(&self.calls).push(call);
        let ok = |v: &serde_json::Value| {
            (
                http::StatusCode::OK,
                serde_json::to_vec(v).unwrap_or_default(),
            )
        };
        let missing = || (http::StatusCode::NOT_FOUND, not_found(&path));
        if let Some(answer) = self.ip_blocks.answer(&method, &path, &query, body) {
            return answer;
        }

        if let Some((ns, rest)) = path
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once("/resourceclaims/"))
        {
            let (name, status) = match rest.split_once('/') {
                Some((name, "status")) => (name, true),
                _ => (rest, false),
            };
            let key = format!("{ns}/{name}");
            let mut claims = lock(&self.claims);
            return match (method.as_str(), status, claims.get(&key)) {
                ("GET", false, Some(found)) => (http::StatusCode::OK, found.clone()),
                ("PATCH", true, Some(found)) => {
                    // Apply of our status entries: the patch's status wins.
                    let mut claim: serde_json::Value =
                        serde_json::from_slice(found).unwrap_or_default();
                    let patch: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
                    claim["status"]["devices"] = patch["status"]["devices"].clone();
                    let stored = serde_json::to_vec(&claim).unwrap_or_default();
                    claims.insert(key, stored.clone());
                    (http::StatusCode::OK, stored)
                }
                _ => missing(),
            };
        }
        if let Some(rest) = path.strip_prefix(SLICES) {
            let name = rest.trim_start_matches('/');
            let write = matches!(method.as_str(), "PATCH" | "DELETE") && !name.is_empty();
            if write
                && self
                    .failing_slice_writes
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                return (http::StatusCode::INTERNAL_SERVER_ERROR, internal_error());
            }
            let mut slices = lock(&self.slices);
            return match (method.as_str(), name.is_empty()) {
                ("GET", true) => {
                    let wanted = field_selector(&query);
                    let items: Vec<serde_json::Value> = slices
                        .values()
                        .filter(|s| {
                            wanted.iter().all(|(field, value)| {
                                field
                                    .split('.')
                                    .fold(*s, |v, part| &v[part])
                                    .as_str()
                                    .is_some_and(|v| v == value)
                            })
                        })
                        .cloned()
                        .collect();
                    ok(&serde_json::json!({
                        "apiVersion": "resource.k8s.io/v1",
                        "kind": "ResourceSliceList",
                        "metadata": {},
                        "items": items,
                    }))
                }
                ("PATCH", false) => {
                    let mut slice: serde_json::Value =
                        serde_json::from_slice(body).unwrap_or_default();
                    let kind = if slices.contains_key(name) {
                        "MODIFIED"
                    } else {
                        "ADDED"
                    };
                    self.slice_events.record(kind, &mut slice);
                    slices.insert(name.to_string(), slice.clone());
                    ok(&slice)
                }
                ("DELETE", false) => match slices.remove(name) {
                    Some(mut slice) => {
                        self.slice_events.record("DELETED", &mut slice);
                        ok(&slice)
                    }
                    None => missing(),
                },
                _ => missing(),
            };
        }
        if let Some(name) = path.strip_prefix(NODES)
            && method == "GET"
            && let Some(node) = lock(&self.nodes).get(name)
        {
            return ok(node);
        }
        missing()
    }

    /// The answer to any request, watches included (a watch waits for its
    /// events, so this is async): what every transport in front of the
    /// fake should call.
    pub async fn respond(&self, call: ApiCall, body: &[u8]) -> (http::StatusCode, Vec<u8>) {
        if call.path == SLICES && fake_watch::is_watch(&call.query) {
            self.answer_slice_watch(call).await
        } else {
            self.answer(call, body)
        }
    }

    /// A watch of the ResourceSlices: the events after the requested
    /// version that the field selector picks (see [`fake_watch`]).
    async fn answer_slice_watch(&self, call: ApiCall) -> (http::StatusCode, Vec<u8>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let wanted = field_selector(&call.query);
        let query = call.query.clone();
        lock(&self.calls).push(call);
        let selected = move |s: &serde_json::Value| {
            wanted.iter().all(|(field, value)| {
                field
                    .split('.')
                    .fold(s, |v, part| &v[part])
                    .as_str()
                    .is_some_and(|v| v == value)
            })
        };
        let slices = self.slices.clone();
        let current = move || lock(&slices).values().cloned().collect();
        let body = self.slice_events.answer(&query, current, selected).await;
        (http::StatusCode::OK, body)
    }

    /// A client whose every request this fake answers. Must be called
    /// inside a tokio runtime (the client spawns its request buffer).
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: http::Request<Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = req.into_parts();
                let call = ApiCall::from_parts(&parts);
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let (status, body) = api.respond(call, &bytes).await;
                let mut resp = http::Response::new(Body::from(body));
                *resp.status_mut() = status;
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(resp)
            }
        });
        kube::Client::new(service, "default")
    }
}

/// The `field=value` pairs of a `fieldSelector` query parameter.
fn field_selector(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("fieldSelector="))
        .flat_map(|sel| {
            percent_decode(sel)
                .split(',')
                .filter_map(|term| term.split_once('='))
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Decodes `%XX` escapes (the client escapes `=` and `,` in selectors).
pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `Status` body the API server sends with a 404.
fn not_found(path: &str) -> Vec<u8> {
    let name = path.rsplit('/').next().unwrap_or_default();
    serde_json::to_vec(&serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("\"{name}\" not found"),
        "reason": "NotFound",
        "details": {"name": name},
        "code": 404
    }))
    .unwrap_or_default()
}

fn internal_error() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "etcdserver: request timed out",
        "reason": "InternalError",
        "code": 500
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::api::resource::v1::ResourceSlice;
    use kube::Api;
    use kube::api::{DeleteParams, ListParams, Patch, PatchParams};

    #[tokio::test]
    async fn serves_slices_and_nodes_and_records_every_call() {
        let api = FakeApi::new();
        api.put_node("node-a", "uid-a");
        let client = api.client();
        let nodes: Api<Node> = Api::all(client.clone());
        assert_eq!(
            nodes.get("node-a").await.unwrap().metadata.uid.as_deref(),
            Some("uid-a")
        );
        assert!(nodes.get("node-b").await.is_err());

        let slices: Api<ResourceSlice> = Api::all(client);
        let slice = serde_json::json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": "s"},
            "spec": {"driver": "d", "nodeName": "node-a",
                     "pool": {"name": "node-a", "generation": 1, "resourceSliceCount": 1}},
        });
        slices
            .patch("s", &PatchParams::apply("t"), &Patch::Apply(&slice))
            .await
            .unwrap();
        let mine = ListParams::default().fields("spec.nodeName=node-a,spec.driver=d");
        assert_eq!(slices.list(&mine).await.unwrap().items.len(), 1);
        let other = ListParams::default().fields("spec.nodeName=node-b,spec.driver=d");
        assert!(slices.list(&other).await.unwrap().items.is_empty());
        slices.delete("s", &DeleteParams::default()).await.unwrap();
        assert!(api.slices().is_empty());

        let calls = api.calls();
        let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
        assert_eq!(
            methods,
            ["GET", "GET", "PATCH", "GET", "GET", "DELETE"],
            "{calls:?}"
        );
        assert_eq!(
            calls[2].content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(calls[5].path, "/apis/resource.k8s.io/v1/resourceslices/s");
    }
}
