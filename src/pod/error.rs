//! Why a pod event failed. The runtime gets the text (a failed
//! `RunPodSandbox` fails the pod, so it names the pod's devices and what to
//! do); the variants let callers tell a refusal from a broken store.

use crate::blocking::TaskFailed;
use crate::state::StateError;

/// A failed attach, detach or reconcile.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The state store could not be read or written.
    #[error(transparent)]
    Store(#[from] StateError),
    /// Blocking work panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] TaskFailed),
    /// A hostNetwork pod has no namespace of its own to move VFs into.
    #[error(
        "pod uses the host network, so its netdevice-mode VFs ({}) cannot be moved into it; use mode dpdk or a pod network",
        devices.join(", ")
    )]
    HostNetwork {
        /// The pod's netdevice-mode devices.
        devices: Vec<String>,
    },
    /// The write-ahead plan could not be saved; no VF was moved.
    #[error("recording the attachment plan failed ({0}); nothing was moved")]
    RecordPlan(#[source] StateError),
    /// Planning or moving the VFs failed (the text says whether the VFs
    /// were put back).
    #[error("{message}")]
    Attach {
        /// The attach error, rendered where it happened.
        message: String,
    },
    /// Some VFs could not be moved home; the record is kept for a retry.
    #[error("detaching from pod {pod}: {}", failures.join("; "))]
    Detach {
        /// `namespace/name` of the pod.
        pod: String,
        /// One entry per VF that stayed.
        failures: Vec<String>,
    },
    /// A pod's attach failed during a reconcile.
    #[error("pod {pod}: {source}")]
    InPod {
        /// The pod, as [`crate::nri::plugin::PodSandbox::display_name`].
        pod: String,
        /// What failed.
        #[source]
        source: Box<PodError>,
    },
    /// A reconcile went on past failures; every one is here.
    #[error("{}", join(.0))]
    Several(Vec<PodError>),
}

impl PodError {
    /// What failed, as the `kind` label of `sriov_dra_errors_total` names
    /// it (see [`crate::metrics::Failure`]); for [`PodError::Several`], the
    /// first failure's ([`PodError::kinds`] lists them all).
    pub fn kind(&self) -> &'static str {
        match self {
            PodError::Store(_) | PodError::RecordPlan(_) => "state",
            PodError::Task(_) => "internal",
            PodError::HostNetwork { .. } => "host_network",
            PodError::Attach { .. } => "attach",
            PodError::Detach { .. } => "detach",
            PodError::InPod { source, .. } => source.kind(),
            PodError::Several(errors) => errors.first().map_or("internal", PodError::kind),
        }
    }

    /// The kind of every failure in this error, one per failure: a
    /// reconcile that failed for three pods counts three errors.
    pub fn kinds(&self) -> Vec<&'static str> {
        match self {
            PodError::InPod { source, .. } => source.kinds(),
            PodError::Several(errors) => errors.iter().flat_map(PodError::kinds).collect(),
            other => vec![other.kind()],
        }
    }
}

fn join(errors: &[PodError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attach(message: &str) -> PodError {
        PodError::Attach {
            message: message.into(),
        }
    }

    #[test]
    fn a_reconcile_counts_each_failure_under_its_own_kind() {
        let err = PodError::Several(vec![
            PodError::Detach {
                pod: "ran/du-0".into(),
                failures: vec!["device pci-0000-3b-00-2: busy".into()],
            },
            PodError::InPod {
                pod: "ran/du-1".into(),
                source: Box::new(attach("no such netns")),
            },
            PodError::InPod {
                pod: "ran/du-2".into(),
                source: Box::new(PodError::HostNetwork {
                    devices: vec!["pci-0000-3b-01-2".into()],
                }),
            },
        ]);
        assert_eq!(err.kinds(), ["detach", "attach", "host_network"]);
        assert_eq!(err.kind(), "detach");
    }

    #[test]
    fn a_pod_failure_has_the_kind_of_what_failed_in_it() {
        let err = PodError::InPod {
            pod: "ran/du-1".into(),
            source: Box::new(attach("no such netns")),
        };
        assert_eq!(err.kind(), "attach");
        assert_eq!(err.kinds(), ["attach"]);
    }
}
