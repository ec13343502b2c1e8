//! The DRA node service the kubelet calls (`NodePrepareResources`,
//! `NodeUnprepareResources`), in v1 and v1beta1, on
//! `<kubelet-dir>/plugins/<driver>/dra.sock`.
//!
//! Claims of one request run in parallel; calls for the same claim UID wait
//! for each other, so a retry never races the attempt it retries.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use proto::dra::{v1, v1beta1};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use super::health_service::HealthService;
use super::socket::{SocketError, bind_private_socket, serve_then_remove};
use crate::claim::prepare::{PrepareError, Preparer};
use crate::kube::claims::ClaimReader;
use crate::metrics::metrics;
use crate::state::ClaimRecord;
use proto::dra_health::v1alpha1::dra_resource_health_server::DraResourceHealthServer;

struct Inner {
    preparer: Arc<Preparer>,
    claims: ClaimReader,
    /// Bounds the prepares and unprepares doing blocking work at once.
    slots: Arc<Semaphore>,
}

/// The DRA node service; cheap to clone, one per server.
#[derive(Clone)]
pub struct NodeService {
    inner: Arc<Inner>,
}

/// How many claims may do blocking work (store commits, sysfs, netlink) at
/// once. A burst of a thousand Prepares then queues here, in tokio, instead
/// of on the store's single writer lock, where a pod start's commit would
/// wait behind all of them and miss the runtime's 2 s deadline.
pub const CLAIM_WORKERS: usize = 4;

/// A failed claim operation: what failed (the `kind` label of
/// `sriov_dra_errors_total`) and the text the kubelet gets.
type Failed = (&'static str, String);

fn join_error(uid: &str, e: tokio::task::JoinError) -> Failed {
    (
        "internal",
        format!("claim {uid}: internal error: the prepare task failed: {e}"),
    )
}

fn failed(e: PrepareError) -> Failed {
    (e.kind(), e.to_string())
}

impl NodeService {
    /// A service preparing claims with `preparer`, reading them with `claims`.
    /// The preparer may be shared (`Arc`) with the code that refreshes its
    /// inventory.
    pub fn new(preparer: impl Into<Arc<Preparer>>, claims: ClaimReader) -> Self {
        NodeService {
            inner: Arc::new(Inner {
                preparer: preparer.into(),
                claims,
                slots: Arc::new(Semaphore::new(CLAIM_WORKERS)),
            }),
        }
    }

    /// A worker slot; held (like the claim's lock) until the blocking work
    /// ends, even when the kubelet gave up waiting.
    async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        // The semaphore is never closed, so this is always Some.
        self.inner.slots.clone().acquire_owned().await.ok()
    }

    async fn prepare_claim(&self, claim: v1::Claim) -> v1::NodePrepareResourceResponse {
        let started = std::time::Instant::now();
        let (response, failure) = self.prepare_claim_untimed(claim).await;
        metrics().operation("prepare", failure, started.elapsed());
        response
    }

    /// The answer, and what failed when it is an error.
    async fn prepare_claim_untimed(
        &self,
        claim: v1::Claim,
    ) -> (v1::NodePrepareResourceResponse, Option<&'static str>) {
        // The guard moves into the blocking work: if the kubelet's deadline
        // drops this future, the lock stays held until the work is done, so
        // a retry cannot run beside it.
        let guard = self.inner.preparer.lock_claim(&claim.uid).await;
        let preparer = self.inner.preparer.clone();
        // A prepared claim is answered from its record: no device is touched.
        match preparer.record(&claim.uid) {
            Ok(Some(rec)) if preparer.is_current(&rec) => {
                self.learn_consumers(&claim, &rec).await;
                let answer = v1::NodePrepareResourceResponse {
                    devices: Preparer::answer(&rec),
                    error: String::new(),
                };
                return (answer, None);
            }
            Ok(_) => {}
            Err(e) => {
                let answer = v1::NodePrepareResourceResponse {
                    devices: Vec::new(),
                    error: format!("claim {}/{}: {e}", claim.namespace, claim.name),
                };
                return (answer, Some("state"));
            }
        }
        let outcome = match self
            .inner
            .claims
            .read(&claim.namespace, &claim.name, &claim.uid, preparer.driver())
            .await
        {
            Err(e) => Err(failed(PrepareError::from(e))),
            Ok(allocated) => {
                let slot = self.slot().await;
                tokio::task::spawn_blocking(move || {
                    let _held = (guard, slot);
                    preparer.prepare(&allocated)
                })
                .await
            }
            .map_err(|e| join_error(&claim.uid, e))
            .and_then(|r| r.map_err(failed)),
        };
        match outcome {
            Ok(devices) => {
                let answer = v1::NodePrepareResourceResponse {
                    devices,
                    error: String::new(),
                };
                (answer, None)
            }
            Err((kind, error)) => {
                tracing::warn!(claim = %claim.uid, %error, "prepare failed");
                let answer = v1::NodePrepareResourceResponse {
                    devices: Vec::new(),
                    error,
                };
                (answer, Some(kind))
            }
        }
    }

    /// A claim shared by several pods is prepared once, but the kubelet
    /// calls Prepare for each pod: that call is when a new pod shows up in
    /// the claim's `reservedFor`, which the NRI side needs to find the pod's
    /// VFs. Best effort: the answer stands whatever the API says.
    async fn learn_consumers(&self, claim: &v1::Claim, record: &ClaimRecord) {
        let preparer = self.inner.preparer.clone();
        let read = self
            .inner
            .claims
            .read(&claim.namespace, &claim.name, &claim.uid, preparer.driver())
            .await;
        let Ok(allocated) = read else {
            return;
        };
        if allocated.reserved_for == record.reserved_for {
            return;
        }
        let uid = claim.uid.clone();
        let pods = allocated.reserved_for;
        let saved =
            tokio::task::spawn_blocking(move || preparer.set_reserved_for(&uid, pods)).await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!(claim = %claim.uid, "could not record the claim's new consumers");
        }
    }

    async fn unprepare_claim(&self, claim: v1::Claim) -> v1::NodeUnprepareResourceResponse {
        let started = std::time::Instant::now();
        let (response, failure) = self.unprepare_claim_untimed(claim).await;
        metrics().operation("unprepare", failure, started.elapsed());
        response
    }

    /// The answer, and what failed when it is an error.
    async fn unprepare_claim_untimed(
        &self,
        claim: v1::Claim,
    ) -> (v1::NodeUnprepareResourceResponse, Option<&'static str>) {
        let guard = self.inner.preparer.lock_claim(&claim.uid).await;
        let preparer = self.inner.preparer.clone();
        let uid = claim.uid.clone();
        let slot = self.slot().await;
        let outcome = match tokio::task::spawn_blocking(move || {
            let _held = (guard, slot);
            preparer.unprepare(&uid)
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(failed(e)),
            Err(e) => Err(join_error(&claim.uid, e)),
        };
        match outcome {
            Ok(()) => (
                v1::NodeUnprepareResourceResponse {
                    error: String::new(),
                },
                None,
            ),
            Err((kind, error)) => {
                tracing::warn!(claim = %claim.uid, %error, "unprepare failed");
                (v1::NodeUnprepareResourceResponse { error }, Some(kind))
            }
        }
    }

    /// Prepares every claim of the request, in parallel; errors are per claim.
    pub async fn prepare(
        &self,
        request: v1::NodePrepareResourcesRequest,
    ) -> v1::NodePrepareResourcesResponse {
        let mut tasks = JoinSet::new();
        for claim in request.claims {
            let this = self.clone();
            tasks.spawn(async move { (claim.uid.clone(), this.prepare_claim(claim).await) });
        }
        let mut claims = HashMap::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok((uid, resp)) = done {
                claims.insert(uid, resp);
            }
        }
        v1::NodePrepareResourcesResponse { claims }
    }

    /// Unprepares every claim of the request, in parallel.
    pub async fn unprepare(
        &self,
        request: v1::NodeUnprepareResourcesRequest,
    ) -> v1::NodeUnprepareResourcesResponse {
        let mut tasks = JoinSet::new();
        for claim in request.claims {
            let this = self.clone();
            tasks.spawn(async move { (claim.uid.clone(), this.unprepare_claim(claim).await) });
        }
        let mut claims = HashMap::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok((uid, resp)) = done {
                claims.insert(uid, resp);
            }
        }
        v1::NodeUnprepareResourcesResponse { claims }
    }
}

#[tonic::async_trait]
impl v1::dra_plugin_server::DraPlugin for NodeService {
    async fn node_prepare_resources(
        &self,
        request: Request<v1::NodePrepareResourcesRequest>,
    ) -> Result<Response<v1::NodePrepareResourcesResponse>, Status> {
        Ok(Response::new(self.prepare(request.into_inner()).await))
    }

    async fn node_unprepare_resources(
        &self,
        request: Request<v1::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<v1::NodeUnprepareResourcesResponse>, Status> {
        Ok(Response::new(self.unprepare(request.into_inner()).await))
    }
}

#[tonic::async_trait]
impl v1beta1::dra_plugin_server::DraPlugin for NodeService {
    async fn node_prepare_resources(
        &self,
        request: Request<v1beta1::NodePrepareResourcesRequest>,
    ) -> Result<Response<v1beta1::NodePrepareResourcesResponse>, Status> {
        let resp = self.prepare(request.into_inner().into()).await;
        Ok(Response::new(resp.into()))
    }

    async fn node_unprepare_resources(
        &self,
        request: Request<v1beta1::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<v1beta1::NodeUnprepareResourcesResponse>, Status> {
        let resp = self.unprepare(request.into_inner().into()).await;
        Ok(Response::new(resp.into()))
    }
}

/// Binds `socket` (mode 0600, replacing a stale one) and serves both DRA
/// versions on it until `shutdown` completes. Returns once the socket is in
/// place. Must run inside tokio.
pub fn serve_node_service(
    socket: &Path,
    service: NodeService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<Result<(), tonic::transport::Error>>, SocketError> {
    serve_node_service_with_health(socket, service, None, shutdown)
}

/// [`serve_node_service`] that also serves the device health stream
/// (`v1alpha1.DRAResourceHealth`) on the same socket.
pub fn serve_node_service_with_health(
    socket: &Path,
    service: NodeService,
    health: Option<HealthService>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<Result<(), tonic::transport::Error>>, SocketError> {
    let listener = bind_private_socket(socket)?;
    tracing::info!(
        socket = %socket.display(),
        health = health.is_some(),
        "serving the DRA node service (v1, v1beta1)"
    );
    let health = health.map(DraResourceHealthServer::new);
    Ok(tokio::spawn(serve_then_remove(
        socket.to_path_buf(),
        tonic::transport::Server::builder()
            .add_service(v1::dra_plugin_server::DraPluginServer::new(service.clone()))
            .add_service(v1beta1::dra_plugin_server::DraPluginServer::new(service))
            .add_optional_service(health)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown),
    )))
}

#[cfg(test)]
#[path = "node_service_tests.rs"]
mod tests;
