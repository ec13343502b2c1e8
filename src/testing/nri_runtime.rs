//! A container runtime for tests: listens on a unix socket as containerd
//! does, and speaks real NRI (mux, ttrpc, protos) to the plugin that dials
//! it. It serves `Runtime` on conn 2 and calls `Plugin` on conn 1.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use proto::nri;
use proto::nri::{plugin_methods, runtime_methods};
use tokio::net::UnixListener;
use tokio::sync::{Semaphore, mpsc};

use crate::nri::mux::{Mux, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN};
use crate::nri::plugin::{PodHandler, PodSandbox};
use crate::nri::ttrpc::{Code, Status, TtrpcClient, TtrpcError, TtrpcServer};

/// How long a test waits for the plugin before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The listening side, as the runtime sets it up at start.
pub struct FakeRuntime {
    listener: UnixListener,
    path: PathBuf,
}

impl FakeRuntime {
    /// Listens on `path`, removing a stale socket first as the runtime does.
    pub fn listen(path: &Path) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("fake runtime binds its socket");
        Self {
            listener,
            path: path.to_owned(),
        }
    }

    /// Waits for the plugin to dial.
    pub async fn accept(&self) -> RuntimeConn {
        let (stream, _) = tokio::time::timeout(PATIENCE, self.listener.accept())
            .await
            .expect("plugin dials within the test's patience")
            .expect("accept");
        RuntimeConn::new(Mux::new(stream), None)
    }

    /// Waits for the plugin to dial, and answers its RegisterPlugin with
    /// code 2 and `reason`, as the runtime refuses a bad name or index.
    pub async fn accept_rejecting(&self, reason: &str) -> RuntimeConn {
        let (stream, _) = tokio::time::timeout(PATIENCE, self.listener.accept())
            .await
            .expect("plugin dials within the test's patience")
            .expect("accept");
        RuntimeConn::new(Mux::new(stream), Some(reason.to_owned()))
    }

    /// Stops listening and removes the socket, as a stopping runtime does.
    pub fn stop(self) {
        drop(self.listener);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One accepted plugin connection.
pub struct RuntimeConn {
    mux: Mux,
    plugin: TtrpcClient,
    registrations: mpsc::UnboundedReceiver<nri::RegisterPluginRequest>,
    /// Held RegisterPlugin replies; each permit releases one.
    release: Arc<Semaphore>,
}

impl RuntimeConn {
    fn new(mux: Mux, reject: Option<String>) -> Self {
        let plugin = TtrpcClient::new(mux.open(PLUGIN_SERVICE_CONN).expect("open conn 1"));
        let (registered, registrations) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let gate = release.clone();
        let service = TtrpcServer::new(
            nri::RUNTIME_SERVICE,
            move |method: String, payload: Bytes| {
                let registered = registered.clone();
                let gate = gate.clone();
                let reject = reject.clone();
                async move {
                    if method != runtime_methods::REGISTER_PLUGIN {
                        return Err(Status::new(Code::Unimplemented, method));
                    }
                    let req = nri::RegisterPluginRequest::decode(payload)
                        .map_err(|e| Status::new(Code::InvalidArgument, e.to_string()))?;
                    let _ = registered.send(req);
                    if let Some(reason) = reject {
                        return Err(Status::new(Code::Unknown, reason));
                    }
                    // Like the runtime, report "registered" before replying; the
                    // test decides when the reply goes out (nri.md item 13).
                    let permit = gate
                        .acquire()
                        .await
                        .map_err(|e| Status::new(Code::Internal, e.to_string()))?;
                    permit.forget();
                    Ok(Bytes::new())
                }
            },
        );
        tokio::spawn(service.serve(mux.open(RUNTIME_SERVICE_CONN).expect("open conn 2")));
        mux.unblock();
        Self {
            mux,
            plugin,
            registrations,
            release,
        }
    }

    /// The plugin's RegisterPlugin request (its reply is still held).
    pub async fn registration(&mut self) -> nri::RegisterPluginRequest {
        tokio::time::timeout(PATIENCE, self.registrations.recv())
            .await
            .expect("plugin registers within the test's patience")
            .expect("registration channel open")
    }

    /// The plugin's RegisterPlugin request, or `None` when it hung up or
    /// did not register within the test's patience (a driver that died).
    pub async fn try_registration(&mut self) -> Option<nri::RegisterPluginRequest> {
        tokio::time::timeout(PATIENCE, self.registrations.recv())
            .await
            .ok()
            .flatten()
    }

    /// Lets the held RegisterPlugin reply go out.
    pub fn release_registration(&self) {
        self.release.add_permits(1);
    }

    /// Calls a `Plugin` method with a request message.
    pub async fn call<Resp: Message + Default>(
        &self,
        method: &str,
        request: &impl Message,
    ) -> Result<Resp, TtrpcError> {
        let reply = self
            .plugin
            .call_with_timeout(
                nri::PLUGIN_SERVICE,
                method,
                request.encode_to_vec().into(),
                PATIENCE,
            )
            .await?;
        Ok(Resp::decode(reply).expect("plugin answers a decodable message"))
    }

    /// Calls a `Plugin` method and returns the undecoded reply.
    pub async fn call_raw(&self, method: &str, request: &impl Message) -> Bytes {
        self.plugin
            .call_with_timeout(
                nri::PLUGIN_SERVICE,
                method,
                request.encode_to_vec().into(),
                PATIENCE,
            )
            .await
            .unwrap_or_else(|err| panic!("{method} answered OK: {err}"))
    }

    /// Configure as containerd sends it by default (2 s request timeout);
    /// returns the subscribed event mask.
    pub async fn configure(&self) -> i32 {
        self.configure_with(2000).await
    }

    /// Configure with another request timeout (containerd's
    /// `plugin_request_timeout`), in milliseconds.
    pub async fn configure_with(&self, request_timeout_ms: i64) -> i32 {
        let request = nri::ConfigureRequest {
            runtime_name: "fake-containerd".into(),
            runtime_version: "v2.1.0".into(),
            registration_timeout: 5000,
            request_timeout: request_timeout_ms,
            ..Default::default()
        };
        let reply: nri::ConfigureResponse = self
            .call(plugin_methods::CONFIGURE, &request)
            .await
            .expect("Configure answered");
        reply.events
    }

    /// One Synchronize chunk.
    pub async fn synchronize(
        &self,
        pods: Vec<nri::PodSandbox>,
        more: bool,
    ) -> nri::SynchronizeResponse {
        let request = nri::SynchronizeRequest {
            pods,
            containers: Vec::new(),
            more,
        };
        self.call(plugin_methods::SYNCHRONIZE, &request)
            .await
            .expect("Synchronize answered")
    }

    /// The whole handshake as containerd runs it: registration seen,
    /// Configure sent before the registration reply, then Synchronize.
    /// Returns the registration and the event mask.
    pub async fn handshake(
        &mut self,
        pods: Vec<nri::PodSandbox>,
    ) -> (nri::RegisterPluginRequest, i32) {
        self.handshake_with(pods, 2000).await
    }

    /// [`RuntimeConn::handshake`] with another request timeout (ms).
    pub async fn handshake_with(
        &mut self,
        pods: Vec<nri::PodSandbox>,
        request_timeout_ms: i64,
    ) -> (nri::RegisterPluginRequest, i32) {
        let registration = self.registration().await;
        let events = self.configure_with(request_timeout_ms).await;
        self.release_registration();
        let reply = self.synchronize(pods, false).await;
        assert!(!reply.more && reply.update.is_empty(), "{reply:?}");
        (registration, events)
    }

    /// Resolves when the plugin hangs up.
    pub async fn hung_up(&self) {
        tokio::time::timeout(PATIENCE, self.mux.closed())
            .await
            .expect("plugin hangs up within the test's patience");
    }

    /// Drops the connection, as a stopping runtime does.
    pub async fn close(self) {
        self.mux.close().await;
    }
}

/// A pod as containerd describes it after CNI setup.
pub fn pod(namespace: &str, name: &str, netns: Option<&str>) -> nri::PodSandbox {
    let mut namespaces = vec![
        nri::LinuxNamespace {
            r#type: "pid".into(),
            path: String::new(),
        },
        nri::LinuxNamespace {
            r#type: "ipc".into(),
            path: String::new(),
        },
    ];
    if let Some(path) = netns {
        namespaces.push(nri::LinuxNamespace {
            r#type: "network".into(),
            path: path.into(),
        });
    }
    nri::PodSandbox {
        // 64 hex digits like containerd's ids, distinct per pod.
        id: format!("{:0>64}", hex(&format!("{namespace}/{name}"))),
        name: name.into(),
        uid: format!("uid-{namespace}-{name}"),
        namespace: namespace.into(),
        linux: Some(nri::LinuxPodSandbox {
            namespaces,
            ..Default::default()
        }),
        ips: vec!["10.244.0.7".into()],
        ..Default::default()
    }
}

fn hex(text: &str) -> String {
    text.bytes().take(32).map(|b| format!("{b:02x}")).collect()
}

/// One call the plugin made into the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `run_pod_sandbox`.
    Run(PodSandbox),
    /// `stop_pod_sandbox`.
    Stop(PodSandbox),
    /// `remove_pod_sandbox`.
    Remove(PodSandbox),
    /// `synchronize`.
    Synchronize(Vec<PodSandbox>),
}

/// A driver that records what it is told. Pods named `broken-*` fail to
/// attach; pods named `slow-*` take `slow` to handle.
#[derive(Default)]
pub struct Recorder {
    calls: std::sync::Mutex<Vec<Call>>,
    slow: Duration,
}

impl Recorder {
    /// A recorder whose `slow-*` pods take `slow`.
    pub fn with_slow(slow: Duration) -> Self {
        Self {
            slow,
            ..Self::default()
        }
    }

    /// Everything recorded so far, oldest first; clears the record.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().expect("recorder lock"))
    }

    async fn record(&self, call: Call, pod: &PodSandbox) -> Result<(), String> {
        if pod.name.starts_with("slow-") {
            tokio::time::sleep(self.slow).await;
        }
        self.calls.lock().expect("recorder lock").push(call);
        if pod.name.starts_with("broken-") {
            return Err("VF pci-0000-3b-02-1 has no netdev".into());
        }
        Ok(())
    }
}

impl PodHandler for Recorder {
    type Error = String;

    async fn run_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), String> {
        self.record(Call::Run(pod.clone()), pod).await
    }

    async fn stop_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), String> {
        self.record(Call::Stop(pod.clone()), pod).await
    }

    async fn remove_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), String> {
        self.record(Call::Remove(pod.clone()), pod).await
    }

    async fn synchronize(&self, pods: &[PodSandbox]) -> Result<(), String> {
        self.calls
            .lock()
            .expect("recorder lock")
            .push(Call::Synchronize(pods.to_vec()));
        if pods.iter().any(|pod| pod.name.starts_with("broken-")) {
            return Err("cannot reconcile a broken pod".into());
        }
        Ok(())
    }
}
