//! Reading a ResourceClaim for prepare: the claim the kubelet names must
//! still be the one it means (same UID), be allocated, and we take only the
//! allocation results of our driver, the configs that come with them and
//! the DeviceClass each request names (whose `VfPolicy` bounds the claim).

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{
    DeviceAllocationConfiguration, DeviceRequestAllocationResult, ResourceClaim,
};
use kube::Api;

/// What prepare needs of an allocated claim.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocatedClaim {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, checked against the kubelet's.
    pub uid: String,
    /// Results whose `driver` is ours, in allocation order.
    pub results: Vec<DeviceRequestAllocationResult>,
    /// Every config entry of the allocation (merge filters by driver).
    pub configs: Vec<DeviceAllocationConfiguration>,
    /// UIDs of the pods in `status.reservedFor` (other consumers left out).
    pub reserved_for: Vec<String>,
    /// DeviceClass name by request name, from the claim's spec: a request
    /// `nic` (`exactly.deviceClassName`) and each subrequest `nic/fast`
    /// (`firstAvailable[].deviceClassName`), as allocation results name them.
    pub device_classes: BTreeMap<String, String>,
}

impl AllocatedClaim {
    /// `namespace/name`, as errors print it.
    pub fn label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The DeviceClass a result's `request` (`nic` or `nic/fast`) names.
    pub fn device_class(&self, request: &str) -> Option<&str> {
        self.device_classes.get(request).map(String::as_str)
    }
}

/// DeviceClass by request (and `request/subrequest`) name of a claim.
fn device_classes(claim: &ResourceClaim) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for request in claim
        .spec
        .devices
        .as_ref()
        .and_then(|d| d.requests.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(exactly) = &request.exactly {
            out.insert(request.name.clone(), exactly.device_class_name.clone());
        }
        for sub in request.first_available.iter().flatten() {
            out.insert(
                format!("{}/{}", request.name, sub.name),
                sub.device_class_name.clone(),
            );
        }
    }
    out
}

/// Why the claim could not be used; each names the claim.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// No such claim.
    #[error("ResourceClaim {claim} not found")]
    NotFound {
        /// `namespace/name`.
        claim: String,
    },
    /// A claim of that name exists but is another object.
    #[error(
        "ResourceClaim {claim} has UID {found}, the kubelet asked for {expected}: the claim was deleted and re-created"
    )]
    Replaced {
        /// `namespace/name`.
        claim: String,
        /// UID from the kubelet.
        expected: String,
        /// UID in the API.
        found: String,
    },
    /// The claim has no allocation (yet or any more).
    #[error("ResourceClaim {claim} is not allocated")]
    NotAllocated {
        /// `namespace/name`.
        claim: String,
    },
    /// The API call failed.
    #[error("reading ResourceClaim {claim}: {source}")]
    Api {
        /// `namespace/name`.
        claim: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
}

impl ClaimError {
    /// What failed, as the `kind` label of `sriov_dra_errors_total` names
    /// it: the claim itself (`claim`) or reading it (`api`).
    pub fn kind(&self) -> &'static str {
        match self {
            ClaimError::NotFound { .. }
            | ClaimError::Replaced { .. }
            | ClaimError::NotAllocated { .. } => "claim",
            ClaimError::Api { .. } => "api",
        }
    }
}

/// Takes our driver's part of `claim`, checking its UID.
pub fn allocation_for_driver(
    claim: ResourceClaim,
    uid: &str,
    driver: &str,
) -> Result<AllocatedClaim, ClaimError> {
    let device_classes = device_classes(&claim);
    let namespace = claim.metadata.namespace.unwrap_or_default();
    let name = claim.metadata.name.unwrap_or_default();
    let label = format!("{namespace}/{name}");
    let found = claim.metadata.uid.unwrap_or_default();
    if found != uid {
        return Err(ClaimError::Replaced {
            claim: label,
            expected: uid.to_string(),
            found,
        });
    }
    let status = claim.status;
    let reserved_for = status
        .as_ref()
        .and_then(|s| s.reserved_for.as_ref())
        .map(|consumers| {
            consumers
                .iter()
                .filter(|c| {
                    c.resource == "pods" && c.api_group.as_deref().unwrap_or_default().is_empty()
                })
                .map(|c| c.uid.clone())
                .collect()
        })
        .unwrap_or_default();
    let Some(devices) = status.and_then(|s| s.allocation).and_then(|a| a.devices) else {
        return Err(ClaimError::NotAllocated { claim: label });
    };
    Ok(AllocatedClaim {
        namespace,
        name,
        uid: found,
        results: devices
            .results
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.driver == driver)
            .collect(),
        configs: devices.config.unwrap_or_default(),
        reserved_for,
        device_classes,
    })
}

/// Reads claims through the API.
#[derive(Clone)]
pub struct ClaimReader {
    client: kube::Client,
}

impl ClaimReader {
    /// A reader over `client`.
    pub fn new(client: kube::Client) -> Self {
        ClaimReader { client }
    }

    /// GETs `namespace/name` and takes `driver`'s part, checking `uid`.
    pub async fn read(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        driver: &str,
    ) -> Result<AllocatedClaim, ClaimError> {
        let label = format!("{namespace}/{name}");
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), namespace);
        let claim = match api.get(name).await {
            Ok(c) => c,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(ClaimError::NotFound { claim: label });
            }
            Err(e) => {
                return Err(ClaimError::Api {
                    claim: label,
                    source: Box::new(e),
                });
            }
        };
        allocation_for_driver(claim, uid, driver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fake_api::FakeApi;

    const FRONTHAUL: &str = include_str!("testdata/claim-fronthaul-rdma.json");
    const UID: &str = "5d1c2f0a-8e4b-4f7e-9a61-3c2b7d9e0f11";

    fn api() -> FakeApi {
        let api = FakeApi::new();
        api.put_claim(&serde_json::from_str(FRONTHAUL).unwrap());
        api
    }

    #[tokio::test]
    async fn reads_our_results_and_all_configs() {
        let reader = ClaimReader::new(api().client());
        let claim = reader
            .read("ran", "du-0-fronthaul-x7k2p", UID, "sriov.dra.dev")
            .await
            .unwrap();
        let devices: Vec<&str> = claim.results.iter().map(|r| r.device.as_str()).collect();
        assert_eq!(
            devices,
            ["pci-0000-3b-00-2", "pci-0000-3b-01-2"],
            "the GPU result is not ours"
        );
        assert_eq!(claim.configs.len(), 5);
        assert_eq!(claim.label(), "ran/du-0-fronthaul-x7k2p");
        assert_eq!(
            claim.reserved_for,
            ["0b7e4c1d-22a9-4c3e-8f05-6d1e2a3b4c5d"],
            "the pod it is reserved for"
        );
    }

    #[test]
    fn each_request_and_subrequest_knows_its_device_class() {
        let mut claim: serde_json::Value = serde_json::from_str(FRONTHAUL).unwrap();
        claim["spec"]["devices"]["requests"][2] = serde_json::json!({
            "name": "nic",
            "firstAvailable": [
                {"name": "fast", "deviceClassName": "sriov-100g.sriov.dra.dev"},
                {"name": "slow", "deviceClassName": "sriov-25g.sriov.dra.dev"}
            ]
        });
        let claim: ResourceClaim = serde_json::from_value(claim).unwrap();
        let ours = allocation_for_driver(claim, UID, "sriov.dra.dev").unwrap();
        assert_eq!(
            ours.device_class("fronthaul"),
            Some("sriov-vf.sriov.dra.dev")
        );
        assert_eq!(
            ours.device_class("rdma"),
            Some("sriov-rdma-vf.sriov.dra.dev")
        );
        assert_eq!(
            ours.device_class("nic/fast"),
            Some("sriov-100g.sriov.dra.dev")
        );
        assert_eq!(
            ours.device_class("nic/slow"),
            Some("sriov-25g.sriov.dra.dev")
        );
        assert_eq!(
            ours.device_class("nic"),
            None,
            "a parent names no class itself"
        );
        assert_eq!(ours.device_class("gpu"), None);
    }

    #[tokio::test]
    async fn a_replaced_claim_is_refused_naming_both_uids() {
        let reader = ClaimReader::new(api().client());
        let err = reader
            .read(
                "ran",
                "du-0-fronthaul-x7k2p",
                "another-uid",
                "sriov.dra.dev",
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClaimError::Replaced { found, .. } if found == UID),
            "{err}"
        );
        assert!(err.to_string().contains("another-uid"));
    }

    #[tokio::test]
    async fn a_missing_claim_is_not_found() {
        let reader = ClaimReader::new(api().client());
        let err = reader
            .read("ran", "gone", "u", "sriov.dra.dev")
            .await
            .unwrap_err();
        assert!(matches!(err, ClaimError::NotFound { claim } if claim == "ran/gone"));
    }

    #[tokio::test]
    async fn an_unallocated_claim_is_refused() {
        let api = api();
        let mut claim: serde_json::Value = serde_json::from_str(FRONTHAUL).unwrap();
        claim["status"] = serde_json::json!({});
        api.put_claim(&claim);
        let err = ClaimReader::new(api.client())
            .read("ran", "du-0-fronthaul-x7k2p", UID, "sriov.dra.dev")
            .await
            .unwrap_err();
        assert!(matches!(err, ClaimError::NotAllocated { .. }), "{err}");
    }
}
