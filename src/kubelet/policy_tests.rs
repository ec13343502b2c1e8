//! Tenant policy end to end, as the kubelet sees it: a claim's own
//! `VfConfig` values against its DeviceClass's `VfPolicy`, prepared through
//! the real DRA socket (tonic client over the unix socket), the fake API
//! server holding the ResourceClaim JSON, a ConnectX-6 Dx fixture sysfs and
//! recording PF-side device calls.
//!
//! Every field is tried four ways: the class has no policy, a policy that
//! allows it, a policy that forbids it, and a policy written in the claim
//! itself (refused). A refusal must leave nothing: no device call, no
//! record, no address, no CDI spec.

use std::path::PathBuf;
use std::sync::Arc;

use ipam::Ipam;
use proto::dra::v1;
use serde_json::{Value, json};
use sriov::fixture::Fixture;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::apis::AppliedPolicy;
use crate::claim::prepare::Preparer;
use crate::kube::claims::ClaimReader;
use crate::kubelet::node_service::{NodeService, serve_node_service};
use crate::kubelet::socket::connect_unix;
use crate::testing::device_ops::{DeviceCall, RecordingDeviceOps};
use crate::testing::fake_api::FakeApi;
use crate::testing::node::{DRIVER, NodeParts, pool};

const NODE: &str = "worker-1";
/// VF 0 of ens1f0np0: RDMA-capable, in an IOMMU group, PF MTU 9000.
const DEVICE: &str = "pci-0000-3b-00-2";
const CLASS: &str = "sriov-fronthaul";

/// A node serving the DRA socket, with the preparer shared so that a test
/// can read the claim records while it runs.
struct Node {
    dir: tempfile::TempDir,
    api: FakeApi,
    ops: Arc<RecordingDeviceOps>,
    ipam: Arc<Ipam>,
    preparer: Arc<Preparer>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Node {
    async fn start() -> Node {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).expect("tempdir");
        let sysfs = dir.path().join("sys");
        Fixture::ConnectX6Dx.build(&sysfs).expect("fixture");
        let ops = Arc::new(RecordingDeviceOps::new());
        let (ipam, preparer) = NodeParts {
            sysfs: &sysfs,
            state_dir: &dir.path().join("state"),
            cdi_dir: &dir.path().join("cdi"),
            pools: &[
                pool("fronthaul", "10.1.0.0/24"),
                pool("bulk", "10.2.0.0/23"),
            ],
            pool: NODE,
            boot_id: "boot-1",
        }
        .preparer(ops.clone());
        let preparer = Arc::new(preparer);
        let api = FakeApi::new();
        let service = NodeService::new(preparer.clone(), ClaimReader::new(api.client()));
        let (stop, stopped) = oneshot::channel::<()>();
        let socket = dir
            .path()
            .join("kubelet/plugins")
            .join(DRIVER)
            .join("dra.sock");
        let task = serve_node_service(&socket, service, async {
            let _ = stopped.await;
        })
        .expect("serve");
        Node {
            dir,
            api,
            ops,
            ipam,
            preparer,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir
            .path()
            .join("kubelet/plugins")
            .join(DRIVER)
            .join("dra.sock")
    }

    fn cdi_files(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("cdi")).map_or(0, |d| d.count())
    }

    async fn kubelet(&self) -> v1::dra_plugin_client::DraPluginClient<tonic::transport::Channel> {
        v1::dra_plugin_client::DraPluginClient::new(
            connect_unix(&self.socket()).await.expect("dial"),
        )
    }

    /// Stores `claim` in the API and has the kubelet prepare it: the
    /// devices, or the claim's error.
    async fn prepare(&self, claim: &Value) -> Result<Vec<v1::Device>, String> {
        self.api.put_claim(claim);
        let mut resp = self
            .kubelet()
            .await
            .node_prepare_resources(v1::NodePrepareResourcesRequest {
                claims: vec![kubelet_claim(claim)],
            })
            .await
            .expect("NodePrepareResources")
            .into_inner();
        let one = resp
            .claims
            .remove(uid(claim))
            .expect("an entry for the claim");
        if one.error.is_empty() {
            Ok(one.devices)
        } else {
            Err(one.error)
        }
    }

    async fn unprepare(&self, claim: &Value) {
        let mut resp = self
            .kubelet()
            .await
            .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
                claims: vec![kubelet_claim(claim)],
            })
            .await
            .expect("NodeUnprepareResources")
            .into_inner();
        let one = resp
            .claims
            .remove(uid(claim))
            .expect("an entry for the claim");
        assert_eq!(one.error, "", "unprepare");
    }

    /// Asserts that a refused claim left nothing behind: no device call
    /// since `calls_before`, no record, no address, no CDI spec.
    fn assert_nothing_applied(&self, claim: &Value, calls_before: usize, case: &str) {
        let calls = self.ops.calls();
        assert_eq!(
            calls.len(),
            calls_before,
            "{case}: no device call: {calls:?}"
        );
        assert_eq!(
            self.preparer.record(uid(claim)).expect("read record"),
            None,
            "{case}: no record"
        );
        assert_eq!(
            self.ipam.list().expect("list").len(),
            0,
            "{case}: no address"
        );
        assert_eq!(self.cdi_files(), 0, "{case}: no CDI spec");
    }

    async fn shutdown(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("clean shutdown");
        }
    }
}

fn uid(claim: &Value) -> &str {
    claim["metadata"]["uid"].as_str().unwrap_or_default()
}

/// The claim reference the kubelet sends for a claim object.
fn kubelet_claim(claim: &Value) -> v1::Claim {
    let meta = &claim["metadata"];
    v1::Claim {
        namespace: meta["namespace"].as_str().unwrap_or_default().into(),
        uid: meta["uid"].as_str().unwrap_or_default().into(),
        name: meta["name"].as_str().unwrap_or_default().into(),
    }
}

/// `fields` as a document of `kind`.
fn doc(kind: &str, fields: &Value) -> Value {
    let mut d = json!({"apiVersion": "sriov.dra.dev/v1alpha1", "kind": kind});
    if let (Some(d), Some(f)) = (d.as_object_mut(), fields.as_object()) {
        d.extend(f.clone());
    }
    d
}

/// An allocation config entry for request `fh0`.
fn entry(source: &str, parameters: Value) -> Value {
    json!({"source": source, "requests": ["fh0"],
           "opaque": {"driver": DRIVER, "parameters": parameters}})
}

/// Claim `ran/du-0` (UID ending in `n`) for one VF in request `fh0` of
/// class `sriov-fronthaul`, allocated with `config` (class entries first,
/// as the scheduler copies them).
fn claim(n: usize, config: Vec<Value>) -> Value {
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "du-0", "namespace": "ran",
                     "uid": format!("7e1d0c55-0000-4000-8000-{n:012}"), "resourceVersion": "1"},
        "spec": {"devices": {"requests": [
            {"name": "fh0", "exactly": {"deviceClassName": CLASS, "allocationMode": "ExactCount", "count": 1}}
        ]}},
        "status": {
            "allocation": {"devices": {
                "results": [{"request": "fh0", "driver": DRIVER, "pool": NODE, "device": DEVICE}],
                "config": config
            }},
            "reservedFor": [{"resource": "pods", "name": "du-0", "uid": "0b7e4c1d-22a9-4c3e-8f05-6d1e2a3b4c5d"}]
        }
    })
}

/// Who states a policy for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// The class has no `VfPolicy`.
    NoPolicy,
    /// The class's `VfPolicy` allows the value.
    PolicyAllows,
    /// The class's `VfPolicy` does not.
    PolicyForbids,
    /// The claim brings the allowing `VfPolicy` itself.
    PolicyFromClaim,
}

/// One claim field: the claim's value, what the class sets itself (the
/// admin's, never checked), a policy allowing the value and one forbidding
/// it, and whether a class without a policy lets it through.
struct FieldCase {
    field: &'static str,
    claim: Value,
    class: Value,
    allows: Value,
    forbids: Value,
    without_policy: bool,
    /// Whether the value is a PF-side setting (a VF configuration call).
    pf_side: bool,
}

fn field_cases() -> Vec<FieldCase> {
    let case = |field, claim, class, allows, forbids, without_policy, pf_side| FieldCase {
        field,
        claim,
        class,
        allows,
        forbids,
        without_policy,
        pf_side,
    };
    let none = json!({});
    vec![
        case(
            "vlan",
            json!({"vlan": 150}),
            none.clone(),
            json!({"allowedVlans": ["100-199"]}),
            json!({"allowedVlans": ["200-299"]}),
            false,
            true,
        ),
        // Untagging a VLAN the class sets: the PF's untagged network is no
        // tenant's, so 0 must be listed.
        case(
            "vlan",
            json!({"vlan": 0}),
            json!({"vlan": 100}),
            json!({"allowedVlans": ["0", "100-199"]}),
            json!({"allowedVlans": ["100-199"]}),
            false,
            false,
        ),
        case(
            "vlanQoS",
            json!({"vlanQoS": 5}),
            json!({"vlan": 100}),
            json!({"allowedVlanQoS": ["4-5"]}),
            json!({"allowedVlanQoS": ["0-3"]}),
            false,
            true,
        ),
        case(
            "vlanProto",
            json!({"vlanProto": "802.1ad"}),
            json!({"vlan": 100}),
            json!({"allowedVlanProtos": ["802.1ad"]}),
            json!({"allowedVlanProtos": ["802.1Q"]}),
            false,
            true,
        ),
        case(
            "trust",
            json!({"trust": true}),
            none.clone(),
            json!({"claimMaySet": ["trust"]}),
            json!({"claimMaySet": ["spoofChk"]}),
            false,
            true,
        ),
        case(
            "spoofChk",
            json!({"spoofChk": false}),
            none.clone(),
            json!({"claimMaySet": ["spoofChk"]}),
            json!({"claimMaySet": ["trust"]}),
            false,
            true,
        ),
        case(
            "mac",
            json!({"mac": "02:00:00:00:01:00"}),
            none.clone(),
            json!({"claimMaySet": ["mac"]}),
            json!({"claimMaySet": ["trust"]}),
            false,
            true,
        ),
        case(
            "linkState",
            json!({"linkState": "enable"}),
            none.clone(),
            json!({"claimMaySet": ["linkState"]}),
            json!({"claimMaySet": []}),
            false,
            true,
        ),
        case(
            "minTxRateMbps",
            json!({"minTxRateMbps": 1000}),
            none.clone(),
            json!({"claimMaySet": ["minTxRateMbps"]}),
            json!({"claimMaySet": ["maxTxRateMbps"]}),
            false,
            true,
        ),
        case(
            "maxTxRateMbps",
            json!({"maxTxRateMbps": 5000}),
            none.clone(),
            json!({"claimMaySet": ["maxTxRateMbps"]}),
            json!({"claimMaySet": ["minTxRateMbps"]}),
            false,
            true,
        ),
        case(
            "mtu",
            json!({"mtu": 1500}),
            none.clone(),
            json!({"claimMaySet": ["mtu"]}),
            json!({"claimMaySet": ["trust"]}),
            true,
            false,
        ),
        case(
            "routes",
            json!({"routes": [{"dst": "10.9.0.0/16", "gw": "10.1.0.1"}]}),
            none.clone(),
            json!({"allowedVlans": ["100"]}),
            json!({"claimMaySet": ["mtu"]}),
            true,
            false,
        ),
        case(
            "rdma.exclusive",
            json!({"rdma": {"exclusive": true}}),
            none.clone(),
            json!({"claimMaySet": ["rdma"]}),
            json!({"claimMaySet": ["mtu"]}),
            true,
            false,
        ),
        case(
            "ipam.pool",
            json!({"ipam": {"pool": "fronthaul"}}),
            none.clone(),
            json!({"allowedPools": ["fronthaul"]}),
            json!({"allowedPools": ["bulk"]}),
            true,
            false,
        ),
        case(
            "ipam.static",
            json!({"ipam": {"static": ["10.1.0.50/24"]}}),
            none.clone(),
            json!({"allowStaticAddresses": ["10.1.0.0/24"]}),
            json!({"allowStaticAddresses": ["10.2.0.0/23"]}),
            false,
            false,
        ),
        case(
            "mode",
            json!({"mode": "dpdk"}),
            none.clone(),
            json!({"claimMaySet": ["mode"]}),
            json!({"claimMaySet": ["mtu"]}),
            false,
            false,
        ),
    ]
}

#[tokio::test]
async fn every_field_under_every_kind_of_policy_through_the_kubelet_socket() {
    let node = Node::start().await;
    let mut n = 0;
    for fc in field_cases() {
        for scenario in [
            Scenario::NoPolicy,
            Scenario::PolicyAllows,
            Scenario::PolicyForbids,
            Scenario::PolicyFromClaim,
        ] {
            n += 1;
            let case = format!("{} / {scenario:?}", fc.field);
            let mut config = Vec::new();
            if fc.class.as_object().is_some_and(|o| !o.is_empty()) {
                config.push(entry("FromClass", doc("VfConfig", &fc.class)));
            }
            match scenario {
                Scenario::NoPolicy | Scenario::PolicyFromClaim => {}
                Scenario::PolicyAllows => {
                    config.push(entry("FromClass", doc("VfPolicy", &fc.allows)))
                }
                Scenario::PolicyForbids => {
                    config.push(entry("FromClass", doc("VfPolicy", &fc.forbids)))
                }
            }
            config.push(entry("FromClaim", doc("VfConfig", &fc.claim)));
            if scenario == Scenario::PolicyFromClaim {
                config.push(entry("FromClaim", doc("VfPolicy", &fc.allows)));
            }
            let claim = claim(n, config);
            let calls_before = node.ops.calls().len();

            let allowed = match scenario {
                Scenario::NoPolicy => fc.without_policy,
                Scenario::PolicyAllows => true,
                Scenario::PolicyForbids | Scenario::PolicyFromClaim => false,
            };
            match node.prepare(&claim).await {
                Ok(devices) => {
                    assert!(allowed, "{case}: prepared but must be refused");
                    assert_eq!(devices.len(), 1, "{case}");
                    let record = node
                        .preparer
                        .record(uid(&claim))
                        .expect("read record")
                        .expect("{case}: recorded");
                    let policy = record.devices[0].policy.clone().expect("policy recorded");
                    assert_eq!(policy.device_class.as_deref(), Some(CLASS), "{case}");
                    assert_eq!(
                        policy.vf_policies.len(),
                        usize::from(scenario == Scenario::PolicyAllows),
                        "{case}"
                    );
                    if fc.pf_side {
                        let calls = node.ops.calls();
                        assert!(
                            matches!(calls.get(calls_before), Some(DeviceCall::ConfigureVf(_, changes)) if !changes.is_empty()),
                            "{case}: the value is applied: {calls:?}"
                        );
                    }
                    node.unprepare(&claim).await;
                    assert_eq!(node.ipam.list().expect("list").len(), 0, "{case}: released");
                }
                Err(error) => {
                    assert!(!allowed, "{case}: refused but must be prepared: {error}");
                    assert!(
                        error.starts_with("claim ran/du-0, request \"fh0\": "),
                        "{case}: names claim and request: {error}"
                    );
                    let names = match scenario {
                        Scenario::PolicyFromClaim => format!(
                            "config[{}] (FromClaim): field kind: VfPolicy is honoured only from a DeviceClass config",
                            claim["status"]["allocation"]["devices"]["config"]
                                .as_array()
                                .map_or(0, |c| c.len() - 1)
                        ),
                        _ => format!("field {}: ", fc.field),
                    };
                    assert!(error.contains(&names), "{case}: {error}");
                    if scenario != Scenario::PolicyFromClaim {
                        assert!(
                            error.contains(" is not allowed by DeviceClass sriov-fronthaul ("),
                            "{case}: names the class: {error}"
                        );
                    }
                    node.assert_nothing_applied(&claim, calls_before, &case);
                }
            }
        }
    }
    node.shutdown().await;
}

#[tokio::test]
async fn if_name_is_always_the_claims_to_choose() {
    let node = Node::start().await;
    for (n, class) in [
        vec![],
        vec![entry(
            "FromClass",
            doc("VfPolicy", &json!({"claimMaySet": []})),
        )],
    ]
    .into_iter()
    .enumerate()
    {
        let mut config = class;
        config.push(entry(
            "FromClaim",
            doc("VfConfig", &json!({"ifName": "fh0"})),
        ));
        let claim = claim(n, config);
        node.prepare(&claim)
            .await
            .expect("ifName names the pod's own interface");
        node.unprepare(&claim).await;
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_vlan_outside_the_class_range_fails_with_the_exact_error_and_applies_nothing() {
    let node = Node::start().await;
    let claim = claim(
        1,
        vec![
            entry(
                "FromClass",
                doc(
                    "VfPolicy",
                    &json!({"allowedVlans": ["100-199"], "allowedPools": ["fronthaul"]}),
                ),
            ),
            entry(
                "FromClaim",
                doc(
                    "VfConfig",
                    &json!({"vlan": 200, "ipam": {"pool": "fronthaul"}}),
                ),
            ),
        ],
    );
    let err = node
        .prepare(&claim)
        .await
        .expect_err("vlan 200 is not the tenant's");
    assert_eq!(
        err,
        "claim ran/du-0, request \"fh0\": field vlan: 200 is not allowed by DeviceClass sriov-fronthaul (allowed: 100-199)"
    );
    node.assert_nothing_applied(&claim, 0, "vlan 200");
    node.shutdown().await;
}

#[tokio::test]
async fn without_a_class_policy_trust_and_a_vlan_are_refused_with_the_exact_error() {
    let node = Node::start().await;
    for (n, (asked, want)) in [
        (
            json!({"trust": true}),
            "claim ran/du-0, request \"fh0\": field trust: true is not allowed by DeviceClass sriov-fronthaul (the class has no VfPolicy; a claim may set only ifName, mtu, routes, rdma.exclusive and ipam.pool)",
        ),
        (
            json!({"vlan": 200}),
            "claim ran/du-0, request \"fh0\": field vlan: 200 is not allowed by DeviceClass sriov-fronthaul (the class has no VfPolicy; a claim may set only ifName, mtu, routes, rdma.exclusive and ipam.pool)",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        // The class's own settings are the admin's and need no policy.
        let claim = claim(
            n,
            vec![
                entry("FromClass", doc("VfConfig", &json!({"spoofChk": true, "trust": false}))),
                entry("FromClaim", doc("VfConfig", &asked)),
            ],
        );
        assert_eq!(node.prepare(&claim).await.expect_err("refused"), want);
        node.assert_nothing_applied(&claim, 0, want);
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_policy_in_the_claim_is_refused_with_the_exact_error() {
    let node = Node::start().await;
    let claim = claim(
        1,
        vec![
            entry(
                "FromClaim",
                doc(
                    "VfPolicy",
                    &json!({"allowedVlans": ["1-4094"], "claimMaySet": ["trust"]}),
                ),
            ),
            entry(
                "FromClaim",
                doc("VfConfig", &json!({"vlan": 200, "trust": true})),
            ),
        ],
    );
    assert_eq!(
        node.prepare(&claim)
            .await
            .expect_err("a tenant does not bound itself"),
        "claim ran/du-0, request \"fh0\": config[0] (FromClaim): field kind: VfPolicy is honoured only from a DeviceClass config (source FromClass), not from a claim; ask the cluster admin to allow the value in the class's VfPolicy"
    );
    node.assert_nothing_applied(&claim, 0, "policy from the claim");
    node.shutdown().await;
}

#[tokio::test]
async fn a_refusal_on_the_second_request_leaves_the_first_untouched() {
    let node = Node::start().await;
    let mut claim = claim(
        1,
        vec![
            entry(
                "FromClass",
                doc("VfPolicy", &json!({"allowedVlans": ["100-199"]})),
            ),
            entry(
                "FromClaim",
                doc(
                    "VfConfig",
                    &json!({"vlan": 100, "ipam": {"pool": "fronthaul"}}),
                ),
            ),
            json!({"source": "FromClaim", "requests": ["mgmt"], "opaque": {"driver": DRIVER,
                   "parameters": doc("VfConfig", &json!({"mac": "02:00:00:00:0a:0b"}))}}),
        ],
    );
    claim["spec"]["devices"]["requests"]
        .as_array_mut()
        .expect("requests")
        .push(json!({"name": "mgmt", "exactly": {"deviceClassName": "sriov-mgmt"}}));
    claim["status"]["allocation"]["devices"]["results"]
        .as_array_mut()
        .expect("results")
        .push(json!({"request": "mgmt", "driver": DRIVER, "pool": NODE, "device": "pci-0000-3b-00-3"}));
    let err = node
        .prepare(&claim)
        .await
        .expect_err("mgmt's class has no policy");
    assert_eq!(
        err,
        "claim ran/du-0, request \"mgmt\": field mac: 02:00:00:00:0a:0b is not allowed by DeviceClass sriov-mgmt (the class has no VfPolicy; a claim may set only ifName, mtu, routes, rdma.exclusive and ipam.pool)"
    );
    node.assert_nothing_applied(&claim, 0, "fh0 was allowed, mgmt not");
    node.shutdown().await;
}

#[tokio::test]
async fn a_subrequest_is_bounded_by_the_class_of_the_alternative_picked() {
    let node = Node::start().await;
    let mut claim = claim(
        1,
        vec![
            // As the scheduler copies it: for the subrequest it picked.
            json!({"source": "FromClass", "requests": ["nic/fast"], "opaque": {"driver": DRIVER,
                   "parameters": doc("VfPolicy", &json!({"allowedVlans": ["300-399"]}))}}),
            json!({"source": "FromClaim", "requests": ["nic"], "opaque": {"driver": DRIVER,
                   "parameters": doc("VfConfig", &json!({"vlan": 400}))}}),
        ],
    );
    claim["spec"]["devices"]["requests"] = json!([{"name": "nic", "firstAvailable": [
        {"name": "fast", "deviceClassName": "sriov-100g"},
        {"name": "slow", "deviceClassName": "sriov-25g"}
    ]}]);
    claim["status"]["allocation"]["devices"]["results"][0]["request"] = json!("nic/fast");
    assert_eq!(
        node.prepare(&claim)
            .await
            .expect_err("400 is outside 300-399"),
        "claim ran/du-0, request \"nic/fast\": field vlan: 400 is not allowed by DeviceClass sriov-100g (allowed: 300-399)"
    );

    claim["status"]["allocation"]["devices"]["config"][1]["opaque"]["parameters"]["vlan"] =
        json!(300);
    node.prepare(&claim).await.expect("300 is the tenant's");
    let record = node
        .preparer
        .record(uid(&claim))
        .expect("read")
        .expect("record");
    let policy: Option<AppliedPolicy> = record.devices[0].policy.clone();
    let policy = policy.expect("policy");
    assert_eq!(policy.device_class.as_deref(), Some("sriov-100g"));
    assert_eq!(
        serde_json::to_value(&policy.vf_policies).expect("json"),
        json!([{"apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfPolicy", "allowedVlans": ["300-399"]}]),
        "what the debug API shows under /claims"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn the_readme_worked_example_prepares_and_another_tenants_vlan_is_refused() {
    let node = Node::start().await;
    let mut claim: Value =
        serde_json::from_str(include_str!("../kube/testdata/claim-fronthaul-rdma.json"))
            .expect("testdata");
    // The README's class policy for sriov-vf.sriov.dra.dev.
    claim["status"]["allocation"]["devices"]["config"][4]["opaque"]["parameters"] = doc(
        "VfPolicy",
        &json!({"allowedVlans": ["100-199"], "allowedVlanQoS": ["0-5"],
                "allowedPools": ["fronthaul"], "claimMaySet": ["mac", "mtu", "routes", "rdma"]}),
    );
    let devices = node.prepare(&claim).await.expect("the example prepares");
    assert_eq!(devices.len(), 2);
    node.unprepare(&claim).await;

    claim["status"]["allocation"]["devices"]["config"][2]["opaque"]["parameters"]["vlan"] =
        json!(200);
    let calls_before = node.ops.calls().len();
    assert_eq!(
        node.prepare(&claim)
            .await
            .expect_err("another tenant's VLAN"),
        "claim ran/du-0-fronthaul-x7k2p, request \"fronthaul\": field vlan: 200 is not allowed by DeviceClass sriov-vf.sriov.dra.dev (allowed: 100-199)"
    );
    node.assert_nothing_applied(&claim, calls_before, "README vlan 200");
    node.shutdown().await;
}
