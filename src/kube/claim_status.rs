//! Reporting attached devices in the claim's `status.devices[]`.
//!
//! Server-side apply under our field manager: the entries are keyed by
//! (driver, pool, device), so other drivers' entries of the same claim are
//! untouched, and applying an empty list takes ours back out.

use k8s_openapi::api::resource::v1::{AllocatedDeviceStatus, NetworkDeviceData, ResourceClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};

use crate::attach::Attachment;
use crate::kube::publish::FIELD_MANAGER;

/// The status entry of one attached device: `networkData` and the `Ready`
/// and `NetworkReady` conditions.
pub fn device_status(
    driver: &str,
    pool: &str,
    attachment: &Attachment,
    now: &Time,
) -> AllocatedDeviceStatus {
    let condition = |kind: &str, reason: &str, message: String| Condition {
        type_: kind.to_string(),
        status: "True".into(),
        reason: reason.into(),
        message,
        last_transition_time: now.clone(),
        observed_generation: None,
    };
    AllocatedDeviceStatus {
        driver: driver.to_string(),
        pool: pool.to_string(),
        device: attachment.device.clone(),
        network_data: Some(NetworkDeviceData {
            interface_name: Some(attachment.if_name.clone()),
            ips: Some(attachment.addresses.iter().map(|a| a.to_string()).collect()),
            hardware_address: Some(attachment.mac.to_string()),
        }),
        conditions: Some(vec![
            condition(
                "Ready",
                "Prepared",
                format!("VF {} prepared", attachment.pci_address),
            ),
            condition(
                "NetworkReady",
                "Attached",
                format!("{} in the pod's network namespace", attachment.if_name),
            ),
        ]),
        ..Default::default()
    }
}

/// The apply patch that sets exactly `devices` as our entries of the claim.
pub fn status_patch(
    namespace: &str,
    name: &str,
    devices: Vec<AllocatedDeviceStatus>,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "status": {"devices": devices},
    })
}

/// Applies our entries of a claim's `status.devices`.
pub async fn apply(
    client: kube::Client,
    namespace: &str,
    name: &str,
    devices: Vec<AllocatedDeviceStatus>,
) -> Result<(), kube::Error> {
    let api: Api<ResourceClaim> = Api::namespaced(client, namespace);
    let patch = status_patch(namespace, name, devices);
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::plan::{HostState, MacAddress};

    fn attachment() -> Attachment {
        Attachment {
            claim: "ran/fronthaul".into(),
            device: "pci-0000-3b-00-2".into(),
            pci_address: "0000:3b:00.2".parse().unwrap(),
            netns: "/var/run/netns/cni-1".into(),
            if_name: "net1".into(),
            pod_index: 3,
            mac: MacAddress([0x02, 0, 0x5e, 0, 0, 1]),
            addresses: vec![
                "10.1.0.5/24".parse().unwrap(),
                "fd00:1::5/64".parse().unwrap(),
            ],
            routes: Vec::new(),
            host: HostState {
                name: "ens1f0v0".into(),
                mtu: 1500,
                mac: MacAddress([0x02, 0, 0x5e, 0, 0, 1]),
                up: false,
            },
            rdma_device: None,
        }
    }

    #[test]
    fn the_patch_carries_network_data_and_both_conditions() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let status = device_status("sriov.dra.dev", "node-a", &attachment(), &now);
        let patch = status_patch("ran", "fronthaul", vec![status]);
        let d = &patch["status"]["devices"][0];
        assert_eq!(patch["kind"], "ResourceClaim");
        assert_eq!(d["driver"], "sriov.dra.dev");
        assert_eq!(d["pool"], "node-a");
        assert_eq!(d["device"], "pci-0000-3b-00-2");
        assert_eq!(d["networkData"]["interfaceName"], "net1");
        assert_eq!(
            d["networkData"]["ips"],
            serde_json::json!(["10.1.0.5/24", "fd00:1::5/64"])
        );
        assert_eq!(d["networkData"]["hardwareAddress"], "02:00:5e:00:00:01");
        let types: Vec<&str> = d["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Ready", "NetworkReady"]);
        assert_eq!(d["conditions"][1]["status"], "True");
        assert_eq!(
            d["conditions"][1]["lastTransitionTime"],
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn clearing_is_an_empty_list_of_ours() {
        let patch = status_patch("ran", "fronthaul", Vec::new());
        assert_eq!(patch["status"]["devices"], serde_json::json!([]));
        assert_eq!(patch["metadata"]["namespace"], "ran");
    }
}
