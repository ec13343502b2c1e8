//! The kubelet and the container runtime, as the demo plays them: the
//! kubelet registers the plugin and calls the DRA service over its real
//! gRPC socket; the runtime (the tests' `FakeRuntime`) speaks real NRI to
//! the plugin over its socket.

use std::path::Path;

use anyhow::{Context, bail};
use proto::dra::v1;
use proto::nri;
use proto::nri::plugin_methods;
use proto::pluginregistration::registration_client::RegistrationClient;
use proto::pluginregistration::{InfoRequest, RegistrationStatus};

use super::claim::{CLAIM, CLAIM_UID, NAMESPACE};
use crate::kubelet::registration::PluginPaths;
use crate::kubelet::socket::connect_unix;
use crate::testing::nri_runtime::{FakeRuntime, RuntimeConn};

/// The kubelet's DRA client.
pub struct Kubelet {
    dra: v1::dra_plugin_client::DraPluginClient<tonic::transport::Channel>,
}

fn claim() -> v1::Claim {
    v1::Claim {
        namespace: NAMESPACE.into(),
        uid: CLAIM_UID.into(),
        name: CLAIM.into(),
    }
}

impl Kubelet {
    /// Finds the plugin as the kubelet does (GetInfo on the registration
    /// socket, then NotifyRegistrationStatus) and dials the DRA socket it
    /// names.
    pub async fn register(paths: &PluginPaths) -> anyhow::Result<Kubelet> {
        let channel = connect_unix(&paths.registration_socket)
            .await
            .context("kubelet: cannot dial the registration socket")?;
        let mut registration = RegistrationClient::new(channel);
        let info = registration
            .get_info(InfoRequest {})
            .await
            .context("kubelet: GetInfo")?
            .into_inner();
        registration
            .notify_registration_status(RegistrationStatus {
                plugin_registered: true,
                error: String::new(),
            })
            .await
            .context("kubelet: NotifyRegistrationStatus")?;
        let channel = connect_unix(Path::new(&info.endpoint))
            .await
            .with_context(|| format!("kubelet: cannot dial {}", info.endpoint))?;
        Ok(Kubelet {
            dra: v1::dra_plugin_client::DraPluginClient::new(channel),
        })
    }

    /// NodePrepareResources of the demo claim; its CDI device IDs.
    pub async fn prepare(&mut self) -> anyhow::Result<Vec<String>> {
        let reply = self
            .dra
            .node_prepare_resources(v1::NodePrepareResourcesRequest {
                claims: vec![claim()],
            })
            .await
            .context("kubelet: NodePrepareResources")?
            .into_inner();
        let Some(one) = reply.claims.get(CLAIM_UID) else {
            bail!("kubelet: NodePrepareResources did not answer for claim {CLAIM_UID}");
        };
        if !one.error.is_empty() {
            bail!("kubelet: NodePrepareResources failed: {}", one.error);
        }
        Ok(one
            .devices
            .iter()
            .flat_map(|d| d.cdi_device_ids.iter().cloned())
            .collect())
    }

    /// NodeUnprepareResources of the demo claim.
    pub async fn unprepare(&mut self) -> anyhow::Result<()> {
        let reply = self
            .dra
            .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
                claims: vec![claim()],
            })
            .await
            .context("kubelet: NodeUnprepareResources")?
            .into_inner();
        match reply.claims.get(CLAIM_UID) {
            Some(one) if one.error.is_empty() => Ok(()),
            Some(one) => bail!("kubelet: NodeUnprepareResources failed: {}", one.error),
            None => bail!("kubelet: NodeUnprepareResources did not answer for {CLAIM_UID}"),
        }
    }
}

/// The runtime side of one plugin connection.
pub struct Runtime {
    _listener: FakeRuntime,
    conn: RuntimeConn,
}

impl Runtime {
    /// Listens on `socket`, as the runtime does before any plugin starts.
    pub fn listen(socket: &Path) -> FakeRuntime {
        FakeRuntime::listen(socket)
    }

    /// Waits for the plugin to dial `listener` and runs containerd's
    /// handshake (registration, Configure, Synchronize with no pods).
    pub async fn connect(listener: FakeRuntime) -> Runtime {
        let mut conn = listener.accept().await;
        conn.handshake(Vec::new()).await;
        Runtime {
            _listener: listener,
            conn,
        }
    }

    /// RunPodSandbox, after which the pod's network is the plugin's to set up.
    pub async fn run_pod(&self, pod: &nri::PodSandbox) -> anyhow::Result<()> {
        self.conn
            .call::<nri::RunPodSandboxResponse>(
                plugin_methods::RUN_POD_SANDBOX,
                &nri::RunPodSandboxRequest {
                    pod: Some(pod.clone()),
                },
            )
            .await
            .context("runtime: RunPodSandbox")?;
        Ok(())
    }

    /// StopPodSandbox then RemovePodSandbox, as containerd sends them.
    pub async fn stop_pod(&self, pod: &nri::PodSandbox) -> anyhow::Result<()> {
        self.conn
            .call::<nri::StopPodSandboxResponse>(
                plugin_methods::STOP_POD_SANDBOX,
                &nri::StopPodSandboxRequest {
                    pod: Some(pod.clone()),
                },
            )
            .await
            .context("runtime: StopPodSandbox")?;
        self.conn
            .call::<nri::RemovePodSandboxResponse>(
                plugin_methods::REMOVE_POD_SANDBOX,
                &nri::RemovePodSandboxRequest {
                    pod: Some(pod.clone()),
                },
            )
            .await
            .context("runtime: RemovePodSandbox")?;
        Ok(())
    }
}
