//! The pod side of the data path: what the NRI plugin does when a pod
//! starts and stops.
//!
//! On `RunPodSandbox` the netdevice-mode VFs prepared for the pod's claims
//! are moved into its network namespace, the attachments are committed to
//! the state store, and only then is the runtime answered and the claims'
//! `status.devices` reported. On `StopPodSandbox` / `RemovePodSandbox`
//! they are moved back. Calls for one pod are serialised: the runtime may
//! send Stop while a slow Run is still finishing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ipam::Ipam;
use tracing::{info, warn};

use crate::attach::{Attacher, Attachment};
use crate::blocking::blocking;
use crate::failpoints::failpoint;
use crate::kube::claim_status;
use crate::metrics::{Metrics, metrics};
use crate::nri::plugin::{PodHandler, PodSandbox};
use crate::pod::claims::{PodClaims, netdevice_devices};
use crate::pod::error::PodError;
use crate::state::ClaimRecord;
use crate::state::attachments::{self, AttachState, PodAttachments};

/// How long a claim status report may take before it is given up (the
/// pod's network works whether or not the API heard about it).
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a pod event did. Most pods on a node hold no VF of ours; their
/// events do nothing and are not counted as attaches or detaches, so the
/// counters say how often VFs moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing of ours to do: the pod holds no VF of ours, or the event
    /// was already applied (a replay, or a sandbox's second stop).
    Nothing,
    /// VFs moved: in, home, or back from a half-done attach.
    Moved,
}

/// Moves VFs in and out of pods for the NRI plugin.
pub struct PodNetworkHandler<C> {
    /// The state store (its database is shared with the IPAM tables).
    store: Arc<Ipam>,
    claims: Arc<C>,
    attacher: Attacher,
    /// `None` runs without an API server (status is then not reported).
    client: Option<kube::Client>,
    driver: String,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Where pod events are counted: the process's metrics, or a test's.
    metrics: &'static Metrics,
}

impl<C: PodClaims> PodNetworkHandler<C> {
    /// A handler over the state store.
    pub fn new(
        store: Arc<Ipam>,
        claims: C,
        attacher: Attacher,
        client: Option<kube::Client>,
        driver: &str,
    ) -> Self {
        PodNetworkHandler {
            store,
            claims: Arc::new(claims),
            attacher,
            client,
            driver: driver.to_string(),
            locks: Mutex::new(HashMap::new()),
            metrics: metrics(),
        }
    }

    /// Counts pod events into `metrics` instead of the process's.
    #[cfg(test)]
    fn with_metrics(mut self, metrics: &'static Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The pod's lock. Entries nobody holds are dropped on the way, so the
    /// map does not grow with every pod the node ever ran, and an entry is
    /// never dropped while a caller still holds it.
    fn lock_for(&self, pod_uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.retain(|_, m| Arc::strong_count(m) > 1);
        locks.entry(pod_uid.to_string()).or_default().clone()
    }

    async fn record_of(&self, pod_uid: &str) -> Result<Option<PodAttachments>, PodError> {
        let (store, uid) = (self.store.clone(), pod_uid.to_string());
        blocking(move || Ok(attachments::get(store.database(), &uid)?)).await
    }

    async fn save_record(&self, record: &PodAttachments) -> Result<(), PodError> {
        let (store, record) = (self.store.clone(), record.clone());
        blocking(move || Ok(attachments::put(store.database(), &record)?)).await
    }

    async fn drop_record(&self, pod_uid: &str) -> Result<(), PodError> {
        let (store, uid) = (self.store.clone(), pod_uid.to_string());
        blocking(move || Ok(attachments::remove(store.database(), &uid)?)).await
    }

    async fn claims_of(&self, pod_uid: &str) -> Result<Vec<ClaimRecord>, PodError> {
        let (claims, uid) = (self.claims.clone(), pod_uid.to_string());
        blocking(move || Ok(claims.claims_for_pod(&uid)?)).await
    }

    /// Attaches the pod's devices; the work behind `run_pod_sandbox`.
    /// Says whether any VF moved.
    pub async fn attach(&self, pod: &PodSandbox) -> Result<Effect, PodError> {
        let lock = self.lock_for(&pod.uid);
        let _guard = lock.lock().await;
        let mut effect = Effect::Nothing;
        if let Some(existing) = self.record_of(&pod.uid).await? {
            let same_sandbox = existing.sandbox_id == pod.id || existing.sandbox_id.is_empty();
            if same_sandbox && existing.state == AttachState::Attached {
                return Ok(Effect::Nothing); // already attached (a retried or replayed event)
            }
            // A plan left by a driver that died mid-attach is rolled back
            // (each VF comes home from wherever it got to) and the attach
            // done again; a pod with a new sandbox (node reboot, sandbox
            // recreated) has its VFs leave the old one first.
            if same_sandbox {
                warn!(pod = %existing.pod, "finishing an attach a driver left half done: rolling it back first");
            }
            self.detach_record(&existing).await?;
            effect = Effect::Moved;
        }
        let records = self.claims_of(&pod.uid).await?;
        let devices = netdevice_devices(&records);
        if devices.is_empty() {
            return Ok(effect);
        }
        let Some(netns) = pod.netns.clone() else {
            return Err(PodError::HostNetwork {
                devices: devices.iter().map(|d| d.device.clone()).collect(),
            });
        };
        // Write-ahead: what the VFs will look like in the pod, and how they
        // were in the host, is durable before the first one moves, so a
        // driver that dies mid-attach still finds them afterwards.
        let (attacher, devs, ns) = (self.attacher.clone(), devices.clone(), netns.clone());
        let provisional = blocking(move || {
            attacher
                .provisional(&devs, &ns)
                .map_err(|e| PodError::Attach {
                    message: e.to_string(),
                })
        })
        .await?;
        let mut record = PodAttachments {
            pod_uid: pod.uid.clone(),
            sandbox_id: pod.id.clone(),
            pod: format!("{}/{}", pod.namespace, pod.name),
            netns: netns.clone(),
            state: AttachState::Planned,
            attachments: provisional,
        };
        let (store, plan) = (self.store.clone(), record.clone());
        blocking(move || {
            failpoint!("attach::plan_commit");
            attachments::put(store.database(), &plan).map_err(PodError::RecordPlan)
        })
        .await?;

        // The error is rendered on the blocking thread (the runtime only
        // needs its text, and the full error is large), with whether the
        // rollback put everything back.
        let (attacher, ns) = (self.attacher.clone(), netns.clone());
        let attached = blocking(move || {
            Ok::<_, PodError>(
                attacher
                    .attach_pod(&devices, &ns)
                    .map_err(|e| (e.to_string(), e.rollback.is_empty())),
            )
        })
        .await?;
        let attached = match attached {
            Ok(a) => a,
            Err((e, rolled_back)) => {
                // Rolled back: the plan describes nothing any more. Not
                // rolled back: the plan is how Stop or a restart finds them.
                if rolled_back && let Err(drop_err) = self.drop_record(&pod.uid).await {
                    warn!(pod = %record.pod, error = %drop_err, "could not drop the attachment plan");
                }
                return Err(PodError::Attach { message: e });
            }
        };
        record.attachments = attached;
        record.state = AttachState::Attached;
        failpoint!("attach::record_commit");
        if let Err(e) = self.save_record(&record).await {
            // Not durable, so not acknowledged: the pod fails, and its
            // Stop finds every VF through the plan (by PCI address).
            warn!(pod = %record.pod, error = %e, "could not record the finished attach; failing the pod");
            return Err(e);
        }
        for a in &record.attachments {
            info!(pod = %record.pod, claim = %a.claim, device = %a.device, if_name = %a.if_name, "VF attached");
        }
        self.report(records, record.attachments);
        Ok(Effect::Moved)
    }

    /// Detaches what is attached to the pod's sandbox `pod.id`; idempotent.
    /// An event for an older sandbox of the pod leaves the current one's
    /// VFs where they are. Says whether any VF moved: of Stop and Remove,
    /// only the first finds the record.
    pub async fn detach(&self, pod: &PodSandbox) -> Result<Effect, PodError> {
        let lock = self.lock_for(&pod.uid);
        let _guard = lock.lock().await;
        match self.record_of(&pod.uid).await? {
            Some(record) if record.sandbox_id.is_empty() || record.sandbox_id == pod.id => {
                self.detach_record(&record).await.map(|()| Effect::Moved)
            }
            _ => Ok(Effect::Nothing),
        }
    }

    /// Moves a record's VFs home and drops the record; keeps it (for a retry)
    /// when any VF could not be moved.
    async fn detach_record(&self, record: &PodAttachments) -> Result<(), PodError> {
        let failures = self.detach_all(&record.attachments).await;
        if !failures.is_empty() {
            return Err(PodError::Detach {
                pod: record.pod.clone(),
                failures,
            });
        }
        failpoint!("detach::record_commit");
        self.drop_record(&record.pod_uid).await?;
        for a in &record.attachments {
            info!(pod = %record.pod, claim = %a.claim, device = %a.device, "VF detached");
        }
        let records = self.claims_of(&record.pod_uid).await.unwrap_or_default();
        self.report(records, Vec::new());
        Ok(())
    }

    /// Detaches every attachment, collecting every failure (keeps going).
    async fn detach_all(&self, list: &[Attachment]) -> Vec<String> {
        let attacher = self.attacher.clone();
        let list = list.to_vec();
        blocking(move || {
            Ok::<_, String>(
                list.iter()
                    .filter_map(|a| attacher.detach(a).err().map(|e| e.to_string()))
                    .collect(),
            )
        })
        .await
        .unwrap_or_else(|e| vec![e])
    }

    /// Reports (or, with no attachments, clears) our entries of each claim's
    /// status, in the background: the pod's network works whether or not the
    /// API heard about it, and a slow API server must not fail pod starts
    /// (the runtime gives the plugin seconds). Failures are logged.
    fn report(&self, records: Vec<ClaimRecord>, attached: Vec<Attachment>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let driver = self.driver.clone();
        tokio::spawn(async move {
            let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            );
            let mut by_claim: BTreeMap<(String, String), Vec<_>> = BTreeMap::new();
            for r in &records {
                let label = format!("{}/{}", r.namespace, r.name);
                let entry = by_claim
                    .entry((r.namespace.clone(), r.name.clone()))
                    .or_default();
                for a in attached.iter().filter(|a| a.claim == label) {
                    let pool = r
                        .devices
                        .iter()
                        .find(|d| d.device == a.device)
                        .map(|d| d.pool.clone())
                        .unwrap_or_default();
                    entry.push(claim_status::device_status(&driver, &pool, a, &now));
                }
            }
            for ((ns, name), devices) in by_claim {
                let apply = claim_status::apply(client.clone(), &ns, &name, devices);
                match tokio::time::timeout(REPORT_TIMEOUT, apply).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        warn!(claim = %format!("{ns}/{name}"), error = %e, "could not report device status in the claim")
                    }
                    Err(_) => {
                        warn!(claim = %format!("{ns}/{name}"), "reporting device status timed out")
                    }
                }
            }
        });
    }

    /// Reconciles after a (re)connect: detaches pods that are gone and
    /// attaches running pods that have prepared VFs but no attachment.
    pub async fn reconcile(&self, pods: &[PodSandbox]) -> Result<(), PodError> {
        let live: Vec<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
        let mut errors = Vec::new();
        let store = self.store.clone();
        let records =
            blocking(move || Ok::<_, PodError>(attachments::list(store.database())?)).await?;
        for record in records {
            if live.contains(&record.pod_uid.as_str()) {
                continue;
            }
            let lock = self.lock_for(&record.pod_uid);
            let _guard = lock.lock().await;
            if let Err(e) = self.detach_record(&record).await {
                errors.push(e);
            }
        }
        for pod in pods {
            if let Err(e) = self.attach(pod).await {
                errors.push(PodError::InPod {
                    pod: pod.display_name(),
                    source: Box::new(e),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PodError::Several(errors))
        }
    }
}

impl<C: PodClaims> PodHandler for PodNetworkHandler<C> {
    type Error = PodError;

    async fn run_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), PodError> {
        timed(self.metrics, "attach", self.attach(pod)).await
    }

    async fn stop_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), PodError> {
        timed(self.metrics, "detach", self.detach(pod)).await
    }

    async fn remove_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), PodError> {
        timed(self.metrics, "detach", self.detach(pod)).await
    }

    async fn synchronize(&self, pods: &[PodSandbox]) -> Result<(), PodError> {
        // Every reconcile is counted, whatever it found to do.
        let work = async { self.reconcile(pods).await.map(|()| Effect::Moved) };
        timed(self.metrics, "reconcile", work).await
    }
}

/// Runs a pod operation, counting it, its latency and each of its
/// failures by kind into `metrics`; one that had nothing to do
/// ([`Effect::Nothing`]) is not counted.
async fn timed(
    metrics: &Metrics,
    operation: &str,
    work: impl std::future::Future<Output = Result<Effect, PodError>>,
) -> Result<(), PodError> {
    let started = std::time::Instant::now();
    let result = work.await;
    let took = started.elapsed();
    match &result {
        Ok(Effect::Nothing) => {}
        Ok(Effect::Moved) => metrics.operation(operation, None, took),
        Err(e) => metrics.failed(operation, &e.kinds(), took),
    }
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use crate::apis::Mode;
    use crate::pod::claims::StoreClaims;
    use crate::state::claims;

    use kube::client::Body;
    use sriov::netlink::RouteSocket;

    use crate::attach::netns::PinnedNetns;
    use crate::testing::netns::{StandIn, facts, have_root, stand_in_tree};

    use crate::testing::records::{POD, pci, prepared, record};

    /// Requests the fake API received: path and JSON body.
    type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

    /// A fake API that records the claim status patches it receives.
    fn recording_client() -> (kube::Client, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let service = tower::service_fn(move |req: http::Request<Body>| {
            let log = log.clone();
            async move {
                let path = req.uri().path().to_string();
                let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
                let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                log.lock().unwrap().push((path, body.clone()));
                Ok::<_, Infallible>(http::Response::new(Body::from(
                    serde_json::to_vec(&body).unwrap(),
                )))
            }
        });
        (kube::Client::new(service, "default"), seen)
    }

    /// The `n`th status patch (1-based), once the background report sent it.
    async fn wait_for_patch(seen: &Seen, n: usize) -> (String, serde_json::Value) {
        for _ in 0..500 {
            if let Some(p) = seen.lock().unwrap().get(n - 1) {
                return p.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("status patch {n} never came");
    }

    fn pod(netns: Option<&Path>) -> PodSandbox {
        PodSandbox {
            id: "f".repeat(64),
            uid: POD.into(),
            namespace: "ran".into(),
            name: "du-0".into(),
            netns: netns.map(Path::to_path_buf),
            ips: Vec::new(),
        }
    }

    use std::path::Path;

    /// A stand-in VF prepared for a claim reserved for [`POD`], a pod
    /// namespace, and a handler over a real store.
    struct Rig {
        vf: StandIn,
        _tree: tempfile::TempDir,
        _state: tempfile::TempDir,
        _netns_dir: tempfile::TempDir,
        ns: PinnedNetns,
        store: Arc<Ipam>,
        handler: PodNetworkHandler<StoreClaims>,
    }

    fn rig(client: Option<kube::Client>) -> Rig {
        let mut host = RouteSocket::new().unwrap();
        let vf = StandIn::new(&mut host);
        let tree = stand_in_tree(&[(pci(1), Some(&vf.name))]);
        let state = tempfile::tempdir().unwrap();
        let store = Arc::new(Ipam::open(state.path(), &[]).unwrap());
        claims::init(store.database()).unwrap();
        claims::put(
            store.database(),
            &record(
                "fronthaul",
                vec![prepared(pci(1), Mode::Netdevice, Some("10.1.0.5/24"), None)],
            ),
        )
        .unwrap();
        let netns_dir = tempfile::tempdir().unwrap();
        let ns = PinnedNetns::create(&netns_dir.path().join("pod")).unwrap();
        let handler = PodNetworkHandler::new(
            store.clone(),
            StoreClaims::new(store.clone(), "boot"),
            Attacher::new(tree.path()),
            client,
            "sriov.dra.dev",
        );
        Rig {
            vf,
            _tree: tree,
            _state: state,
            _netns_dir: netns_dir,
            ns,
            store,
            handler,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pod_gets_its_vf_configured_and_gives_it_back() {
        if !have_root("a_pod_gets_its_vf_configured_and_gives_it_back") {
            return;
        }
        let (client, patches) = recording_client();
        let Rig {
            vf,
            ns,
            store,
            handler,
            ..
        } = &rig(Some(client));
        let mut host = RouteSocket::new().unwrap();
        let pod = pod(Some(ns.path()));

        handler.run_pod_sandbox(&pod).await.unwrap();
        assert!(facts(&mut host, &vf.name).is_none(), "the VF left the host");
        let stored = attachments::get(store.database(), POD).unwrap().unwrap();
        assert_eq!(stored.attachments[0].if_name, "net1");
        let inside = crate::attach::netns::run_in_netns(ns.path(), || {
            let mut s = RouteSocket::new().unwrap();
            facts(&mut s, "net1")
        })
        .unwrap()
        .expect("net1 in the pod");
        assert_eq!(inside.mtu, 1400);
        {
            let (path, body) = wait_for_patch(&patches, 1).await;
            assert_eq!(
                path,
                "/apis/resource.k8s.io/v1/namespaces/ran/resourceclaims/fronthaul/status"
            );
            let d = &body["status"]["devices"][0];
            assert_eq!(d["networkData"]["interfaceName"], "net1");
            assert_eq!(d["networkData"]["ips"][0], "10.1.0.5/24");
            assert_eq!(d["pool"], "node-a");
        }

        // A replayed RunPodSandbox changes nothing.
        handler.run_pod_sandbox(&pod).await.unwrap();

        handler.stop_pod_sandbox(&pod).await.unwrap();
        let back = facts(&mut host, &vf.name).expect("the VF is back under its own name");
        assert!(back.mtu >= 1400);
        assert!(attachments::get(store.database(), POD).unwrap().is_none());
        let (_, cleared) = wait_for_patch(&patches, 2).await;
        assert_eq!(cleared["status"]["devices"], serde_json::json!([]));
        handler.remove_pod_sandbox(&pod).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn synchronize_detaches_pods_that_went_away_and_attaches_running_ones() {
        if !have_root("synchronize_detaches_pods_that_went_away_and_attaches_running_ones") {
            return;
        }
        let Rig {
            vf,
            ns,
            store,
            handler,
            ..
        } = &rig(None);
        let mut host = RouteSocket::new().unwrap();
        // The plugin was down when the pod started: Synchronize attaches it.
        handler.synchronize(&[pod(Some(ns.path()))]).await.unwrap();
        assert!(
            facts(&mut host, &vf.name).is_none(),
            "attached on synchronize"
        );
        // The pod went away while the plugin was down again.
        handler.synchronize(&[]).await.unwrap();
        assert!(
            facts(&mut host, &vf.name).is_some(),
            "detached on synchronize"
        );
        assert!(attachments::list(store.database()).unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recreated_sandbox_takes_the_vfs_and_the_old_ones_events_leave_them() {
        if !have_root("a_recreated_sandbox_takes_the_vfs_and_the_old_ones_events_leave_them") {
            return;
        }
        let Rig {
            ns, store, handler, ..
        } = &rig(None);
        let old = pod(Some(ns.path()));
        handler.run_pod_sandbox(&old).await.unwrap();

        // The pod's sandbox is recreated (same UID, new id and netns).
        let dir = tempfile::tempdir().unwrap();
        let new_ns = PinnedNetns::create(&dir.path().join("pod-2")).unwrap();
        let mut new = pod(Some(new_ns.path()));
        new.id = "e".repeat(64);
        handler.run_pod_sandbox(&new).await.unwrap();
        let in_ns = |path: &Path| {
            crate::attach::netns::run_in_netns(path, || {
                facts(&mut RouteSocket::new().unwrap(), "net1")
            })
            .unwrap()
            .is_some()
        };
        assert!(
            in_ns(new_ns.path()) && !in_ns(ns.path()),
            "the VF moved to the new sandbox"
        );

        // The kubelet removes the old sandbox: the new one keeps its VF.
        handler.remove_pod_sandbox(&old).await.unwrap();
        assert!(in_ns(new_ns.path()));
        let record = attachments::get(store.database(), POD).unwrap().unwrap();
        assert_eq!(record.sandbox_id, new.id);
        handler.stop_pod_sandbox(&new).await.unwrap();
        assert!(attachments::get(store.database(), POD).unwrap().is_none());
    }

    /// What attach does before the first VF moves: the plan is durable.
    /// Returns the devices planned.
    fn leave_a_plan(
        handler: &PodNetworkHandler<StoreClaims>,
        store: &Arc<Ipam>,
        ns: &PinnedNetns,
    ) -> Vec<crate::attach::plan::PodDevice> {
        let records = StoreClaims::new(store.clone(), "boot")
            .claims_for_pod(POD)
            .unwrap();
        let devices = netdevice_devices(&records);
        let plan = handler.attacher.provisional(&devices, ns.path()).unwrap();
        attachments::put(
            store.database(),
            &PodAttachments {
                pod_uid: POD.into(),
                sandbox_id: pod(Some(ns.path())).id,
                pod: "ran/du-0".into(),
                netns: ns.path().to_path_buf(),
                state: AttachState::Planned,
                attachments: plan,
            },
        )
        .unwrap();
        devices
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_driver_that_dies_mid_attach_still_gets_the_vfs_back() {
        if !have_root("a_driver_that_dies_mid_attach_still_gets_the_vfs_back") {
            return;
        }
        let Rig {
            vf,
            ns,
            store,
            handler,
            ..
        } = &rig(None);
        let original = facts(&mut RouteSocket::new().unwrap(), &vf.name).unwrap();
        // What attach does up to the crash: the plan is written, the VF
        // moved, and the driver dies before the final record.
        let devices = leave_a_plan(handler, store, ns);
        handler.attacher.attach_pod(&devices, ns.path()).unwrap();
        assert!(
            facts(&mut RouteSocket::new().unwrap(), &vf.name).is_none(),
            "in the pod"
        );

        // The restarted driver learns the pod is gone.
        handler.synchronize(&[]).await.unwrap();
        let back =
            facts(&mut RouteSocket::new().unwrap(), &vf.name).expect("back under its host name");
        assert_eq!(
            (back.mtu, back.mac.clone()),
            (original.mtu, original.mac.clone())
        );
        assert!(attachments::list(store.database()).unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plan_left_mid_attach_is_finished_at_synchronize_not_taken_as_done() {
        if !have_root("a_plan_left_mid_attach_is_finished_at_synchronize_not_taken_as_done") {
            return;
        }
        let Rig {
            vf,
            ns,
            store,
            handler,
            ..
        } = &rig(None);
        // The driver wrote its plan and died before the first move.
        leave_a_plan(handler, store, ns);
        assert!(facts(&mut RouteSocket::new().unwrap(), &vf.name).is_some());

        // The runtime reconnects: the pod still runs, so it gets its VF.
        handler.synchronize(&[pod(Some(ns.path()))]).await.unwrap();
        assert!(
            facts(&mut RouteSocket::new().unwrap(), &vf.name).is_none(),
            "the VF left the host"
        );
        let in_pod = crate::attach::netns::run_in_netns(ns.path(), || {
            facts(&mut RouteSocket::new().unwrap(), "net1")
        })
        .unwrap();
        assert!(in_pod.is_some(), "the VF is in the pod as net1");
        let record = attachments::get(store.database(), POD).unwrap().unwrap();
        assert_eq!(record.state, AttachState::Attached);
    }

    /// Metrics of a test's own: the process's are shared by every test.
    fn own_metrics() -> &'static Metrics {
        Box::leak(Box::new(Metrics::isolated()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pod_with_a_vf_counts_one_attach_and_one_detach_across_stop_and_remove() {
        if !have_root("a_pod_with_a_vf_counts_one_attach_and_one_detach_across_stop_and_remove") {
            return;
        }
        let counted = own_metrics();
        let mut rig = rig(None);
        rig.handler = rig.handler.with_metrics(counted);
        let pod = pod(Some(rig.ns.path()));

        rig.handler.run_pod_sandbox(&pod).await.unwrap();
        rig.handler.run_pod_sandbox(&pod).await.unwrap(); // replayed
        rig.handler.stop_pod_sandbox(&pod).await.unwrap();
        rig.handler.remove_pod_sandbox(&pod).await.unwrap();

        assert_eq!(counted.count("attach", "ok"), 1);
        assert_eq!(counted.count("detach", "ok"), 1);
        assert_eq!(counted.count("attach", "error"), 0);
        assert_eq!(counted.count("detach", "error"), 0);
    }

    /// A handler over an empty store, counting into metrics of its own.
    fn bare_handler() -> (tempfile::TempDir, Arc<Ipam>, PodNetworkHandler<StoreClaims>) {
        let state = tempfile::tempdir().unwrap();
        let store = Arc::new(Ipam::open(state.path(), &[]).unwrap());
        claims::init(store.database()).unwrap();
        let handler = PodNetworkHandler::new(
            store.clone(),
            StoreClaims::new(store.clone(), "boot"),
            Attacher::new("/nonexistent"),
            None,
            "sriov.dra.dev",
        )
        .with_metrics(own_metrics());
        (state, store, handler)
    }

    #[tokio::test]
    async fn pods_without_our_vfs_are_not_counted_as_attaches_or_detaches() {
        let (_state, _store, handler) = bare_handler();
        let pod = pod(None);
        handler.run_pod_sandbox(&pod).await.unwrap();
        handler.stop_pod_sandbox(&pod).await.unwrap();
        handler.remove_pod_sandbox(&pod).await.unwrap();
        for operation in ["attach", "detach"] {
            for outcome in ["ok", "error"] {
                assert_eq!(
                    handler.metrics.count(operation, outcome),
                    0,
                    "{operation} {outcome}"
                );
            }
        }
        // A reconcile is counted whatever it finds.
        handler.synchronize(&[pod]).await.unwrap();
        assert_eq!(handler.metrics.count("reconcile", "ok"), 1);
    }

    #[tokio::test]
    async fn only_operations_that_moved_vfs_or_failed_are_counted() {
        let counted = own_metrics();
        timed(counted, "attach", async { Ok(Effect::Nothing) })
            .await
            .unwrap();
        assert_eq!(counted.count("attach", "ok"), 0);
        timed(counted, "attach", async { Ok(Effect::Moved) })
            .await
            .unwrap();
        assert_eq!(counted.count("attach", "ok"), 1);
        let several = PodError::Several(vec![
            PodError::Attach {
                message: "no such netns".into(),
            },
            PodError::Attach {
                message: "no such netns".into(),
            },
        ]);
        timed(counted, "reconcile", async { Err(several) })
            .await
            .unwrap_err();
        assert_eq!(counted.count("reconcile", "error"), 1);
        assert_eq!(counted.errors_of("reconcile", "attach"), 2);
    }

    #[tokio::test]
    async fn host_network_pods_cannot_take_netdevice_vfs_and_pods_without_claims_pass() {
        let (_state, store, handler) = bare_handler();
        handler.run_pod_sandbox(&pod(None)).await.unwrap();
        claims::put(
            store.database(),
            &record(
                "fronthaul",
                vec![prepared(pci(1), Mode::Netdevice, None, None)],
            ),
        )
        .unwrap();
        let err = handler.run_pod_sandbox(&pod(None)).await.unwrap_err();
        assert!(
            matches!(&err, PodError::HostNetwork { devices } if devices == &["pci-0000-5b-02-1"]),
            "{err:?}"
        );
        assert!(err.to_string().contains("host network"), "{err}");
        assert_eq!(handler.metrics.count("attach", "error"), 1);
        assert_eq!(handler.metrics.errors_of("attach", "host_network"), 1);
        // Nothing attached, so stopping is a no-op, and is not counted.
        handler.stop_pod_sandbox(&pod(None)).await.unwrap();
        assert_eq!(handler.metrics.count("detach", "ok"), 0);
    }
}
