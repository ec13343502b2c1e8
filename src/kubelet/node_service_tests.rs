//! The node service as the kubelet sees it: a tonic client over the real
//! unix socket, the fake API server holding real v1 ResourceClaim JSON, a
//! fixture sysfs, and a recording stand-in for the PF-side calls.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipam::{Ipam, PoolConfig};
use proto::dra::{v1, v1beta1};
use serde_json::{Value, json};
use sriov::fixture::Fixture;
use sriov::vf_config::VfTarget;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::claim::prepare::Preparer;
use crate::inventory::NodeInventory;
use crate::kube::claims::ClaimReader;
use crate::kubelet::socket::connect_unix;
use crate::testing::device_ops::{DeviceCall, RecordingDeviceOps};
use crate::testing::fake_api::FakeApi;
use crate::testing::node::{DRIVER, NodeParts, offered_vfs, pool};

const FRONTHAUL: &str = include_str!("../kube/testdata/claim-fronthaul-rdma.json");
const FRONTHAUL_UID: &str = "5d1c2f0a-8e4b-4f7e-9a61-3c2b7d9e0f11";
const DPDK: &str = include_str!("../kube/testdata/claim-dpdk.json");
const DPDK_UID: &str = "a3f9e2b1-7c64-4d1a-b8e0-91c2d3e4f5a6";

fn pools() -> Vec<PoolConfig> {
    vec![
        pool("fronthaul", "10.1.0.0/24"),
        pool("bulk", "10.2.0.0/23"),
    ]
}

/// A node: its directories survive [`Node::restart`].
struct Node {
    dir: tempfile::TempDir,
    pool: String,
    api: FakeApi,
    ops: Arc<RecordingDeviceOps>,
    boot_id: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Node {
    fn sysfs(&self) -> PathBuf {
        self.dir.path().join("sys")
    }
    fn cdi_dir(&self) -> PathBuf {
        self.dir.path().join("cdi")
    }
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn socket(&self) -> PathBuf {
        self.dir
            .path()
            .join("kubelet/plugins")
            .join(DRIVER)
            .join("dra.sock")
    }

    /// Builds `fixture` (after `tweak` may change the tree) and starts.
    async fn start_with(fixture: Fixture, pool: &str, tweak: impl FnOnce(&Path)) -> Node {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).expect("tempdir");
        fixture.build(&dir.path().join("sys")).expect("fixture");
        tweak(&dir.path().join("sys"));
        let mut node = Node {
            dir,
            pool: pool.into(),
            api: FakeApi::new(),
            ops: Arc::new(RecordingDeviceOps::new()),
            boot_id: "boot-1".into(),
            stop: None,
            task: None,
        };
        node.serve();
        node
    }

    async fn start(fixture: Fixture, pool: &str) -> Node {
        Self::start_with(fixture, pool, |_| {}).await
    }

    /// The store and a preparer over this node's tree, as the driver builds
    /// them at start.
    fn preparer(&self) -> (Arc<Ipam>, Preparer) {
        NodeParts {
            sysfs: &self.sysfs(),
            state_dir: &self.state_dir(),
            cdi_dir: &self.cdi_dir(),
            pools: &pools(),
            pool: &self.pool,
            boot_id: &self.boot_id,
        }
        .preparer(self.ops.clone())
    }

    fn serve(&mut self) {
        let (_, preparer) = self.preparer();
        let service = NodeService::new(preparer, ClaimReader::new(self.api.client()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = serve_node_service(&self.socket(), service, async {
            let _ = stopped.await;
        })
        .expect("serve");
        self.stop = Some(stop);
        self.task = Some(task);
    }

    async fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("clean shutdown");
        }
    }

    /// Stops the server, drops every handle on the state file, starts again
    /// with fresh memory (and fresh recorded device calls).
    async fn restart(&mut self) {
        self.shutdown().await;
        self.ops = Arc::new(RecordingDeviceOps::new());
        self.serve();
    }

    async fn v1(&self) -> v1::dra_plugin_client::DraPluginClient<tonic::transport::Channel> {
        v1::dra_plugin_client::DraPluginClient::new(
            connect_unix(&self.socket()).await.expect("dial"),
        )
    }

    async fn prepare(&self, claims: &[&Value]) -> v1::NodePrepareResourcesResponse {
        self.v1()
            .await
            .node_prepare_resources(v1::NodePrepareResourcesRequest {
                claims: claims.iter().map(|c| kubelet_claim(c)).collect(),
            })
            .await
            .expect("NodePrepareResources")
            .into_inner()
    }

    async fn prepare_one(&self, claim: &Value) -> Result<Vec<v1::Device>, String> {
        let uid = claim["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut resp = self.prepare(&[claim]).await;
        let one = resp.claims.remove(&uid).expect("an entry for the claim");
        if one.error.is_empty() {
            Ok(one.devices)
        } else {
            Err(one.error)
        }
    }

    async fn unprepare_one(&self, claim: &Value) -> String {
        let uid = claim["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut resp = self
            .v1()
            .await
            .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
                claims: vec![kubelet_claim(claim)],
            })
            .await
            .expect("NodeUnprepareResources")
            .into_inner();
        resp.claims
            .remove(&uid)
            .expect("an entry for the claim")
            .error
    }

    fn cdi_files(&self) -> Vec<String> {
        std::fs::read_dir(self.cdi_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn cdi_spec(&self, uid: &str) -> Value {
        let path = self.cdi_dir().join(format!("{DRIVER}-{uid}.json"));
        serde_json::from_slice(&std::fs::read(path).expect("spec exists")).expect("spec is JSON")
    }

    /// Addresses held, read from the state file after shutdown.
    async fn addresses_after_shutdown(&mut self) -> Vec<ipam::Allocation> {
        self.shutdown().await;
        Ipam::open(&self.state_dir(), &pools())
            .expect("reopen")
            .list()
            .expect("list")
    }
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

fn fronthaul() -> Value {
    serde_json::from_str(FRONTHAUL).expect("testdata")
}

fn env_of(spec: &Value, device: usize) -> Vec<String> {
    spec["devices"][device]["containerEdits"]["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn v1_prepares_two_requests_and_unprepares_them() {
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let claim = fronthaul();
    node.api.put_claim(&claim);

    let devices = node.prepare_one(&claim).await.expect("prepared");
    let summary: Vec<(Vec<String>, String, Vec<String>)> = devices
        .iter()
        .map(|d| {
            (
                d.request_names.clone(),
                d.device_name.clone(),
                d.cdi_device_ids.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                vec!["fronthaul".into()],
                "pci-0000-3b-00-2".into(),
                vec![format!("sriov.dra.dev/vf={FRONTHAUL_UID}-pci-0000-3b-00-2")]
            ),
            (
                vec!["rdma".into()],
                "pci-0000-3b-01-2".into(),
                vec![format!("sriov.dra.dev/vf={FRONTHAUL_UID}-pci-0000-3b-01-2")]
            ),
        ],
        "the gpu.example.com result is not ours"
    );
    assert!(devices.iter().all(|d| d.pool_name == "worker-1"));

    // PF-side: MAC and VLAN on VF 0 of ens1f0np0; the class's spoofChk/trust
    // match an unconfigured VF, so the rdma VF needs no change.
    let calls = node.ops.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let DeviceCall::ConfigureVf(target, changes) = &calls[0] else {
        panic!("{calls:?}")
    };
    assert_eq!(
        target,
        &VfTarget {
            pf: "ens1f0np0".into(),
            vf: 0
        }
    );
    assert_eq!(changes.len(), 2, "mac + vlan: {changes:?}");
    assert!(
        matches!(&calls[1], DeviceCall::ConfigureVf(t, c) if t.pf == "ens1f1np1" && c.is_empty())
    );

    let spec = node.cdi_spec(FRONTHAUL_UID);
    assert_eq!(spec["kind"], "sriov.dra.dev/vf");
    let fh = env_of(&spec, 0);
    assert!(
        fh.contains(&"SRIOV_DRA_FRONTHAUL_IFNAME=fh0".to_string()),
        "{fh:?}"
    );
    assert!(fh.contains(&"SRIOV_DRA_FRONTHAUL_PCI_ADDRESS=0000:3b:00.2".to_string()));
    assert!(fh.contains(&"SRIOV_DRA_FRONTHAUL_MAC=02:00:00:00:01:00".to_string()));
    assert!(
        fh.iter()
            .any(|e| e.starts_with("SRIOV_DRA_FRONTHAUL_IPS=10.1.0.")),
        "{fh:?}"
    );
    let rdma = env_of(&spec, 1);
    assert!(
        !rdma.iter().any(|e| e.starts_with("SRIOV_DRA_RDMA_IFNAME=")),
        "a default name is given per pod at attach, so it is not in the spec: {rdma:?}"
    );
    let nodes: Vec<&str> = spec["devices"][1]["containerEdits"]["deviceNodes"]
        .as_array()
        .expect("rdma char devices")
        .iter()
        .filter_map(|n| n["path"].as_str())
        .collect();
    assert!(nodes.contains(&"/dev/infiniband/rdma_cm"), "{nodes:?}");
    assert!(
        nodes
            .iter()
            .any(|n| n.starts_with("/dev/infiniband/uverbs")),
        "{nodes:?}"
    );

    assert_eq!(node.unprepare_one(&claim).await, "");
    assert_eq!(node.cdi_files(), Vec::<String>::new(), "spec deleted");
    let restored: Vec<DeviceCall> = node.ops.calls().split_off(2);
    assert_eq!(restored.len(), 2, "both VFs restored: {restored:?}");
    assert!(
        restored
            .iter()
            .all(|c| matches!(c, DeviceCall::RestoreVf(_)))
    );
    assert_eq!(
        node.unprepare_one(&claim).await,
        "",
        "unprepare is idempotent"
    );
    assert!(
        node.addresses_after_shutdown().await.is_empty(),
        "address released"
    );
}

#[tokio::test]
async fn v1beta1_prepares_a_dpdk_claim_with_vfio_device_nodes() {
    let mut node = Node::start(Fixture::E810, "worker-2").await;
    let claim: Value = serde_json::from_str(DPDK).expect("testdata");
    node.api.put_claim(&claim);
    let mut kubelet = v1beta1::dra_plugin_client::DraPluginClient::new(
        connect_unix(&node.socket()).await.expect("dial"),
    );
    let c = kubelet_claim(&claim);
    let resp = kubelet
        .node_prepare_resources(v1beta1::NodePrepareResourcesRequest {
            claims: vec![v1beta1::Claim {
                namespace: c.namespace.clone(),
                uid: c.uid.clone(),
                name: c.name.clone(),
            }],
        })
        .await
        .expect("v1beta1 prepare")
        .into_inner();
    let one = &resp.claims[DPDK_UID];
    assert_eq!(one.error, "");
    assert_eq!(one.devices[0].device_name, "pci-0000-af-01-0");
    assert_eq!(
        one.devices[0].cdi_device_ids,
        [format!("sriov.dra.dev/vf={DPDK_UID}-pci-0000-af-01-0")]
    );

    let calls = node.ops.calls();
    assert!(
        matches!(&calls[0], DeviceCall::ConfigureVf(t, c) if t.pf == "ens3f0" && t.vf == 0 && c.len() == 4),
        "vlan, rate, spoofchk, trust: {calls:?}"
    );
    assert_eq!(
        calls[1],
        DeviceCall::BindVfio("0000:af:01.0".parse().expect("pci"))
    );
    let spec = node.cdi_spec(DPDK_UID);
    let nodes: Vec<&str> = spec["devices"][0]["containerEdits"]["deviceNodes"]
        .as_array()
        .expect("vfio nodes")
        .iter()
        .filter_map(|n| n["path"].as_str())
        .collect();
    assert_eq!(nodes, ["/dev/vfio/vfio", "/dev/vfio/61"]);
    assert!(env_of(&spec, 0).contains(&"SRIOV_DRA_N3_MODE=dpdk".to_string()));

    let resp = kubelet
        .node_unprepare_resources(v1beta1::NodeUnprepareResourcesRequest {
            claims: vec![v1beta1::Claim {
                namespace: c.namespace,
                uid: c.uid,
                name: c.name,
            }],
        })
        .await
        .expect("v1beta1 unprepare")
        .into_inner();
    assert_eq!(resp.claims[DPDK_UID].error, "");
    let calls = node.ops.calls();
    assert_eq!(
        &calls[2..],
        [
            DeviceCall::RestoreDriver("0000:af:01.0".parse().expect("pci")),
            DeviceCall::RestoreVf(VfTarget {
                pf: "ens3f0".into(),
                vf: 0
            })
        ],
        "driver first, then settings"
    );
    node.shutdown().await;
}

/// The fronthaul claim with the claim's config for request `fronthaul`
/// replaced by `params` merged into a valid VfConfig.
fn with_fronthaul_config(params: Value) -> Value {
    let mut claim = fronthaul();
    let mut cfg = json!({"apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfConfig"});
    if let (Some(c), Some(p)) = (cfg.as_object_mut(), params.as_object()) {
        c.extend(p.clone());
    }
    claim["status"]["allocation"]["devices"]["config"][2]["opaque"]["parameters"] = cfg;
    claim
}

#[tokio::test]
async fn each_kind_of_bad_config_fails_the_claim_naming_request_and_field() {
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let cases = [
        (json!({"vlna": 100}), "field vlna: is not a VfConfig field"),
        (
            json!({"vlan": 4095}),
            "field vlan: 4095 is out of range; expected 0-4094",
        ),
        (
            json!({"vlan": 10, "vlanQoS": 9}),
            "field vlanQoS: 9 is out of range; expected 0-7",
        ),
        (
            json!({"mac": "01:00:5e:00:00:01"}),
            "field mac: 01:00:5e:00:00:01 is a multicast address",
        ),
        (
            json!({"minTxRateMbps": 5000, "maxTxRateMbps": 1000}),
            "field minTxRateMbps: 5000 is above maxTxRateMbps 1000",
        ),
        (
            json!({"ifName": "this-name-is-too-long"}),
            "field ifName: \"this-name-is-too-long\" is longer than 15 bytes",
        ),
        (
            json!({"mode": "dpdk", "ipam": {"pool": "fronthaul"}}),
            "field ipam: is not allowed with mode dpdk",
        ),
        (
            json!({"mode": "bridge"}),
            "field mode: unknown variant `bridge`",
        ),
        (
            json!({"linkState": "up"}),
            "field linkState: unknown variant `up`",
        ),
        (
            json!({"ipam": {"pool": "fronthaul", "static": ["10.1.0.9/24"]}}),
            "field ipam: sets both pool and static",
        ),
        (
            json!({"ipam": {"pool": "nope"}}),
            "IPAM pool \"nope\" is not defined",
        ),
        (
            json!({"kind": "NetConfig"}),
            "field kind: is \"NetConfig\"; expected \"VfConfig\"",
        ),
        (
            json!({"apiVersion": "sriov.dra.dev/v1"}),
            "field apiVersion: is \"sriov.dra.dev/v1\"",
        ),
        (
            json!({"mtu": 9500}),
            "field mtu: 9500 is above the PF's MTU 9000",
        ),
    ];
    for (params, want) in cases {
        let claim = with_fronthaul_config(params.clone());
        node.api.put_claim(&claim);
        let err = node.prepare_one(&claim).await.expect_err("must fail");
        assert!(
            err.contains("ran/du-0-fronthaul-x7k2p") && err.contains("\"fronthaul\""),
            "{params}: {err}"
        );
        assert!(err.contains(want), "{params}: {err}");
        assert!(node.cdi_files().is_empty(), "{params}: no spec left");
    }
    // A bad config in the class's entry is named as such.
    let mut claim = fronthaul();
    claim["status"]["allocation"]["devices"]["config"][0]["opaque"]["parameters"]["trust"] =
        json!("yes");
    node.api.put_claim(&claim);
    let err = node.prepare_one(&claim).await.expect_err("must fail");
    assert!(
        err.contains("config[0] (FromClass): field trust: invalid type"),
        "{err}"
    );

    // Only the unknown IPAM pool is found after the VFs were configured
    // (at allocation); both were restored, in reverse order.
    let calls = node.ops.calls();
    let (configured, restored): (Vec<_>, Vec<_>) = calls
        .iter()
        .partition(|c| matches!(c, DeviceCall::ConfigureVf(..)));
    assert_eq!(configured.len(), 2, "{calls:?}");
    assert_eq!(
        restored,
        [
            &DeviceCall::RestoreVf(VfTarget {
                pf: "ens1f1np1".into(),
                vf: 0
            }),
            &DeviceCall::RestoreVf(VfTarget {
                pf: "ens1f0np0".into(),
                vf: 0
            }),
        ]
    );
    assert!(node.addresses_after_shutdown().await.is_empty());
}

#[tokio::test]
async fn device_checks_refuse_dpdk_without_iommu_and_rdma_without_rdma() {
    // VF 1 of ens1f0np0 (3b:00.3) loses its IOMMU group.
    let mut node = Node::start_with(Fixture::ConnectX6Dx, "worker-1", |sys| {
        std::fs::remove_file(sys.join("bus/pci/devices/0000:3b:00.3/iommu_group")).expect("unlink");
    })
    .await;
    let mut claim = with_fronthaul_config(json!({"mode": "dpdk"}));
    // Its class lets a claim pick the mode.
    claim["status"]["allocation"]["devices"]["config"][4]["opaque"]["parameters"]["claimMaySet"] =
        json!(["mode"]);
    claim["status"]["allocation"]["devices"]["results"][0]["device"] = json!("pci-0000-3b-00-3");
    node.api.put_claim(&claim);
    let err = node.prepare_one(&claim).await.expect_err("no IOMMU group");
    assert!(
        err.contains("device pci-0000-3b-00-3: field mode: dpdk needs an IOMMU group"),
        "{err}"
    );
    node.shutdown().await;

    let node = Node::start(Fixture::E810, "worker-2").await;
    let mut claim: Value = serde_json::from_str(DPDK).expect("testdata");
    // The class's config (the admin's: no policy bounds it).
    claim["status"]["allocation"]["devices"]["config"][0]["opaque"]["parameters"] = json!({"apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfConfig", "mode": "netdevice", "rdma": {"exclusive": true}});
    node.api.put_claim(&claim);
    let err = node
        .prepare_one(&claim)
        .await
        .expect_err("E810 VFs have no RDMA here");
    assert!(
        err.contains("field rdma.exclusive: the device has no RDMA device"),
        "{err}"
    );
    assert!(node.ops.calls().is_empty());
}

#[tokio::test]
async fn a_device_not_in_the_inventory_or_pool_is_refused() {
    let node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let mut claim = fronthaul();
    claim["status"]["allocation"]["devices"]["results"][1]["device"] = json!("pci-0000-99-00-1");
    node.api.put_claim(&claim);
    let err = node.prepare_one(&claim).await.expect_err("unknown device");
    assert!(
        err.contains("request \"rdma\", device pci-0000-99-00-1: is not in this node's inventory"),
        "{err}"
    );

    claim["status"]["allocation"]["devices"]["results"][1]["device"] = json!("pci-0000-3b-01-2");
    claim["status"]["allocation"]["devices"]["results"][1]["pool"] = json!("worker-9");
    node.api.put_claim(&claim);
    let err = node.prepare_one(&claim).await.expect_err("other pool");
    assert!(err.contains("is allocated from pool \"worker-9\""), "{err}");
    assert!(
        node.ops.calls().is_empty(),
        "checked before anything changed"
    );
}

#[tokio::test]
async fn a_claim_with_another_uid_is_refused_and_a_missing_one_reported() {
    let node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let claim = fronthaul();
    node.api.put_claim(&claim);
    let mut stale = claim.clone();
    stale["metadata"]["uid"] = json!("0f0f0f0f-dead-4bee-8eef-000000000000");
    let err = node.prepare_one(&stale).await.expect_err("uid mismatch");
    assert!(
        err.contains("has UID 5d1c2f0a") && err.contains("re-created"),
        "{err}"
    );

    node.api.delete_claim("ran", "du-0-fronthaul-x7k2p");
    let err = node.prepare_one(&claim).await.expect_err("gone");
    assert_eq!(err, "ResourceClaim ran/du-0-fronthaul-x7k2p not found");
    assert!(node.ops.calls().is_empty());
}

#[tokio::test]
async fn a_retried_prepare_answers_from_the_record_without_touching_anything() {
    let node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let claim = fronthaul();
    node.api.put_claim(&claim);
    let first = node.prepare_one(&claim).await.expect("prepared");
    let (calls, reads) = (node.ops.calls(), node.api.requests());
    let spec = node.cdi_spec(FRONTHAUL_UID);
    let second = node.prepare_one(&claim).await.expect("prepared again");
    assert_eq!(first, second);
    assert_eq!(node.ops.calls(), calls, "no device call");
    assert_eq!(
        node.api.requests(),
        reads + 1,
        "one read, for the claim's consumers"
    );
    assert_eq!(node.cdi_spec(FRONTHAUL_UID), spec);
}

#[tokio::test]
async fn a_second_pod_sharing_a_prepared_claim_is_recorded_as_its_consumer() {
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let mut claim = fronthaul();
    node.api.put_claim(&claim);
    node.prepare_one(&claim).await.expect("prepared");
    claim["status"]["reservedFor"]
        .as_array_mut()
        .expect("reservedFor")
        .push(json!({"resource": "pods", "name": "du-1", "uid": "second-pod"}));
    node.api.put_claim(&claim);
    node.prepare_one(&claim)
        .await
        .expect("answered from the record");
    node.shutdown().await;
    let (_ipam, preparer) = node.preparer();
    let record = preparer
        .record(FRONTHAUL_UID)
        .expect("read")
        .expect("record");
    assert_eq!(
        record.reserved_for,
        ["0b7e4c1d-22a9-4c3e-8f05-6d1e2a3b4c5d", "second-pod"],
        "the NRI side finds the second pod's VFs by this"
    );
}

#[tokio::test]
async fn records_survive_a_restart_and_unprepare_restores_from_them() {
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let claim = fronthaul();
    node.api.put_claim(&claim);
    let before = node.prepare_one(&claim).await.expect("prepared");

    node.restart().await;
    assert_eq!(
        node.prepare_one(&claim)
            .await
            .expect("answered from the record"),
        before
    );
    assert!(
        node.ops.calls().is_empty(),
        "the new process touched nothing"
    );
    assert_eq!(node.unprepare_one(&claim).await, "");
    let calls = node.ops.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.contains(&DeviceCall::RestoreVf(VfTarget {
        pf: "ens1f0np0".into(),
        vf: 0
    })));
    assert!(node.cdi_files().is_empty());
    assert!(node.addresses_after_shutdown().await.is_empty());
}

#[tokio::test]
async fn a_failure_on_the_second_device_rolls_back_the_first() {
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    node.ops.refuse_vf(VfTarget {
        pf: "ens1f1np1".into(),
        vf: 0,
    });
    let claim = fronthaul();
    node.api.put_claim(&claim);
    let err = node
        .prepare_one(&claim)
        .await
        .expect_err("second VF refused");
    assert!(
        err.contains("request \"rdma\", device pci-0000-3b-01-2: configuring the VF"),
        "{err}"
    );
    let calls = node.ops.calls();
    assert!(
        matches!(&calls[..], [DeviceCall::ConfigureVf(a, _), DeviceCall::RestoreVf(b)] if a == b && a.pf == "ens1f0np0"),
        "{calls:?}"
    );
    assert!(node.cdi_files().is_empty());
    assert!(node.addresses_after_shutdown().await.is_empty());
}

#[tokio::test]
async fn a_vf_prepared_for_one_claim_is_refused_to_another() {
    let node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let claim = fronthaul();
    node.api.put_claim(&claim);
    node.prepare_one(&claim).await.expect("prepared");
    let mut rival = fronthaul();
    rival["metadata"]["name"] = json!("du-1-fronthaul-aaaaa");
    rival["metadata"]["uid"] = json!("77777777-1111-4222-8333-444444444444");
    node.api.put_claim(&rival);
    let err = node.prepare_one(&rival).await.expect_err("VF taken");
    assert!(
        err.contains(&format!(
            "VF 0000:3b:00.2 is already prepared for claim {FRONTHAUL_UID}"
        )),
        "{err}"
    );
}

/// A one-request claim for `device` with an address from pool `bulk` and a VLAN.
fn bulk_claim(i: usize, device: &str) -> Value {
    let mut claim: Value = serde_json::from_str(DPDK).expect("testdata");
    claim["metadata"]["name"] = json!(format!("worker-{i}-net"));
    claim["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{i:012}"));
    let alloc = &mut claim["status"]["allocation"];
    alloc["devices"]["results"][0]["device"] = json!(device);
    alloc["devices"]["results"][0]["pool"] = json!("worker-1");
    alloc["devices"]["config"] = json!([{
        "source": "FromClass",
        "opaque": {"driver": DRIVER, "parameters": {
            "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfPolicy",
            "allowedVlans": ["10-200"]}}
    }, {
        "source": "FromClaim",
        "opaque": {"driver": DRIVER, "parameters": {
            "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfConfig",
            "vlan": 10 + i, "ipam": {"pool": "bulk"}}}
    }]);
    claim
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_claims_in_parallel_never_share_a_vf_or_an_address() {
    let mut node = Node::start(Fixture::Scale2048, "worker-1").await;
    // 100 claims on 100 VFs, plus 10 rivals allocated VFs 0-9 again.
    let vf = |i: usize| format!("pci-0000-12-{:02x}-{}", i / 8, i % 8);
    let mut claims: Vec<Value> = (0..100).map(|i| bulk_claim(i, &vf(i))).collect();
    claims.extend((0..10).map(|i| bulk_claim(100 + i, &vf(i))));
    for c in &claims {
        node.api.put_claim(c);
    }
    let refs: Vec<&Value> = claims.iter().collect();
    let resp = node.prepare(&refs).await;
    assert_eq!(resp.claims.len(), 110);
    let ok: Vec<&String> = resp
        .claims
        .iter()
        .filter(|(_, r)| r.error.is_empty())
        .map(|(u, _)| u)
        .collect();
    assert_eq!(ok.len(), 100, "exactly one claim per VF wins");
    for (uid, r) in &resp.claims {
        if !r.error.is_empty() {
            assert!(
                r.error.contains("is already prepared for claim"),
                "{uid}: {}",
                r.error
            );
        }
    }
    let devices: HashSet<String> = resp
        .claims
        .values()
        .flat_map(|r| r.devices.iter().map(|d| d.device_name.clone()))
        .collect();
    assert_eq!(devices.len(), 100);
    let allocations = node.addresses_after_shutdown().await;
    assert_eq!(allocations.len(), 100, "one allocation per prepared claim");
    let ips: HashSet<_> = allocations.iter().flat_map(|a| a.ips()).collect();
    assert_eq!(ips.len(), 100, "no address twice");
}

#[tokio::test]
async fn a_claim_left_half_prepared_by_a_crash_is_undone_and_prepared_again() {
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let claim = fronthaul();
    node.api.put_claim(&claim);
    node.prepare_one(&claim).await.expect("prepared");
    node.shutdown().await;
    // As if the driver died after changing the VFs, before the final commit.
    {
        let db = redb::Database::create(node.state_dir().join("state.redb")).expect("open");
        let mut rec = crate::state::claims::get(&db, FRONTHAUL_UID)
            .expect("read")
            .expect("record");
        rec.phase = crate::state::Phase::Preparing;
        crate::state::claims::put(&db, &rec).expect("write");
    }
    node.ops = Arc::new(RecordingDeviceOps::new());
    node.serve();
    node.prepare_one(&claim).await.expect("prepared again");
    let calls = node.ops.calls();
    assert!(
        matches!(
            &calls[..],
            [
                DeviceCall::RestoreVf(_),
                DeviceCall::RestoreVf(_),
                DeviceCall::ConfigureVf(..),
                DeviceCall::ConfigureVf(..)
            ]
        ),
        "undo first, then apply: {calls:?}"
    );
    let allocations = node.addresses_after_shutdown().await;
    assert_eq!(
        allocations.len(),
        1,
        "the old address was released, one new one held"
    );
}

#[tokio::test]
async fn a_claim_with_no_results_for_us_prepares_to_nothing() {
    let node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let mut claim = fronthaul();
    let results = &mut claim["status"]["allocation"]["devices"]["results"];
    *results = json!([results[2].clone()]); // only the GPU
    node.api.put_claim(&claim);
    assert_eq!(node.prepare_one(&claim).await.expect("nothing to do"), []);
    assert!(node.cdi_files().is_empty(), "no empty spec");
    assert_eq!(node.unprepare_one(&claim).await, "");
}

#[tokio::test]
async fn two_devices_of_one_claim_may_not_share_an_interface_name() {
    let node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let mut claim = fronthaul();
    claim["status"]["allocation"]["devices"]["config"][3]["opaque"]["parameters"]["ifName"] =
        json!("fh0");
    node.api.put_claim(&claim);
    let err = node
        .prepare_one(&claim)
        .await
        .expect_err("duplicate ifName");
    assert!(err.contains("request \"rdma\", device pci-0000-3b-01-2: field ifName: \"fh0\" is used by another device"), "{err}");
}

#[tokio::test]
async fn a_record_from_before_a_reboot_is_prepared_again() {
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let claim = fronthaul();
    node.api.put_claim(&claim);
    node.prepare_one(&claim).await.expect("prepared");
    let mut other = fronthaul();
    other["metadata"]["name"] = json!("du-9-other");
    other["metadata"]["uid"] = json!("99999999-9999-4999-8999-999999999999");
    let results = &mut other["status"]["allocation"]["devices"]["results"];
    results[0]["device"] = json!("pci-0000-3b-00-4");
    results[1]["device"] = json!("pci-0000-3b-01-4");
    node.api.put_claim(&other);
    node.prepare_one(&other).await.expect("prepared");

    // The node reboots: VF settings and the CDI dir (tmpfs) are gone.
    node.shutdown().await;
    std::fs::remove_dir_all(node.cdi_dir()).expect("tmpfs emptied");
    node.boot_id = "boot-2".into();
    node.ops = Arc::new(RecordingDeviceOps::new());
    node.serve();

    node.prepare_one(&claim).await.expect("prepared again");
    let calls = node.ops.calls();
    assert!(
        matches!(
            &calls[..],
            [DeviceCall::ConfigureVf(..), DeviceCall::ConfigureVf(..)]
        ),
        "settings applied again, nothing restored on reset VFs: {calls:?}"
    );
    assert!(
        node.cdi_spec(FRONTHAUL_UID)["devices"].is_array(),
        "spec written again"
    );
    // The kubelet unprepares the other claim: nothing to restore either.
    assert_eq!(node.unprepare_one(&other).await, "");
    assert_eq!(node.ops.calls().len(), 2);
    let allocations = node.addresses_after_shutdown().await;
    assert_eq!(
        allocations.len(),
        1,
        "one address for the re-prepared claim"
    );
}

#[tokio::test]
async fn a_failed_restore_keeps_the_record_and_a_retry_finishes() {
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let claim = fronthaul();
    node.api.put_claim(&claim);
    node.prepare_one(&claim).await.expect("prepared");
    node.ops.refuse_restores(true);
    let err = node.unprepare_one(&claim).await;
    assert!(
        err.contains("restoring the devices (the record is kept; retry)")
            && err.contains("vlan: EIO"),
        "{err}"
    );
    assert_eq!(
        node.cdi_files().len(),
        1,
        "spec kept while the VF is not restored"
    );
    node.ops.refuse_restores(false);
    assert_eq!(node.unprepare_one(&claim).await, "");
    assert!(node.cdi_files().is_empty());
    assert!(node.addresses_after_shutdown().await.is_empty());
}

#[tokio::test]
async fn a_vf_destroyed_since_prepare_is_unprepared_without_a_restore() {
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let claim = fronthaul();
    node.api.put_claim(&claim);
    node.prepare_one(&claim).await.expect("prepared");
    // The PF was reset: its VFs, and their settings, are gone.
    node.ops.refuse_restores(true);
    for vf in ["0000:3b:00.2", "0000:3b:01.2"] {
        node.ops.remove_device(vf.parse().expect("address"));
    }
    assert_eq!(node.unprepare_one(&claim).await, "");
    assert!(node.cdi_files().is_empty());
    assert!(
        node.addresses_after_shutdown().await.is_empty(),
        "addresses released"
    );
}

#[tokio::test]
async fn a_static_address_held_by_another_claim_fails_and_rolls_back() {
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let first = with_fronthaul_config(json!({"ipam": {"static": ["10.1.0.50/24"]}}));
    node.api.put_claim(&first);
    node.prepare_one(&first).await.expect("prepared");
    assert!(
        env_of(&node.cdi_spec(FRONTHAUL_UID), 0)
            .contains(&"SRIOV_DRA_FRONTHAUL_IPS=10.1.0.50/24".to_string())
    );

    let mut second =
        with_fronthaul_config(json!({"vlan": 107, "ipam": {"static": ["10.1.0.50/24"]}}));
    second["metadata"]["name"] = json!("du-1-fronthaul");
    second["metadata"]["uid"] = json!("11111111-2222-4333-8444-555555555555");
    let results = &mut second["status"]["allocation"]["devices"]["results"];
    results[0]["device"] = json!("pci-0000-3b-00-3");
    results[1]["device"] = json!("pci-0000-3b-01-3");
    node.api.put_claim(&second);
    let before = node.ops.calls().len();
    let err = node.prepare_one(&second).await.expect_err("address taken");
    assert!(
        err.contains("allocating addresses")
            && err.contains("10.1.0.50")
            && err.contains(FRONTHAUL_UID),
        "{err}"
    );
    let calls = node.ops.calls().split_off(before);
    assert!(
        matches!(
            &calls[..],
            [
                DeviceCall::ConfigureVf(..),
                DeviceCall::ConfigureVf(..),
                DeviceCall::RestoreVf(_),
                DeviceCall::RestoreVf(_)
            ]
        ),
        "{calls:?}"
    );
    let allocations = node.addresses_after_shutdown().await;
    assert_eq!(allocations.len(), 1, "only the first claim's address");
}

#[tokio::test]
async fn a_refused_vfio_binding_fails_the_claim_and_leaves_nothing() {
    let mut node = Node::start(Fixture::E810, "worker-2").await;
    let mut claim: Value = serde_json::from_str(DPDK).expect("testdata");
    // Binding only, no PF-side setting: the record is written before the bind.
    claim["status"]["allocation"]["devices"]["config"] = json!([{
        "source": "FromClass",
        "opaque": {"driver": DRIVER, "parameters": {
            "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfConfig", "mode": "dpdk"}}
    }]);
    node.api.put_claim(&claim);
    node.ops.refuse_bind("0000:af:01.0".parse().expect("pci"));
    let err = node
        .prepare_one(&claim)
        .await
        .expect_err("vfio-pci missing");
    assert!(
        err.contains("request \"n3\", device pci-0000-af-01-0: binding to vfio-pci")
            && err.contains("modprobe vfio-pci"),
        "{err}"
    );
    assert!(node.cdi_files().is_empty());
    node.shutdown().await;

    // Nothing was recorded: a working node prepares the same VF afterwards.
    node.ops = Arc::new(RecordingDeviceOps::new());
    node.serve();
    node.prepare_one(&claim).await.expect("prepared");
    assert_eq!(
        node.ops.calls(),
        [DeviceCall::BindVfio("0000:af:01.0".parse().expect("pci"))]
    );
}

async fn recover_once(
    preparer: &Arc<Preparer>,
    ipam: &Arc<Ipam>,
    reader: &ClaimReader,
) -> crate::claim::recover::Recovered {
    crate::claim::recover::once(preparer, ipam, reader, std::time::Duration::from_secs(5)).await
}

/// A node whose fronthaul claim was prepared and then deleted while the
/// driver was down (the kubelet never gets to unprepare it), with the
/// parts a restarted driver's recovery works with.
async fn claim_deleted_while_down() -> (Node, Value, Arc<Ipam>, Arc<Preparer>, ClaimReader) {
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let claim = fronthaul();
    node.api.put_claim(&claim);
    node.prepare_one(&claim).await.expect("prepared");
    node.shutdown().await;
    node.api.delete_claim("ran", "du-0-fronthaul-x7k2p");
    let (ipam, preparer) = node.preparer();
    let reader = ClaimReader::new(node.api.client());
    (node, claim, ipam, Arc::new(preparer), reader)
}

#[tokio::test]
async fn recovery_unprepares_a_claim_deleted_while_the_driver_was_down() {
    let (mut node, claim, ipam, preparer, reader) = claim_deleted_while_down().await;
    let (unprepared_before, _) = crate::metrics::metrics().recovery_counts();
    let done = recover_once(&preparer, &ipam, &reader).await;
    assert_eq!(done.unprepared, [FRONTHAUL_UID]);
    // The process's counter (other tests may add to it meanwhile).
    let (unprepared_after, _) = crate::metrics::metrics().recovery_counts();
    assert!(unprepared_after > unprepared_before, "counted as a repair");
    assert!(
        ipam.list().expect("list").is_empty(),
        "its addresses are released"
    );
    assert!(node.cdi_files().is_empty(), "its CDI spec is gone");
    assert!(preparer.record(FRONTHAUL_UID).expect("read").is_none());

    // A claim that still exists is kept, and so are its addresses.
    drop((ipam, preparer));
    node.api.put_claim(&claim);
    node.serve();
    node.prepare_one(&claim).await.expect("prepared again");
    node.shutdown().await;
    let (ipam, preparer) = node.preparer();
    let done = recover_once(&Arc::new(preparer), &ipam, &reader).await;
    assert_eq!(done, crate::claim::recover::Recovered::default());
    assert_eq!(ipam.list().expect("list").len(), 1);
}

#[tokio::test]
async fn a_stale_claim_whose_unprepare_fails_is_reported_for_a_sooner_pass() {
    // Found by the crash harness: recovery's unprepare of a deleted claim
    // failed while the runtime's reconnect was detaching the same pod, and
    // the claim then kept its VF and addresses for a whole period.
    let (node, _claim, ipam, preparer, reader) = claim_deleted_while_down().await;
    node.ops.refuse_restores(true);
    let done = recover_once(&preparer, &ipam, &reader).await;
    assert_eq!(done.failed, [FRONTHAUL_UID]);
    assert!(done.unprepared.is_empty());
    assert!(preparer.record(FRONTHAUL_UID).expect("read").is_some());
    assert_eq!(
        ipam.list().expect("list").len(),
        1,
        "its addresses are kept"
    );

    node.ops.refuse_restores(false);
    let done = recover_once(&preparer, &ipam, &reader).await;
    assert_eq!(done.unprepared, [FRONTHAUL_UID]);
    assert!(done.failed.is_empty());
    assert!(ipam.list().expect("list").is_empty());
}

#[tokio::test]
async fn a_refreshed_inventory_is_what_prepare_sees() {
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let claim = fronthaul();
    node.api.put_claim(&claim);
    node.shutdown().await;
    let (_ipam, preparer) = node.preparer();
    let reader = ClaimReader::new(node.api.client());
    let allocated = reader
        .read("ran", "du-0-fronthaul-x7k2p", FRONTHAUL_UID, DRIVER)
        .await
        .expect("claim");

    // The VFs went away (sriov_numvfs set to 0 by hand): nothing to prepare.
    let empty = NodeInventory::default();
    preparer.refresh(&empty, Vec::new());
    let err = preparer.prepare(&allocated).unwrap_err().to_string();
    assert!(err.contains("is not in this node's inventory"), "{err}");

    // They are back, as the publish loop's next scan sees.
    let inventory = NodeInventory::discover(&node.sysfs()).expect("inventory");
    preparer.refresh(&inventory, offered_vfs(&inventory));
    preparer
        .prepare(&allocated)
        .expect("prepared after the refresh");
}

#[tokio::test]
async fn an_unreadable_record_is_passed_over_and_keeps_its_addresses() {
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let claim = fronthaul();
    node.api.put_claim(&claim);
    node.prepare_one(&claim).await.expect("prepared");
    node.shutdown().await;

    // The record of the prepared claim is damaged; its addresses stay in
    // the IPAM tables.
    let (ipam, preparer) = node.preparer();
    crate::state::claims::put_raw(ipam.database(), FRONTHAUL_UID, b"{not json")
        .expect("damage the record");
    let listing = crate::state::claims::list_all(ipam.database()).expect("list");
    assert!(listing.records.is_empty());
    assert_eq!(listing.unreadable.len(), 1);
    assert_eq!(listing.unreadable[0].key, FRONTHAUL_UID);
    assert!(
        crate::state::claims::list(ipam.database())
            .expect("a bad record does not fail the listing")
            .is_empty()
    );

    // Recovery cannot ask the API about it, and must not take its
    // addresses: nothing says they are free.
    let reader = ClaimReader::new(node.api.client());
    let done = recover_once(&Arc::new(preparer), &ipam, &reader).await;
    assert!(done.released.is_empty(), "{done:?}");
    assert_eq!(
        ipam.list().expect("list").len(),
        1,
        "its addresses are kept"
    );
}

#[tokio::test]
async fn the_dra_and_registration_sockets_are_removed_on_a_clean_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = crate::kubelet::registration::PluginPaths::new(dir.path(), DRIVER);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    node.shutdown().await;
    let (_, preparer) = node.preparer();
    let service = NodeService::new(preparer, ClaimReader::new(node.api.client()));
    let dra = serve_node_service(&paths.dra_socket, service, wait(stopped.clone())).expect("dra");
    let registration =
        crate::kubelet::registration::serve_registration(&paths, wait(stopped)).expect("reg");
    assert!(paths.dra_socket.exists() && paths.registration_socket.exists());
    stop.send(true).expect("stop");
    dra.await.expect("joined").expect("served");
    registration.task.await.expect("joined").expect("served");
    assert!(!paths.dra_socket.exists(), "the DRA socket is left behind");
    assert!(
        !paths.registration_socket.exists(),
        "the registration socket is left behind"
    );
}

#[tokio::test]
async fn unprepare_moves_a_vf_still_recorded_in_a_pod_home_first() {
    use crate::attach::Attachment;
    use crate::attach::plan::{HostState, MacAddress};
    use crate::state::attachments::{self, AttachState, PodAttachments};

    let mut node = Node::start(Fixture::ConnectX6Dx, "worker-1").await;
    let claim = fronthaul();
    node.api.put_claim(&claim);
    node.prepare_one(&claim).await.expect("prepared");
    node.shutdown().await;

    // The pod's Stop never reached the driver: its record still holds the
    // claim's VF, next to a VF of another claim.
    let (ipam, preparer) = node.preparer();
    let device = preparer
        .record(FRONTHAUL_UID)
        .expect("read")
        .expect("record")
        .devices[0]
        .clone();
    let attachment = |claim: &str, device: &str, pci: sriov::PciAddress| Attachment {
        claim: claim.into(),
        device: device.into(),
        pci_address: pci,
        netns: "/var/run/netns/gone".into(),
        if_name: "net1".into(),
        pod_index: 3,
        mac: MacAddress([2, 0, 0, 0, 0, 9]),
        addresses: vec![],
        routes: vec![],
        host: HostState {
            name: "ens1f0v0".into(),
            mtu: 1500,
            mac: MacAddress([2, 0, 0, 0, 0, 9]),
            up: false,
        },
        rdma_device: None,
    };
    let other: sriov::PciAddress = "0000:3b:01.7".parse().expect("pci");
    attachments::put(
        ipam.database(),
        &PodAttachments {
            pod_uid: "pod-1".into(),
            sandbox_id: "sandbox-1".into(),
            pod: "ran/du-0".into(),
            netns: "/var/run/netns/gone".into(),
            state: AttachState::Attached,
            attachments: vec![
                attachment(
                    "ran/du-0-fronthaul-x7k2p",
                    &device.device,
                    device.pci_address,
                ),
                attachment("ran/other", "pci-0000-3b-01-7", other),
            ],
        },
    )
    .expect("record the pod");
    drop((ipam, preparer));
    node.serve();

    let prepared = node.ops.calls().len();
    assert_eq!(node.unprepare_one(&claim).await, "");
    let calls = node.ops.calls().split_off(prepared);
    assert_eq!(
        calls.first(),
        Some(&DeviceCall::DetachFromPod(device.pci_address)),
        "home before its settings are restored: {calls:?}"
    );
    assert!(
        !calls.contains(&DeviceCall::DetachFromPod(other)),
        "{calls:?}"
    );
    node.shutdown().await;
    let (ipam, _) = node.preparer();
    let left = attachments::list(ipam.database()).expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].attachments.len(),
        1,
        "only the other claim's VF stays recorded"
    );
    assert_eq!(left[0].attachments[0].pci_address, other);
}
