//! Answers every `Plugin` method the runtime calls on one connection: the
//! handshake (Configure, Synchronize), pod events by dedicated RPC (NRI
//! v0.12+) or by StateChange (v0.8–v0.11), and a harmless default for every
//! other method, so no call the runtime makes can fail a pod by accident.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use proto::nri;
use proto::nri::plugin_methods;
use tracing::Instrument;

use super::pod::{PodHandler, PodSandbox};
use crate::nri::ttrpc::{Code, Status};

/// The runtime's per-call deadline when Configure does not state one
/// (NRI's default request timeout, nri.md item 15).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The pod lifecycle events the plugin subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodEvent {
    /// Sandbox started, netns ready.
    Run,
    /// Sandbox stopped, netns still there.
    Stop,
    /// Sandbox removed.
    Remove,
}

impl PodEvent {
    /// Subscription mask for all three events: 0x7 (nri.md item 18).
    pub fn mask() -> i32 {
        nri::Event::RunPodSandbox.mask()
            | nri::Event::StopPodSandbox.mask()
            | nri::Event::RemovePodSandbox.mask()
    }

    /// The event a StateChange carries, if it is one of ours.
    fn from_state_change(event: nri::Event) -> Option<Self> {
        match event {
            nri::Event::RunPodSandbox => Some(Self::Run),
            nri::Event::StopPodSandbox => Some(Self::Stop),
            nri::Event::RemovePodSandbox => Some(Self::Remove),
            _ => None,
        }
    }

    /// The NRI name of the event, as the runtime logs it.
    pub fn rpc_name(self) -> &'static str {
        match self {
            Self::Run => plugin_methods::RUN_POD_SANDBOX,
            Self::Stop => plugin_methods::STOP_POD_SANDBOX,
            Self::Remove => plugin_methods::REMOVE_POD_SANDBOX,
        }
    }
}

/// Per-connection state of the `Plugin` service.
pub struct Dispatcher<H> {
    handler: Arc<H>,
    state: Mutex<State>,
    synchronized: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Pods of Synchronize chunks sent with more=true, not yet handed over.
    pending_pods: Vec<PodSandbox>,
    /// The runtime's per-call deadline, from Configure.
    request_timeout: Option<Duration>,
}

/// How long a handler may take before we answer for it: a quarter of the
/// runtime's deadline is kept for the answer to travel, because a call that
/// misses the runtime's deadline makes it drop the plugin altogether (and
/// then pods start without their devices).
fn handler_deadline(request_timeout: Duration) -> Duration {
    request_timeout.saturating_mul(3) / 4
}

fn decode<M: Message + Default>(method: &str, payload: Bytes) -> Result<M, Status> {
    M::decode(payload).map_err(|err| {
        Status::new(
            Code::InvalidArgument,
            format!("undecodable {method} request: {err}"),
        )
    })
}

impl<H: PodHandler> Dispatcher<H> {
    /// A fresh dispatcher for one connection to the runtime.
    pub fn new(handler: Arc<H>) -> Self {
        Self {
            handler,
            state: Mutex::new(State::default()),
            synchronized: AtomicBool::new(false),
        }
    }

    /// Whether the runtime finished Synchronize on this connection, i.e. the
    /// plugin became fully operational.
    pub fn synchronized(&self) -> bool {
        self.synchronized.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data, never left half-updated: a poisoned lock is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deadline(&self) -> Duration {
        handler_deadline(
            self.lock()
                .request_timeout
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT),
        )
    }

    /// Answers one call of the `Plugin` service.
    pub async fn dispatch(&self, method: &str, payload: Bytes) -> Result<Bytes, Status> {
        match method {
            plugin_methods::CONFIGURE => self.configure(decode(method, payload)?),
            plugin_methods::SYNCHRONIZE => self.synchronize(decode(method, payload)?).await,
            plugin_methods::RUN_POD_SANDBOX => {
                let req: nri::RunPodSandboxRequest = decode(method, payload)?;
                self.pod_event(PodEvent::Run, req.pod).await
            }
            plugin_methods::STOP_POD_SANDBOX => {
                let req: nri::StopPodSandboxRequest = decode(method, payload)?;
                self.pod_event(PodEvent::Stop, req.pod).await
            }
            plugin_methods::REMOVE_POD_SANDBOX => {
                let req: nri::RemovePodSandboxRequest = decode(method, payload)?;
                self.pod_event(PodEvent::Remove, req.pod).await
            }
            plugin_methods::STATE_CHANGE => self.state_change(decode(method, payload)?).await,
            plugin_methods::SHUTDOWN => {
                // External plugins are never sent this (nri.md item 16); if a
                // runtime does, it closes the connection next and we redial.
                tracing::info!("NRI runtime asked the plugin to shut down");
                Ok(Bytes::new())
            }
            other => {
                // Container events, pod updates, adjustment validation and
                // methods newer than our .proto: the default (empty) message
                // of every one of their responses encodes to zero bytes and
                // means "no change, no objection".
                tracing::debug!(
                    method = other,
                    "NRI call answered with the default response"
                );
                Ok(Bytes::new())
            }
        }
    }

    fn configure(&self, req: nri::ConfigureRequest) -> Result<Bytes, Status> {
        let request_timeout = u64::try_from(req.request_timeout)
            .ok()
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        self.lock().request_timeout = request_timeout;
        tracing::info!(
            runtime = %req.runtime_name,
            runtime_version = %req.runtime_version,
            nri_version = %req.nri_version,
            request_timeout_ms = req.request_timeout,
            "NRI runtime configured the plugin"
        );
        let events = PodEvent::mask();
        Ok(nri::ConfigureResponse { events }.encode_to_vec().into())
    }

    async fn synchronize(&self, req: nri::SynchronizeRequest) -> Result<Bytes, Status> {
        let chunk = req.pods.iter().map(PodSandbox::from);
        if req.more {
            // A chunk of a split Synchronize: answer more=true without
            // updates and wait for the rest (nri.md item 15).
            self.lock().pending_pods.extend(chunk);
            let reply = nri::SynchronizeResponse {
                update: Vec::new(),
                more: true,
            };
            return Ok(reply.encode_to_vec().into());
        }
        let pods: Vec<PodSandbox> = {
            let mut state = self.lock();
            let mut pods = std::mem::take(&mut state.pending_pods);
            pods.extend(chunk);
            pods
        };
        let deadline = self.deadline();
        let count = pods.len();
        let handler = self.handler.clone();
        let task = tokio::spawn(async move { handler.synchronize(&pods).await }.in_current_span());
        // A failed reconcile is logged, not returned: an error would make the
        // runtime drop the plugin, and then new pods would start without
        // their devices.
        match tokio::time::timeout(deadline, task).await {
            Ok(Ok(Ok(()))) => tracing::info!(pods = count, "NRI pods synchronized"),
            Ok(Ok(Err(err))) => {
                tracing::error!(pods = count, %err, "NRI synchronize: reconciling existing pods failed")
            }
            Ok(Err(err)) => {
                tracing::error!(pods = count, %err, "NRI synchronize: the reconcile task failed")
            }
            Err(_) => tracing::warn!(
                pods = count,
                ?deadline,
                "NRI synchronize: reconcile still running at the runtime's deadline; it goes on in the background"
            ),
        }
        self.synchronized.store(true, Ordering::Release);
        Ok(nri::SynchronizeResponse::default().encode_to_vec().into())
    }

    async fn state_change(&self, req: nri::StateChangeEvent) -> Result<Bytes, Status> {
        let event = req.event();
        match PodEvent::from_state_change(event) {
            Some(pod_event) if req.container.is_none() => self.pod_event(pod_event, req.pod).await,
            _ => {
                // Container events reach us once a new runtime fell back to
                // StateChange for everything (nri.md item 21).
                tracing::debug!(?event, "NRI state change ignored");
                Ok(Bytes::new())
            }
        }
    }

    async fn pod_event(
        &self,
        event: PodEvent,
        pod: Option<nri::PodSandbox>,
    ) -> Result<Bytes, Status> {
        let Some(pod) = pod.as_ref().map(PodSandbox::from) else {
            tracing::warn!(
                event = event.rpc_name(),
                "NRI pod event without a pod ignored"
            );
            return Ok(Bytes::new());
        };
        let span = tracing::info_span!(
            "nri_pod",
            event = event.rpc_name(),
            namespace = %pod.namespace,
            name = %pod.name,
            uid = %pod.uid,
        );
        let deadline = self.deadline();
        let handler = self.handler.clone();
        let call_pod = pod.clone();
        let call = async move {
            match event {
                PodEvent::Run => handler.run_pod_sandbox(&call_pod).await,
                PodEvent::Stop => handler.stop_pod_sandbox(&call_pod).await,
                PodEvent::Remove => handler.remove_pod_sandbox(&call_pod).await,
            }
        };
        async move {
            // Its own task, so a deadline that passes leaves the handler to
            // finish rather than dropping it halfway through an attach.
            let task = tokio::spawn(call.in_current_span());
            let failure = match tokio::time::timeout(deadline, task).await {
                Ok(Ok(Ok(()))) => {
                    tracing::debug!("NRI pod event handled");
                    return Ok(Bytes::new());
                }
                Ok(Ok(Err(err))) => err.to_string(),
                Ok(Err(err)) => format!("handler failed: {err}"),
                Err(_) => format!(
                    "not done within {deadline:?}, the runtime's deadline; it goes on in the background"
                ),
            };
            let message = format!(
                "sriov-dra {} for pod {}: {failure}",
                event.rpc_name(),
                pod.display_name()
            );
            tracing::error!(%message, "NRI pod event failed");
            // Unknown, as Go gives a plain error: not DeadlineExceeded or
            // UNIMPLEMENTED, which the runtime treats as a broken plugin or
            // a reason to switch protocols instead of failing the pod.
            Err(Status::new(Code::Unknown, message))
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    //! The dispatcher called directly, as the ttrpc server calls it.

    use super::*;
    use crate::testing::nri_runtime::{Call, PATIENCE, Recorder, pod};

    fn dispatcher(handler: Recorder) -> (Arc<Recorder>, Dispatcher<Recorder>) {
        let handler = Arc::new(handler);
        (handler.clone(), Dispatcher::new(handler))
    }

    fn encode(message: &impl Message) -> Bytes {
        message.encode_to_vec().into()
    }

    #[test]
    fn handlers_get_three_quarters_of_the_runtime_deadline() {
        assert_eq!(
            handler_deadline(DEFAULT_REQUEST_TIMEOUT),
            Duration::from_millis(1500)
        );
        assert_eq!(
            handler_deadline(Duration::from_millis(200)),
            Duration::from_millis(150)
        );
    }

    #[test]
    fn subscription_is_run_stop_remove_pod_sandbox() {
        assert_eq!(PodEvent::mask(), 0x7);
    }

    #[tokio::test]
    async fn a_handler_slower_than_the_runtime_deadline_fails_the_pod_and_finishes_later() {
        let (handler, dispatcher) = dispatcher(Recorder::with_slow(Duration::from_millis(300)));
        let configure = nri::ConfigureRequest {
            request_timeout: 200,
            ..Default::default()
        };
        dispatcher
            .dispatch(plugin_methods::CONFIGURE, encode(&configure))
            .await
            .expect("Configure");

        let slow = pod("ran", "slow-0", Some("/var/run/netns/cni-s"));
        let request = nri::RunPodSandboxRequest {
            pod: Some(slow.clone()),
        };
        let status = dispatcher
            .dispatch(plugin_methods::RUN_POD_SANDBOX, encode(&request))
            .await
            .expect_err("answered before the runtime's 200 ms deadline");
        assert_eq!(status.code, Code::Unknown);
        assert_eq!(
            status.message,
            "sriov-dra RunPodSandbox for pod ran/slow-0 (uid uid-ran-slow-0): not done within \
             150ms, the runtime's deadline; it goes on in the background"
        );

        // The attach was not cut off halfway: it completes on its own.
        let finished = async {
            loop {
                let calls = handler.take();
                if !calls.is_empty() {
                    return calls;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let calls = tokio::time::timeout(PATIENCE, finished)
            .await
            .expect("the handler finishes");
        assert_eq!(calls, [Call::Run(PodSandbox::from(&slow))]);
    }

    #[tokio::test]
    async fn a_failed_reconcile_is_logged_and_synchronize_still_succeeds() {
        let (handler, dispatcher) = dispatcher(Recorder::default());
        let broken = pod("ran", "broken-0", Some("/var/run/netns/cni-b"));
        let request = nri::SynchronizeRequest {
            pods: vec![broken.clone()],
            containers: vec![],
            more: false,
        };
        let reply = dispatcher
            .dispatch(plugin_methods::SYNCHRONIZE, encode(&request))
            .await
            .expect("Synchronize answered OK so the runtime keeps the plugin");
        assert!(reply.is_empty(), "no updates, more=false");
        assert!(dispatcher.synchronized());
        assert_eq!(
            handler.take(),
            [Call::Synchronize(vec![PodSandbox::from(&broken)])]
        );
    }

    #[tokio::test]
    async fn a_pod_event_without_a_pod_changes_nothing() {
        let (handler, dispatcher) = dispatcher(Recorder::default());
        for method in [
            plugin_methods::RUN_POD_SANDBOX,
            plugin_methods::STOP_POD_SANDBOX,
            plugin_methods::REMOVE_POD_SANDBOX,
        ] {
            let reply = dispatcher.dispatch(method, Bytes::new()).await;
            assert_eq!(reply, Ok(Bytes::new()), "{method}");
        }
        assert_eq!(handler.take(), []);
    }

    #[tokio::test]
    async fn an_undecodable_request_is_invalid_argument_naming_the_method() {
        let (handler, dispatcher) = dispatcher(Recorder::default());
        // Field 1, wire type 2 (length-delimited), announcing 5 bytes that
        // never come.
        let garbage = Bytes::from_static(&[0x0a, 0x05, 0x01]);
        let status = dispatcher
            .dispatch(plugin_methods::RUN_POD_SANDBOX, garbage)
            .await
            .expect_err("garbage is refused");
        assert_eq!(status.code, Code::InvalidArgument);
        assert!(
            status
                .message
                .starts_with("undecodable RunPodSandbox request"),
            "{}",
            status.message
        );
        assert_eq!(handler.take(), []);
    }
}
