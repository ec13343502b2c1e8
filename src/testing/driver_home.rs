//! Where a `sriov-dra run` started by a test keeps everything: one
//! temporary directory with its node config, state, kubelet directory,
//! CDI specs, NRI socket and log, and the test API it talks to over HTTP.
//! Shared by the crash harness (`tests/crash`) and the lab's crash cases
//! (`hw-tests`), which differ only in the VFs and claims they use.

use std::path::{Path, PathBuf};

use super::fake_api::FakeApi;
use super::fake_api_http::FakeApiServer;

/// A driver's temporary home and its test API. Dropping it stops the API
/// and removes every file.
pub struct DriverHome {
    /// The test API, served over HTTP (`KUBECONFIG` points at it).
    pub api: FakeApi,
    _server: FakeApiServer,
    /// State, kubelet, CDI, sockets, config, log.
    pub dir: tempfile::TempDir,
    /// The driver name the node config sets.
    pub driver_name: String,
    /// The node name the node config sets (and so its slices' pool).
    pub node_name: String,
    /// The debug API's port on 127.0.0.1.
    pub debug_port: u16,
}

impl DriverHome {
    /// A fresh directory, the test API with the Node object in it, and a
    /// kubeconfig for it. Must be called inside a tokio runtime.
    pub async fn new(driver_name: &str, node_name: &str) -> std::io::Result<DriverHome> {
        let dir = tempfile::tempdir()?;
        let api = FakeApi::new();
        api.put_node(node_name, &format!("{node_name}-uid"));
        let server = FakeApiServer::start(api.clone()).await?;
        server.write_kubeconfig(&dir.path().join("kubeconfig"))?;
        Ok(DriverHome {
            api,
            _server: server,
            dir,
            driver_name: driver_name.into(),
            node_name: node_name.into(),
            debug_port: free_port()?,
        })
    }

    /// Writes the node config: every path into this directory, sysfs at
    /// `sysfs_root`, and `extra` (YAML at the top level: selectors,
    /// `offerPfs`, `ipam`) appended as given.
    pub fn write_config(&self, sysfs_root: &Path, extra: &str) -> std::io::Result<()> {
        let d = self.dir.path();
        let text = format!(
            "driverName: {driver}
nodeName: {node}
sysfsRoot: {sysfs}
stateDir: {state}
kubeletDir: {kubelet}
nriSocket: {nri}
cdiDir: {cdi}
debugAddress: 127.0.0.1:{port}
{extra}",
            driver = self.driver_name,
            node = self.node_name,
            sysfs = sysfs_root.display(),
            state = d.join("state").display(),
            kubelet = d.join("kubelet").display(),
            nri = self.nri_socket().display(),
            cdi = self.cdi_dir().display(),
            port = self.debug_port,
        );
        std::fs::write(self.config_path(), text)
    }

    /// The node config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("node.yaml")
    }

    /// The kubeconfig for the test API.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The runtime's NRI socket.
    pub fn nri_socket(&self) -> PathBuf {
        self.dir.path().join("nri.sock")
    }

    /// Where the driver writes CDI specs.
    pub fn cdi_dir(&self) -> PathBuf {
        self.dir.path().join("cdi")
    }

    /// The DRA service socket.
    pub fn dra_socket(&self) -> PathBuf {
        self.dir
            .path()
            .join("kubelet/plugins")
            .join(&self.driver_name)
            .join("dra.sock")
    }

    /// The registration socket.
    pub fn registration_socket(&self) -> PathBuf {
        self.dir
            .path()
            .join("kubelet/plugins_registry")
            .join(format!("{}-reg.sock", self.driver_name))
    }

    /// The driver's log (every run appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("driver.log")
    }

    /// The last `lines` lines of the driver's log, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// The node config's `ipam:` section for the crash tests: one node-scoped
/// dual-stack pool `name` over `v4` (gateway: the route's gateway) and
/// `v6`, with the route `(destination, gateway)`. Appended to the
/// `extra` of [`DriverHome::write_config`].
pub fn dual_stack_pool_yaml(name: &str, v4: &str, v6: &str, route: (&str, &str)) -> String {
    let (dst, gw) = route;
    format!(
        "ipam:
  pools:
    - name: {name}
      scope: node
      subnets:
        - subnet: {v4}
          gateway: {gw}
        - subnet: {v6}
      routes:
        - dst: {dst}
          gw: {gw}
"
    )
}

/// A port nobody listens on now (the debug API binds it at each start).
fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_config_points_everything_into_the_home_and_loads() {
        let home = DriverHome::new("sriov.dra.dev", "node-a").await.unwrap();
        home.write_config(Path::new("/sys"), "offerPfs: true\n")
            .unwrap();
        let config = crate::config::NodeConfig::load(&home.config_path()).unwrap();
        assert_eq!(config.node_name.as_deref(), Some("node-a"));
        assert_eq!(config.cdi_dir, home.cdi_dir());
        assert!(config.offer_pfs);
        assert_eq!(
            home.dra_socket(),
            home.dir
                .path()
                .join("kubelet/plugins/sriov.dra.dev/dra.sock")
        );
    }
}
