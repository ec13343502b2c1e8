//! Kubelet plugin registration: the socket the kubelet's plugin watcher
//! finds in `plugins_registry/`, which tells it who we are and where our DRA
//! service listens, and receives the kubelet's verdict.

use std::future::Future;
use std::path::{Path, PathBuf};

use proto::pluginregistration::registration_server::{Registration, RegistrationServer};
use proto::pluginregistration::{
    DRA_PLUGIN_TYPE, InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use super::socket::{SocketError, bind_private_socket, serve_then_remove};

/// Service labels we serve, in preference order: the kubelet takes the first
/// DRAPlugin one it knows, so 1.34+ kubelets use v1 and older ones fall
/// back to v1beta1; the health stream's label comes after them, as the
/// kubelet's own helper sends it.
pub const SUPPORTED_VERSIONS: [&str; 3] = [
    proto::dra::v1::SERVICE_LABEL,
    proto::dra::v1beta1::SERVICE_LABEL,
    proto::dra_health::v1alpha1::SERVICE_LABEL,
];

/// Where the kubelet looks for plugins and where our DRA socket goes, both
/// derived from the kubelet directory (default `/var/lib/kubelet`) so tests
/// can use a temporary one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginPaths {
    /// DRA driver name; the kubelet routes claims of this driver to us.
    pub driver: String,
    /// `<kubelet-dir>/plugins_registry/<driver>-reg.sock`.
    pub registration_socket: PathBuf,
    /// `<kubelet-dir>/plugins/<driver>/dra.sock`.
    pub dra_socket: PathBuf,
}

impl PluginPaths {
    /// The socket names the kubelet's own DRA helper library uses.
    pub fn new(kubelet_dir: &Path, driver: &str) -> Self {
        Self {
            driver: driver.to_owned(),
            registration_socket: kubelet_dir
                .join("plugins_registry")
                .join(format!("{driver}-reg.sock")),
            dra_socket: kubelet_dir.join("plugins").join(driver).join("dra.sock"),
        }
    }

    /// What `GetInfo` answers.
    pub fn plugin_info(&self) -> PluginInfo {
        PluginInfo {
            r#type: DRA_PLUGIN_TYPE.to_owned(),
            name: self.driver.clone(),
            endpoint: self.dra_socket.to_string_lossy().into_owned(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
        }
    }
}

/// The kubelet's verdict on our registration, as last reported to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// No `NotifyRegistrationStatus` yet (the kubelet has not found us or is
    /// still validating).
    Pending,
    /// The kubelet accepted the plugin and will call the DRA service.
    Registered,
    /// The kubelet rejected the plugin, with its reason.
    Rejected(String),
}

/// Why the registration server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The registration socket could not be created.
    #[error("kubelet registration socket: {0}")]
    Socket(#[from] SocketError),
}

/// A running registration server.
pub struct RegistrationHandle {
    /// Follows the kubelet's verdict, so the driver can report readiness.
    pub state: watch::Receiver<RegistrationState>,
    /// Ends when the shutdown future passed to [`serve_registration`]
    /// completes, or with the transport error that stopped the server.
    pub task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Binds the registration socket (replacing a stale one, mode 0600) and
/// serves the kubelet's `Registration` service on it until `shutdown`
/// completes. Returns once the socket is in place, so a bind error is seen
/// by the caller rather than lost in a task. Must run inside tokio.
pub fn serve_registration(
    paths: &PluginPaths,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RegistrationHandle, RegistrationError> {
    let listener = bind_private_socket(&paths.registration_socket)?;
    let (state_tx, state) = watch::channel(RegistrationState::Pending);
    let service = RegistrationService {
        info: paths.plugin_info(),
        state: state_tx,
    };
    tracing::info!(
        socket = %paths.registration_socket.display(),
        driver = %paths.driver,
        "serving kubelet plugin registration"
    );
    let task = tokio::spawn(serve_then_remove(
        paths.registration_socket.clone(),
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(service))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown),
    ));
    Ok(RegistrationHandle { state, task })
}

/// Answers the kubelet's registration calls.
struct RegistrationService {
    info: PluginInfo,
    state: watch::Sender<RegistrationState>,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(
        &self,
        _request: Request<InfoRequest>,
    ) -> Result<Response<PluginInfo>, Status> {
        tracing::debug!(driver = %self.info.name, "kubelet asked for plugin info");
        Ok(Response::new(self.info.clone()))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        let state = if status.plugin_registered {
            tracing::info!(driver = %self.info.name, "kubelet registered the DRA plugin");
            RegistrationState::Registered
        } else {
            tracing::error!(
                driver = %self.info.name,
                error = %status.error,
                "kubelet rejected the DRA plugin registration"
            );
            RegistrationState::Rejected(status.error)
        };
        self.state.send_replace(state);
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    use proto::pluginregistration::registration_client::RegistrationClient;

    use super::*;
    use crate::kubelet::socket::connect_unix;

    /// Starts the server in a temporary kubelet dir; dropping the returned
    /// sender stops it.
    fn start(
        kubelet_dir: &Path,
    ) -> (
        PluginPaths,
        RegistrationHandle,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let paths = PluginPaths::new(kubelet_dir, "sriov.dra.dev");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = serve_registration(&paths, async {
            let _ = stopped.await;
        })
        .expect("serve registration");
        (paths, handle, stop)
    }

    #[test]
    fn paths_follow_the_kubelet_helper_layout() {
        let paths = PluginPaths::new(Path::new("/var/lib/kubelet"), "sriov.dra.dev");
        assert_eq!(
            paths.registration_socket,
            Path::new("/var/lib/kubelet/plugins_registry/sriov.dra.dev-reg.sock")
        );
        assert_eq!(
            paths.dra_socket,
            Path::new("/var/lib/kubelet/plugins/sriov.dra.dev/dra.sock")
        );
    }

    #[tokio::test]
    async fn kubelet_gets_info_and_reports_registration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (paths, mut handle, stop) = start(dir.path());

        let mode = std::fs::metadata(&paths.registration_socket)
            .expect("socket exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let channel = connect_unix(&paths.registration_socket)
            .await
            .expect("dial");
        let mut kubelet = RegistrationClient::new(channel);
        let info = kubelet
            .get_info(InfoRequest {})
            .await
            .expect("GetInfo")
            .into_inner();
        assert_eq!(info.r#type, "DRAPlugin");
        assert_eq!(info.name, "sriov.dra.dev");
        assert_eq!(
            Path::new(&info.endpoint),
            dir.path().join("plugins/sriov.dra.dev/dra.sock")
        );
        assert_eq!(
            info.supported_versions,
            [
                "v1.DRAPlugin",
                "v1beta1.DRAPlugin",
                "v1alpha1.DRAResourceHealth"
            ]
        );
        assert_eq!(*handle.state.borrow(), RegistrationState::Pending);

        kubelet
            .notify_registration_status(RegistrationStatus {
                plugin_registered: true,
                error: String::new(),
            })
            .await
            .expect("Notify(true)");
        handle.state.changed().await.expect("state sender alive");
        assert_eq!(*handle.state.borrow(), RegistrationState::Registered);

        kubelet
            .notify_registration_status(RegistrationStatus {
                plugin_registered: false,
                error: "no handler registered for plugin type".into(),
            })
            .await
            .expect("Notify(false) is acknowledged");
        handle.state.changed().await.expect("state sender alive");
        assert_eq!(
            *handle.state.borrow(),
            RegistrationState::Rejected("no handler registered for plugin type".into())
        );

        drop(stop);
        handle.task.await.expect("join").expect("clean shutdown");
    }

    #[tokio::test]
    async fn a_stale_socket_from_a_previous_run_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = PluginPaths::new(dir.path(), "sriov.dra.dev");
        let registry = paths.registration_socket.parent().expect("parent");
        std::fs::create_dir_all(registry).expect("mkdir");
        drop(std::os::unix::net::UnixListener::bind(&paths.registration_socket).expect("stale"));
        let stale_inode = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(&paths.registration_socket).expect("stat stale"),
        );

        let (paths, handle, stop) = start(dir.path());
        let meta = std::fs::symlink_metadata(&paths.registration_socket).expect("stat new");
        assert!(meta.file_type().is_socket());
        assert_ne!(std::os::unix::fs::MetadataExt::ino(&meta), stale_inode);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);

        let channel = connect_unix(&paths.registration_socket)
            .await
            .expect("dial");
        let info = RegistrationClient::new(channel)
            .get_info(InfoRequest {})
            .await
            .expect("GetInfo over the new socket")
            .into_inner();
        assert_eq!(info.name, "sriov.dra.dev");

        drop(stop);
        handle.task.await.expect("join").expect("clean shutdown");
    }
}
