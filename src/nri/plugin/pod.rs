//! What the plugin tells the driver about a pod sandbox, and the trait the
//! driver implements to act on pod lifecycle events.

use std::future::Future;
use std::path::PathBuf;

use proto::nri;

/// OCI namespace type of the pod's network namespace (nri.md item 27).
const NETWORK_NAMESPACE: &str = "network";

/// The parts of the runtime's `PodSandbox` that attaching devices needs, owned
/// so the handler does not depend on the NRI wire types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSandbox {
    /// Runtime sandbox id (64 hex digits in containerd).
    pub id: String,
    /// Kubernetes pod UID: the key for the pod's reserved claims.
    pub uid: String,
    /// Kubernetes namespace of the pod.
    pub namespace: String,
    /// Kubernetes pod name.
    pub name: String,
    /// Path of the pod's network namespace, e.g. `/var/run/netns/cni-…`;
    /// `None` for a hostNetwork pod, which has no namespace of its own.
    pub netns: Option<PathBuf>,
    /// Pod IPs the runtime's CNI assigned (primary first).
    pub ips: Vec<String>,
}

impl PodSandbox {
    /// `namespace/name (uid)`, the form every log line and error uses so an
    /// operator can find the pod.
    pub fn display_name(&self) -> String {
        format!("{}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

impl From<&nri::PodSandbox> for PodSandbox {
    fn from(pod: &nri::PodSandbox) -> Self {
        let netns = pod
            .linux
            .as_ref()
            .and_then(|linux| {
                linux
                    .namespaces
                    .iter()
                    .find(|ns| ns.r#type == NETWORK_NAMESPACE && !ns.path.is_empty())
            })
            .map(|ns| PathBuf::from(&ns.path));
        Self {
            id: pod.id.clone(),
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            netns,
            ips: pod.ips.clone(),
        }
    }
}

/// What the driver does when the runtime reports pod lifecycle events.
///
/// Calls for different pods may run concurrently. An error from
/// [`PodHandler::run_pod_sandbox`] fails the pod's sandbox in containerd,
/// which is intended: a pod whose devices could not be attached must not
/// start. Errors from stop/remove are only logged by the runtime.
///
/// A call gets three quarters of the runtime's request timeout (2 s by
/// default, so 1.5 s): the runtime drops a plugin that misses its deadline.
/// When that passes, the plugin answers with an error (failing the pod) but
/// lets the call run to its end, so a later stop/remove of the same pod may
/// overlap it: serialize work per pod UID. Calls in flight at shutdown also
/// run to their end.
pub trait PodHandler: Send + Sync + 'static {
    /// Why an event failed; the runtime is sent its text.
    type Error: std::fmt::Display + Send + 'static;

    /// The sandbox exists and its netns is set up (after CNI): attach.
    fn run_pod_sandbox(
        &self,
        pod: &PodSandbox,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The sandbox stopped; its netns still exists (before CNI teardown).
    fn stop_pod_sandbox(
        &self,
        pod: &PodSandbox,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The sandbox is gone; its netns may be gone too.
    fn remove_pod_sandbox(
        &self,
        pod: &PodSandbox,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Every pod the runtime knows at (re)connect, given once per
    /// connection: reconcile attachments made or missed while the plugin
    /// was away. The runtime sends no events until this returns or the
    /// plugin's deadline for it passes.
    fn synchronize(
        &self,
        pods: &[PodSandbox],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(kind: &str, path: &str) -> nri::LinuxNamespace {
        nri::LinuxNamespace {
            r#type: kind.into(),
            path: path.into(),
        }
    }

    #[test]
    fn netns_is_the_path_of_the_network_namespace() {
        let wire = nri::PodSandbox {
            id: "a".repeat(64),
            name: "web-0".into(),
            uid: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
            namespace: "ran".into(),
            linux: Some(nri::LinuxPodSandbox {
                namespaces: vec![
                    namespace("pid", ""),
                    namespace("ipc", "/proc/42/ns/ipc"),
                    namespace("network", "/var/run/netns/cni-1234"),
                ],
                ..Default::default()
            }),
            ips: vec!["10.0.0.5".into(), "fd00::5".into()],
            ..Default::default()
        };
        let pod = PodSandbox::from(&wire);
        assert_eq!(pod.netns, Some(PathBuf::from("/var/run/netns/cni-1234")));
        assert_eq!(pod.ips, ["10.0.0.5", "fd00::5"]);
        assert_eq!(
            pod.display_name(),
            "ran/web-0 (uid 1b4e28ba-2fa1-11d2-883f-0016d3cca427)"
        );
    }

    #[test]
    fn host_network_pod_has_no_netns() {
        let wire = nri::PodSandbox {
            linux: Some(nri::LinuxPodSandbox {
                namespaces: vec![namespace("pid", ""), namespace("ipc", "")],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(PodSandbox::from(&wire).netns, None);
        // No Linux section at all (not a Linux runtime) is the same.
        assert_eq!(PodSandbox::from(&nri::PodSandbox::default()).netns, None);
    }
}
