//! The driver as a process, and the callers that talk to it the way a
//! node's kubelet does: registration, then Prepare / Unprepare over the DRA
//! socket; plus reads of its debug API. The crash harness and the lab's
//! crash cases start the real `sriov-dra run` binary through this, kill it
//! and start it again.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto::dra::v1;
use proto::pluginregistration::registration_client::RegistrationClient;
use proto::pluginregistration::{InfoRequest, RegistrationStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::driver_home::DriverHome;
use crate::kubelet::socket::connect_unix;

/// How long a start may take before it counts as a failure.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// How the driver ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Aborted at a failpoint (SIGABRT, after naming it on stderr).
    Failpoint,
    /// Killed by the test (SIGKILL).
    Killed,
    /// Stopped cleanly on SIGTERM.
    Stopped,
    /// Anything else: a panic that took the process, an error exit.
    Unexpected(String),
}

fn ending(status: std::process::ExitStatus) -> Ending {
    match (status.signal(), status.code()) {
        (Some(libc::SIGABRT), _) => Ending::Failpoint,
        (Some(libc::SIGKILL), _) => Ending::Killed,
        (_, Some(0)) => Ending::Stopped,
        (signal, code) => Ending::Unexpected(format!("signal {signal:?}, exit code {code:?}")),
    }
}

/// A running `sriov-dra run`.
pub struct Driver {
    child: Child,
    pid: i32,
    /// How it ended, once it has (and was reaped).
    ending: Option<Ending>,
    /// The failpoint it was started with.
    pub armed: Option<&'static str>,
}

impl Driver {
    /// Starts `binary run` on `home`'s config, `FAILPOINTS=<armed>=return`
    /// when armed, its stderr appended to the home's log.
    pub fn start(
        binary: &Path,
        home: &DriverHome,
        armed: Option<&'static str>,
    ) -> std::io::Result<Driver> {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.log_path())?;
        writeln!(log, "===== start, failpoint {armed:?}")?;
        let mut command = Command::new(binary);
        command
            .arg("run")
            .arg("--config")
            .arg(home.config_path())
            .env("KUBECONFIG", home.kubeconfig())
            .env("HOME", home.dir.path())
            .env("SRIOV_DRA_LOG", "info")
            // A log file, read by people after a failure: no colour codes.
            .env("NO_COLOR", "1")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env_remove("NODE_NAME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        match armed {
            Some(name) => command.env("FAILPOINTS", format!("{name}=return")),
            None => command.env_remove("FAILPOINTS"),
        };
        let child = command.spawn()?;
        let pid = child.id() as i32;
        Ok(Driver {
            child,
            pid,
            ending: None,
            armed,
        })
    }

    /// Whether it has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        if self.ending.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.ending = Some(ending(status));
        }
        self.ending.is_some()
    }

    /// Waits up to `patience` for it to end; `None` if it still runs.
    pub async fn ended_within(&mut self, patience: Duration) -> Option<Ending> {
        let deadline = Instant::now() + patience;
        while !self.exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.ending.clone()
    }

    /// SIGKILL (unless it ended already), then how it ended: a failpoint
    /// may have beaten the kill.
    pub async fn kill(&mut self) -> Ending {
        if self.ending.is_none() {
            // SAFETY: the child is not reaped yet, so the pid is still ours.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        self.ended_within(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| Ending::Unexpected("still running 30 s after SIGKILL".into()))
    }

    /// SIGTERM, and how it ended within 30 s.
    pub async fn stop(&mut self) -> Ending {
        if self.ending.is_none() {
            // SAFETY: as in `kill`.
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
        }
        self.ended_within(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| Ending::Unexpected("did not stop within 30 s of SIGTERM".into()))
    }
}

impl Drop for Driver {
    /// A driver left running by a failing test is killed and reaped.
    fn drop(&mut self) {
        if !self.exited() {
            // SAFETY: not reaped yet, so the pid is still ours.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// Plays the kubelet's plugin watcher: waits for the registration socket
/// of a new driver, asks `GetInfo` and accepts the plugin. Fails when the
/// driver dies or does not come up.
pub async fn register(home: &DriverHome, driver: &mut Driver) -> Result<(), String> {
    let deadline = Instant::now() + START_PATIENCE;
    loop {
        if driver.exited() {
            return Err("the driver exited before serving its registration socket".into());
        }
        if let Ok(channel) = connect_unix(&home.registration_socket()).await {
            let mut kubelet = RegistrationClient::new(channel);
            if let Ok(info) = kubelet.get_info(InfoRequest {}).await {
                let info = info.into_inner();
                if Path::new(&info.endpoint) != home.dra_socket() {
                    return Err(format!(
                        "GetInfo names {} as the DRA socket, expected {}",
                        info.endpoint,
                        home.dra_socket().display()
                    ));
                }
                kubelet
                    .notify_registration_status(RegistrationStatus {
                        plugin_registered: true,
                        error: String::new(),
                    })
                    .await
                    .map_err(|e| format!("NotifyRegistrationStatus: {e}"))?;
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no registration socket answered within {START_PATIENCE:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A claim as the kubelet names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimId {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
}

fn claim_ref(claim: &ClaimId) -> v1::Claim {
    v1::Claim {
        namespace: claim.namespace.clone(),
        uid: claim.uid.clone(),
        name: claim.name.clone(),
    }
}

/// The claims' errors in one answer, empty when all succeeded.
fn errors(claims: &[ClaimId], mut answers: HashMap<String, String>) -> Result<(), String> {
    let failed: Vec<String> = claims
        .iter()
        .filter_map(|c| match answers.remove(&c.uid) {
            None => Some(format!("claim {}: no entry in the answer", c.uid)),
            Some(e) if !e.is_empty() => Some(format!("claim {}: {e}", c.uid)),
            Some(_) => None,
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// `NodePrepareResources` for a pod's claims, in one call as the kubelet
/// makes it; `Err` names each claim that failed, or the transport's error.
pub async fn prepare(home: &DriverHome, claims: &[ClaimId]) -> Result<(), String> {
    let channel = connect_unix(&home.dra_socket())
        .await
        .map_err(|e| format!("dialing the DRA socket: {e}"))?;
    let resp = v1::dra_plugin_client::DraPluginClient::new(channel)
        .node_prepare_resources(v1::NodePrepareResourcesRequest {
            claims: claims.iter().map(claim_ref).collect(),
        })
        .await
        .map_err(|e| format!("NodePrepareResources: {e}"))?
        .into_inner();
    errors(
        claims,
        resp.claims.into_iter().map(|(k, v)| (k, v.error)).collect(),
    )
}

/// `NodeUnprepareResources` for a pod's claims, in one call.
pub async fn unprepare(home: &DriverHome, claims: &[ClaimId]) -> Result<(), String> {
    let channel = connect_unix(&home.dra_socket())
        .await
        .map_err(|e| format!("dialing the DRA socket: {e}"))?;
    let resp = v1::dra_plugin_client::DraPluginClient::new(channel)
        .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
            claims: claims.iter().map(claim_ref).collect(),
        })
        .await
        .map_err(|e| format!("NodeUnprepareResources: {e}"))?
        .into_inner();
    errors(
        claims,
        resp.claims.into_iter().map(|(k, v)| (k, v.error)).collect(),
    )
}

/// `GET <path>` of the driver's debug API, decoded from JSON.
pub async fn debug_get<T: serde::de::DeserializeOwned>(
    home: &DriverHome,
    path: &str,
) -> Result<T, String> {
    let body = debug_text(home, path).await?;
    serde_json::from_str(&body).map_err(|e| format!("debug API {path}: {e}: {body}"))
}

/// `GET path` on the driver's debug API: the body of a 200 answer as text
/// (`/metrics`), an error naming the path otherwise.
pub async fn debug_text(home: &DriverHome, path: &str) -> Result<String, String> {
    let address = format!("127.0.0.1:{}", home.debug_port);
    let mut s = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| format!("debug API {address}: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("debug API {path}: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .await
        .map_err(|e| format!("debug API {path}: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("debug API {path}: no HTTP answer: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("debug API {path}: {head}: {body}"));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(uid: &str) -> ClaimId {
        ClaimId {
            namespace: "ran".into(),
            name: format!("{uid}-name"),
            uid: uid.into(),
        }
    }

    #[test]
    fn an_answer_is_ok_only_when_every_claim_has_an_empty_error() {
        let claims = [claim("a"), claim("b")];
        let ok = HashMap::from([("a".into(), String::new()), ("b".into(), String::new())]);
        assert_eq!(errors(&claims, ok), Ok(()));
        let one_failed = HashMap::from([("a".into(), "no VF".into())]);
        assert_eq!(
            errors(&claims, one_failed),
            Err("claim a: no VF; claim b: no entry in the answer".into())
        );
    }

    #[test]
    fn exit_statuses_read_as_endings() {
        use std::process::ExitStatus;
        assert_eq!(
            ending(ExitStatus::from_raw(libc::SIGABRT)),
            Ending::Failpoint
        );
        assert_eq!(ending(ExitStatus::from_raw(libc::SIGKILL)), Ending::Killed);
        assert_eq!(ending(ExitStatus::from_raw(0)), Ending::Stopped);
        assert!(matches!(
            ending(ExitStatus::from_raw(1 << 8)),
            Ending::Unexpected(_)
        ));
    }
}
