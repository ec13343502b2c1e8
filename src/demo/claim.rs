//! What the demo asks for: the IPAM pool, the ResourceClaim as the
//! scheduler would have allocated it, and the pod that uses it. Pure data,
//! written once here.

use ipam::{PoolConfig, SubnetConfig};
use proto::nri;

use crate::testing::node::{DRIVER, pool};

/// The demo node's name (and so the pool name of its ResourceSlices).
pub const NODE: &str = "demo-node";
/// The claim's namespace and name.
pub const NAMESPACE: &str = "ran";
/// The claim's name.
pub const CLAIM: &str = "fronthaul-demo";
/// The claim's UID.
pub const CLAIM_UID: &str = "d3m0c1a1-0000-4000-8000-000000000017";
/// The pod's name.
pub const POD: &str = "du-demo";
/// The pod's UID.
pub const POD_UID: &str = "d3m0p0d0-0000-4000-8000-000000000017";
/// The VLAN the claim asks for.
pub const VLAN: u16 = 100;
/// The IPAM pool the claim takes its address from.
pub const POOL: &str = "fronthaul";
/// The interface name the VF gets in the pod.
pub const IF_NAME: &str = "fh0";

/// The node config's IPAM pool: dual-stack, one address of each family.
///
/// The one place the demo's pool is defined (built on the tests' pool
/// helper, so a change to what every pool needs lands here too).
pub fn pools() -> Vec<PoolConfig> {
    let mut fronthaul = pool(POOL, "10.56.0.0/24");
    fronthaul.subnets.push(SubnetConfig {
        subnet: "fd00:56::/64".parse().expect("a valid IPv6 subnet literal"),
        range_start: None,
        range_end: None,
        gateway: None,
    });
    vec![fronthaul]
}

/// The claim as the API server holds it once the scheduler allocated
/// `device` of this node and reserved it for the pod: the class's
/// `VfPolicy` lets tenants use VLAN 100–199 and the pool, the claim's
/// `VfConfig` asks for VLAN 100, an address from the pool and `fh0`.
pub fn resource_claim(device: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": CLAIM, "namespace": NAMESPACE, "uid": CLAIM_UID,
                     "resourceVersion": "1"},
        "spec": {"devices": {"requests": [
            {"name": "fronthaul", "exactly": {"deviceClassName": "sriov-vf.sriov.dra.dev"}}]}},
        "status": {
            "allocation": {"devices": {
                "results": [{"request": "fronthaul", "driver": DRIVER, "pool": NODE,
                             "device": device}],
                "config": [
                    {"source": "FromClass", "requests": ["fronthaul"], "opaque": {
                        "driver": DRIVER, "parameters": {
                            "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfPolicy",
                            "allowedVlans": ["100-199"], "allowedPools": [POOL]}}},
                    {"source": "FromClaim", "requests": ["fronthaul"], "opaque": {
                        "driver": DRIVER, "parameters": {
                            "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfConfig",
                            "vlan": VLAN, "ifName": IF_NAME, "ipam": {"pool": POOL}}}}]
            }},
            "reservedFor": [{"resource": "pods", "name": POD, "uid": POD_UID}]
        }
    })
}

/// The pod sandbox as containerd describes it to NRI plugins.
pub fn pod_sandbox(netns: &std::path::Path) -> nri::PodSandbox {
    let mut pod =
        crate::testing::nri_runtime::pod(NAMESPACE, POD, Some(&netns.display().to_string()));
    pod.uid = POD_UID.into();
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::{RequestConfig, configs_for_request};
    use crate::kube::claims::allocation_for_driver;

    #[test]
    fn the_claim_passes_the_class_policy_with_its_vlan_and_pool() {
        let json = resource_claim("pci-0000-5d-00-2");
        let claim: k8s_openapi::api::resource::v1::ResourceClaim =
            serde_json::from_value(json).unwrap();
        let allocated = allocation_for_driver(claim, CLAIM_UID, DRIVER).unwrap();
        assert_eq!(allocated.reserved_for, [POD_UID]);
        let RequestConfig { config, .. } = configs_for_request(
            "ran/fronthaul-demo",
            DRIVER,
            &allocated.configs,
            "fronthaul",
            allocated.device_class("fronthaul"),
        )
        .unwrap();
        assert_eq!(config.settings.vlan().map(|v| v.id), Some(VLAN));
        assert_eq!(config.if_name.as_deref(), Some(IF_NAME));
    }

    #[test]
    fn the_pool_is_dual_stack_and_valid() {
        let pools = pools();
        assert_eq!(pools[0].subnets.len(), 2);
        let dir = tempfile::tempdir().unwrap();
        ipam::Ipam::open(dir.path(), &pools).unwrap();
    }
}
