//! ResourceClaim objects as the scheduler leaves them for this driver,
//! for the tests that put claims in the test API before a real
//! `sriov-dra run` prepares them (the crash harness, the lab's crash
//! cases): the envelope is the same, only the requests and configs differ.

use serde_json::{Value, json};

use super::driver_process::ClaimId;

/// The device class every request of these claims names.
pub const DEVICE_CLASS: &str = "sriov-vf.sriov.dra.dev";

/// Where a claim is allocated and for whom.
#[derive(Debug, Clone, Copy)]
pub struct Allocation<'a> {
    /// The driver the results name.
    pub driver: &'a str,
    /// The pool (node) the devices come from.
    pub pool: &'a str,
    /// The name of the pod the claim is reserved for.
    pub pod_name: &'a str,
    /// Its UID.
    pub pod_uid: &'a str,
}

/// The claim `claim`, one request per `(request, device)` pair (each
/// exactly one device of [`DEVICE_CLASS`]), allocated as `at` says with
/// `configs` (already whole `DeviceAllocationConfiguration` objects) and
/// reserved for the pod.
pub fn allocated_claim(
    claim: &ClaimId,
    at: Allocation<'_>,
    devices: &[(&str, &str)],
    configs: Vec<Value>,
) -> Value {
    let requests: Vec<Value> = devices
        .iter()
        .map(|(request, _)| {
            json!({"name": request, "exactly": {
                "deviceClassName": DEVICE_CLASS,
                "allocationMode": "ExactCount", "count": 1}})
        })
        .collect();
    let results: Vec<Value> = devices
        .iter()
        .map(|(request, device)| {
            json!({"request": request, "driver": at.driver, "pool": at.pool,
                   "device": device})
        })
        .collect();
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": claim.name, "namespace": claim.namespace, "uid": claim.uid},
        "spec": {"devices": {"requests": requests}},
        "status": {
            "allocation": {"devices": {"results": results, "config": configs}},
            "reservedFor": [{"resource": "pods", "name": at.pod_name, "uid": at.pod_uid}],
        },
    })
}

/// The claim's own opaque `VfConfig` for `request`: `parameters` with the
/// API version and kind set.
pub fn vf_config(driver: &str, request: &str, mut parameters: Value) -> Value {
    parameters["apiVersion"] = json!("sriov.dra.dev/v1alpha1");
    parameters["kind"] = json!("VfConfig");
    json!({"source": "FromClaim", "requests": [request],
           "opaque": {"driver": driver, "parameters": parameters}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::claims::allocation_for_driver;
    use k8s_openapi::api::resource::v1::ResourceClaim;

    #[test]
    fn the_driver_reads_the_claim_as_allocated_and_reserved() {
        let claim = ClaimId {
            namespace: "ran".into(),
            name: "du-0-net".into(),
            uid: "uid-1".into(),
        };
        let at = Allocation {
            driver: "sriov.dra.dev",
            pool: "node-a",
            pod_name: "du-0",
            pod_uid: "pod-uid-1",
        };
        let config = vf_config("sriov.dra.dev", "net", json!({"mtu": 9000}));
        let json = allocated_claim(&claim, at, &[("net", "vf-0000-3b-02-1")], vec![config]);
        let parsed: ResourceClaim = serde_json::from_value(json).unwrap();
        let allocated = allocation_for_driver(parsed, "uid-1", "sriov.dra.dev").unwrap();
        assert_eq!(allocated.reserved_for, ["pod-uid-1"]);
        assert_eq!(allocated.device_class("net"), Some(DEVICE_CLASS));
        assert_eq!(allocated.configs.len(), 1);
    }
}
