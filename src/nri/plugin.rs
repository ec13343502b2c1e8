//! The NRI plugin: dials the container runtime's NRI socket, registers,
//! subscribes to pod sandbox events and hands them to a [`PodHandler`]
//! (the driver's attach code). It redials with backoff whenever the runtime
//! restarts or is not up yet, and re-registers and re-synchronizes each time.
//!
//! Wire facts: shared/protocols/nri.md. Connection layout: we serve `Plugin`
//! on mux conn 1 and call `Runtime.RegisterPlugin` on conn 2; the runtime
//! then calls Configure (possibly before our RegisterPlugin call returns),
//! Synchronize, and the pod events.

mod dispatch;
mod pod;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use proto::nri;
use proto::nri::runtime_methods;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tracing::Instrument;

pub use crate::backoff::Backoff;
pub use dispatch::DEFAULT_REQUEST_TIMEOUT;
use dispatch::Dispatcher;
pub use pod::{PodHandler, PodSandbox};

use super::mux::{Mux, MuxError, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN};
use super::ttrpc::{TtrpcClient, TtrpcError, TtrpcServer};

/// Where containerd and CRI-O listen for NRI plugins by default.
pub const DEFAULT_SOCKET: &str = "/var/run/nri/nri.sock";
/// Plugin name we register under; the runtime logs it as `<idx>-<name>`.
pub const DEFAULT_PLUGIN_NAME: &str = "sriov-dra";
/// Plugin index: orders plugins; ours has no ordering needs.
pub const DEFAULT_PLUGIN_IDX: &str = "10";
/// NRI API version we implement (dedicated pod RPCs and StateChange both);
/// runtimes only log it.
pub const NRI_API_VERSION: &str = "v0.12.0";

/// How the plugin reaches and introduces itself to the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NriPluginConfig {
    /// The runtime's NRI socket.
    pub socket: PathBuf,
    /// Registered name: non-empty, `[A-Za-z0-9_.+-]` (NRI v0.12 rule).
    pub plugin_name: String,
    /// Registered index: exactly two digits.
    pub plugin_idx: String,
    /// Sent in RegisterPlugin (field 3); older runtimes ignore it.
    pub nri_version: String,
    /// How long to wait for the RegisterPlugin reply before redialing.
    pub registration_timeout: Duration,
    /// First redial delay; doubles on each failure.
    pub reconnect_min: Duration,
    /// Longest redial delay.
    pub reconnect_max: Duration,
}

impl Default for NriPluginConfig {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.into(),
            plugin_name: DEFAULT_PLUGIN_NAME.into(),
            plugin_idx: DEFAULT_PLUGIN_IDX.into(),
            nri_version: NRI_API_VERSION.into(),
            registration_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

impl NriPluginConfig {
    /// Checks what the runtime would reject at registration (nri.md item
    /// 12), so a bad name fails at start instead of in an endless redial.
    pub fn validate(&self) -> Result<(), NriPluginError> {
        let name_ok = !self.plugin_name.is_empty()
            && self
                .plugin_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c));
        if !name_ok {
            return Err(NriPluginError::InvalidName(self.plugin_name.clone()));
        }
        let idx_ok =
            self.plugin_idx.len() == 2 && self.plugin_idx.chars().all(|c| c.is_ascii_digit());
        if !idx_ok {
            return Err(NriPluginError::InvalidIndex(self.plugin_idx.clone()));
        }
        Ok(())
    }
}

/// Why the plugin could not run at all (connection problems are retried,
/// never returned).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NriPluginError {
    /// The runtime would refuse this name.
    #[error(
        "NRI plugin name {0:?} is invalid: it must be non-empty and use only A-Z a-z 0-9 _ . + -"
    )]
    InvalidName(String),
    /// The runtime would refuse this index.
    #[error("NRI plugin index {0:?} is invalid: it must be exactly two digits, e.g. \"10\"")]
    InvalidIndex(String),
}

/// Why one connection to the runtime ended; logged, then we redial.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect to the NRI socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("NRI mux on {path}: {source}")]
    Mux { path: PathBuf, source: MuxError },
    #[error("NRI registration as {name:?} (index {idx}) failed: {source}")]
    Register {
        name: String,
        idx: String,
        source: TtrpcError,
    },
    #[error("NRI runtime closed the connection before answering RegisterPlugin: {0}")]
    ClosedBeforeRegistration(TtrpcError),
    #[error("NRI runtime connection ended: {0}")]
    Ended(TtrpcError),
}

/// Runs the NRI plugin for the life of the driver.
pub struct NriPlugin;

impl NriPlugin {
    /// Connects to the runtime and serves pod events to `handler` until
    /// `shutdown` resolves; redials with backoff whenever the runtime is
    /// away. Returns an error only for a config the runtime would refuse.
    pub async fn run<H: PodHandler>(
        config: NriPluginConfig,
        handler: Arc<H>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NriPluginError> {
        Self::run_reporting(config, handler, shutdown, watch::Sender::new(false)).await
    }

    /// [`NriPlugin::run`], also saying on `connected` whether the plugin is
    /// registered with the runtime right now: true once RegisterPlugin is
    /// answered, false as soon as that connection ends. The driver's
    /// readiness follows it.
    pub async fn run_reporting<H: PodHandler>(
        config: NriPluginConfig,
        handler: Arc<H>,
        shutdown: impl Future<Output = ()>,
        connected: watch::Sender<bool>,
    ) -> Result<(), NriPluginError> {
        config.validate()?;
        let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
        tokio::pin!(shutdown);
        let mut failures = 0u32;
        loop {
            let dispatcher = Arc::new(Dispatcher::new(handler.clone()));
            let outcome = tokio::select! {
                () = &mut shutdown => break,
                outcome = session(&config, dispatcher.clone(), &connected)
                    .instrument(tracing::info_span!("nri", socket = %config.socket.display())) => outcome,
            };
            connected.send_replace(false);
            if dispatcher.synchronized() {
                // The connection worked; a runtime restart is redialed fast.
                backoff.reset();
                failures = 0;
            }
            let delay = backoff.next_delay();
            failures += 1;
            match &outcome {
                SessionError::Connect { source, .. }
                    if matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) && failures > 1 =>
                {
                    tracing::debug!(error = %outcome, ?delay, "NRI runtime still not there; retrying")
                }
                _ => tracing::warn!(error = %outcome, ?delay, "NRI connection lost; reconnecting"),
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        connected.send_replace(false);
        tracing::info!(socket = %config.socket.display(), "NRI plugin stopped");
        Ok(())
    }
}

/// One connection: dial, serve `Plugin`, register, and serve until the
/// runtime goes away. Always ends in an error, which says why.
async fn session<H: PodHandler>(
    config: &NriPluginConfig,
    dispatcher: Arc<Dispatcher<H>>,
    connected: &watch::Sender<bool>,
) -> SessionError {
    let stream = match UnixStream::connect(&config.socket).await {
        Ok(stream) => stream,
        Err(source) => {
            return SessionError::Connect {
                path: config.socket.clone(),
                source,
            };
        }
    };
    let mux = Mux::new(stream);
    let mux_error = |source| SessionError::Mux {
        path: config.socket.clone(),
        source,
    };
    // Serve before registering: the runtime calls Configure as soon as it
    // has seen RegisterPlugin, maybe before we read its reply.
    let plugin_conn = match mux.open(PLUGIN_SERVICE_CONN) {
        Ok(conn) => conn,
        Err(err) => return mux_error(err),
    };
    let runtime_conn = match mux.open(RUNTIME_SERVICE_CONN) {
        Ok(conn) => conn,
        Err(err) => return mux_error(err),
    };
    mux.unblock();
    let server = TtrpcServer::new(
        nri::PLUGIN_SERVICE,
        move |method: String, payload: Bytes| {
            let dispatcher = dispatcher.clone();
            async move { dispatcher.dispatch(&method, payload).await }
        },
    );
    let serving = server.serve(plugin_conn);
    tokio::pin!(serving);

    let runtime = TtrpcClient::new(runtime_conn);
    let request = nri::RegisterPluginRequest {
        plugin_name: config.plugin_name.clone(),
        plugin_idx: config.plugin_idx.clone(),
        nri_version: config.nri_version.clone(),
    };
    let register = runtime.call_with_timeout(
        nri::RUNTIME_SERVICE,
        runtime_methods::REGISTER_PLUGIN,
        request.encode_to_vec().into(),
        config.registration_timeout,
    );
    tokio::select! {
        ended = &mut serving => return SessionError::ClosedBeforeRegistration(ended),
        registered = register => {
            if let Err(source) = registered {
                return SessionError::Register {
                    name: config.plugin_name.clone(),
                    idx: config.plugin_idx.clone(),
                    source,
                };
            }
        }
    }
    tracing::info!(
        socket = %config.socket.display(),
        name = %config.plugin_name,
        idx = %config.plugin_idx,
        "NRI plugin registered"
    );
    connected.send_replace(true);
    crate::metrics::metrics().nri_connected();
    // `runtime` stays alive with the session: conn 2 is ours until the end.
    let ended = serving.await;
    drop(runtime);
    SessionError::Ended(ended)
}

#[cfg(test)]
mod tests {
    //! Test code plays containerd: it listens on a real unix socket, the
    //! plugin dials it, and both speak the real mux, ttrpc and NRI messages.

    use std::path::Path;

    use tokio::sync::oneshot;

    use super::*;
    use crate::nri::ttrpc::Code;
    use crate::testing::nri_runtime::{Call, FakeRuntime, PATIENCE, Recorder, RuntimeConn, pod};
    use proto::nri::plugin_methods;

    /// A plugin dialing `socket`, stopped by dropping/sending on the sender.
    struct Running {
        handler: Arc<Recorder>,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), NriPluginError>>,
        connected: watch::Receiver<bool>,
    }

    impl Running {
        fn config(socket: &Path) -> NriPluginConfig {
            NriPluginConfig {
                socket: socket.to_owned(),
                reconnect_min: Duration::from_millis(20),
                reconnect_max: Duration::from_millis(200),
                ..Default::default()
            }
        }

        fn start(socket: &Path) -> Self {
            Self::start_with(Self::config(socket))
        }

        fn start_with(config: NriPluginConfig) -> Self {
            let handler = Arc::new(Recorder::default());
            let (stop, stopped) = oneshot::channel::<()>();
            let (connected_tx, connected) = watch::channel(false);
            let task = tokio::spawn(NriPlugin::run_reporting(
                config,
                handler.clone(),
                async move {
                    let _ = stopped.await;
                },
                connected_tx,
            ));
            Self {
                handler,
                stop,
                task,
                connected,
            }
        }

        /// Waits until the plugin reports `want` as its connection state.
        async fn connected_becomes(&mut self, want: bool) {
            tokio::time::timeout(PATIENCE, self.connected.wait_for(|c| *c == want))
                .await
                .expect("connection state within the test's patience")
                .expect("plugin still running");
        }

        async fn shut_down(self) {
            let _ = self.stop.send(());
            let result = tokio::time::timeout(PATIENCE, self.task)
                .await
                .expect("plugin stops within the test's patience")
                .expect("plugin task joins");
            assert_eq!(result, Ok(()));
        }
    }

    /// A runtime at a fresh socket path, a plugin dialing it, and the
    /// accepted connection after the full handshake with `pods`.
    async fn connected(
        pods: Vec<nri::PodSandbox>,
    ) -> (tempfile::TempDir, FakeRuntime, RuntimeConn, Running) {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("nri.sock");
        let runtime = FakeRuntime::listen(&socket);
        let plugin = Running::start(&socket);
        let mut conn = runtime.accept().await;
        let (_, events) = conn.handshake(pods).await;
        assert_eq!(events, 0x7);
        (dir, runtime, conn, plugin)
    }

    fn pod_event(pod: nri::PodSandbox) -> nri::RunPodSandboxRequest {
        nri::RunPodSandboxRequest { pod: Some(pod) }
    }

    #[tokio::test]
    async fn registers_by_name_and_index_and_subscribes_before_the_registration_reply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("nri.sock");
        let runtime = FakeRuntime::listen(&socket);
        let plugin = Running::start(&socket);
        let mut conn = runtime.accept().await;

        let registration = conn.registration().await;
        assert_eq!(registration.plugin_name, "sriov-dra");
        assert_eq!(registration.plugin_idx, "10");
        assert_eq!(registration.nri_version, NRI_API_VERSION);

        // The RegisterPlugin reply is still held: Configure arrives first,
        // and the mask (0x7: run, stop, remove pod sandbox) is in field 2.
        let configure = nri::ConfigureRequest {
            runtime_name: "containerd".into(),
            request_timeout: 2000,
            ..Default::default()
        };
        let reply = conn.call_raw(plugin_methods::CONFIGURE, &configure).await;
        assert_eq!(reply, Bytes::from_static(&[0x10, 0x07]));

        conn.release_registration();
        let sync = conn.synchronize(vec![], false).await;
        assert_eq!(sync, nri::SynchronizeResponse::default());
        assert_eq!(plugin.handler.take(), [Call::Synchronize(vec![])]);

        plugin.shut_down().await;
        conn.hung_up().await;
    }

    #[tokio::test]
    async fn synchronize_in_two_chunks_hands_every_pod_over_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("nri.sock");
        let runtime = FakeRuntime::listen(&socket);
        let plugin = Running::start(&socket);
        let mut conn = runtime.accept().await;
        conn.registration().await;
        assert_eq!(conn.configure().await, 0x7);
        conn.release_registration();

        let a = pod("ran", "du-0", Some("/var/run/netns/cni-a"));
        let b = pod("ran", "du-1", Some("/var/run/netns/cni-b"));
        let c = pod("kube-system", "agent", None);
        let first = conn.synchronize(vec![a.clone(), b.clone()], true).await;
        assert_eq!(
            first,
            nri::SynchronizeResponse {
                update: vec![],
                more: true
            }
        );
        assert_eq!(
            plugin.handler.take(),
            [],
            "no reconcile before the last chunk"
        );

        let last = conn.synchronize(vec![c.clone()], false).await;
        assert!(!last.more && last.update.is_empty());
        let all = [a, b, c].iter().map(PodSandbox::from).collect();
        assert_eq!(plugin.handler.take(), [Call::Synchronize(all)]);
        plugin.shut_down().await;
    }

    #[tokio::test]
    async fn pod_sandbox_events_reach_the_handler_with_the_netns_path() {
        let (_dir, _runtime, conn, plugin) = connected(vec![]).await;
        plugin.handler.take();

        let du = pod("ran", "du-0", Some("/var/run/netns/cni-1f2e"));
        let host = pod("kube-system", "node-agent", None);
        let _: nri::RunPodSandboxResponse = conn
            .call(plugin_methods::RUN_POD_SANDBOX, &pod_event(du.clone()))
            .await
            .expect("RunPodSandbox");
        let _: nri::RunPodSandboxResponse = conn
            .call(plugin_methods::RUN_POD_SANDBOX, &pod_event(host.clone()))
            .await
            .expect("RunPodSandbox of a hostNetwork pod");
        let _: nri::StopPodSandboxResponse = conn
            .call(
                plugin_methods::STOP_POD_SANDBOX,
                &nri::StopPodSandboxRequest {
                    pod: Some(du.clone()),
                },
            )
            .await
            .expect("StopPodSandbox");
        let _: nri::RemovePodSandboxResponse = conn
            .call(
                plugin_methods::REMOVE_POD_SANDBOX,
                &nri::RemovePodSandboxRequest {
                    pod: Some(du.clone()),
                },
            )
            .await
            .expect("RemovePodSandbox");

        let calls = plugin.handler.take();
        let Call::Run(first) = &calls[0] else {
            panic!("first call {:?}", calls[0]);
        };
        assert_eq!(
            first.netns.as_deref(),
            Some(Path::new("/var/run/netns/cni-1f2e"))
        );
        assert_eq!(first.uid, "uid-ran-du-0");
        assert_eq!(
            (first.namespace.as_str(), first.name.as_str()),
            ("ran", "du-0")
        );
        assert_eq!(first.id.len(), 64);
        let du = PodSandbox::from(&du);
        assert_eq!(
            calls,
            [
                Call::Run(du.clone()),
                Call::Run(PodSandbox::from(&host)),
                Call::Stop(du.clone()),
                Call::Remove(du),
            ]
        );
        assert_eq!(PodSandbox::from(&host).netns, None);
        plugin.shut_down().await;
    }

    #[tokio::test]
    async fn failed_attach_fails_the_sandbox_with_an_error_naming_the_pod() {
        let (_dir, _runtime, conn, plugin) = connected(vec![]).await;
        let broken = pod("ran", "broken-0", Some("/var/run/netns/cni-x"));
        let err = conn
            .call::<nri::RunPodSandboxResponse>(plugin_methods::RUN_POD_SANDBOX, &pod_event(broken))
            .await
            .expect_err("the handler failed");
        let TtrpcError::Status(status) = err else {
            panic!("expected a status, got {err:?}");
        };
        // Not UNIMPLEMENTED (protocol fallback) nor DEADLINE_EXCEEDED (drops
        // the plugin): an ordinary error, which fails the sandbox.
        assert_eq!(status.code, Code::Unknown);
        assert_eq!(
            status.message,
            "sriov-dra RunPodSandbox for pod ran/broken-0 (uid uid-ran-broken-0): \
             VF pci-0000-3b-02-1 has no netdev"
        );
        plugin.shut_down().await;
    }

    #[tokio::test]
    async fn old_runtime_delivers_pod_events_as_state_change() {
        let (_dir, _runtime, conn, plugin) = connected(vec![]).await;
        plugin.handler.take();
        let du = pod("ran", "du-0", Some("/var/run/netns/cni-5"));
        for event in [
            nri::Event::RunPodSandbox,
            nri::Event::StopPodSandbox,
            nri::Event::RemovePodSandbox,
        ] {
            let change = nri::StateChangeEvent {
                event: event as i32,
                pod: Some(du.clone()),
                container: None,
            };
            let _: nri::Empty = conn
                .call(plugin_methods::STATE_CHANGE, &change)
                .await
                .unwrap_or_else(|err| panic!("StateChange {event:?}: {err}"));
        }
        let expected = PodSandbox::from(&du);
        assert_eq!(
            plugin.handler.take(),
            [
                Call::Run(expected.clone()),
                Call::Stop(expected.clone()),
                Call::Remove(expected),
            ]
        );

        // A failure on this path names the pod too.
        let change = nri::StateChangeEvent {
            event: nri::Event::RunPodSandbox as i32,
            pod: Some(pod("ran", "broken-1", Some("/var/run/netns/cni-6"))),
            container: None,
        };
        let err = conn
            .call::<nri::Empty>(plugin_methods::STATE_CHANGE, &change)
            .await
            .expect_err("the handler failed");
        assert!(err.to_string().contains("ran/broken-1"), "{err}");
        plugin.shut_down().await;
    }

    #[tokio::test]
    async fn container_events_and_other_methods_get_default_answers() {
        let (_dir, _runtime, conn, plugin) = connected(vec![]).await;
        plugin.handler.take();
        let du = pod("ran", "du-0", Some("/var/run/netns/cni-7"));
        let container = nri::Container {
            id: "c1".into(),
            pod_sandbox_id: du.id.clone(),
            name: "app".into(),
            ..Default::default()
        };
        // pod=1 and container=2 in every container request.
        let request = nri::CreateContainerRequest {
            pod: Some(du.clone()),
            container: Some(container.clone()),
        };
        let ours = [
            plugin_methods::CONFIGURE,
            plugin_methods::SYNCHRONIZE,
            plugin_methods::RUN_POD_SANDBOX,
            plugin_methods::STOP_POD_SANDBOX,
            plugin_methods::REMOVE_POD_SANDBOX,
            plugin_methods::STATE_CHANGE,
        ];
        let others = plugin_methods::ALL.iter().filter(|m| !ours.contains(m));
        for method in others.copied().chain(["MethodFromAFutureNri"]) {
            let reply = conn.call_raw(method, &request).await;
            assert!(reply.is_empty(), "{method} answered {reply:?}");
        }
        // A container event through StateChange (new runtime after fallback).
        let change = nri::StateChangeEvent {
            event: nri::Event::StartContainer as i32,
            pod: Some(du),
            container: Some(container),
        };
        let _: nri::Empty = conn
            .call(plugin_methods::STATE_CHANGE, &change)
            .await
            .expect("container StateChange answered");
        assert_eq!(
            plugin.handler.take(),
            [],
            "the driver hears only pod events"
        );
        plugin.shut_down().await;
    }

    #[tokio::test]
    async fn runtime_restart_is_followed_by_reconnect_registration_and_synchronize() {
        let du = pod("ran", "du-0", Some("/var/run/netns/cni-8"));
        let (dir, runtime, conn, mut plugin) = connected(vec![du.clone()]).await;
        let socket = dir.path().join("nri.sock");
        plugin.connected_becomes(true).await;

        // The runtime goes away and comes back at the same path.
        conn.close().await;
        runtime.stop();
        plugin.connected_becomes(false).await;
        let runtime = FakeRuntime::listen(&socket);
        let mut conn = runtime.accept().await;
        let late = pod("ran", "du-1", Some("/var/run/netns/cni-9"));
        let (registration, events) = conn.handshake(vec![du.clone(), late.clone()]).await;
        assert_eq!((registration.plugin_idx.as_str(), events), ("10", 0x7));
        plugin.connected_becomes(true).await;

        let _: nri::RunPodSandboxResponse = conn
            .call(plugin_methods::RUN_POD_SANDBOX, &pod_event(late.clone()))
            .await
            .expect("events flow on the new connection");
        let (du, late) = (PodSandbox::from(&du), PodSandbox::from(&late));
        assert_eq!(
            plugin.handler.take(),
            [
                Call::Synchronize(vec![du.clone()]),
                Call::Synchronize(vec![du, late.clone()]),
                Call::Run(late),
            ]
        );
        plugin.shut_down().await;
    }

    #[tokio::test]
    async fn a_refused_registration_is_retried_on_a_new_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("nri.sock");
        let runtime = FakeRuntime::listen(&socket);
        let plugin = Running::start(&socket);

        let mut refused = runtime.accept_rejecting("plugin index already taken").await;
        refused.registration().await;
        refused.hung_up().await;
        assert!(
            !*plugin.connected.borrow(),
            "a refused registration is not a connection"
        );

        let mut conn = runtime.accept().await;
        let (registration, events) = conn.handshake(vec![]).await;
        assert_eq!(
            (registration.plugin_name.as_str(), events),
            ("sriov-dra", 0x7)
        );
        plugin.shut_down().await;
    }

    #[tokio::test]
    async fn an_unanswered_registration_times_out_and_is_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("nri.sock");
        let runtime = FakeRuntime::listen(&socket);
        let plugin = Running::start_with(NriPluginConfig {
            registration_timeout: Duration::from_millis(200),
            ..Running::config(&socket)
        });

        // This runtime never releases the RegisterPlugin reply.
        let mut silent = runtime.accept().await;
        silent.registration().await;
        silent.hung_up().await;

        let mut conn = runtime.accept().await;
        conn.handshake(vec![]).await;
        plugin.shut_down().await;
    }

    #[tokio::test]
    async fn concurrent_pod_starts_each_reach_the_handler() {
        let (_dir, _runtime, conn, plugin) = connected(vec![]).await;
        plugin.handler.take();
        let conn = Arc::new(conn);
        let mut starts = tokio::task::JoinSet::new();
        for i in 0..50 {
            let conn = conn.clone();
            starts.spawn(async move {
                let du = pod(
                    "ran",
                    &format!("du-{i}"),
                    Some(&format!("/var/run/netns/cni-{i}")),
                );
                conn.call::<nri::RunPodSandboxResponse>(
                    plugin_methods::RUN_POD_SANDBOX,
                    &pod_event(du),
                )
                .await
            });
        }
        while let Some(done) = starts.join_next().await {
            done.expect("join").expect("RunPodSandbox");
        }
        let mut netns: Vec<String> = plugin
            .handler
            .take()
            .into_iter()
            .map(|call| match call {
                Call::Run(pod) => pod
                    .netns
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        netns.sort();
        let mut expected: Vec<String> =
            (0..50).map(|i| format!("/var/run/netns/cni-{i}")).collect();
        expected.sort();
        assert_eq!(netns, expected);
        plugin.shut_down().await;
    }

    #[tokio::test]
    async fn chunks_of_a_synchronize_cut_short_by_a_restart_are_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("nri.sock");
        let runtime = FakeRuntime::listen(&socket);
        let plugin = Running::start(&socket);
        let mut conn = runtime.accept().await;
        conn.registration().await;
        conn.configure().await;
        conn.release_registration();
        let gone = pod("ran", "gone-0", Some("/var/run/netns/cni-g"));
        assert!(conn.synchronize(vec![gone], true).await.more);

        // The runtime dies before the last chunk.
        conn.close().await;
        runtime.stop();
        let runtime = FakeRuntime::listen(&socket);
        let mut conn = runtime.accept().await;
        let du = pod("ran", "du-0", Some("/var/run/netns/cni-d"));
        conn.handshake(vec![du.clone()]).await;
        assert_eq!(
            plugin.handler.take(),
            [Call::Synchronize(vec![PodSandbox::from(&du)])]
        );
        plugin.shut_down().await;
    }

    #[tokio::test]
    async fn plugin_started_before_the_runtime_connects_when_it_appears() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("nri.sock");
        let plugin = Running::start(&socket);
        tokio::time::sleep(Duration::from_millis(300)).await;

        let runtime = FakeRuntime::listen(&socket);
        let mut conn = runtime.accept().await;
        let (registration, _) = conn.handshake(vec![]).await;
        assert_eq!(registration.plugin_name, "sriov-dra");
        plugin.shut_down().await;
    }

    #[tokio::test]
    async fn shutdown_while_waiting_for_the_runtime_returns_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plugin = Running::start(&dir.path().join("nri.sock"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        plugin.shut_down().await;
    }

    #[tokio::test]
    async fn shutdown_hangs_up_on_the_runtime() {
        let (_dir, _runtime, conn, plugin) = connected(vec![]).await;
        plugin.shut_down().await;
        conn.hung_up().await;
    }

    #[tokio::test]
    async fn a_name_or_index_the_runtime_would_refuse_fails_before_dialing() {
        let handler = Arc::new(Recorder::default());
        for (name, idx, expected) in [
            (
                "sriov dra",
                "10",
                NriPluginError::InvalidName("sriov dra".into()),
            ),
            ("", "10", NriPluginError::InvalidName(String::new())),
            ("sriov-dra", "1", NriPluginError::InvalidIndex("1".into())),
            ("sriov-dra", "1a", NriPluginError::InvalidIndex("1a".into())),
            (
                "sriov-dra",
                "100",
                NriPluginError::InvalidIndex("100".into()),
            ),
        ] {
            let config = NriPluginConfig {
                plugin_name: name.into(),
                plugin_idx: idx.into(),
                socket: "/nonexistent/nri.sock".into(),
                ..Default::default()
            };
            let result = NriPlugin::run(config, handler.clone(), std::future::pending()).await;
            assert_eq!(result, Err(expected));
        }
        let fine = NriPluginConfig {
            plugin_name: "sriov-dra_v1.2+x".into(),
            plugin_idx: "05".into(),
            ..Default::default()
        };
        assert_eq!(fine.validate(), Ok(()));
    }
}
