//! The container runtime's side of a plugin (re)connect, as containerd
//! does it after a driver restart: accept the plugin's dial, take its
//! registration, `Configure`, then `Synchronize` with the pods that run
//! (nri.md), so a restarted driver learns what it must finish.

use std::time::Duration;

use proto::nri;
use proto::nri::plugin_methods;

use super::driver_process::Driver;
use super::nri_runtime::{FakeRuntime, RuntimeConn};

/// Why a handshake did not give a connection.
#[derive(Debug)]
pub enum HandshakeError {
    /// The driver died while the runtime waited for it.
    Died,
    /// A step failed while the driver still ran (or was dying): what.
    Failed(String),
}

/// Accept, registration, `Configure`, `Synchronize` with `pods`. An error
/// of `Synchronize` itself is not one here: whatever the driver did with
/// the pods is judged by what the caller then finds.
pub async fn handshake(
    runtime: &FakeRuntime,
    driver: &mut Driver,
    pods: Vec<nri::PodSandbox>,
) -> Result<RuntimeConn, HandshakeError> {
    let mut conn = tokio::select! {
        conn = runtime.accept() => conn,
        _ = driver.ended_within(Duration::from_secs(3600)) => return Err(HandshakeError::Died),
    };
    let registered = tokio::select! {
        r = conn.try_registration() => r,
        _ = driver.ended_within(Duration::from_secs(3600)) => return Err(HandshakeError::Died),
    };
    if registered.is_none() {
        return Err(HandshakeError::Failed(
            "the NRI plugin did not register".into(),
        ));
    }
    let configure = nri::ConfigureRequest {
        runtime_name: "fake-containerd".into(),
        runtime_version: "v2.1.0".into(),
        registration_timeout: 5000,
        request_timeout: 20_000,
        ..Default::default()
    };
    if let Err(e) = conn
        .call::<nri::ConfigureResponse>(plugin_methods::CONFIGURE, &configure)
        .await
    {
        return Err(HandshakeError::Failed(format!("Configure: {e}")));
    }
    conn.release_registration();
    let request = nri::SynchronizeRequest {
        pods,
        containers: Vec::new(),
        more: false,
    };
    let _ = conn
        .call::<nri::SynchronizeResponse>(plugin_methods::SYNCHRONIZE, &request)
        .await;
    Ok(conn)
}
