//! An in-process stand-in for the API server's ResourceClaim endpoint, as a
//! `tower` service behind a real `kube::Client`: tests and benchmarks get the
//! client's real request building, JSON decoding and error mapping without
//! a cluster.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kube::client::Body;

/// Path prefix of namespaced `resource.k8s.io/v1` objects.
const PREFIX: &str = "/apis/resource.k8s.io/v1/namespaces/";

/// Shared state of a fake API server: claims by `namespace/name`.
#[derive(Clone, Default)]
pub struct FakeApi {
    claims: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    requests: Arc<AtomicUsize>,
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
        self.claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(format!("{ns}/{name}"), body);
    }

    /// Deletes a claim.
    pub fn delete_claim(&self, namespace: &str, name: &str) {
        self.claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&format!("{namespace}/{name}"));
    }

    /// How many requests the fake has answered.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    fn answer(&self, method: &http::Method, path: &str) -> (http::StatusCode, Vec<u8>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let key = path
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once("/resourceclaims/"))
            .map(|(ns, name)| format!("{ns}/{name}"));
        let found = match (method, key) {
            (&http::Method::GET, Some(key)) => self
                .claims
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .cloned(),
            _ => None,
        };
        match found {
            Some(body) => (http::StatusCode::OK, body),
            None => (http::StatusCode::NOT_FOUND, not_found(path)),
        }
    }

    /// A client whose every request this fake answers. Must be called
    /// inside a tokio runtime (the client spawns its request buffer).
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: http::Request<Body>| {
            let api = api.clone();
            async move {
                let (status, body) = api.answer(req.method(), req.uri().path());
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

/// The `Status` body the API server sends with a 404.
fn not_found(path: &str) -> Vec<u8> {
    let name = path.rsplit('/').next().unwrap_or_default();
    serde_json::to_vec(&serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("resourceclaims.resource.k8s.io \"{name}\" not found"),
        "reason": "NotFound",
        "details": {"name": name, "group": "resource.k8s.io", "kind": "resourceclaims"},
        "code": 404
    }))
    .unwrap_or_default()
}
