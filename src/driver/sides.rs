//! The two sides the driver serves, started the same way by `sriov-dra
//! run` and by `sriov-dra demo`: the kubelet's (DRA node service with the
//! device health stream, plugin registration) and the runtime's (the NRI
//! plugin). Each side reports into [`Readiness`] as it comes up, so
//! `/readyz` means the same thing in both.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::health::HealthBook;
use crate::kubelet::health_service::HealthService;
use crate::kubelet::node_service::{NodeService, serve_node_service_with_health};
use crate::kubelet::registration::{
    PluginPaths, RegistrationHandle, RegistrationState, serve_registration,
};
use crate::nri::plugin::{NriPlugin, NriPluginConfig, NriPluginError, PodHandler};
use crate::readiness::{KubeletPart, Readiness};

/// The kubelet's side, running.
pub struct KubeletSide {
    /// The DRA node service (v1, v1beta1, and the health stream).
    pub dra: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Plugin registration; its state also drives readiness.
    pub registration: RegistrationHandle,
}

/// Serves the DRA node service with `health`'s stream and the registration
/// socket until `stopped()` completes.
///
/// Registration advertises the health service, so both are always served
/// together: a driver that advertised it without serving it would leave
/// the kubelet's health watch failing.
pub fn serve_kubelet<F>(
    paths: &PluginPaths,
    service: NodeService,
    health: &HealthBook,
    readiness: &Readiness,
    stopped: impl Fn() -> F,
) -> anyhow::Result<KubeletSide>
where
    F: Future<Output = ()> + Send + 'static,
{
    let dra = serve_node_service_with_health(
        &paths.dra_socket,
        service,
        Some(HealthService::new(health.subscribe())),
        stopped(),
    )?;
    let registration = serve_registration(paths, stopped())?;
    tokio::spawn(
        readiness
            .clone()
            .follow(registration.state.clone(), |r, state| {
                r.set_kubelet(match state {
                    RegistrationState::Pending => KubeletPart::Pending,
                    RegistrationState::Registered => KubeletPart::Registered,
                    RegistrationState::Rejected(why) => KubeletPart::Rejected(why),
                })
            }),
    );
    Ok(KubeletSide { dra, registration })
}

/// Runs the NRI plugin with `handler` (the pod network handler) until `stopped` completes, reporting
/// whether the runtime is connected.
pub fn serve_runtime(
    config: NriPluginConfig,
    handler: impl PodHandler,
    readiness: &Readiness,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<Result<(), NriPluginError>> {
    let (connected, state) = watch::channel(false);
    tokio::spawn(
        readiness
            .clone()
            .follow(state, |r, connected| r.set_nri_connected(connected)),
    );
    tokio::spawn(NriPlugin::run_reporting(
        config,
        Arc::new(handler),
        stopped,
        connected,
    ))
}
