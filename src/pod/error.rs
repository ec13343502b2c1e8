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

fn join(errors: &[PodError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}
